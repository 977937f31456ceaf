"""Exploration agents (APT, RND, SMM, random) and the Ray-free collection loop (:mod:`.collect`).

The agents (torch) load on first use of their names, so that validating a collection config starts
without importing torch.
"""
from __future__ import annotations

from bex.core.lazy import lazy_getattr

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


__getattr__ = lazy_getattr(__name__, _LAZY, globals())

__all__ = ["Explorer", "RandomExplorer", "run_episode", "APTAgent", "APTExplorer", "APTConfig", "BatchKnnReward",
           "WindowKnnReward", "RecentKnnReward", "make_knn_reward", "DDPGConfig", "RNDConfig", "SMMConfig",
           "NStepBatch", "NStepReplay", "RNDAgent", "RNDExplorer", "SMMAgent", "SMMExplorer", "EXPLORERS",
           "make_explorer",
           "CollectConfig", "ChunkCollector", "LearnedRunner", "LearnerCore", "EnvWorkerCore", "plan_chunks",
           "prepare_output"]
