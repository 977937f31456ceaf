"""The YAML grids: collection grids (``bex collect --config``) and offline sweeps (``bex sweep``).

A collection grid (``tune_configs/collect_*.yaml``) is runs × domains × seeds (× α or q values)::

    name: collect_small
    out: bex_runs/datasets/walker_small
    domains: [walker]
    task: null                      # collection task; null = each domain's primal task (walker stand ...)
    seeds: [0]
    steps: 50000
    preset: small
    actors: 1                       # environment workers per run
    max_concurrent_runs: 2
    explorer_config: {}             # DDPG settings shared by every learned run (hidden_dim, ...)
    apt_config: {k: 12}             # settings of the APT runs only (k, c, knn_mode, ...)
    runs:
      - {explorer: random}
      - {explorer: apt, objective: shannon}
      - {explorer: apt, objective: be, alpha: [0.5, 5.0]}
      - {explorer: apt, objective: renyi, q: [0.5, 1.1]}
      - {explorer: rnd}
      - {explorer: smm}

Every key is validated (unknown keys, explorers, objectives, out-of-range alpha
or q) before any actor starts.

An offline sweep (``tune_configs/offline_*.yaml``) is datasets × tasks × learners ×
seeds × hyperparameters, one Tune trial each::

    name: offline_small
    datasets:
      - path: bex_runs/data/walker        # every partition becomes one dataset row
    tasks: [walker_stand, walker_walk]
    learners: [td3, cql]
    seeds: [0, 1]
    preset: small
    steps: 20000
    eval_every: 10000
    eval_episodes: 5
    learner_config: {cql: {cql_alpha: 0.01}}   # per-learner overrides
    grid: {td3: {bc_alpha: [0.0, 2.5]}}        # per-learner hyperparameter grids
    resources: {cpu: 1, gpu: auto}
    max_concurrent_trials: 2
    max_failures: 2

Every key is checked before Tune starts: an unknown key, learner, task or
hyperparameter, or a missing dataset fails with one line naming it.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bex.actors.collect import CollectConfig
from bex.core import PRESET_NAMES, ConfigBase, param
from bex.core.config import load_yaml
from bex.core.storage import check_experiment_name, is_uri
from bex.learners.trial import TrialConfig


@dataclass(frozen=True)
class GridRun(ConfigBase):
    """One entry of a grid's ``runs:`` list (an explorer, and its objective's parameter values)."""

    explorer: str = param(doc="random | apt | rnd | smm")
    objective: str | None = param(None, "APT's entropy: be | renyi | shannon")
    alpha: list | float | None = param(None, "BE's alpha, or a list of them (one run each)")
    q: list | float | None = param(None, "Rényi's q, or a list of them (one run each)")
    steps: int | None = param(None, "this entry's steps (None: the grid's)", lo=1)
    actors: int | None = param(None, "this entry's environment workers (None: the grid's)", lo=1)
    explorer_config: dict = param(doc="explorer settings of this entry only", default_factory=dict)
    tag: str | None = param(None, "partition suffix of this entry's runs (``objective=<objective>-<tag>``), to "
                            "keep runs that differ in other settings apart (e.g. ``recent`` for the k-NN mode)")


@dataclass(frozen=True)
class CollectGrid(ConfigBase):
    """A collection grid: runs × domains × seeds (× alpha or q values)."""

    name: str = param(doc="grid name")
    out: str = param(doc="dataset root every run writes into")
    runs: list = param(doc="the runs (:class:`GridRun` mappings)")
    domains: list = param(doc="dm_control domains", default_factory=lambda: ["walker"])
    task: str | None = param(None, "collection task; None = each domain's primal task")
    seeds: list = param(doc="run seeds", default_factory=lambda: [0])
    steps: int = param(50_000, "environment steps of each run", lo=1)
    preset: str = param("small", "explorer sizes", choices=PRESET_NAMES)
    actors: int = param(1, "environment workers per run", lo=1)
    episodes_per_chunk: int = param(10, "episodes per committed file", lo=1)
    max_concurrent_runs: int = param(0, "runs at once (0: all)", lo=0)
    explorer_config: dict = param(doc="DDPG settings shared by every learned run", default_factory=dict)
    apt_config: dict = param(doc="settings of the APT runs only (k, c, knn_mode, ...)", default_factory=dict)

    def runs_(self) -> list[CollectConfig]:
        out = []
        for i, r in enumerate(self.runs):
            run = GridRun.from_dict(r, where=f"runs[{i}]")
            params = run.alpha if run.objective == "be" else run.q if run.objective == "renyi" else None
            params = params if isinstance(params, list) else [params]
            for domain, seed, p in itertools.product(self.domains, self.seeds, params):
                out.append(CollectConfig(
                    out=self.out, domain=domain, task=self.task, explorer=run.explorer, objective=run.objective,
                    param=p,
                    steps=self.steps if run.steps is None else run.steps,
                    actors=self.actors if run.actors is None else run.actors, seed=seed,
                    preset=self.preset, episodes_per_chunk=self.episodes_per_chunk, tag=run.tag,
                    explorer_config={} if run.explorer == "random" else
                    {**self.explorer_config, **(self.apt_config if run.explorer == "apt" else {}),
                     **run.explorer_config}).validate())
        seen: set = set()
        for c in out:  # two runs into one partition would mix (or refuse) each other's data
            if c.partition in seen:
                raise ValueError(f"two runs of the grid write the same partition {str(c.partition)!r}; give one "
                                 f"of them a `tag:` (e.g. its k-NN mode)")
            seen.add(c.partition)
        return out


def load_grid(path: str | Path, out: str | Path | None = None) -> CollectGrid:
    """A collection grid from YAML; ``out`` replaces its ``out:`` (``bex collect --config ... --out DIR``)."""
    d = load_yaml(path, "collection config")
    if isinstance(d, dict) and out is not None:
        d["out"] = str(out)
    return CollectGrid.from_dict(d, where=str(path))


def _absolute(path: str | Path) -> str:
    """A local path made absolute (URIs as they are): Tune runs each trial in its own directory, so a path
    relative to the driver's working directory would name nothing there."""
    return str(path) if is_uri(str(path)) else str(Path(path).resolve())


@dataclass(frozen=True)
class DatasetSelection(ConfigBase):
    """One entry of a sweep's ``datasets:`` list (a path, or a mapping with these keys)."""

    path: str = param(doc="dataset root")
    filters: dict = param(doc="partition filters", default_factory=dict)
    split: bool = param(True, "one dataset row per (objective, param) partition")


@dataclass(frozen=True)
class SweepConfig(ConfigBase):
    """A sweep: datasets × tasks × learners × seeds (× grid values), one Tune trial each."""

    name: str = param(doc="sweep name (its directory under the storage root)")
    datasets: list = param(doc="dataset selections (:class:`DatasetSelection`, or paths)")
    tasks: list = param(doc="tasks (walker_stand ...)")
    learners: list = param(doc="learner names")
    seeds: list = param(doc="trial seeds", default_factory=lambda: [0])
    preset: str = param("small", "learner preset", choices=PRESET_NAMES)
    steps: int = param(10_000, "gradient steps per trial", lo=1)
    eval_every: int = param(5_000, "gradient steps between evaluations", lo=1)
    eval_episodes: int = param(5, "evaluation episodes", lo=1)
    report_every: int = param(1_000, "gradient steps between reports", lo=1)
    learner_config: dict = param(doc="per-learner hyperparameter overrides", default_factory=dict)
    grid: dict = param(doc="per-learner hyperparameter grids", default_factory=dict)
    resources: dict = param(doc="per-trial resources", default_factory=lambda: {"cpu": 1, "gpu": "auto"})
    max_concurrent_trials: int = param(0, "trials at once (0: as many as fit)", lo=0)
    max_failures: int = param(2, "retries of a failed trial", lo=0)
    storage: str = param("bex_runs/sweeps", "storage root")
    device: str = param("auto", "torch device of the trials", choices=("auto", "cpu", "cuda"))

    @classmethod
    def from_yaml(cls, path: str | Path, root: str | Path | None = None) -> "SweepConfig":
        return cls.from_dict(load_yaml(path, "sweep config"), where=str(path))

    @classmethod
    def from_dict(cls, d: Any, where: str | None = "sweep config") -> "SweepConfig":
        """Strict: unknown keys, wrong types (``tasks: [123]``, ``learners: [[td3]]``, ``seeds: [a]``) name the key."""
        if isinstance(d, dict) and isinstance(d.get("datasets"), list):
            d = dict(d, datasets=[ds if isinstance(ds, DatasetSelection) else DatasetSelection.from_dict(
                {"path": ds} if isinstance(ds, str) else ds, where=f"{where}: datasets[{i}]")
                for i, ds in enumerate(d["datasets"])])
        return super().from_dict(d, where=where)

    def check(self) -> None:
        check_experiment_name(self.name, "SweepConfig.name")
        for k, elem in (("datasets", DatasetSelection), ("tasks", str), ("learners", str), ("seeds", int)):
            v = getattr(self, k)
            if not v:
                raise ValueError(f"SweepConfig.{k} must be a non-empty list, got {v!r}")
            for i, x in enumerate(v):
                if not isinstance(x, elem) or isinstance(x, bool):
                    raise ValueError(f"SweepConfig.{k}[{i}]={x!r} has type {type(x).__name__}; "
                                     f"expected {elem.__name__}")
        for name in ("learner_config", "grid"):
            for learner in getattr(self, name):
                if learner not in self.learners:
                    raise ValueError(f"SweepConfig.{name} names learner {learner!r}, which is not in learners "
                                     f"{self.learners}")

    def datasets_expanded(self) -> list[tuple[str, dict, str, str]]:
        """(path, filters, label, domain) per dataset row."""
        from bex.replay import Dataset

        out = []
        for sel in self.datasets:
            ds = Dataset(sel.path, **sel.filters)
            if not ds.files:
                raise ValueError(f"dataset {sel.path!r} has no data"
                                 + (f" matching {sel.filters}" if sel.filters else ""))
            if not sel.split:
                out.append((sel.path, dict(sel.filters), Path(sel.path).name, ds.env_spec.domain))
                continue
            groups: dict[tuple, dict] = {}
            for p in ds.partitions:
                groups.setdefault((p["domain"], p["objective"], p["param"]), p)
            for (domain, objective, pvalue), p in groups.items():
                filters = dict(sel.filters, domain=domain, objective=objective, param=pvalue)
                label = objective if pvalue == "none" else f"{objective}/{pvalue}"
                out.append((sel.path, filters, label, domain))
        return out

    def trials(self) -> list[TrialConfig]:
        """Expand the grid; every trial is validated (learner, preset, hyperparameters, task domain).

        Seed-major order (every dataset × task × learner at the first seed, then at the next): Tune starts trials
        in this order, so a sweep cut short (a session's end) leaves every cell with its first seeds done rather
        than some datasets complete and others untouched."""
        from bex.envs import parse_task

        rows = self.datasets_expanded()
        domains = {r[3] for r in rows}
        tasks = []
        for t in self.tasks:
            try:
                tasks.append(parse_task(t))
            except ValueError as e:
                raise ValueError(f"{e} (in tasks)") from None
        for d, t in tasks:
            if d not in domains:
                raise ValueError(f"task {d}_{t} has no dataset of domain {d!r} (datasets: {sorted(domains)})")
        out = []
        for seed, learner, (path, filters, label, domain), (d, t) in itertools.product(
                self.seeds, self.learners, rows, tasks):
            if d != domain:
                continue
            grid = self.grid.get(learner, {})
            keys = sorted(grid)
            for values in itertools.product(*(grid[k] if isinstance(grid[k], list) else [grid[k]] for k in keys)):
                overrides = dict(self.learner_config.get(learner, {}), **dict(zip(keys, values)))
                if learner == "distill" and overrides.get("teacher"):
                    overrides["teacher"] = _absolute(overrides["teacher"])
                out.append(TrialConfig.from_dict(dict(
                    dataset=_absolute(path), filters=filters, task=f"{d}_{t}", learner=learner, preset=self.preset,
                    learner_config=overrides, steps=self.steps, eval_every=self.eval_every,
                    eval_episodes=self.eval_episodes, report_every=self.report_every, seed=int(seed),
                    device=self.device, label=label)))
        return out
