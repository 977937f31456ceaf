"""Relabelling on Ray: the ``map_fn`` of ``replay.relabel`` as Ray tasks."""
from __future__ import annotations

from typing import Callable, Iterable, Sequence


def ray_map(num_cpus: float = 1) -> Callable[[Callable, Sequence], Iterable]:
    """Map a function over items with one Ray task each (results in order)."""

    def run(fn, items):
        import ray

        from .runtime import init_ray

        items = list(items)
        if not items:
            return []
        init_ray()
        remote = ray.remote(num_cpus=num_cpus, max_retries=3)(fn)
        return ray.get([remote.remote(it) for it in items])

    return run
