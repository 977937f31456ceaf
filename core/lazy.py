"""Module attributes that import on first use (PEP 562), so that a package's heavy parts (torch) load only
when a name that needs them is used: CLI commands that only check their input start in well under a second."""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_getattr(package: str, names: dict[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``names`` maps an attribute to the submodule that defines it
    (relative, e.g. ``".batch"``); the value is imported once and cached in ``namespace`` (the module's globals)."""

    def __getattr__(name: str) -> Any:
        if name in names:
            value = getattr(importlib.import_module(names[name], package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


__all__ = ["lazy_getattr"]
