"""The explorers by name (``random``, ``apt``, ``rnd``, ``smm``) and their one constructor."""
from __future__ import annotations

from typing import Any, Callable, Mapping

from .config import APTConfig, RNDConfig, SMMConfig

EXPLORERS = ("random", "apt", "rnd", "smm")


def make_explorer(name: str, obs_dim: int, action_dim: int, config: Mapping[str, Any] | None = None,
                  seed: int = 0, knn_reward: Callable | None = None):
    """Build the explorer ``name`` (``random``, ``apt``, ``rnd``, ``smm``) from a config mapping.

    ``config`` is validated by the explorer's config class (``APTConfig`` ...;
    a ``"preset"`` key selects ``small``/``paper``); ``knn_reward`` is only
    accepted by ``apt``.
    """
    from .apt import APTExplorer  # the agents (torch) load here, not when the names are imported
    from .base import RandomExplorer
    from .rnd import RNDExplorer
    from .smm import SMMExplorer

    config = dict(config or {})
    if name not in EXPLORERS:
        raise ValueError(f"unknown explorer {name!r}; allowed: {', '.join(EXPLORERS)}")
    if knn_reward is not None and name != "apt":
        raise ValueError(f"explorer {name!r} takes no knn_reward (only 'apt' does)")
    if name == "random":
        if config:
            raise ValueError(f"explorer 'random' takes no config; got key(s) {sorted(config)}")
        return RandomExplorer(action_dim, seed=seed)
    if name == "apt":
        return APTExplorer(obs_dim, action_dim, APTConfig.from_dict(config), seed=seed, knn_reward=knn_reward)
    if name == "rnd":
        return RNDExplorer(obs_dim, action_dim, RNDConfig.from_dict(config), seed=seed)
    return SMMExplorer(obs_dim, action_dim, SMMConfig.from_dict(config), seed=seed)
