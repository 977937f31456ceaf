"""The BE paper's claims on a table of trial scores: the primary claims and their verdicts, the exploratory
comparisons with their intervals, and open question 4.

**Primary claims** are declared before a run (a replication config's ``claims:``; by default the paper's
headline: BE α 0.5 gives higher returns than Shannon, RND and SMM, in each k-NN mode present: batch-mode
``be/0.5`` against ``shannon``, recent-mode ``be-recent/0.5`` against ``shannon-recent``, both against ``rnd``
and ``smm``).  Each is a pooled difference A − B over the tasks where both datasets have runs, one per learner,
in the declared unit (:mod:`.units`), with a Welch interval (:mod:`.stats`).  The primary claims are one family:
Holm's step-down test keeps the family-wise error ≤ α; ``held`` when the adjusted interval lies above 0, ``not
held`` when it lies below 0 (a significant reversal), otherwise ``inconclusive``.  Each primary claim also
carries its minimum detectable difference (80 % power at the Bonferroni level α/m) and the runs per cell a
target difference would need.

**Exploratory** (reported with a 95 % interval, never a verdict): each primary claim per task; every other
BE row against every rival; a best-of-family comparison ("some α beats B") whose interval is Bonferroni-
corrected over the family's rows (max over k rows at level 1 − 0.05/k: picking the best α on the same data is
selection, and the correction pays for it); coverage comparisons from ``bex coverage`` figures.

The rules used before (percentile bootstrap over 3 seeds, best α picked per cell on means, "not held" from one
cell, no correction over 14 claims) gave a verdict in ~60 % of simulated replications with every dataset
equally good; ``tests/test_stats.py`` shows it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from bex.core import ConfigBase, param

from .stats import Summary, holm, interval_at, mdd, pooled_difference, seeds_for, verdict
from .units import normalised


@dataclass(frozen=True)
class ClaimSpec(ConfigBase):
    """One primary claim: dataset row ``a`` gives higher returns than dataset row ``b`` (pooled over tasks)."""

    a: str = param(doc="dataset row claimed better (e.g. be-recent/0.5)")
    b: str = param(doc="dataset row it is compared with (e.g. rnd)")
    learner: str | None = param(None, "one learner column (None: each learner with runs on both)")
    figure: str | None = param(None, "a coverage figure (e.g. shannon): the claim is 'a covers more than b', "
                               "judged over collection seeds (one coverage file per shard)")


def family(row: str) -> str:
    """``be/0.5`` -> ``be``; ``be-recent/5`` -> ``be-recent``; ``rnd`` -> ``rnd``."""
    return row.split("/", 1)[0]


def alpha_of(row: str) -> float | None:
    try:
        return float(row.split("/", 1)[1])
    except (IndexError, ValueError):
        return None


def rows_of(rows: Sequence[str], fam: str) -> list[str]:
    return [r for r in rows if family(r) == fam]


def default_claims(rows: Sequence[str], alpha: float = 0.5) -> list[ClaimSpec]:
    """The paper's headline as primary claims: BE α ``alpha`` against Shannon, RND and SMM in each k-NN mode."""
    out = []
    for mode in ("", "-recent"):
        be = next((r for r in rows_of(rows, "be" + mode) if alpha_of(r) == alpha), None)
        if be is None:
            continue
        out += [ClaimSpec(a=be, b=b) for b in ("shannon" + mode, "rnd", "smm") if b in rows]
    return out


class Table:
    """Trial scores by cell: ``values[(dataset, task, learner)]`` (raw returns, one per unit)."""

    def __init__(self, values: dict[tuple[str, str, str], list[float]]):
        self.values = values
        self.rows = sorted({d for d, _, _ in values})
        self.tasks = sorted({t for _, t, _ in values})
        self.learners = sorted({lr for _, _, lr in values})

    def summary(self, dataset: str, task: str, learner: str, unit: bool = True) -> Summary | None:
        v = self.values.get((dataset, task, learner))
        if not v:
            return None
        return Summary.of([normalised(x, task) for x in v] if unit else v)

    def pairs(self, a: str, b: str, learner: str) -> tuple[list[str], list[tuple[Summary, Summary]]]:
        """The tasks where both rows have runs with ``learner``, and their (A, B) summaries in the unit."""
        tasks = [t for t in self.tasks if self.values.get((a, t, learner)) and self.values.get((b, t, learner))]
        return tasks, [(self.summary(a, t, learner), self.summary(b, t, learner)) for t in tasks]


def _diff_row(claim: str, d: dict, **extra) -> dict:
    return {"claim": claim, **{k: d.get(k) for k in ("value", "lo", "hi", "se", "df", "p", "cells")}, **extra}


def primary_claims(tab: Table, specs: Sequence[ClaimSpec], alpha: float = 0.05, target: float = 0.05,
                   cov: dict[str, dict] | None = None) -> list[dict]:
    """Every primary claim (× learner) with its verdict, adjusted interval, power and per-task differences.  A
    coverage claim (``figure``) compares the figure's values over collection seeds (``cov[row][figure]
    ["values"]``, one per shard: :func:`bex.analysis.analyze.combine_coverage`), in the figure's own unit."""
    units = []
    for spec in specs:
        if spec.figure is not None:
            va, vb = (_figure_values((cov or {}).get(r, {}).get(spec.figure)) for r in (spec.a, spec.b))
            if va and vb:  # one shard: one value each, no interval, inconclusive (still one of the family)
                units.append((spec, None, [spec.figure], [(Summary.of(va), Summary.of(vb))]))
            continue
        for learner in ([spec.learner] if spec.learner else tab.learners):
            tasks, pairs = tab.pairs(spec.a, spec.b, learner)
            if pairs:
                units.append((spec, learner, tasks, pairs))
    m = len(units)
    if not m:
        return []
    diffs = [pooled_difference(pairs) for _, _, _, pairs in units]
    rejected, levels = holm([d["p"] for d in diffs], alpha)
    out = []
    for (spec, learner, tasks, pairs), d, rej, lvl in zip(units, diffs, rejected, levels):
        lo, hi = interval_at(d, 1 - lvl)
        per_task = [{"task": t, **{k: v for k, v in pooled_difference([p]).items() if k in ("value", "lo", "hi")}}
                    for t, p in zip(tasks, pairs)]
        claim = (f"{spec.a} covers more than {spec.b} ({spec.figure}, over {pairs[0][0].n} collection seed(s))"
                 if spec.figure else
                 f"{spec.a} gives higher returns than {spec.b} ({learner}, pooled over {len(tasks)} task(s))")
        out.append(_diff_row(
            claim, d,
            primary=True, a=spec.a, b=spec.b, learner=learner, tasks=tasks, verdict=verdict(d, rej),
            adjusted={"level": 1 - lvl, "lo": lo, "hi": hi}, interval_95={"lo": d["lo"], "hi": d["hi"]},
            mdd=mdd(d["se"], d["df"], alpha / m), seeds_for_target={"target": target,
                                                                       "runs": seeds_for(pairs, target, alpha / m)},
            runs=min(min(a.n, b.n) for a, b in pairs), per_task=per_task))
    return out


def _figure_values(f: dict | None) -> list[float]:
    """A coverage figure's values over collection seeds (one per shard), or its one value."""
    if not isinstance(f, dict):
        return []
    if f.get("values"):
        return [float(v) for v in f["values"]]
    return [float(f["value"])] if isinstance(f.get("value"), (int, float)) and np.isfinite(f["value"]) else []


def exploratory_returns(tab: Table, primary: Sequence[dict]) -> list[dict]:
    """Every BE row against every rival row, per learner, and each BE family's best row against each rival with
    a Bonferroni interval over the family's rows; 95 % unadjusted intervals, no verdicts."""
    done = {(c["a"], c["b"], c["learner"]) for c in primary if c["learner"]}
    rivals = [r for r in tab.rows if family(r) not in ("be", "be-recent")]
    out = []
    for learner in tab.learners:
        for fam in ("be", "be-recent"):
            be = rows_of(tab.rows, fam)
            for b in rivals:
                fam_rows = []
                for a in be:
                    tasks, pairs = tab.pairs(a, b, learner)
                    if not pairs:
                        continue
                    d = pooled_difference(pairs)
                    fam_rows.append((a, d))
                    if (a, b, learner) not in done:
                        out.append(_diff_row(f"{a} − {b} ({learner}, {len(tasks)} task(s))", d, primary=False,
                                             a=a, b=b, learner=learner))
                if len(fam_rows) > 1:
                    a, d = max(fam_rows, key=lambda x: x[1]["value"])
                    lo, hi = interval_at(d, 1 - 0.05 / len(fam_rows))
                    out.append({**_diff_row(f"best of {len(fam_rows)} {fam} rows ({a}) − {b} ({learner}); "
                                            f"Bonferroni over the rows", d, primary=False, a=a, b=b,
                                            learner=learner), "lo": lo, "hi": hi,
                                "level": 1 - 0.05 / len(fam_rows)})
    return out


def finite_figure(cov: dict[str, dict], row: str, figure: str) -> dict | None:
    """``row``'s coverage ``figure`` when it has a finite value (a BE estimate with α > 1 is −inf, stored as
    null, when some state's k-NN density exceeds 1)."""
    f = cov.get(row, {}).get(figure)
    ok = isinstance(f, dict) and isinstance(f.get("value"), (int, float)) and np.isfinite(f["value"])
    return f if ok else None


def exploratory_coverage(rows: Sequence[str], cov: dict[str, dict], figures: Sequence[str]) -> list[dict]:
    """BE rows against every rival, and consecutive α of a BE family, on each coverage figure: both values with
    their intervals and whether the intervals are disjoint (descriptive; the intervals are per dataset)."""
    out = []
    for fig in figures:
        for fam in ("be", "be-recent"):
            be = sorted((r for r in rows_of(rows, fam) if finite_figure(cov, r, fig)), key=lambda r: alpha_of(r) or 0)
            for a in be:
                for b in rows:
                    if family(b) in ("be", "be-recent") or not finite_figure(cov, b, fig):
                        continue
                    out.append(_cov_row(f"{a} covers more than {b} ({fig})", cov[a][fig], cov[b][fig]))
            for a, b in zip(be, be[1:]):
                out.append(_cov_row(f"{a} covers more than {b} ({fig}; lower α broader)", cov[a][fig], cov[b][fig]))
    return out


def _cov_row(claim: str, fa: dict, fb: dict) -> dict:
    apart = "above" if fa["lo"] > fb["hi"] else "below" if fa["hi"] < fb["lo"] else "overlapping"
    return {"claim": claim, "primary": False, "a_figure": fa, "b_figure": fb, "intervals": apart}


LOWER_IS_BETTER = frozenset({"near_static"})  # coverage figures where a smaller value means broader data


def statistic_picks_alpha(tab: Table, cov: dict[str, dict], fam: str, figures: Sequence[str]) -> list[dict]:
    """Open question 4: per task and learner, does the α that maximises a pre-training statistic have the best
    mean score?  (Exploratory: the best α is a pick on point means.)"""
    rows = [r for r in rows_of(tab.rows, fam) if alpha_of(r) is not None]
    out = []
    for fig in figures:
        have = [r for r in rows if finite_figure(cov, r, fig)]
        if len(have) < 2:
            continue
        better = min if fig in LOWER_IS_BETTER else max
        pick = better(have, key=lambda r: cov[r][fig]["value"])
        for t in tab.tasks:
            for learner in tab.learners:
                scored = [r for r in rows if tab.values.get((r, t, learner))]
                if len(scored) < 2:
                    continue
                best = max(scored, key=lambda r: np.mean(tab.values[(r, t, learner)]))
                out.append({"figure": fig, "task": t, "learner": learner, "picked": alpha_of(pick),
                            "best": alpha_of(best), "agree": pick == best})
    return out


__all__ = ["ClaimSpec", "Table", "family", "alpha_of", "rows_of", "default_claims", "primary_claims",
           "exploratory_returns", "exploratory_coverage", "finite_figure", "statistic_picks_alpha"]
