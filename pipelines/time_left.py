"""The time left of a replication: ``bex replicate``'s progress line.

Before a stage runs, its time is a *prior*: the stage's work (env steps,
rewards to relabel, gradient updates and evaluation steps, states to cover)
times a per-unit cost in seconds of one CPU core (:data:`COST`; where each
figure was measured, and how: ``docs/replication.md``, "Unit costs of the
time-left estimate"), divided by the slots that work in parallel.  Once a
stage has done 2 % of its work (and run 20 s) its own rate replaces the prior:
left = elapsed × (1 − f) / f.  The later stages' priors are scaled by the ratio
measured/prior of the stages already finished, so a machine twice as slow as
the one the costs were measured on projects twice the time after the first
stage.  A stage that ran under :data:`MIN_SCALE_SECONDS` does not count: its
start-up outweighs its work (the decisive replication's relabel of one task,
9 s against a 44 s prior, scaled a 2-hour offline prior down to 25 minutes).
"""
from __future__ import annotations

import time
from typing import Callable

from bex.core.progress import Progress, Reporter, report

#: Per-unit costs in seconds of one CPU core (their measurements: docs/replication.md).
COST = {
    # one environment step of a collection run at the small preset, its explorer's updates included, by explorer
    # and k-NN mode; the paper preset costs paper_factor times as much
    "env_step": {"random": 1 / 1500, "apt": 1 / 210, "apt/recent": 1 / 50, "apt/window": 1 / 75,
                 "rnd": 1 / 210, "smm": 1 / 135},
    "paper_factor": 30.0,
    # one gradient update at hidden 256, batch 256, by learner (and variant); update_seconds scales it to other sizes
    "update_256": {"td3": 0.0123, "td3/exorl": 0.0156, "td3_bst": 0.014, "crr": 0.032, "cql": 0.085,
                   "cql/exorl": 0.085, "bc": 0.005, "iql": 0.015, "distill": 0.05},
    "update_overhead": 0.2,      # the share of a 256/256 update that does not shrink with the network
    "eval_step": 1 / 900,        # one evaluation env step with the policy's forward pass
    "relabel_row": 1 / 15000,    # one physics state relabelled for one task, Ray tasks and cache writes included
    "coverage_state": 5e-4,      # one state through the coverage figures and maps
}
STAGES = ("collect", "relabel", "offline", "coverage + report", "results")
#: A finished stage shorter than this says nothing of the machine's speed and does not scale later priors.
MIN_SCALE_SECONDS = 60.0


def fmt_duration(seconds: float) -> str:
    s = int(max(0.0, seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def step_seconds(c) -> float:
    """The prior cost of one environment step of collection run ``c`` (a CollectConfig), updates included."""
    kind = c.explorer
    if kind == "apt":
        mode = c.explorer_settings().get("knn_mode", "batch")
        kind = "apt" if mode == "batch" else f"apt/{mode}"
    per = COST["env_step"].get(kind, COST["env_step"]["apt"])
    if c.preset == "paper" and c.explorer != "random":
        per *= COST["paper_factor"]
    return per


def collect_seconds(runs, slots: int) -> float:
    """Prior of a collection grid: each run's steps × its per-step cost, spread over ``slots`` parallel runs."""
    return sum(c.steps * step_seconds(c) for c in runs) / max(1, slots)


def update_seconds(learner: str, hidden: int, batch: int) -> float:
    """One gradient update: the hidden-256/batch-256 cost, its FLOP part (``1 - update_overhead``) scaled by
    hidden² × batch (how well this fits the measured sizes: docs/replication.md)."""
    ref = COST["update_256"].get(learner, COST["update_256"]["td3"])
    o = COST["update_overhead"]
    return ref * (o + (1 - o) * (hidden / 256) ** 2 * (batch / 256))


def offline_seconds(trials, slots: int) -> float:
    """Prior of the offline sweep: updates and evaluation episodes of every trial over ``slots`` parallel trials."""
    from bex.learners import LEARNERS, make_config

    total = 0.0
    for t in trials:
        lc = make_config(t.learner, t.learner_config, t.preset) if t.learner in LEARNERS else None
        hidden, batch = getattr(lc, "hidden_dim", 256), getattr(lc, "batch_size", 256)
        name = f"{t.learner}/exorl" if getattr(lc, "variant", None) == "exorl" else t.learner
        evals = t.steps // t.eval_every + (t.steps % t.eval_every > 0)
        total += t.steps * update_seconds(name, hidden, batch) + evals * t.eval_episodes * 1000 * COST["eval_step"]
    return total / max(1, slots)


class TimeLeft:
    """Stage-by-stage progress and the projected time left; ``line()`` is what ``bex replicate`` prints.

    ``progress`` gets ``Progress(stage, done, total, message=line())`` from :meth:`update`, at most every
    ``every`` seconds.
    """

    def __init__(self, prior: dict[str, float], progress: Reporter | None = None, every: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.prior = {s: float(prior.get(s, 0.0)) for s in STAGES}
        self.progress, self.every, self.clock = report(progress), every, clock
        self.done: dict[str, float] = {}  # finished stages: measured seconds
        self.share: dict[str, float] = {}  # finished stages: the share of their prior's work done in this run
        self.current: str | None = None
        self.fraction = 0.0
        self.base = 0.0  # the current stage's fraction done before this run (a resumed sweep)
        self.started = self._said = 0.0

    def start(self, stage: str) -> None:
        self.current, self.fraction, self.base, self.started = stage, 0.0, 0.0, self.clock()

    def finish(self, share: float = 1.0) -> float:
        """End the current stage; ``share``: how much of its prior's work this run did (a relabel whose reward
        caches mostly existed did little of it), so that ``scale`` compares like with like."""
        wall = self.clock() - self.started
        if self.current is not None:
            self.done[self.current] = wall
            self.share[self.current] = share
        self.current = None
        return wall

    def skip(self, stage: str) -> None:
        """A stage with nothing to do (complete before this run)."""
        self.done[stage] = 0.0

    def resumed_at(self, done: float, total: float) -> None:
        """The current stage starts with ``done`` of ``total`` units already done (by an earlier run): its rate
        counts only the work done after this."""
        self.fraction = self.base = min(1.0, max(0.0, done / total)) if total > 0 else 1.0

    def update(self, done: float, total: float) -> None:
        """The current stage has done ``done`` of ``total`` units; reports the line at most every ``every`` s."""
        self.fraction = min(1.0, max(0.0, done / total)) if total > 0 else 1.0
        now = self.clock()
        if now - self._said >= self.every:
            self._said = now
            self.progress(Progress(self.current or "-", done, total, message=self.line()))

    def scale(self) -> float:
        """measured / prior over the finished stages that had work and ran at least :data:`MIN_SCALE_SECONDS`,
        each prior times the share of its work done in this run (1 before any)."""
        worked = [s for s, w in self.done.items() if w >= MIN_SCALE_SECONDS and self.share.get(s, 1.0) > 0]
        meas = sum(self.done[s] for s in worked)
        pri = sum(self.prior[s] * self.share.get(s, 1.0) for s in worked)
        return meas / pri if meas > 0 and pri > 0 else 1.0

    def stage_left(self) -> float:
        if self.current is None:
            return 0.0
        elapsed = self.clock() - self.started
        f, ran = self.fraction, self.fraction - self.base  # a resumed stage's rate counts this run's work only
        if ran >= 0.02 and elapsed >= 20:
            return elapsed * (1 - f) / ran
        return max(0.0, self.prior[self.current] * self.scale() * (1 - f))

    def left(self) -> float:
        """Projected seconds to the end of the replication."""
        later = [s for s in STAGES if s not in self.done and s != self.current]
        return self.stage_left() + self.scale() * sum(self.prior[s] for s in later)

    def line(self) -> str:
        name = self.current or "-"
        i = STAGES.index(self.current) + 1 if self.current in STAGES else 0
        elapsed = self.clock() - self.started if self.current else 0.0
        return (f"[replicate {i}/{len(STAGES)}] {name} {100 * self.fraction:.1f}% ({fmt_duration(elapsed)} in stage) · "
                f"projected left: stage {fmt_duration(self.stage_left())}, all {fmt_duration(self.left())}")


__all__ = ["COST", "MIN_SCALE_SECONDS", "STAGES", "TimeLeft", "collect_seconds", "fmt_duration", "step_seconds",
           "offline_seconds", "update_seconds"]
