"""One progress protocol for every piece of long work in bex.

Long work - loading datasets and measuring their coverage, relabelling, a
collection grid, a distillation, the stages of a replication, the demo - takes
one optional argument ``progress`` and calls it with a :class:`Progress` event
as work completes.  The work never prints: how events are shown (bars, the
collection table, plain lines) is the caller's choice; the ``bex`` command line
draws them on stderr (:mod:`bex.cli.progress`).

An event names its ``stage`` and counts ``done`` of ``total`` units in it (any
unit: files, figure sets, environment steps, outer steps).  ``message`` carries
a line meant for a reader (a stage starting, a result); ``rows`` carries
per-item detail, one mapping each (a collection's runs, a distillation step's
metrics).  ``report`` turns a missing callback into a silent one, so the work
calls ``tick(...)`` unconditionally.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping


@dataclass(frozen=True)
class Progress:
    """One report of long work (see the module docstring)."""

    stage: str
    done: float = 0
    total: float = 0
    message: str = ""
    rows: tuple[Mapping, ...] = ()

    @property
    def fraction(self) -> float | None:
        """``done / total`` in [0, 1], or None when the total is not known."""
        if not self.total:
            return None
        return min(1.0, max(0.0, self.done / self.total))


Reporter = Callable[[Progress], None]


def report(progress: Reporter | None) -> Reporter:
    """``progress``, or a callback that ignores every event when it is None."""
    return progress if progress is not None else (lambda event: None)


__all__ = ["Progress", "Reporter", "report"]
