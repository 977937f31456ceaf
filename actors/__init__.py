"""Exploration agents (APT, RND, SMM, random) and the Ray-free collection loop (:mod:`.collect`).

The agents (torch) load on first use of their names, so that validating a collection config starts
without importing torch.
"""
from __future__ import annotations

from typing import Any

from .base import Explorer, RandomExplorer
from .collect import (
    ChunkCollector,
    CollectConfig,
    EnvWorkerCore,
    LearnedRunner,
    LearnerCore,
    plan_chunks,
    prepare_output,
    run_episode,
)
from .config import APTConfig, DDPGConfig, RNDConfig, SMMConfig
from .registry import EXPLORERS, make_explorer

_LAZY = {**dict.fromkeys(["APTAgent", "APTExplorer", "BatchKnnReward", "RecentKnnReward", "WindowKnnReward",
                          "make_knn_reward"], ".apt"), **dict.fromkeys(["NStepBatch", "NStepReplay"], ".nstep"),
         **dict.fromkeys(["RNDAgent", "RNDExplorer"], ".rnd"), **dict.fromkeys(["SMMAgent", "SMMExplorer"], ".smm")}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["Explorer", "RandomExplorer", "run_episode", "APTAgent", "APTExplorer", "APTConfig", "BatchKnnReward",
           "WindowKnnReward", "RecentKnnReward", "make_knn_reward", "DDPGConfig", "RNDConfig", "SMMConfig",
           "NStepBatch", "NStepReplay", "RNDAgent", "RNDExplorer", "SMMAgent", "SMMExplorer", "EXPLORERS",
           "make_explorer",
           "CollectConfig", "ChunkCollector", "LearnedRunner", "LearnerCore", "EnvWorkerCore", "plan_chunks",
           "prepare_output"]
