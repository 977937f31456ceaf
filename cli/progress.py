"""How the ``bex`` command shows :class:`~bex.core.progress.Progress` events, on stderr.

One printer for every command: an event with a ``message`` prints that line;
a collection's events (stage ``collect``, one row per run) print the run table
(refreshed in place on a terminal, at most every 10 s elsewhere, and at the
end); a distillation's events print one line per outer step; every other event
draws a bar for its stage (redrawn in place on a terminal; elsewhere a line at
the start, each quarter and the end of a stage) with the elapsed time and an
estimate of the time left.
"""
from __future__ import annotations

import time
from typing import Callable

from bex.core.progress import Progress, Reporter

from .app import err_stream


def run_table(rows) -> str:
    """A collection's runs, one line each."""
    lines = [f"{'run':<28} {'steps':>16} {'env st/s':>9} {'upd/s':>7} {'intr':>9} {'knn ms':>7} {'restarts':>8}"]
    for r in rows:
        intr = "-" if r["intr_reward_mean"] is None else f"{r['intr_reward_mean']:.4g}"
        knn = "-" if r["knn_ms"] is None else f"{r['knn_ms']:.1f}"
        lines.append(f"{r['run']:<28} {r['steps']:>7}/{r['total']:<8} {r['env_steps_per_s']:>9.0f} "
                     f"{r['updates_per_s']:>7.1f} {intr:>9} {knn:>7} {r['restarts']:>8}")
    return "\n".join(lines)


def distill_line(row: dict, total: float, elapsed: float) -> str:
    ev = f" eval {row['eval/return_mean']:.1f} ± {row['eval/return_std']:.1f}" if "eval/return_mean" in row else ""
    per = row.get("distill/s_per_step", 0.0)
    return (f"[distill] step {row['steps']}/{total:g} loss {row['distill/loss']:.4g} {per:.2f} s/step{ev} "
            f"({elapsed:.0f} s, ~{(total - row['steps']) * per:.0f} s left)")


def printer(prefix: str, stream=None, width: int = 24, table_every: float = 10.0,
            messages: Callable[[str], None] | None = None) -> Reporter:
    """A :data:`~bex.core.progress.Reporter` drawing events on ``stream`` (bex's stderr); ``messages``, when
    given, receives the events' message lines instead (the demo prints its narrative on stdout)."""
    state = {"stage": None, "t0": time.monotonic(), "quarter": -1, "table": 0.0}

    def write(text: str, tty: bool = False) -> None:
        s = stream or err_stream()
        s.write(text if tty else text + "\n")
        s.flush()

    def show(event: Progress) -> None:
        s = stream or err_stream()
        tty = s.isatty()
        now = time.monotonic()
        if event.message:
            (messages or write)(event.message)
            return
        if event.stage != state["stage"]:
            state.update(stage=event.stage, t0=now, quarter=-1)
        frac = event.fraction
        if event.stage == "collect" and event.rows:
            if tty:
                write("\x1b[2J\x1b[H" + run_table(event.rows) + "\n", tty=True)
            elif now - state["table"] >= table_every or frac == 1.0:
                state["table"] = now
                write(run_table(event.rows))
            return
        if event.stage == "distill" and event.rows:
            write(distill_line(event.rows[-1], event.total, now - state["t0"]))
            return
        frac = 1.0 if frac is None else frac
        quarter = int(frac * 4)
        if not tty and quarter == state["quarter"]:
            return
        state["quarter"] = quarter
        el = now - state["t0"]
        eta = f", ~{el / frac - el:.0f} s left" if 0 < frac < 1 else ""
        fill = int(round(frac * width))
        line = (f"[{prefix}] {event.stage:<13} |{'#' * fill}{'.' * (width - fill)}| {event.done:g}/{event.total:g} "
                f"{el:.1f} s{eta}")
        if tty:
            write("\r\x1b[K" + line + ("\n" if frac >= 1 else ""), tty=True)
        else:
            write(line)

    return show
