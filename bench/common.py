"""Shared bits of the benchmark scripts: machine label, matmul peak, timing."""
from __future__ import annotations

import os
import platform
import time


def machine_label() -> str:
    cpu = platform.processor() or "cpu"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f", GPU {torch.cuda.get_device_name(0)}"
    except Exception:
        pass
    return f"{cpu}, {os.cpu_count()} cores{gpu}, Python {platform.python_version()}"


def best_of(fn, repeat: int = 3) -> float:
    """Best wall time of ``repeat`` calls (seconds)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak_flops(n: int = 2048, repeat: int = 5, device: str = "cpu") -> float:
    """Achieved float32 FLOP/s of a large square matmul: the machine's practical peak."""
    import torch

    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b

    def run():
        a @ b
        if device != "cpu":
            torch.cuda.synchronize()

    return 2 * n ** 3 / best_of(run, repeat)
