"""Collection grids from YAML (``tune_configs/collect_*.yaml``).

Example::

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
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

from bex.actors.collect import CollectConfig
from bex.core import PRESET_NAMES, ConfigBase, param

from .yamlconf import load_yaml


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


class _Loaded:
    def __init__(self, grid: CollectGrid):
        self.grid = grid
        self.max_concurrent_runs = grid.max_concurrent_runs

    def runs(self) -> list[CollectConfig]:
        return self.grid.runs_()


def load_grid(path: str | Path, out: str | Path | None = None) -> _Loaded:
    d = load_yaml(path, "collection config")
    if isinstance(d, dict) and out is not None:
        d["out"] = str(out)
    return _Loaded(CollectGrid.from_dict(d, where=str(path)))
