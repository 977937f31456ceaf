"""``bex replicate``: the BE paper's comparison in one resumable command.

A replication config (``tune_configs/replicate_*.yaml``) holds a collection grid
(``collect:``, the keys of ``tune_configs/collect_*.yaml`` except ``name`` and
``out``), an offline sweep (``offline:``, the keys of a sweep config except
``name``, ``datasets`` and ``storage``) and coverage settings (``coverage:``,
:class:`bex.replay.coverage.CoverageConfig`).  Everything lives under
``STORAGE/NAME/``::

    _bex_replicate.json   the config this root belongs to (another config is refused)
    datasets/             the collected datasets (hive-partitioned, one partition per run)
    offline/              the Tune experiment of the offline sweep (coverage cached in offline/coverage/)
    results.md            Table 1 (copied from offline/results.md)
    report.html           the report page (bex report)

Stages, each skipping what is complete so that ``--resume`` continues where a
run stopped (also from another machine sharing the storage): 1. collect (runs
whose partition holds its steps are skipped; others resume from their
checkpoints), 2. relabel every task (cached rewards are kept), 3. the offline
sweep (a Tune experiment restored with ``resume_errored``; finished trials are
not rerun), 4. coverage and the report page, 5. ``results.md``.
Every collection seed's partition is its own dataset row, so collection seeds
and training seeds both count as runs of a row.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bex.core import ConfigBase, param
from bex.replay.coverage import CoverageConfig

from .collect_grid import CollectGrid
from .sweep import SweepConfig
from .train import check_experiment_name
from .yamlconf import load_yaml

MARKER = "_bex_replicate.json"
STAGES = ("collect", "relabel", "offline", "coverage + report", "results")


@dataclass(frozen=True)
class ReplicateConfig(ConfigBase):
    """A replication: a collection grid, an offline sweep over its datasets, coverage settings."""

    name: str = param(doc="replication name (its directory under the storage root)")
    collect: dict = param(doc="a collection grid without name/out (tune_configs/collect_*.yaml keys)")
    offline: dict = param(doc="an offline sweep without name/datasets/storage (tune_configs/offline_*.yaml keys)")
    storage: str = param("bex_runs/replicate", "storage root")
    coverage: dict = param(doc="coverage settings (CoverageConfig keys)", default_factory=dict)

    def check(self) -> None:
        check_experiment_name(self.name, "ReplicateConfig.name")
        for key, bad in (("collect", ("name", "out")), ("offline", ("name", "datasets", "storage"))):
            given = sorted(set(getattr(self, key)) & set(bad))
            if given:
                raise ValueError(f"ReplicateConfig.{key} sets {given}; the replication sets those itself")

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ReplicateConfig":
        return cls.from_dict(load_yaml(path, "replication config"), where=str(path))

    # ------------------------------------------------------------------------------------------ the plan
    def root(self) -> Path:
        return Path(self.storage) / self.name

    def grid(self) -> CollectGrid:
        return CollectGrid.from_dict({**self.collect, "name": self.name, "out": str(self.root() / "datasets")},
                                     where="collect")

    def sweep(self) -> SweepConfig:
        return SweepConfig.from_dict({**self.offline, "name": "offline", "storage": str(self.root()),
                                      "datasets": [{"path": str(self.root() / "datasets"), "split": False}]},
                                     where="offline")

    def coverage_config(self) -> CoverageConfig:
        return CoverageConfig.from_dict(self.coverage, where="coverage")

    def validate(self) -> dict:
        """Check every part before anything runs: explorers, objectives, tasks of the collected domains,
        learners and their hyperparameters, coverage settings.  Returns the plan's sizes."""
        from bex.envs import parse_task
        from bex.learners.trial import TrialConfig

        runs = self.grid().runs_()
        sweep = self.sweep()
        domains = {r.domain for r in runs}
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
        return {"runs": len(runs), "tasks": len(sweep.tasks), "learners": len(sweep.learners),
                "seeds": len(sweep.seeds)}


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
        if theirs != mine:
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise ValueError(f"storage {str(root)!r} already holds a different replication (its {diff} differ); "
                             f"choose another name or storage root")
        if not resume:
            raise ValueError(f"{str(root)!r} already holds this replication; pass --resume to continue it")
        return root
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{str(root)!r} exists and is not a bex replication (no {MARKER}); choose another name")
    from bex.replay import atomic_write_bytes

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


def run_replication(cfg: ReplicateConfig, resume: bool = False,
                    say: Callable[[str], None] = print) -> dict:
    """Run (or continue) every stage; returns a summary with each stage's wall time."""
    from bex.replay import relabel

    from .driver import print_progress, run_collections
    from .relabel import ray_map
    from .report import build_report
    from .results import write_results
    from .runtime import TERMINATED
    from .train import run_trials

    plan = cfg.validate()
    root = claim_root(cfg, resume)
    stopped = {"root": str(root), "terminated": True, "markdown": ""}
    t_all = time.perf_counter()
    walls = {}

    def stage(i: int, detail: str) -> float:
        done = sum(walls.values())
        say(f"[replicate {i + 1}/{len(STAGES)}] {STAGES[i]}: {detail} ({done:.0f} s so far)")
        return time.perf_counter()

    grid = cfg.grid()
    runs = grid.runs_()
    todo = [c for c in runs if not _complete(c)]
    t0 = stage(0, f"{len(todo)} of {len(runs)} runs to collect -> {grid.out}")
    if todo:
        run_collections(todo, resume=True, progress=print_progress(), max_concurrent_runs=grid.max_concurrent_runs)
    walls["collect"] = time.perf_counter() - t0
    if TERMINATED.is_set():  # the collection stopped on SIGTERM (checkpointed): --resume continues
        return stopped

    sweep = cfg.sweep()
    t0 = stage(1, f"tasks {sweep.tasks}")
    for task in sweep.tasks:
        relabel(grid.out, task, map_fn=ray_map())
    walls["relabel"] = time.perf_counter() - t0

    trials = per_partition_trials(sweep)
    exp = root / "offline"
    from ray import tune

    restore = tune.Tuner.can_restore(str(exp.resolve()))
    t0 = stage(2, f"{len(trials)} trials ({'resuming' if restore else 'new'}) -> {exp}")
    run_trials(trials, name="offline", storage=str(root), resources=sweep.resources,
               max_concurrent=sweep.max_concurrent_trials, max_failures=sweep.max_failures, resume=restore)
    walls["offline"] = time.perf_counter() - t0
    if TERMINATED.is_set():  # Tune stopped on SIGTERM and saved its state: stop here, --resume continues
        return stopped

    t0 = stage(3, "coverage of every dataset row (cached) and the page")
    rep = build_report([exp], root / "report.html", cfg.coverage_config(), random_episodes=5)
    walls["coverage + report"] = time.perf_counter() - t0

    t0 = stage(4, "Table 1")
    out = write_results(exp)
    shutil.copyfile(out["md"], root / "results.md")
    walls["results"] = time.perf_counter() - t0
    say(f"[replicate] done in {time.perf_counter() - t_all:.0f} s: {root / 'results.md'}, {root / 'report.html'}")
    return {"root": str(root), "plan": plan, "trials": len(trials), "complete": out["complete"],
            "stage_wall_s": {k: round(v, 1) for k, v in walls.items()}, "report": rep["out"],
            "markdown": out["markdown"]}


def per_partition_trials(sweep: SweepConfig):
    """The sweep's trials with each collection seed trained on its own: one dataset selection per seed, split
    into rows by the sweep (label ``objective[/param]``, so a row pools the seeds in the table, not in
    training)."""
    from bex.replay import Dataset

    path = sweep.datasets[0].path
    seeds = sorted({p["seed"] for p in Dataset(path).partitions}, key=int)
    selections = [{"path": path, "filters": {"seed": s}} for s in seeds]
    return SweepConfig.from_dict({**sweep.to_dict(), "datasets": selections}, where="offline").trials()
