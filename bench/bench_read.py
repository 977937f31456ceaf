"""Reading a walker dataset into arrays: bex Parquet against ExORL's one .npz per episode.

ExORL (via URLB's replay buffer) stores each episode as an .npz written with
``np.savez_compressed`` (observation, action, reward, discount, physics) and
loads a dataset by ``np.load`` of every file followed by concatenation.  The
same layout without compression is timed too, for transparency.  bex reads the hive-partitioned Parquet dataset with
``replay.Dataset.load``.  Same contents (walker shapes, 1001 rows per episode;
values are random floats, so compression gains are a lower bound).

    python bench/bench_read.py [--quick]     # 1M transitions (quick: 200K)
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("MUJOCO_GL", "disable")

import numpy as np
from common import machine_label

from bex.envs import env_spec
from bex.replay import Dataset, DatasetWriter, Episode


def load_exorl(files: list[Path]) -> dict[str, np.ndarray]:
    eps = []
    for f in files:
        with np.load(f) as ep:
            eps.append({k: ep[k] for k in ep.files})
    return {k: np.concatenate([e[k] for e in eps]) for k in eps[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n_eps = 200 if args.quick else 1000
    spec = env_spec("walker", "stand")
    rng = np.random.default_rng(0)
    print(f"# dataset read — {machine_label()}")
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        npz_dir = d / "exorl"
        raw_dir = d / "raw"
        npz_dir.mkdir()
        raw_dir.mkdir()
        with DatasetWriter(d / "bex", spec, "random", None, 0) as w:
            for i in range(n_eps):
                n = 1001
                ep = Episode(f"e{i}", rng.standard_normal((n, 24)).astype(np.float32),
                             rng.uniform(-1, 1, (n, 6)).astype(np.float32), rng.standard_normal((n, 18)),
                             np.ones(n, np.float32), rng.standard_normal(n).astype(np.float32))
                w.write_episode(ep)
                arrays = dict(observation=ep.observation, action=ep.action, reward=ep.reward_intrinsic,
                              discount=ep.discount, physics=ep.physics)
                np.savez_compressed(npz_dir / f"{i:06d}_1000.npz", **arrays)
                np.savez(raw_dir / f"{i:06d}_1000.npz", **arrays)
        files = sorted(npz_dir.glob("*.npz"))
        raw_files = sorted(raw_dir.glob("*.npz"))
        size_bex = sum(p.stat().st_size for p in (d / "bex").rglob("*.parquet"))
        size_npz = sum(p.stat().st_size for p in files)
        load_exorl(files)  # warm the page cache for both
        Dataset(d / "bex").load()
        t_npz = min(_timed(lambda: load_exorl(files)) for _ in range(3))
        load_exorl(raw_files)
        t_raw = min(_timed(lambda: load_exorl(raw_files)) for _ in range(3))
        t_bex = min(_timed(lambda: Dataset(d / "bex").load(["observation", "action", "physics", "discount",
                                                             "reward_intrinsic", "is_first", "is_last"]))
                    for _ in range(3))
        rows = n_eps * 1001
        print(f"transitions {n_eps * 1000}: ExORL npz {t_npz:.3f}s ({size_npz / 2**20:.0f} MiB, {len(files)} files) | "
              f"bex Parquet {t_bex:.3f}s ({size_bex / 2**20:.0f} MiB) | ratio {t_npz / t_bex:.1f}x | "
              f"bex {rows / t_bex / 1e6:.1f}M rows/s")
        print(f"  (same layout with uncompressed np.savez, not what ExORL writes: {t_raw:.3f}s, "
              f"ratio {t_raw / t_bex:.1f}x)")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
