"""Offline learners (pure PyTorch, no Ray): one module each, plus a registry.

``LEARNERS[name] = (ConfigCls, LearnerCls)``; every learner has
``Learner(obs_dim, action_dim, config, device="cpu", seed=None)``,
``update(batch) -> dict[str, float]``, ``act(obs) -> np.ndarray``,
``state_dict()``, ``load_state_dict(sd)`` and a ``steps`` counter.
Learners that need a pre-training phase (TD3-BST, IQL-BST: the Morse network)
also have ``pretrain(sample_batch_fn, steps=None)`` (a no-op for plain IQL).
"""
from __future__ import annotations

from typing import Any

from .bc import BC, BCConfig
from .common import PRESETS, ConfigBase, LearnerConfig
from .cql import CQL, CQLConfig
from .crr import CRR, CRRConfig
from .iql import IQL, IQLBSTConfig, IQLConfig
from .td3 import TD3, TD3BCConfig, TD3Config
from .td3_bst import TD3BST, TD3BSTConfig

LEARNERS: dict[str, tuple[type[ConfigBase], type]] = {
    "td3": (TD3Config, TD3),
    "td3_bc": (TD3BCConfig, TD3),
    "cql": (CQLConfig, CQL),
    "crr": (CRRConfig, CRR),
    "td3_bst": (TD3BSTConfig, TD3BST),
    "bc": (BCConfig, BC),
    "iql": (IQLConfig, IQL),
    "iql_bst": (IQLBSTConfig, IQL),
}


def make_config(name: str, config_dict: dict[str, Any] | None = None, preset: str | None = None) -> ConfigBase:
    """Strictly validated config of learner ``name`` (optionally on top of a preset)."""
    cfg_cls, _ = _lookup(name)
    if preset is not None:
        return cfg_cls.preset(preset, **(config_dict or {}))
    return cfg_cls.from_dict(config_dict or {})


def make_learner(name: str, obs_dim: int, action_dim: int, config_dict: dict[str, Any] | ConfigBase | None = None,
                 device: str = "cpu", seed: int | None = None):
    """Build learner ``name`` from a plain config dict (unknown keys / bad values raise ``ValueError``)
    or from an instance of its config class."""
    cfg_cls, learner_cls = _lookup(name)
    if isinstance(config_dict, ConfigBase):
        if type(config_dict) is not cfg_cls:
            raise ValueError(f"learner {name!r} needs a {cfg_cls.__name__}, got {type(config_dict).__name__}")
        config = config_dict
    else:
        config = make_config(name, config_dict)
    return learner_cls(obs_dim, action_dim, config, device=device, seed=seed)


def _lookup(name: str):
    if name not in LEARNERS:
        raise ValueError(f"unknown learner {name!r}; allowed: {', '.join(LEARNERS)}")
    return LEARNERS[name]


__all__ = ["LEARNERS", "PRESETS", "LearnerConfig", "make_learner", "make_config", "ConfigBase", "TD3", "TD3Config",
           "TD3BCConfig",
           "CQL", "CQLConfig", "CRR", "CRRConfig", "TD3BST", "TD3BSTConfig", "BC", "BCConfig",
           "IQL", "IQLConfig", "IQLBSTConfig"]
