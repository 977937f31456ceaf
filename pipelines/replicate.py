"""``bex replicate``: the BE paper's comparison in one resumable command.

A replication config (``tune_configs/replicate_*.yaml``) holds a collection grid
(``collect:``, the keys of ``tune_configs/collect_*.yaml`` except ``name`` and
``out``), an offline sweep (``offline:``, the keys of a sweep config except
``name``, ``datasets`` and ``storage``) and coverage settings (``coverage:``,
:class:`bex.analysis.coverage.CoverageConfig`).  Everything lives under
``STORAGE/NAME/``::

    _bex_replicate.json   the config this root belongs to (another config is refused)
    datasets/             the collected datasets (hive-partitioned, one partition per run)
    offline/              the Tune experiment of the offline sweep (coverage cached in offline/coverage/)
    trials.csv            every evaluation of every trial (copied from offline/trials.csv; ``bex analyze`` input)
    results.md            Table 1 (copied from offline/results.md)
    analysis.md/.json     the primary claims' verdicts, the exploratory comparisons, aggregates, open questions
                          (``bex analyze`` of trials.csv with the coverage and this config: the same files)
    _bex_replicate_times.json   seconds spent in each stage, summed over every run (and resume) of the root
    report.html           the report page (bex report)

Stages, each skipping what is complete so that ``--resume`` continues where a run stopped (also from another
machine sharing the storage): 1. collect (runs whose partition holds its steps are skipped; others resume from
their checkpoints), 2. relabel every task (cached rewards are kept), 3. the offline sweep (a Tune experiment
restored with ``resume_errored``; finished trials are not rerun; on a machine without the root, ``--carry
trials.csv`` copies in the complete trials an earlier session committed, when the re-collected data has their
fingerprint: :func:`carry_trials`), 4. coverage, the analysis (:func:`bex.analysis.analyze.analyze`, once) and
the report page, 5. ``trials.csv``, ``results.md`` and ``analysis.md/.json`` in the root. The primary claims
are declared in the config (``analysis: {claims: [...]}``) before anything runs.
By default (``train_on: pooled``) a dataset row (explorer, objective, parameter)
pools its collection seeds into one training dataset and its runs are the
training seeds; ``train_on: each_seed`` trains every collection seed on its own
(runs = collection seeds × training seeds).  The collection settings are fixed
once a root exists; ``coverage`` may always change; an offline experiment's
settings (``offline``, ``train_on``) are fixed once it has started (recorded in
``<experiment>/_bex_offline.json``).  A second config with the same collection
and another ``experiment:`` name trains other learners on the same datasets:
its files are ``results_<experiment>.md``, ``analysis_<experiment>.md`` and
``report_<experiment>.html``.
"""
from __future__ import annotations

import json
import math
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from bex.analysis.coverage import CoverageConfig
from bex.core import ConfigBase, param
from bex.core.config import load_yaml
from bex.core.errors import RunFailed
from bex.core.progress import Progress, Reporter, report
from bex.core.storage import check_experiment_name
from bex.replay import atomic_write_bytes

from .grids import CollectGrid, SweepConfig
from .time_left import COST, STAGES, TimeLeft, collect_seconds, fmt_duration, offline_seconds, step_seconds

MARKER = "_bex_replicate.json"
OFFLINE_RECORD = "_bex_offline.json"  # in an experiment's directory: the offline settings it runs with


@dataclass(frozen=True)
class ReplicateConfig(ConfigBase):
    """A replication: a collection grid, an offline sweep over its datasets, coverage settings."""

    name: str = param(doc="replication name (its directory under the storage root)")
    collect: dict = param(doc="a collection grid without name/out (tune_configs/collect_*.yaml keys)")
    offline: dict = param(doc="an offline sweep without name/datasets/storage (tune_configs/offline_*.yaml keys)")
    storage: str = param("bex_runs/replicate", "storage root")
    coverage: dict = param(doc="coverage settings (CoverageConfig keys)", default_factory=dict)
    experiment: str = param("offline", "name of the offline experiment under the root; a second config with the "
                            "same collection and another experiment name trains other learners on the same "
                            "datasets (its files: results_<name>.md, analysis_<name>.md, report_<name>.html)")
    analysis: dict = param(doc="how the trials are analysed (AnalysisConfig keys: score_last, alpha, target, "
                           "claims, figure, volume)", default_factory=dict)
    train_on: str = param("pooled", "'pooled': a dataset row's collection seeds form one training dataset (runs of "
                          "a row = training seeds); 'each_seed': every collection seed is trained on alone (runs = "
                          "collection seeds × training seeds)", choices=("pooled", "each_seed"))
    rows: list = param(doc="the dataset rows the offline experiment trains on (labels such as be-recent/0.5, rnd); "
                       "empty: every row of the collection", default_factory=list)

    def check(self) -> None:
        check_experiment_name(self.name, "ReplicateConfig.name")
        check_experiment_name(self.experiment, "ReplicateConfig.experiment")
        if self.experiment in ("datasets", "coverage"):
            raise ValueError(f"ReplicateConfig.experiment={self.experiment!r} is reserved (a directory of the root)")
        for key, bad in (("collect", ("name", "out")), ("offline", ("name", "datasets", "storage"))):
            given = sorted(set(getattr(self, key)) & set(bad))
            if given:
                raise ValueError(f"ReplicateConfig.{key} sets {given}; the replication sets those itself")

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ReplicateConfig":
        return cls.from_dict(load_yaml(path, "replication config"), where=str(path))

    def shard(self, seed: int) -> "ReplicateConfig":
        """The shard of collection seed ``seed``: every run of the grid with that seed alone, in its own root
        (``<name>-s<seed>``) and trained on alone (``train_on: each_seed``), so a session that collects a shard
        trains on what it collected; ``bex analyze`` joins the shards' ``trials.csv`` (collection seeds become
        the unit of replication)."""
        seeds = self.collect.get("seeds", [0])
        if seed not in seeds:
            raise ValueError(f"--shard {seed} is not one of the config's collection seeds {seeds}")
        return self.replace(name=f"{self.name}-s{seed}", collect={**self.collect, "seeds": [seed]},
                            train_on="each_seed")

    # ------------------------------------------------------------------------------------------ the plan
    def root(self) -> Path:
        return Path(self.storage) / self.name

    def grid(self) -> CollectGrid:
        return CollectGrid.from_dict({**self.collect, "name": self.name, "out": str(self.root() / "datasets")},
                                     where="collect")

    def sweep(self) -> SweepConfig:
        return SweepConfig.from_dict({**self.offline, "name": self.experiment, "storage": str(self.root()),
                                      "datasets": [{"path": str(self.root() / "datasets"), "split": True}]},
                                     where="offline")

    def output(self, stem: str, suffix: str) -> Path:
        """``results.md`` ... for the default experiment, ``results_<experiment>.md`` ... for another."""
        tail = "" if self.experiment == "offline" else f"_{self.experiment}"
        return self.root() / f"{stem}{tail}{suffix}"

    def coverage_config(self) -> CoverageConfig:
        return CoverageConfig.from_dict(self.coverage, where="coverage")

    def analysis_config(self):
        from bex.analysis.analyze import AnalysisConfig

        return AnalysisConfig.from_dict(self.analysis, where="analysis")

    def validate(self) -> dict:
        """Check every part before anything runs: explorers, objectives, tasks of the collected domains,
        learners and their hyperparameters, coverage settings.  Returns the plan's sizes."""
        from bex.envs import parse_task
        from bex.learners.trial import TrialConfig

        runs = self.grid().runs_()
        sweep = self.sweep()
        domains = {r.domain for r in runs}
        if len(domains) > 1:  # rows are labelled objective[/param]: a row would pool two domains' coverage
            raise ValueError(f"collect.domains {sorted(domains)}: a replication compares datasets of one domain "
                             f"(its rows, coverage and claims are per dataset); write one config per domain")
        for t in sweep.tasks:
            d, _ = parse_task(t)
            if d not in domains:
                raise ValueError(f"offline task {t!r} is of domain {d!r}; the collection grid collects "
                                 f"{sorted(domains)}")
        for learner in sweep.learners:
            grid = sweep.grid.get(learner, {})
            first = {k: (v[0] if isinstance(v, list) and v else v) for k, v in grid.items()}
            TrialConfig.from_dict({"dataset": ".", "task": sweep.tasks[0], "learner": learner,
                                   "preset": sweep.preset, "steps": sweep.steps, "eval_every": sweep.eval_every,
                                   "report_every": sweep.report_every, "eval_episodes": sweep.eval_episodes,
                                   "learner_config": {**sweep.learner_config.get(learner, {}), **first}})
        self.coverage_config()
        acfg = self.analysis_config()
        labels = {_label(c) for c in runs}
        if sorted(set(self.rows) - labels):
            raise ValueError(f"rows {sorted(set(self.rows) - labels)} are not rows of the collection grid; its rows: "
                             f"{', '.join(sorted(labels))}")
        unknown = sorted({x for s in acfg.specs(sorted(labels)) for x in (s.a, s.b)} - labels)
        if unknown:
            raise ValueError(f"analysis.claims name dataset row(s) {unknown} that the collection grid does not make; "
                             f"its rows: {', '.join(sorted(labels))}")
        return {"runs": len(runs), "tasks": len(sweep.tasks), "learners": len(sweep.learners),
                "seeds": len(sweep.seeds)}


def _label(c) -> str:
    """A collection run's results row: ``objective[/param]`` of its partition (``be-recent/0.5``, ``rnd``)."""
    from bex.replay import format_param

    return c.partition_objective + ("" if c.partition_param is None else f"/{format_param(c.partition_param)}")


LOCK = "_bex_replicate.lock"


def hold_root(root: Path):
    """An exclusive lock on ``root`` for one ``bex replicate`` run (released when the returned file is closed,
    or the process ends): two runs on one root would collect the same unfinished partitions and double-count
    the stage times.  ``fcntl.flock``: reliable on a local disk; on shared storage only where the file system
    supports it (NFS v4, Lustre with flock), so runs on several machines must still take turns."""
    import fcntl
    import os

    f = open(root / LOCK, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "?"
        f.close()
        raise ValueError(f"{str(root)!r} is in use by another bex replicate ({holder}); wait for it to end "
                         f"or stop it, then --resume") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {os.uname().nodename}")
    f.flush()
    return f


def claim_root(cfg: ReplicateConfig, resume: bool) -> Path:
    """Create ``STORAGE/NAME`` with its marker, or check that an existing one holds this very replication."""
    root = cfg.root()
    marker = root / MARKER
    mine = json.loads(json.dumps(cfg.to_dict(), default=str))
    if marker.exists():
        try:
            theirs = json.loads(marker.read_text())
        except (OSError, ValueError):
            raise ValueError(f"{str(marker)!r} is unreadable; remove {str(root)!r} or choose another name") from None
        # the datasets fix the collection; coverage (cached by its settings) may always change; each offline
        # experiment's settings are fixed once it has started (its record, written when its stage starts)
        diff = sorted(k for k in ("name", "storage", "collect") if mine.get(k) != theirs.get(k))
        record = root / cfg.experiment / OFFLINE_RECORD
        if not diff and record.exists():
            ran = json.loads(record.read_text())
            diff = sorted(k for k in ("offline", "train_on", "rows") if mine.get(k, []) != ran.get(k, []))
        if diff:
            raise ValueError(f"storage {str(root)!r} already holds a different replication (its {diff} differ); "
                             f"choose another name or storage root, or another `experiment:` for new offline "
                             f"settings")
        diff = mine != theirs
        if not resume:
            raise ValueError(f"{str(root)!r} already holds this replication; pass --resume to continue it")
        if diff:
            atomic_write_bytes(marker, json.dumps(mine, indent=2, sort_keys=True).encode())
        return root
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{str(root)!r} exists and is not a bex replication (no {MARKER}); choose another name")
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(marker, json.dumps(mine, indent=2, sort_keys=True).encode())
    return root


def _complete(c) -> bool:
    """Whether a collection run's partition already holds its ``steps`` transitions."""
    from bex.replay import Dataset
    from bex.replay.schema import format_param

    pdir = c.partition
    if not pdir.is_dir() or not any(pdir.glob("*.parquet")):
        return False
    first = Dataset(c.out, domain=c.domain, objective=c.partition_objective, param=format_param(c.partition_param),
                    seed=c.seed).load(["is_first"]).is_first
    return len(first) - int(first.sum()) >= c.steps


def run_replication(cfg: ReplicateConfig, resume: bool = False, progress: Reporter | None = None,
                    carry: Sequence[str | Path] = ()) -> dict:
    """Run (or continue) every stage; returns a summary with each stage's wall time.

    ``carry``: ``trials.csv`` files of this experiment from earlier sessions (another machine, whose root is
    gone): their complete trials on data with the same fingerprint are copied in, not rerun
    (:func:`carry_trials`).

    ``progress`` gets a :class:`~bex.core.progress.Progress` event with a ``message`` line when a stage starts,
    the time-left line (:class:`~.time_left.TimeLeft`) at most every 30 s, and the collection's own events (one
    row per run) during the collect stage."""
    from bex.analysis.analyze import write_analysis
    from bex.analysis.report import build_report, sweep_coverage
    from bex.analysis.results import read_trials, sweep_rows, write_results
    from bex.analysis.trials import read_trials_csv
    from bex.cluster.driver import run_collections
    from bex.cluster.raymap import ray_map
    from bex.cluster.runtime import TERMINATED
    from bex.cluster.train import can_restore, run_trials
    from bex.replay import relabel
    from bex.replay.card import update_card

    plan = cfg.validate()
    carry_rows = read_trials_csv(carry) if carry else []  # bad files fail before anything runs
    root = claim_root(cfg, resume)
    lock = hold_root(root)
    stopped = {"root": str(root), "terminated": True, "markdown": ""}
    t_all = time.perf_counter()
    grid, sweep = cfg.grid(), cfg.sweep()
    runs = grid.runs_()
    todo = [c for c in runs if not _complete(c)]
    _fold_interrupted(root)

    say = report(progress)

    def tick(event: Progress) -> None:  # every time-left line (at most every 30 s) also records the stage's time
        say(event)
        _checkpoint_time(proj, root, cfg.experiment)

    proj = TimeLeft(prior_seconds(cfg, todo), progress=tick)
    try:
        def stage(i: int, detail: str) -> None:
            proj.start(STAGES[i])
            say(Progress(STAGES[i], i, len(STAGES), message=f"[replicate {i + 1}/{len(STAGES)}] {STAGES[i]}: "
                         f"{detail} ({sum(proj.done.values()):.0f} s so far; projected left "
                         f"{fmt_duration(proj.left())})"))

        stage(0, f"{len(todo)} of {len(runs)} runs to collect -> {grid.out}")
        if todo:
            weight = [step_seconds(c) for c in todo]  # a recent-mode step costs ~3 batch-mode steps

            before: list[float] = []  # steps a resumed run had already collected: not this run's rate
            work = [0.0]  # the stage's whole cost (weighted steps), the prior's unit

            def collecting(event: Progress) -> None:
                say(event)  # one row per run of `todo`, in order: the stage's fraction weighs steps by their cost
                rows = event.rows
                done = sum(w * r["steps"] for w, r in zip(weight, rows))
                work[0] = sum(w * r["total"] for w, r in zip(weight, rows))
                if not before:
                    before.append(sum(w * r.get("resumed_from", 0) for w, r in zip(weight, rows)))
                proj.update(done - before[0], work[0] - before[0])

            run_collections(todo, resume=True, progress=collecting, max_concurrent_runs=grid.max_concurrent_runs)
            # the prior counted every step of the unfinished runs; this run did those after `before`
            _finish(proj, root, cfg.experiment, share=1 - before[0] / work[0] if before and work[0] else 1.0)
        else:
            _finish(proj, root, cfg.experiment)
        if TERMINATED.is_set():  # the collection stopped on SIGTERM (checkpointed): --resume continues
            return stopped

        stage(1, f"tasks {sweep.tasks}")
        computed = rows = 0
        for i, task in enumerate(sweep.tasks):
            r = relabel(grid.out, task, map_fn=ray_map())
            computed, rows = computed + r["computed_rows"], rows + r["rows"]
            proj.update(i + 1, len(sweep.tasks))
        update_card(grid.out)
        _finish(proj, root, cfg.experiment, share=computed / rows if rows else 0.0)

        trials = per_partition_trials(sweep) if cfg.train_on == "each_seed" else sweep.trials()
        trials = [t for t in trials if not cfg.rows or t.label in cfg.rows]
        exp = root / cfg.experiment
        restore = can_restore(str(exp.resolve()))
        exp.mkdir(parents=True, exist_ok=True)  # its offline settings are fixed from here on (claim_root)
        settings = json.loads(json.dumps(cfg.to_dict(), default=str))
        atomic_write_bytes(exp / OFFLINE_RECORD, json.dumps({k: settings[k] for k in ("offline", "train_on", "rows")},
                                                            indent=2, sort_keys=True).encode())
        to_run, carried = carry_trials(exp, trials, carry_rows, carry) if carry else (trials, 0)
        stage(2, f"{len(trials)} trials ({'resuming' if restore else 'new'}"
                 f"{f', {carried} carried from {len(carry)} file(s)' if carry else ''}) -> {exp}")
        steps0, planned = offline_progress(exp, trials)  # a resumed sweep's earlier steps are not this run's work
        proj.resumed_at(steps0, planned)
        grid = []
        if to_run or restore:
            with _watch(lambda: proj.update(*offline_progress(exp, trials))):
                grid = run_trials(to_run, name=cfg.experiment, storage=str(root), resources=sweep.resources,
                                  max_concurrent=sweep.max_concurrent_trials, max_failures=sweep.max_failures,
                                  resume=restore)
        _finish(proj, root, cfg.experiment, share=1 - min(steps0, planned) / planned if planned else 0.0)
        if TERMINATED.is_set():  # Tune stopped on SIGTERM and saved its state: stop here, --resume continues
            return stopped
        check_trials(grid, exp)

        stage(3, "coverage of every dataset row (cached), the analysis and the page")
        acfg, cov_cfg = cfg.analysis_config(), cfg.coverage_config()
        trials_read = read_trials(exp)
        cov = sweep_coverage(exp, trials_read, cov_cfg)
        out = write_results(exp, acfg, cov["datasets"], rows=sweep_rows(exp, trials_read))  # Table 1, analysis
        rep = build_report([exp], cfg.output("report", ".html"), cov_cfg, figure=acfg.figure,
                           prepared={"rows": out["rows"], "analysis": out["analysis"], "coverage": cov,
                                     "curve_png": out["curve_png"]})
        _finish(proj, root, cfg.experiment)

        stage(4, "trials.csv, Table 1 and the claims in the root")
        atomic_write_bytes(cfg.output("trials", ".csv"), Path(out["trials_csv"]).read_bytes())
        atomic_write_bytes(cfg.output("results", ".md"), Path(out["md"]).read_bytes())
        write_analysis(out["analysis"], root, cfg.output("analysis", "").name)
        _finish(proj, root, cfg.experiment)
        total = stage_times(root)
        say(Progress(STAGES[-1], len(STAGES), len(STAGES), message=(
            f"[replicate] done in {time.perf_counter() - t_all:.0f} s: {cfg.output('results', '.md')}, "
            f"{cfg.output('report', '.html')}; time in each stage over every run of this root: "
            + ", ".join(f"{k} {fmt_duration(v)}" for k, v in total.items()))))
        return {"root": str(root), "plan": plan, "trials": len(trials), "complete": out["complete"],
                "verdicts": rep.get("verdicts", {}),
                "stage_wall_s": {k: round(v, 1) for k, v in proj.done.items()},
                "stage_wall_total_s": {k: round(v, 1) for k, v in total.items()}, "report": rep["out"],
                "markdown": out["markdown"]}

    finally:  # a stage left by SIGTERM (SystemExit) or an error still adds its time to the root's total
        if proj.current is not None:
            _finish(proj, root, cfg.experiment)
        lock.close()

class TrialsFailed(RunFailed):
    """Trials of the offline stage ended in an error: the replication stops before tables are made of them."""


def check_trials(grid, exp: Path) -> None:
    """Raise :class:`TrialsFailed` (one line: how many, the first error's last line, where to read it) when
    any trial of the offline stage errored; ``--resume`` retries errored trials (``resume_errored``)."""
    failed = [r for r in grid if r.error is not None]
    if failed:
        first = str(failed[0].error).strip().splitlines() or [type(failed[0].error).__name__]
        where = Path(failed[0].path).name if failed[0].path else "?"
        raise TrialsFailed(f"{len(failed)} of {len(grid)} offline trials failed (first, {where}: {first[-1]}); "
                           f"their errors are in {exp}/*/error.txt; after a fix, --resume retries them")


TIMES = "_bex_replicate_times.json"
RUNNING = "_running"  # the stage in progress and its seconds so far, rewritten at every progress line


def _read_times(root: Path) -> dict:
    try:
        raw = json.loads((root / TIMES).read_text())
        return raw if isinstance(raw, dict) else {}
    except (OSError, ValueError):
        return {}


def stage_times(root: Path) -> dict[str, float]:
    """Seconds spent in each stage, summed over every ``bex replicate`` run of this root (pauses excluded); a
    run killed without a chance to finish its stage (SIGKILL, a session's end) counts up to its last progress
    line (``_running``)."""
    raw = _read_times(root)
    total = {k: float(v) for k, v in raw.items() if isinstance(v, (int, float))}
    run = raw.get(RUNNING)
    if isinstance(run, dict) and isinstance(run.get("seconds"), (int, float)):
        total[run["stage"]] = total.get(run["stage"], 0.0) + float(run["seconds"])
    return total


def _stage_key(stage: str, experiment: str) -> str:
    """The stages after relabelling of an experiment other than ``offline`` are keyed ``stage [experiment]``."""
    return stage if experiment == "offline" or stage in ("collect", "relabel") else f"{stage} [{experiment}]"


def _checkpoint_time(proj: TimeLeft, root: Path, experiment: str) -> None:
    """Record the current stage's seconds so far, so that a killed run's time is not lost."""
    if proj.current is None:
        return
    raw = _read_times(root)
    raw[RUNNING] = {"stage": _stage_key(proj.current, experiment), "seconds": proj.clock() - proj.started}
    atomic_write_bytes(root / TIMES, json.dumps(raw, indent=1).encode())


def _finish(proj: TimeLeft, root: Path, experiment: str = "offline", share: float = 1.0) -> None:
    """End the current stage and add its wall time to the root's running total (``_bex_replicate_times.json``);
    this run's ``_running`` record is superseded by the stage's wall time."""
    stage = _stage_key(proj.current, experiment)
    wall = proj.finish(share)
    raw = _read_times(root)
    raw.pop(RUNNING, None)
    total = {k: float(v) for k, v in raw.items() if isinstance(v, (int, float))}
    total[stage] = total.get(stage, 0.0) + wall
    atomic_write_bytes(root / TIMES, json.dumps(total, indent=1).encode())


def _fold_interrupted(root: Path) -> None:
    """At the start of a run: a ``_running`` record left by a killed run becomes part of its stage's total."""
    if RUNNING in _read_times(root):
        atomic_write_bytes(root / TIMES, json.dumps(stage_times(root), indent=1).encode())


def prior_seconds(cfg: ReplicateConfig, todo) -> dict[str, float]:
    """Each stage's projected seconds before it runs (:mod:`.time_left`'s unit costs); the offline
    sweep has one trial per training dataset (a dataset row, or each collection run with ``train_on:
    each_seed``) × task × learner × seed × hyperparameter combination."""
    import os
    from types import SimpleNamespace

    cpus = os.cpu_count() or 1
    grid, sweep = cfg.grid(), cfg.sweep()
    runs = [c for c in grid.runs_() if not cfg.rows or _label(c) in cfg.rows]
    datasets = len(runs) if cfg.train_on == "each_seed" else len({(c.domain, c.partition_objective,
                                                                      c.partition_param) for c in runs})
    trials = []
    for learner in sweep.learners:
        combos = math.prod(len(v) for v in sweep.grid.get(learner, {}).values() if isinstance(v, list)) or 1
        one = SimpleNamespace(learner=learner, preset=sweep.preset, steps=sweep.steps, eval_every=sweep.eval_every,
                              eval_episodes=sweep.eval_episodes, learner_config=sweep.learner_config.get(learner, {}))
        trials += [one] * (datasets * len(sweep.tasks) * len(sweep.seeds) * combos)
    cov = cfg.coverage_config()
    slots = min(cpus, grid.max_concurrent_runs or len(todo) or 1)
    rows = sum(c.steps for c in runs)
    trial_slots = min(cpus, sweep.max_concurrent_trials or cpus)
    return {"collect": collect_seconds(todo, slots),
            "relabel": rows * len(sweep.tasks) * COST["relabel_row"] / cpus,
            "offline": offline_seconds(trials, trial_slots),
            "coverage + report": len(runs) * min(cov.max_states or rows, rows) * COST["coverage_state"],
            "results": 5.0}


def offline_progress(exp: Path, trials) -> tuple[int, int]:
    """(gradient steps done, steps planned) over the sweep's trials, from each trial's ``result.json``."""
    done = 0
    for f in exp.glob("*/result.json"):
        try:
            with open(f, "rb") as fh:
                fh.seek(max(0, f.stat().st_size - 65536))
                last = [x for x in fh.read().splitlines() if x.strip().startswith(b"{")]
            done += int(json.loads(last[-1]).get("steps", 0)) if last else 0
        except (OSError, ValueError, IndexError):
            continue
    return done, sum(t.steps for t in trials)


@contextmanager
def _watch(poll: Callable[[], None], every: float = 30.0):
    """Call ``poll`` every ``every`` seconds in a thread while the body runs."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            try:
                poll()
            except Exception:  # a progress line must never stop the sweep
                pass

    th = threading.Thread(target=loop, name="bex-replicate-progress", daemon=True)
    th.start()
    try:
        yield
    finally:
        stop.set()
        th.join(timeout=5)


def per_partition_trials(sweep: SweepConfig):
    """The sweep's trials with each collection seed trained on its own: one dataset selection per seed, split
    into rows by the sweep (label ``objective[/param]``, so a row pools the seeds in the table, not in
    training)."""
    from bex.replay import Dataset

    path = sweep.datasets[0].path
    seeds = sorted({p["seed"] for p in Dataset(path).partitions}, key=int)
    selections = [{"path": path, "filters": {"seed": s}} for s in seeds]
    return SweepConfig.from_dict({**sweep.to_dict(), "datasets": selections}, where="offline").trials()


CARRIED = "carried.json"  # in a carried trial's folder: where its rows came from


def carry_trials(exp: Path, trials: list, rows: list[dict], sources: Sequence[str | Path]) -> tuple[list, int]:
    """Copy into ``exp`` the complete trials that ``rows`` (read from ``sources``: ``trials.csv`` files of this
    experiment written by an earlier session, e.g. on a machine that is gone) hold, and return the trials still to
    run and how many were carried. A trial is carried when the rows hold every evaluation it plans (each
    ``eval_every`` steps and the last, ``eval_episodes`` episodes each) and the data they were trained on has the
    fingerprint that this root's selection has now; a carried trial becomes a folder ``exp/<trial>`` with
    ``params.json`` and ``result.json`` (its evaluations) and ``carried.json``, which every later stage reads like a
    trial Tune ran. A fingerprint that differs is a one-line error: a re-collected dataset that differs from the one
    the trials trained on is retrained, never mixed (docs/replication.md)."""
    from bex.analysis.trials import KEY, trial_key
    from bex.replay import Dataset

    by_trial: dict[tuple, list[dict]] = {}
    for r in rows:
        by_trial.setdefault(tuple(r[k] for k in KEY), []).append(r)
    fingerprints: dict[str, str] = {}
    left, carried = [], []
    for t in trials:
        cfg = t.to_dict()
        evals = sorted(by_trial.get(trial_key(cfg), []), key=lambda r: r["step"])
        planned = set(range(t.eval_every, t.steps + 1, t.eval_every)) | {t.steps}
        if not ({r["step"] for r in evals} >= planned and all(r["episodes"] == t.eval_episodes for r in evals)):
            left.append(t)  # absent or unfinished: trained here
            continue
        evals = [r for r in evals if r["step"] in planned]
        sel = json.dumps([t.dataset, t.filters], sort_keys=True)
        if sel not in fingerprints:
            fingerprints[sel] = Dataset(t.dataset, **t.filters).fingerprint()
        found = {r.get("fingerprint", "") for r in evals}
        if found != {fingerprints[sel]}:
            raise ValueError(f"carried trial {evals[0].get('trial') or trial_key(cfg)} trained on data with "
                             f"fingerprint {'/'.join(sorted(found)) or 'none'}, but {t.dataset} {t.filters} now has "
                             f"{fingerprints[sel]}: the data differ; retrain without --carry")
        carried.append((evals[0].get("trial") or "_".join(str(x) for x in trial_key(cfg)).replace("/", "-"),
                        cfg, evals))
    for name, cfg, evals in carried:  # written once every carried trial's data is checked
        if (exp / name).exists():
            continue  # carried by an earlier run of this root
        tmp = exp / f".{name}.carrying"
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "params.json").write_text(json.dumps({"trial": cfg}, sort_keys=True, default=str))
        (tmp / "result.json").write_text("".join(json.dumps(
            {"steps": r["step"], "eval/at_step": r["step"], "eval/return_mean": r["return_mean"],
             "eval/return_std": r["return_std"], "data/fingerprint": r["fingerprint"]}) + "\n" for r in evals))
        (tmp / CARRIED).write_text(json.dumps({"from": [str(f) for f in sources]}))
        tmp.rename(exp / name)
    return left, len(carried)
