"""Relabel a dataset with the rewards of any task of its domain, cached per file.

Each data file gets a sidecar ``<partition>/_rewards/<domain>_<task>/<stem>.arrow``
(an Arrow IPC file, so Parquet readers of the dataset never pick it up) holding
one float64 ``reward`` column aligned row for row with the file (written atomically).  Work is split
into chunks of rows and mapped over a process pool here, or over Ray tasks when ``cluster/`` passes its
own ``map_fn``.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa

from bex.core.progress import Progress, Reporter, report
from bex.envs import TaskReward, parse_task, relabel_exact

from .reader import Dataset, has_physics, no_physics_error, read_parquet
from .writer import _commit, temp_file

MapFn = Callable[[Callable, Sequence], Iterable]

_REWARDERS: dict[tuple[str, str], TaskReward] = {}


def rewards_for_file(path: str, domain: str, task: str, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Rewards of ``domain``/``task`` for rows ``start:stop`` of one data file (runs in a worker)."""
    key = (domain, task)
    if key not in _REWARDERS:  # one environment per worker process, reused across chunks
        _REWARDERS[key] = TaskReward(domain, task)
    table = read_parquet(path, ["physics", "action"])  # a corrupt file: one line naming it

    def rows(name):
        col = table.column(name).combine_chunks()
        if name == "physics" and col.null_count:
            raise no_physics_error(path)
        return col.values.to_numpy(zero_copy_only=False).reshape(-1, col.type.list_size)[start:stop]

    return _REWARDERS[key](rows("physics"), rows("action"))  # the action: rewards with a control term


def _call(args):
    return rewards_for_file(*args)


def process_pool_map(workers: int | None = None) -> MapFn:
    """A ``map_fn`` over a local process pool (the default outside ``cluster/``)."""
    workers = workers or os.cpu_count() or 1

    def run(fn, items):
        items = list(items)
        if workers <= 1 or len(items) <= 1:
            return [fn(it) for it in items]
        with ProcessPoolExecutor(max_workers=min(workers, len(items))) as pool:
            return list(pool.map(fn, items, chunksize=1))

    return run


def write_reward_cache(ds: Dataset, f, domain: str, task: str, rewards: np.ndarray) -> None:
    """Write (atomically, replacing) the reward sidecar of data file ``f`` for ``domain``/``task``."""
    out = ds.reward_cache_path(f, domain, task)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"reward": np.asarray(rewards, np.float64)},
                     metadata={b"bex.task": f"{domain}_{task}".encode(), b"bex.source": f.path.name.encode()})
    with temp_file(out) as tmp:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
        _commit(tmp, out, overwrite=True)


def relabel(root: str | os.PathLike, task: str, map_fn: MapFn | None = None, chunk_rows: int = 20_000,
            force: bool = False, progress: Reporter | None = None, **filters) -> dict:
    """Compute and cache ``task``'s rewards for every selected file lacking them.

    Returns ``{"task", "files", "rows", "computed_rows"}``.  ``force`` recomputes.
    """
    ds = Dataset(root, **filters)
    domain, task = parse_task(task, ds.env_spec.domain)
    todo = [f for f in ds.files if force or not ds.reward_cache_path(f, domain, task).exists()]
    for f in todo:
        if not has_physics(f.path):
            raise no_physics_error(f.path)
    chunks = [(str(f.path), domain, task, s, min(s + chunk_rows, f.num_rows))
              for f in todo for s in range(0, f.num_rows, chunk_rows)]
    map_fn = map_fn or process_pool_map()
    results = list(map_fn(_call, chunks)) if chunks else []
    by_file: dict[str, list[np.ndarray]] = {}
    for (path, *_), r in zip(chunks, results):
        by_file.setdefault(path, []).append(np.asarray(r, dtype=np.float64))
    tick = report(progress)
    for i, f in enumerate(todo):
        rewards = np.concatenate(by_file.get(str(f.path), [np.zeros(0)]))
        if len(rewards) != f.num_rows:
            raise RuntimeError(f"relabel of {f.path} produced {len(rewards)} rewards for {f.num_rows} rows")
        write_reward_cache(ds, f, domain, task, rewards)
        tick(Progress(f"relabel {domain}_{task}", i + 1, len(todo)))
    return {"task": f"{domain}_{task}", "files": len(ds.files), "rows": ds.num_rows,
            "computed_rows": sum(f.num_rows for f in todo), "exact": relabel_exact(domain, task)}
