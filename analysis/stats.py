"""The statistics behind every comparison bex prints: Welch intervals of pooled differences, Holm's family-wise
control, minimum detectable differences and the seeds a difference needs, per-task aggregates.

**The unit of replication.** A cell is one (dataset, task, learner).  Its values are independent runs: a
training seed's score, or, when a dataset was collected with several collection seeds, a collection seed's
score (the mean over its training seeds), so that both levels of randomness - which data the explorer happened
to collect, and which learner seed trained on it - are in the spread (a two-stage design; its coverage is
checked by simulation in ``tests/test_stats.py``).

**A pooled difference** of dataset A against dataset B over cells ``t = 1..T`` (the tasks of one learner) is
``D = (1/T) Σ_t (mean A_t − mean B_t)``, in a declared unit (:mod:`.units`).  Its standard error is
``se = (1/T) sqrt(Σ_t s²_{A,t}/n_{A,t} + s²_{B,t}/n_{B,t})`` with sample variances (ddof 1), and its degrees
of freedom are Welch–Satterthwaite's over the 2T variance terms; the interval is ``D ± t_{1−γ/2, df} · se``.
Welch's t holds its coverage for unequal variances and small n where the percentile bootstrap does not (3 seeds
give 10 distinct resamples and a standard error too small by √(2/3)); Colas et al. 2019.  A cell with fewer
than 2 runs of either dataset has no spread to judge by: no interval.

**Family-wise error.** The primary claims of a run are one family; :func:`holm` gives Holm's step-down
verdicts (family-wise error ≤ α), and each claim's *adjusted interval* is at the level of the step that decided
it (``1 − α/(m − i + 1)`` at step ``i``; the claims after the step where Holm stops get that step's level), so a
verdict is "held" exactly when its adjusted interval lies above 0 and "not held" when it lies below.

**Power.** The minimum detectable difference of a comparison (80 % power, two-sided, at the Bonferroni level
α/m so that it does not depend on the data's order) is ``(t_{1−α/(2m), df} + t_{0.8, df}) · se``; ``seeds_for``
gives the runs per cell that a target difference needs at the observed spreads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as st


@dataclass(frozen=True)
class Summary:
    """A cell's runs as mean, sample variance (ddof 1; NaN with one run) and count."""

    mean: float
    var: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> "Summary":
        x = np.asarray(values, float)
        return cls(float(x.mean()) if len(x) else math.nan, float(x.var(ddof=1)) if len(x) > 1 else math.nan,
                   len(x))

    @property
    def sd(self) -> float:
        return math.sqrt(self.var) if self.n > 1 else math.nan


def welch_df(terms: Sequence[float], ns: Sequence[int]) -> float:
    """Welch–Satterthwaite degrees of freedom of a sum of independent variance terms ``s²_i/n_i``."""
    terms, ns = np.asarray(terms, float), np.asarray(ns, float)
    den = float(np.sum(terms ** 2 / (ns - 1)))
    return float(np.sum(terms)) ** 2 / den if den > 0 else math.inf


def pooled_difference(pairs: Sequence[tuple[Summary, Summary]], level: float = 0.95) -> dict:
    """``{value, se, df, lo, hi, p, t}`` of ``(1/T) Σ (A_t − B_t)`` over the cells ``pairs`` (A, B summaries);
    ``lo``/``hi`` are None where some cell has fewer than 2 runs of either side (no spread to judge by)."""
    if not pairs:
        raise ValueError("a pooled difference needs at least one cell")
    T = len(pairs)
    value = sum(a.mean - b.mean for a, b in pairs) / T
    if any(a.n < 2 or b.n < 2 for a, b in pairs):
        return {"value": value, "se": None, "df": None, "lo": None, "hi": None, "p": None, "t": None, "cells": T}
    terms = [x.var / x.n / T ** 2 for a, b in pairs for x in (a, b)]
    ns = [x.n for a, b in pairs for x in (a, b)]
    se = math.sqrt(sum(terms))
    df = welch_df(terms, ns)
    if se == 0:
        p = 0.0 if value != 0 else 1.0
        return {"value": value, "se": 0.0, "df": df, "lo": value, "hi": value, "p": p, "t": math.copysign(math.inf,
                value) if value else 0.0, "cells": T}
    q = float(st.t.ppf(0.5 + level / 2, df))
    t = value / se
    return {"value": value, "se": se, "df": df, "lo": value - q * se, "hi": value + q * se,
            "p": float(2 * st.t.sf(abs(t), df)), "t": t, "cells": T}


def interval_at(d: dict, level: float) -> tuple[float | None, float | None]:
    """The interval of a :func:`pooled_difference` result at another confidence ``level``."""
    if d.get("se") is None:
        return None, None
    q = float(st.t.ppf(0.5 + level / 2, d["df"]))
    return d["value"] - q * d["se"], d["value"] + q * d["se"]


def holm(pvalues: Sequence[float | None], alpha: float = 0.05) -> tuple[list[bool], list[float]]:
    """Holm's step-down test of a family: (rejected, the test level each hypothesis was judged at).

    A None p-value (no interval) is never rejected and counts in the family's size ``m``."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: (pvalues[i] is None, pvalues[i] if pvalues[i] is not None else 0.0))
    rejected, levels = [False] * m, [alpha / m if m else alpha] * m
    stopped = None
    for step, i in enumerate(order):
        thr = alpha / (m - step)
        if stopped is None and pvalues[i] is not None and pvalues[i] <= thr:
            rejected[i], levels[i] = True, thr
            continue
        if stopped is None:
            stopped = thr
        levels[i] = stopped
    return rejected, levels


def verdict(d: dict, rejected: bool) -> str:
    """``held`` (the difference is positive), ``not held`` (a significant reversal) or ``inconclusive``."""
    if not rejected or d.get("se") is None:
        return "inconclusive"
    return "held" if d["value"] > 0 else "not held"


def mdd(se: float | None, df: float | None, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """The smallest true difference detected with probability ``power`` by a two-sided test at level ``alpha``."""
    if se is None or df is None:
        return None
    return (float(st.t.ppf(1 - alpha / 2, df)) + float(st.t.ppf(power, df))) * se


def seeds_for(pairs: Sequence[tuple[Summary, Summary]], target: float, alpha: float = 0.05, power: float = 0.8,
              most: int = 10_000) -> int | None:
    """Runs per dataset and cell at which the minimum detectable difference of ``pairs``' pooled difference
    falls to ``target``, at the observed variances (None: a cell without spread, or more than ``most``)."""
    if any(a.n < 2 or b.n < 2 for a, b in pairs) or target <= 0:
        return None
    T = len(pairs)
    var = [x.var / T ** 2 for a, b in pairs for x in (a, b)]
    lo, hi = 2, most
    if _mdd_at(var, hi, alpha, power) > target:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if _mdd_at(var, mid, alpha, power) <= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _mdd_at(var: Sequence[float], n: int, alpha: float, power: float) -> float:
    terms = [v / n for v in var]
    return mdd(math.sqrt(sum(terms)), welch_df(terms, [n] * len(terms)), alpha, power)


def iqm(x: Sequence[float]) -> float:
    """Interquartile mean (rliable's IQM: the mean of the middle 50 %, fractional ends weighted)."""
    return float(st.trim_mean(np.asarray(x, float), 0.25))


def aggregate(by_task: dict[str, Sequence[float]], stat=iqm, reps: int = 2000, seed: int = 0,
              level: float = 0.95) -> dict:
    """``stat`` of each task's runs, then their mean (every task weighs the same), with a stratified bootstrap
    interval (runs resampled within each task; rliable's scheme applied per task)."""
    tasks = sorted(by_task)
    xs = [np.asarray(by_task[t], float) for t in tasks]
    value = float(np.mean([stat(x) for x in xs]))
    rng = np.random.default_rng(seed)
    boot = np.zeros(reps)
    for x in xs:
        idx = rng.integers(0, len(x), (reps, len(x)))
        boot += np.array([stat(x[i]) for i in idx])
    boot /= len(xs)
    a = (1 - level) / 2
    return {"value": value, "lo": float(np.quantile(boot, a)), "hi": float(np.quantile(boot, 1 - a)),
            "per_task": {t: stat(x) for t, x in zip(tasks, xs)}}


__all__ = ["Summary", "welch_df", "pooled_difference", "interval_at", "holm", "verdict", "mdd", "seeds_for",
           "iqm", "aggregate"]
