"""The RLlib transition view of a bex dataset: one Parquet row per transition (no Ray).

RLlib 2.60's offline API (``.offline_data(input_read_method="read_parquet", input_read_schema=...)``)
turns every row it reads into one transition (``OfflinePreLearner._map_to_episodes``): a row must hold
``obs``, ``actions``, ``rewards`` and ``new_obs``, and ``input_read_schema`` only renames columns.  A bex
data file has one row per *step* (row ``i``: the observation after step ``i`` and the action that produced
it), its task rewards live in the relabel cache and ``s'`` is the next row, so RLlib cannot train on the
step files directly.  This module writes the view RLlib can read; see ``docs/rllib.md`` ("The transition
view") for the reference and ``cluster/rllib_peer.py`` for the RLlib side (algorithm config, Ray Data).

* ``export_rllib``: one view file per data file, the same hive layout, columns in bex's names
  (``VIEW_COLUMNS``); ``INPUT_READ_SCHEMA`` maps them to RLlib's ``Columns``.  Row ``k`` of the view is
  row ``k`` of ``Dataset.transitions(task)``.
* ``write_trial_view``: the one-file, seeded-shuffled view an ``rllib_*`` trial trains on.
* ``view_files`` / ``bex_parquet_files``: the Parquet files of a view / of a bex dataset selection.

Files are committed like the dataset writer's (``replay/writer.py``): the table is serialised to bytes,
written under a hidden temporary name, fsynced and renamed (``atomic_write_bytes``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .reader import Dataset, transition_rows
from .relabel import relabel
from .writer import atomic_write_bytes

#: ``input_read_schema`` for the transition view: RLlib ``Columns`` name -> view column.
INPUT_READ_SCHEMA: dict[str, str] = {
    "eps_id": "episode_id",          # Columns.EPS_ID
    "t": "t",                        # Columns.T (step index of ``observation`` in its episode)
    "obs": "observation",            # Columns.OBS
    "actions": "action",             # Columns.ACTIONS
    "rewards": "reward",             # Columns.REWARDS
    "new_obs": "next_observation",   # Columns.NEXT_OBS
    "terminateds": "terminated",     # Columns.TERMINATEDS (discount == 0)
    "truncateds": "truncated",       # Columns.TRUNCATEDS (last row of an episode without a terminal)
}
#: Columns of the transition view, in file order (``discount`` is extra: bex's learners use it).
VIEW_COLUMNS = ("episode_id", "t", "observation", "action", "reward", "next_observation", "discount",
                "terminated", "truncated")
VIEW_META_FILE = "_bex_rllib_view.json"


def bex_parquet_files(root: str | os.PathLike, **filters) -> list[str]:
    """The data files of a bex dataset selected by partition ``filters`` (bex's own reader).

    ``ray.data.read_parquet(root)`` reads the whole dataset correctly too (relabel
    caches are ``.arrow``, not Parquet); this selects partitions without listing them.
    """
    return [str(f.path) for f in Dataset(root, **filters).files]


def _view_table(episode_id, t, obs, action, reward, next_obs, discount, is_last) -> pa.Table:
    def fsl(x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])

    discount = np.asarray(discount, np.float32)
    terminated = discount == 0.0
    return pa.table({
        "episode_id": pa.array(episode_id, pa.string()),
        "t": pa.array(np.asarray(t, np.int32)),
        "observation": fsl(obs),
        "action": fsl(action),
        "reward": pa.array(np.asarray(reward, np.float32)),
        "next_observation": fsl(next_obs),
        "discount": pa.array(discount),
        "terminated": pa.array(terminated),
        "truncated": pa.array(np.asarray(is_last, bool) & ~terminated),
    })


def _write_table(table: pa.Table, path: Path) -> None:
    """Commit ``table`` as Parquet at ``path`` atomically (the dataset writer's ``atomic_write_bytes``)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, memoryview(sink.getvalue()))


def export_rllib(dataset: str | os.PathLike, task: str, out_dir: str | os.PathLike, **filters) -> dict:
    """Write the transition view of ``dataset`` for ``task`` under ``out_dir`` (RLlib-ready Parquet).

    One view file per data file, at the same relative (hive) path; rewards come
    from the relabel cache (computed first where missing).  Returns
    ``{"out", "task", "files", "transitions", "input_read_schema"}``.
    """
    from bex.envs import parse_task

    ds = Dataset(dataset, **filters)
    if not ds.files:
        raise ValueError(f"dataset {str(dataset)!r} has no data" + (f" matching {filters}" if filters else ""))
    domain, t = parse_task(task, ds.env_spec.domain)
    task = f"{domain}_{t}"
    if task not in ds.cached_tasks():
        relabel(dataset, task, **filters)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {str(out)!r} is a file; give a directory")
    src = Path(dataset).resolve()
    if out.resolve() == src or src in out.resolve().parents:
        raise ValueError(f"output {str(out)!r} is inside the dataset; Ray Data would read it as data")
    steps = ds.load(("episode_id", "step", "observation", "action", "discount", "is_first", "is_last"))
    tr = ds.transitions(task, steps=steps)
    idx = transition_rows(steps)                      # row of s' (the row of s is idx - 1)
    ends = np.cumsum([f.num_rows for f in ds.files])
    bounds = np.searchsorted(idx, np.concatenate([[0], ends]))  # transitions of file j: bounds[j]:bounds[j+1]
    for j, f in enumerate(ds.files):
        k = slice(bounds[j], bounds[j + 1])
        if len(idx[k]) and not steps.is_first[idx[k][0] - 1]:
            raise ValueError(f"data file {str(f.path)!r} does not start with an episode's first row")
        table = _view_table(steps.episode_id[idx[k]], steps.step[idx[k]] - 1, tr.obs[k], tr.action[k],
                            tr.reward[k], tr.next_obs[k], tr.discount[k], tr.is_last[k])
        _write_table(table, out / f.path.relative_to(ds.root))
    total = len(tr)
    meta = {"task": task, "source": str(src), "filters": {k: str(v) for k, v in filters.items()},
            "files": len(ds.files), "transitions": total, "input_read_schema": INPUT_READ_SCHEMA}
    atomic_write_bytes(out / VIEW_META_FILE, json.dumps(meta, indent=2, sort_keys=True).encode())
    return {"out": str(out), "task": task, "files": len(ds.files), "transitions": total,
            "input_read_schema": dict(INPUT_READ_SCHEMA)}


def view_files(out_dir: str | os.PathLike) -> list[str]:
    """The Parquet files of a transition view, sorted (the order of ``Dataset.transitions``)."""
    out = Path(out_dir)
    return sorted(str(p) for p in out.rglob("*.parquet")
                  if not any(part.startswith((".", "_")) for part in p.relative_to(out).parts))


def write_trial_view(tr, view_dir: str | os.PathLike, seed: int) -> Path:
    """The one-file transition view a trial trains on, from ``Transitions`` arrays ``tr``.

    RLlib reads the view in epochs, in file order, without shuffling: the rows are
    stored in one seeded random order so a batch is not a run of consecutive steps.
    """
    n = len(tr)
    p = np.random.default_rng(seed).permutation(n)
    path = Path(view_dir) / "part-000000.parquet"
    _write_table(_view_table(p.astype(str), np.zeros(n, np.int32), tr.obs[p], tr.action[p],
                             tr.reward[p], tr.next_obs[p], tr.discount[p], np.zeros(n, bool)), path)
    return path
