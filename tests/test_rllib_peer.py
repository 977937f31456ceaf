"""The RLlib peer baseline: the transition view (replay.rllib_view), Ray Data on bex files, rllib_bc / rllib_cql
as Tune trials (cluster.rllib_peer)."""
import gc
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from bex.cluster import rllib_peer as rp
from bex.learners.trial import TrialConfig, resolved_rllib_config, updates_per_iteration
from bex.replay import Dataset, DatasetWriter, relabel
from bex.replay import rllib_view as rv
from tests.helpers import collect_episode


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """Two partitions, three short episodes; episode ``be1`` ends in a true terminal (discount 0)."""
    root = tmp_path_factory.mktemp("rllib") / "walker"
    spec = collect_episode("walker", "stand", 0, 2)[2]
    live = {}
    for objective, param, seed in [("be", 0.5, 1), ("shannon", None, 2)]:
        with DatasetWriter(root, spec, objective, param, 0) as w:
            for i in range(2 if objective == "be" else 1):
                eid = f"{objective}{i}"
                ep, rew, _ = collect_episode("walker", "stand", seed * 10 + i, 6 + i, episode_id=eid)
                if eid == "be1":
                    ep.discount[-1] = 0.0
                live[eid] = (ep, rew)
                w.write_episode(ep)
    relabel(root, "walker_stand")
    return root, live


def _read_view(out):
    files = rv.view_files(out)
    return files, pq.read_table(files, partitioning=None).to_pydict() if files else {}


def test_transition_view_equals_dataset_transitions(small_data, tmp_path):
    root, live = small_data
    info = rv.export_rllib(root, "stand", tmp_path / "view")
    ds = Dataset(root)
    tr = ds.transitions("walker_stand")
    assert info["task"] == "walker_stand" and info["files"] == 2
    assert info["transitions"] == len(tr) == ds.num_rows - 3 == 6 + 7 + 6
    files, v = _read_view(tmp_path / "view")
    # same hive layout as the data files, in the same order
    assert [f.split("view/")[1] for f in files] == [str(f.path.relative_to(root)) for f in ds.files]
    assert list(v) == list(rv.VIEW_COLUMNS)
    np.testing.assert_array_equal(np.array(v["observation"], np.float32), tr.obs)
    np.testing.assert_array_equal(np.array(v["action"], np.float32), tr.action)
    np.testing.assert_array_equal(np.array(v["reward"], np.float32), tr.reward)
    np.testing.assert_array_equal(np.array(v["next_observation"], np.float32), tr.next_obs)
    np.testing.assert_array_equal(np.array(v["discount"], np.float32), tr.discount)
    np.testing.assert_array_equal(np.array(v["terminated"]) | np.array(v["truncated"]), tr.is_last)

    # Hand check against the live episodes (files sort be/... before shannon/...; be0, be1, shannon0).
    order = [("be0", 6), ("be1", 7), ("shannon0", 6)]
    k = 0
    for eid, n in order:
        ep, rew = live[eid]
        for i in range(1, n + 1):   # transition (obs[i-1], action[i], r_i, obs[i])
            assert v["episode_id"][k] == eid and v["t"][k] == i - 1
            np.testing.assert_array_equal(v["observation"][k], ep.observation[i - 1])
            np.testing.assert_array_equal(v["action"][k], ep.action[i])      # not action[i-1]: row 0 is zeros
            np.testing.assert_array_equal(v["next_observation"][k], ep.observation[i])
            assert v["reward"][k] == pytest.approx(rew[i], abs=1e-6)           # relabelled == live reward
            last = i == n
            assert v["terminated"][k] == (last and eid == "be1")
            assert v["truncated"][k] == (last and eid != "be1")
            k += 1
    assert k == len(tr)
    assert not any(np.allclose(a, 0) for a in v["action"])   # no reset row leaked in as a transition


def test_export_rllib_rejects_bad_output(small_data, tmp_path):
    root, _ = small_data
    with pytest.raises(ValueError, match="inside the dataset"):
        rv.export_rllib(root, "walker_stand", root / "rllib_view")
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        rv.export_rllib(root, "walker_stand", tmp_path / "f")
    with pytest.raises(ValueError, match="belongs to domain 'quadruped'|quadruped"):
        rv.export_rllib(root, "quadruped_walk", tmp_path / "v")


def test_input_read_schema_names_rllib_columns():
    from ray.rllib.core.columns import Columns
    from ray.rllib.offline.offline_prelearner import SCHEMA

    assert set(rv.INPUT_READ_SCHEMA) <= set(SCHEMA)  # only keys RLlib's reader knows
    need = {Columns.OBS: "observation", Columns.ACTIONS: "action", Columns.REWARDS: "reward",
            Columns.NEXT_OBS: "next_observation", Columns.TERMINATEDS: "terminated",
            Columns.TRUNCATEDS: "truncated", Columns.EPS_ID: "episode_id"}
    assert {k: rv.INPUT_READ_SCHEMA[k] for k in need} == need
    assert set(rv.INPUT_READ_SCHEMA.values()) <= set(rv.VIEW_COLUMNS)


def test_rllib_maps_view_rows_to_transitions(small_data, tmp_path):
    """RLlib's own column reader (``OfflinePreLearner._map_to_episodes``) on the exported view."""
    from types import SimpleNamespace

    from ray.rllib.algorithms.bc import BCConfig
    from ray.rllib.offline.offline_prelearner import OfflinePreLearner

    root, live = small_data
    rv.export_rllib(root, "walker_stand", tmp_path / "view")
    _, v = _read_view(tmp_path / "view")
    cols = list(rv.INPUT_READ_SCHEMA.values())
    batch = {c: (np.array(v[c], dtype=np.float32) if isinstance(v[c][0], list) else np.array(v[c])) for c in cols}
    config = BCConfig().offline_data(input_read_schema=dict(rv.INPUT_READ_SCHEMA))
    episodes = OfflinePreLearner._map_to_episodes(SimpleNamespace(config=config), batch)["episodes"]
    assert len(episodes) == 19
    ep, rew = live["be1"]
    k = 6 + 6   # be0 has 6 transitions; be1's last transition is the 7th of be1
    e = episodes[k]
    assert e.id_ == "be1" and e.is_terminated and not e.is_truncated
    np.testing.assert_array_equal(e.get_observations(0), ep.observation[6])
    np.testing.assert_array_equal(e.get_observations(1), ep.observation[7])
    np.testing.assert_array_equal(e.get_actions(0), ep.action[7])
    assert e.get_rewards(0) == pytest.approx(rew[7], abs=1e-6)
    assert episodes[5].is_truncated and not episodes[5].is_terminated   # be0's last step: time limit
    assert not episodes[4].is_done
    assert all(not e.extra_model_outputs for e in episodes)   # every read column is mapped


def test_rllib_trial_config_is_strict(small_data):
    root, _ = small_data
    base = {"dataset": str(root), "task": "walker_stand", "steps": 20, "eval_every": 20, "report_every": 10}
    cfg = TrialConfig.from_dict(dict(base, learner="rllib_cql", learner_config={"min_q_weight": 1.0}))
    hp = cfg.resolved_learner_config()
    assert hp["min_q_weight"] == 1.0 and hp["hidden_dim"] == 256 and hp["batch_size"] == 256
    assert TrialConfig.from_dict(dict(base, learner="rllib_bc", preset="paper")).resolved_learner_config() == \
        {"hidden_dim": 1024, "num_layers": 2, "batch_size": 1024, "lr": 1e-4}
    with pytest.raises(ValueError, match=r"unknown rllib_bc hyperparameter\(s\) \['min_q_weight'\]"):
        TrialConfig.from_dict(dict(base, learner="rllib_bc", learner_config={"min_q_weight": 1.0}))
    with pytest.raises(ValueError, match="rllib_cql lr must be in"):
        TrialConfig.from_dict(dict(base, learner="rllib_cql", learner_config={"lr": -1}))
    with pytest.raises(ValueError, match="unknown learner 'rllib_sac'.*rllib_bc"):
        TrialConfig.from_dict(dict(base, learner="rllib_sac"))
    with pytest.raises(ValueError, match="common divisor >= 2"):
        TrialConfig.from_dict(dict(base, learner="rllib_cql", steps=21, eval_every=21, report_every=5))
    ac = rp.build_algorithm_config("rllib_cql", small_data[0], "walker", "stand", 24, 6, hp, updates_per_iter=2)
    assert ac.tau == pytest.approx(1 - (1 - 0.005) ** 2) and ac.min_q_weight == 1.0 and ac.bc_iters == 0
    assert ac.actor_lr == ac.critic_lr == ac.alpha_lr == 3e-4 and ac.lr is None
    assert ac.input_read_schema == rv.INPUT_READ_SCHEMA and ac.dataset_num_iters_per_learner == 2
    assert ac.num_env_runners == 0 and ac.train_batch_size_per_learner == 256
    assert updates_per_iteration(10_000, 5_000, 1_000) == 1000
    assert updates_per_iteration(20, 20, 10) == 10
    assert updates_per_iteration(21, 21, 7) == 7 and updates_per_iteration(7, 5, 5) == 1
    assert updates_per_iteration(10_000, 5_000, 1_000, "rllib_cql") == 2   # target nets: see docstring
    assert updates_per_iteration(21, 21, 7, "rllib_cql") == 7


@pytest.mark.ray
def test_ray_data_reads_bex_dataset(small_data, ray_session):
    import ray

    root, _ = small_data
    ds = Dataset(root)
    rd = rp.read_bex_ray(root)
    batch = rd.take_all()
    assert len(batch) == ds.num_rows == 22
    assert {"domain", "objective", "param", "seed", "observation", "action", "is_first"} <= set(rd.schema().names)
    by_objective = {}
    for row in batch:
        by_objective.setdefault((row["domain"], row["objective"], row["param"], row["seed"]), 0)
        by_objective[(row["domain"], row["objective"], row["param"], row["seed"])] += 1
    assert by_objective == {("walker", "be", "0.5", "0"): 7 + 8, ("walker", "shannon", "none", "0"): 7}
    assert sum(r["is_first"] for r in batch) == 3
    # Plain read_parquet(root) sees the same rows: relabel caches are Arrow IPC (.arrow), not Parquet.
    assert ray.data.read_parquet(str(root)).count() == ds.num_rows
    assert list((root / "domain=walker").rglob("_rewards/*/*.arrow"))


@pytest.mark.ray
def test_rllib_bc_and_cql_as_tune_trials(small_data, ray_session, tmp_path):
    from bex.cluster.train import run_trials

    root, _ = small_data
    common = {"dataset": str(root), "task": "walker_stand", "eval_episodes": 1, "steps": 4, "eval_every": 4,
              "report_every": 2}
    trials = [
        TrialConfig.from_dict(dict(common, learner="rllib_bc", learner_config={"batch_size": 8, "hidden_dim": 16})),
        TrialConfig.from_dict(dict(common, learner="rllib_cql",
                                   learner_config={"batch_size": 8, "hidden_dim": 16, "num_actions": 2})),
    ]
    leaked_before = set(Path(tempfile.gettempdir()).glob("bex-ckpt-*"))
    grid = run_trials(trials, name="rllib", storage=str(tmp_path), resources={"cpu": 1}, max_concurrent=1,
                      max_failures=0, verbose=0)
    assert len(grid) == 2
    assert set(Path(tempfile.gettempdir()).glob("bex-ckpt-*")) <= leaked_before  # copied to storage, then removed
    for r in grid:
        assert r.error is None, r.error
        m = r.metrics
        learner = r.config["trial"]["learner"]
        assert m["steps"] == 4 and m["wall_s"] > 0
        assert math.isfinite(m["eval/return_mean"]) and m["eval/return_mean"] > 0, learner
        assert math.isfinite(m["eval/return_std"]) and m["eval/episodes"] == 1
        # RLlib really ran `steps` updates on the 19 transitions, epoch after epoch: BC drops the short
        # last batch of an epoch (4 x 8), CQL's training_step cannot, so it trains on 8, 8, 3, 8.
        expected = 4 * 8 if learner == "rllib_bc" else 8 + 8 + 3 + 8
        assert m["rllib/num_module_steps_trained_lifetime"] == expected, learner
        loss = "rllib/policy_loss"
        assert math.isfinite(m[loss]), learner
        if learner == "rllib_cql":
            assert math.isfinite(m["rllib/cql_loss"]) and m["rllib/cql_loss"] != 0.0
        df = r.metrics_dataframe
        assert list(df["steps"]) == [2, 4]
        # the final evaluation left a checkpoint a restarted trial resumes from
        assert r.checkpoint is not None, learner
        with r.checkpoint.as_directory() as cdir:
            meta = json.loads((Path(cdir) / rp.RLLIB_STATE_FILE).read_text())
        assert meta["steps"] == 4 and meta["last_eval"]["eval/at_step"] == 4, learner
        assert meta["last_eval"]["eval/return_mean"] == pytest.approx(m["eval/return_mean"])


@pytest.mark.ray
def test_rllib_checkpoint_round_trip_reproduces_the_policy(small_data, ray_session, tmp_path):
    root, _ = small_data
    view = tmp_path / "view"
    view.mkdir()
    rv.write_trial_view(Dataset(root).transitions("walker_stand"), view, seed=0)
    hp = dict(resolved_rllib_config("rllib_cql", "small", {"batch_size": 8, "hidden_dim": 16, "num_actions": 2}))

    def build():
        return rp.build_algorithm_config("rllib_cql", view, "walker", "stand", 24, 6, hp, seed=0,
                                        updates_per_iter=2).build_algo()

    a = build()
    for _ in range(3):
        a.train()
    obs = np.random.default_rng(0).normal(size=(5, 24)).astype(np.float32)
    before = np.stack([rp.module_policy(a)(o) for o in obs])
    rp.save_rllib_checkpoint(a, tmp_path / "ckpt", {"steps": 3, "tag": "x"})
    b = build()
    fresh = np.stack([rp.module_policy(b)(o) for o in obs])
    assert not np.allclose(fresh, before)  # a new algorithm acts differently ...
    assert rp.restore_rllib_checkpoint(b, tmp_path / "ckpt") == {"steps": 3, "tag": "x"}
    np.testing.assert_allclose(np.stack([rp.module_policy(b)(o) for o in obs]), before, rtol=1e-6)  # ... until restored
    a.stop()
    b.stop()
    del a, b
    gc.collect()  # finalise RLlib's data iterators while Ray is still up (else they warn at interpreter exit)
