"""A gymnasium view of ``envs.Env`` (flat float32 observations, ``Box(-1, 1)`` actions), no Ray.

RLlib's SAC/CQL set-up always builds a local EnvRunner, even offline, so an ``rllib_*`` trial needs a
gymnasium environment; see ``docs/rllib.md`` ("RLlib limitations hit": CQL needs an env).  This module
holds the environment factory and its spaces; registering it with Ray Tune under ``GYM_ENV_NAME``
(``register_gym_env``) needs Ray and stays in ``cluster/rllib_peer.py``.  gymnasium is imported inside
the functions, so importing this module needs neither gymnasium nor Ray.
"""
from __future__ import annotations

import numpy as np

#: The name ``cluster.rllib_peer.register_gym_env`` registers ``make_gym_env`` under.
GYM_ENV_NAME = "bex_dmc"


def make_gym_env(env_config: dict):
    """A gymnasium view of ``envs.Env`` (flat float32 obs, Box action in [-1, 1]) for RLlib env runners.

    ``env_config``: ``{"domain", "task", "seed"}`` (``seed`` optional).
    """
    import gymnasium as gym

    from .core import Env

    class BexGymEnv(gym.Env):
        def __init__(self, domain: str, task: str, seed: int | None = None):
            self._env = Env(domain, task, seed=seed)
            spec = self._env.spec
            self.observation_space, self.action_space = spaces(spec.obs_dim, spec.action_dim)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return self._env.reset().obs.astype(np.float32), {}

        def step(self, action):
            s = self._env.step(np.asarray(action))
            terminated = s.last and s.discount == 0.0
            return s.obs.astype(np.float32), s.reward, terminated, s.last and not terminated, {}

        def close(self):
            self._env.close()

    return BexGymEnv(env_config["domain"], env_config["task"], env_config.get("seed"))


def spaces(obs_dim: int, action_dim: int):
    """``(observation_space, action_space)``: ``Box(-inf, inf, (obs_dim,))`` and ``Box(-1, 1, (action_dim,))``."""
    import gymnasium as gym

    return (gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32),
            gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32))
