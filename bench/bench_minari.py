"""Minari export and load: ``bex export --format minari`` against Minari's own ``create_dataset_from_buffers``
called on the same arrays already in memory.

bex's export reads the partition's Parquet files and reward cache, fingerprints the partition (one more read),
builds one episode buffer per episode and calls ``create_dataset_from_buffers`` itself; the baseline is that
last call alone, on identical buffers (the same observations, actions, rewards, flags and physics in
``infos``).  The ratio is therefore bex's overhead over the Minari write.  Load: ``minari.load_dataset`` and
one pass over every episode, for both datasets (the same storage format, so the ratio should be ~1), and, for
reference, bex's own read of the Parquet partition into transitions and ``bex import`` of the Minari dataset.
Same walker shapes (24 observation, 6 action, 18 physics floats), random values, 1000-step episodes, rewards
relabelled from the (random) physics states.

    python bench/bench_minari.py [--quick] [--storage arrow|parquet]   # 100K transitions (quick: 20K)
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("MUJOCO_GL", "disable")

import numpy as np
from common import machine_label

from bex.envs import env_spec
from bex.replay import Dataset, DatasetWriter, Episode
from bex.replay.relabel import process_pool_map, relabel


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def load_all(dataset_id: str) -> int:
    import minari

    steps = 0
    for ep in minari.load_dataset(dataset_id).iterate_episodes():
        steps += len(ep)
    return steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--storage", default="arrow", choices=("arrow", "parquet"))
    args = ap.parse_args()
    import gymnasium as gym
    import minari

    from bex.envs.gym import spaces
    from bex.replay.minari_io import _datasets_path, episode_buffers, export_minari, import_minari

    n_eps = 20 if args.quick else 100
    spec = env_spec("walker", "stand")
    rng = np.random.default_rng(0)
    print(f"# Minari export and load — {machine_label()}")
    print(f"# {n_eps} episodes x 1000 steps = {n_eps * 1000} transitions, storage {args.storage}")
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        with DatasetWriter(d / "bex", spec, "random", None, 0, config={"explorer": "random"}) as w:
            for i in range(n_eps):
                n = 1001
                disc = np.ones(n, np.float32)
                w.write_episode(Episode(f"e{i:04d}", rng.standard_normal((n, 24)).astype(np.float32),
                                        rng.uniform(-1, 1, (n, 6)).astype(np.float32), rng.standard_normal((n, 18)),
                                        disc))
        relabel(d / "bex", "walker_walk", map_fn=process_pool_map(1))  # import checks rewards against physics
        ds = Dataset(d / "bex")
        root = d / "minari"

        t_bex, res = timed(lambda: export_minari(d / "bex", "walker_walk", "bench/bex-v0", root,
                                                 ref_min_score=0.0, ref_max_score=1000.0, storage=args.storage))
        steps = ds.load(("observation", "action", "physics", "discount", "is_first", "is_last"))
        buffers = episode_buffers(steps, ds.rewards("walker_walk"), steps.physics)
        obs_space, act_space = spaces(spec.obs_dim, spec.action_dim)

        def minari_write():
            with _datasets_path(root), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                return minari.create_dataset_from_buffers(
                    "bench/minari-v0", buffers, env=gym.spec("bex/walker_walk-v0"), observation_space=obs_space,
                    action_space=act_space, ref_min_score=0.0, ref_max_score=1000.0, data_format=args.storage)

        t_min, _ = timed(minari_write)
        with _datasets_path(root):
            t_load_bex, n1 = timed(lambda: load_all("bench/bex-v0"))
            t_load_min, n2 = timed(lambda: load_all("bench/minari-v0"))
        assert n1 == n2 == n_eps * 1000, (n1, n2)
        t_read, _ = timed(lambda: Dataset(d / "bex").transitions("walker_walk"))
        t_import, _ = timed(lambda: import_minari(res["path"], d / "back", "walker_walk"))

    print(f"{'step':<44}{'bex (s)':>10}{'Minari (s)':>12}{'ratio':>8}")
    print(f"{'export (bex: Parquet -> buffers -> Minari)':<44}{t_bex:>10.2f}{t_min:>12.2f}{t_bex / t_min:>7.2f}x")
    print(f"{'minari.load_dataset + every episode':<44}{t_load_bex:>10.2f}{t_load_min:>12.2f}"
          f"{t_load_bex / t_load_min:>7.2f}x")
    print(f"# for reference: bex's Parquet read into transitions {t_read:.2f} s; bex import of the Minari "
          f"dataset {t_import:.2f} s ({t_import / t_load_min:.2f}x Minari's own load)")


if __name__ == "__main__":
    main()
