"""Prelec probability weighting and the default beta of behavioral entropy.

Behavioral entropy (BE; Suresh et al., arXiv 2502.04141, building on the
discrete BE of arXiv 2402.10161) replaces each probability ``p`` by its Prelec
weight ``w(p) = exp(-beta * (-log p)**alpha)`` with ``alpha, beta > 0``.
``beta`` is coupled to ``alpha`` by default as ``beta = (log M)**(1 - alpha)``,
which makes ``w(1/M) = 1/M`` (``M = 512``, the representation size, as in the BE
paper).

Deliberate extension: for ``p > 1`` (only reachable for densities, or for
noisy density estimates) ``-log p < 0`` and ``(-log p)**alpha`` is complex for
non-integer alpha.  bex uses the odd extension ``sign(u) * |u|**alpha`` there
(:func:`signed_power`), which is exact for ``alpha = 1`` and continuous at
``p = 1``.
"""
from __future__ import annotations

import math

import numpy as np

ALPHA_MAX = 10.0


def check_alpha(alpha: float) -> float:
    """Return ``alpha`` as float or raise ``ValueError`` unless ``0 < alpha <= 10``."""
    a = float(alpha)
    if not (0.0 < a <= ALPHA_MAX):
        raise ValueError(f"alpha={alpha!r} is out of range: allowed 0 < alpha <= {ALPHA_MAX:g}")
    return a


def check_positive(name: str, value: float) -> float:
    """Return ``value`` as float or raise ``ValueError`` naming ``name`` unless it is finite and > 0."""
    v = float(value)
    if not (v > 0.0 and math.isfinite(v)):
        raise ValueError(f"{name}={value!r} is out of range: allowed finite {name} > 0")
    return v


def check_beta(beta: float) -> float:
    """Return ``beta`` as float or raise ``ValueError`` unless it is finite and > 0."""
    return check_positive("beta", beta)


def default_beta(alpha: float, M: int = 512) -> float:
    """``(log M)**(1 - alpha)``: the beta for which ``w(1/M) = 1/M`` (arXiv 2402.10161)."""
    a = check_alpha(alpha)
    if int(M) < 2:
        raise ValueError(f"M={M!r} is out of range: allowed integer M >= 2")
    return float(math.log(int(M)) ** (1.0 - a))


def signed_power(u: np.ndarray, alpha: float) -> np.ndarray:
    """``sign(u) * |u|**alpha`` elementwise (the odd extension of ``u**alpha``)."""
    u = np.asarray(u, dtype=np.float64)
    return np.sign(u) * np.abs(u) ** alpha


def prelec_weight(p, alpha: float, beta: float | None = None) -> np.ndarray:
    """Prelec weight ``w(p) = exp(-beta * (-log p)**alpha)`` for ``p > 0``.

    ``beta=None`` uses :func:`default_beta`.  ``w(0) = 0`` and ``w(1) = 1``;
    for ``p > 1`` the odd extension of the power is used (module docstring).
    """
    a = check_alpha(alpha)
    b = default_beta(a) if beta is None else check_beta(beta)
    p = np.asarray(p, dtype=np.float64)
    if np.any(p < 0) or np.any(np.isnan(p)):
        raise ValueError("p must be >= 0 and not NaN: probabilities or densities are allowed")
    with np.errstate(divide="ignore"):
        u = -np.log(p)
    return np.exp(-b * signed_power(u, a))
