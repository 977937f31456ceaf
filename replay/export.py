"""Export a dataset for one task as D4RL-style arrays in a ``.npz`` file."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .reader import Dataset
from .writer import _commit, temp_file


def export_npz(root: str | os.PathLike, task: str, out: str | os.PathLike, **filters) -> dict:
    """Write ``observations, actions, rewards, next_observations, terminals, timeouts``.

    ``terminals`` marks true terminal transitions (discount 0); ``timeouts`` marks
    the last transition of an episode that ended without one (dm_control's time
    limit), as D4RL does.  Rewards come from the relabel cache.
    """
    out = Path(out)
    if out.exists() and out.is_dir():
        raise ValueError(f"output {str(out)!r} is a directory; give a .npz file path")
    if out.suffix != ".npz":
        raise ValueError(f"output {str(out)!r} must end in .npz")
    ds = Dataset(root, **filters)
    tr = ds.transitions(task)
    terminals = tr.discount == 0.0
    arrays = dict(observations=tr.obs, actions=tr.action, rewards=tr.reward, next_observations=tr.next_obs,
                  terminals=terminals, timeouts=tr.is_last & ~terminals)
    out.parent.mkdir(parents=True, exist_ok=True)
    with temp_file(out, suffix=".tmp.npz") as tmp:  # np.savez appends .npz to other names
        np.savez(tmp, **arrays)
        _commit(tmp, out, overwrite=True)
    return {"out": str(out), "transitions": len(tr)}
