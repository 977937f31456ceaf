"""Benchmark: k-NN intrinsic-reward throughput, bex KnnService vs URLB's in-process torch.

For 1024 queries of 512-d (ICM-APT representations) and k = 12:

* ``batch 1K``   — URLB's batch-local k-NN (the batch against itself, self included);
* ``window 16K`` and ``window 100K`` — the batch against a window of stored vectors.

bex: ``KnnService.rewards`` through Ray (the call, argument transfer and FAISS
search; window mode with ``add=True`` into a full window of N vectors).
Baseline: ``torch.cdist`` + ``topk`` + the same reward transform in this process
(URLB's method; URLB itself uses ``torch.norm`` of the broadcast difference,
which needs B*N*d floats of memory and is slower still).  Also shown: bex's
``KnnIndex`` in-process (no Ray), to separate the Ray overhead.

Prints absolute times (median of repeats), the ratio baseline / bex, a machine
label and the achieved FLOP/s (the 2*B*N*d flops of the distance matrix) as a
fraction of the float32 matmul peak measured in the same run.

    python bench/bench_knn.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine_label as common_label  # noqa: E402

from bex.entropy import KnnIndex, RewardConfig, knn_reward  # noqa: E402

B, D, K = 1024, 512, 12


def machine_label() -> str:
    return f"{common_label()}, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def timeit(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def timeit_interleaved(fns, repeats: int) -> tuple[list[float], list[float]]:
    """Median wall time and median CPU time (this process, all threads) of each function,
    run in turn within every repeat (the machine is shared: interleaving exposes all
    contenders to the same background load; CPU time is less sensitive to it)."""
    for fn in fns:
        fn()  # warm-up
    walls: list[list[float]] = [[] for _ in fns]
    cpus: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, w, c in zip(fns, walls, cpus):
            c0, t = time.process_time(), time.perf_counter()
            fn()
            w.append(time.perf_counter() - t)
            c.append(time.process_time() - c0)
    return [statistics.median(w) for w in walls], [statistics.median(c) for c in cpus]


def matmul_peak(repeats: int) -> float:
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n ** 3 / timeit(lambda: a @ b, repeats)


def torch_rewards(q: torch.Tensor, base: torch.Tensor, cfg: RewardConfig) -> np.ndarray:
    dist = torch.cdist(q, base)
    vals, _ = dist.topk(cfg.k, dim=1, largest=False)
    return knn_reward(vals.numpy(), cfg.objective, alpha=cfg.alpha, beta=cfg.resolved_beta, c=cfg.c)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="threads for torch, FAISS in-process and the service (default: all cores)")
    args = ap.parse_args()
    repeats = 3 if args.quick else 7
    threads = max(1, args.threads)
    torch.set_num_threads(threads)
    import faiss
    faiss.omp_set_num_threads(threads)

    from bex.cluster.knn_service import KnnClient
    from bex.cluster.runtime import init_ray

    peak = matmul_peak(repeats)  # before Ray starts its worker processes
    load0 = os.getloadavg()[0]
    ray = init_ray(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    rng = np.random.default_rng(0)
    rep = lambda n: np.tanh(rng.standard_normal((n, D)).astype(np.float32))  # noqa: E731
    cfg = RewardConfig(objective="be", alpha=0.5, k=K)
    print(f"machine: {machine_label()}; load average at start {load0:.2f}")
    print(f"float32 matmul peak (torch, 2048^3): {peak / 1e9:.1f} GFLOP/s")
    print(f"threads: {threads}; times are medians of {repeats} interleaved repeats; "
          "CPU = this process's CPU time for the in-process runs")
    print(f"{'case':<12}{'torch cdist+topk':>18}{'bex service':>14}{'bex in-proc':>13}{'ratio':>8}"
          f"{'bex GFLOP/s':>13}{'of peak':>9}{'CPU torch':>11}{'CPU bex':>9}{'CPU ratio':>10}")
    rows = []
    for label, n_stored in [("batch 1K", 0), ("window 16K", 16_384), ("window 100K", 100_000)]:
        client = KnnClient(D, capacity=max(n_stored, 2), name=f"bench-knn-{n_stored}", namespace="bex-bench",
                           num_cpus=os.cpu_count(), num_threads=threads)
        xq = rep(B)
        tq = torch.from_numpy(xq)
        if n_stored == 0:
            n_ref = B
            ours = lambda: client.rewards("bench", xq, cfg, mode="batch")  # noqa: E731
            base = lambda: torch_rewards(tq, tq, cfg)  # noqa: E731
            index = KnnIndex(D, 2)
            inproc = lambda: knn_reward(index.search_batch(xq, K)[0], "be", alpha=0.5)  # noqa: E731
        else:
            n_ref = n_stored
            xb = rep(n_stored)
            for i in range(0, n_stored, 10_000):
                client.add("bench", xb[i:i + 10_000])
            # each call inserts the same 1024 queries: the window stays full (N vectors)
            ours = lambda: client.rewards("bench", xq, cfg, mode="window", add=True)  # noqa: E731
            tb = torch.from_numpy(xb)
            base = lambda: torch_rewards(tq, tb, cfg)  # noqa: E731
            index = KnnIndex(D, n_stored)
            index.add("bench", xb)
            inproc = lambda: knn_reward(index.search("bench", xq, K)[0], "be", alpha=0.5)  # noqa: E731
        (t_base, t_ours, t_in), (c_base, _, c_in) = timeit_interleaved([base, ours, inproc], repeats)
        if n_stored == 0:  # same data, same answer
            np.testing.assert_allclose(ours(), base(), rtol=1e-4, atol=1e-5)
        flops = 2.0 * B * n_ref * D
        rows.append((label, t_base, t_ours, t_in))
        print(f"{label:<12}{t_base * 1e3:>15.1f} ms{t_ours * 1e3:>11.1f} ms{t_in * 1e3:>10.1f} ms"
              f"{t_base / t_ours:>7.2f}x{flops / t_ours / 1e9:>13.1f}{flops / t_ours / peak:>8.0%}"
              f"{c_base * 1e3:>8.0f} ms{c_in * 1e3:>6.0f} ms{c_base / c_in:>9.2f}x")
        ray.kill(client.handle, no_restart=True)
    ray.shutdown()
    peak_end = matmul_peak(repeats)
    print(f"matmul peak again at the end: {peak_end / 1e9:.1f} GFLOP/s; load average {os.getloadavg()[0]:.2f}")
    for label, t_base, t_ours, _ in rows:
        if label != "batch 1K" and t_base / t_ours < 2.0:
            print(f"note: {label}: ratio {t_base / t_ours:.2f}x is below the 2x target")


if __name__ == "__main__":
    main()
