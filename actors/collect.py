"""Dataset collection without Ray: plans, seeds, chunk files, and the three collection cores.

``bex.cluster.driver`` wraps the cores below in Ray actors; everything here is a
plain class or function a unit test drives in one process.

Work is cut into *chunks* of whole episodes with deterministic episode ids and
file names (:func:`chunk_file_name`).  Every core commits a chunk as one file,
written under a temporary name and linked into place, which gives exactly-once
output under failures:

* a process killed mid-chunk committed nothing; its restart redoes the chunk;
* a chunk that was committed but whose reply was lost is found on disk when
  re-submitted (the no-clobber link refuses to overwrite), and counted once.

Episodes are seeded from ``(run seed, episode index)`` (:func:`episode_seed`,
:meth:`bex.envs.Env.reseed`), so a re-run of a chunk reproduces its episodes.
The last episode of a run is cut so the dataset has exactly the requested
number of steps.

The cores:

* :class:`ChunkCollector` — the random explorer: stateless, any number in parallel;
* :class:`LearnedRunner` — a learned explorer (APT, RND, SMM) with one
  environment (E = 1): URLB's single-process loop, checkpointed after each chunk;
* :class:`EnvWorkerCore` + :class:`LearnerCore` — a learned explorer with E > 1
  environment workers sending *segments* to one learner (see :class:`LearnerCore`).

A core that learns checkpoints its explorer (networks, optimisers, replay, RNG
states, counters) under ``<partition>/_checkpoints/`` after every commit; a
restarted core restores it and deletes chunk files committed after it (the
crash fell between the two writes), so the dataset never holds an episode twice.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bex.core import PRESET_NAMES as PRESETS
from bex.core import ConfigBase
from bex.core import param as field_  # CollectConfig has a field named ``param``
from bex.core.state import load_state, state_bytes
from bex.entropy.rewards import OBJECTIVES
from bex.envs import Env, EnvSpec, Step, check_domain, collection_task
from bex.replay import DatasetWriter, Episode, atomic_write_bytes, check_output_root, partition_dir
from bex.replay.schema import read_meta
from bex.replay.writer import remove_stale_temp_files

from .base import Explorer, RandomExplorer
from .config import APTConfig, RNDConfig, SMMConfig
from .registry import EXPLORERS, make_explorer

#: ``make_knn_reward(apt_config, run_key)``: builds APT's k-NN reward in the process that runs the
#: explorer (``bex.cluster`` passes one that calls the cluster's shared k-NN service); None = in process.
KnnRewardFactory = Callable[[APTConfig, str], Any]


#: The entropy an APT run explores with when none is given (URLB's APT: Shannon).
DEFAULT_APT_OBJECTIVE = "shannon"


@dataclass(frozen=True)
class CollectConfig(ConfigBase):
    """One collection run (one dataset partition)."""

    out: str = field_(doc="dataset root directory")
    domain: str = field_("walker", "dm_control domain")
    explorer: str = field_("random", "exploration agent", choices=EXPLORERS)
    objective: str | None = field_(None, "APT's entropy: be | renyi | shannon (partition ``objective=``)")
    param: Any = field_(None, "the objective's parameter: alpha (be) or q (renyi)")
    steps: int = field_(10_000, "exact number of environment steps (transitions) to write", lo=1)
    actors: int = field_(1, "environment workers (random: parallel actors; learned: E workers)", lo=1)
    seed: int = field_(0, "run seed (partition ``seed=``)", lo=0, hi=2**32 - 1)
    episodes_per_chunk: int = field_(10, "episodes per committed file (and per checkpoint for learned explorers)",
                                    lo=1)
    preset: str = field_("small", "explorer network sizes and schedule", choices=PRESETS)
    explorer_config: dict = field_(doc="overrides of the explorer config (k, c, knn_mode ...)", default_factory=dict)
    task: str | None = field_(None, "task the environment is built with; None = the domain's "
                         "(:func:`bex.envs.collection_task`)")
    tag: str | None = field_(None, "a suffix of the partition's objective (``objective=<objective>-<tag>``, e.g. "
                        "``shannon-recent``) so that runs differing in other settings (the k-NN mode) write "
                        "separate partitions; lower-case letters, digits and _")

    @classmethod
    def from_options(cls, explorer: str = "random", objective: str | None = None, alpha: float | None = None,
                     q: float | None = None, **fields: Any) -> "CollectConfig":
        """A run from ``bex collect``'s options: ``alpha`` is BE's parameter and ``q`` Rényi's (giving the other
        objective's is an error); an APT run without an objective explores with :data:`DEFAULT_APT_OBJECTIVE`."""
        if explorer == "apt" and objective is None:
            objective = DEFAULT_APT_OBJECTIVE
        if objective == "be" and q is not None or objective == "renyi" and alpha is not None:
            raise ValueError(f"objective {objective} takes {'--alpha' if objective == 'be' else '--q'} only")
        param = alpha if objective == "be" else q if objective == "renyi" else None
        return cls(explorer=explorer, objective=objective, param=param, **fields)

    def check(self) -> None:
        if self.tag is not None and not re.fullmatch(r"[a-z0-9_]+", self.tag):
            raise ValueError(f"CollectConfig.tag={self.tag!r} is invalid: allowed lower-case letters, digits and _ "
                             f"(it becomes part of the partition name)")

    def validate(self) -> "CollectConfig":
        """The checks that need dm_control and the file system (the fields were checked on construction)."""
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
        check_output_root(self.out)
        return self

    @property
    def env_task(self) -> str:
        """The collection task (``--task`` or the domain's primal task, :func:`bex.envs.collection_task`)."""
        return collection_task(self.domain, self.task)

    def make_env(self, seed: int | None = None) -> Env:
        """The collection environment of this run."""
        return Env(self.domain, self.env_task, seed=self.seed if seed is None else seed)

    @property
    def partition_objective(self) -> str:
        base = self.objective if self.explorer == "apt" else self.explorer
        return base if self.tag is None else f"{base}-{self.tag}"

    @property
    def partition_param(self) -> Any:
        return self.param if self.explorer == "apt" and self.objective in ("be", "renyi") else None

    @property
    def partition(self) -> Path:
        """The partition directory this run writes (``<out>/domain=/objective=/param=/seed=``)."""
        return partition_dir(Path(self.out), self.domain, self.partition_objective, self.partition_param, self.seed)

    def explorer_settings(self) -> dict:
        """The explorer's config mapping (validated by its strict config class)."""
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
        for late in ("task", "tag"):  # runs without them keep the keys they had before the fields existed
            if d[late] is None:
                d.pop(late)
        if self.explorer == "random":
            d.pop("actors")  # more or fewer random workers produce the same dataset
        return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def writer(self, spec: EnvSpec, run_key: str, kind: str, index: int) -> DatasetWriter:
        """A writer that commits one chunk file (:func:`chunk_file_name`) of this run."""
        return DatasetWriter(self.out, spec, self.partition_objective, self.partition_param, self.seed,
                             config=asdict(self), writer_id=_chunk_stem(run_key, kind, index),
                             rows_per_file=1 << 62, run_key=run_key)


# ---------------------------------------------------------------------------------------------- plans and names
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


#: Chunk file kinds: ``e`` files are named by their first episode (random runs, E = 1 runs),
#: ``c`` files by their commit sequence number (E > 1 runs, whose episodes finish out of order).
CHUNK_KINDS = ("e", "c")


def _chunk_stem(run_key: str, kind: str, index: int) -> str:
    if kind not in CHUNK_KINDS:
        raise ValueError(f"unknown chunk kind {kind!r}; allowed: {', '.join(CHUNK_KINDS)}")
    return f"{run_key}-{kind}{int(index):06d}"


def chunk_file_name(run_key: str, kind: str, index: int) -> str:
    """The deterministic name of a chunk's data file, ``<run_key>-<kind><index:06d>-000000.parquet``."""
    return f"{_chunk_stem(run_key, kind, index)}-000000.parquet"


def parse_chunk_file(name: str, run_key: str, kind: str) -> int | None:
    """The index in a chunk file name built by :func:`chunk_file_name` (None if it is not one of the run's)."""
    prefix, suffix = f"{run_key}-{kind}", "-000000.parquet"
    digits = name[len(prefix):-len(suffix)]
    if not (name.startswith(prefix) and name.endswith(suffix) and len(digits) == 6 and digits.isdigit()):
        return None
    return int(digits)


def episode_seed(seed: int, episode: int) -> int:
    """The seed of episode ``episode`` of a run with seed ``seed`` (its reset randomness and random actions)."""
    return int(np.random.SeedSequence([int(seed), int(episode)]).generate_state(1)[0])


def host_name() -> str:
    """The default ``node`` of a core's reports (``bex.cluster`` passes the Ray node address instead)."""
    return socket.gethostname()


# ---------------------------------------------------------------------------------------------- episodes
class EpisodeRows:
    """The dataset rows of an episode as it is stepped: the one place rows are made.

    Row 0 is the reset (observation, zero action, physics state, discount 1);
    row t holds the action taken at t−1 and what followed it.  Used whole by
    :func:`run_episode` and a segment at a time by :class:`EnvWorkerCore`.
    """

    def __init__(self, spec: EnvSpec, capacity: int):
        self.obs = np.empty((capacity, spec.obs_dim), np.float32)
        self.action = np.zeros((capacity, spec.action_dim), np.float32)
        self.physics = np.empty((capacity, spec.physics_dim), np.float64)
        self.discount = np.ones(capacity, np.float32)
        self.n = 0

    def reset(self, env: Env) -> Step:
        s = env.reset()
        self._put(s.obs, None, env.physics_state(), 1.0)
        return s

    def step(self, env: Env, action: np.ndarray) -> Step:
        s = env.step(action)
        self._put(s.obs, action, env.physics_state(), s.discount)
        return s

    def _put(self, obs, action, physics, discount) -> None:
        i = self.n
        self.obs[i], self.physics[i], self.discount[i] = obs, physics, discount
        if action is not None:
            self.action[i] = action
        self.n = i + 1

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        n = self.n
        return self.obs[:n], self.action[:n], self.physics[:n], self.discount[:n]


def run_episode(env: Env, explorer: Explorer, episode_id: str, step0: int = 0, max_steps: int | None = None,
                on_step: Callable[[dict], None] | None = None) -> Episode:
    """Run one episode (at most ``max_steps`` steps) and return it as an ``Episode``.

    ``step0`` is the global step counter passed to the explorer (seed frames,
    update schedule).  An episode cut short by ``max_steps`` ends with
    ``is_last`` on its final row and discount 1, like a time limit.  The
    ``reward_intrinsic`` column scores the episode's states in one call at its
    end (``explorer.intrinsic_rewards``), with the explorer as it is then.
    """
    spec = env.spec
    limit = spec.episode_length if max_steps is None else min(max_steps, spec.episode_length)
    rows = EpisodeRows(spec, limit + 1)
    s = rows.reset(env)
    t = 0
    while t < limit:
        a = np.asarray(explorer.act(s.obs, step0 + t), dtype=np.float32)
        nxt = rows.step(env, a)
        t += 1
        metrics = explorer.observe(s.obs, a, nxt.obs, nxt.discount, nxt.last or t == limit, step0 + t - 1)
        if on_step is not None:
            on_step(metrics)
        s = nxt
        if nxt.last:
            break
    obs, act, phys, disc = rows.arrays()
    r = explorer.intrinsic_rewards(obs[1:])
    rint = None if r is None else np.concatenate([[0.0], np.asarray(r, np.float32).reshape(-1)]).astype(np.float32)
    return Episode(episode_id, obs, act, phys, disc, rint)


def episode_id(run_key: str, episode: int) -> str:
    return f"{run_key}-{episode:06d}"


# ---------------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, state: dict) -> None:
    """``state`` as plain data (:func:`bex.core.state.state_bytes`) to ``path``, atomically (temporary
    name, fsync, rename); it loads with ``torch.load(weights_only=True)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, state_bytes(state))


def explorer_state(explorer, knn_reward, **counters) -> dict:
    """A run's checkpoint: the explorer (networks, optimisers, replay, RNGs), its k-NN reward state,
    torch's RNG, and the caller's ``counters``."""
    import torch

    return {"explorer": explorer.state_dict(), "torch_rng": torch.get_rng_state(),
            "knn": None if knn_reward is None else knn_reward.state_dict(), **counters}


def load_explorer_state(path: Path, explorer, knn_reward) -> dict | None:
    """Restore what :func:`explorer_state` saved at ``path``; returns the state (for the counters) or None.

    The file is untrusted (a dataset directory is shared): it is read with the
    ``weights_only`` unpickler (:func:`bex.core.state.load_state`), and one that
    does not load is a one-line ``ValueError`` naming it.
    """
    import torch

    if not path.exists():
        return None
    state = load_state(path)
    explorer.load_state_dict(state["explorer"])
    if knn_reward is not None and state.get("knn"):
        knn_reward.load_state_dict(state["knn"])
    torch.set_rng_state(state["torch_rng"])
    return state


def checkpoint_path(cfg: CollectConfig, run_key: str) -> Path:
    """Where a learned run keeps its checkpoint: ``<partition>/_checkpoints/<run_key>.pt``."""
    return cfg.partition / "_checkpoints" / f"{run_key}.pt"


def build_explorer(cfg: CollectConfig, run_key: str, spec: EnvSpec, make_knn_reward: KnnRewardFactory | None = None):
    """The run's explorer and its k-NN reward (built by ``make_knn_reward`` when given, else in process)."""
    import torch  # here, not at import: validating a CollectConfig needs no torch

    settings = cfg.explorer_settings()
    knn_reward = None
    if make_knn_reward is not None:
        if cfg.explorer != "apt":
            raise ValueError(f"explorer {cfg.explorer!r} takes no k-NN reward (only 'apt' does)")
        knn_reward = make_knn_reward(APTConfig.from_dict(settings), run_key)
    torch.manual_seed(cfg.seed)
    explorer = make_explorer(cfg.explorer, spec.obs_dim, spec.action_dim, settings, seed=cfg.seed,
                             knn_reward=knn_reward)
    return explorer, knn_reward


def prepare_output(cfg: CollectConfig, resume: bool) -> tuple[EnvSpec, list[Chunk], set[int]]:
    """Validate everything before any process starts; returns the plan and the chunks already done."""
    cfg.validate()
    try:
        spec = cfg.make_env(seed=0).spec
    except RuntimeError as e:  # e.g. quadruped_escape's terrain under MUJOCO_GL=disable
        raise ValueError(f"cannot build the collection task {cfg.domain}_{cfg.env_task}: {e} (MUJOCO_GL="
                         f"{os.environ.get('MUJOCO_GL', '')!r}; terrain tasks need OpenGL, or pick another "
                         f"--task)") from None
    pdir = cfg.partition
    run_key = cfg.run_key()
    existing = sorted(p.name for p in pdir.glob("*.parquet")) if pdir.is_dir() else []
    meta_path = pdir / "_bex_partition.json"
    if existing or meta_path.exists():
        old = read_meta(meta_path).get("run_key") if meta_path.exists() else None
        if old != run_key:
            raise ValueError(f"output {cfg.out!r} already holds a different run's dataset in "
                             f"{pdir.relative_to(cfg.out)} (run {old}); choose another --out")
        if not resume and existing:
            raise ValueError(f"output {cfg.out!r} already holds this run's data ({len(existing)} files); "
                             f"pass --resume to continue it or choose another --out")
    if resume and pdir.is_dir():
        for d in (pdir, pdir / "_checkpoints"):  # left by processes killed mid-write (SIGTERM, a lost node)
            if d.is_dir():
                remove_stale_temp_files(d)
    ckpt = checkpoint_path(cfg, run_key)
    if resume and ckpt.exists():
        load_state(ckpt, check_only=True)  # an unsafe or corrupt checkpoint is one line here, not an actor crash loop
    chunks = plan_chunks(int(cfg.steps), spec.episode_length, int(cfg.episodes_per_chunk))
    done = {c.first_episode for c in chunks if chunk_file_name(run_key, "e", c.first_episode) in existing}
    return spec, chunks, done


# ---------------------------------------------------------------------------------------------- random explorer
class ChunkCollector:
    """Collects chunks of random-explorer episodes in one process and commits each as one file."""

    def __init__(self, cfg: CollectConfig, run_key: str, node: Callable[[], str] = host_name):
        self.cfg = cfg
        self.run_key = run_key
        self.env = cfg.make_env()
        self.node = node()

    def collect(self, chunk: Chunk) -> dict:
        cfg, t0 = self.cfg, time.perf_counter()
        final = cfg.partition / chunk_file_name(self.run_key, "e", chunk.first_episode)
        result = dict(file=str(final), steps=chunk.steps, episodes=len(chunk.lengths), node=self.node,
                      pid=os.getpid())
        if final.exists():
            return dict(result, reused=True, wall_s=0.0)
        writer = cfg.writer(self.env.spec, self.run_key, "e", chunk.first_episode)
        for j, length in enumerate(chunk.lengths):
            ep = chunk.first_episode + j
            es = episode_seed(cfg.seed, ep)
            self.env.reseed(es)
            explorer = RandomExplorer(self.env.spec.action_dim, seed=es)
            writer.write_episode(run_episode(self.env, explorer, episode_id(self.run_key, ep), max_steps=length))
        try:
            writer.close()
        except FileExistsError:  # committed by an earlier attempt whose reply was lost
            return dict(result, reused=True, wall_s=time.perf_counter() - t0)
        return dict(result, reused=False, wall_s=time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------- E = 1
class LearnedRunner:
    """One learned-explorer run (APT, RND, SMM) in one process: URLB's loop, checkpointed.

    With one environment it runs URLB's single-process loop exactly: act, step,
    store, one update of batch B every ``update_every_steps`` env steps after
    the seed frames.  It collects the run's chunks in order; after each it
    commits the chunk's file, then atomically replaces its checkpoint (with the
    index of the next chunk).
    """

    def __init__(self, cfg: CollectConfig, run_key: str, make_knn_reward: KnnRewardFactory | None = None,
                 node: Callable[[], str] = host_name):
        self.cfg, self.run_key = cfg, run_key
        self.env = cfg.make_env()
        spec = self.env.spec
        self.node = node()
        self.explorer, self.knn = build_explorer(cfg, run_key, spec, make_knn_reward)
        self.plan = plan_chunks(int(cfg.steps), spec.episode_length, int(cfg.episodes_per_chunk))
        self.pdir = cfg.partition
        self.ckpt = checkpoint_path(cfg, run_key)
        self.next_chunk, self.steps_done = 0, 0
        self.restored = self._restore()

    def _checkpoint(self) -> None:
        save_checkpoint(self.ckpt, explorer_state(self.explorer, self.knn, next_chunk=self.next_chunk,
                                                  steps_done=self.steps_done))

    def _restore(self) -> bool:
        state = load_explorer_state(self.ckpt, self.explorer, self.knn)
        if state is not None:
            self.next_chunk, self.steps_done = int(state["next_chunk"]), int(state["steps_done"])
        # chunk files committed after the checkpoint belong to a lost future: remove them
        for c in self.plan[self.next_chunk:]:
            (self.pdir / chunk_file_name(self.run_key, "e", c.first_episode)).unlink(missing_ok=True)
        return state is not None

    def run_chunk(self, index: int) -> dict:
        """Collect chunk ``index`` (the next one), commit it, checkpoint; returns its statistics."""
        base = dict(index=index, node=self.node, pid=os.getpid(), restored=self.restored)
        if index < self.next_chunk:  # done before a restart; the reply was lost
            return dict(base, steps=self.plan[index].steps, reused=True, wall_s=0.0)
        if index != self.next_chunk:
            raise RuntimeError(f"chunk {index} requested but the run is at chunk {self.next_chunk}")
        chunk: Chunk = self.plan[index]
        cfg, t0, updates0 = self.cfg, time.perf_counter(), self.explorer.updates
        knn_calls0, knn_s0 = (self.knn.calls, self.knn.seconds) if self.knn else (0, 0.0)
        writer = cfg.writer(self.env.spec, self.run_key, "e", chunk.first_episode)
        intr = []

        def on_step(metrics: dict) -> None:
            if "intr/reward_mean" in metrics:
                intr.append(metrics["intr/reward_mean"])

        for j, length in enumerate(chunk.lengths):
            ep = chunk.first_episode + j
            self.env.reseed(episode_seed(cfg.seed, ep))
            episode = run_episode(self.env, self.explorer, episode_id(self.run_key, ep), step0=self.steps_done,
                                  max_steps=length, on_step=on_step)
            self.steps_done += len(episode)
            writer.write_episode(episode)
        writer.close()
        self.next_chunk = index + 1
        self._checkpoint()
        wall = time.perf_counter() - t0
        updates = self.explorer.updates - updates0
        calls = (self.knn.calls - knn_calls0) if self.knn else 0
        return dict(base, steps=chunk.steps, reused=False, wall_s=wall, updates=updates,
                    env_steps_per_s=chunk.steps / max(wall, 1e-9), updates_per_s=updates / max(wall, 1e-9),
                    intr_reward_mean=float(np.mean(intr)) if intr else None,
                    knn_ms=1000 * (self.knn.seconds - knn_s0) / calls if calls else None)


# ---------------------------------------------------------------------------------------------- E > 1
@dataclass
class Ticket:
    episode: int
    length: int


@dataclass
class Segment:
    slot: int
    ticket: Ticket
    first_row: int               # episode row index of ``obs[0]`` (0: the segment starts with the reset row)
    obs: np.ndarray              # (m, obs_dim) rows first_row .. first_row + m - 1
    action: np.ndarray
    physics: np.ndarray
    discount: np.ndarray
    last: bool
    node: str = ""


class EnvWorkerCore:
    """Steps one environment with a policy copy; returns segments of an episode.

    With E > 1 workers and one :class:`LearnerCore`, each worker sends segments
    of up to ``n`` transitions; the learner's reply to a segment carries the
    current policy weights, the global step count and the worker's ticket.
    """

    def __init__(self, cfg: CollectConfig, slot: int, node: Callable[[], str] = host_name):
        self.cfg, self.slot = cfg, slot
        self.env = cfg.make_env()
        self.node = node()
        spec = self.env.spec
        self.explorer = make_explorer(cfg.explorer, spec.obs_dim, spec.action_dim, cfg.explorer_settings(),
                                      seed=episode_seed(cfg.seed, 10_000_000 + slot))
        self.ticket: Ticket | None = None
        self.row = 0
        self.obs: np.ndarray | None = None

    def run_segment(self, feedback: dict, n: int) -> Segment | None:
        """Continue (or start) the episode the learner assigned in ``feedback`` for up to ``n`` steps."""
        ticket = feedback.get("ticket")
        if ticket is None:
            return None
        if feedback.get("policy") is not None:
            self.explorer.load_policy_state(feedback["policy"])
        rows = EpisodeRows(self.env.spec, n + 1)
        if self.ticket is None or self.ticket.episode != ticket.episode or not feedback.get("accepted", True):
            self.ticket, self.row = ticket, 0
            self.env.reseed(episode_seed(self.cfg.seed, ticket.episode))
            self.obs = rows.reset(self.env).obs
            first_row = 0
        else:
            first_row = self.row + 1
        step0 = int(feedback.get("steps", 0))
        last, taken = False, 0
        while taken < n and not last:
            a = np.asarray(self.explorer.act(self.obs, step0 + taken), np.float32)
            s = rows.step(self.env, a)
            self.row += 1
            taken += 1
            self.obs = s.obs
            last = s.last or self.row >= ticket.length
        obs, act, phys, disc = (x.copy() for x in rows.arrays())
        return Segment(self.slot, ticket, first_row, obs, act, phys, disc, last, self.node)


class LearnerCore:
    """One learned-explorer run with E > 1 environment workers: the learning, tickets, commits, checkpoints.

    The learner feeds every transition to the explorer's ``observe`` in arrival
    order, so the update schedule is URLB's — one update of batch B per
    ``update_every_steps`` ingested env steps after the seed frames — whatever E
    is.  Rate limiting (in ``bex.cluster.driver``): a worker's next segment takes
    the learner's reply to its previous one as an argument, so no worker runs
    ahead of the learner by more than one segment; a worker acts with weights at
    most about ``E x segment_steps`` env steps old (URLB, E = 1: up to
    ``update_every_steps``).

    Exactly-once output.  Episodes are *tickets* of a fixed plan (index,
    length).  The learner assembles a ticket's segments; finished episodes are
    committed in files of ``episodes_per_chunk`` episodes named by a commit
    sequence number (kind ``c``), each followed by a checkpoint (explorer state
    with replay, committed tickets, sequence).  A killed worker's partial
    episode is dropped and its ticket goes back to the pool; a restarted learner
    restores its checkpoint, deletes files committed after it, and rejects
    segments of tickets it no longer has in progress (the worker then starts a
    fresh ticket).  Transitions of dropped partial episodes may remain in the
    replay buffer, never in the dataset.
    """

    def __init__(self, cfg: CollectConfig, run_key: str, make_knn_reward: KnnRewardFactory | None = None,
                 node: Callable[[], str] = host_name):
        self.cfg, self.run_key = cfg, run_key
        self.spec = cfg.make_env().spec
        self.node = node()
        self.explorer, self.knn = build_explorer(cfg, run_key, self.spec, make_knn_reward)
        chunks = plan_chunks(int(cfg.steps), self.spec.episode_length, 1)
        self.tickets = {c.first_episode: Ticket(c.first_episode, c.lengths[0]) for c in chunks}
        self.pdir = cfg.partition
        self.ckpt = checkpoint_path(cfg, run_key)
        self.committed: set[int] = set()
        self.seq = 0
        self.steps_ingested = 0
        self.in_progress: dict[int, dict] = {}   # slot -> {ticket, rows...}
        self.pending: list[Episode] = []
        self.pending_tickets: list[int] = []
        self.stats = {"intr": []}
        self.rejected = 0  # segments refused because their worker or this learner restarted
        self.restored = self._restore()

    # ------------------------------------------------------------------ tickets
    def _free(self) -> list[int]:
        busy = {p["ticket"].episode for p in self.in_progress.values()}
        return [e for e in sorted(self.tickets) if e not in self.committed and e not in busy
                and e not in self.pending_tickets]

    def _assign(self, slot: int) -> Ticket | None:
        free = self._free()
        if not free:
            self.in_progress.pop(slot, None)
            return None
        t = self.tickets[free[0]]
        self.in_progress[slot] = {"ticket": t, "rows": [], "rint": [], "next_row": 0, "last_obs": None}
        return t

    def _feedback(self, slot: int, ticket: Ticket | None, accepted: bool) -> dict:
        return {"ticket": ticket, "accepted": accepted, "policy": self.explorer.policy_state(),
                "steps": self.steps_ingested}

    def next_ticket(self, slot: int) -> dict:
        cur = self.in_progress.get(slot)
        return self._feedback(slot, cur["ticket"] if cur else self._assign(slot), True)

    def abort(self, slot: int) -> dict:
        """The worker in ``slot`` died: drop its partial episode and give the slot a fresh ticket."""
        self.in_progress.pop(slot, None)
        return self._feedback(slot, self._assign(slot), False)

    # ------------------------------------------------------------------ ingest
    def ingest(self, seg: Segment | None) -> dict:
        if seg is None:
            return self._feedback(-1, None, True)
        cur = self.in_progress.get(seg.slot)
        if cur is None or cur["ticket"].episode != seg.ticket.episode or seg.first_row != cur["next_row"]:
            # unknown ticket (e.g. after a learner restart) or a gap (a restarted worker): start a fresh ticket
            self.rejected += 1
            self.in_progress.pop(seg.slot, None)
            return self._feedback(seg.slot, self._assign(seg.slot), False)
        first = 1 if seg.first_row == 0 else 0
        for i in range(first, len(seg.obs)):
            o = seg.obs[i - 1] if i > 0 else cur["last_obs"]
            last_row = seg.last and i == len(seg.obs) - 1
            metrics = self.explorer.observe(o, seg.action[i], seg.obs[i], float(seg.discount[i]), last_row,
                                            self.steps_ingested)
            self.steps_ingested += 1
            if "intr/reward_mean" in metrics:
                self.stats["intr"].append(metrics["intr/reward_mean"])
        cur["next_row"] += len(seg.obs)
        cur["last_obs"] = seg.obs[-1]
        cur["rows"].append((seg.obs, seg.action, seg.physics, seg.discount))
        r = self.explorer.intrinsic_rewards(seg.obs[first:]) if len(seg.obs) > first else np.zeros(0)
        r = np.full(len(seg.obs) - first, np.nan, np.float32) if r is None else np.asarray(r, np.float32)
        cur["rint"].append(np.concatenate([np.zeros(first, np.float32), r]))
        ticket = seg.ticket
        if seg.last:
            obs, act, phys, disc = (np.concatenate(x) for x in zip(*cur["rows"]))
            ri = np.concatenate(cur["rint"])
            ep = Episode(episode_id(self.run_key, ticket.episode), obs, act, phys, disc,
                         None if np.isnan(ri[1:]).all() else np.nan_to_num(ri))
            self.pending.append(ep)
            self.pending_tickets.append(ticket.episode)
            del self.in_progress[seg.slot]
            ticket = self._assign(seg.slot)
            if len(self.pending) >= self.cfg.episodes_per_chunk or (not self._free() and not self.in_progress):
                self._commit()
        return self._feedback(seg.slot, ticket, True)

    def _commit(self) -> None:
        if not self.pending:
            return
        writer = self.cfg.writer(self.spec, self.run_key, "c", self.seq)
        for ep in self.pending:
            writer.write_episode(ep)
        writer.close()
        self.committed.update(self.pending_tickets)
        self.pending, self.pending_tickets = [], []
        self.seq += 1
        self._checkpoint()

    # ------------------------------------------------------------------ checkpoint
    def _checkpoint(self) -> None:
        save_checkpoint(self.ckpt, explorer_state(self.explorer, self.knn, committed=sorted(self.committed),
                                                  seq=self.seq, steps_ingested=self.steps_ingested))

    def _restore(self) -> bool:
        s = load_explorer_state(self.ckpt, self.explorer, self.knn)
        if s is not None:
            self.committed, self.seq = set(s["committed"]), int(s["seq"])
            self.steps_ingested = int(s["steps_ingested"])
        for p in self.pdir.glob(f"{self.run_key}-c*.parquet") if self.pdir.is_dir() else []:
            seq = parse_chunk_file(p.name, self.run_key, "c")
            if seq is not None and seq >= self.seq:
                p.unlink()  # committed after the checkpoint: a lost future
        return s is not None

    def status(self) -> dict:
        intr = self.stats["intr"]
        out = {"done": len(self.committed) == len(self.tickets), "committed_steps":
               sum(self.tickets[e].length for e in self.committed), "steps_ingested": self.steps_ingested,
               "updates": self.explorer.updates, "restored": self.restored, "rejected": self.rejected,
               "node": self.node, "intr_reward_mean": float(np.mean(intr)) if intr else None,
               "knn_ms": (1000 * self.knn.seconds / self.knn.calls) if self.knn and self.knn.calls else None}
        self.stats["intr"] = []
        return out
