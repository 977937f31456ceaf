"""Checkpoints that load without running code: ``torch.load(weights_only=True)`` and a plain-data encoding.

A dataset directory or a storage root is shared between people and clusters, so
a checkpoint bex reads back (an explorer's ``_checkpoints/*.pt`` on ``bex collect
--resume``, a trial's ``state.pt`` on restore) is untrusted input.  Unpickling an
arbitrary object can run code; torch's ``weights_only`` unpickler accepts only
tensors, numbers, strings, bools, None and lists, tuples and dicts of them.

:func:`encode` turns what bex's states hold into exactly that: a numpy array
becomes ``{"__ndarray__": tensor}`` (its dtype and shape kept), a numpy scalar a
Python number; :func:`decode` inverts it.  :func:`save_state` /
:func:`load_state` wrap both around ``torch.save`` / ``torch.load``, and a file
that does not load is one ``ValueError`` line naming it.
"""
from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

_NDARRAY = "__ndarray__"


def encode(obj: Any) -> Any:
    """``obj`` with numpy arrays and scalars replaced by what ``torch.load(weights_only=True)`` accepts."""
    if isinstance(obj, np.ndarray):
        import torch  # here, not at import: code that only validates configs starts without torch

        return {_NDARRAY: torch.from_numpy(np.ascontiguousarray(obj).copy())}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(encode(v) for v in obj)
    return obj


def decode(obj: Any) -> Any:
    """The inverse of :func:`encode` (arrays come back as numpy arrays of their dtype)."""
    if isinstance(obj, dict):
        if len(obj) == 1 and _NDARRAY in obj:
            return obj[_NDARRAY].cpu().numpy()
        return {k: decode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(decode(v) for v in obj)
    return obj


def state_bytes(state: Any) -> bytes:
    """``state`` encoded and serialised by ``torch.save`` (to be written atomically by the caller)."""
    import torch

    buf = io.BytesIO()
    torch.save(encode(state), buf)
    return buf.getvalue()


def load_state(path: str | os.PathLike, map_location: str | torch.device = "cpu", check_only: bool = False) -> Any:
    """Load a state written from :func:`state_bytes` with the ``weights_only`` unpickler, decoded.

    Raises one ``ValueError`` line naming the file when it is missing, truncated,
    not a torch file, or holds anything but plain data (a pickled object).
    ``check_only`` memory-maps the tensors instead of reading them (a cheap
    check before any process starts) and returns None.
    """
    import torch

    try:
        if check_only:
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            return None
        return decode(torch.load(path, map_location=map_location, weights_only=True))
    except FileNotFoundError:
        raise ValueError(f"checkpoint {os.fspath(path)!r} does not exist") from None
    except Exception as e:  # UnpicklingError, RuntimeError (truncated zip), EOFError, ...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"checkpoint {os.fspath(path)!r} cannot be loaded safely ({type(e).__name__}: "
                         f"{first[:200]}); it is corrupt or was not written by this version of bex") from None
