r"""Intrinsic rewards from k-NN distances: behavioral entropy, Rényi, Shannon.

Pipeline, for a batch of B samples with their k nearest-neighbour distances
``D`` of shape ``(B, k)`` (from :class:`entropy.knn_index.KnnIndex`, the
``KnnService`` or URLB's batch-local k-NN):

1. **Statistic** ``R`` (:func:`knn_statistic`), exactly APT's particle-based
   entropy statistic in URLB (``utils.PBE``): with ``avg=True`` each distance is
   divided by the running mean of all distances seen (``rms``, optional), then
   ``max(. - clip, 0)`` (``clip >= 0``; a negative clip disables it), then
   averaged over the k neighbours; with ``avg=False`` only the k-th distance is
   kept and normalised/clipped the same way.
2. **Transform** of ``R`` with the constant ``c > 0`` (default 1):

   * Shannon (APT): ``r = log(c + R)``.
   * BE (arXiv 2502.04141, Eq. 24, the per-sample BE term with the log
     stabilised as in APT): ``L = log(c + R)``,
     ``r = R * exp(-beta * L**alpha) * beta * L**alpha``.  For ``R -> 0`` it
     tends to 0.  ``beta=None`` means ``default_beta(alpha)`` (M = 512).
   * Rényi of order ``q != 1``: ``r = (c + R)**(1 - q) / (1 - q)``, the per-sample
     LPS term ``f_hat**(q - 1) ~ R**(d (1 - q))`` with ``d = 1`` and ``c`` added so
     that negative powers (q > 1) stay finite at ``R = 0``.  Increasing in R for
     every q; negative for q > 1 by construction.

With ``c >= 1`` Shannon and BE rewards are non-negative; every reward is
finite at ``R = 0``.  For ``c < 1`` and ``R < 1 - c``, ``L < 0`` and BE uses the
odd extension ``sign(L)|L|**alpha`` (:mod:`entropy.prelec`).

Deliberate differences from URLB: the constant ``c`` is configurable (URLB
hard-codes 1); the running mean is kept in float64 numpy and can be snapshotted
(``state_dict``); the statistic and transforms run on numpy arrays (torch
tensors are accepted and converted to CPU numpy).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

import numpy as np

from bex.core import ConfigBase, param

from .estimators import Q_MAX, check_q
from .prelec import ALPHA_MAX, check_alpha, check_beta, check_positive, default_beta, signed_power

OBJECTIVES = ("be", "renyi", "shannon")


def _as_array(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError("distances contain NaN or inf: only finite values are allowed")
    if np.any(a < 0):
        raise ValueError("distances contain negative values: allowed distances >= 0")
    return a


def _check_c(c: float) -> float:
    return check_positive("c", c)


class RunningMean:
    """Running mean (and variance) of a scalar stream, as URLB's ``utils.RMS``.

    ``update(x)`` folds a batch in and returns the new mean; the initial state is
    ``M = 0, S = 1, n = epsilon`` like URLB.  Only the mean is used by APT.
    """

    def __init__(self, epsilon: float = 1e-4) -> None:
        self.mean = 0.0
        self.var = 1.0
        self.count = float(epsilon)

    def update(self, x: np.ndarray) -> float:
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        bs = x.size
        if bs == 0:
            return self.mean
        delta = float(x.mean()) - self.mean
        batch_var = float(x.var(ddof=1)) if bs > 1 else 0.0  # torch.var default is unbiased
        tot = self.count + bs
        self.var = (self.var * self.count + batch_var * bs + delta ** 2 * self.count * bs / tot) / tot
        self.mean = self.mean + delta * bs / tot
        self.count = tot
        return self.mean

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), float(state["count"])


def knn_statistic(distances, *, avg: bool = True, rms: RunningMean | None = None,
                  clip: float = 0.0) -> np.ndarray:
    """APT's statistic ``R`` (shape ``(B,)``) from k-NN distances of shape ``(B, k)``.

    ``rms``: a :class:`RunningMean` to normalise by (updated in place), or None.
    ``clip``: ``R = max(R - clip, 0)`` per distance; a negative clip disables it.
    """
    d = _as_array(distances)
    if d.ndim == 1:
        d = d[:, None]
    if d.ndim != 2 or d.shape[1] < 1:
        raise ValueError(f"distances have shape {d.shape}: allowed (B, k) with k >= 1")
    x = d if avg else d[:, -1:]
    if rms is not None:
        m = rms.update(x)
        x = x / m
    if clip >= 0.0:
        x = np.maximum(x - clip, 0.0)
    return x.mean(axis=1)


def shannon_reward(stat, c: float = 1.0) -> np.ndarray:
    """APT's Shannon reward ``log(c + R)`` for a statistic ``R >= 0``."""
    return np.log(_check_c(c) + _as_array(stat))


def be_reward(stat, alpha: float, beta: float | None = None, c: float = 1.0) -> np.ndarray:
    """Behavioral-entropy reward ``R * exp(-beta L**alpha) * beta L**alpha``, ``L = log(c + R)``."""
    a = check_alpha(alpha)
    b = default_beta(a) if beta is None else check_beta(beta)
    r = _as_array(stat)
    lp = b * signed_power(np.log(_check_c(c) + r), a)
    return r * np.exp(-lp) * lp


def renyi_reward(stat, q: float, c: float = 1.0) -> np.ndarray:
    """Rényi reward ``(c + R)**(1 - q) / (1 - q)`` for ``0 < q <= 10, q != 1``."""
    qf = check_q(q)
    return (_check_c(c) + _as_array(stat)) ** (1.0 - qf) / (1.0 - qf)


def transform_reward(stat, objective: str, *, alpha: float = 1.0, beta: float | None = None,
                     q: float = 2.0, c: float = 1.0) -> np.ndarray:
    """Apply the transform of ``objective`` (``"be"``, ``"renyi"``, ``"shannon"``) to ``R``."""
    if objective == "be":
        return be_reward(stat, alpha, beta, c)
    if objective == "renyi":
        return renyi_reward(stat, q, c)
    if objective == "shannon":
        return shannon_reward(stat, c)
    raise ValueError(f"objective={objective!r} is unknown: allowed {', '.join(OBJECTIVES)}")


def knn_reward(distances, objective: str, *, alpha: float = 1.0, beta: float | None = None,
               q: float = 2.0, c: float = 1.0, avg: bool = True, clip: float = 0.0,
               rms: RunningMean | None = None) -> np.ndarray:
    """Rewards (shape ``(B,)``) from k-NN distances ``(B, k)``: statistic then transform.

    Stateless except for ``rms`` (pass a :class:`RunningMean` for APT's ``knn_rms``).
    """
    stat = knn_statistic(distances, avg=avg, rms=rms, clip=clip)
    return transform_reward(stat, objective, alpha=alpha, beta=beta, q=q, c=c)


@dataclass(frozen=True)
class RewardConfig(ConfigBase):
    """Typed configuration of a k-NN intrinsic reward (APT defaults from URLB ``icm_apt.yaml``).

    :class:`bex.actors.APTConfig` inherits these fields (its reward settings are this config's).
    """

    objective: str = param("be", "``\"be\"``, ``\"renyi\"`` or ``\"shannon\"``.", choices=OBJECTIVES)
    k: int = param(12, "Number of neighbours (URLB: 12; the BE paper uses 5-15).", lo=1)
    alpha: float = param(0.5, "Prelec alpha of BE, ``0 < alpha <= 10``.", lo=0.0, lo_open=True, hi=ALPHA_MAX)
    beta: float | None = param(None, "Prelec beta of BE; None means ``(log M)**(1 - alpha)``.", lo=0.0,
                               lo_open=True)
    M: int = param(512, "Size used by the default beta (the representation size).", lo=2)
    q: float = param(1.1, "Rényi order, ``0 < q <= 10``, ``q != 1`` (q = 1 is Shannon).", lo=0.0, lo_open=True,
                     hi=Q_MAX)
    c: float = param(1.0, "Constant inside the log / power, ``c > 0`` (URLB: 1).", lo=0.0, lo_open=True)
    avg: bool = param(True, "Average over the k distances (URLB ``knn_avg``) or keep the k-th only.")
    rms: bool = param(False, "Divide distances by their running mean (URLB ``knn_rms``).")
    clip: float = param(0.0, "``max(R - clip, 0)`` per distance (URLB ``knn_clip``); negative disables.")
    include_self: bool = param(True, "Batch mode only: count the point's own zero distance among the k (URLB does).")

    def check(self) -> None:
        if self.q == 1.0:
            raise ValueError(f"{type(self).__name__}.q=1.0 is out of range: allowed 0 < q <= {Q_MAX:g} and q != 1 "
                             "(q = 1 is Shannon: use objective shannon)")

    @property
    def resolved_beta(self) -> float:
        """``beta``, or the default ``(log M)**(1 - alpha)`` when it is None."""
        return default_beta(self.alpha, self.M) if self.beta is None else float(self.beta)

    def reward_config(self) -> "RewardConfig":
        """The reward settings alone (for a subclass such as :class:`bex.actors.APTConfig`)."""
        return RewardConfig(**{f.name: getattr(self, f.name) for f in fields(RewardConfig)})


class KnnRewardTransform:
    """Stateful reward transform for one stream: holds the running mean of ``rms``.

    ``transform(distances)`` -> rewards of shape ``(B,)``.  ``state_dict`` /
    ``load_state_dict`` round-trip the running mean (the ``KnnService`` snapshots it).
    """

    def __init__(self, config: RewardConfig | Mapping[str, Any]) -> None:
        self.config = config if isinstance(config, RewardConfig) else RewardConfig.from_dict(config)
        self.rms = RunningMean() if self.config.rms else None

    def __call__(self, distances) -> np.ndarray:
        cfg = self.config
        return knn_reward(distances, cfg.objective, alpha=cfg.alpha, beta=cfg.resolved_beta, q=cfg.q,
                          c=cfg.c, avg=cfg.avg, clip=cfg.clip, rms=self.rms)

    def state_dict(self) -> dict[str, Any]:
        return {"rms": None if self.rms is None else self.rms.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.rms is not None and state.get("rms") is not None:
            self.rms.load_state_dict(state["rms"])
