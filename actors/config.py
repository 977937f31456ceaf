"""Typed, strict configurations of the exploration agents (APT, RND, SMM).

Every default is URLB's (``rll-research/url_benchmark``: ``agent/ddpg.yaml``,
``agent/icm_apt.yaml`` at the commit whose ``ICMAPTAgent`` takes ``icm_rep_dim``,
``agent/rnd.yaml``, ``agent/smm.yaml``, ``pretrain.yaml``) for state
observations.  ``from_dict`` rejects unknown keys and out-of-range values with a
one-line ``ValueError`` naming the key, the value and what is allowed.

Presets (``Config.preset(name)``):

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

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar, Mapping

from bex.entropy.estimators import check_q
from bex.entropy.prelec import check_alpha, check_beta

OBJECTIVES = ("be", "renyi", "shannon")
KNN_MODES = ("batch", "window", "recent")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int_at_least(name: str, v: Any, lo: int) -> None:
    if not _is_int(v) or v < lo:
        raise ValueError(f"{name}={v!r} is out of range: allowed integer {name} >= {lo}")


def _float_in(name: str, v: Any, lo: float, hi: float, lo_open: bool = True, hi_open: bool = False) -> None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    if ok:
        f = float(v)
        ok = (f > lo if lo_open else f >= lo) and (f < hi if hi_open else f <= hi)
    if not ok:
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        raise ValueError(f"{name}={v!r} is out of range: allowed {name} in {lb}{lo:g}, {hi:g}{rb}")


@dataclass(frozen=True)
class DDPGConfig:
    """DDPG fields shared by every explorer (URLB ``agent/ddpg.yaml``, ``pretrain.yaml``)."""

    hidden_dim: int = 1024
    """Width of the actor/critic trunks and heads (URLB: 1024)."""
    lr: float = 1e-4
    """Adam learning rate of actor, critic and the intrinsic-reward modules."""
    critic_target_tau: float = 0.01
    """Polyak rate of the critic target (no target actor)."""
    discount: float = 0.99
    """gamma."""
    nstep: int = 3
    """n of the n-step bootstrap (gamma**n and s_{t+n})."""
    batch_size: int = 1024
    """Mini-batch size of every update."""
    update_every_steps: int = 2
    """One gradient update every this many env steps."""
    num_seed_frames: int = 4000
    """Uniform random actions and no updates before this global step."""
    replay_capacity: int = 1_000_000
    """Transitions kept in the explorer's replay (ring buffer)."""
    stddev: float = 0.2
    """Std of the exploration / target-policy Gaussian noise (URLB ``stddev_schedule``; constant)."""
    stddev_clip: float = 0.3
    """Clip of the noise in updates (URLB ``stddev_clip``; acting noise is not clipped)."""
    device: str = "cpu"
    """Torch device of the networks."""

    _PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        "small": {"hidden_dim": 128, "batch_size": 128, "num_seed_frames": 1000, "replay_capacity": 100_000},
    }

    def __post_init__(self) -> None:
        _int_at_least("hidden_dim", self.hidden_dim, 1)
        _float_in("lr", self.lr, 0.0, 1.0)
        _float_in("critic_target_tau", self.critic_target_tau, 0.0, 1.0)
        _float_in("discount", self.discount, 0.0, 1.0, lo_open=False)
        _int_at_least("nstep", self.nstep, 1)
        _int_at_least("batch_size", self.batch_size, 2)
        _int_at_least("update_every_steps", self.update_every_steps, 1)
        _int_at_least("num_seed_frames", self.num_seed_frames, 0)
        _int_at_least("replay_capacity", self.replay_capacity, self.nstep + 1)
        _float_in("stddev", self.stddev, 0.0, 10.0, lo_open=False)
        _float_in("stddev_clip", self.stddev_clip, 0.0, 10.0, lo_open=False)
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"device={self.device!r} is invalid: allowed a torch device string such as 'cpu'")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None = None):
        """Build from a mapping; an unknown key or out-of-range value raises ``ValueError``.

        A ``"preset"`` key (``"small"``/``"paper"``) selects the base values the
        other keys override.
        """
        d = dict(d or {})
        preset = d.pop("preset", "paper")
        known = {f.name for f in fields(cls)}
        for key in d:
            if key not in known:
                raise ValueError(f"{cls.__name__}: unknown key {key!r}; allowed: {', '.join(sorted(known))}, preset")
        base = cls.preset(preset)
        try:
            return replace(base, **d)
        except ValueError as e:
            raise ValueError(f"{cls.__name__}: {e}") from None

    @classmethod
    def preset(cls, name: str):
        """The ``"paper"`` (URLB sizes) or ``"small"`` (CPU) configuration."""
        merged: dict[str, dict[str, Any]] = {}
        for klass in reversed(cls.__mro__):
            for pname, vals in klass.__dict__.get("_PRESETS", {}).items():
                merged.setdefault(pname, {}).update(vals)
        if name not in merged:
            raise ValueError(f"{cls.__name__}: unknown preset {name!r}; allowed: {', '.join(sorted(merged))}")
        return cls(**merged[name])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class APTConfig(DDPGConfig):
    """ICM-APT (URLB ``agent/icm_apt.py``) with a choice of k-NN entropy objective."""

    rep_dim: int = 512
    """Size of the ICM representation the k-NN runs on (URLB ``icm_rep_dim``)."""
    objective: str = "shannon"
    """``"shannon"`` (APT, the default: URLB's reward), ``"be"`` or ``"renyi"``."""
    alpha: float = 0.5
    """Prelec alpha of BE, ``0 < alpha <= 10``."""
    beta: float | None = None
    """Prelec beta of BE; None means ``(log 512)**(1 - alpha)``."""
    q: float = 1.1
    """Rényi order, ``0 < q <= 10``, ``q != 1``."""
    k: int = 12
    """Neighbours of the k-NN (the point itself counts in batch mode, as URLB)."""
    c: float = 1.0
    """Constant of the transforms (``log(c + R)``); URLB: 1."""
    knn_avg: bool = True
    """Average the k distances (True) or keep the k-th only."""
    knn_rms: bool = False
    """Divide distances by their running mean (``icm_apt.yaml``: false)."""
    knn_clip: float = 0.0
    """``max(R - clip, 0)`` per distance (``icm_apt.yaml``: 0); negative disables."""
    knn_mode: str = "batch"
    """``"batch"``: k-NN within the sampled batch (URLB); ``"window"``: against a ring of recent
    embeddings, own copy excluded (``KnnService`` window semantics); ``"recent"``: against the
    last ``knn_window`` visited states, re-embedded by the current encoder at each update
    (in the learner's process; :class:`actors.apt.RecentKnnReward`)."""
    knn_window: int = 16384
    """Size of the embedding ring in ``"window"`` mode, of the visited-state window in ``"recent"``
    mode (ignored in batch mode)."""
    knn_local: int | None = None
    """``"recent"`` mode only: each replay sample's own-episode states within ``knn_local``
    steps on either side join its reference set when they are older than the window, so an
    old sample is scored as it was when visited (a pose held still then is its own
    neighbour); 0 = off; None = ``k`` in recent mode, 0 in the others
    (:attr:`local_neighbours`)."""
    intr_nstep_sum: bool = False
    """False (URLB): the reward of an n-step sample is the intrinsic reward of s_t alone.
    True: the discounted sum of the intrinsic rewards of s_t ... s_{t+n-1}."""
    record_intrinsic: bool = True
    """Return a per-step intrinsic reward for the dataset column when the k-NN reward supports ``query``."""

    _PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"paper": {}, "small": {"rep_dim": 64}}

    def __post_init__(self) -> None:
        super().__post_init__()
        _int_at_least("rep_dim", self.rep_dim, 1)
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective={self.objective!r} is unknown: allowed {', '.join(OBJECTIVES)}")
        if isinstance(self.alpha, bool):
            raise ValueError(f"alpha={self.alpha!r} is out of range: allowed 0 < alpha <= 10")
        check_alpha(self.alpha)
        if self.beta is not None:
            check_beta(self.beta)
        check_q(self.q)
        _int_at_least("k", self.k, 1)
        if self.knn_mode == "batch" and self.k >= self.batch_size:
            raise ValueError(f"k={self.k!r} is out of range: allowed 1 <= k < batch_size={self.batch_size}")
        _float_in("c", self.c, 0.0, 1e6)
        _float_in("knn_clip", self.knn_clip, -1e6, 1e6)
        for name in ("knn_avg", "knn_rms", "intr_nstep_sum", "record_intrinsic"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid: allowed true or false")
        if self.knn_mode not in KNN_MODES:
            raise ValueError(f"knn_mode={self.knn_mode!r} is unknown: allowed {', '.join(KNN_MODES)}")
        _int_at_least("knn_window", self.knn_window, self.k)
        if self.knn_local is not None:
            _int_at_least("knn_local", self.knn_local, 0)
        if self.knn_local and self.knn_mode != "recent":
            raise ValueError(f"knn_local={self.knn_local} needs knn_mode 'recent', got {self.knn_mode!r}")
        if self.knn_local and self.intr_nstep_sum:
            raise ValueError(f"knn_local={self.knn_local} works on s_t's reward only: needs intr_nstep_sum false")

    @property
    def local_neighbours(self) -> int:
        """``knn_local`` resolved: own-episode neighbours on either side (0 = off)."""
        if self.knn_local is not None:
            return int(self.knn_local)
        return self.k if self.knn_mode == "recent" and not self.intr_nstep_sum else 0

    def reward_config(self):
        """The matching :class:`entropy.rewards.RewardConfig` (M = 512 for the default beta)."""
        from bex.entropy.rewards import RewardConfig

        return RewardConfig(objective=self.objective, k=self.k, alpha=float(self.alpha), beta=self.beta,
                            q=float(self.q), c=float(self.c), avg=self.knn_avg, rms=self.knn_rms,
                            clip=float(self.knn_clip), include_self=True)


@dataclass(frozen=True)
class RNDConfig(DDPGConfig):
    """RND on DDPG (URLB ``agent/rnd.py``, ``rnd.yaml``)."""

    rnd_rep_dim: int = 512
    """Output size of the predictor and the frozen random target."""
    rnd_scale: float = 1.0
    """Reward scale."""
    obs_clip: float = 5.0
    """Clip of the batch-normalised observation (URLB ``clip_val``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _int_at_least("rnd_rep_dim", self.rnd_rep_dim, 1)
        _float_in("rnd_scale", self.rnd_scale, 0.0, 1e6)
        _float_in("obs_clip", self.obs_clip, 0.0, 1e6)


@dataclass(frozen=True)
class SMMConfig(DDPGConfig):
    """SMM on DDPG with a one-hot skill in the observation (URLB ``agent/smm.py``, ``smm.yaml``)."""

    z_dim: int = 4
    """Number of skills (one-hot, resampled at each episode start)."""
    sp_lr: float = 1e-3
    """Adam lr of the skill discriminator q(z|s)."""
    vae_lr: float = 1e-2
    """Adam lr of the density model (VAE over [s, z])."""
    vae_beta: float = 0.5
    """KL weight of the VAE loss."""
    vae_hidden_dim: int = 150
    """VAE width (URLB hard-codes 150)."""
    code_dim: int = 128
    """VAE latent size (URLB hard-codes 128)."""
    state_ent_coef: float = 1.0
    """Weight of the density term (VAE reconstruction error ~ -log q(s|z))."""
    latent_ent_coef: float = 1.0
    """Weight of H(z) = log z_dim."""
    latent_cond_ent_coef: float = 1.0
    """Weight of the discriminator cross-entropy ~ -log q(z|s)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _int_at_least("z_dim", self.z_dim, 1)
        _float_in("sp_lr", self.sp_lr, 0.0, 1.0)
        _float_in("vae_lr", self.vae_lr, 0.0, 1.0)
        _float_in("vae_beta", self.vae_beta, 0.0, 1e6, lo_open=False)
        _int_at_least("vae_hidden_dim", self.vae_hidden_dim, 1)
        _int_at_least("code_dim", self.code_dim, 1)
        for name in ("state_ent_coef", "latent_ent_coef", "latent_cond_ent_coef"):
            _float_in(name, getattr(self, name), -1e6, 1e6)
