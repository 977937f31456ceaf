"""Ray start-up shared by every bex command.

Ray is imported only inside ``cluster/``.  ``init_ray`` starts an embedded local
Ray (the default) or connects to a running cluster.  On machines where Ray
rewrites ``127.0.0.1`` to the network address, pass another loopback address
(``--node-ip 127.0.0.2`` or ``BEX_NODE_IP=127.0.0.2``) to keep every Ray process
on loopback; without it Ray's own default applies.
"""
from __future__ import annotations

import os
from typing import Any

NODE_IP_ENV = "BEX_NODE_IP"


def init_ray(address: str | None = None, node_ip: str | None = None, num_cpus: int | None = None,
             namespace: str = "bex", **kwargs: Any):
    """Start or join Ray once per process and return ``ray`` (idempotent).

    ``address``: ``None`` starts an embedded local Ray unless ``RAY_ADDRESS`` is
    set (as under ``ray job submit``); ``"auto"`` or ``HOST:PORT`` joins a cluster.
    ``node_ip``: the address the embedded Ray binds to (default ``$BEX_NODE_IP``).
    """
    import ray

    if ray.is_initialized():
        return ray
    node_ip = node_ip or os.environ.get(NODE_IP_ENV) or None
    address = address or os.environ.get("RAY_ADDRESS") or None
    opts: dict[str, Any] = dict(namespace=namespace, log_to_driver=kwargs.pop("log_to_driver", True),
                                include_dashboard=kwargs.pop("include_dashboard", None))
    if address is None:
        if num_cpus is not None:
            opts["num_cpus"] = num_cpus
        if node_ip:
            opts["_node_ip_address"] = node_ip
    else:
        opts["address"] = address
    opts.update(kwargs)
    os.environ.setdefault("MUJOCO_GL", "disable")
    ray.init(**opts)
    return ray


def node_address() -> str:
    """This process's Ray node address (the host name outside Ray): the ``node`` of collection reports."""
    import socket

    import ray

    if ray.is_initialized():
        return ray.util.get_node_ip_address()
    return socket.gethostname()
