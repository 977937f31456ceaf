"""The replication's verdicts: hand-computed tables through the module's stated rules."""
from __future__ import annotations

import pytest

from bex.analysis.claims import (
    claims,
    claims_markdown,
    compare,
    coverage_verdict,
    ranks,
    return_verdict,
    statistic_picks_alpha,
)


def _tab(cells: dict) -> dict:
    rows = sorted({r for r, _ in cells})
    cols = sorted({c for _, c in cells})
    return {"rows": rows, "cols": cols, "cells": cells}


A, B = "walker_stand td3", "walker_walk td3"


def test_ranks_and_pooled_difference_by_hand():
    tab = _tab({("be/0.5", A): [500, 500], ("be/5.0", A): [300, 300], ("shannon", A): [400, 400],
                ("be/0.5", B): [100, 100], ("be/5.0", B): [250, 250], ("shannon", B): [200, 200]})
    assert ranks(tab) == {A: {"be/0.5": 1, "shannon": 2, "be/5.0": 3}, B: {"be/5.0": 1, "shannon": 2, "be/0.5": 3}}
    c = compare(tab, ["be/0.5", "be/5.0"], ["shannon"], reps=200)
    # best BE per cell: be/0.5 in A (+100), be/5.0 in B (+50); constant seeds: the interval is the point
    assert [(x["a"], x["diff"]) for x in c["cells"]] == [("be/0.5", pytest.approx(0.1)),
                                                         ("be/5.0", pytest.approx(0.05))]
    assert c["wins"] == 2 and c["pooled"]["value"] == pytest.approx(0.075)
    assert c["pooled"]["lo"] == pytest.approx(0.075) and c["pooled"]["hi"] == pytest.approx(0.075)
    assert return_verdict(c) == "held"


def test_verdicts_follow_the_stated_rules():
    # a clear loss in one cell (difference beyond twice its standard error): not held
    lost = _tab({("be/1", A): [500, 510, 490], ("x", A): [400, 410, 390],
                 ("be/1", B): [100, 110, 90], ("x", B): [300, 310, 290]})
    c = compare(lost, ["be/1"], ["x"], reps=500)
    assert c["wins"] == 1 and return_verdict(c) == "not held"
    # wins everywhere by a hair with large seed noise: inconclusive
    noisy = _tab({("be/1", A): [0, 1000, 500], ("x", A): [0, 990, 500],
                  ("be/1", B): [0, 1000, 500], ("x", B): [10, 980, 500]})
    c = compare(noisy, ["be/1"], ["x"], reps=500)
    assert c["wins"] == 2 and c["pooled"]["lo"] < 0 < c["pooled"]["hi"]
    assert return_verdict(c) == "inconclusive at this scale"
    # the 80 % claim: 4 of 5 cells won with a clear margin is held, 3 of 5 with one clear loss is not
    cols = [f"t{i} td3" for i in range(5)]
    four = _tab({**{("be/1", col): [600, 610] for col in cols}, **{("r", col): [500, 505] for col in cols[:4]},
                 ("r", cols[4]): [700, 705]})
    assert return_verdict(compare(four, ["be/1"], ["r"], reps=300), 0.8) == "held"
    three = _tab({**{("be/1", col): [600, 610] for col in cols}, **{("r", col): [500, 505] for col in cols[:3]},
                  **{("r", col): [700, 705] for col in cols[3:]}})
    assert return_verdict(compare(three, ["be/1"], ["r"], reps=300), 0.8) == "not held"
    one_run = _tab({("be/1", A): [100], ("x", A): [400]})  # a single seed: no spread, no verdict
    assert return_verdict(compare(one_run, ["be/1"], ["x"], reps=50)) == "inconclusive at this scale"
    assert coverage_verdict({"value": 2, "lo": 1.5, "hi": 2.5}, {"value": 1, "lo": 0.5, "hi": 1.4}) == "held"
    assert coverage_verdict({"value": 2, "lo": 1.5, "hi": 2.5}, {"value": 1, "lo": 0.5, "hi": 1.6}) == \
        "inconclusive at this scale"
    assert coverage_verdict({"value": 1, "lo": 0.5, "hi": 1.4}, {"value": 2, "lo": 1.5, "hi": 2.5}) == "not held"


def _fig(v, w=0.1):
    return {"value": v, "lo": v - w, "hi": v + w}


def test_claims_over_a_small_table_and_the_alpha_questions():
    tab = _tab({("be/0.5", A): [500, 520], ("be/5.0", A): [200, 210], ("shannon", A): [400, 405],
                ("rnd", A): [300, 310], ("be/0.5", B): [300, 290], ("be/5.0", B): [100, 120],
                ("shannon", B): [250, 240], ("rnd", B): [260, 250]})
    cov = [{"dataset": "be/0.5", "shannon": _fig(3.0), "volume_cells": _fig(0.5, 0.01)},
           {"dataset": "be/5.0", "shannon": _fig(1.0), "volume_cells": _fig(0.2, 0.01)},
           {"dataset": "shannon", "shannon": _fig(2.95), "volume_cells": _fig(0.3, 0.01)},
           {"dataset": "rnd", "shannon": _fig(1.5), "volume_cells": _fig(0.4, 0.01)}]
    res = claims(tab, cov, reps=300)
    by = {c["claim"]: c["verdict"] for c in res["claims"]}
    assert by["BE datasets give higher returns than shannon datasets in every cell"] == "held"
    assert by["BE datasets give higher returns than rnd datasets in every cell"] == "held"
    assert by["BE covers more than shannon (shannon)"] == "inconclusive at this scale"  # 3.0±0.1 vs 2.95±0.1
    assert by["BE covers more than rnd (shannon)"] == "held"
    assert by["low α covers broadly, high α narrowly (coverage falls as α grows)"] == "held"
    assert by["the largest α (5) has the best coverage but the worst returns"] == "not held"  # worst, not broadest
    assert not any("renyi" in c or "smm" in c for c in by)  # no such datasets: no claim about them
    md = claims_markdown(res, tab)
    assert "| walker_stand td3 | 1 |" in md and "| walker_walk td3 | 1 |" in md
    picks = statistic_picks_alpha(tab, {r["dataset"]: r for r in cov}, "be", ["shannon"])
    assert picks == [{"figure": "shannon", "task": "walker_stand", "picked": 0.5, "best": 0.5, "agree": True},
                     {"figure": "shannon", "task": "walker_walk", "picked": 0.5, "best": 0.5, "agree": True}]


def test_figures_without_a_finite_value_are_left_out_of_the_alpha_questions():
    """The walker replication's coverage stores BE α ≥ 2 as null (−∞: some states' k-NN density exceeds 1) and a
    ``maps`` entry without a value; open question 4 skips them instead of comparing None with None."""
    tab = _tab({("be/0.5", A): [500, 520], ("be/5.0", A): [200, 210]})
    cov = {"be/0.5": {"shannon": _fig(3.0), "be_alpha5": {"value": None, "lo": None, "hi": None},
                      "maps": {"tsne": "x"}},
           "be/5.0": {"shannon": _fig(1.0), "be_alpha5": {"value": None, "lo": None, "hi": None},
                      "maps": {"tsne": "y"}}}
    picks = statistic_picks_alpha(tab, cov, "be", ["shannon", "be_alpha5", "maps"])
    assert picks == [{"figure": "shannon", "task": "walker_stand", "picked": 0.5, "best": 0.5, "agree": True}]
    cov["be/5.0"]["be_alpha5"] = _fig(float("-inf"))  # −∞ is not a coverage figure either
    cov["be/0.5"]["be_alpha5"] = _fig(2.0)
    assert [p["figure"] for p in statistic_picks_alpha(tab, cov, "be", ["be_alpha5"])] == []


def test_the_near_static_fraction_picks_the_alpha_with_the_fewest_held_poses():
    tab = _tab({("be/0.5", A): [500, 520], ("be/5.0", A): [200, 210]})
    cov = {"be/0.5": {"near_static": _fig(0.01, 0.001)}, "be/5.0": {"near_static": _fig(0.2, 0.01)}}
    assert statistic_picks_alpha(tab, cov, "be", ["near_static"])[0]["picked"] == 0.5


def test_a_claim_that_holds_only_by_picking_alpha_per_cell_is_repeated_with_alpha_fixed():
    """Best-of-family: α 0.5 wins stand, α 5 wins walk, so 'BE' beats Shannon in both cells; α 0.5 alone loses
    walk clearly (−100 ± ~7), so the fixed-α claim is not held."""
    tab = _tab({("be/0.5", A): [500, 510, 505], ("be/5.0", A): [300, 310, 305], ("shannon", A): [400, 410, 405],
                ("be/0.5", B): [200, 210, 205], ("be/5.0", B): [400, 410, 405], ("shannon", B): [300, 310, 305]})
    by = {c["claim"]: c["verdict"] for c in claims(tab, [], reps=300)["claims"]}
    assert by["BE datasets give higher returns than shannon datasets in every cell"] == "held"
    assert by["BE α 0.5 alone (no pick) gives higher returns than shannon datasets in every cell"] == "not held"
    # one BE row: nothing is picked, no repeat
    one = _tab({k: v for k, v in tab["cells"].items() if k[0] != "be/5.0"})
    assert not any("alone" in c["claim"] for c in claims(one, [], reps=50)["claims"])


def test_alpha_questions_judge_by_evidence_and_consider_every_alpha():
    tab = _tab({("be/0.5", A): [500, 520], ("be/5.0", A): [200, 210], ("be/1.5", A): [600, 610]})
    # the largest α covers least, but within the intervals of the others, and returns worst: not rejected
    cov = [{"dataset": "be/0.5", "shannon": _fig(3.0, 1.0)}, {"dataset": "be/1.5", "shannon": _fig(2.9, 1.0)},
           {"dataset": "be/5.0", "shannon": _fig(2.5, 1.0)}]
    by = {c["claim"]: c["verdict"] for c in claims(tab, cov, reps=50)["claims"]}
    assert by["the largest α (5) has the best coverage but the worst returns"] == "inconclusive at this scale"
    # α 1.5 has the best return though its figure is null: the pick (α 0.5) does not agree with it
    cov2 = {"be/0.5": {"shannon": _fig(3.0)}, "be/5.0": {"shannon": _fig(1.0)},
            "be/1.5": {"shannon": {"value": None, "lo": None, "hi": None}}}
    (p,) = statistic_picks_alpha(tab, cov2, "be", ["shannon"])
    assert (p["picked"], p["best"], p["agree"]) == (0.5, 1.5, False)
