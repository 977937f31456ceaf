"""Evaluation rollouts: a deterministic policy on a task, N episodes (ExORL protocol)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .core import Env


@dataclass(frozen=True)
class EvalResult:
    returns: tuple[float, ...]
    mean: float
    std: float
    steps: int

    def metrics(self, prefix: str = "eval") -> dict[str, float]:
        return {f"{prefix}/return_mean": self.mean, f"{prefix}/return_std": self.std,
                f"{prefix}/episodes": float(len(self.returns))}


def evaluate(policy: Callable[[np.ndarray], np.ndarray], domain: str, task: str,
             episodes: int = 10, seed: int = 0) -> EvalResult:
    """Run ``policy(obs) -> action in [-1,1]`` for ``episodes`` episodes; episode i uses seed ``seed + i``."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    returns, steps = [], 0
    for i in range(episodes):
        env = Env(domain, task, seed=seed + i)
        step = env.reset()
        total = 0.0
        while not step.last:
            step = env.step(policy(step.obs))
            total += step.reward
            steps += 1
        returns.append(total)
        env.close()
    r = np.asarray(returns)
    return EvalResult(tuple(float(x) for x in r), float(r.mean()), float(r.std()), steps)


def random_policy(action_dim: int, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """Uniform random actions in [-1, 1] (the reference for 'learned something')."""
    rng = np.random.default_rng(seed)
    return lambda obs: rng.uniform(-1.0, 1.0, size=action_dim)
