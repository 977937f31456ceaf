"""The statistics of bex's comparisons: hand-computed values, and simulations with a known truth that show the
intervals hold their coverage and the family of primary claims its error rate (docs/replication.md, "Verdict
rules", quotes these figures).  A smaller simulation shows the rules used before (percentile bootstrap over
seeds, best row per cell, "not held" from one cell) fail the same test, so the test can fail."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from bex.analysis.stats import Summary, aggregate, holm, iqm, mdd, pooled_difference, seeds_for, verdict, welch_df

#: The walker replication's cell SDs (results.md, return/1000; its ddof-0 SDs × √(3/2)), one per dataset × task.
WALKER_SDS = np.array([9.9, 48.5, 90.3, 16.3, 53.3, 41.5, 33.3, 156.1, 6.3, 14.5, 146.6, 32.1, 9.2, 15.2, 44.4,
                       4.2, 4.3, 9.9, 20.4, 43.1, 49.0, 8.3, 18.1, 94.6, 25.3, 42.3, 114.3, 5.4, 88.3, 5.1, 19.7,
                       25.6, 36.8, 7.1, 50.1, 27.0]) / 1000 * math.sqrt(3 / 2)

#: The primary family: BE α 0.5 against Shannon, RND and SMM in each k-NN mode (datasets 0..5, 6 = random).
FAMILY = [(0, 2), (0, 4), (0, 5), (1, 3), (1, 4), (1, 5)]


def test_pooled_difference_by_hand():
    a1, b1 = Summary.of([1.0, 2.0, 3.0]), Summary.of([0.0, 1.0])   # means 2, 0.5; variances 1, 0.5
    a2, b2 = Summary.of([4.0, 6.0]), Summary.of([1.0, 2.0, 3.0, 6.0])  # means 5, 3; variances 2, 14/3
    d = pooled_difference([(a1, b1), (a2, b2)], level=0.9)
    terms = [1 / 3 / 4, 0.5 / 2 / 4, 2 / 2 / 4, (14 / 3) / 4 / 4]
    se = math.sqrt(sum(terms))
    df = sum(terms) ** 2 / (terms[0] ** 2 / 2 + terms[1] ** 2 / 1 + terms[2] ** 2 / 1 + terms[3] ** 2 / 3)
    assert d["value"] == pytest.approx((1.5 + 2.0) / 2)
    assert d["se"] == pytest.approx(se) and d["df"] == pytest.approx(df)
    q = st.t.ppf(0.95, df)
    assert (d["lo"], d["hi"]) == pytest.approx((1.75 - q * se, 1.75 + q * se))
    assert d["p"] == pytest.approx(2 * st.t.sf(1.75 / se, df))
    # one run in a cell: no spread to judge by
    assert pooled_difference([(Summary.of([1.0]), b1)])["lo"] is None


def test_welch_df_of_two_equal_groups_is_the_pooled_df():
    assert welch_df([0.5, 0.5], [5, 5]) == pytest.approx(8.0)


def test_holm_by_hand():
    rejected, levels = holm([0.01, 0.04, 0.03, 0.2], alpha=0.05)
    # sorted: 0.01 <= 0.05/4 -> reject; 0.03 > 0.05/3 -> stop; every later claim judged at 0.05/3
    assert rejected == [True, False, False, False]
    assert levels == pytest.approx([0.0125, 0.05 / 3, 0.05 / 3, 0.05 / 3])
    assert holm([0.001, 0.02, None], 0.05)[0] == [True, True, False]  # 0.02 <= 0.05/2
    assert holm([0.001, 0.03, None], 0.05)[0] == [True, False, False]
    assert holm([0.001, 0.02], 0.05)[0] == [True, True]


def test_verdicts_follow_the_sign_of_a_rejected_difference():
    assert verdict({"value": 0.1, "se": 0.01}, True) == "held"
    assert verdict({"value": -0.1, "se": 0.01}, True) == "not held"
    assert verdict({"value": 0.1, "se": 0.01}, False) == "inconclusive"


def test_minimum_detectable_difference_and_seeds_by_hand():
    # two groups of n = 10, sd 1, one cell: se = sqrt(2/10), df = 18
    s = Summary(0.0, 1.0, 10)
    d = pooled_difference([(s, s)])
    want = (st.t.ppf(0.975, 18) + st.t.ppf(0.8, 18)) * math.sqrt(0.2)
    assert mdd(d["se"], d["df"]) == pytest.approx(want)
    # the normal-approximation rule of thumb 2.8 σ √(2/n) is close for large n
    n = seeds_for([(s, s)], target=2.8 * math.sqrt(2 / 50) * 1.02)
    assert 48 <= n <= 52
    assert seeds_for([(s, s)], target=mdd(d["se"], d["df"])) == 10


def test_iqm_and_the_per_task_aggregate():
    assert iqm([1, 2, 3, 4]) == pytest.approx(2.5)
    assert iqm([0, 0, 1, 1, 1, 1, 1, 100]) == pytest.approx(1.0)
    agg = aggregate({"stand": [0.4, 0.4, 0.4, 0.4], "run": [0.0, 0.0, 0.0, 0.0]}, reps=200)
    assert agg["value"] == pytest.approx(0.2) and agg["lo"] == pytest.approx(0.2) and agg["hi"] == pytest.approx(0.2)


# ------------------------------------------------------------------------------------------------ simulations
def _judge(runs: list[list[np.ndarray]]) -> tuple[list[bool], bool]:
    """runs[dataset][task] -> values.  Coverage of each primary claim's 95 % interval (truth 0) and whether Holm
    gives any verdict."""
    covered, ps = [], []
    for a, b in FAMILY:
        d = pooled_difference([(Summary.of(runs[a][t]), Summary.of(runs[b][t])) for t in range(len(runs[a]))])
        if d["lo"] is not None:
            covered.append(d["lo"] <= 0 <= d["hi"])
        ps.append(d["p"])
    return covered, any(holm(ps, 0.05)[0])


def _simulate(draw, reps: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    cov, any_verdict = [], 0
    for _ in range(reps):
        c, v = _judge(draw(rng))
        cov += c
        any_verdict += v
    return float(np.mean(cov)), any_verdict / reps


def _equal(rng, n=3, tasks=3, sd=0.05):
    return [[rng.normal(0.3, sd, n) for _ in range(tasks)] for _ in range(7)]


def _walker_spreads(rng, n=3, tasks=3):
    return [[rng.normal(0.3, rng.choice(WALKER_SDS), n) for _ in range(tasks)] for _ in range(7)]


def _missing(rng, n=5, tasks=3):
    out = []
    for _ in range(7):
        cells = []
        for _ in range(tasks):
            x = rng.normal(0.3, rng.choice(WALKER_SDS), n)
            cells.append(x[rng.random(n) >= 0.25])
        out.append(cells)
    return out


def _two_level(rng, collections=3, seeds=3, tasks=3):
    """7 datasets × 3 collection seeds × 3 training seeds: a collection's own offset (what it happened to
    collect) plus training noise; the unit is the collection seed (mean over its training seeds)."""
    out = []
    for _ in range(7):
        cells = []
        for _ in range(tasks):
            sd_c, sd_t = rng.choice(WALKER_SDS), rng.choice(WALKER_SDS)
            offsets = rng.normal(0.3, sd_c, collections)
            cells.append(np.array([rng.normal(o, sd_t, seeds).mean() for o in offsets]))
        out.append(cells)
    return out


@pytest.mark.parametrize("name,draw,reps", [("equal", _equal, 600), ("walker spreads", _walker_spreads, 600),
                                            ("25 % missing", _missing, 400), ("two levels", _two_level, 400)])
def test_intervals_hold_their_coverage_and_the_family_its_error_rate(name, draw, reps):
    """With every dataset drawn from one distribution: nominal 95 % intervals cover the truth (0) ≥ 93 % of the
    time and ≤ 6.5 % of replications give any held / not held verdict (2000 replications over the four cases)."""
    coverage, any_verdict = _simulate(draw, reps, seed=len(name))
    assert coverage >= 0.93, (name, coverage)
    assert any_verdict <= 0.065, (name, any_verdict)


def _old_rules(runs: list[list[np.ndarray]], rng) -> tuple[list[bool], bool]:
    """The rules before: per cell the best of three BE rows (α picked on means) against one rival, a percentile
    bootstrap over seeds pooled over cells, "held" when every cell wins and the interval is above 0, "not held"
    when one lost cell loses by two standard errors; each claim at a nominal 95 %, no correction."""
    covered, fired = [], False
    be, rivals = [0, 1, 6], [2, 3, 4, 5]
    tasks = len(runs[0])
    for b in rivals:
        diffs, boot, cells = [], np.zeros(300), []
        for t in range(tasks):
            a = max(be, key=lambda r: runs[r][t].mean())
            xa, xb = runs[a][t], runs[b][t]
            d = xa.mean() - xb.mean()
            se = math.sqrt(xa.var(ddof=1) / len(xa) + xb.var(ddof=1) / len(xb))
            cells.append((d, se))
            diffs.append(d)
            boot += rng.choice(xa, (300, len(xa))).mean(1) - rng.choice(xb, (300, len(xb))).mean(1)
        boot /= tasks
        lo, hi = np.percentile(boot, [2.5, 97.5])
        covered.append(lo <= 0 <= hi)
        wins = sum(d > 0 for d in diffs)
        held = wins == tasks and lo > 0
        not_held = wins < tasks and (any(d < -2 * se for d, se in cells) or hi < 0)
        fired |= held or not_held
    return covered, fired


def test_the_rules_used_before_fail_the_same_test():
    rng = np.random.default_rng(1)
    cov, fired = [], 0
    for _ in range(300):
        c, f = _old_rules(_walker_spreads(rng), rng)
        cov += c
        fired += f
    assert np.mean(cov) < 0.93 and fired / 300 > 0.065, (np.mean(cov), fired / 300)
