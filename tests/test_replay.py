import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from bex.envs import Env, env_spec
from bex.replay import Dataset, DatasetWriter, Episode, export_npz, relabel, step_schema
from bex.replay.relabel import process_pool_map
from tests.helpers import collect_episode

WALKER = env_spec("walker", "stand")


def random_episode(eid: str, n: int, rng, spec=WALKER, intrinsic=True) -> Episode:
    act = rng.standard_normal((n + 1, spec.action_dim)).astype(np.float32)
    act[0] = 0
    disc = np.ones(n + 1, np.float32)
    return Episode(eid, rng.standard_normal((n + 1, spec.obs_dim)).astype(np.float32), act,
                   rng.standard_normal((n + 1, spec.physics_dim)), disc,
                   rng.standard_normal(n + 1).astype(np.float32) if intrinsic else None)


def test_read_back_is_bit_identical(tmp_path):
    rng = np.random.default_rng(0)
    eps = [random_episode(f"e{i}", 7 + i, rng, intrinsic=(i % 2 == 0)) for i in range(4)]
    with DatasetWriter(tmp_path, WALKER, "be", 0.5, 3, rows_per_file=20) as w:
        for e in eps:
            w.write_episode(e)
    assert len(w.files) >= 2  # rows_per_file split the episodes over files
    ds = Dataset(tmp_path)
    assert ds.partitions == [{"domain": "walker", "objective": "be", "param": "0.5", "seed": "3"}]
    arr = ds.load()
    assert np.array_equal(arr.observation, np.concatenate([e.observation for e in eps]))
    assert np.array_equal(arr.action, np.concatenate([e.action for e in eps]))
    assert np.array_equal(arr.physics, np.concatenate([e.physics for e in eps]))  # float64, bit-exact
    assert arr.physics.dtype == np.float64 and arr.observation.dtype == np.float32
    assert list(arr.episode_id[:8]) == ["e0"] * 8 and arr.is_first.sum() == 4 and arr.is_last.sum() == 4
    assert np.array_equal(arr.step[:8], np.arange(8))
    # the explorer without intrinsic reward stores nulls, read back as NaN
    assert np.isnan(arr.reward_intrinsic[8:17]).all() and not np.isnan(arr.reward_intrinsic[:8]).any()


def test_transitions_alignment_by_hand(tmp_path):
    spec = WALKER
    obs = np.arange(4 * spec.obs_dim, dtype=np.float32).reshape(4, -1)
    act = np.zeros((4, spec.action_dim), np.float32)
    act[1:, 0] = [10, 20, 30]
    ep = Episode("a", obs, act, np.zeros((4, spec.physics_dim)), np.array([1, 1, 1, 0], np.float32),
                 np.array([0, 1, 2, 3], np.float32))
    with DatasetWriter(tmp_path, spec, "x", None, 0) as w:
        w.write_episode(ep)
    tr = Dataset(tmp_path).transitions()  # intrinsic rewards
    assert len(tr) == 3
    assert np.array_equal(tr.obs, obs[:3]) and np.array_equal(tr.next_obs, obs[1:])
    assert np.array_equal(tr.action[:, 0], [10, 20, 30]) and np.array_equal(tr.reward, [1, 2, 3])
    assert np.array_equal(tr.discount, [1, 1, 0]) and np.array_equal(tr.is_last, [False, False, True])


def test_partition_filters(tmp_path):
    rng = np.random.default_rng(1)
    for obj, param in [("be", 0.5), ("be", 2.0), ("shannon", None)]:
        with DatasetWriter(tmp_path, WALKER, obj, param, 0) as w:
            w.write_episode(random_episode(f"{obj}{param}", 5, rng))
    assert len(Dataset(tmp_path).files) == 3
    assert len(Dataset(tmp_path, objective="be").files) == 2
    assert len(Dataset(tmp_path, objective="be", param=2.0).files) == 0  # partition value is "2"
    assert len(Dataset(tmp_path, objective="be", param="2").files) == 1
    assert len(Dataset(tmp_path, param=[0.5, "none"]).files) == 2
    with pytest.raises(ValueError, match="unknown partition filter 'alpha'"):
        Dataset(tmp_path, alpha=1)


def test_two_writers_same_partition_never_overwrite(tmp_path):
    rng = np.random.default_rng(2)
    w1 = DatasetWriter(tmp_path, WALKER, "random", None, 0)
    w2 = DatasetWriter(tmp_path, WALKER, "random", None, 0)
    for i in range(3):
        w1.write_episode(random_episode(f"w1-{i}", 4, rng))
        w2.write_episode(random_episode(f"w2-{i}", 4, rng))
        w1.flush(), w2.flush()
    assert w1.writer_id != w2.writer_id
    ids = set(Dataset(tmp_path).load(["episode_id"]).episode_id)
    assert ids == {f"w{j}-{i}" for j in (1, 2) for i in range(3)}
    # even a forced name collision refuses to clobber a committed file
    w3 = DatasetWriter(tmp_path, WALKER, "random", None, 0, writer_id=w1.writer_id)
    w3.write_episode(random_episode("intruder", 4, rng))
    with pytest.raises(FileExistsError):
        w3.flush()
    assert "intruder" not in set(Dataset(tmp_path).load(["episode_id"]).episode_id)
    assert not [p for p in tmp_path.rglob(".*tmp*")]


def test_writer_killed_mid_episode_leaves_nothing_visible(tmp_path):
    code = textwrap.dedent(f"""
        import os, signal, numpy as np
        from bex.envs import env_spec
        from bex.replay import DatasetWriter, Episode
        spec = env_spec("walker", "stand")
        w = DatasetWriter({str(tmp_path)!r}, spec, "random", None, 0, rows_per_file=10_000)
        def ep(i):
            n = 11
            return Episode(f"e{{i}}", np.zeros((n, 24), np.float32), np.zeros((n, 6), np.float32),
                           np.zeros((n, 18)), np.ones(n, np.float32))
        w.write_episode(ep(0)); w.flush()          # committed
        w.write_episode(ep(1))                      # buffered only
        # simulate a crash in the middle of committing: a half-written temporary file
        open(os.path.join(w.pdir, ".x-000001.parquet.tmp-1"), "wb").write(b"PAR1 half")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    p = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1])
    assert p.returncode == -signal.SIGKILL
    arr = Dataset(tmp_path).load(["episode_id", "is_first"])
    assert set(arr.episode_id) == {"e0"} and len(arr) == 11


def test_replaying_stored_episode_reproduces_observations(tmp_path):
    for domain, task in [("walker", "walk"), ("quadruped", "run")]:
        ep, _, spec = collect_episode(domain, task, seed=7, steps=120, episode_id=domain)
        with DatasetWriter(tmp_path, spec, "random", None, 0) as w:
            w.write_episode(ep)
        arr = Dataset(tmp_path, domain=domain).load()
        env = Env(domain, task, seed=123)  # another seed: the state must come from the data
        env.reset()
        env.set_physics_state(arr.physics[0])
        np.testing.assert_array_equal(env.observation(), arr.observation[0])
        for t in range(1, len(arr)):
            obs = env.step(arr.action[t]).obs
            np.testing.assert_allclose(obs, arr.observation[t], rtol=0, atol=1e-6)
        assert np.max(np.abs(env.physics_state() - arr.physics[-1])) <= 1e-6


def test_relabel_equals_live_rewards_and_caches(tmp_path):
    for domain, tasks in [("walker", ["stand", "walk", "run"]), ("quadruped", ["walk", "run"])]:
        root = tmp_path / domain
        lives = {}
        for task in tasks:
            ep, live, spec = collect_episode(domain, task, seed=11, steps=100, episode_id=task)
            lives[task] = live
            with DatasetWriter(root, spec, "random", None, 0, writer_id=task) as w:
                w.write_episode(ep)
        ds = Dataset(root)
        for task in tasks:
            res = relabel(root, f"{domain}_{task}", map_fn=process_pool_map(2), chunk_rows=64)
            assert res["computed_rows"] == ds.num_rows
            rewards = ds.rewards(task)
            arr = ds.load(["episode_id", "is_first"])
            mine = rewards[arr.episode_id == task]
            assert np.max(np.abs(mine[1:] - lives[task][1:])) <= 1e-6
        assert relabel(root, f"{domain}_{tasks[0]}")["computed_rows"] == 0  # cached
        assert ds.cached_tasks() == sorted(f"{domain}_{t}" for t in tasks)


def test_export_npz(tmp_path):
    ep, live, spec = collect_episode("walker", "stand", seed=1, steps=30)
    ep2, _, _ = collect_episode("walker", "stand", seed=2, steps=20, episode_id="b")
    ep2.discount[-1] = 0.0  # a true terminal
    with DatasetWriter(tmp_path / "d", spec, "random", None, 0) as w:
        w.write_episode(ep), w.write_episode(ep2)
    relabel(tmp_path / "d", "walker_stand", map_fn=process_pool_map(1))
    out = tmp_path / "x.npz"
    export_npz(tmp_path / "d", "stand", out)
    z = np.load(out)
    assert z["observations"].shape == (50, 24) and z["actions"].shape == (50, 6)
    np.testing.assert_allclose(z["rewards"][:30], live[1:], atol=1e-6)
    np.testing.assert_array_equal(z["next_observations"][:30], ep.observation[1:])
    assert z["terminals"].sum() == 1 and z["terminals"][-1]
    assert z["timeouts"].sum() == 1 and z["timeouts"][29]
    assert not list(tmp_path.glob(".*"))


def test_bad_datasets_give_one_line_errors(tmp_path):
    rng = np.random.default_rng(3)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Dataset(tmp_path / "missing")
    with DatasetWriter(tmp_path / "ok", WALKER, "random", None, 0) as w:
        w.write_episode(random_episode("a", 50, rng))
    f = w.files[0]
    # truncated file
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"corrupt or truncated Parquet file .*\.parquet") as e:
        Dataset(tmp_path / "ok")
    assert "\n" not in str(e.value)
    # corrupt bytes in the middle (footer intact): detected when read
    f.write_bytes(data[:200] + bytes(rng.integers(0, 256, 2000, dtype=np.uint8)) + data[2200:])
    with pytest.raises(ValueError, match=r"corrupt"):
        Dataset(tmp_path / "ok").load()
    # unknown schema version in a file
    f.unlink()
    t = random_episode("b", 5, rng).to_table(step_schema(24, 6, 18).with_metadata({b"bex.schema_version": b"99"}))
    pq.write_table(t, f)
    with pytest.raises(ValueError, match="unknown schema version 99"):
        Dataset(tmp_path / "ok")
    # unknown dataset schema version
    meta = tmp_path / "ok" / "_bex_dataset.json"
    meta.write_text(json.dumps({"schema_version": 7}))
    with pytest.raises(ValueError, match="unknown schema version 7"):
        Dataset(tmp_path / "ok")
    # output path that is a file
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        DatasetWriter(tmp_path / "file", WALKER, "random", None, 0)


def test_partition_of_another_environment_is_refused(tmp_path):
    DatasetWriter(tmp_path, WALKER, "random", None, 0, run_key="r1")
    with pytest.raises(ValueError, match="different run"):
        DatasetWriter(tmp_path, WALKER, "random", None, 0, run_key="r2")
