"""Errors every layer shares.

Bad input is a ``ValueError`` (or ``FileNotFoundError``) whose message is one line naming the value and what is
allowed; the ``bex`` command prints it and exits 2.  :class:`RunFailed` is work that started and could not finish
(collection actors that keep dying, offline trials that errored): one line too, exit 1, and ``--resume``
continues once the cause is fixed.
"""
from __future__ import annotations


class RunFailed(RuntimeError):
    """Work that started and could not finish; the message is one line saying what and where to look."""


__all__ = ["RunFailed"]
