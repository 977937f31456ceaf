"""Benchmark: k-NN Shannon entropy of the physics states of walker datasets (issue 4).

Collects walker datasets with the ``small`` explorer preset — random, APT
Shannon, APT BE alpha 0.5, APT BE alpha 5 — through
``cluster.driver.run_collections`` (all runs of one seed in one call,
``max_concurrent_runs=2``), then loads each partition's ``physics`` column
(qpos, qvel, act) and prints the Kozachenko–Leonenko Shannon entropy
(``entropy.knn_shannon_entropy``, k = 5, nats) of its states:

* ``raw``  — the physics vector as stored (qpos in m / rad, qvel in m/s, rad/s:
  very different scales, the velocities dominate the distances);
* ``z``    — every dimension standardised with the pooled mean / std of all
  datasets of the run (the same affine map for every dataset, so differences
  between datasets are those of the raw entropy plus a constant — but the
  k-NN now weighs every dimension equally);
* ``qpos`` — the standardised positions only (the "where the body went"
  coverage, without velocities).

Also printed per dataset: the share of near-static states (sum |qvel| < 0.1)
and the median sum |qvel| — near-duplicate states sit at tiny k-NN distances
and pull the Kozachenko–Leonenko estimate down.

At most ``--max-states`` states per dataset (a uniform random subsample, the
same size for every dataset so the estimates are comparable).

Checks printed at the end:

* ``APT > random``: every APT dataset's entropy above random's (per measure);
* ``BE 0.5 vs BE 5``: the gap between the two alphas (mean over seeds) larger
  than the seed-to-seed spread (the largest |seed a - seed b| difference of
  any config; needs two seeds — with one seed it says so).

    MUJOCO_GL=disable BEX_NODE_IP=127.0.0.1 python bench/bench_dataset_entropy.py [--quick]
        [--steps N] [--seeds 0,1] [--out DIR] [--reuse] [--knn-mode batch|recent] [--knn-window W] [--knn-local L]
        [--configs "shannon,be a=0.5"]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine_label

CONFIGS = (  # (label, explorer, objective, param)
    ("random", "random", None, None),
    ("shannon", "apt", "shannon", None),
    ("be a=0.5", "apt", "be", 0.5),
    ("be a=5", "apt", "be", 5.0),
)
K = 5


def load_avg() -> str:
    return "load avg " + " / ".join(f"{x:.2f}" for x in os.getloadavg()) + f" (1/5/15 min) on {os.cpu_count()} cores"


def collect(out: Path, configs: tuple, steps: int, seeds: list[int], reuse: bool, apt_config: dict) -> dict:
    from bex.actors.collect import CollectConfig
    from bex.cluster.driver import run_collections

    cfgs = []
    for seed in seeds:
        for label, explorer, objective, param in configs:
            cfgs.append(CollectConfig(out=str(out), domain="walker", explorer=explorer,
                                      objective=objective if explorer == "apt" else None, param=param,
                                      steps=steps, actors=1, seed=seed, preset="small",
                                      explorer_config=apt_config if explorer == "apt" else {}))
    t0 = time.perf_counter()
    sums = run_collections(cfgs, resume=reuse, max_concurrent_runs=2)
    wall = time.perf_counter() - t0
    info = {}
    for s in sums:
        c = s["config"]
        label = next(lb for lb, e, o, p in configs
                     if e == c["explorer"] and (o == c["objective"] or e == "random") and p == c["param"])
        info[(label, c["seed"])] = s
    print(f"collected {len(cfgs)} datasets x {steps} steps in {wall:.0f} s ({load_avg()})")
    for (label, seed), s in sorted(info.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"  {label:<10} seed {seed}: {s['steps']} steps, {s['env_steps_per_s']:.0f} env steps/s, "
              f"{s['updates']} updates, {s['wall_s']:.0f} s")
    return info


def load_states(out: Path, configs: tuple, seeds: list[int]) -> dict:
    from bex.replay import Dataset
    from bex.replay.schema import format_param

    states = {}
    for seed in seeds:
        for label, explorer, objective, param in configs:
            obj = objective if explorer == "apt" else explorer
            ds = Dataset(out, domain="walker", objective=obj, param=format_param(param), seed=seed)
            states[(label, seed)] = ds.load(["physics"]).physics
    return states


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="6000 steps per dataset, seed 0 only")
    ap.add_argument("--steps", type=int, default=None, help="steps per dataset (default 20000; quick 6000)")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1; quick 0)")
    ap.add_argument("--max-states", type=int, default=20_000, help="subsample each dataset to this many states")
    ap.add_argument("--out", default=None, help="dataset root (default bex_runs/bench/entropy-<time>)")
    ap.add_argument("--reuse", action="store_true", help="resume / reuse the datasets already in --out")
    ap.add_argument("--no-collect", action="store_true", help="only analyse the datasets already in --out")
    ap.add_argument("--knn-mode", default="batch", choices=("batch", "recent"),
                    help="APT's k-NN reference: batch (URLB, the default) or recent (last visited states)")
    ap.add_argument("--knn-window", type=int, default=16384, help="visited-state window of --knn-mode recent")
    ap.add_argument("--knn-local", type=int, default=None,
                    help="own-episode neighbours of --knn-mode recent (APTConfig.knn_local; default k, 0 = off)")
    ap.add_argument("--configs", default=",".join(c[0] for c in CONFIGS),
                    help="comma-separated subset of: " + ", ".join(c[0] for c in CONFIGS) + " (random is always kept)")
    args = ap.parse_args()
    wanted = {c.strip() for c in args.configs.split(",")} | {"random"}
    unknown = wanted - {c[0] for c in CONFIGS}
    if unknown:
        raise SystemExit(f"unknown config(s) {sorted(unknown)}; allowed: {', '.join(c[0] for c in CONFIGS)}")
    configs = tuple(c for c in CONFIGS if c[0] in wanted)  # the --configs subset
    apt_config = {} if args.knn_mode == "batch" else {"knn_mode": "recent", "knn_window": args.knn_window}
    if args.knn_local is not None:
        apt_config["knn_local"] = args.knn_local
    steps = args.steps or (6000 if args.quick else 20_000)
    seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1")).split(",")]
    out = Path(args.out or Path(__file__).resolve().parents[1] / "bex_runs" / "bench"
               / f"entropy-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MUJOCO_GL", "disable")

    print(f"bench_dataset_entropy: walker, preset small, {steps} steps per dataset, seeds {seeds}, "
          f"APT knn_mode {args.knn_mode}"
          + (f" (window {args.knn_window}, local {'k' if args.knn_local is None else args.knn_local})"
             if apt_config else "") + f", out {out}")
    print(f"machine: {machine_label()}")
    print(f"start: {load_avg()}")
    if not args.no_collect:
        collect(out, configs, steps, seeds, args.reuse, apt_config)

    from bex.entropy import knn_shannon_entropy
    from bex.envs import Env

    nq = Env("walker", "stand", seed=0).physics.model.nq
    states = load_states(out, configs, seeds)
    n = min(args.max_states, min(len(s) for s in states.values()))
    rng = np.random.default_rng(0)
    sub = {key: s[rng.permutation(len(s))[:n]] for key, s in states.items()}  # random order, n states each
    pooled = np.concatenate(list(sub.values()))
    mu, sd = pooled.mean(0), pooled.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    keep = np.flatnonzero(pooled.std(0) > 0)  # constant dims (none for walker) would give zero distances

    measures = {
        "raw": lambda s: s[:, keep],
        "z": lambda s: ((s - mu) / sd)[:, keep],
        "qpos": lambda s: ((s - mu) / sd)[:, :nq],
    }
    t0 = time.perf_counter()
    H = {m: {key: knn_shannon_entropy(f(s), k=K) for key, s in sub.items()} for m, f in measures.items()}
    print("(% still: states with sum |qvel| < 0.1; med |qvel|: median of sum |qvel| — near-static states sit at "
          "tiny k-NN distances and pull the estimate down)")
    print(f"\nk-NN Shannon entropy (Kozachenko-Leonenko, k={K}, nats) of {n} physics states per dataset "
          f"(dims: raw/z {len(keep)}, qpos {nq}); estimates took {time.perf_counter() - t0:.1f} s")
    still = {key: float((np.abs(s[:, nq:2 * nq]).sum(1) < 0.1).mean()) for key, s in sub.items()}
    speed = {key: float(np.median(np.abs(s[:, nq:2 * nq]).sum(1))) for key, s in sub.items()}
    hdr = (f"{'dataset':<10} {'seed':>4} " + " ".join(f"{m:>9}" for m in measures)
           + f" {'% still':>8} {'med |qvel|':>10}")
    print(hdr)
    print("-" * len(hdr))
    for seed in seeds:
        for label, *_ in configs:
            print(f"{label:<10} {seed:>4} " + " ".join(f"{H[m][(label, seed)]:>9.2f}" for m in measures)
                  + f" {100 * still[(label, seed)]:>8.1f} {speed[(label, seed)]:>10.2f}")
    if len(seeds) > 1:
        print("-" * len(hdr))
        for label, *_ in configs:
            print(f"{label:<10} {'mean':>4} "
                  + " ".join(f"{np.mean([H[m][(label, s)] for s in seeds]):>9.2f}" for m in measures))

    # within-dataset spread: the two halves (first / second half of the subsample, random order) of each
    # dataset estimated separately — sampling noise of the estimator, a lower bound of the seed spread
    half = n // 2
    split = {}
    for m, f in measures.items():
        split[m] = max(abs(knn_shannon_entropy(f(s[:half]), k=K) - knn_shannon_entropy(f(s[half:2 * half]), k=K))
                       for s in sub.values())
    print(f"half-split spread (largest |H(half 1) - H(half 2)| over datasets, {half} states each): "
          + ", ".join(f"{m} {v:.2f}" for m, v in split.items()))

    print()
    for m in measures:
        mean = {label: float(np.mean([H[m][(label, s)] for s in seeds])) for label, *_ in configs}
        apt = [label for label in mean if label != "random"]
        above = all(H[m][(label, s)] > H[m][("random", s)] for s in seeds for label in apt)
        print(f"CHECK [{m}] APT > random (every APT dataset, every seed): {'PASS' if above else 'FAIL'} ("
              + ", ".join(f"{label} {v:.2f}" for label, v in mean.items()) + ")")
        if "be a=0.5" not in mean or "be a=5" not in mean:
            continue
        gap = mean["be a=0.5"] - mean["be a=5"]
        if len(seeds) > 1:
            spread = max(abs(H[m][(label, a)] - H[m][(label, b)]) for label, *_ in configs
                         for i, a in enumerate(seeds) for b in seeds[i + 1:] if label != "random")
            ok = abs(gap) > spread
            print(f"CHECK [{m}] BE 0.5 vs BE 5 differ beyond the seed spread: {'PASS' if ok else 'FAIL'} "
                  f"(H(0.5) - H(5) = {gap:+.2f}; largest seed-to-seed difference of an APT config {spread:.2f})")
        else:
            ok = abs(gap) > split[m]
            print(f"CHECK [{m}] BE 0.5 vs BE 5 differ beyond the half-split spread: {'PASS' if ok else 'FAIL'} "
                  f"(H(0.5) - H(5) = {gap:+.2f}; half-split spread {split[m]:.2f}; one seed: "
                  f"no seed-to-seed spread measured)")
    print(f"\nend: {load_avg()}")


if __name__ == "__main__":
    main()
