"""The claims: the default primary family, exploratory comparisons without verdicts, open question 4 (hand-made
tables; the primary verdicts against hand computations are in test_analyze.py)."""
from __future__ import annotations

import pytest

from bex.analysis.claims import (
    Table,
    default_claims,
    exploratory_coverage,
    exploratory_returns,
    primary_claims,
    statistic_picks_alpha,
)
from bex.analysis.stats import interval_at, pooled_difference

S, W = "walker_stand", "walker_walk"


def _tab(cells: dict) -> Table:
    """``{(row, task): values}`` with one learner, td3."""
    return Table({(r, t, "td3"): v for (r, t), v in cells.items()})


def _fig(v, w=0.1):
    return {"value": v, "lo": v - w, "hi": v + w}


def test_the_default_family_is_be_alpha_half_against_shannon_rnd_smm_in_each_mode():
    rows = ["be-recent/0.5", "be-recent/5", "be/0.5", "be/1.5", "random", "renyi/1.1", "rnd", "shannon",
            "shannon-recent", "smm"]
    assert [(c.a, c.b) for c in default_claims(rows)] == [
        ("be/0.5", "shannon"), ("be/0.5", "rnd"), ("be/0.5", "smm"),
        ("be-recent/0.5", "shannon-recent"), ("be-recent/0.5", "rnd"), ("be-recent/0.5", "smm")]
    assert default_claims(["be/5", "shannon"]) == []  # no α 0.5: no headline claim to make


def test_best_of_family_is_exploratory_with_a_bonferroni_interval_over_the_rows():
    tab = _tab({("be/0.5", S): [500, 510, 505], ("be/5", S): [600, 610, 605], ("shannon", S): [400, 410, 405],
                ("be/0.5", W): [200, 210, 205], ("be/5", W): [400, 410, 405], ("shannon", W): [300, 310, 305]})
    prim = primary_claims(tab, default_claims(tab.rows))
    assert [(c["a"], c["b"]) for c in prim] == [("be/0.5", "shannon")]
    expl = exploratory_returns(tab, prim)
    assert all(not c["primary"] and "verdict" not in c for c in expl)
    (best,) = [c for c in expl if c["claim"].startswith("best of 2 be rows")]
    assert best["a"] == "be/5" and best["level"] == pytest.approx(0.975)
    d = pooled_difference([(tab.summary("be/5", t, "td3"), tab.summary("shannon", t, "td3")) for t in (S, W)])
    assert (best["lo"], best["hi"]) == pytest.approx(interval_at(d, 0.975))
    # the primary comparison is not repeated among the exploratory ones; be/5 − shannon is
    assert not any(c["claim"].startswith("be/0.5 − shannon") for c in expl)
    assert any(c["claim"].startswith("be/5 − shannon") for c in expl)


def test_coverage_comparisons_say_whether_the_intervals_are_apart():
    cov = {"be/0.5": {"shannon": _fig(3.0)}, "be/5": {"shannon": _fig(1.0)}, "rnd": {"shannon": _fig(2.95)},
           "smm": {"shannon": {"value": None, "lo": None, "hi": None}}}
    rows = ["be/0.5", "be/5", "rnd", "smm"]
    by = {c["claim"]: c["intervals"] for c in exploratory_coverage(rows, cov, ["shannon"])}
    assert by["be/0.5 covers more than rnd (shannon)"] == "overlapping"  # 3.0 ± 0.1 against 2.95 ± 0.1
    assert by["be/5 covers more than rnd (shannon)"] == "below"
    assert by["be/0.5 covers more than be/5 (shannon; lower α broader)"] == "above"
    assert not any("smm" in c for c in by)  # a null figure is not compared


def test_open_question_4_picks_by_the_statistic_and_compares_with_every_alpha():
    tab = _tab({("be/0.5", S): [500, 520], ("be/5", S): [200, 210], ("be/1.5", S): [600, 610]})
    cov = {"be/0.5": {"shannon": _fig(3.0), "near_static": _fig(0.01, 0.001)},
           "be/5": {"shannon": _fig(1.0), "near_static": _fig(0.2, 0.01)},
           "be/1.5": {"shannon": {"value": None, "lo": None, "hi": None}, "near_static": _fig(0.1, 0.01)}}
    picks = statistic_picks_alpha(tab, cov, "be", ["shannon", "near_static", "maps"])
    # Shannon: α 1.5's figure is null, so the pick is α 0.5; α 1.5 still scores best
    assert picks[0] == {"figure": "shannon", "task": S, "learner": "td3", "picked": 0.5, "best": 1.5,
                        "agree": False}
    # the near-static fraction: fewer held poses is broader, so the smallest value is picked
    assert picks[1]["figure"] == "near_static" and picks[1]["picked"] == 0.5
    assert len(picks) == 2  # a figure without a value ('maps') is skipped


def test_a_coverage_claim_is_judged_over_collection_seeds_in_the_family():
    from bex.analysis.claims import ClaimSpec
    from bex.analysis.stats import Summary

    tab = _tab({("be/0.5", S): [500, 510, 505], ("be/5", S): [600, 610, 605]})
    cov = {"be/0.5": {"shannon": {"value": 2.0, "values": [1.9, 2.0, 2.1]}},
           "be/5": {"shannon": {"value": -3.0, "values": [-3.1, -3.0, -2.9]}}}
    specs = [ClaimSpec(a="be/0.5", b="be/5", figure="shannon"), ClaimSpec(a="be/0.5", b="be/5")]
    cov_claim, ret_claim = primary_claims(tab, specs, cov=cov)
    d = pooled_difference([(Summary.of([1.9, 2.0, 2.1]), Summary.of([-3.1, -3.0, -2.9]))])
    assert cov_claim["value"] == pytest.approx(5.0) and cov_claim["p"] == pytest.approx(d["p"])
    assert cov_claim["verdict"] == "held" and ret_claim["verdict"] == "not held"
    assert "over 3 collection seed(s)" in cov_claim["claim"]
    # one shard: one value each, no interval, inconclusive, still counted in the family (m = 2)
    one = {r: {"shannon": {"value": v["shannon"]["value"]}} for r, v in cov.items()}
    c1, c2 = primary_claims(tab, specs, cov=one)
    assert c1["verdict"] == "inconclusive" and c1["lo"] is None and c2["adjusted"]["level"] == pytest.approx(0.975)
