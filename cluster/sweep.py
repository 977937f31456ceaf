"""``bex sweep``: a YAML grid over datasets × tasks × learners × seeds × hyperparameters.

Example (``tune_configs/offline_small.yaml``)::

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .train import TrialConfig
from .yamlconf import load_yaml, strict


@dataclass(frozen=True)
class DatasetSelection:
    path: str                                    #: dataset root
    filters: dict = field(default_factory=dict)  #: partition filters
    split: bool = True                           #: one dataset row per (objective, param) partition


@dataclass(frozen=True)
class SweepConfig:
    name: str
    datasets: list
    tasks: list
    learners: list
    seeds: list = field(default_factory=lambda: [0])
    preset: str = "small"
    steps: int = 10_000
    eval_every: int = 5_000
    eval_episodes: int = 5
    report_every: int = 1_000
    learner_config: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    resources: dict = field(default_factory=lambda: {"cpu": 1, "gpu": "auto"})
    max_concurrent_trials: int = 0
    max_failures: int = 2
    storage: str = "bex_runs/sweeps"
    device: str = "auto"

    @classmethod
    def from_yaml(cls, path: str | Path, root: str | Path | None = None) -> "SweepConfig":
        return cls.from_dict(load_yaml(path, "sweep config"), where=str(path))

    @classmethod
    def from_dict(cls, d: Any, where: str = "sweep config") -> "SweepConfig":
        cfg = strict(cls, d, where)
        for k in ("datasets", "tasks", "learners", "seeds"):
            v = getattr(cfg, k)
            if not isinstance(v, list) or not v:
                raise ValueError(f"{k} in {where} must be a non-empty list, got {v!r}")
        sels = []
        for i, ds in enumerate(cfg.datasets):
            sels.append(strict(DatasetSelection, {"path": ds} if isinstance(ds, str) else ds,
                                f"datasets[{i}] of {where}"))
        object.__setattr__(cfg, "datasets", sels)
        for name in ("learner_config", "grid"):
            for learner in getattr(cfg, name):
                if learner not in cfg.learners:
                    raise ValueError(f"{name} names learner {learner!r}, which is not in learners {cfg.learners}")
        return cfg

    def datasets_expanded(self) -> list[tuple[str, dict, str, str]]:
        """(path, filters, label, domain) per dataset row."""
        from bex.replay import Dataset

        out = []
        for sel in self.datasets:
            ds = Dataset(sel.path, **sel.filters)
            if not ds.files:
                raise ValueError(f"dataset {sel.path!r} has no data" + (f" matching {sel.filters}" if sel.filters else ""))
            if not sel.split:
                out.append((sel.path, dict(sel.filters), Path(sel.path).name, ds.env_spec.domain))
                continue
            groups: dict[tuple, dict] = {}
            for p in ds.partitions:
                groups.setdefault((p["domain"], p["objective"], p["param"]), p)
            for (domain, objective, param), p in groups.items():
                filters = dict(sel.filters, domain=domain, objective=objective, param=param)
                label = objective if param == "none" else f"{objective}/{param}"
                out.append((sel.path, filters, label, domain))
        return out

    def trials(self) -> list[TrialConfig]:
        """Expand the grid; every trial is validated (learner, preset, hyperparameters, task domain)."""
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
        for (path, filters, label, domain), (d, t), learner, seed in itertools.product(
                rows, tasks, self.learners, self.seeds):
            if d != domain:
                continue
            grid = self.grid.get(learner, {})
            keys = sorted(grid)
            for values in itertools.product(*(grid[k] if isinstance(grid[k], list) else [grid[k]] for k in keys)):
                overrides = dict(self.learner_config.get(learner, {}), **dict(zip(keys, values)))
                out.append(TrialConfig.from_dict(dict(
                    dataset=str(path), filters=filters, task=f"{d}_{t}", learner=learner, preset=self.preset,
                    learner_config=overrides, steps=self.steps, eval_every=self.eval_every,
                    eval_episodes=self.eval_episodes, report_every=self.report_every, seed=int(seed),
                    device=self.device, label=label)))
        return out
