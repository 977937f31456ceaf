"""Benchmark: bex's CQL against RLlib's CQL on the same bex dataset, as Tune trials (issue 5, peer baseline).

Both run through ``cluster.train.run_trials`` (one CPU each, one trial at a time,
so their updates/s compare), on the same dataset partition and task, with the
same hyperparameters where both libraries have them: hidden width, batch
size, learning rate, discount, target rate ``tau``, conservative weight (bex
``cql_alpha`` = RLlib ``min_q_weight``) and sampled actions per proposal (bex
``n_action_samples`` = RLlib ``num_actions``).  The remaining differences
(network heads, epoch-wise reading in RLlib) are listed in docs/rllib.md.

Prints, per learner and seed, the final evaluation return (deterministic
policy, bex's ``envs.evaluate``, the same evaluation seeds for both) and the
gradient steps per second, then the means and the bex/RLlib ratios.

    MUJOCO_GL=disable BEX_NODE_IP=127.0.0.1 python bench/bench_rllib_cql.py --data DIR
        [--objective be --param 0.5] [--task walker_stand] [--steps 5000] [--seeds 0,1] [--cql-weight 0.01]
    python bench/bench_rllib_cql.py --quick     (a smoke run: bench_offline's small APT-BE dataset, 200 steps,
                                                 one seed; collected when missing)
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MUJOCO_GL", "disable")

from bench.common import machine_label


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="bex dataset root (relabelled for --task, or it is relabelled); --quick: "
                    "bench_offline's small dataset, collected when missing")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 200 steps, one seed, one episode")
    ap.add_argument("--objective", default="be")
    ap.add_argument("--param", default="0.5")
    ap.add_argument("--task", default="walker_stand")
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--episodes", type=int, default=5)
    ap.add_argument("--cql-weight", type=float, default=0.01, help="bex cql_alpha = RLlib min_q_weight")
    ap.add_argument("--actions", type=int, default=3, help="bex n_action_samples = RLlib num_actions")
    args = ap.parse_args()
    if args.quick:
        from bench.bench_offline import ensure_dataset

        args.data = args.data or "bex_runs/bench/offline_walker"
        ensure_dataset(Path(args.data), 3_000, [args.task])
        args.steps, args.seeds, args.episodes = 200, "0", 1
    elif args.data is None:
        ap.error("--data is required (or --quick)")

    from bex.cluster.train import run_trials
    from bex.learners.trial import TrialConfig
    from bex.replay import relabel

    relabel(args.data, args.task)
    seeds = [int(s) for s in args.seeds.split(",")]
    shared = {"hidden_dim": 256, "batch_size": 256, "lr": 3e-4, "gamma": 0.99, "tau": 0.01}
    lcfg = {
        "cql": dict(shared, cql_alpha=args.cql_weight, n_action_samples=args.actions),
        "rllib_cql": dict(shared, min_q_weight=args.cql_weight, num_actions=args.actions),
    }
    filters = {"objective": args.objective} | ({"param": args.param} if args.param else {})
    every = args.steps // 2
    trials = [TrialConfig.from_dict({"dataset": str(Path(args.data).resolve()), "task": args.task, "learner": name,
                                     "filters": filters, "learner_config": cfg, "steps": args.steps,
                                     "eval_every": every, "report_every": every // 5 or 1,
                                     "eval_episodes": args.episodes, "seed": seed})
              for seed in seeds for name, cfg in lcfg.items()]
    print(f"# bex CQL vs RLlib CQL — {machine_label()}, load {os.getloadavg()[0]:.1f}")
    print(f"dataset {args.data} {filters}, task {args.task}, {args.steps} steps, seeds {seeds}, shared {shared}, "
          f"conservative weight {args.cql_weight}, {args.actions} sampled actions")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bex-bench-rllib-") as storage:
        grid = run_trials(trials, name="bench_rllib_cql", storage=storage, resources={"cpu": 1}, max_concurrent=1,
                          max_failures=0, verbose=0)
        rows = []
        for r in grid:
            if r.error is not None:
                raise SystemExit(f"trial failed: {r.error}")
            t = r.config["trial"]
            df = r.metrics_dataframe
            ups = float(np.mean(df["train/updates_per_s"]))
            rows.append((t["learner"], t["seed"], r.metrics["eval/return_mean"], r.metrics["eval/return_std"], ups,
                         r.metrics["wall_s"]))
    print(f"{'learner':<10} {'seed':>4} {'return':>18} {'updates/s':>10} {'wall s':>7}")
    for name, seed, mean, std, ups, wall in sorted(rows):
        print(f"{name:<10} {seed:>4} {mean:>9.1f} ± {std:<6.1f} {ups:>10.1f} {wall:>7.0f}")
    means = {}
    for name in lcfg:
        sel = [r for r in rows if r[0] == name]
        means[name] = (float(np.mean([r[2] for r in sel])), float(np.std([r[2] for r in sel])),
                       float(np.mean([r[4] for r in sel])))
        print(f"{name:<10} {'mean':>4} {means[name][0]:>9.1f} ± {means[name][1]:<6.1f} {means[name][2]:>10.1f}")
    b, r = means["cql"], means["rllib_cql"]
    print(f"RATIO bex CQL / RLlib CQL: return {b[0] / max(r[0], 1e-9):.2f}x, updates/s {b[2] / max(r[2], 1e-9):.2f}x "
          f"(total {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
