"""The ``bex`` command line's shared parts: the app, its global options, the options several commands share,
one-line errors, and where output goes.

Every command checks its input before starting Ray, prints progress for long
work, and exits non-zero with a one-line ``bex: error: ...`` on bad input.
Ray starts embedded on this machine unless ``--address``/``RAY_ADDRESS`` names
a cluster; ``--node-ip``/``BEX_NODE_IP`` pins the embedded Ray to an address
(127.0.0.1 keeps every Ray listener on loopback; see ``bex.cluster.runtime``).

Output: bex's own results go to stdout and its progress and errors to stderr,
through :func:`out` and :func:`err`.  What Ray and Tune print themselves (worker
log lines, Tune's trial tables and banners, a worker's traceback at shutdown)
goes to a log file instead (:func:`chatter_to_log`), named on stderr when Ray
starts.
"""
from __future__ import annotations

import functools
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, List, Optional

import typer

from bex.core.errors import RunFailed

os.environ.setdefault("MUJOCO_GL", "disable")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="bex: behavioral-entropy exploration datasets and offline RL on Ray.")

#: bex's own stdout and stderr while Ray's output goes to the log (None: the process's sys.stdout/sys.stderr).
_STREAMS: dict[str, object | None] = {"out": None, "err": None}


def out(text: str) -> None:
    """A line of bex's results (stdout)."""
    stream = _STREAMS["out"] or sys.stdout
    stream.write(f"{text}\n")
    stream.flush()


def err(text: str) -> None:
    """A line of bex's progress or messages (stderr)."""
    stream = err_stream()
    stream.write(f"{text}\n")
    stream.flush()


def err_stream():
    """The stream bex's own stderr lines go to."""
    return _STREAMS["err"] or sys.stderr


def fail(msg: str, code: int = 2):
    err(f"bex: error: {msg}")
    raise typer.Exit(code)


@contextmanager
def one_line_errors():
    """Bad input (``ValueError``, ``FileNotFoundError``) becomes ``bex: error: ...`` and exit 2; work that started
    and failed (:class:`~bex.core.errors.RunFailed`: collection actors that keep dying, errored trials) exit 1."""
    try:
        yield
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    except RunFailed as e:
        fail(str(e), code=1)


def command(name: str | None = None, **kwargs) -> Callable:
    """Register a ``bex`` command whose errors are one line (:func:`one_line_errors`)."""

    def register(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args, **kw):
            with one_line_errors():
                return fn(*args, **kw)

        return app.command(name, **kwargs)(run)

    return register


# ------------------------------------------------------------------------------------ options of several commands
def seed_option(help: str = "seed") -> int:
    return typer.Option(0, "--seed", help=help)


def resume_option(what: str) -> bool:
    return typer.Option(False, "--resume", help=f"continue an interrupted {what}")


def set_option(what: str) -> List[str]:
    return typer.Option([], "--set", help=f"{what} KEY=VALUE (value parsed as YAML; repeatable)")


def storage_option(default: str | None, what: str) -> Optional[str]:
    return typer.Option(default, "--storage", help=f"{what} (path or URI)")


def parse_set(items: List[str]) -> dict:
    """``--set KEY=VALUE`` options as a dict (values parsed as YAML scalars)."""
    import yaml

    parsed = {}
    for kv in items:
        if "=" not in kv:
            raise ValueError(f"--set expects KEY=VALUE, got {kv!r}")
        k, v = kv.split("=", 1)
        parsed[k] = yaml.safe_load(v)
    return parsed


def local_path(p, what: str = "path") -> str:
    """A dataset or output path: relative paths go under ``--storage``/``BEX_STORAGE``; URIs are refused (datasets
    need atomic renames and hard links: a local or shared-filesystem path)."""
    from bex.core.storage import is_uri, resolve_storage

    if is_uri(str(p)):
        raise ValueError(f"{what} {str(p)!r} is a URI; datasets live on a local or shared-filesystem path "
                         f"(atomic renames and hard links); Tune results may use URIs")
    resolved = resolve_storage(p)
    if is_uri(resolved):
        raise ValueError(f"{what} {resolved!r} lies under a URI storage root; datasets need a local or "
                         f"shared-filesystem path")
    return resolved


def storage_path(p) -> str:
    """A Tune results root: a path under ``--storage``/``BEX_STORAGE`` when relative, or a URI."""
    from bex.core.storage import resolve_storage

    return resolve_storage(p)


@app.callback()
def main_options(
    node_ip: Optional[str] = typer.Option(None, "--node-ip", envvar="BEX_NODE_IP",
                                          help="address the embedded Ray binds to (127.0.0.1: loopback only)"),
    address: Optional[str] = typer.Option(None, "--address", envvar="RAY_ADDRESS",
                                          help="Ray cluster to join (HOST:PORT or auto)"),
    storage: Optional[str] = typer.Option(None, "--storage", envvar="BEX_STORAGE",
                                          help="storage root for datasets and Tune results (path or URI)"),
):
    if node_ip:
        os.environ["BEX_NODE_IP"] = node_ip
    if address:
        os.environ["RAY_ADDRESS"] = address
    from bex.cluster.status import check_cluster_address  # fail in seconds, not minutes, on a wrong address
    from bex.core.storage import resolve_storage

    with one_line_errors():
        check_cluster_address(address)
        if storage:
            os.environ["BEX_STORAGE"] = resolve_storage(storage, root="")


# ---------------------------------------------------------------------------------------------------- Ray's output
LOG_DIR_ENV = "BEX_LOG_DIR"


def log_dir() -> Path:
    """Where Ray's and Tune's output of a command goes: ``$BEX_LOG_DIR``, else ``bex_runs/logs`` under the storage
    root (``--storage``/``BEX_STORAGE`` when it is a local path) or the working directory."""
    from bex.core.storage import STORAGE_ENV, is_uri

    if os.environ.get(LOG_DIR_ENV):
        return Path(os.environ[LOG_DIR_ENV]).expanduser()
    base = os.environ.get(STORAGE_ENV) or ""
    return (Path(base).expanduser() if base and not is_uri(base) else Path.cwd()) / "bex_runs" / "logs"


class _ChatterLog:
    """Sends file descriptors 1 and 2 to a log file from the moment Ray starts (see :func:`chatter_to_log`)."""

    def __init__(self):
        self.path: Path | None = None
        self.saved: dict[int, int] = {}
        self.made: list[Path] = []

    def start(self) -> None:
        if self.saved:
            return
        folder = log_dir()
        made = [p for p in (folder.parent, folder) if not p.exists()]
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"bex-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
            log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError:
            return  # a read-only place: Ray's output stays where it was
        self.path, self.made = path, made
        for s in (sys.stdout, sys.stderr):
            s.flush()
        self.saved = {1: os.dup(1), 2: os.dup(2)}
        _STREAMS["out"] = os.fdopen(os.dup(self.saved[1]), "w", buffering=1, encoding="utf-8", errors="replace")
        _STREAMS["err"] = os.fdopen(os.dup(self.saved[2]), "w", buffering=1, encoding="utf-8", errors="replace")
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        err(f"bex: Ray's and Tune's own output goes to {path}")

    def end(self) -> None:
        if not self.saved:
            return
        for s in (sys.stdout, sys.stderr):
            try:
                s.flush()
            except (OSError, ValueError):
                pass
        for fd, copy in self.saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        self.saved = {}
        for key in ("out", "err"):
            _STREAMS[key].close()
            _STREAMS[key] = None
        if self.path.stat().st_size == 0:
            self.path.unlink()
            for p in reversed(self.made):
                try:
                    p.rmdir()
                except OSError:
                    break


@contextmanager
def chatter_to_log(stop_ray: Callable[[], None]):
    """From the moment this process starts Ray until the body ends, send what it writes to file descriptors 1 and 2
    (Ray's and Tune's own output: worker log lines, Tune's tables and banners) to a log file under
    :func:`log_dir`, while :func:`out` and :func:`err` keep writing to the original stdout and stderr.
    ``stop_ray`` runs before the descriptors are restored, so what Ray prints while shutting down (a worker's
    traceback from its SIGTERM handler) lands in the log too.  The log's path is printed when Ray starts; a log
    that stayed empty is removed at the end (with the folders bex made for it).  Commands that never start Ray,
    and ``--help``, print as usual; where no log can be made (a read-only directory) nothing is redirected."""
    from bex.cluster.runtime import on_ray_start

    log = _ChatterLog()
    remove = on_ray_start(log.start)
    try:
        yield log
    finally:
        remove()
        try:
            stop_ray()
        finally:
            log.end()
