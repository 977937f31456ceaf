"""dm_control suite environments for bex.

Any suite domain and task can be built (``walker``/``stand``, ``quadruped``/``run``,
``cheetah``/``run`` ...).  Differences from raw dm_control, all following URLB/ExORL:

* the observation is the suite's ordered observation dict flattened into one
  float32 vector (key order as dm_control returns it);
* actions live in ``[-1, 1]^|A|`` and are rescaled affinely to the task's own
  bounds (URLB's ``action_scale`` wrapper; quadruped's bounds are not symmetric);
* the *physics state* is ``physics.get_state()``: ``qpos, qvel, act`` concatenated
  (walker 18, quadruped 57 on mujoco 3.17), enough to recompute any task reward.
"""
from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

os.environ.setdefault("MUJOCO_GL", "disable")


def _suite():
    from dm_control import suite  # imported lazily: dm_control import is slow

    _quiet_absl()
    return suite


@functools.lru_cache(maxsize=1)
def _quiet_absl() -> None:
    """dm_control logs deprecation notes of its model files through absl (cheetah: ``settotalmass``) at
    WARNING on stderr, where bex's one-line errors go; keep absl to errors."""
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)


def domains() -> list[str]:
    """All domain names of the dm_control suite."""
    return sorted({d for d, _ in _suite().ALL_TASKS})


def tasks_of(domain: str) -> list[str]:
    """All task names of one suite domain (ValueError for an unknown domain)."""
    check_domain(domain)
    return sorted(t for d, t in _suite().ALL_TASKS if d == domain)


#: The task each domain explores on when no ``--task`` is given (URLB's primal tasks:
#: ``walker_stand``, ``quadruped_walk``, ``jaco_reach_top_left``; ``cheetah_run``).
#: Quadruped's alphabetically first task, ``escape``, adds terrain and range-finder
#: observations (its observation differs from ``walk``/``run``) and needs OpenGL.
PRIMAL_TASKS: dict[str, str] = {"walker": "stand", "quadruped": "walk", "cheetah": "run"}


def collection_task(domain: str, task: str | None = None) -> str:
    """The task a collection run of ``domain`` builds its environment with.

    ``task`` overrides the default (``walker_stand`` or ``stand``; a task of
    another domain or an unknown one is a ``ValueError`` naming it).  Without it:
    the domain's URLB primal task (:data:`PRIMAL_TASKS`), else its first task.
    Exploration ignores the task's reward, but the task fixes the observation
    layout the dataset records and the episode's initial-state randomisation.
    """
    check_domain(domain)
    if task is not None:
        return parse_task(task, domain)[1]
    return PRIMAL_TASKS.get(domain) or tasks_of(domain)[0]


def check_layout(dataset_spec: "EnvSpec", domain: str, task: str) -> None:
    """Refuse to evaluate ``domain_task`` on a dataset whose observations are laid out differently.

    The learner sees the dataset's stored observations; the evaluation sees the
    task's.  Both must have the same keys and width (``quadruped_escape`` data
    cannot train a ``quadruped_walk`` policy).  Raises one-line ``ValueError``.
    """
    spec = env_spec(domain, task)
    if (tuple(dataset_spec.obs_keys), int(dataset_spec.obs_dim)) != (tuple(spec.obs_keys), int(spec.obs_dim)):
        raise ValueError(
            f"dataset collected on {dataset_spec.domain}_{dataset_spec.task} observes "
            f"{'+'.join(dataset_spec.obs_keys)} ({dataset_spec.obs_dim} floats) but {domain}_{task} observes "
            f"{'+'.join(spec.obs_keys)} ({spec.obs_dim}); collect on a task with {domain}_{task}'s observations "
            f"(bex collect --task)")


def check_domain(domain: str) -> str:
    known = domains()
    if domain not in known:
        raise ValueError(f"unknown domain {domain!r}; allowed: {', '.join(known)}")
    return domain


def parse_task(task: str, domain: str | None = None) -> tuple[str, str]:
    """Resolve ``walker_stand`` or ``stand`` (with ``domain``) to ``(domain, task)``.

    Domains may contain underscores (``ball_in_cup_catch``), so the longest
    domain prefix wins.  A task that belongs to another domain than ``domain``
    is an error naming both.
    """
    all_tasks = set(_suite().ALL_TASKS)
    if domain is not None:
        check_domain(domain)
        if (domain, task) in all_tasks:
            return domain, task
        if task.startswith(domain + "_") and (domain, task[len(domain) + 1:]) in all_tasks:
            return domain, task[len(domain) + 1:]
        for d in sorted(domains(), key=len, reverse=True):
            if task.startswith(d + "_") and (d, task[len(d) + 1:]) in all_tasks:
                raise ValueError(f"task {task!r} belongs to domain {d!r}, not {domain!r}; "
                                 f"tasks of {domain!r}: {', '.join(tasks_of(domain))}")
        raise ValueError(f"unknown task {task!r} for domain {domain!r}; allowed: {', '.join(tasks_of(domain))}")
    for d in sorted(domains(), key=len, reverse=True):
        if task.startswith(d + "_") and (d, task[len(d) + 1:]) in all_tasks:
            return d, task[len(d) + 1:]
    raise ValueError(f"unknown task {task!r}: give DOMAIN_TASK such as walker_stand "
                     f"(domains: {', '.join(domains())})")


@dataclass(frozen=True)
class EnvSpec:
    """What a dataset records about its environment (JSON-serialisable)."""

    domain: str
    task: str
    obs_dim: int
    action_dim: int
    physics_dim: int
    obs_keys: tuple[str, ...]
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    episode_length: int
    control_timestep: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EnvSpec":
        d = dict(d)
        for k in ("obs_keys", "action_low", "action_high"):
            d[k] = tuple(d[k])
        return cls(**d)


class Step(NamedTuple):
    """What ``Env.reset``/``Env.step`` return (dm_env convention)."""

    obs: np.ndarray        #: float32 observation after the step
    reward: float          #: task reward of the step (0.0 at reset)
    discount: float        #: 1.0, or 0.0 at a true terminal state
    first: bool            #: this is the reset observation
    last: bool             #: the episode ended with this step


def flatten_observation(obs: dict) -> np.ndarray:
    return np.concatenate([np.asarray(v, dtype=np.float32).ravel() for v in obs.values()])


class Env:
    """A seeded dm_control task with flat observations and normalised actions."""

    def __init__(self, domain: str, task: str, seed: int | None = None):
        domain, task = parse_task(task, domain)
        self._env = _suite().load(domain, task, task_kwargs={"random": seed})
        self.physics = self._env.physics
        self.task = self._env.task
        spec = self._env.action_spec()
        self._low = spec.minimum.astype(np.float64)
        self._high = spec.maximum.astype(np.float64)
        ts = self._env.reset()
        obs_keys = tuple(ts.observation.keys())
        self.spec = EnvSpec(
            domain=domain, task=task,
            obs_dim=int(flatten_observation(ts.observation).shape[0]),
            action_dim=int(spec.shape[0]),
            physics_dim=int(self.physics.get_state().shape[0]),
            obs_keys=obs_keys,
            action_low=tuple(float(x) for x in self._low),
            action_high=tuple(float(x) for x in self._high),
            episode_length=int(round(self._env._step_limit)),
            control_timestep=float(self._env.control_timestep()),
        )
        self._needs_reset = True

    def scale_action(self, action: np.ndarray) -> np.ndarray:
        """Map an action in [-1, 1] to the task's bounds (clipping first)."""
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        return self._low + (a + 1.0) * 0.5 * (self._high - self._low)

    def reset(self) -> Step:
        ts = self._env.reset()
        self._needs_reset = False
        return Step(flatten_observation(ts.observation), 0.0, 1.0, True, False)

    def step(self, action: np.ndarray) -> Step:
        if self._needs_reset:
            raise RuntimeError("Env.step called before reset() or after the episode ended")
        ts = self._env.step(self.scale_action(action))
        last = ts.last()
        self._needs_reset = last
        return Step(flatten_observation(ts.observation), float(ts.reward or 0.0),
                    float(ts.discount if ts.discount is not None else 1.0), False, last)

    def reseed(self, seed: int) -> None:
        """Re-seed the task's reset randomness (initial pose, targets) for the next :meth:`reset`.

        dm_control keeps it in the task's private ``_random`` RandomState; this is
        the one place bex writes it (collection seeds every episode from
        ``(run seed, episode index)`` so a re-run reproduces it).
        """
        self.task._random = np.random.RandomState(int(seed))

    def physics_state(self) -> np.ndarray:
        """``qpos, qvel, act`` concatenated (float64 copy)."""
        return np.array(self.physics.get_state(), dtype=np.float64)

    def set_physics_state(self, state: np.ndarray) -> None:
        """Set the physics state and recompute derived quantities (``mj_forward``)."""
        with self.physics.reset_context():
            self.physics.set_state(np.asarray(state, dtype=np.float64))

    def observation(self) -> np.ndarray:
        """The task's observation of the current physics state (flattened)."""
        return flatten_observation(self.task.get_observation(self.physics))

    def close(self) -> None:
        self._env.close()


def make(domain: str, task: str | None = None, seed: int | None = None) -> Env:
    """Build an environment; ``task`` defaults to the domain's collection task (:func:`collection_task`)."""
    return Env(domain, collection_task(domain, task), seed)


@functools.lru_cache(maxsize=64)
def env_spec(domain: str, task: str | None = None) -> EnvSpec:
    """The :class:`EnvSpec` of ``domain_task`` (the collection task by default); cached, it builds a physics."""
    env = make(domain, task, seed=0)
    try:
        return env.spec
    finally:
        env.close()
