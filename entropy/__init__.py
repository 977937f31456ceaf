"""Entropy estimators, k-NN intrinsic rewards, Prelec weighting and the k-NN index.

Plain numpy / scipy / FAISS (no Ray).  See ``docs/entropy.md`` for the measured
accuracy of the estimators and the k-NN benchmark.
"""
from .estimators import (
    knn_behavioral_entropy,
    knn_log_density,
    knn_renyi_entropy,
    knn_shannon_entropy,
    kth_neighbour_distance,
    log_unit_ball_volume,
)
from .knn_index import KnnIndex, gpu_available
from .prelec import default_beta, prelec_weight
from .rewards import (
    OBJECTIVES,
    KnnRewardTransform,
    RewardConfig,
    RunningMean,
    be_reward,
    knn_reward,
    knn_statistic,
    renyi_reward,
    shannon_reward,
    transform_reward,
)

__all__ = [
    "KnnIndex", "KnnRewardTransform", "OBJECTIVES", "RewardConfig", "RunningMean",
    "be_reward", "default_beta", "gpu_available", "knn_behavioral_entropy", "knn_log_density",
    "knn_renyi_entropy", "knn_reward", "knn_shannon_entropy", "knn_statistic",
    "kth_neighbour_distance", "log_unit_ball_volume", "prelec_weight", "renyi_reward",
    "shannon_reward", "transform_reward",
]
