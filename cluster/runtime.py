"""Ray start-up shared by every bex command.

Ray is imported only inside ``cluster/``.  ``init_ray`` starts an embedded local
Ray (the default) or connects to a running cluster.

Loopback.  ``--node-ip 127.0.0.1`` (or ``BEX_NODE_IP=127.0.0.1``) keeps every
listener of the embedded Ray on loopback.  Ray 2.60 binds its gRPC servers (GCS,
raylet, object manager, every core worker, the dashboard agent) and its
Prometheus endpoints to loopback only when the node IP is exactly
``127.0.0.1``/``localhost``/``::1`` and to all interfaces otherwise, with no
setting to change that; and on Linux it rewrites ``127.0.0.1`` to the machine's
network address unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (which only
forbids joining other nodes).  So for an embedded start on ``127.0.0.1`` bex sets
that switch before Ray starts.  Another loopback address (``127.0.0.2``) keeps
Ray's traffic on loopback but its gRPC servers listen on ``[::]``.  Without a
node IP Ray's own default (the network address) applies.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Callable

NODE_IP_ENV = "BEX_NODE_IP"
#: Node IPs for which Ray 2.60 binds every listener to loopback (``IsLocalhost`` in its C++ core).
LOCALHOST = ("127.0.0.1", "localhost", "::1")
_SINGLE_NODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def keep_localhost() -> None:
    """Stop Ray from rewriting ``127.0.0.1`` to the network address (for an embedded, single-node start).

    Sets ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` for this process and the Ray
    processes it starts (Ray reads it when ``ray`` is imported; a module already
    imported is patched too).  The switch only forbids other nodes joining.
    """
    import sys

    os.environ[_SINGLE_NODE_ENV] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False


#: Set when the process got SIGTERM (the CLI exits 143 once its Ray work has stopped).
TERMINATED = threading.Event()
_SIGTERM_WANTED = False


def _on_sigterm(signum, frame) -> None:
    """SIGTERM: remember it; inside a Tune run ask Tune to stop after this step (it saves its experiment state,
    as on SIGUSR1), else leave the current call (``SystemExit``) so the command stops its Ray work."""
    TERMINATED.set()
    tune_handler = signal.getsignal(signal.SIGUSR1) if hasattr(signal, "SIGUSR1") else None
    if callable(tune_handler) and "signal_interrupt_tune_run" in getattr(tune_handler, "__qualname__", ""):
        tune_handler(signum, frame)
        return
    sys.exit(int(signum))


def handle_sigterm() -> None:
    """Install bex's SIGTERM handler in the main thread (again after ``ray.init``, which installs its own)."""
    global _SIGTERM_WANTED
    if threading.current_thread() is threading.main_thread():
        _SIGTERM_WANTED = True
        signal.signal(signal.SIGTERM, _on_sigterm)


def import_ray():
    """``import ray`` without its C++ failure-signal handler in this (the driver's) process.

    Ray's core worker installs absl's failure signal handler in the driver,
    which answers SIGTERM with a stack dump (``*** SIGTERM received ...``) before
    Python sees the signal; bex handles SIGTERM itself (stop Ray work, exit 143,
    ``--resume`` continues).  ``RAY_DISABLE_FAILURE_SIGNAL_HANDLER`` is read when
    ``ray`` is imported; it is set for this process only, so the Ray processes it
    starts keep their crash stack traces.
    """
    import sys

    if "ray" in sys.modules:
        constants = sys.modules.get("ray._private.ray_constants")
        if constants is not None:
            constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True
        return sys.modules["ray"]
    had = os.environ.get("RAY_DISABLE_FAILURE_SIGNAL_HANDLER")
    os.environ["RAY_DISABLE_FAILURE_SIGNAL_HANDLER"] = "1"
    try:
        import ray
        import ray._private.ray_constants  # noqa: F401  (read now, with the variable set)
    finally:
        if had is None:
            os.environ.pop("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", None)
        else:
            os.environ["RAY_DISABLE_FAILURE_SIGNAL_HANDLER"] = had
    return ray


_START_HOOKS: list[Callable[[], None]] = []


def on_ray_start(fn: Callable[[], None]) -> Callable[[], None]:
    """Call ``fn`` just before this process starts or joins Ray (the command line sends Ray's own output to a log
    from there); returns a function that removes the hook."""
    _START_HOOKS.append(fn)
    return lambda: _START_HOOKS.remove(fn) if fn in _START_HOOKS else None


def init_ray(address: str | None = None, node_ip: str | None = None, num_cpus: int | None = None,
             namespace: str = "bex", **kwargs: Any):
    """Start or join Ray once per process and return ``ray`` (idempotent).

    ``address``: ``None`` starts an embedded local Ray unless ``RAY_ADDRESS`` is
    set (as under ``ray job submit``); ``"auto"`` or ``HOST:PORT`` joins a cluster.
    ``node_ip``: the address the embedded Ray binds to (default ``$BEX_NODE_IP``).
    """
    node_ip = node_ip or os.environ.get(NODE_IP_ENV) or None
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None and node_ip in LOCALHOST:
        keep_localhost()
    ray = import_ray()

    if ray.is_initialized():
        return ray
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
    for hook in list(_START_HOOKS):
        hook()
    ray_output_to_stderr()
    ray.init(**opts)
    if _SIGTERM_WANTED:
        handle_sigterm()  # ray.init replaced it with Ray's (sys.exit(15), which a blocking Ray call can swallow)
    return ray


def ray_output_to_stderr() -> None:
    """Send what Ray prints in the driver (worker logs, GCS error messages) to stderr, never stdout.

    bex's stdout carries bex's own output only (JSON lines a user pipes to
    ``jq``).  Ray prints its workers' log lines and the GCS's error messages
    (e.g. "The node with node id ... has been marked dead", from a background
    thread, at any moment) to ``sys.stdout`` through
    ``ray._private.worker.print_to_stdstream``; this wraps that function once so
    every message is printed as Ray prints stderr lines (same prefixes and
    de-duplication).  Idempotent; call before ``ray.init`` (which binds the
    function for worker logs).
    """
    worker = import_ray()._private.worker
    original = worker.print_to_stdstream
    if getattr(original, "_bex_to_stderr", False):
        return

    def to_stderr(data, ignore_prefix: bool):
        return original({**data, "is_err": True}, ignore_prefix)

    to_stderr._bex_to_stderr = True
    worker.print_to_stdstream = to_stderr


def node_address() -> str:
    """This process's Ray node address (the host name outside Ray): the ``node`` of collection reports."""
    import socket

    import ray

    if ray.is_initialized():
        return ray.util.get_node_ip_address()
    return socket.gethostname()
