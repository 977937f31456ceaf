"""Untrusted input: checkpoints load without running code, bad input is one line, nothing is lost."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from bex.core.state import decode, encode, load_state, state_bytes


class _Evil:
    def __reduce__(self):
        return (print, ("this ran while loading",))


def test_encode_round_trips_what_bex_states_hold(tmp_path):
    rng = np.random.default_rng(3)
    state = {"obs": rng.normal(size=(4, 3)).astype(np.float32), "last": np.array([True, False]),
             "ids": np.arange(5, dtype=np.int64), "scalar": np.float64(1.5), "n": np.int32(7),
             "rng": rng.bit_generator.state, "t": torch.ones(2), "nested": [(np.zeros(2), "x", None)],
             "big": 2**100}
    path = tmp_path / "s.pt"
    path.write_bytes(state_bytes(state))
    back = load_state(path)
    assert back["obs"].dtype == np.float32 and np.array_equal(back["obs"], state["obs"])
    assert back["last"].dtype == bool and back["last"].tolist() == [True, False]
    assert back["ids"].dtype == np.int64 and back["ids"].tolist() == list(range(5))
    assert back["scalar"] == 1.5 and type(back["scalar"]) is float and back["n"] == 7
    assert back["rng"] == state["rng"] and back["big"] == 2**100
    assert torch.equal(back["t"], torch.ones(2)) and isinstance(back["nested"][0], tuple)
    assert np.array_equal(back["nested"][0][0], np.zeros(2)) and back["nested"][0][1:] == ("x", None)
    g1, g2 = np.random.default_rng(), np.random.default_rng()
    g1.bit_generator.state, g2.bit_generator.state = back["rng"], state["rng"]
    assert g1.random() == g2.random()  # the restored generator continues the saved stream
    assert decode(encode(state))["obs"].tolist() == state["obs"].tolist()


def test_a_pickled_object_is_refused_with_one_line(tmp_path, capsys):
    bad = tmp_path / "evil.pt"
    torch.save({"x": _Evil()}, bad)
    with pytest.raises(ValueError) as e:
        load_state(bad)
    msg = str(e.value)
    assert "\n" not in msg and str(bad) in msg and "cannot be loaded safely" in msg
    assert "this ran while loading" not in capsys.readouterr().out
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps({"x": _Evil()}))
    with pytest.raises(ValueError, match="cannot be loaded safely"):
        load_state(raw)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(state_bytes({"a": np.zeros(1000)})[:100])
    with pytest.raises(ValueError, match=r"trunc\.pt"):
        load_state(trunc)
    with pytest.raises(ValueError, match="does not exist"):
        load_state(tmp_path / "missing.pt")


# ------------------------------------------------------------------------------------------- explorer checkpoints
TINY = {"hidden_dim": 16, "batch_size": 16, "num_seed_frames": 60, "replay_capacity": 1000, "update_every_steps": 2}


@pytest.mark.parametrize("explorer,extra", [("apt", {"objective": "be", "alpha": 0.5, "k": 3}),
                                            ("apt", {"objective": "shannon", "k": 3, "knn_mode": "recent",
                                                     "knn_window": 50}),
                                            ("rnd", {}), ("smm", {})])
def test_explorer_checkpoints_load_with_weights_only(tmp_path, explorer, extra):
    """A learned explorer restored from its (weights_only) checkpoint acts and trains exactly as the original."""
    from bex.actors.collect import (
        CollectConfig,
        build_explorer,
        episode_seed,
        explorer_state,
        load_explorer_state,
        run_episode,
        save_checkpoint,
    )

    cfg = CollectConfig(out=str(tmp_path), explorer=explorer, objective=extra.get("objective"),
                        param=extra.get("alpha"), steps=400, preset="small",
                        explorer_config={**TINY, **{k: v for k, v in extra.items() if k not in ("objective", "alpha")}})
    env = cfg.make_env()
    ex, knn = build_explorer(cfg, "r", env.spec)
    env.reseed(episode_seed(0, 0))
    run_episode(env, ex, "e0", max_steps=150)
    assert ex.updates > 0
    path = tmp_path / "ck.pt"
    save_checkpoint(path, explorer_state(ex, knn, next_chunk=3))
    torch.load(path, weights_only=True)  # plain data only
    twin, knn2 = build_explorer(cfg, "r", env.spec)
    assert load_explorer_state(path, twin, knn2)["next_chunk"] == 3
    assert twin.updates == ex.updates
    torch.manual_seed(5)
    a = [run_episode(cfg.make_env(seed=1), ex, "e1", step0=150, max_steps=40)]
    torch.manual_seed(5)
    b = [run_episode(cfg.make_env(seed=1), twin, "e1", step0=150, max_steps=40)]
    assert np.array_equal(a[0].action, b[0].action) and ex.updates == twin.updates


def _evil_checkpoint(path, marker):
    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"explorer": Evil(), "step": 1}, path)


def test_collect_resume_refuses_a_checkpoint_that_would_run_code(tmp_path):
    import subprocess

    from bex.actors.collect import CollectConfig, checkpoint_path
    from bex.replay.writer import ensure_partition_meta
    from tests.conftest import BEX

    out, marker = tmp_path / "d", tmp_path / "pwned"
    args = ["--out", out, "--explorer", "rnd", "--steps", "2000", "--seed", "3"]
    cfg = CollectConfig(out=str(out), explorer="rnd", steps=2000, seed=3)
    spec = cfg.make_env(seed=0).spec
    ensure_partition_meta(cfg.partition, spec, {}, cfg.run_key())
    _evil_checkpoint(checkpoint_path(cfg, cfg.run_key()), marker)
    p = subprocess.run([BEX, "collect", *map(str, args), "--resume"], capture_output=True, text=True, timeout=300)
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("bex: error: checkpoint"), p.stderr
    assert "cannot be loaded safely" in lines[0] and not marker.exists()


def test_trial_restore_refuses_a_checkpoint_that_would_run_code(tmp_path):
    from bex.learners.trial import STATE_FILE, TrialConfig, check_checkpoints, run_learner_trial
    from bex.replay import DatasetWriter
    from tests.helpers import collect_episode

    data = tmp_path / "data"
    ep, _, spec = collect_episode("walker", "stand", 0, 60)
    with DatasetWriter(data, spec, "random", None, 0) as w:
        w.write_episode(ep)
    ck, marker = tmp_path / "exp" / "t0" / "checkpoint_000000", tmp_path / "pwned"
    _evil_checkpoint(ck / STATE_FILE, marker)
    cfg = TrialConfig(dataset=str(data), task="walker_stand", learner="bc", steps=4, eval_every=2,
                      eval_episodes=1, report_every=2, learner_config={"hidden_dim": 8, "batch_size": 8})
    with pytest.raises(ValueError) as e:
        run_learner_trial(cfg, None, lambda m, w=None: None, checkpoint=ck)
    assert "\n" not in str(e.value) and STATE_FILE in str(e.value) and not marker.exists()
    with pytest.raises(ValueError, match="cannot be loaded safely"):
        check_checkpoints(tmp_path / "exp")  # what `bex sweep --resume` runs before Tune restores a trial
    assert not marker.exists()


# ------------------------------------------------------------------------------------------- loopback
_PROBE = """
import json, os, sys, time
sys.path.insert(0, {repo!r})
from bex.cluster.runtime import init_ray
from tests.helpers import descendants, listening_sockets
ray = init_ray(num_cpus=1)

@ray.remote
def pid():
    return os.getpid()

workers = ray.get([pid.remote() for _ in range(2)])
time.sleep(2)  # the dashboard's and agents' late listeners
print(json.dumps({{"node": ray.util.get_node_ip_address(), "workers": workers,
                  "sockets": listening_sockets(descendants(os.getpid()))}}))
"""


@pytest.mark.ray
def test_embedded_ray_listens_on_loopback_only(tmp_path):
    """``BEX_NODE_IP=127.0.0.1``: no listener of the embedded Ray (GCS, raylet, workers, driver, dashboard,
    agents, metrics) is on a wildcard or network address."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "BEX_NODE_IP": "127.0.0.1"}
    env.pop("RAY_ADDRESS", None)
    p = subprocess.run([sys.executable, "-c", _PROBE.format(repo=repo)], capture_output=True, text=True,
                       timeout=300, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    socks = [tuple(s) for s in out["sockets"]]
    owners = {s[0] for s in socks}
    assert out["node"] == "127.0.0.1"
    assert len(socks) >= 8 and set(out["workers"]) <= owners  # GCS, raylet, dashboard, agents and the workers
    loopback = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}
    assert not [s for s in socks if s[1] not in loopback], socks


# ------------------------------------------------------------------------------------------- SIGTERM
def _term_when(cmd: list[str], ready, cwd, timeout: float = 300) -> tuple[int, str]:
    """Start ``cmd``, send it SIGTERM once ``ready()`` holds, return (exit code, stderr)."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f"finished before the signal: {proc.stderr.read()[-2000:]}"
        assert time.time() < deadline, "never ready"
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def _clean_stop(rc: int, err: str) -> None:
    assert rc == 143, err[-3000:]
    assert "Traceback" not in err and "*** SIGTERM received" not in err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("bex: terminated (SIGTERM)"), err[-3000:]


@pytest.mark.ray
def test_sigterm_stops_a_collection_cleanly_and_resume_completes_it(tmp_path):
    import subprocess

    from bex.replay import Dataset
    from tests.conftest import BEX

    out = tmp_path / "d"
    cmd = [BEX, "collect", "--out", str(out), "--explorer", "rnd", "--steps", "4000", "--episodes-per-chunk", "1",
           "--set", "hidden_dim=32", "--set", "batch_size=32", "--set", "update_every_steps=4"]  # plumbing, not RND
    rc, err = _term_when(cmd, lambda: len(list(out.rglob("*.parquet"))) >= 1, tmp_path)
    _clean_stop(rc, err)
    done = len(list(out.rglob("*.parquet")))
    assert 1 <= done < 4
    p = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    arr = Dataset(out).load(["episode_id", "step", "is_first"])
    assert len(arr) - int(arr.is_first.sum()) == 4000  # exactly the requested steps
    assert len(set(zip(arr.episode_id, arr.step))) == len(arr)  # no (episode_id, step) twice
    assert not [p for p in out.rglob(".*") if p.is_file()]  # no temporary file left behind


@pytest.mark.ray
def test_sigterm_stops_a_sweep_cleanly_and_resume_completes_it(tmp_path):
    import json
    import subprocess

    from bex.replay import DatasetWriter
    from tests.conftest import BEX
    from tests.helpers import collect_episode

    ep, _, spec = collect_episode("walker", "stand", 0, 300)
    with DatasetWriter(tmp_path / "ds", spec, "random", None, 0) as w:
        w.write_episode(ep)
    cfg = tmp_path / "s.yaml"
    cfg.write_text(json.dumps({"name": "term", "datasets": [str(tmp_path / "ds")], "tasks": ["walker_stand"],
                               "learners": ["bc"], "seeds": [0, 1], "steps": 2000, "eval_every": 500,
                               "eval_episodes": 1, "report_every": 500, "storage": str(tmp_path / "st"),
                               "max_concurrent_trials": 1,
                               "learner_config": {"bc": {"hidden_dim": 64, "batch_size": 64}}}))
    exp = tmp_path / "st" / "term"
    rc, err = _term_when([BEX, "sweep", str(cfg)], lambda: bool(list(exp.glob("*/checkpoint_000001"))), tmp_path)
    _clean_stop(rc, err)
    p = subprocess.run([BEX, "sweep", str(cfg), "--resume"], capture_output=True, text=True, timeout=900,
                       cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    results = sorted(exp.glob("*/result.json"))
    assert len(results) == 2
    from bex.analysis.results import read_trials

    for r in results:
        steps = [json.loads(line)["steps"] for line in r.read_text().splitlines() if line.strip()]
        # complete; a trial resumes from the last checkpoint Tune recorded, so the steps reported after it may
        # come twice in Tune's result.json (once before the signal, once after the resume)
        assert steps[-1] == 2000 and sorted(set(steps)) == list(range(500, 2001, 500)), steps
    for tr in read_trials(exp):  # what bex results reads: one row per step, the resumed run's
        assert [row["steps"] for row in tr["rows"]] == list(range(500, 2001, 500))


# ------------------------------------------------------------------------------------------- corrupt data
def test_a_corrupt_page_with_an_intact_footer_is_named_by_verify_and_by_readers(tmp_path):
    import subprocess

    from bex.replay import Dataset, DatasetWriter
    from bex.replay.relabel import rewards_for_file
    from tests.conftest import BEX
    from tests.helpers import collect_episode

    ep, _, spec = collect_episode("walker", "stand", 0, 500)
    with DatasetWriter(tmp_path / "ds", spec, "random", None, 0) as w:
        w.write_episode(ep)
    f = w.files[0]
    assert [c["rows"] for c in Dataset(tmp_path / "ds").verify()] == [501]
    import pyarrow.parquet as pq

    md = pq.read_metadata(f).row_group(0)
    col = next(md.column(i) for i in range(md.num_columns) if md.column(i).path_in_schema.startswith("physics"))
    at = col.data_page_offset + col.total_compressed_size // 2  # inside the physics column's data page
    data = f.read_bytes()
    f.write_bytes(data[:at] + bytes(50) + data[at + 50:])  # a page's bytes, footer untouched
    assert Dataset(tmp_path / "ds").num_rows == 501  # the footer still reads
    with pytest.raises(ValueError, match="corrupt Parquet file .*CRC") as e:
        Dataset(tmp_path / "ds").verify()
    assert str(f) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="corrupt Parquet file"):
        Dataset(tmp_path / "ds").load()
    with pytest.raises(ValueError, match="corrupt Parquet file"):
        rewards_for_file(str(f), "walker", "stand")
    p = subprocess.run([BEX, "info", str(tmp_path / "ds"), "--verify"], capture_output=True, text=True, timeout=120)
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert p.returncode == 2 and len(lines) == 1 and f.name in lines[0] and "CRC" in lines[0], p.stderr


def test_a_run_whose_actors_keep_dying_stops_with_one_line():
    from bex.actors.collect import CollectConfig
    from bex.cluster.driver import MAX_EXTRA_FAILURES, CollectionError, _RandomRun

    run = object.__new__(_RandomRun)  # only the failure accounting, no Ray
    run.cfg, run.label, run.restarts = CollectConfig(out="/tmp/x", actors=2), "walker/random/s0", 0
    err = RuntimeError("Traceback (most recent call last):\n  File x\nValueError: the env cannot be built")
    for _ in range(2 + MAX_EXTRA_FAILURES):
        run.restarts += 1
        run._check_failures(err)  # a few deaths are restarts, not errors
    run.restarts += 1
    with pytest.raises(CollectionError) as e:
        run._check_failures(err)
    assert str(e.value) == (f"run walker/random/s0: its actors died {3 + MAX_EXTRA_FAILURES} times; last error: "
                            "ValueError: the env cannot be built")
