"""Storage roots and experiment names: where datasets and results live (no Ray).

A storage root is given once - ``bex --storage ROOT``, ``BEX_STORAGE=ROOT``, or a
config's ``storage:`` - and is either

* a local path: right on one machine (the embedded Ray), and on a cluster only
  when every node sees the same files there (NFS, Lustre, EFS, a FUSE mount of
  a bucket, or - in the loopback tests - one machine with several nodes);
* a pyarrow-supported URI (``s3://``, ``gs://``, ``abfs://``, ``hdfs://``...):
  always fine for Tune results (Tune writes through ``pyarrow.fs``).
  ``file://`` URIs are treated as local paths.

``resolve_storage`` turns a relative path into one under ``$BEX_STORAGE`` (when
set) or the current directory, so a ``ray job submit`` entrypoint - which runs
in a temporary copy of the working dir - never writes into that copy.  Whether a
local path is shared by the nodes of a cluster is checked with Ray, in
:mod:`bex.cluster.storage`.
"""
from __future__ import annotations

import os
from pathlib import Path

STORAGE_ENV = "BEX_STORAGE"
URI_SCHEMES = {"s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss", "az", "mock"}
SHARED_FS_ENV = "BEX_SHARED_FS"


def is_uri(p: str) -> bool:
    return "://" in str(p) and not str(p).startswith("file://")


def resolve_storage(path_or_uri: str | os.PathLike, root: str | None = None) -> str:
    """An absolute local path or a validated URI (see module doc); relative paths go under the storage root."""
    s = str(path_or_uri).strip()
    if not s:
        raise ValueError("storage path is empty")
    if s.startswith("file://"):
        s = s[len("file://"):]
    if is_uri(s):
        # only the scheme is checked: resolving a bucket would contact the network at parse time
        scheme = s.split("://", 1)[0].lower()
        if scheme not in URI_SCHEMES:
            raise ValueError(f"storage URI {s!r} has scheme {scheme!r}; pyarrow file systems: "
                             f"{', '.join(sorted(URI_SCHEMES))}")
        return s.rstrip("/")
    p = Path(s).expanduser()
    if not p.is_absolute():
        base = root if root is not None else os.environ.get(STORAGE_ENV) or None
        if base and is_uri(base):
            return f"{base.rstrip('/')}/{p.as_posix()}"
        p = Path(base).expanduser() / p if base else p
    p = p.resolve()
    if p.exists() and not p.is_dir():
        raise ValueError(f"storage path {str(p)!r} is a file, not a directory")
    return str(p)


def check_experiment_name(name: str, what: str = "experiment name") -> str:
    """An experiment (sweep) name is one plain directory name: it cannot leave the storage root."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name \
            or name != name.strip() or "\0" in name:
        raise ValueError(f"{what} {name!r} is not allowed: use one directory name (no '/', '..' or absolute "
                         f"paths); experiments are written under the storage root")
    return name
