"""The storage root: where datasets and Tune results live, and whether a cluster can share it.

A storage root is given once - ``bex --storage ROOT``, ``BEX_STORAGE=ROOT``, or a
sweep config's ``storage:`` - and is either

* a local path: right on one machine (the embedded Ray), and on a cluster only
  when every node sees the same files there (NFS, Lustre, EFS, a FUSE mount of
  a bucket, or - in the loopback tests - one machine with several nodes);
* a pyarrow-supported URI (``s3://``, ``gs://``, ``abfs://``, ``hdfs://``...):
  always fine for Tune results (Tune writes through ``pyarrow.fs``).
  ``file://`` URIs are treated as local paths.

``resolve_storage`` turns a relative path into one under ``$BEX_STORAGE`` (when
set) or the current directory, so a ``ray job submit`` entrypoint - which runs
in a temporary copy of the working dir - never writes into that copy.

``check_storage_for_cluster`` decides whether a *local* path is shared by the
nodes of a multi-node cluster.  The rule, in order:

1. one alive node, or a URI: fine;
2. ``BEX_SHARED_FS=1``: trusted as shared; ``BEX_SHARED_FS=0``: treated as
   node-local (fails on more than one node);
3. otherwise a marker-file round trip: the driver writes
   ``ROOT/.bex-shared-<random>`` and a zero-CPU Ray task pinned to each alive
   node checks that it sees the file with the same content.  Any node that does
   not - or does not answer within ``timeout`` seconds - makes it node-local.

Node-local on a multi-node cluster raises ``ValueError`` with one line naming
the path and the nodes that cannot see it, before any actor or trial starts.
"""
from __future__ import annotations

import os
import uuid
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


def _sees_marker(path: str, content: str) -> tuple[str, bool]:
    """Runs on a node: does it see the marker with the same content?"""
    import ray

    try:
        ok = Path(path).read_text() == content
    except OSError:
        ok = False
    return ray.util.get_node_ip_address(), ok


def node_local_nodes(storage: str, ray, timeout: float = 60.0) -> list[str]:
    """IPs of the alive nodes that do not see ``storage`` as the driver does (the marker round trip)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    root = Path(storage)
    root.mkdir(parents=True, exist_ok=True)
    marker = root / f".bex-shared-{uuid.uuid4().hex}"
    content = uuid.uuid4().hex
    marker.write_text(content)
    try:
        task = ray.remote(num_cpus=0, max_retries=0)(_sees_marker)
        nodes = [n for n in ray.nodes() if n["Alive"]]
        refs = {task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
            str(marker), content): n["NodeManagerAddress"] for n in nodes}
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        bad = [refs[r] for r in refs if r not in ready]
        for r in ready:
            try:
                ip, ok = ray.get(r)
            except Exception:
                ok = False
            if not ok:
                bad.append(refs[r])
        for r in refs:
            if r not in ready:
                ray.cancel(r, force=True)
        return sorted(set(bad))
    finally:
        marker.unlink(missing_ok=True)


def check_storage_for_cluster(storage: str | os.PathLike, ray, timeout: float = 60.0, root: str | None = None) -> str:
    """Resolve ``storage`` and fail (``ValueError``, one line) if it is node-local on a multi-node cluster.

    ``root``: what a relative ``storage`` is relative to (see :func:`resolve_storage`; ``""``: the cwd).
    """
    s = resolve_storage(storage, root=root)
    if is_uri(s):
        return s
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) <= 1:
        return s
    flag = os.environ.get(SHARED_FS_ENV, "").strip()
    if flag == "1":
        return s
    hint = (f"use a shared filesystem or a pyarrow URI (s3://, gs://...) for --storage/{STORAGE_ENV}, "
            f"or set {SHARED_FS_ENV}=1 if every node sees this path")
    if flag == "0":
        raise ValueError(f"storage {s!r} is a node-local path ({SHARED_FS_ENV}=0) but the cluster has "
                         f"{len(alive)} nodes; {hint}")
    bad = node_local_nodes(s, ray, timeout=timeout)
    if bad:
        raise ValueError(f"storage {s!r} is node-local: node(s) {', '.join(bad)} of the {len(alive)}-node cluster "
                         f"do not see it; {hint}")
    return s
