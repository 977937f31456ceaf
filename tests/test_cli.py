"""The bex command line: bad input fails fast with one line; a real Ray collection end to end."""
import json
import subprocess

import numpy as np
import pytest

from bex.replay import Dataset
from tests.conftest import BEX
from tests.helpers import last_json


def bex(*args, timeout=240):
    return subprocess.run([BEX, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(p, *needles):
    assert p.returncode != 0, p.stdout
    lines = [line for line in p.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("bex: error: "), p.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize("args,needles", [
    (["--domain", "robot"], ["unknown domain 'robot'"]),
    (["--steps", "0"], ["CollectConfig.steps=0 is out of range: allowed [1, inf)"]),
    (["--steps", "-5"], ["steps=-5"]),
    (["--actors", "0"], ["CollectConfig.actors=0 is out of range"]),
    (["--explorer", "magic"], ["CollectConfig.explorer='magic' not allowed; must be one of 'random', 'apt'"]),
])
def test_collect_bad_input(tmp_path, args, needles):
    p = bex("collect", "--out", tmp_path / "d", *args)
    assert_one_line_error(p, *needles)
    assert not (tmp_path / "d").exists()  # nothing half-written


def test_collect_out_is_a_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    assert_one_line_error(bex("collect", "--out", f, "--steps", "10"), "is a file")
    assert f.read_text() == "x"


def _small_dataset(root):
    from bex.replay import DatasetWriter
    from tests.helpers import collect_episode

    ep, live, spec = collect_episode("walker", "stand", seed=0, steps=40)
    with DatasetWriter(root, spec, "random", None, 0) as w:
        w.write_episode(ep)
    return w.files[0], live


def test_relabel_info_export_bad_input(tmp_path):
    assert_one_line_error(bex("info", tmp_path / "nope"), "does not exist")
    f, _ = _small_dataset(tmp_path / "d")
    assert_one_line_error(bex("relabel", tmp_path / "d", "--task", "quadruped_walk", "--local"),
                          "belongs to domain 'quadruped'")
    assert_one_line_error(bex("relabel", tmp_path / "d", "--task", "fly", "--local"), "unknown task 'fly'")
    assert_one_line_error(bex("export", tmp_path / "d", "--task", "stand", "--out", tmp_path / "x.npz"),
                          "not relabelled")
    assert not (tmp_path / "x.npz").exists()
    data = f.read_bytes()
    f.write_bytes(data[:100])
    assert_one_line_error(bex("info", tmp_path / "d"), "corrupt or truncated", f.name)


def test_relabel_local_info_export_roundtrip(tmp_path):
    f, live = _small_dataset(tmp_path / "d")
    p = bex("relabel", tmp_path / "d", "--task", "walker_stand", "--task", "run", "--local", "--workers", "1")
    assert p.returncode == 0, p.stderr
    assert [json.loads(x)["task"] for x in p.stdout.splitlines()] == ["walker_stand", "walker_run"]
    info = json.loads(bex("info", tmp_path / "d", "--json").stdout)
    assert info["episodes"] == 1 and info["transitions"] == 40 and info["schema_version"] == 1
    assert info["cached_rewards"] == ["walker_run", "walker_stand"]
    assert info["shapes"] == {"observation": 24, "action": 6, "physics": 18}
    assert info["collection_task"] == "stand"
    assert bex("export", tmp_path / "d", "--task", "stand", "--out", tmp_path / "x.npz").returncode == 0
    np.testing.assert_allclose(np.load(tmp_path / "x.npz")["rewards"], live[1:], atol=1e-6)


@pytest.mark.ray
def test_collect_random_with_two_actors_exact_steps(tmp_path):
    out = tmp_path / "d"
    p = bex("collect", "--out", out, "--steps", 2500, "--actors", 2, "--seed", 4, "--episodes-per-chunk", 1)
    assert p.returncode == 0, p.stderr
    summary = last_json(p.stdout)
    assert summary["steps"] == 2500
    ds = Dataset(out)
    arr = ds.load(["episode_id", "step", "is_first", "is_last"])
    assert len(arr) - arr.is_first.sum() == 2500 and arr.is_first.sum() == 3
    keys = set(zip(arr.episode_id, arr.step))
    assert len(keys) == len(arr)  # no duplicated (episode_id, step)
    assert len(ds.files) == 3 and ds.partitions[0]["seed"] == "4"
    # the same command again refuses to mix data; --resume finds everything done
    assert_one_line_error(bex("collect", "--out", out, "--steps", 2500, "--actors", 2, "--seed", 4,
                              "--episodes-per-chunk", 1), "--resume")
    p = bex("collect", "--out", out, "--steps", 2500, "--actors", 1, "--seed", 4, "--episodes-per-chunk", 1,
            "--resume")
    assert p.returncode == 0, p.stderr
    assert len(Dataset(out).files) == 3
    # a different run into the same partition is refused before any actor starts
    assert_one_line_error(bex("collect", "--out", out, "--steps", 3000, "--seed", 4), "different run")
    # relabel through Ray tasks
    p = bex("relabel", out, "--task", "walker_walk")
    assert p.returncode == 0, p.stderr
    assert last_json(p.stdout)["computed_rows"] == len(arr)


def test_the_progress_printer_draws_every_kind_of_event():
    """One printer for every command: bars at the start, each quarter and the end of a stage (not on a
    terminal), message lines, the collection's run table, a distillation's step lines."""
    import io

    from bex.cli.progress import printer
    from bex.core.progress import Progress

    buf = io.StringIO()
    show = printer("x", stream=buf)
    for i in range(9):
        show(Progress("load", i, 8))
    bars = buf.getvalue().splitlines()
    assert [b.split("|")[2].split()[0] for b in bars] == ["0/8", "2/8", "4/8", "6/8", "8/8"], bars
    assert bars[-1].startswith("[x] load") and "#" * 24 in bars[-1]
    show(Progress("demo", 1, 4, message="[2/4] relabel"))
    assert buf.getvalue().splitlines()[-1] == "[2/4] relabel"
    row = {"run": "walker/be=0.5/s0", "steps": 10, "total": 10, "env_steps_per_s": 5.0, "updates_per_s": 1.0,
           "intr_reward_mean": None, "knn_ms": None, "restarts": 0}
    show(Progress("collect", 10, 10, rows=(row,)))
    assert buf.getvalue().splitlines()[-1].startswith("walker/be=0.5/s0") and "10/10" in buf.getvalue()
    show(Progress("distill", 3, 4, rows=({"steps": 3, "distill/loss": 0.5, "distill/s_per_step": 2.0},)))
    assert buf.getvalue().splitlines()[-1].startswith("[distill] step 3/4 loss 0.5 2.00 s/step")
    lines = []
    printer("demo", stream=buf, messages=lines.append)(Progress("demo", 0, 4, message="hello"))
    assert lines == ["hello"]
    assert Progress("s", 3, 4).fraction == 0.75 and Progress("s", 3, 0).fraction is None


def test_command_defaults_live_in_the_configs():
    from bex.actors.collect import DEFAULT_APT_OBJECTIVE, CollectConfig
    from bex.learners.trial import TrialConfig

    assert CollectConfig.from_options(explorer="apt", out="x").objective == DEFAULT_APT_OBJECTIVE == "shannon"
    assert CollectConfig.from_options(explorer="apt", objective="be", alpha=0.5, out="x").param == 0.5
    assert CollectConfig.from_options(explorer="random", out="x").objective is None
    with pytest.raises(ValueError, match="objective renyi takes --q only"):
        CollectConfig.from_options(explorer="apt", objective="renyi", alpha=0.5, out="x")
    assert TrialConfig.default("steps") == 10_000 and TrialConfig.default("filters") == {}
    with pytest.raises(ValueError, match="unknown key 'stepz'"):
        TrialConfig.default("stepz")


@pytest.mark.ray
def test_the_demo_runs_end_to_end_and_prints_bex_lines_only(tmp_path):
    """`bex demo` at a tiny size: every stage runs, the table and the page are written, stdout is the demo's
    narrative and stderr bex's own lines (Ray's and Tune's output goes to the log it names)."""
    import os

    p = subprocess.run([BEX, "demo", "--root", str(tmp_path / "d"), "--steps", "300", "--train-steps", "8"],
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "BEX_LOG_DIR": str(tmp_path / "logs")})
    assert p.returncode == 0, p.stderr[-3000:]
    assert "[4/4] results" in p.stdout and "demo finished" in p.stdout and "| be/0.5 |" in p.stdout
    assert (tmp_path / "d" / "report.html").is_file() and (tmp_path / "d" / "sweeps" / "demo" / "trials.csv").is_file()
    for noise in ("Traceback", "SystemExit", "View detailed results", "Trial status", "tensorboard"):
        assert noise not in p.stdout + p.stderr, noise
    (log,) = (tmp_path / "logs").glob("bex-*.log")
    assert "View detailed results" in log.read_text()
