"""Coverage figures: equal to bex.entropy's estimators, right on known entropies, volumes that rank, bad input."""
from __future__ import annotations

import json
import math
import subprocess

import numpy as np
import pytest

from bex.analysis.coverage import CoverageConfig, StateSet, coverage
from bex.entropy import knn_behavioral_entropy, knn_renyi_entropy, knn_shannon_entropy
from tests.conftest import BEX


def test_figures_equal_bex_entropy_estimators_on_the_same_states():
    x = np.random.default_rng(0).normal(size=(3000, 4)) * [1.0, 2.0, 0.5, 3.0]
    cfg = CoverageConfig(k=5, qs=(0.5, 2.0), alphas=(0.7, 2.0), replicates=4)
    (row,) = coverage([StateSet("g", x)], cfg)
    z = (x - x.mean(0)) / x.std(0)  # pooled z-scoring of the one dataset
    assert row["states"] == 3000 and row["dims"] == 4
    assert row["shannon"]["value"] == pytest.approx(knn_shannon_entropy(z, 5), rel=1e-6)
    assert row["renyi_q0.5"]["value"] == pytest.approx(knn_renyi_entropy(z, 5, 0.5), rel=1e-6)
    assert row["renyi_q2"]["value"] == pytest.approx(knn_renyi_entropy(z, 5, 2.0), rel=1e-6)
    assert row["be_alpha0.7"]["value"] == pytest.approx(knn_behavioral_entropy(z, 5, 0.7), rel=1e-5)
    assert row["be_alpha2"]["value"] == pytest.approx(knn_behavioral_entropy(z, 5, 2.0), rel=1e-5)
    for key in ("shannon", "renyi_q2", "be_alpha2", "volume_logdet", "volume_cells", "near_static"):
        assert row[key]["lo"] <= row[key]["value"] <= row[key]["hi"], (key, row[key])


def test_shannon_of_a_gaussian_within_2_percent_and_the_interval_covers_it():
    x = np.random.default_rng(1).normal(scale=3.0, size=(20000, 3))
    (row,) = coverage([StateSet("g", x)], CoverageConfig(qs=(), alphas=(), replicates=20))
    truth = 1.5 * math.log(2 * math.pi * math.e)  # z-scored: a standard 3-D Gaussian
    s = row["shannon"]
    assert abs(s["value"] - truth) / truth < 0.02, s
    assert s["lo"] <= truth <= s["hi"], (s, truth)
    assert 0 < s["hi"] - s["lo"] < 0.1


def test_volumes_rank_wide_above_narrow_and_a_box_above_clusters_of_the_same_spread():
    rng = np.random.default_rng(2)
    wide, narrow = rng.normal(scale=2.0, size=(4000, 2)), rng.normal(scale=0.5, size=(4000, 2))
    rows = {r["dataset"]: r for r in coverage([StateSet("wide", wide), StateSet("narrow", narrow)],
                                              CoverageConfig(qs=(), alphas=(), replicates=4))}
    for key in ("volume_logdet", "volume_cells", "shannon"):
        assert rows["wide"][key]["value"] > rows["narrow"][key]["value"], key
    box = rng.uniform(-math.sqrt(3), math.sqrt(3), size=(4000, 2))  # unit variance per axis
    centers = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], float)
    clusters = centers[rng.integers(0, 4, 4000)] + rng.normal(scale=0.05, size=(4000, 2))  # ~unit variance too
    rows = {r["dataset"]: r for r in coverage([StateSet("box", box), StateSet("clusters", clusters)],
                                              CoverageConfig(qs=(), alphas=(), replicates=4))}
    assert rows["box"]["volume_cells"]["value"] > 3 * rows["clusters"]["volume_cells"]["value"]
    assert abs(rows["box"]["volume_logdet"]["value"] - rows["clusters"]["volume_logdet"]["value"]) < 0.2


def test_near_static_fraction_counts_held_states():
    rng = np.random.default_rng(3)
    moving = rng.normal(size=(700, 3))
    held = np.repeat(rng.normal(size=(3, 3)), 100, axis=0) + rng.normal(scale=1e-6, size=(300, 3))
    (row,) = coverage([StateSet("m", np.concatenate([moving, held]))], CoverageConfig(qs=(), alphas=(),
                                                                                    replicates=4))
    assert row["near_static"]["value"] == pytest.approx(0.3, abs=0.01)


def test_be_figures_of_tightly_packed_states_are_null_and_named_in_one_note():
    """Held poses (k-NN density far above 1 after z-scoring) make BE at α 5 overflow to a null figure, as on the
    walker replication's physics states; a spread-out set keeps it finite, and the note names the figure, how
    many datasets it is null for, and why."""
    from bex.analysis.coverage import null_figures_note

    rng = np.random.default_rng(5)
    spread = rng.normal(size=(600, 6))
    held = np.concatenate([rng.normal(size=(500, 6)),
                           np.repeat(rng.normal(size=(2, 6)), 50, axis=0) + rng.normal(scale=1e-5, size=(100, 6))])
    rows = coverage([StateSet("spread", spread), StateSet("held", held)],
                    CoverageConfig(qs=(), alphas=(0.9, 5.0), replicates=3))
    by = {r["dataset"]: r for r in rows}
    assert by["held"]["be_alpha5"]["value"] is None and math.isfinite(by["spread"]["be_alpha5"]["value"])
    assert by["held"]["be_alpha0.9"]["value"] is not None  # α < 1 stays finite (if large)
    note = null_figures_note(rows)
    assert note.startswith("null figures: be_alpha5 (1 of 2)") and "k-NN density exceeds 1" in note
    assert null_figures_note([by["spread"]]) is None


def _dataset(root, domain, task, objective="random"):
    from bex.replay import DatasetWriter
    from tests.helpers import collect_episode

    ep, _, spec = collect_episode(domain, task, 0, 80)
    with DatasetWriter(root, spec, objective, None, 0) as w:
        w.write_episode(ep)
    return root


def test_bex_coverage_writes_json_lines_and_names_bad_input(tmp_path):
    walker = _dataset(tmp_path / "walker", "walker", "stand")
    _dataset(tmp_path / "walker", "walker", "stand", objective="other")
    p = subprocess.run([BEX, "coverage", str(walker), "--out", str(tmp_path / "cov"), "--replicates", "3",
                        "--map-states", "120"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert [r["dataset"] for r in rows] == ["walker:other/s0", "walker:random/s0"] and rows[0]["states"] == 81
    saved = json.loads((tmp_path / "cov" / "coverage.json").read_text())
    assert saved["datasets"] == rows and saved["config"]["space"] == "physics"
    import matplotlib.image as mpimg

    for method in ("tsne", "phate"):  # one shared embedding per method, drawn, not blank
        png = tmp_path / "cov" / f"{method}.png"
        assert rows[0]["maps"][method] == str(png) and mpimg.imread(png)[..., :3].var() > 1e-3
    cheetah = _dataset(tmp_path / "cheetah", "cheetah", "run")
    (tmp_path / "plain").mkdir()
    empty = walker / "domain=walker" / "objective=none" / "param=none" / "seed=0"
    empty.mkdir(parents=True)
    for args, needle in [([str(tmp_path / "plain")], "is not a bex dataset"),
                         ([str(walker), str(cheetah)], "different domains"),
                         ([str(walker), "--space", "joints"], "'joints'"),
                         ([str(empty)], "holds no data files")]:
        p = subprocess.run([BEX, "coverage", *args, "--out", str(tmp_path / "bad")], capture_output=True,
                           text=True, timeout=300)
        lines = [x for x in p.stderr.splitlines() if x.strip()]
        assert p.returncode == 2 and len(lines) == 1 and needle in lines[0], (args, p.stderr[-2000:])
        assert not (tmp_path / "bad").exists()


def test_bex_import_of_an_exorl_folder_round_trips_through_export(tmp_path):
    """An ExORL-layout folder (URLB's save_episode convention, with physics) imports; after relabelling,
    ``bex export`` gives back its observations, actions, rewards and discounts as transitions."""
    from tests.helpers import collect_episode

    src = tmp_path / "exorl" / "buffer"
    src.mkdir(parents=True)
    eps = []
    for i in range(3):
        ep, rew, _ = collect_episode("walker", "stand", 10 + i, 120 + 10 * i)
        eps.append((ep, rew))
        np.savez(src / f"20260101T0000{i:02d}_{i}_{len(ep)}.npz", observation=ep.observation, action=ep.action,
                 reward=rew[:, None].astype(np.float32), discount=ep.discount[:, None], physics=ep.physics)
    out = tmp_path / "ds"
    p = subprocess.run([BEX, "import", str(src), "--task", "walker_stand", "--out", str(out)], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout)["transitions"] == 120 + 130 + 140
    for args in (["relabel", str(out), "--task", "walker_stand", "--local"],
                 ["export", str(out), "--task", "walker_stand", "--out", str(tmp_path / "x.npz")]):
        p = subprocess.run([BEX, *args], capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
    x = np.load(tmp_path / "x.npz")
    assert np.array_equal(x["observations"], np.concatenate([e.observation[:-1] for e, _ in eps]))
    assert np.array_equal(x["next_observations"], np.concatenate([e.observation[1:] for e, _ in eps]))
    assert np.array_equal(x["actions"], np.concatenate([e.action[1:] for e, _ in eps]))
    np.testing.assert_allclose(x["rewards"], np.concatenate([r[1:] for _, r in eps]), atol=1e-6)
    assert not x["terminals"].any() and x["timeouts"].sum() == 3
    again = subprocess.run([BEX, "import", str(src), "--task", "walker_stand", "--out", str(out)],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "already holds data" in again.stderr  # never imported twice
    bad = subprocess.run([BEX, "import", str(src), "--task", "cheetah_run", "--out", str(tmp_path / "c")],
                         capture_output=True, text=True, timeout=300)
    lines = [x for x in bad.stderr.splitlines() if x.strip()]
    assert bad.returncode == 2 and len(lines) == 1 and "observation has shape" in lines[0]
    assert not (tmp_path / "c").exists()
    # D4RL-style: the exported file imports (physics null, rewards kept) and exports back to the same arrays
    d4 = tmp_path / "d4"
    p = subprocess.run([BEX, "import", str(tmp_path / "x.npz"), "--task", "walker_stand", "--out", str(d4)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout)["physics"] is False and (d4 / "domain=walker" / "objective=d4rl").is_dir()
    p = subprocess.run([BEX, "export", str(d4), "--task", "walker_stand", "--out", str(tmp_path / "y.npz")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    y = np.load(tmp_path / "y.npz")
    assert sorted(y.files) == sorted(x.files)
    for key in x.files:
        assert np.array_equal(x[key], y[key]), key
    from bex.analysis.coverage import load_state_sets
    from bex.replay import relabel

    for refuse in (lambda: relabel(d4, "walker_walk"), lambda: load_state_sets([d4], "physics")):
        with pytest.raises(ValueError, match="has no physics state") as e:  # the CLI prints it as its one line
            refuse()
        assert "\n" not in str(e.value)


def test_d4rl_import_splits_episodes_at_terminals_and_timeouts(tmp_path):
    """Episodes end at terminals | timeouts; a terminal gives discount 0; without next_observations the next
    observation is the following row's and each episode's last transition is dropped (D4RL's qlearning_dataset)."""
    from bex.replay import Dataset
    from bex.replay.importers import import_d4rl

    n = 12
    obs = np.arange(n * 24, dtype=np.float32).reshape(n, 24)
    term, tout = np.zeros(n, bool), np.zeros(n, bool)
    term[3], tout[7] = True, True  # episodes rows 0-3 (terminal), 4-7 (timeout), 8-11 (end of file)
    arrays = dict(observations=obs, actions=np.full((n, 6), 0.5, np.float32), rewards=np.arange(n) / 10.0,
                  terminals=term, timeouts=tout)
    nxt = np.concatenate([obs[1:], obs[-1:] + 1000])
    nxt[[3, 7]] += 1000  # the next observation after each episode's last step is its own
    np.savez(tmp_path / "a.npz", **arrays, next_observations=nxt)
    np.savez(tmp_path / "b.npz", **arrays)
    res = import_d4rl(tmp_path / "a.npz", tmp_path / "A", "walker_run")
    assert (res["episodes"], res["transitions"]) == (3, 12)
    tr = Dataset(tmp_path / "A").transitions("walker_run")
    order = np.argsort(tr.reward)
    np.testing.assert_array_equal(tr.obs[order], obs)
    np.testing.assert_array_equal(tr.next_obs[order], nxt)
    np.testing.assert_allclose(tr.reward[order], np.arange(n) / 10.0, rtol=1e-6)
    np.testing.assert_array_equal(tr.discount[order] == 0, term)
    np.testing.assert_array_equal(tr.is_last[order], term | tout | (np.arange(n) == n - 1))
    res = import_d4rl(tmp_path / "b.npz", tmp_path / "B", "walker_run")
    assert (res["episodes"], res["transitions"]) == (3, 9)
    tr = Dataset(tmp_path / "B").transitions("walker_run")
    kept = np.array([0, 1, 2, 4, 5, 6, 8, 9, 10])
    order = np.argsort(tr.reward)
    np.testing.assert_array_equal(tr.obs[order], obs[kept])
    np.testing.assert_array_equal(tr.next_obs[order], obs[kept + 1])
    with pytest.raises(ValueError, match="actions has shape"):
        np.savez(tmp_path / "c.npz", **{**arrays, "actions": np.zeros((n, 5), np.float32)})
        import_d4rl(tmp_path / "c.npz", tmp_path / "C", "walker_run")
    assert not (tmp_path / "C").exists()


def test_shuffled_transitions_import_as_one_step_episodes_and_train(tmp_path):
    """A replay-buffer dump (next_observations[i] is not observations[i+1]): one-step episodes that keep every
    (s, a, r, s') and its terminal; bex info says so; a learner trains on them."""
    from bex.analysis.info import dataset_info
    from bex.learners.trial import TrialConfig, run_learner_trial
    from bex.replay import Dataset
    from bex.replay.importers import import_d4rl

    rng = np.random.default_rng(0)
    n = 40
    obs, nxt = rng.normal(size=(n, 24)).astype(np.float32), rng.normal(size=(n, 24)).astype(np.float32)
    term = np.zeros(n, bool)
    term[5] = True
    np.savez(tmp_path / "buf.npz", observations=obs, next_observations=nxt, terminals=term,
             actions=rng.uniform(-1, 1, (n, 6)).astype(np.float32), rewards=np.arange(n) / 100.0)
    res = import_d4rl(tmp_path / "buf.npz", tmp_path / "D", "walker_run")
    assert (res["episodes"], res["transitions"], res["layout"]) == (n, n, "transitions")
    tr = Dataset(tmp_path / "D").transitions("walker_run")
    order = np.argsort(tr.reward)
    np.testing.assert_array_equal(tr.obs[order], obs)
    np.testing.assert_array_equal(tr.next_obs[order], nxt)
    np.testing.assert_array_equal(tr.discount[order] == 0, term)
    assert [p["layout"] for p in dataset_info(tmp_path / "D")["partitions"]] == ["transitions"]
    cfg = TrialConfig.from_dict(dict(dataset=str(tmp_path / "D"), task="walker_run", learner="bc", steps=4,
                                     eval_every=4, report_every=2, eval_episodes=1, device="cpu",
                                     learner_config={"batch_size": 8, "hidden_dim": 16}))
    rows = []
    run_learner_trial(cfg, None, lambda m, w=None: rows.append(m))
    assert rows[-1]["steps"] == 4 and np.isfinite(rows[-1]["eval/return_mean"])


@pytest.mark.parametrize("change,needle", [
    ({"actions": 5.0}, "actions[0] holds 5, outside the action space [-1, 1]"),
    ({"observations": float("nan")}, "observations[0] holds nan; every value must be finite"),
    ({"rewards": float("inf")}, "rewards[0] holds inf"),
])
def test_imports_refuse_data_outside_the_spaces_in_one_line_and_write_nothing(tmp_path, change, needle):
    from bex.replay.importers import import_d4rl

    n = 10
    arrays = dict(observations=np.zeros((n, 24), np.float32), actions=np.zeros((n, 6), np.float32),
                  rewards=np.zeros(n), terminals=np.zeros(n, bool))
    for k, v in change.items():
        arrays[k] = arrays[k].astype(float)
        arrays[k].flat[0] = v
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError) as e:
        import_d4rl(tmp_path / "bad.npz", tmp_path / "out", "walker_run")
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()
    np.savez(tmp_path / "ok.npz", **{**arrays, "actions": np.full((n, 6), 1.0005)} if "actions" in change else arrays)
    if "actions" in change:  # within the stated tolerance: imported
        assert import_d4rl(tmp_path / "ok.npz", tmp_path / "ok", "walker_run")["transitions"] == n - 1


def test_a_fixed_standardiser_makes_figures_independent_of_the_other_datasets_compared():
    """Pooled z-scoring makes a dataset's figures depend on what it is compared with; the domain's fixed
    reference does not: dataset A gets the same figures next to B as next to C (shards measured apart)."""
    rng = np.random.default_rng(3)
    a, b, c = (StateSet(n, rng.normal(0, s, (600, 18)), {"domain": "walker"})
               for n, s in (("a", 1.0), ("b", 0.2), ("c", 5.0)))
    fixed = CoverageConfig(standardiser="fixed", replicates=2, map_states=0)
    pooled = CoverageConfig(replicates=2, map_states=0)
    with_b, with_c = coverage([a, b], fixed)[0], coverage([a, c], fixed)[0]
    assert with_b["shannon"] == with_c["shannon"] and with_b["volume_cells"] == with_c["volume_cells"]
    assert coverage([a, b], pooled)[0]["shannon"] != coverage([a, c], pooled)[0]["shannon"]
    with pytest.raises(ValueError, match="per domain"):
        coverage([a, StateSet("q", rng.normal(0, 1, (600, 18)), {"domain": "quadruped"})], fixed)
