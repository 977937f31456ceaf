"""Cluster mode on a real two-node Ray cluster on loopback (head 127.0.0.2, worker 127.0.0.3).

One cluster for the module (``tests/twonode.py``), token auth on with a private
token.  Every bex command runs as a separate process, as a user would run it:
``ray job submit --working-dir . -- bex ...`` or ``bex --address ...``.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tests.twonode import HEAD_IP, WORKER_IP, TwoNodeCluster, free_port

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BEX, RAY = str(BIN / "bex"), str(BIN / "ray")


@pytest.fixture(scope="module")
def cluster():
    c = TwoNodeCluster(head_cpus=2, worker_cpus=1)
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture
def work():
    """A short tmp dir outside the repo (absolute paths for job entrypoints, whose cwd is a copy)."""
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="bext", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def run(cmd, env, timeout=300, cwd=REPO, check=True):
    r = subprocess.run(cmd, env=env, cwd=str(cwd), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd[:4]} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def last_json(text: str) -> dict:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            return json.loads(line)
    raise AssertionError(f"no JSON line in:\n{text[-2000:]}")


def load_steps(root: Path):
    from bex.replay import Dataset

    return Dataset(root).load(["episode_id", "step", "is_first"])


def assert_exact_once(root: Path, steps: int) -> None:
    t = load_steps(root)
    ep = np.asarray([str(x) for x in t.episode_id])
    st = np.asarray(t.step)
    first = np.asarray(t.is_first)
    assert len(st) - first.sum() == steps  # transitions: rows minus each episode's reset row
    keys = set(zip(ep.tolist(), st.tolist()))
    assert len(keys) == len(st), "duplicated (episode_id, step)"
    for e in set(ep.tolist()):  # every episode complete: steps 0..n-1, first row flagged
        s = np.sort(st[ep == e])
        assert (s == np.arange(len(s))).all(), f"episode {e} has gaps"
        assert first[ep == e].sum() == 1 and first[(ep == e) & (st == 0)].all(), f"episode {e} is_first"


def _json_of(text: str) -> dict:
    return json.loads(text[text.index("{"):])


def run_record(root: Path) -> dict:
    recs = list(root.rglob("_bex_run.json"))
    assert len(recs) == 1, recs
    return json.loads(recs[0].read_text())


def test_cluster_yaml_matches_ray_schema():
    import os

    import jsonschema
    import ray.autoscaler
    import yaml

    cfg = yaml.safe_load((REPO / "cluster" / "cluster.yaml").read_text())
    schema = json.loads((Path(os.path.dirname(ray.autoscaler.__file__)) / "ray-schema.json").read_text())
    jsonschema.validate(cfg, schema)
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types and {"cpu_worker", "gpu_worker"} <= set(types)
    assert any("pip install" in c and "-e" in c for c in cfg["setup_commands"])


# ------------------------------------------------------------------------------------------- fail fast
def test_wrong_address_or_missing_token_fails_fast(cluster, work, tmp_path):
    """A wrong address, a missing token or a wrong token: one clear line within 30 s, no hang."""
    home = tmp_path / "home"  # no ~/.ray/auth_token there
    home.mkdir()
    dead = f"{HEAD_IP}:{free_port(HEAD_IP, set(cluster.taken))}"  # nothing listens there
    cases = [
        ("wrong address", dict(RAY_ADDRESS=dead), "cannot reach the Ray cluster"),
        ("missing token", dict(RAY_AUTH_TOKEN="", HOME=str(home), RAY_AUTH_MODE="token"), "needs an auth token"),
        ("missing token, mode unset", dict(RAY_AUTH_TOKEN="", HOME=str(home)), "needs an auth token"),
        ("wrong token", dict(RAY_AUTH_TOKEN="not-the-token"), "rejected the auth token"),
    ]
    for what, extra, expect in cases:
        env = cluster.env(**extra)
        if "RAY_AUTH_MODE" not in extra and what.endswith("mode unset"):
            env.pop("RAY_AUTH_MODE")
        t0 = time.monotonic()
        r = run([BEX, "collect", "--out", str(work / "x"), "--steps", "100"], env, timeout=60, check=False)
        dt = time.monotonic() - t0
        err = r.stderr.strip().splitlines()
        assert r.returncode == 2, (what, r.stderr[-2000:])
        assert dt < 30, (what, dt)
        assert err and err[-1].startswith("bex: error:") and expect in err[-1], (what, r.stderr[-2000:])
        assert "Traceback" not in r.stderr, what
    # the Jobs CLI: a missing token is refused at once too (Ray's own message)
    env = cluster.env(RAY_AUTH_TOKEN="", HOME=str(home))
    t0 = time.monotonic()
    r = run([RAY, "job", "submit", "--address", cluster.dashboard, "--", "true"], env, timeout=60, check=False)
    assert r.returncode != 0 and time.monotonic() - t0 < 30
    assert "token" in (r.stdout + r.stderr).lower()


# ------------------------------------------------------------------------------------------- job submit
def test_job_submit_pipeline_uses_both_nodes(cluster, work):
    """collect -> relabel -> sweep -> results submitted as one Ray job; workers ran on both nodes."""
    ds = work / "datasets" / "walker"
    sweep_cfg = work / "sweep.yaml"
    sweep_cfg.write_text(textwrap.dedent(f"""\
        name: twonode
        datasets: [{{path: {ds}}}]
        tasks: [walker_stand]
        learners: [bc]
        seeds: [0]
        steps: 200
        eval_every: 200
        eval_episodes: 1
        report_every: 100
        resources: {{cpu: 1}}
        max_failures: 1
        storage: {work / "sweeps"}
        """))
    pipeline = (f"bex --storage {work} collect --out {ds} --explorer random --steps 3000 --actors 2 "
                f"--episodes-per-chunk 1 && bex relabel {ds} --task walker_stand && "
                f"bex sweep {sweep_cfg} && bex results {work / 'sweeps' / 'twonode'}")
    env = cluster.env(address=False)
    runtime_env = {"env_vars": {"MUJOCO_GL": "disable", "BEX_NODE_IP": HEAD_IP}}
    t0 = time.monotonic()
    r = run([RAY, "job", "submit", "--address", cluster.dashboard, "--working-dir", ".",
             "--runtime-env-json", json.dumps(runtime_env), "--", "bash", "-c", pipeline], env, timeout=420)
    out = r.stdout + r.stderr
    assert "succeeded" in out, out[-3000:]
    print(f"job pipeline: {time.monotonic() - t0:.1f}s")
    rec = run_record(ds)
    assert rec["steps"] == 3000
    assert set(rec["nodes"]) == {HEAD_IP, WORKER_IP}, rec["nodes"]
    assert_exact_once(ds, 3000)
    assert (ds / "domain=walker").exists()
    md = list((work / "sweeps" / "twonode").glob("*.md"))
    assert md, "no results table written"
    assert "bc" in md[0].read_text()


# ------------------------------------------------------------------------------------------- status, storage
def test_status_and_node_local_storage(cluster, work):
    env = cluster.env()
    st = _json_of(run([BEX, "status", "--json"], env, timeout=90).stdout)
    assert {n["ip"] for n in st["nodes"] if n["alive"]} == {HEAD_IP, WORKER_IP}
    assert st["resources"]["total"]["CPU"] == 3
    assert st["knn_service"]["state"] in ("absent", "healthy")
    r = run([BEX, "status"], env, timeout=90)
    assert "nodes (2 alive)" in r.stdout
    # a path the nodes do not share fails at once, before any actor starts
    t0 = time.monotonic()
    r = run([BEX, "collect", "--out", str(work / "local"), "--steps", "1000"], cluster.env(BEX_SHARED_FS="0"),
            timeout=90, check=False)
    assert r.returncode == 2 and time.monotonic() - t0 < 60
    assert "node-local" in r.stderr.strip().splitlines()[-1], r.stderr[-2000:]
    assert not list((work / "local").rglob("*.parquet"))


# ------------------------------------------------------------------------------------------- node loss
def _wait_for(pred, timeout, what, poll=0.5):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = pred()
        if v:
            return v
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_worker_node_lost_mid_collection(cluster, work):
    """Kill the worker node after the first chunk: the run finishes on the head, exactly once."""
    cluster.ensure_worker()
    ds = work / "ds"
    steps = 6000
    proc = subprocess.Popen([BEX, "collect", "--out", str(ds), "--explorer", "random", "--steps", str(steps),
                             "--actors", "2", "--episodes-per-chunk", "1"], env=cluster.env(), cwd=str(REPO),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: list(ds.rglob("*.parquet")) or proc.poll() is not None, 180, "the first chunk")
        assert proc.poll() is None, "collection ended before the worker node could be stopped"
        cluster.kill_worker()
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    summary = last_json(out)
    assert summary["steps"] == steps
    assert_exact_once(ds, steps)
    rec = run_record(ds)
    assert sum(rec["nodes"].values()) == steps
    assert HEAD_IP in rec["nodes"]
    # stdout is bex's JSON alone, even while the GCS reports the lost node (Ray prints that to stderr)
    st = json.loads(run([BEX, "status", "--all", "--json"], cluster.env(), timeout=90).stdout)
    rows = [row for c in st["collections"] for row in c["rows"] if row["total"] == steps]
    assert rows and rows[-1]["steps"] == steps, st["collections"]


def test_trial_resumes_after_worker_node_lost(cluster, work):
    """A trial on the worker node checkpoints, the node dies, the trial resumes from its checkpoint on the head."""
    cluster.ensure_worker()
    ds = work / "ds"
    run([BEX, "collect", "--out", str(ds), "--explorer", "random", "--steps", "1000", "--actors", "1"],
        cluster.env(), timeout=240)
    # hold the head's CPUs so the trial lands on the worker node
    blocker = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""\
        import ray, time
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as NA
        ray.init(log_to_driver=False)
        head = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeManagerAddress"] == "{HEAD_IP}"][0]
        @ray.remote(num_cpus=2)
        class Hold:
            def ping(self): return 1
        h = Hold.options(scheduling_strategy=NA(head, soft=False)).remote()
        ray.get(h.ping.remote())
        print("HOLDING", flush=True)
        time.sleep(600)
        """)], env=cluster.env(), cwd=str(work), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    train = None
    try:
        assert blocker.stdout.readline().strip() == "HOLDING"
        storage = work / "train"
        train = subprocess.Popen([BEX, "train", "--dataset", str(ds), "--task", "walker_stand", "--learner", "bc",
                                  "--steps", "6000", "--eval-every", "500", "--eval-episodes", "1",
                                  "--storage", str(storage), "--name", "resume", "--max-failures", "3"],
                                 env=cluster.env(), cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        _wait_for(lambda: list(storage.rglob("checkpoint_0*")) or train.poll() is not None, 240, "a checkpoint")
        assert train.poll() is None, "training ended before the worker node could be stopped"
        cluster.kill_worker()  # at once: a quiet machine runs BC at hundreds of steps/s
        # the trial waits for CPUs (the blocker holds the head): the sweep is still running
        st = _json_of(run([BEX, "status", "--json"], cluster.env(), timeout=60).stdout)
        sweeps = [r for r in st["sweeps"] if r["name"] == "resume" and r["running"]]
        assert sweeps and sweeps[0]["trials"] == 1 and sweeps[0]["total_steps"] == 6000, st["sweeps"]
        blocker.kill()  # free the head for the retried trial
        blocker.wait(10)
        out, err = train.communicate(timeout=300)
    finally:
        for p in (train, blocker):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate()
    assert train.returncode == 0, err[-3000:]
    res = last_json(out)
    assert res["steps"] == 6000
    assert res["resumed_from"] and res["resumed_from"] > 0, res
