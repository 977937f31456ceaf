"""Distributed dataset collection: Ray actors step environments and write Parquet.

Work is cut into *chunks* of whole episodes with deterministic episode ids and
file names (``<run>-e<first episode>.parquet``).  Each environment worker is a
Ray actor that collects one chunk per call and commits it as one file; the
driver hands chunks out dynamically (one in flight per worker).  This gives
exactly-once output under failures:

* a worker killed mid-chunk committed nothing (files are written under a
  temporary name and linked into place); Ray restarts it and the driver
  re-submits the chunk;
* a chunk that was committed but whose reply was lost is found on disk when
  re-submitted (the no-clobber link refuses to overwrite), and counted once.

Episodes of a chunk are seeded from ``(seed, episode index)``, so a re-run of a
chunk reproduces the same episodes.  The last episode of the run is cut so the
dataset has exactly the requested number of steps.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bex.actors import EXPLORERS
from bex.envs import Env, EnvSpec, check_domain, collection_task
from bex.replay import DatasetWriter, check_output_root, partition_dir

OBJECTIVES = ("be", "renyi", "shannon")
PRESETS = ("small", "paper")


@dataclass(frozen=True)
class CollectConfig:
    """One collection run (one dataset partition)."""

    out: str                      #: dataset root directory
    domain: str = "walker"        #: dm_control domain
    explorer: str = "random"      #: exploration agent: random | apt | rnd | smm
    objective: str | None = None  #: APT's entropy: be | renyi | shannon (partition ``objective=``)
    param: Any = None             #: the objective's parameter: alpha (be) or q (renyi)
    steps: int = 10_000           #: exact number of environment steps (transitions) to write
    actors: int = 1               #: environment workers (random: parallel actors; learned: E workers)
    seed: int = 0                 #: run seed (partition ``seed=``)
    episodes_per_chunk: int = 10  #: episodes per committed file (and per checkpoint for learned explorers)
    preset: str = "small"         #: explorer network sizes and schedule: small | paper
    explorer_config: dict = field(default_factory=dict)  #: overrides of the explorer config (k, c, knn_mode ...)
    task: str | None = None       #: task the environment is built with; None = the domain's (envs.collection_task)

    def validate(self) -> "CollectConfig":
        check_domain(self.domain)
        self.env_task  # an unknown task, or one of another domain, fails here
        if self.explorer not in EXPLORERS:
            raise ValueError(f"unknown explorer {self.explorer!r}; allowed: {', '.join(EXPLORERS)}")
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; allowed: {', '.join(PRESETS)}")
        if self.explorer == "apt":
            if self.objective not in OBJECTIVES:
                raise ValueError(f"unknown objective {self.objective!r} for explorer apt; "
                                 f"allowed: {', '.join(OBJECTIVES)}")
            if self.objective in ("be", "renyi") and self.param is None:
                raise ValueError(f"objective {self.objective} needs its parameter "
                                 f"({'--alpha' if self.objective == 'be' else '--q'})")
        elif self.objective not in (None, self.explorer):
            raise ValueError(f"explorer {self.explorer!r} takes no objective (got {self.objective!r}); "
                             f"objectives belong to explorer apt")
        self.explorer_settings()  # validates every explorer field (alpha, q, k, c, ...)
        if int(self.steps) < 1:
            raise ValueError(f"steps must be a positive integer, got {self.steps}")
        if int(self.actors) < 1:
            raise ValueError(f"actors must be a positive integer, got {self.actors}")
        if int(self.episodes_per_chunk) < 1:
            raise ValueError(f"episodes_per_chunk must be >= 1, got {self.episodes_per_chunk}")
        check_output_root(self.out)
        return self

    @property
    def env_task(self) -> str:
        """The collection task (``--task`` or the domain's primal task, :func:`envs.collection_task`)."""
        return collection_task(self.domain, self.task)

    def make_env(self, seed: int | None = None) -> Env:
        """The collection environment of this run."""
        return Env(self.domain, self.env_task, seed=self.seed if seed is None else seed)

    @property
    def partition_objective(self) -> str:
        return self.objective if self.explorer == "apt" else self.explorer

    @property
    def partition_param(self) -> Any:
        return self.param if self.explorer == "apt" and self.objective in ("be", "renyi") else None

    def explorer_settings(self) -> dict:
        """The explorer's config mapping (validated by its strict config class)."""
        from bex.actors import APTConfig, RNDConfig, SMMConfig

        if self.explorer == "random":
            if self.explorer_config:
                raise ValueError(f"explorer 'random' takes no explorer_config; got {sorted(self.explorer_config)}")
            return {}
        d = dict(self.explorer_config, preset=self.preset)
        if self.explorer == "apt":
            d["objective"] = self.objective
            if self.objective == "be":
                d["alpha"] = float(self.param)
            elif self.objective == "renyi":
                d["q"] = float(self.param)
        cls = {"apt": APTConfig, "rnd": RNDConfig, "smm": SMMConfig}[self.explorer]
        cls.from_dict(d)
        return d

    def run_key(self) -> str:
        d = asdict(self)
        d.pop("out")
        if d["task"] is None:
            d.pop("task")  # runs without --task keep the keys they had before the field existed
        if self.explorer == "random":
            d.pop("actors")  # more or fewer random workers produce the same dataset
        return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Chunk:
    first_episode: int
    lengths: tuple[int, ...]  # steps of each episode in the chunk

    @property
    def steps(self) -> int:
        return sum(self.lengths)


def plan_chunks(steps: int, episode_length: int, episodes_per_chunk: int) -> list[Chunk]:
    """Cut ``steps`` into whole episodes (the last one shorter) grouped into chunks."""
    n_eps = math.ceil(steps / episode_length)
    lengths = [episode_length] * n_eps
    lengths[-1] = steps - episode_length * (n_eps - 1)
    return [Chunk(i, tuple(lengths[i:i + episodes_per_chunk])) for i in range(0, n_eps, episodes_per_chunk)]


def chunk_file_name(run_key: str, chunk: Chunk) -> str:
    """The deterministic name of a chunk's data file."""
    return f"{run_key}-e{chunk.first_episode:06d}-000000.parquet"


def episode_seed(seed: int, episode: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(episode)]).generate_state(1)[0])


class ChunkCollector:
    """Collects chunks of episodes in one process and commits each as one file (no Ray here)."""

    def __init__(self, cfg: CollectConfig, run_key: str):
        from bex.actors import RandomExplorer

        self.cfg = cfg
        self.run_key = run_key
        self.env = cfg.make_env()
        self.explorer_cls = RandomExplorer

    def collect(self, chunk: Chunk) -> dict:
        from bex.actors import run_episode

        cfg, t0 = self.cfg, time.perf_counter()
        pdir = partition_dir(Path(cfg.out), cfg.domain, cfg.partition_objective, cfg.partition_param, cfg.seed)
        final = pdir / chunk_file_name(self.run_key, chunk)
        name = final.name[:-len("-000000.parquet")]
        result = dict(file=str(final), steps=chunk.steps, episodes=len(chunk.lengths), node=node_address(),
                      pid=os.getpid())
        if final.exists():
            return dict(result, reused=True, wall_s=0.0)
        writer = DatasetWriter(cfg.out, self.env.spec, cfg.partition_objective, cfg.partition_param, cfg.seed,
                               config=asdict(cfg), writer_id=name, rows_per_file=1 << 62, run_key=self.run_key)
        for j, length in enumerate(chunk.lengths):
            ep = chunk.first_episode + j
            es = episode_seed(cfg.seed, ep)
            self.env.task._random = np.random.RandomState(es)  # reseed the task's reset randomness
            explorer = self.explorer_cls(self.env.spec.action_dim, seed=es)
            writer.write_episode(run_episode(self.env, explorer, f"{self.run_key}-{ep:06d}", max_steps=length))
        try:
            writer.close()
        except FileExistsError:  # committed by an earlier attempt whose reply was lost
            return dict(result, reused=True, wall_s=time.perf_counter() - t0)
        return dict(result, reused=False, wall_s=time.perf_counter() - t0)


def node_address() -> str:
    try:
        import ray

        if ray.is_initialized():
            return ray.util.get_node_ip_address()
    except Exception:
        pass
    return socket.gethostname()


def prepare_output(cfg: CollectConfig, resume: bool) -> tuple[EnvSpec, list[Chunk], set[int]]:
    """Validate everything before any actor starts; returns the plan and the chunks already done."""
    cfg.validate()
    try:
        spec = cfg.make_env(seed=0).spec
    except RuntimeError as e:  # e.g. quadruped_escape's terrain under MUJOCO_GL=disable
        raise ValueError(f"cannot build the collection task {cfg.domain}_{cfg.env_task}: {e} (MUJOCO_GL="
                         f"{os.environ.get('MUJOCO_GL', '')!r}; terrain tasks need OpenGL, or pick another "
                         f"--task)") from None
    pdir = partition_dir(Path(cfg.out), cfg.domain, cfg.partition_objective, cfg.partition_param, cfg.seed)
    run_key = cfg.run_key()
    existing = sorted(p.name for p in pdir.glob("*.parquet")) if pdir.is_dir() else []
    meta_path = pdir / "_bex_partition.json"
    if existing or meta_path.exists():
        old = json.loads(meta_path.read_text()).get("run_key") if meta_path.exists() else None
        if old != run_key:
            raise ValueError(f"output {cfg.out!r} already holds a different run's dataset in "
                             f"{pdir.relative_to(cfg.out)} (run {old}); choose another --out")
        if not resume and existing:
            raise ValueError(f"output {cfg.out!r} already holds this run's data ({len(existing)} files); "
                             f"pass --resume to continue it or choose another --out")
    chunks = plan_chunks(int(cfg.steps), spec.episode_length, int(cfg.episodes_per_chunk))
    done = {c.first_episode for c in chunks if chunk_file_name(run_key, c) in existing}
    return spec, chunks, done
