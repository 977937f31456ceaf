"""Coverage of a 100K-state dataset: bex (FAISS k-NN, every figure from one neighbour search) against the
plain way (scikit-learn ``NearestNeighbors`` + scipy), same numbers, ratio of wall times.

    MUJOCO_GL=disable python bench/bench_coverage.py [--quick] [--states N] [--dims D]

The states are a synthetic physics-like cloud (a Gaussian mixture in ``--dims`` dimensions, the width of
walker's physics state by default), so the benchmark needs no collection run; both sides get the same
standardised sample and compute Shannon, Rényi q = 0.5, 1.1, 2 and BE for the paper's alpha grid with k = 5.
Only the value is timed (no interval replicates: they multiply both sides alike).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import re
import time

import numpy as np
from scipy.special import digamma, gammaln

from bex.analysis.coverage import CoverageConfig, StateSet, coverage, figures
from bex.entropy.estimators import behavioral_entropy_from_log_density, log_unit_ball_volume
from bex.entropy.knn_index import KnnIndex
from bex.entropy.prelec import default_beta


def plain(z: np.ndarray, k: int, qs, alphas) -> dict[str, float]:
    """The figures the textbook way: sklearn exact k-NN (kd-tree), formulas written out with scipy."""
    from sklearn.neighbors import NearestNeighbors

    n, d = z.shape
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(z).kneighbors(z)
    r = dist[:, k]
    lv = log_unit_ball_volume(d)
    out = {"shannon": float(digamma(n) - digamma(k) + lv + d * np.mean(np.log(r)))}
    for q in qs:
        log_ck = (gammaln(k) - gammaln(k + 1 - q)) / (1 - q)
        terms = ((n - 1) * np.exp(log_ck + lv) * r ** d) ** (1 - q)
        out[f"renyi_q{q:g}"] = float(np.log(np.mean(terms)) / (1 - q))
    log_f = math.log(k) - math.log(n) - lv - d * np.log(r)
    for a in alphas:
        out[f"be_alpha{a:g}"] = behavioral_entropy_from_log_density(log_f, a, default_beta(a))
    return out


def time_command(dirs: list[str]) -> None:
    """Wall time of ``bex coverage DIRS --out TMP`` (defaults), in a subprocess, with its stage lines."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    bex = str(Path(sys.executable).with_name("bex"))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        p = subprocess.run([bex, "coverage", *dirs, "--out", tmp], capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if p.returncode:
        raise SystemExit(p.stderr[-2000:])
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}")
    for line in p.stderr.splitlines():
        if re.search(r"\| (\d+)/\1 ", line):  # a stage's final bar: its total time
            print("  " + line)
    for r in rows:
        print(f"  {r['dataset']:<40} states {r['states']}  shannon {r['shannon']['value']:.2f} "
              f"[{r['shannon']['lo']:.2f}, {r['shannon']['hi']:.2f}]  near_static {r['near_static']['value']:.3f}")
    print(f"bex coverage of {len(rows)} datasets (10 replicates, shared t-SNE + PHATE of 3000 states): "
          f"{wall:.0f} s wall")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="20K states")
    ap.add_argument("--states", type=int, default=100_000)
    ap.add_argument("--dims", type=int, default=18)
    ap.add_argument("--datasets", type=int, default=0,
                    help="also time the whole of bex coverage (defaults: 10 interval replicates, shared maps) on "
                         "this many synthetic datasets of --states states each")
    ap.add_argument("--dirs", nargs="+", default=None,
                    help="time the whole `bex coverage` command (Parquet loading, 10 replicates, maps) on these "
                         "real datasets instead of the synthetic comparison")
    args = ap.parse_args()
    if args.dirs:
        return time_command(args.dirs)
    n = 20_000 if args.quick else args.states
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=3.0, size=(20, args.dims))
    x = centers[rng.integers(0, 20, n)] + rng.normal(size=(n, args.dims)) * rng.uniform(0.2, 1.0, args.dims)
    cfg = CoverageConfig(replicates=2)
    z = (x - x.mean(0)) / x.std(0)
    index = KnnIndex(args.dims, capacity=2)

    def knn(a, k):
        return index.search_batch(a.astype(np.float32), k, include_self=False)[0].astype(np.float64)

    t0 = time.perf_counter()
    value = figures(z, cfg, lambda _: 0.0, knn)  # the same figures as the plain side, value only
    t_bex = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = plain(z, cfg.k, cfg.qs, cfg.alphas)
    t_plain = time.perf_counter() - t0
    worst = max(abs(value[key] - v) / max(abs(v), 1e-12) for key, v in ref.items())
    t0 = time.perf_counter()
    coverage([StateSet("bench", x)], cfg)
    t_full = time.perf_counter() - t0
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, {n} states x {args.dims} dims")
    print(f"bex figures, value only (FAISS exact k-NN):        {t_bex:.1f} s")
    print(f"plain sklearn NearestNeighbors + scipy, value only: {t_plain:.1f} s")
    print(f"largest relative difference of the {len(ref)} shared figures: {worst:.2e}")
    print(f"RATIO plain / bex wall time: {t_plain / t_bex:.2f}x")
    print(f"(bex coverage with 2 half-size interval replicates and volumes: {t_full:.1f} s)")
    if args.datasets:
        import tempfile

        sets = []
        for i in range(args.datasets):
            g = np.random.default_rng(10 + i)
            c = g.normal(scale=3.0, size=(20, args.dims))
            sets.append(StateSet(f"d{i}", c[g.integers(0, 20, n)] + g.normal(size=(n, args.dims))
                                 * g.uniform(0.2, 1.0 + i, args.dims)))
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            coverage(sets, CoverageConfig(), out_dir=tmp)
        print(f"bex coverage of {args.datasets} datasets x {n} states (10 replicates, t-SNE + PHATE maps of "
              f"3000 states): {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
