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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bex.core import PRESET_NAMES, ConfigBase, param
from bex.learners.trial import TrialConfig

from .storage import is_uri
from .train import check_experiment_name
from .yamlconf import load_yaml


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
                if learner == "distill" and overrides.get("teacher"):
                    overrides["teacher"] = _absolute(overrides["teacher"])
                out.append(TrialConfig.from_dict(dict(
                    dataset=_absolute(path), filters=filters, task=f"{d}_{t}", learner=learner, preset=self.preset,
                    learner_config=overrides, steps=self.steps, eval_every=self.eval_every,
                    eval_episodes=self.eval_episodes, report_every=self.report_every, seed=int(seed),
                    device=self.device, label=label)))
        return out
