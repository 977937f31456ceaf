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
from dataclasses import dataclass, field
from pathlib import Path

from .collect import CollectConfig
from .yamlconf import load_yaml, strict


@dataclass(frozen=True)
class GridRun:
    explorer: str
    objective: str | None = None
    alpha: list | float | None = None
    q: list | float | None = None
    steps: int | None = None
    actors: int | None = None
    explorer_config: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CollectGrid:
    name: str
    out: str
    runs: list
    domains: list = field(default_factory=lambda: ["walker"])
    task: str | None = None
    seeds: list = field(default_factory=lambda: [0])
    steps: int = 50_000
    preset: str = "small"
    actors: int = 1
    episodes_per_chunk: int = 10
    max_concurrent_runs: int = 0
    explorer_config: dict = field(default_factory=dict)
    apt_config: dict = field(default_factory=dict)

    def runs_(self) -> list[CollectConfig]:
        out = []
        for i, r in enumerate(self.runs):
            if not isinstance(r, dict):
                raise ValueError(f"runs[{i}] must be a mapping, got {r!r}")
            run = strict(GridRun, r, f"runs[{i}]")
            params = run.alpha if run.objective == "be" else run.q if run.objective == "renyi" else None
            params = params if isinstance(params, list) else [params]
            for domain, seed, p in itertools.product(self.domains, self.seeds, params):
                out.append(CollectConfig(
                    out=self.out, domain=domain, task=self.task, explorer=run.explorer, objective=run.objective, param=p,
                    steps=run.steps or self.steps, actors=run.actors or self.actors, seed=int(seed),
                    preset=self.preset, episodes_per_chunk=self.episodes_per_chunk,
                    explorer_config={} if run.explorer == "random" else
                    {**self.explorer_config, **(self.apt_config if run.explorer == "apt" else {}),
                     **run.explorer_config}).validate())
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
    return _Loaded(strict(CollectGrid, d, str(path)))
