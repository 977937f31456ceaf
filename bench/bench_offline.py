"""Learning, not just running: TD3 and CQL on a small APT-BE walker dataset vs the random policy.

1. collect a walker dataset with APT + behavioral entropy (alpha 0.5, small preset)
   through the real collection driver (Ray actor + KnnService);
2. relabel it for walker_stand;
3. train TD3 and CQL (small preset) on it, in process;
4. evaluate each (deterministic, N episodes) and the uniform random policy on the
   same evaluation seeds, and print return ratios (target: >= 2x random).

    python bench/bench_offline.py [--quick] [--data DIR] [--steps N] [--train-steps N] [--knn-mode batch|recent]

``--data`` may also name a root that already holds BE alpha-0.5 partitions (every seed is used).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("MUJOCO_GL", "disable")

import torch

from common import machine_label
from envs import evaluate, random_policy
from learners import make_learner
from replay import Dataset, TransitionSampler, relabel


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--data", default="bex_runs/bench/offline_walker")
    ap.add_argument("--steps", type=int, default=None, help="dataset size (env steps)")
    ap.add_argument("--train-steps", type=int, default=None)
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--learners", default="td3,cql")
    ap.add_argument("--knn-mode", default="batch", choices=("batch", "recent"),
                    help="APT's k-NN reference for the collection: batch (URLB) or recent (last visited states)")
    args = ap.parse_args()
    steps = args.steps or (8_000 if args.quick else 30_000)
    train_steps = args.train_steps or (2_000 if args.quick else 20_000)
    torch.set_num_threads(max(1, (os.cpu_count() or 1)))
    print(f"# offline learning on an APT-BE walker dataset — {machine_label()}, load {os.getloadavg()[0]:.1f}")
    data = Path(args.data)
    if not dataset_complete(data, steps):
        from cluster.collect import CollectConfig
        from cluster.driver import run_collections

        t0 = time.perf_counter()
        cfg = CollectConfig(out=str(data), explorer="apt", objective="be", param=0.5, steps=steps, preset="small",
                            episodes_per_chunk=5,
                            explorer_config={} if args.knn_mode == "batch" else {"knn_mode": "recent"})
        run_collections([cfg], resume=True)
        print(f"collected {steps} steps in {time.perf_counter() - t0:.0f}s")
    relabel(data, "walker_stand")
    ds = Dataset(data, objective="be", param="0.5")
    tr = ds.transitions("walker_stand")
    print(f"dataset: {len(tr)} transitions, mean walker_stand reward {tr.reward.mean():.3f}")
    rnd = evaluate(random_policy(6, seed=0), "walker", "stand", episodes=args.episodes, seed=1000)
    print(f"{'policy':<8} {'return':>16} {'x random':>9} {'train s':>8}")
    print(f"{'random':<8} {rnd.mean:>8.1f} ± {rnd.std:<6.1f} {1.0:>9.2f} {'-':>8}")
    results = {}
    for name in args.learners.split(","):
        learner = make_learner(name, tr.obs.shape[1], tr.action.shape[1], {"hidden_dim": 256, "batch_size": 256,
                                                                          "lr": 3e-4}, seed=0)
        sampler = TransitionSampler(tr, 256, seed=0)
        t0 = time.perf_counter()
        for _ in range(train_steps):
            learner.update(sampler.sample())
        wall = time.perf_counter() - t0
        ev = evaluate(learner.act, "walker", "stand", episodes=args.episodes, seed=1000)
        results[name] = ev.mean / max(rnd.mean, 1e-9)
        print(f"{name:<8} {ev.mean:>8.1f} ± {ev.std:<6.1f} {results[name]:>9.2f} {wall:>8.0f}")
    for name, ratio in results.items():
        print(f"TARGET {name} return vs random on walker_stand ({train_steps} steps, {len(tr)} transitions): "
              f"{ratio:.2f}x (>= 2x: {'PASS' if ratio >= 2 else 'FAIL'})")


def dataset_complete(root: Path, steps: int) -> bool:
    """Whether ``root`` already holds the BE partition with ``steps`` transitions."""
    try:
        first = Dataset(root, objective="be", param="0.5").load(["is_first"]).is_first
    except (ValueError, FileNotFoundError):
        return False
    return len(first) - int(first.sum()) >= steps


if __name__ == "__main__":
    main()
