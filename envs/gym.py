"""A gymnasium view of ``envs.Env`` (flat float32 observations, ``Box(-1, 1)`` actions), no Ray.

Two users:

* RLlib's SAC/CQL set-up always builds a local EnvRunner, even offline, so an ``rllib_*`` trial needs a
  gymnasium environment (``docs/rllib.md``, "RLlib limitations hit": CQL needs an env).  Registering
  :func:`make_gym_env` with Ray Tune under :data:`GYM_ENV_NAME` needs Ray and stays in
  ``cluster/rllib_peer.py``.
* Minari: a dataset bex exports names its environment by a gymnasium entry point,
  ``bex.envs.gym:BexGymEnv`` with ``kwargs={"domain", "task"}``, registered as ``bex/<domain>_<task>-v0``
  (:func:`register`).  ``minari.load_dataset(id).recover_environment()`` builds it from the dataset's stored
  spec wherever bex is installed (gymnasium imports the entry point's module; no registration is needed on
  the loading side), and ``gymnasium.make("bex.envs.gym:bex/walker_walk-v0")`` works too: importing this
  module registers every dm_control suite task.

Observations are the dataset's own layout (``envs.core.flatten_observation``), actions are in ``[-1, 1]``
and rescaled to the task's bounds as in collection.  Episodes end by dm_control's own time limit (truncated)
or a discount-0 step (terminated); no gymnasium ``TimeLimit`` is added.  ``reset(seed=s)`` re-seeds the
task's initial-state randomness (``Env.reseed``), so a seeded reset is reproducible.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np

#: The name ``cluster.rllib_peer.register_gym_env`` registers ``make_gym_env`` under.
GYM_ENV_NAME = "bex_dmc"
#: The gymnasium namespace of bex's environment ids (``bex/walker_walk-v0``).
NAMESPACE = "bex"
ENTRY_POINT = "bex.envs.gym:BexGymEnv"


class BexGymEnv(gym.Env):
    """One dm_control suite task as a gymnasium environment (module docstring)."""

    metadata = {"render_modes": []}

    def __init__(self, domain: str, task: str, seed: int | None = None):
        from .core import Env

        self._env = Env(domain, task, seed=seed)
        spec = self._env.spec
        self.observation_space, self.action_space = spaces(spec.obs_dim, spec.action_dim)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self._env.reseed(seed)
        return self._env.reset().obs.astype(np.float32), {}

    def step(self, action):
        s = self._env.step(np.asarray(action))
        terminated = s.last and s.discount == 0.0
        return s.obs.astype(np.float32), s.reward, terminated, s.last and not terminated, {}

    def close(self):
        self._env.close()


def make_gym_env(env_config: dict) -> BexGymEnv:
    """:class:`BexGymEnv` from RLlib's ``env_config``: ``{"domain", "task", "seed"}`` (``seed`` optional)."""
    return BexGymEnv(env_config["domain"], env_config["task"], env_config.get("seed"))


def env_id(domain: str, task: str) -> str:
    """``bex/<domain>_<task>-v0``."""
    return f"{NAMESPACE}/{domain}_{task}-v0"


def register(domain: str, task: str) -> str:
    """Register ``bex/<domain>_<task>-v0`` with gymnasium (idempotent) and return the id."""
    eid = env_id(domain, task)
    if eid not in gym.registry:
        gym.register(id=eid, entry_point=ENTRY_POINT, kwargs={"domain": domain, "task": task})
    return eid


def register_suite() -> list[str]:
    """Register every dm_control suite task (what importing this module does); returns the ids."""
    from dm_control import suite

    return [register(d, t) for d, t in suite.ALL_TASKS]


def spaces(obs_dim: int, action_dim: int):
    """``(observation_space, action_space)``: ``Box(-inf, inf, (obs_dim,))`` and ``Box(-1, 1, (action_dim,))``."""
    return (gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32),
            gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32))


register_suite()
