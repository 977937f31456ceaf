"""The explorer interface and the random explorer.

An explorer picks actions and, optionally, learns from what it saw; the
collection loop that drives it is :func:`bex.actors.collect.run_episode`.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np


class Explorer(Protocol):
    """What the collection loop needs from an exploration agent."""

    name: str
    updates: int  #: gradient updates made so far (0 for explorers that do not learn)

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
    updates = 0

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
