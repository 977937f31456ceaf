"""Whether a storage root can be shared by the nodes of a Ray cluster (the path rules: :mod:`bex.core.storage`).

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

from bex.core.storage import SHARED_FS_ENV, STORAGE_ENV, is_uri, resolve_storage


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
