"""The console script: every command registered, every error one line, SIGTERM an orderly stop."""
from __future__ import annotations

import importlib
import signal
import sys

import typer

from .app import app, chatter_to_log, err

#: The command groups (importing one registers its commands), in the order ``bex --help`` lists them.
GROUPS = tuple(importlib.import_module(f".{name}", __package__)
               for name in ("data", "train", "analysis", "pipelines", "cluster"))


def usage_message(e: Exception, argv: list[str]) -> str:
    """One line for a typer/click usage error, naming the value the user gave where the error has one."""
    if type(e).__name__ == "NoArgsIsHelpError":
        return "a command is required (the list is above)"
    message = e.format_message() if hasattr(e, "format_message") else str(e)
    line = (message.strip().splitlines() or [type(e).__name__])[0]
    param = getattr(e, "param", None)
    for opt in getattr(param, "opts", None) or []:
        for i, tok in enumerate(argv):
            if tok == opt and i + 1 < len(argv):
                return f"{line} (got {argv[i + 1]!r})"
            if tok.startswith(opt + "="):
                return f"{line} (got {tok[len(opt) + 1:]!r})"
    return line


def stop_ray() -> None:
    """Stop this process's Ray work (the embedded cluster's actors and tasks, or our jobs on a cluster)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def run(argv: list[str]) -> int:
    """Run the command line; returns the exit status (SIGTERM: 143, interrupted: 130)."""
    from bex.cluster.runtime import TERMINATED

    def terminated() -> int:
        stop_ray()
        err("bex: terminated (SIGTERM); run the same command with --resume to continue")
        return 128 + signal.SIGTERM

    try:
        rc = app(args=argv, standalone_mode=False)
    except (KeyboardInterrupt, typer.Abort):
        if TERMINATED.is_set():
            return terminated()
        stop_ray()
        err("bex: interrupted")
        return 130
    except typer.Exit as e:
        return terminated() if TERMINATED.is_set() else e.exit_code
    except typer.exceptions.TyperException as e:  # usage errors: --steps abc, an unknown option or command, ...
        err(f"bex: error: {usage_message(e, argv)}")
        return getattr(e, "exit_code", 2)
    except SystemExit as e:
        if e.code == signal.SIGTERM or TERMINATED.is_set():
            return terminated()
        raise
    except BaseException:
        if TERMINATED.is_set():  # whatever the signal interrupted, the answer is the same
            return terminated()
        raise
    if TERMINATED.is_set():  # Tune stopped on the signal (and saved its state), then returned
        return terminated()
    return rc if isinstance(rc, int) else 0


def main() -> None:
    """The console script (see :func:`run`); Ray's and Tune's own output goes to a log (``app.chatter_to_log``)."""
    from bex.cluster.runtime import handle_sigterm

    handle_sigterm()
    with chatter_to_log(stop_ray):
        rc = run(sys.argv[1:])
    sys.exit(rc)


if __name__ == "__main__":
    main()
