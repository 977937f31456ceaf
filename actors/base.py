"""The explorer interface and the plain (Ray-free) collection loop.

An explorer picks actions and, optionally, learns from what it saw.  The loop
steps a ``envs.Env``, builds whole ``replay.Episode``s in the dataset
convention and hands them to a sink (a ``DatasetWriter`` or anything with
``write_episode``).  ``cluster/`` runs this same loop inside Ray actors.
"""
from __future__ import annotations

from typing import Callable, Protocol

import numpy as np

from bex.envs import Env
from bex.replay import Episode


class Explorer(Protocol):
    """What the collection loop needs from an exploration agent."""

    name: str

    def act(self, obs: np.ndarray, step: int) -> np.ndarray:
        """Action in [-1, 1]^|A| for ``obs`` at global env step ``step``."""

    def observe(self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, discount: float,
                last: bool, step: int) -> dict[str, float]:
        """Record a transition; may update the agent. Returns metrics."""

    def intrinsic_rewards(self, states: np.ndarray) -> np.ndarray | None:
        """The explorer's intrinsic reward (T,) of each observation of ``states`` (T, O), scored with
        its current networks and statistics and changing nothing (None if it has none)."""


class RandomExplorer:
    """Uniform random actions in [-1, 1] (the paper's random baseline)."""

    name = "random"

    def __init__(self, action_dim: int, seed: int = 0):
        self.action_dim = int(action_dim)
        self.rng = np.random.default_rng(seed)

    def act(self, obs: np.ndarray, step: int) -> np.ndarray:
        return self.rng.uniform(-1.0, 1.0, size=self.action_dim).astype(np.float32)

    def observe(self, obs, action, next_obs, discount, last, step) -> dict[str, float]:
        return {}

    def intrinsic_rewards(self, states: np.ndarray) -> np.ndarray | None:
        return None

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


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
    obs = np.empty((limit + 1, spec.obs_dim), np.float32)
    act = np.zeros((limit + 1, spec.action_dim), np.float32)
    phys = np.empty((limit + 1, spec.physics_dim), np.float64)
    disc = np.ones(limit + 1, np.float32)
    s = env.reset()
    obs[0], phys[0] = s.obs, env.physics_state()
    t = 0
    while t < limit:
        a = np.asarray(explorer.act(s.obs, step0 + t), dtype=np.float32)
        nxt = env.step(a)
        t += 1
        obs[t], act[t], phys[t], disc[t] = nxt.obs, a, env.physics_state(), nxt.discount
        metrics = explorer.observe(s.obs, a, nxt.obs, nxt.discount, nxt.last or t == limit, step0 + t - 1)
        if on_step is not None:
            on_step(metrics)
        s = nxt
        if nxt.last:
            break
    n = t + 1
    r = explorer.intrinsic_rewards(obs[1:n])
    rint = None if r is None else np.concatenate([[0.0], np.asarray(r, np.float32).reshape(-1)]).astype(np.float32)
    return Episode(episode_id, obs[:n], act[:n], phys[:n], disc[:n], rint)
