"""Typed, strict configurations of the exploration agents (APT, RND, SMM).

Every default is URLB's (``rll-research/url_benchmark``: ``agent/ddpg.yaml``,
``agent/icm_apt.yaml`` at the commit whose ``ICMAPTAgent`` takes ``icm_rep_dim``,
``agent/rnd.yaml``, ``agent/smm.yaml``, ``pretrain.yaml``) for state
observations.  The configs follow bex's one convention (:class:`bex.core.ConfigBase`
with :func:`bex.core.param` fields): ``from_dict`` rejects unknown keys and
out-of-range values with a one-line ``ValueError`` naming the key, the value and
what is allowed.  APT's reward settings are the fields of
:class:`bex.entropy.RewardConfig`, inherited (URLB's names ``knn_avg``,
``knn_rms``, ``knn_clip`` are accepted for ``avg``, ``rms``, ``clip``).

Presets (``Config.preset(name)``, or a ``"preset"`` key of ``from_dict``):

* ``"paper"``: URLB sizes (the defaults).
* ``"small"``: hidden 128, batch 128, APT representation 64, 1000 seed frames
  and a 100K replay — for CPU laptops and tests of the pipeline (50K walker
  steps in about 4 minutes of one core; see ``docs/actors.md`` for the measurement).

Deliberate differences from URLB: URLB's ``feature_dim`` is not a field (for
state observations URLB ignores it: both trunks have width ``hidden_dim``);
``objective``/``alpha``/``beta``/``q``/``c``/``knn_mode``/``knn_window`` and
``intr_nstep_sum`` are bex additions (the defaults reproduce URLB's ICM-APT).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from bex.core import ConfigBase, param
from bex.entropy.rewards import OBJECTIVES, RewardConfig

KNN_MODES = ("batch", "window", "recent")


@dataclass(frozen=True)
class DDPGConfig(ConfigBase):
    """DDPG fields shared by every explorer (URLB ``agent/ddpg.yaml``, ``pretrain.yaml``)."""

    hidden_dim: int = param(1024, "Width of the actor/critic trunks and heads (URLB: 1024).", lo=1)
    lr: float = param(1e-4, "Adam learning rate of actor, critic and the intrinsic-reward modules.", lo=0.0,
                      lo_open=True, hi=1.0)
    critic_target_tau: float = param(0.01, "Polyak rate of the critic target (no target actor).", lo=0.0,
                                     lo_open=True, hi=1.0)
    discount: float = param(0.99, "gamma.", lo=0.0, hi=1.0)
    nstep: int = param(3, "n of the n-step bootstrap (gamma**n and s_{t+n}).", lo=1)
    batch_size: int = param(1024, "Mini-batch size of every update.", lo=2)
    update_every_steps: int = param(2, "One gradient update every this many env steps.", lo=1)
    num_seed_frames: int = param(4000, "Uniform random actions and no updates before this global step.", lo=0)
    replay_capacity: int = param(1_000_000, "Transitions kept in the explorer's replay (ring buffer).", lo=2)
    stddev: float = param(0.2, "Std of the exploration / target-policy Gaussian noise (URLB ``stddev_schedule``; "
                          "constant).", lo=0.0, hi=10.0)
    stddev_clip: float = param(0.3, "Clip of the noise in updates (URLB ``stddev_clip``; acting noise is not "
                               "clipped).", lo=0.0, hi=10.0)
    device: str = param("cpu", "Torch device of the networks.")

    _PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        "small": {"hidden_dim": 128, "batch_size": 128, "num_seed_frames": 1000, "replay_capacity": 100_000},
    }

    def check(self) -> None:
        name = type(self).__name__
        if self.replay_capacity < self.nstep + 1:
            raise ValueError(f"{name}.replay_capacity={self.replay_capacity!r} is out of range: allowed "
                             f"replay_capacity >= nstep + 1 = {self.nstep + 1}")
        if not self.device:
            raise ValueError(f"{name}.device='' is invalid: allowed a torch device string such as 'cpu'")


@dataclass(frozen=True)
class APTConfig(DDPGConfig, RewardConfig):
    """ICM-APT (URLB ``agent/icm_apt.py``) with a choice of k-NN entropy objective.

    The reward fields (``objective, k, alpha, beta, M, q, c, avg, rms, clip,
    include_self``) are :class:`bex.entropy.RewardConfig`'s; APT's default
    objective is ``shannon`` (URLB's reward).
    """

    objective: str = param("shannon", "``\"shannon\"`` (APT, the default: URLB's reward), ``\"be\"`` or "
                           "``\"renyi\"``.", choices=OBJECTIVES)
    rep_dim: int = param(512, "Size of the ICM representation the k-NN runs on (URLB ``icm_rep_dim``).", lo=1)
    knn_mode: str = param("batch", "``\"batch\"``: k-NN within the sampled batch (URLB); ``\"window\"``: against a "
                          "ring of recent embeddings, own copy excluded (``KnnService`` window semantics); "
                          "``\"recent\"``: against the last ``knn_window`` visited states, re-embedded by the "
                          "current encoder at each update (in the learner's process; "
                          ":class:`bex.actors.apt.RecentKnnReward`).", choices=KNN_MODES)
    knn_window: int = param(16384, "Size of the embedding ring in ``\"window\"`` mode, of the visited-state "
                            "window in ``\"recent\"`` mode (ignored in batch mode); >= k.", lo=1)
    knn_local: int | None = param(None, "``\"recent\"`` mode only: each replay sample's own-episode states within "
                                  "``knn_local`` steps on either side join its reference set when they are older "
                                  "than the window, so an old sample is scored as it was when visited (a pose held "
                                  "still then is its own neighbour); 0 = off; None = ``k`` in recent mode, 0 in "
                                  "the others (:attr:`local_neighbours`).", lo=0)
    intr_nstep_sum: bool = param(False, "False (URLB): the reward of an n-step sample is the intrinsic reward of "
                                 "s_t alone.  True: the discounted sum of the intrinsic rewards of s_t ... "
                                 "s_{t+n-1}.")
    record_intrinsic: bool = param(True, "Return a per-step intrinsic reward for the dataset column when the k-NN "
                                   "reward supports ``query``.")

    _PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"paper": {}, "small": {"rep_dim": 64}}
    _ALIASES: ClassVar[dict[str, str]] = {"knn_avg": "avg", "knn_rms": "rms", "knn_clip": "clip"}

    def check(self) -> None:
        DDPGConfig.check(self)
        RewardConfig.check(self)
        if self.knn_mode == "batch" and self.k >= self.batch_size:
            raise ValueError(f"APTConfig.k={self.k!r} is out of range: allowed 1 <= k < batch_size={self.batch_size}")
        if self.knn_window < self.k:
            raise ValueError(f"APTConfig.knn_window={self.knn_window!r} is out of range: allowed knn_window >= "
                             f"k={self.k}")
        if self.knn_local and self.knn_mode != "recent":
            raise ValueError(f"APTConfig.knn_local={self.knn_local} needs knn_mode 'recent', got {self.knn_mode!r}")
        if self.knn_local and self.intr_nstep_sum:
            raise ValueError(f"APTConfig.knn_local={self.knn_local} works on s_t's reward only: needs "
                             f"intr_nstep_sum false")

    @property
    def local_neighbours(self) -> int:
        """``knn_local`` resolved: own-episode neighbours on either side (0 = off)."""
        if self.knn_local is not None:
            return int(self.knn_local)
        return self.k if self.knn_mode == "recent" and not self.intr_nstep_sum else 0


@dataclass(frozen=True)
class RNDConfig(DDPGConfig):
    """RND on DDPG (URLB ``agent/rnd.py``, ``rnd.yaml``)."""

    rnd_rep_dim: int = param(512, "Output size of the predictor and the frozen random target.", lo=1)
    rnd_scale: float = param(1.0, "Reward scale.", lo=0.0, lo_open=True, hi=1e6)
    obs_clip: float = param(5.0, "Clip of the batch-normalised observation (URLB ``clip_val``).", lo=0.0,
                            lo_open=True, hi=1e6)


@dataclass(frozen=True)
class SMMConfig(DDPGConfig):
    """SMM on DDPG with a one-hot skill in the observation (URLB ``agent/smm.py``, ``smm.yaml``)."""

    z_dim: int = param(4, "Number of skills (one-hot, resampled at each episode start).", lo=1)
    sp_lr: float = param(1e-3, "Adam lr of the skill discriminator q(z|s).", lo=0.0, lo_open=True, hi=1.0)
    vae_lr: float = param(1e-2, "Adam lr of the density model (VAE over [s, z]).", lo=0.0, lo_open=True, hi=1.0)
    vae_beta: float = param(0.5, "KL weight of the VAE loss.", lo=0.0, hi=1e6)
    vae_hidden_dim: int = param(150, "VAE width (URLB hard-codes 150).", lo=1)
    code_dim: int = param(128, "VAE latent size (URLB hard-codes 128).", lo=1)
    state_ent_coef: float = param(1.0, "Weight of the density term (VAE reconstruction error ~ -log q(s|z)).",
                                  lo=-1e6, hi=1e6)
    latent_ent_coef: float = param(1.0, "Weight of H(z) = log z_dim.", lo=-1e6, hi=1e6)
    latent_cond_ent_coef: float = param(1.0, "Weight of the discriminator cross-entropy ~ -log q(z|s).",
                                        lo=-1e6, hi=1e6)


__all__ = ["DDPGConfig", "APTConfig", "RNDConfig", "SMMConfig", "KNN_MODES"]
