"""Exploration agents (APT, RND, SMM, random) and the Ray-free collection loop (:mod:`.collect`)."""
from __future__ import annotations

from .apt import APTAgent, APTExplorer, BatchKnnReward, RecentKnnReward, WindowKnnReward, make_knn_reward
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
from .nstep import NStepBatch, NStepReplay
from .registry import EXPLORERS, make_explorer
from .rnd import RNDAgent, RNDExplorer
from .smm import SMMAgent, SMMExplorer

__all__ = ["Explorer", "RandomExplorer", "run_episode", "APTAgent", "APTExplorer", "APTConfig", "BatchKnnReward",
           "WindowKnnReward", "RecentKnnReward", "make_knn_reward", "DDPGConfig", "RNDConfig", "SMMConfig",
           "NStepBatch", "NStepReplay", "RNDAgent", "RNDExplorer", "SMMAgent", "SMMExplorer", "EXPLORERS",
           "make_explorer",
           "CollectConfig", "ChunkCollector", "LearnedRunner", "LearnerCore", "EnvWorkerCore", "plan_chunks",
           "prepare_output"]
