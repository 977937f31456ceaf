"""``bex analyze``: a trials.csv built by hand with known differences; verdicts, intervals, scores, Table 1 marks
and power against values computed here from the formulas of docs/replication.md."""
from __future__ import annotations

import csv
import json
import math
import subprocess

import numpy as np
import pytest
from scipy import stats as st

from bex.analysis.trials import COLUMNS, EXTRA
from tests.conftest import BEX

RANDOM = {"walker_stand": 131.748, "walker_walk": 32.307}
#: final scores per (dataset, task): three seeds; be/0.5 far above shannon, level with rnd, far below smm
FINAL = {
    ("be/0.5", "walker_stand"): [600.0, 620.0, 640.0], ("be/0.5", "walker_walk"): [300.0, 330.0, 360.0],
    ("shannon", "walker_stand"): [200.0, 230.0, 260.0], ("shannon", "walker_walk"): [50.0, 60.0, 70.0],
    ("rnd", "walker_stand"): [590.0, 640.0, 630.0], ("rnd", "walker_walk"): [310.0, 300.0, 370.0],
    ("smm", "walker_stand"): [900.0, 910.0, 920.0], ("smm", "walker_walk"): [700.0, 720.0, 740.0],
}


def write_trials(path, final=FINAL, early=5.0):
    """Two evaluations per trial: step 100 returns ``final − early``, step 200 returns ``final + early``."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS + EXTRA)
        for (ds, task), values in final.items():
            for seed, v in enumerate(values):
                for step, x in ((100, v - early), (200, v + early)):
                    w.writerow([ds, "", task, "td3", seed, step, x, 10, 1.0, 200, "", f"t_{ds}_{task}_{seed}"])
    return path


def norm(x, task):
    return (np.asarray(x) - RANDOM[task]) / (1000 - RANDOM[task])


def by_hand(a, b):
    """The pooled difference of a − b over the two tasks: value, se, df, p (docs/replication.md's formula)."""
    terms, diffs, ns = [], [], []
    for task in RANDOM:
        xa, xb = norm(FINAL[(a, task)], task), norm(FINAL[(b, task)], task)
        diffs.append(xa.mean() - xb.mean())
        terms += [xa.var(ddof=1) / 3 / 4, xb.var(ddof=1) / 3 / 4]
        ns += [3, 3]
    se = math.sqrt(sum(terms))
    df = sum(terms) ** 2 / sum(t * t / (n - 1) for t, n in zip(terms, ns))
    value = float(np.mean(diffs))
    return value, se, df, 2 * st.t.sf(abs(value) / se, df)


def test_analyze_a_hand_built_trials_csv(tmp_path):
    from bex.analysis.analyze import AnalysisConfig, analyze
    from bex.analysis.trials import read_trials_csv

    rows = read_trials_csv([write_trials(tmp_path / "trials.csv")])
    res = analyze(rows, AnalysisConfig(score_last=2))
    prim = {c["b"]: c for c in res["claims"] if c.get("primary")}
    assert sorted(prim) == ["rnd", "shannon", "smm"] and all(c["a"] == "be/0.5" for c in prim.values())
    hand = {b: by_hand("be/0.5", b) for b in prim}
    # Holm over m = 3 by the p-values: shannon and smm tiny, rnd large
    order = sorted(hand, key=lambda b: hand[b][3])
    levels, stopped = {}, None
    for i, b in enumerate(order):
        thr = 0.05 / (3 - i)
        if stopped is None and hand[b][3] <= thr:
            levels[b] = thr
        else:
            stopped = stopped or thr
            levels[b] = stopped
    for b, c in prim.items():
        value, se, df, p = hand[b]
        assert c["value"] == pytest.approx(value) and c["se"] == pytest.approx(se) and c["df"] == pytest.approx(df)
        assert c["p"] == pytest.approx(p)
        q = st.t.ppf(1 - levels[b] / 2, df)
        assert (c["adjusted"]["lo"], c["adjusted"]["hi"]) == pytest.approx((value - q * se, value + q * se))
        assert c["mdd"] == pytest.approx((st.t.ppf(1 - 0.05 / 6, df) + st.t.ppf(0.8, df)) * se)
    assert prim["shannon"]["verdict"] == "held" and prim["smm"]["verdict"] == "not held"
    assert prim["rnd"]["verdict"] == "inconclusive"
    # the score is the mean of the last 2 evaluations (= the final value here); with 1, the final + 5
    t1 = res["table"]["cells"]
    assert t1["be/0.5\twalker_stand td3"]["mean"] == pytest.approx(620.0)
    assert t1["be/0.5\twalker_stand td3"]["sd"] == pytest.approx(20.0)  # ddof 1
    one = analyze(rows, AnalysisConfig(score_last=1))["table"]["cells"]
    assert one["be/0.5\twalker_stand td3"]["mean"] == pytest.approx(625.0)
    # Table 1 marks: smm best in both columns; be/0.5, rnd, shannon below it beyond noise
    assert t1["smm\twalker_stand td3"]["mark"] == "best" and t1["shannon\twalker_walk td3"]["mark"] == "below"
    # per-task IQM then the mean over tasks (three runs: IQM weighs the middle run fully, the ends by 1/4)
    agg = res["aggregates"]["td3"]["datasets"]["smm"]
    want = np.mean([st.trim_mean(norm(FINAL[("smm", t)], t), 0.25) for t in RANDOM])
    assert agg["value"] == pytest.approx(want) and agg["lo"] <= agg["value"] <= agg["hi"]


def test_declared_claims_replace_the_default_family(tmp_path):
    from bex.analysis.analyze import AnalysisConfig, analyze
    from bex.analysis.trials import read_trials_csv

    rows = read_trials_csv([write_trials(tmp_path / "trials.csv")])
    res = analyze(rows, AnalysisConfig(claims=[{"a": "smm", "b": "rnd"}]))
    prim = [c for c in res["claims"] if c.get("primary")]
    assert len(prim) == 1 and prim[0]["verdict"] == "held"
    # with one claim the adjusted interval is the 95 % one
    assert prim[0]["adjusted"]["lo"] == pytest.approx(prim[0]["interval_95"]["lo"])
    with pytest.raises(ValueError, match=r"\['nope'\]"):
        analyze(rows, AnalysisConfig(claims=[{"a": "nope", "b": "rnd"}]))


def test_collection_seeds_are_the_unit_when_a_dataset_has_several(tmp_path):
    """Two collection seeds × two training seeds: a cell's values are the two collection-seed means."""
    from bex.analysis.trials import cells, scores

    rows = [{"dataset": "be/0.5", "collection_seed": str(c), "task": "walker_stand", "learner": "td3", "seed": s,
             "step": 100, "return_mean": 100.0 * c + s, "episodes": 10, "steps_planned": 100}
            for c in (0, 1) for s in (0, 1)]
    values, unit = cells(scores(rows, last=1))
    assert unit == {"be/0.5": "collection seed"} and values[("be/0.5", "walker_stand", "td3")] == [0.5, 100.5]


def test_bex_analyze_writes_strict_json_and_markdown_and_refuses_bad_input(tmp_path):
    trials = write_trials(tmp_path / "trials.csv")
    p = subprocess.run([BEX, "analyze", str(trials), "--out", str(tmp_path / "a"), "--score-last", "2"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    data = json.loads((tmp_path / "a" / "analysis.json").read_text())  # strict JSON: no NaN
    prim = [c for c in data["claims"] if c["primary"]]
    assert len(prim) == 3 and {c["verdict"] for c in prim} == {"held", "not held", "inconclusive"}
    assert all("verdict" not in c for c in data["claims"] if not c["primary"])
    md = (tmp_path / "a" / "analysis.md").read_text()
    assert "## Primary claims" in md and "**held**" in md and "MDD" in md
    assert list((tmp_path / "a" / "curves").glob("walker_*td3.png"))
    bad = tmp_path / "bad.csv"
    bad.write_text("dataset,task\nx,y\n")
    for args, needle in [([str(tmp_path / "none.csv")], "does not exist"), ([str(bad)], "does not start with"),
                         ([str(trials), "--score-last", "0"], "score_last=0")]:
        r = subprocess.run([BEX, "analyze", *args, "--out", str(tmp_path / "b")], capture_output=True, text=True,
                           timeout=120)
        lines = [x for x in r.stderr.splitlines() if x.strip()]
        assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], (args, r.stderr[-2000:])
    assert not (tmp_path / "b").exists()


def test_trials_csv_round_trip(tmp_path):
    from bex.analysis.trials import read_trials_csv, trials_csv

    rows = read_trials_csv([write_trials(tmp_path / "t.csv")])
    (tmp_path / "u.csv").write_text(trials_csv(rows))
    again = read_trials_csv([tmp_path / "u.csv"])
    key = lambda r: (r["dataset"], r["task"], r["seed"], r["step"])  # noqa: E731
    assert sorted(map(key, rows)) == sorted(map(key, again))
    assert {key(r): r["return_mean"] for r in rows} == {key(r): r["return_mean"] for r in again}


def test_the_random_policy_references_are_what_the_protocol_measures():
    """Ten of the hundred episodes behind walker_stand's reference: their mean is within 4 standard errors."""
    from bex.analysis.units import RANDOM_POLICY
    from bex.envs.evaluate import evaluate, random_policy

    r = evaluate(random_policy(6, seed=0), "walker", "stand", episodes=10)
    assert abs(r.mean - RANDOM_POLICY["walker_stand"]) < 4 * r.std / math.sqrt(10) + 1e-9


def test_stability_by_hand_and_max_step(tmp_path):
    """Two datasets × three seeds, three evaluations: ρ between consecutive evaluations and the share of the
    variance between datasets, computed here; max_step drops the later evaluations."""
    from scipy.stats import spearmanr

    from bex.analysis.analyze import AnalysisConfig, analyze, stability

    vals = {("a", 0): [1.0, 10.0, 20.0], ("a", 1): [2.0, 12.0, 19.0], ("a", 2): [3.0, 11.0, 21.0],
            ("b", 0): [4.0, 30.0, 40.0], ("b", 1): [5.0, 32.0, 39.0], ("b", 2): [6.0, 31.0, 45.0]}
    rows = [{"dataset": d, "collection_seed": "", "task": "walker_stand", "learner": "td3", "seed": s,
             "step": step, "return_mean": v[i], "episodes": 10, "steps_planned": 300}
            for (d, s), v in vals.items() for i, step in enumerate((100, 200, 300))]
    st100 = next(s for s in stability(rows) if s["step"] == 100)
    x = np.array([v[0] for v in vals.values()])
    groups = [x[:3], x[3:]]
    share = sum(3 * (g.mean() - x.mean()) ** 2 for g in groups) / ((x - x.mean()) ** 2).sum()
    assert st100["between_share"] == pytest.approx(share)
    assert st100["rho_next"] == pytest.approx(spearmanr(x, [v[1] for v in vals.values()]).statistic)
    assert [s["step"] for s in stability(rows)] == [100, 200, 300] and stability(rows)[-1]["rho_next"] is None
    res = analyze(rows, AnalysisConfig(score_last=1, max_step=200))
    assert res["table"]["cells"]["a\twalker_stand td3"]["mean"] == pytest.approx(11.0)
    assert res["incomplete_trials"] == 0  # 300 planned, cut at max_step 200: scored as 200-step trials
    short = [r for r in rows if not (r["dataset"] == "a" and r["seed"] == 0 and r["step"] > 100)]
    assert analyze(short, AnalysisConfig(score_last=1, max_step=200))["incomplete_trials"] == 1  # stopped at 100


def test_coverage_of_shards_combines_over_collection_seeds():
    from bex.analysis.analyze import combine_coverage

    f = [[{"dataset": "rnd", "states": 10, "shannon": {"value": v, "lo": v - 1, "hi": v + 1}}] for v in (1.0, 2.0, 4.0)]
    (row,) = combine_coverage(f)
    m, se = np.mean([1, 2, 4]), np.std([1, 2, 4], ddof=1) / math.sqrt(3)
    q = st.t.ppf(0.975, 2)
    assert row["collections"] == 3 and row["shannon"]["value"] == pytest.approx(m)
    assert (row["shannon"]["lo"], row["shannon"]["hi"]) == pytest.approx((m - q * se, m + q * se))
    (one,) = combine_coverage(f[:1])  # one shard: its own interval, its one value kept for the claims
    assert one["shannon"] == {"value": 1.0, "lo": 0.0, "hi": 2.0, "values": [1.0]}


def test_only_comparable_coverage_files_combine():
    """Several shards' coverage combines only with the fixed standardiser, one space and one sample size."""
    from bex.analysis.analyze import comparable_coverage

    fixed = {"standardiser": "fixed", "space": "physics", "max_states": 20000}
    assert comparable_coverage([("a", fixed), ("b", dict(fixed))]) == "fixed"
    assert comparable_coverage([("a", {"standardiser": "pooled"})]) == "pooled"  # one call: its own frame
    assert comparable_coverage([]) == "pooled"
    with pytest.raises(ValueError, match="'b' has standardiser 'pooled'"):
        comparable_coverage([("a", fixed), ("b", {**fixed, "standardiser": "pooled"})])
    with pytest.raises(ValueError, match="'b' has max_states=5000 but 'a' has 20000"):
        comparable_coverage([("a", fixed), ("b", {**fixed, "max_states": 5000})])


def test_a_shard_is_one_collection_seed_trained_alone_in_its_own_root():
    from bex.pipelines.replicate import ReplicateConfig

    cfg = ReplicateConfig.from_yaml("tune_configs/replicate_decisive.yaml")
    s1 = cfg.shard(1)
    assert s1.name == f"{cfg.name}-s1" and s1.collect["seeds"] == [1] and s1.train_on == "each_seed"
    assert {c.seed for c in s1.grid().runs_()} == {1}
    with pytest.raises(ValueError, match="--shard 9 is not one of"):
        cfg.shard(9)


def test_rejudging_from_a_results_table_equals_judging_from_the_values(tmp_path):
    """Welch needs only mean, SD and n: a results.md of the hand-built runs gives the same primary claims as
    the runs themselves (population SDs with --ddof0 converted back)."""
    from bex.analysis.analyze import AnalysisConfig, analyze
    from bex.analysis.claims import default_claims, primary_claims
    from bex.analysis.rejudge import read_results_md
    from bex.analysis.trials import read_trials_csv

    res = analyze(read_trials_csv([write_trials(tmp_path / "t.csv")]), AnalysisConfig(score_last=2))
    lines = ["| dataset | walker_stand td3 | walker_walk td3 |", "|---|---|---|"]
    for ds in ("be/0.5", "rnd", "shannon", "smm"):
        cells = []
        for task in RANDOM:
            x = np.asarray(FINAL[(ds, task)])
            cells.append(f"{x.mean():.6f} ± {x.std():.6f} (n=3)")  # ddof 0, as bex printed it before
        lines.append(f"| {ds} | {cells[0]} | {cells[1]} |")
    (tmp_path / "results.md").write_text("\n".join(lines) + "\n")
    tab = read_results_md(tmp_path / "results.md", ddof0=True)
    again = {c["b"]: c for c in primary_claims(tab, default_claims(tab.rows))}
    for c in (c for c in res["claims"] if c.get("primary")):
        assert again[c["b"]]["value"] == pytest.approx(c["value"], abs=1e-6)
        assert again[c["b"]]["adjusted"]["lo"] == pytest.approx(c["adjusted"]["lo"], abs=1e-6)
        assert again[c["b"]]["verdict"] == c["verdict"]


def test_mean_and_standard_error_of_huge_coverage_figures_do_not_overflow():
    import warnings

    from bex.analysis.analyze import mean_se

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's overflow warning fails the test
        m, se = mean_se([1e200, 3e200])
    assert math.isclose(m, 2e200) and math.isclose(se, 1e200)  # SD sqrt(2)e200 over sqrt(2)
    assert mean_se([1.0, 2.0, 3.0]) == (2.0, 1 / math.sqrt(3))


def test_one_learner_never_mixes_two_versions_of_a_dataset_and_learners_on_different_versions_are_named():
    """A re-collected shard whose fingerprint differs: mixing its trials into one learner's cell is refused in
    one line; a second learner trained on the re-collection is listed under data_versions."""
    from bex.analysis.analyze import analysis_markdown, analyze, data_versions

    def row(learner, seed, fp, step=100):
        return {"dataset": "be/0.5", "collection_seed": "2", "task": "walker_stand", "learner": learner,
                "seed": seed, "step": step, "return_mean": 300.0 + seed, "episodes": 10, "steps_planned": 100,
                "fingerprint": fp}

    with pytest.raises(ValueError) as e:
        data_versions([row("td3", 0, "aaaa"), row("td3", 1, "bbbb")])
    assert "td3 trials of be/0.5 (collection seed 2) trained on data with fingerprints aaaa, bbbb" in str(e.value)
    assert "\n" not in str(e.value)
    rows = [row("td3", 0, "aaaa"), row("td3", 1, "aaaa"), row("crr", 0, "bbbb"), row("crr", 1, "")]
    assert data_versions(rows) == {"be/0.5@2": {"crr": "bbbb", "td3": "aaaa"}}
    assert data_versions(rows[:2]) == {}
    res = analyze(rows)
    assert res["data_versions"] == {"be/0.5@2": {"crr": "bbbb", "td3": "aaaa"}}
    assert "- be/0.5@2: crr `bbbb`, td3 `aaaa`" in analysis_markdown(res)
