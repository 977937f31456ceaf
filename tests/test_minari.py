"""bex datasets in the Farama ecosystem: Minari export and import, the gymnasium environment, the dataset card.

Real Minari 0.5.4 (``create_dataset_from_buffers``, ``load_dataset``, ``recover_environment``), real
dm_control physics, real Parquet; the reference for every array is bex's own npz export and its relabel cache.
"""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from tests.conftest import BEX

minari = pytest.importorskip("minari")

T = "walker_walk"


def _dataset(root, episodes=((0, 60), (1, 45)), objective="random", seed=0, terminal_last=False):
    """A bex partition of live random-action episodes (physics recorded, explorer rewards in ``reward_intrinsic``),
    relabelled for walker_walk; ``terminal_last``: the last episode ends in a discount-0 step (walker never
    terminates by itself, so this is written by hand)."""
    from bex.replay import DatasetWriter, process_pool_map, relabel
    from tests.helpers import collect_episode

    spec = None
    eps = []
    for s, n in episodes:
        ep, _, spec = collect_episode("walker", "stand", s, n, episode_id=f"ep{s}")
        ep.reward_intrinsic = np.random.default_rng(s).random(n + 1).astype(np.float32)
        eps.append(ep)
    if terminal_last:
        eps[-1].discount[-1] = 0.0
    config = {"explorer": "random", "domain": "walker", "steps": sum(n for _, n in episodes), "seed": seed}
    with DatasetWriter(root, spec, objective, None, seed, config=config) as w:
        for ep in eps:
            w.write_episode(ep)
    relabel(root, T, map_fn=process_pool_map(1))
    return root


@pytest.fixture
def mroot(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return tmp_path / "minari"


def _content(root, **filters):
    """The content digest of one partition (its fingerprint without the partition's name)."""
    from bex.replay import Dataset

    (line,) = Dataset(root, **filters).partition_digests().values()
    return line.rsplit("=", 1)[1]


def test_export_loads_in_minari_with_the_npz_exports_arrays_and_recovers_the_environment(tmp_path, mroot):
    from bex.replay import export_npz
    from bex.replay.minari_io import export_minari

    ds = _dataset(tmp_path / "ds")
    res = export_minari(ds, T, "bex/walker-random-v0", ref_min_score=32.307, ref_max_score=1000.0,
                        author="bex tests")
    assert (res["episodes"], res["steps"], res["physics"]) == (2, 105, True)
    z = np.load(export_npz(ds, T, tmp_path / "ref.npz")["out"])

    data = minari.load_dataset("bex/walker-random-v0")
    eps = list(data.iterate_episodes())
    assert [len(e) for e in eps] == [60, 45] and data.total_steps == 105
    for e in eps:
        assert e.observations.shape == (len(e) + 1, 24) and e.observations.dtype == np.float32
    cat = np.concatenate
    assert np.array_equal(cat([e.observations[:-1] for e in eps]), z["observations"])
    assert np.array_equal(cat([e.observations[1:] for e in eps]), z["next_observations"])
    assert np.array_equal(cat([e.actions for e in eps]), z["actions"])
    assert np.array_equal(cat([e.rewards for e in eps]).astype(np.float32), z["rewards"])
    assert np.array_equal(cat([e.terminations for e in eps]), z["terminals"])
    assert np.array_equal(cat([e.truncations for e in eps]), z["timeouts"])
    assert [bool(e.truncations[-1]) for e in eps] == [True, True]  # each episode ends cut off, not terminal
    assert minari.get_normalized_score(data, np.array([32.307, 1000.0])).tolist() == [0.0, 1.0]
    md = data.storage.metadata
    assert md["bex_fingerprint"] == res["fingerprint"] and md["bex_task"] == T and md["bex_physics"] is True
    from importlib.metadata import version

    assert md["algorithm_name"] == "bex random actions"
    assert f"dm_control=={version('dm_control')}" in md["requirements"]

    env = data.recover_environment()
    assert env.spec.id == "bex/walker_walk-v0"
    o1, _ = env.reset(seed=7)
    o2, _ = env.reset(seed=7)
    assert o1.shape == (24,) and np.array_equal(o1, o2)  # a seeded reset is reproducible
    obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
    assert obs in env.observation_space and 0.0 <= reward <= 1.0 and not (terminated or truncated)
    env.close()


def test_physics_in_infos_relabels_to_the_datasets_rewards_for_any_task(tmp_path, mroot):
    from bex.envs import TaskReward
    from bex.replay import Dataset, process_pool_map, relabel
    from bex.replay.minari_io import export_minari

    ds = _dataset(tmp_path / "ds")
    export_minari(ds, T, "bex/phys-v0")
    relabel(ds, "walker_run", map_fn=process_pool_map(1))
    want_run = Dataset(ds).transitions("walker_run").reward
    walk, run = TaskReward("walker", "walk"), TaskReward("walker", "run")
    got_walk, got_run = [], []
    for e in minari.load_dataset("bex/phys-v0").iterate_episodes():
        phys = e.infos["physics"]
        assert phys.shape == (len(e) + 1, 18)
        act = np.concatenate([np.zeros((1, 6), np.float32), e.actions])
        got_walk.append(walk(phys, act)[1:])
        got_run.append(run(phys, act)[1:])
        assert np.array_equal(got_walk[-1], e.rewards)  # the stored rewards are the physics' rewards
    assert np.array_equal(np.concatenate(got_run).astype(np.float32), want_run)


def test_minari_import_round_trips_rows_rewards_and_content(tmp_path, mroot):
    from bex.analysis.info import dataset_info
    from bex.replay import Dataset, process_pool_map, relabel
    from bex.replay.importers import detect_format
    from bex.replay.minari_io import export_minari, import_minari

    ds = _dataset(tmp_path / "ds", terminal_last=True)
    fp = export_minari(ds, T, "bex/rt-v0")["fingerprint"]
    eps = list(minari.load_dataset("bex/rt-v0").iterate_episodes())
    assert [(bool(e.terminations[-1]), bool(e.truncations[-1])) for e in eps] == [(False, True), (True, False)]
    assert not any(e.terminations[:-1].any() or e.truncations[:-1].any() for e in eps)
    path = mroot / "bex" / "rt-v0"
    assert detect_format(path) == detect_format("bex/rt-v0") == "minari"
    assert detect_format(ds) == "exorl"
    res = import_minari(path, tmp_path / "back", T)
    assert (res["episodes"], res["transitions"], res["physics"], res["source_fingerprint"]) == (2, 105, True, fp)
    a, b = Dataset(ds), Dataset(tmp_path / "back")
    sa, sb = a.load(), b.load()
    for c in ("observation", "action", "physics", "discount", "is_first", "is_last", "step", "reward_intrinsic"):
        assert np.array_equal(getattr(sa, c), getattr(sb, c)), c
    assert (sb.discount == 0).sum() == 1 and sb.discount[-1] == 0  # the terminal step came back
    assert np.array_equal(a.transitions(T).reward, b.transitions(T).reward)
    assert _content(ds) == _content(tmp_path / "back")  # same rows, whatever the partition is called
    for root in (ds, tmp_path / "back"):
        relabel(root, "walker_run", map_fn=process_pool_map(1))
    assert np.array_equal(a.transitions("walker_run").reward, b.transitions("walker_run").reward)
    info = dataset_info(tmp_path / "back")
    assert info["partitions"][0]["partition"] == "domain=walker/objective=minari/param=none/seed=0"


def test_data_without_physics_and_shuffled_transitions_travel_through_minari(tmp_path, mroot):
    """A D4RL-style replay-buffer dump (shuffled): one-step episodes without physics; exported and imported back
    it keeps its rows, its rewards and its layout, and relabelling still refuses it in one line."""
    from bex.analysis.info import dataset_info
    from bex.replay import Dataset, export_npz
    from bex.replay.importers import import_d4rl
    from bex.replay.minari_io import export_minari, import_minari

    z = np.load(export_npz(_dataset(tmp_path / "ds"), T, tmp_path / "a.npz")["out"])
    order = np.random.default_rng(0).permutation(len(z["rewards"]))
    np.savez(tmp_path / "buf.npz", **{k: z[k][order] for k in z.files})
    import_d4rl(tmp_path / "buf.npz", tmp_path / "dump", T)
    res = export_minari(tmp_path / "dump", T, "bex/dump-v0")
    assert (res["episodes"], res["steps"], res["physics"]) == (105, 105, False)
    data = minari.load_dataset("bex/dump-v0")
    assert data.storage.metadata["bex_layout"] == "transitions"
    assert all(len(e) == 1 and e.infos == {} for e in data.iterate_episodes())
    back = import_minari("bex/dump-v0", tmp_path / "back", T)
    assert (back["physics"], back["layout"], back["transitions"]) == (False, "transitions", 105)
    tr, ref = Dataset(tmp_path / "back").transitions(T), Dataset(tmp_path / "dump").transitions(T)
    assert np.array_equal(tr.obs, ref.obs) and np.array_equal(tr.reward, ref.reward)
    assert np.array_equal(tr.obs, z["observations"][order]) and np.array_equal(tr.next_obs,
                                                                               z["next_observations"][order])
    assert dataset_info(tmp_path / "back")["partitions"][0]["layout"] == "transitions"
    from bex.replay.card import card_path, read_card_header

    assert read_card_header(tmp_path / "back")["partitions"][0]["layout"] == "transitions"
    assert "one-step episodes" in card_path(tmp_path / "back").read_text()
    with pytest.raises(ValueError, match="has no physics state"):
        from bex.replay import process_pool_map, relabel

        relabel(tmp_path / "back", "walker_run", map_fn=process_pool_map(1))


def test_the_gymnasium_id_builds_the_datasets_environment():
    import gymnasium as gym

    from bex.envs import Env

    env = gym.make("bex.envs.gym:bex/walker_run-v0")  # importing the module registers the suite's tasks
    assert gym.spec("bex/cheetah_run-v0").kwargs == {"domain": "cheetah", "task": "run"}
    obs, _ = env.reset(seed=3)
    ref = Env("walker", "run")
    ref.reseed(3)
    assert np.array_equal(obs, ref.reset().obs)  # reset(seed) is bex's own seeded reset
    steps, done = 0, False
    while not done:
        _, _, terminated, truncated, _ = env.step(np.zeros(6, np.float32))
        steps, done = steps + 1, terminated or truncated
    assert (steps, terminated, truncated) == (1000, False, True)  # dm_control's time limit, no TimeLimit wrapper


def test_export_refuses_and_leaves_nothing(tmp_path, mroot):
    from bex.replay import DatasetWriter
    from bex.replay.minari_io import export_minari
    from tests.helpers import collect_episode

    ds = _dataset(tmp_path / "ds")
    ep, _, spec = collect_episode("walker", "stand", 5, 20)
    with DatasetWriter(ds, spec, "random", None, 1) as w:
        w.write_episode(ep)
    with pytest.raises(ValueError, match="selects 2"):
        export_minari(ds, T, "bex/two-v0")
    with pytest.raises(ValueError, match="is not relabelled"):
        export_minari(ds, "walker_run", "bex/x-v0", seed=0)
    export_minari(ds, T, "bex/one-v0", seed=0)
    before = sorted(p.relative_to(mroot) for p in mroot.rglob("*"))
    with pytest.raises(ValueError, match="already exists"):
        export_minari(ds, T, "bex/one-v0", seed=0)
    with pytest.raises(ValueError, match="NAMESPACE/NAME-vN"):
        export_minari(ds, T, "one", seed=0)
    assert sorted(p.relative_to(mroot) for p in mroot.rglob("*")) == before  # no hidden build folder left


def test_the_card_is_written_updated_on_relabel_and_named_by_info(tmp_path):
    from bex.analysis.info import dataset_info
    from bex.replay import Dataset, process_pool_map, relabel
    from bex.replay.card import read_card_header, write_card

    ds = _dataset(tmp_path / "ds")
    p = write_card(ds)
    h = read_card_header(ds)
    assert h["tasks_relabelled"] == [T] and h["transitions"] == 105 and h["episodes"] == 2
    assert h["fingerprint"] == Dataset(ds).fingerprint() == dataset_info(ds)["fingerprint"]
    assert dataset_info(ds)["card"] == str(p) and p.name.startswith("_")  # skipped by Parquet discovery
    text = p.read_text()
    assert f"bex collect --out {ds} --domain walker --explorer random --steps 105 --seed 0" in text
    assert "minari.load_dataset" in text and "ray.data.read_parquet" in text
    relabel(ds, "walker_run", map_fn=process_pool_map(1))
    sha = h["partitions"][0]["sha256"]
    p.write_text(p.read_text().replace(sha, "f" * 64))  # a planted digest survives: the files did not change
    write_card(ds)
    h2 = read_card_header(ds)
    assert h2["tasks_relabelled"] == ["walker_run", T] and h2["partitions"][0]["sha256"] == "f" * 64
    assert not [q for q in ds.iterdir() if q.name.startswith(".")]  # written through a temporary, renamed
    from bex.replay import DatasetWriter
    from tests.helpers import collect_episode

    ep, _, spec = collect_episode("walker", "stand", 9, 10)
    with DatasetWriter(ds, spec, "random", None, 0, config=json.loads(json.dumps(
            Dataset(ds).partition_meta(Dataset(ds).partitions[0])["config"]))) as w:
        w.write_episode(ep)  # a new file in the partition: its fingerprint is computed again
    relabel(ds, T, map_fn=process_pool_map(1))
    write_card(ds)
    h3 = read_card_header(ds)
    assert h3["transitions"] == 115 and h3["fingerprint"] == Dataset(ds).fingerprint() != h["fingerprint"]


def test_cli_export_and_import_minari_end_to_end(tmp_path):
    ds = _dataset(tmp_path / "ds")
    part = next(ds.glob("domain=*/objective=*/param=*/seed=*"))
    env = {"MINARI_DATASETS_PATH": str(tmp_path / "elsewhere")}
    import os

    p = subprocess.run([BEX, "export", str(part), "--task", T, "--format", "minari", "--dataset-id", "bex/cli-v0",
                        "--out", str(tmp_path / "m")], capture_output=True, text=True, env={**os.environ, **env})
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["path"] == str(tmp_path / "m" / "bex" / "cli-v0") and not (tmp_path / "elsewhere").exists()
    md = json.loads((tmp_path / "m" / "bex" / "cli-v0" / "data" / "metadata.json").read_text())
    assert (md["ref_min_score"], md["ref_max_score"]) == (32.307, 1000.0)  # random policy, dm_control's maximum
    p = subprocess.run([BEX, "import", res["path"], "--task", T, "--out", str(tmp_path / "back")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1])["source_fingerprint"] == res["fingerprint"]
    assert (tmp_path / "back" / "_dataset_card.md").is_file()


def test_export_refuses_a_task_observed_differently_and_ids_minari_rejects(tmp_path, mroot):
    from bex.replay import DatasetWriter
    from bex.replay.minari_io import export_minari
    from tests.helpers import collect_episode

    ep, _, spec = collect_episode("cartpole", "balance", 0, 10)
    with DatasetWriter(tmp_path / "cp", spec, "random", None, 0) as w:
        w.write_episode(ep)
    with pytest.raises(ValueError, match="observes"):  # its recovered environment would not match the data
        export_minari(tmp_path / "cp", "cartpole_three_poles", "bex/cp-v0")
    ds = _dataset(tmp_path / "ds")
    with pytest.raises(ValueError, match="no dots"):  # Minari's DATASET_ID_RE has none
        export_minari(ds, T, "bex/walker-be-0.5-v0")
    assert not mroot.exists()


def test_a_failed_build_leaves_nothing(tmp_path, monkeypatch):
    """Minari failing inside the build (here made to fail): no dataset, no hidden folder, no root it created."""
    from bex.replay.minari_io import export_minari

    ds = _dataset(tmp_path / "ds")

    def broken(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(minari, "create_dataset_from_buffers", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export_minari(ds, T, "bex/fail-v0", tmp_path / "mroot")
    assert not (tmp_path / "mroot").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError):
        export_minari(ds, T, "bex/fail-v0", tmp_path / "kept")
    assert list((tmp_path / "kept").iterdir()) == []  # a root that existed stays, empty


def _minari_from(buffers, dataset_id, root):
    import warnings

    from bex.envs.gym import spaces
    from bex.replay.minari_io import _datasets_path

    obs, act = spaces(24, 6)
    with _datasets_path(root), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        minari.create_dataset_from_buffers(dataset_id, buffers, observation_space=obs, action_space=act,
                                           data_format="arrow")
    return root / dataset_id


def test_import_refuses_rewards_of_another_task_and_values_that_do_not_fit(tmp_path, mroot):
    from minari.data_collector.episode_buffer import EpisodeBuffer

    from bex.replay import Dataset
    from bex.replay.minari_io import episode_buffers, export_minari, import_minari

    ds = _dataset(tmp_path / "ds")
    export_minari(ds, T, "bex/walk-v0")
    with pytest.raises(ValueError, match="holds the rewards of walker_walk, not of --task walker_run"):
        import_minari("bex/walk-v0", tmp_path / "o1", "walker_run")
    steps = Dataset(ds).load()
    bufs = episode_buffers(steps, np.zeros(len(steps)), steps.physics)  # physics, but rewards that are not walk's
    src = _minari_from(bufs, "other/zeros-v0", mroot)
    with pytest.raises(ValueError, match=r"rewards\[0\] is 0 but the stored physics gives"):
        import_minari(src, tmp_path / "o2", T)
    b = bufs[0]
    obs = b.observations.copy()
    obs[3, 2] = np.nan
    bad = EpisodeBuffer(id=0, observations=obs, actions=b.actions, rewards=b.rewards, terminations=b.terminations,
                        truncations=b.truncations)
    with pytest.raises(ValueError, match=r"episode 0: observations\[3\] holds nan"):
        import_minari(_minari_from([bad], "other/nan-v0", mroot), tmp_path / "o3", T)
    assert not any((tmp_path / f"o{i}").exists() for i in (1, 2, 3))  # nothing written


def test_the_card_of_a_root_with_two_domains(tmp_path):
    from bex.replay import DatasetWriter
    from bex.replay.card import read_card_header, write_card
    from tests.helpers import collect_episode

    for domain, task in (("walker", "stand"), ("cheetah", "run")):
        ep, _, spec = collect_episode(domain, task, 0, 10)
        with DatasetWriter(tmp_path / "mix", spec, "random", None, 0) as w:
            w.write_episode(ep)
    write_card(tmp_path / "mix")
    h = read_card_header(tmp_path / "mix")
    assert h["domain"] == ["cheetah", "walker"] and h["collection_task"] == ["cheetah_run", "walker_stand"]
    assert h["observation_dim"] == [17, 24] and len(h["partitions"]) == 2 and h["transitions"] == 20
