"""Every command on bad input: exit 2, one ``bex: error:`` line naming the bad value, no traceback, no new file.

One table of cases across every command.  Each case gets a fresh copy of a small
dataset and of a few broken files in ``tmp_path``; the test snapshots every
path (and the contents of the files) under ``tmp_path`` before and after the
command and requires them equal: nothing is created, deleted or rewritten.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import BEX


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from bex.replay import DatasetWriter
    from tests.helpers import collect_episode

    root = tmp_path_factory.mktemp("base")
    ep, _, spec = collect_episode("walker", "stand", 0, 60)
    with DatasetWriter(root / "ds", spec, "random", None, 0) as w:
        w.write_episode(ep)
    (root / "notdemo").mkdir()
    (root / "notdemo" / "precious.txt").write_text("keep me")
    (root / "sweep_ok.yaml").write_text(
        f"name: s\ndatasets: [{root / 'ds'}]\ntasks: [walker_stand]\nlearners: [bc]\nsteps: 10\n")
    run = root / "run" / "t0"
    run.mkdir(parents=True)
    (run / "params.json").write_text("{not json")
    _minari_inputs(root)
    return root


def _minari_inputs(root: Path) -> None:
    """``ds2`` (two partitions), a Minari export of a relabelled walker partition (``mroot/bex/ok-v0``) and a
    Minari dataset whose actions lie 5x outside [-1, 1] (``mroot/bex/wide-v0``)."""
    from bex.replay import DatasetWriter, process_pool_map, relabel
    from bex.replay.minari_io import _datasets_path, export_minari
    from tests.helpers import collect_episode

    for seed in (0, 1):
        ep, _, spec = collect_episode("walker", "stand", seed, 30)
        with DatasetWriter(root / "ds2", spec, "random", None, seed) as w:
            w.write_episode(ep)
    relabel(root / "ds2", T, map_fn=process_pool_map(1))
    export_minari(root / "ds2", T, "bex/ok-v0", root / "mroot", seed=0)
    import gymnasium as gym
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    box = gym.spaces.Box(-1.0, 1.0, (6,), np.float32)
    buf = EpisodeBuffer(id=0, observations=ep.observation, actions=5 * ep.action[1:], rewards=np.zeros(30),
                        terminations=np.zeros(30, bool), truncations=np.zeros(30, bool))
    import warnings

    with _datasets_path(root / "mroot"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Minari's notes on the metadata this case leaves out
        minari.create_dataset_from_buffers("bex/wide-v0", [buf], observation_space=gym.spaces.Box(
            -np.inf, np.inf, (24,), np.float32), action_space=box, data_format="arrow")


def _sweep(tmp: Path, **changes) -> Path:
    d = {"name": "s", "datasets": [str(tmp / "ds")], "tasks": ["walker_stand"], "learners": ["bc"], "steps": 10}
    d.update(changes)
    p = tmp / "bad_sweep.yaml"
    p.write_text(json.dumps(d))  # JSON is YAML
    return p


def _grid(tmp: Path, **changes) -> Path:
    d = {"name": "g", "out": str(tmp / "gout"), "runs": [{"explorer": "random"}], "steps": 1000}
    d.update(changes)
    p = tmp / "bad_grid.yaml"
    p.write_text(json.dumps(d))
    return p


def _file(tmp: Path, name: str, data: bytes) -> Path:
    (tmp / name).write_bytes(data)
    return tmp / name


def _broken_meta(tmp: Path, name: str, text: str) -> Path:
    ds = tmp / "ds"
    target = next(ds.rglob(name)) if name != "_bex_dataset.json" else ds / name
    target.write_text(text)
    return ds


def _part_meta_without_run_key(tmp: Path) -> Path:
    p = next((tmp / "ds").rglob("_bex_partition.json"))
    d = json.loads(p.read_text())
    d.pop("run_key")
    p.write_text(json.dumps(d))
    return tmp / "ds"


T = "walker_stand"
CASES = [
    # collect
    ("collect-steps-0", lambda t: ["collect", "--out", t / "o", "--steps", "0"], "steps=0"),
    ("collect-steps-neg", lambda t: ["collect", "--out", t / "o", "--steps", "-5"], "steps=-5"),
    ("collect-steps-abc", lambda t: ["collect", "--out", t / "o", "--steps", "abc"], "'abc'"),
    ("collect-actors-0", lambda t: ["collect", "--out", t / "o", "--actors", "0"], "actors=0"),
    ("collect-seed-neg", lambda t: ["collect", "--out", t / "o", "--seed", "-1"], "seed=-1"),
    ("collect-seed-big", lambda t: ["collect", "--out", t / "o", "--seed", str(2**32)], f"seed={2**32}"),
    ("collect-explorer", lambda t: ["collect", "--out", t / "o", "--explorer", "magic"], "'magic'"),
    ("collect-domain", lambda t: ["collect", "--out", t / "o", "--domain", "robot"], "'robot'"),
    ("collect-be-no-alpha", lambda t: ["collect", "--out", t / "o", "--explorer", "apt", "--objective", "be"],
     "--alpha"),
    ("collect-alpha-0", lambda t: ["collect", "--out", t / "o", "--explorer", "apt", "--objective", "be",
                                   "--alpha", "0"], "alpha=0.0"),
    ("collect-q-1", lambda t: ["collect", "--out", t / "o", "--explorer", "apt", "--objective", "renyi",
                               "--q", "1"], "q=1.0"),
    ("collect-k-batch", lambda t: ["collect", "--out", t / "o", "--explorer", "apt", "--objective", "shannon",
                                   "--k", "128"], "k=128"),
    ("collect-preset", lambda t: ["collect", "--out", t / "o", "--explorer", "rnd", "--preset", "huge"], "'huge'"),
    ("collect-task", lambda t: ["collect", "--out", t / "o", "--task", "fly"], "'fly'"),
    ("collect-task-domain", lambda t: ["collect", "--out", t / "o", "--task", "cheetah_run"], "'cheetah_run'"),
    ("collect-chunk-0", lambda t: ["collect", "--out", t / "o", "--episodes-per-chunk", "0"], "episodes_per_chunk=0"),
    ("collect-out-file", lambda t: ["collect", "--out", t / "sweep_ok.yaml"], "sweep_ok.yaml"),
    ("collect-config-missing", lambda t: ["collect", "--config", t / "nope.yaml"], "nope.yaml"),
    ("collect-grid-steps-0", lambda t: ["collect", "--config", _grid(t, steps=0)], "steps=0"),
    ("collect-grid-steps-str", lambda t: ["collect", "--config", _grid(t, steps="5e4")], "'5e4'"),
    ("collect-grid-actors-0", lambda t: ["collect", "--config", _grid(t, runs=[{"explorer": "random",
                                                                                 "actors": 0}])], "actors=0"),
    ("collect-grid-seed", lambda t: ["collect", "--config", _grid(t, seeds=["a"])], "'a'"),
    ("collect-bogus-option", lambda t: ["collect", "--bogus", "1"], "--bogus"),
    # train
    ("train-steps-0", lambda t: ["train", "--dataset", t / "ds", "--task", T, "--steps", "0",
                                 "--storage", t / "st"], "steps=0"),
    ("train-learner", lambda t: ["train", "--dataset", t / "ds", "--task", T, "--learner", "td4",
                                 "--storage", t / "st"], "'td4'"),
    ("train-set-key", lambda t: ["train", "--dataset", t / "ds", "--task", T, "--set", "gama=0.9",
                                 "--storage", t / "st"], "'gama'"),
    ("train-set-form", lambda t: ["train", "--dataset", t / "ds", "--task", T, "--set", "gamma",
                                  "--storage", t / "st"], "'gamma'"),
    ("train-name-up", lambda t: ["train", "--dataset", t / "ds", "--task", T, "--name", "../escape",
                                 "--storage", t / "st"], "'../escape'"),
    ("train-name-abs", lambda t: ["train", "--dataset", t / "ds", "--task", T, "--name", "/tmp/abs",
                                  "--storage", t / "st"], "'/tmp/abs'"),
    ("train-dataset", lambda t: ["train", "--dataset", t / "missing", "--task", T, "--storage", t / "st"],
     "missing"),
    ("train-task", lambda t: ["train", "--dataset", t / "ds", "--task", "walker_fly", "--storage", t / "st"],
     "'walker_fly'"),
    ("train-seed", lambda t: ["train", "--dataset", t / "ds", "--task", T, "--seed", "-3", "--storage", t / "st"],
     "seed=-3"),
    ("train-eval-every", lambda t: ["train", "--dataset", t / "ds", "--task", T, "--eval-every", "0",
                                    "--storage", t / "st"], "eval_every=0"),
    ("train-seed-abc", lambda t: ["train", "--dataset", t / "ds", "--task", T, "--seed", "x1"], "'x1'"),
    # sweep
    ("sweep-tasks-int", lambda t: ["sweep", _sweep(t, tasks=[123])], "123"),
    ("sweep-learners-nested", lambda t: ["sweep", _sweep(t, learners=[["td3"]])], "['td3']"),
    ("sweep-seeds-str", lambda t: ["sweep", _sweep(t, seeds=["a"])], "'a'"),
    ("sweep-name", lambda t: ["sweep", _sweep(t, name="../x")], "'../x'"),
    ("sweep-key", lambda t: ["sweep", _sweep(t, unknown_key=1)], "'unknown_key'"),
    ("sweep-steps-str", lambda t: ["sweep", _sweep(t, steps="5e4")], "'5e4'"),
    ("sweep-missing", lambda t: ["sweep", t / "nope.yaml"], "nope.yaml"),
    # results, info, export, relabel
    ("results-missing", lambda t: ["results", t / "nowhere"], "nowhere"),
    ("results-broken", lambda t: ["results", t / "run"], "params.json"),
    ("info-missing", lambda t: ["info", t / "nowhere"], "nowhere"),
    ("info-dataset-json", lambda t: ["info", _broken_meta(t, "_bex_dataset.json", "{oops")], "_bex_dataset.json"),
    ("info-partition-json", lambda t: ["info", _broken_meta(t, "_bex_partition.json", "[1, 2]")],
     "_bex_partition.json"),
    ("info-partition-key", lambda t: ["info", _part_meta_without_run_key(t)], "run_key"),
    ("export-task", lambda t: ["export", t / "ds", "--task", "walker_fly", "--out", t / "x.npz"], "'walker_fly'"),
    ("export-missing", lambda t: ["export", t / "nowhere", "--task", T, "--out", t / "x.npz"], "nowhere"),
    ("export-format", lambda t: ["export", t / "ds", "--task", T, "--format", "hdf5", "--out", t / "x"], "'hdf5'"),
    ("export-minari-no-id", lambda t: ["export", t / "ds", "--task", T, "--format", "minari", "--out", t / "m"],
     "--dataset-id"),
    ("export-minari-id", lambda t: ["export", t / "ds", "--task", T, "--format", "minari", "--out", t / "m",
                                    "--dataset-id", "noversion"], "'noversion'"),
    ("export-minari-storage", lambda t: ["export", t / "ds", "--task", T, "--format", "minari", "--out", t / "m",
                                         "--dataset-id", "bex/a-v0", "--minari-storage", "hdf5"], "'hdf5'"),
    ("export-minari-unrelabelled", lambda t: ["export", t / "ds", "--task", T, "--format", "minari", "--out",
                                              t / "m", "--dataset-id", "bex/a-v0"], "not relabelled"),
    ("export-minari-partitions", lambda t: ["export", t / "ds2", "--task", T, "--format", "minari", "--out",
                                            t / "m", "--dataset-id", "bex/a-v0"], "selects 2"),
    ("export-minari-exists", lambda t: ["export", t / "ds2", "--task", T, "--format", "minari", "--seed", "0",
                                        "--out", t / "mroot", "--dataset-id", "bex/ok-v0"], "already exists"),
    ("import-format", lambda t: ["import", t / "ds", "--task", T, "--out", t / "o", "--format", "h5"], "'h5'"),
    ("import-minari-missing", lambda t: ["import", "bex/nothing-v0", "--task", T, "--out", t / "o"],
     "'bex/nothing-v0'"),
    ("import-minari-width", lambda t: ["import", t / "mroot" / "bex" / "ok-v0", "--task", "cheetah_run", "--out",
                                       t / "o"], "observation space"),
    ("import-minari-actions", lambda t: ["import", t / "mroot" / "bex" / "wide-v0", "--task", T, "--out", t / "o"],
     "actions[0]"),
    ("relabel-domain", lambda t: ["relabel", t / "ds", "--task", "quadruped_walk"], "'quadruped_walk'"),
    # a config path that is a directory, an empty file or not text: one line for every command that takes one
    ("collect-config-dir", lambda t: ["collect", "--config", t], "is a directory"),
    ("sweep-config-dir", lambda t: ["sweep", t], "is a directory"),
    ("replicate-config-dir", lambda t: ["replicate", "--config", t], "is a directory"),
    ("sweep-config-empty", lambda t: ["sweep", _file(t, "empty.yaml", b"")], "is empty"),
    ("collect-config-empty", lambda t: ["collect", "--config", _file(t, "blank.yaml", b"\n# nothing\n")],
     "is empty"),
    ("replicate-config-binary", lambda t: ["replicate", "--config", _file(t, "bin.yaml", b"\xff\xfe\x00\x81")],
     "not a text file"),
    # demo and the command line itself
    ("demo-steps", lambda t: ["demo", "--root", t / "d", "--steps", "0"], "--steps 0"),
    ("demo-train-steps", lambda t: ["demo", "--root", t / "d", "--train-steps", "2"], "--train-steps 2"),
    ("demo-foreign-root", lambda t: ["demo", "--root", t / "notdemo"], "notdemo"),
    ("no-such-command", lambda t: ["nosuch"], "'nosuch'"),
]


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("name,make_args,needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(base, tmp_path, name, make_args, needle):
    work = tmp_path / "w"
    shutil.copytree(base, work)
    args = [str(a) for a in make_args(work)]  # may write the broken input itself: snapshot after
    before = _snapshot(work)
    p = subprocess.run([BEX, *args], capture_output=True, text=True, timeout=300, cwd=work)
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("bex: error:"), p.stderr[-2000:]
    assert "Traceback" not in p.stderr + p.stdout
    assert needle in lines[0], lines[0]
    assert _snapshot(work) == before, "the command created, deleted or changed files"


def test_the_table_covers_every_command():
    commands = {c[0].split("-")[0] for c in CASES}  # case names start with their command
    assert {"collect", "train", "sweep", "results", "info", "export", "relabel", "demo"} <= commands
    assert len(CASES) >= 40
