"""Collection: plans, validation before any actor starts, the distributed learner, and kill tests."""
import signal
import subprocess
import time

import numpy as np
import pytest

from bex.actors.collect import CollectConfig, EnvWorkerCore, LearnerCore, plan_chunks
from bex.replay import Dataset
from tests.conftest import BEX
from tests.helpers import kill_descendant, last_json


def bex(*args, timeout=600):
    return subprocess.run([BEX, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def one_line_error(p, needle):
    assert p.returncode != 0, p.stdout
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("bex: error:") and needle in lines[0], p.stderr


def test_plan_chunks_is_exact():
    chunks = plan_chunks(2500, 1000, 2)
    assert [c.lengths for c in chunks] == [(1000, 1000), (500,)]
    assert sum(c.steps for c in chunks) == 2500 and [c.first_episode for c in chunks] == [0, 2]
    assert sum(c.steps for c in plan_chunks(1, 1000, 10)) == 1


@pytest.mark.parametrize("args,needle", [
    (["--explorer", "apt", "--objective", "be", "--alpha", "0"], "alpha=0.0 is out of range"),
    (["--explorer", "apt", "--objective", "be", "--alpha", "-1"], "alpha=-1.0"),
    (["--explorer", "apt", "--objective", "renyi", "--q", "1"], "q=1.0"),
    (["--explorer", "apt", "--objective", "shannon", "--k", "0"], "k=0"),
    (["--explorer", "apt", "--objective", "shannon", "--k", "128"], "k=128 is out of range"),  # small batch 128
    (["--explorer", "apt", "--objective", "tsallis"], "unknown objective 'tsallis'"),
    (["--explorer", "dqn"], "CollectConfig.explorer='dqn' not allowed"),
    (["--explorer", "apt", "--domain", "robot"], "unknown domain 'robot'"),
    (["--explorer", "apt", "--objective", "be"], "needs its parameter (--alpha)"),
    (["--explorer", "rnd", "--preset", "huge"], "CollectConfig.preset='huge' not allowed; must be one of 'small'"),
    (["--explorer", "apt", "--knn-local", "4"], "knn_local=4 needs knn_mode 'recent'"),
    (["--explorer", "apt", "--knn-mode", "recent", "--knn-local", "-2"], "knn_local=-2 is out of range"),
    (["--explorer", "apt", "--task", "fly"], "unknown task 'fly' for domain 'walker'"),
    (["--explorer", "apt", "--domain", "quadruped", "--task", "walker_stand"], "belongs to domain 'walker'"),
    (["--explorer", "apt", "--set", "hidden_dm=32"], "APTConfig: unknown key(s) ['hidden_dm']"),
    (["--explorer", "apt", "--tag", "Recent"], "tag='Recent' is invalid"),
    (["--explorer", "rnd", "--set", "hidden_dim=0"], "RNDConfig.hidden_dim=0 is out of range"),
    (["--explorer", "rnd", "--set", "batch_size"], "--set expects KEY=VALUE, got 'batch_size'"),
    (["--explorer", "random", "--domain", "quadruped", "--task", "escape"],  # terrain: needs OpenGL
     "cannot build the collection task quadruped_escape"),
])
def test_collect_bad_input_before_any_actor(tmp_path, args, needle):
    p = bex("collect", "--out", tmp_path / "d", "--steps", "100", *args)
    one_line_error(p, needle)
    assert not (tmp_path / "d").exists()


def test_grid_yaml_validation(tmp_path):
    cfg = tmp_path / "g.yaml"
    cfg.write_text("name: g\nout: x\nruns:\n  - {explorer: apt, objective: be, alfa: [0.5]}\n")
    one_line_error(bex("collect", "--config", cfg), "runs[0]: GridRun: unknown key(s) ['alfa']")
    cfg.write_text("name: g\nout: x\nruns:\n  - {explorer: apt, objective: be, alpha: [0.5, 11]}\n")
    one_line_error(bex("collect", "--config", cfg), "alpha=11.0 is out of range")


def test_grid_expands_the_paper_configs():
    from bex.pipelines.grids import load_grid

    paper = load_grid("tune_configs/collect_paper.yaml").runs_()
    # alpha x8, q x2, shannon, rnd, smm = 13 datasets per domain, walker and quadruped
    assert len(paper) == 26
    assert {c.steps for c in paper} == {500_000} and {c.preset for c in paper} == {"paper"}
    small = load_grid("tune_configs/collect_small.yaml").runs_()
    assert {c.partition_objective for c in small} >= {"random", "shannon", "be"}


def test_a_tag_keeps_runs_that_differ_in_knn_mode_apart(tmp_path):
    """Batch- and recent-mode runs of one objective: without a tag they would share a partition (refused)."""
    from bex.pipelines.grids import CollectGrid

    runs = [{"explorer": "apt", "objective": "be", "alpha": [0.5, 5]},
            {"explorer": "apt", "objective": "be", "alpha": [5], "explorer_config": {"knn_mode": "recent"}}]
    grid = {"name": "g", "out": str(tmp_path / "d"), "runs": runs, "seeds": [0, 1]}
    with pytest.raises(ValueError, match="write the same partition .*objective=be/param=5/seed=0"):
        CollectGrid.from_dict(grid).runs_()
    runs[1]["tag"] = "recent"
    cfgs = CollectGrid.from_dict(grid).runs_()
    parts = sorted(str(c.partition.relative_to(tmp_path / "d")) for c in cfgs)
    assert parts == sorted(f"domain=walker/objective={o}/param={a}/seed={s}"
                           for o, a in (("be", 0.5), ("be", 5), ("be-recent", 5)) for s in (0, 1))
    # an untagged run keeps the run key it had before tags existed (its checkpoints and datasets still resume):
    # the value bex computed for this config before the field was added
    old = CollectConfig(out="/elsewhere", explorer="apt", objective="be", param=0.5, seed=3)
    assert old.run_key() == "96eef698e887"
    tagged = [c for c in cfgs if c.tag][0]
    assert tagged.run_key() != CollectConfig(**{**tagged.to_dict(), "tag": None}).run_key()
    with pytest.raises(ValueError, match="tag='Recent mode' is invalid"):
        CollectConfig(out=str(tmp_path), explorer="apt", objective="be", param=5, tag="Recent mode")


def test_distributed_learner_in_process_exact_steps_and_updates(tmp_path):
    """Two workers' segments interleaved into one learner (no Ray): exact steps, URLB's update ratio."""
    cfg = CollectConfig(out=str(tmp_path), explorer="rnd", steps=1300, actors=2, preset="small",
                        episodes_per_chunk=1, explorer_config={"num_seed_frames": 200, "batch_size": 32,
                                                               "hidden_dim": 32}).validate()
    learner = LearnerCore(cfg, cfg.run_key())
    workers = [EnvWorkerCore(cfg, i) for i in range(2)]
    fb = [learner.next_ticket(i) for i in range(2)]
    assert fb[0]["ticket"].episode != fb[1]["ticket"].episode
    active = [0, 1]
    while active:
        for i in list(active):
            seg = workers[i].run_segment(fb[i], 77)
            if seg is None:
                active.remove(i)
                continue
            fb[i] = learner.ingest(seg)
    st = learner.status()
    assert st["done"] and st["committed_steps"] == 1300 and st["steps_ingested"] == 1300
    assert st["updates"] == (1300 - 200) // 2  # one update per 2 ingested steps after the seed frames
    arr = Dataset(tmp_path).load(["episode_id", "step", "is_first", "is_last"])
    assert len(arr) - arr.is_first.sum() == 1300 and arr.is_first.sum() == 2
    assert len(set(zip(arr.episode_id, arr.step))) == len(arr)
    # a worker killed mid-episode: its partial episode is dropped and the ticket reassigned
    cfg2 = CollectConfig(out=str(tmp_path / "b"), explorer="rnd", steps=1000, actors=2, preset="small",
                         episodes_per_chunk=1, explorer_config={"num_seed_frames": 2000}).validate()
    lc = LearnerCore(cfg2, cfg2.run_key())
    w = EnvWorkerCore(cfg2, 0)
    f = lc.ingest(w.run_segment(lc.next_ticket(0), 300))
    f = lc.abort(0)  # worker 0 died
    assert f["ticket"].episode == 0 and not f["accepted"]
    w = EnvWorkerCore(cfg2, 0)  # the restarted worker
    while (seg := w.run_segment(f, 400)) is not None:
        f = lc.ingest(seg)
    assert lc.status()["committed_steps"] == 1000 and lc.steps_ingested == 1300  # 300 dropped steps trained on
    assert len(Dataset(tmp_path / "b").load(["step"])) == 1001


def _wait_for_files(pdir, n, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pdir.exists() and len(list(pdir.glob("*.parquet"))) >= n:
            return True
        time.sleep(0.3)
    return False


# narrow networks, a short k-NN window and an update every 4 steps: the kill/resume tests test the plumbing
SMALL_APT = ["--set", "hidden_dim=32", "--set", "batch_size=32", "--set", "knn_window=1024",
             "--set", "update_every_steps=4"]


def _check_dataset(out, steps):
    arr = Dataset(out).load(["episode_id", "step", "is_first"])
    assert len(arr) - arr.is_first.sum() == steps
    assert len(set(zip(arr.episode_id, arr.step))) == len(arr)  # no duplicated (episode_id, step)
    assert all(np.array_equal(arr.step[arr.episode_id == e], np.arange((arr.episode_id == e).sum()))
               for e in set(arr.episode_id))  # every episode whole, rows in order


@pytest.mark.ray
def test_kill_env_worker_and_learner_mid_run(tmp_path):
    out = tmp_path / "d"
    proc = subprocess.Popen([BEX, "collect", "--explorer", "apt", "--objective", "be", "--alpha", "0.5",
                             "--steps", "4500", "--actors", "2", "--out", out, "--episodes-per-chunk", "1",
                             "--knn-mode", "recent", *SMALL_APT],  # recent: the learner scores against its replay
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pdir = out / "domain=walker" / "objective=be" / "param=0.5" / "seed=0"
    assert _wait_for_files(pdir, 1)
    kill_descendant(proc.pid, "ray::EnvWorkerCore")
    assert _wait_for_files(pdir, 2)
    kill_descendant(proc.pid, "ray::LearnerCore")
    o, e = proc.communicate(timeout=600)
    assert proc.returncode == 0, e[-3000:]
    summary = last_json(o)
    assert summary["steps"] == 4500 and summary["restarts"] >= 1
    _check_dataset(out, 4500)
    ri = Dataset(out).load(["reward_intrinsic"]).reward_intrinsic
    assert np.isfinite(ri).any() and (ri[np.isfinite(ri)] >= 0).all() and ri[np.isfinite(ri)].max() > 0


@pytest.mark.ray
def test_kill_single_process_runner_and_resume(tmp_path):
    out = tmp_path / "d"
    args = ["collect", "--explorer", "apt", "--objective", "shannon", "--steps", "3500", "--out", out,
            "--episodes-per-chunk", "1", "--knn-mode", "window",  # window mode: rewards from the shared KnnService
            *SMALL_APT]
    proc = subprocess.Popen([BEX, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pdir = out / "domain=walker" / "objective=shannon" / "param=none" / "seed=0"
    assert _wait_for_files(pdir, 2)
    kill_descendant(proc.pid, "ray::LearnedRunner")
    o, e = proc.communicate(timeout=600)
    assert proc.returncode == 0, e[-3000:]
    _check_dataset(out, 3500)
    # an interrupted run (driver killed) continues with --resume and ends exact
    out2 = tmp_path / "d2"
    args2 = [a if a != out else out2 for a in args]
    proc = subprocess.Popen([BEX, *map(str, args2)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pdir2 = out2 / "domain=walker" / "objective=shannon" / "param=none" / "seed=0"
    assert _wait_for_files(pdir2, 2)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    one_line_error(bex(*args2), "--resume")
    p = bex(*args2, "--resume")
    assert p.returncode == 0, p.stderr[-3000:]
    _check_dataset(out2, 3500)


@pytest.mark.ray
def test_queued_runs_report_their_own_wall_time(ray_session, tmp_path):
    """Each summary's clock runs from the run's launch to its end, not to the end of the whole grid."""
    from bex.cluster.driver import run_collections

    cfgs = [CollectConfig(out=str(tmp_path / "d"), domain="walker", explorer="random", steps=n, seed=seed)
            for seed, n in ((0, 2000), (1, 2000))]
    t0 = time.perf_counter()
    sums = run_collections(cfgs, max_concurrent_runs=1)  # the second run waits for the first
    total = time.perf_counter() - t0
    assert [s["steps"] for s in sums] == [2000, 2000]
    walls = [s["wall_s"] for s in sums]
    assert all(w > 0 for w in walls) and sum(walls) <= total, (walls, total)
    for s, w in zip(sums, walls):
        assert s["env_steps_per_s"] == pytest.approx(2000 / w, rel=1e-6)
    # resuming the finished grid with one more run: a finished run takes no actor and no slot
    cfgs.append(CollectConfig(out=str(tmp_path / "d"), domain="walker", explorer="random", steps=1000, seed=2))
    sums = run_collections(cfgs, resume=True, max_concurrent_runs=1)
    assert [s["steps"] for s in sums] == [2000, 2000, 1000]
    _check_dataset(tmp_path / "d", 5000)


@pytest.mark.ray
def test_ray_driver_messages_go_to_stderr(ray_session, capsys):
    """Ray's worker log lines and GCS error messages reach the driver's stderr, never the JSON on stdout."""
    import ray

    @ray.remote(num_cpus=0)
    def shout():
        print("bex-marker-from-a-worker", flush=True)

    ray.get(shout.remote())
    # what Ray's error listener prints when the GCS marks a node dead (ray._private.worker.listen_error_messages)
    ray._private.worker.print_to_stdstream({"lines": ["bex-marker-node-dead"], "pid": "raylet", "is_err": False},
                                           ignore_prefix=False)
    t0, err = time.monotonic(), ""
    while time.monotonic() - t0 < 30 and "bex-marker-from-a-worker" not in err:
        time.sleep(0.2)
        out, e = capsys.readouterr()
        assert "bex-marker" not in out, out
        err += e
    assert "bex-marker-from-a-worker" in err and "bex-marker-node-dead" in err, err


@pytest.mark.parametrize("domain,tasks", [("walker", ["stand", "walk", "run"]), ("quadruped", ["walk", "run"]),
                                          ("cheetah", ["run"]), ("cartpole", ["balance", "swingup"])])
def test_apt_collects_on_the_primal_task_and_relabels_exactly(tmp_path, domain, tasks):
    """APT (BE alpha 0.5, small preset, tiny networks) on each domain's collection task, headless; the
    dataset observes what every evaluated task observes, and relabelled rewards equal a live replay's."""
    from bex.envs import Env, collection_task, env_spec
    from bex.replay import relabel

    cfg = CollectConfig(out=str(tmp_path), domain=domain, explorer="apt", objective="be", param=0.5, steps=1200,
                        actors=2, preset="small", episodes_per_chunk=1,
                        explorer_config={"num_seed_frames": 400, "batch_size": 32, "hidden_dim": 32, "rep_dim": 16,
                                         "k": 4}).validate()
    assert cfg.env_task == collection_task(domain)
    learner, workers = LearnerCore(cfg, cfg.run_key()), [EnvWorkerCore(cfg, i) for i in range(2)]
    fb, active = [learner.next_ticket(i) for i in range(2)], [0, 1]
    while active:
        for i in list(active):
            seg = workers[i].run_segment(fb[i], 250)
            if seg is None:
                active.remove(i)
            else:
                fb[i] = learner.ingest(seg)
    assert learner.status()["updates"] > 0
    ds = Dataset(tmp_path)
    assert ds.env_spec.task == collection_task(domain)  # the metadata records the collection task
    arr = ds.load()
    ep = arr.episode_id == arr.episode_id[0]
    for task in tasks:
        assert arr.observation.shape[1] == env_spec(domain, task).obs_dim
        relabel(tmp_path, f"{domain}_{task}")
        rewards = ds.rewards(task)[ep]
        env = Env(domain, task, seed=99)  # the state comes from the data, not the seed
        env.reset()
        env.set_physics_state(arr.physics[ep][0])
        live = [env.step(a).reward for a in arr.action[ep][1:]]
        assert np.max(np.abs(rewards[1:] - np.array(live))) <= 1e-6
        assert np.ptp(live) > 0  # not vacuous


@pytest.mark.ray
def test_a_repeated_collection_has_the_same_fingerprint_and_file_layout_does_not_change_it(tmp_path):
    """APT (BE α 0.5, narrow networks) twice with one config and seed: identical rows, one fingerprint, shown by
    `bex info`; another seed differs; random actions cut into other chunks by other workers: the same."""
    import json

    apt = ["--explorer", "apt", "--objective", "be", "--alpha", "0.5", "--steps", "600", "--episodes-per-chunk", "1",
           "--set", "hidden_dim=16", "--set", "batch_size=16", "--set", "num_seed_frames=100"]
    prints = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        p = bex("collect", "--out", tmp_path / name, "--seed", seed, *apt)
        assert p.returncode == 0, p.stderr[-3000:]
        info = bex("info", tmp_path / name, "--json")
        assert info.returncode == 0, info.stderr[-2000:]
        prints.append(json.loads(info.stdout)["fingerprint"])
    assert prints[0] == prints[1] != prints[2] and len(prints[0]) == 16
    assert Dataset(tmp_path / "a").fingerprint() == prints[0]
    rnd = []
    for name, extra in (("r1", ["--episodes-per-chunk", "1"]), ("r2", ["--episodes-per-chunk", "3", "--actors", "2"])):
        assert bex("collect", "--out", tmp_path / name, "--steps", "3000", *extra).returncode == 0
        rnd.append(Dataset(tmp_path / name).fingerprint())
    assert rnd[0] == rnd[1]
    assert len(list((tmp_path / "r1").rglob("*.parquet"))) != len(list((tmp_path / "r2").rglob("*.parquet")))
