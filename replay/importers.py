"""Datasets bex did not generate, as bex datasets: ExORL/URLB episode folders.

ExORL (denisyarats/exorl) and URLB (``replay_buffer.py``, ``save_episode``)
store one ``.npz`` per episode, named ``<timestamp>_<index>_<length>.npz``, with
arrays of T + 1 rows in the convention bex uses too: row 0 is the reset (zero
action, reward 0, discount 1), row t holds the action taken at t − 1 and what
followed.  Keys: ``observation``, ``action``, ``reward``, ``discount`` and
``physics`` (ExORL adds it; it is what makes relabelling exact).

:func:`import_exorl` writes such a folder as one partition of a bex dataset
(``objective`` names it, default ``exorl``); rewards are not copied — ``bex
relabel`` computes any task's from the physics state, as for bex's own data.
The observation and physics widths are checked against the named task.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from bex.envs import env_spec, parse_task

from .schema import Episode
from .writer import DatasetWriter

_EPISODE_NAME = re.compile(r"^(?P<stamp>.+)_(?P<index>\d+)_(?P<length>\d+)\.npz$")
EXORL_KEYS = ("observation", "action", "discount", "physics")


def exorl_episode_files(src: str | os.PathLike) -> list[Path]:
    """The episode files of an ExORL/URLB folder, in episode order (the index in their names)."""
    src = Path(src)
    if not src.is_dir():
        raise ValueError(f"{str(src)!r} is not a directory of ExORL episodes")
    files = [p for p in src.iterdir() if _EPISODE_NAME.match(p.name)]
    if not files:
        raise ValueError(f"{str(src)!r} holds no ExORL episode files (<timestamp>_<index>_<length>.npz)")
    return sorted(files, key=lambda p: (int(_EPISODE_NAME.match(p.name)["index"]), p.name))


def read_exorl_episode(path: Path, obs_dim: int, action_dim: int, physics_dim: int) -> Episode:
    """One ExORL episode file as an :class:`Episode` (widths checked; bad files are one line naming them)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in EXORL_KEYS if k in z.files}
            missing = [k for k in EXORL_KEYS if k not in z.files]
    except Exception as e:  # truncated zip, pickled objects (refused), not an npz
        raise ValueError(f"ExORL episode {str(path)!r} cannot be read: {str(e).splitlines()[0]}") from None
    if missing:
        raise ValueError(f"ExORL episode {str(path)!r} lacks {missing} (physics is needed for exact relabelling)")
    widths = {"observation": obs_dim, "action": action_dim, "physics": physics_dim}
    for k, w in widths.items():
        a = arrays[k]
        if a.ndim != 2 or a.shape[1] != w:
            raise ValueError(f"ExORL episode {str(path)!r}: {k} has shape {a.shape}, the task needs (T+1, {w})")
    length = int(_EPISODE_NAME.match(path.name)["length"])
    if len(arrays["observation"]) != length + 1:
        raise ValueError(f"ExORL episode {str(path)!r}: its name says {length} steps, it holds "
                         f"{len(arrays['observation']) - 1}")
    return Episode(path.stem, arrays["observation"].astype(np.float32), arrays["action"].astype(np.float32),
                   arrays["physics"].astype(np.float64), arrays["discount"].reshape(-1).astype(np.float32))


def import_exorl(src: str | os.PathLike, out: str | os.PathLike, task: str, objective: str = "exorl",
                 param=None, seed: int = 0) -> dict:
    """Write the ExORL/URLB episode folder ``src`` as partition ``objective``/``param``/``seed`` of the bex
    dataset ``out``, for ``task``'s domain (its observation layout must match the episodes')."""
    domain, task_name = parse_task(task)
    spec = env_spec(domain, task_name)
    files = exorl_episode_files(src)
    from .writer import partition_dir

    pdir = partition_dir(Path(out), domain, objective, param, seed)
    if pdir.is_dir() and any(pdir.glob("*.parquet")):
        raise ValueError(f"{str(pdir)!r} already holds data; import into another --out, --objective or --seed")
    episodes = [read_exorl_episode(f, spec.obs_dim, spec.action_dim, spec.physics_dim) for f in files]
    with DatasetWriter(out, spec, objective, param, seed, config={"imported_from": str(Path(src).resolve()),
                                                                  "format": "exorl"}) as w:
        for ep in episodes:
            w.write_episode(ep)
    return {"out": str(out), "episodes": len(episodes), "transitions": sum(len(e) for e in episodes),
            "domain": domain, "task": task_name, "files": [str(p) for p in w.files]}
