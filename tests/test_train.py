"""Offline training: the Ray-free trial loop; on Ray Tune: bad input before Tune starts, checkpoint resume,
sweep + results table."""
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from bex.learners.trial import TrialConfig
from bex.pipelines.grids import SweepConfig
from bex.replay import DatasetWriter
from tests.conftest import BEX
from tests.helpers import collect_episode, kill_descendant, last_json


@pytest.fixture(scope="module")
def walker_data(tmp_path_factory):
    """Two small walker 'datasets' (partitions) of random episodes."""
    root = tmp_path_factory.mktemp("data") / "walker"
    for objective, param, seed in [("be", 0.5, 1), ("shannon", None, 2)]:
        with DatasetWriter(root, collect_episode("walker", "stand", 0, 5)[2], objective, param, 0) as w:
            for i in range(2):
                ep, _, _ = collect_episode("walker", "stand", seed * 10 + i, 400, episode_id=f"{objective}{i}")
                w.write_episode(ep)
    return root


def bex(*args, timeout=600):
    return subprocess.run([BEX, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def one_line_error(p, needle):
    assert p.returncode != 0
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("bex: error:") and needle in lines[0], p.stderr


def test_trial_config_is_strict(walker_data):
    base = dict(dataset=str(walker_data), task="walker_stand")
    assert TrialConfig.from_dict(base).resolved_learner_config()["hidden_dim"] == 256  # small preset
    with pytest.raises(ValueError, match="unknown learner 'td4'"):
        TrialConfig.from_dict(dict(base, learner="td4"))
    with pytest.raises(ValueError, match=r"TrialConfig: unknown key\(s\) \['stepz'\]"):
        TrialConfig.from_dict(dict(base, stepz=3))
    with pytest.raises(ValueError, match=r"unknown td3 hyperparameter\(s\) \['gama'\]"):
        TrialConfig.from_dict(dict(base, learner_config={"gama": 0.9}))
    with pytest.raises(ValueError, match=r"TrialConfig.steps=0 is out of range"):
        TrialConfig.from_dict(dict(base, steps=0))


def test_trial_loop_reports_checkpoints_and_resumes_without_ray(walker_data, tmp_path):
    """``learners.trial.run_trial`` with a tiny BC and a plain-Python report callback (no Ray, no Tune).

    steps=6, report_every=2, eval_every=4: reports at 2, 4, 6; evaluations and checkpoints at 4 and at the
    last step, 6.  Resuming from the step-4 checkpoint trains steps 5-6 only and ends where the
    uninterrupted run ended (same sampler and torch RNG streams).
    """
    import sys

    import torch

    from bex.learners.trial import STATE_FILE, run_learner_trial

    cfg = TrialConfig.from_dict(dict(dataset=str(walker_data), filters={"objective": "be"}, task="walker_stand",
                                     learner="bc", learner_config={"batch_size": 8, "hidden_dim": 16}, steps=6,
                                     eval_every=4, report_every=2, eval_episodes=1, device="cpu", seed=3))
    rows, ckpts = [], []

    def report(metrics, write_checkpoint=None):
        rows.append(metrics)
        if write_checkpoint is not None:
            d = tmp_path / f"ckpt{metrics['steps']}"
            d.mkdir()
            write_checkpoint(str(d))
            ckpts.append(d)

    history = run_learner_trial(cfg, None, report)
    assert [r["steps"] for r in rows] == [2, 4, 6]
    assert [d.name for d in ckpts] == ["ckpt4", "ckpt6"]
    assert [h["steps"] for h in history] == [4, 6]
    loop_keys = {"steps", "train/updates_per_s", "resumed_from", "wall_s", "data/fingerprint"}
    assert len(rows[0]["data/fingerprint"]) == 16  # the training data's content hash, in every report
    train_keys = set(rows[0]) - loop_keys  # the learner's own metrics (BC: actor/loss, ...)
    assert loop_keys <= set(rows[0]) and train_keys and all(np.isfinite(rows[0][k]) for k in train_keys)
    assert not any(k.startswith("eval/") for k in rows[0])  # no evaluation before step 4
    evals = {"eval/return_mean", "eval/return_std", "eval/episodes", "eval/at_step"}
    assert set(rows[1]) == set(rows[0]) | evals and set(rows[2]) == set(rows[1])
    assert [r["eval/at_step"] for r in rows[1:]] == [4, 6] and rows[2]["eval/episodes"] == 1.0
    assert [r["resumed_from"] for r in rows] == [0, 0, 0]
    assert rows[0]["wall_s"] <= rows[1]["wall_s"] <= rows[2]["wall_s"]
    state = torch.load(ckpts[0] / STATE_FILE, weights_only=True)
    assert set(state) == {"learner", "sampler", "step", "history", "wall_s", "torch_rng"}
    assert state["step"] == 4 and [h["steps"] for h in state["history"]] == [4]

    resumed = []
    history2 = run_learner_trial(cfg, None, lambda m, w=None: resumed.append(m), checkpoint=ckpts[0])
    assert [r["steps"] for r in resumed] == [6] and resumed[0]["resumed_from"] == 4
    assert [h["steps"] for h in history2] == [4, 6]
    assert resumed[0]["wall_s"] >= state["wall_s"]
    same = sorted(train_keys | {"eval/return_mean", "eval/at_step"})
    assert {k: resumed[0][k] for k in same} == {k: rows[2][k] for k in same}
    # the loop and the moved modules import no Ray
    check = subprocess.run([sys.executable, "-c", "import sys, bex.learners.trial, bex.replay.rllib_view, "
                            "bex.envs.gym; assert 'ray' not in sys.modules"], capture_output=True, text=True,
                           timeout=120)
    assert check.returncode == 0, check.stderr


def test_train_bad_input_fails_before_tune(walker_data, tmp_path):
    one_line_error(bex("train", "--dataset", walker_data, "--task", "walker_stand", "--learner", "sac",
                       "--storage", tmp_path), "unknown learner 'sac'")
    one_line_error(bex("train", "--dataset", walker_data, "--task", "quadruped_walk", "--storage", tmp_path),
                   "belongs to domain 'quadruped'")
    one_line_error(bex("train", "--dataset", tmp_path / "nope", "--task", "stand", "--storage", tmp_path),
                   "does not exist")
    one_line_error(bex("train", "--dataset", walker_data, "--task", "stand", "--set", "lr=-1",
                       "--storage", tmp_path), "lr")
    one_line_error(bex("train", "--dataset", walker_data, "--task", "stand", "--learner", "cql", "--set",
                       "variant=exorl2", "--storage", tmp_path), "variant='exorl2' not allowed; must be one of")
    assert not any(tmp_path.iterdir())  # nothing started, nothing written


def test_train_refuses_a_dataset_observed_differently(tmp_path):
    """Data collected on cartpole_three_poles (11 observation floats) cannot train a cartpole_balance policy."""
    ep, _, spec = collect_episode("cartpole", "three_poles", 0, 50)
    data = tmp_path / "data"
    with DatasetWriter(data, spec, "random", None, 0) as w:
        w.write_episode(ep)
    store = tmp_path / "store"
    store.mkdir()
    one_line_error(bex("train", "--dataset", data, "--task", "cartpole_balance", "--storage", store),
                   "dataset collected on cartpole_three_poles observes position+velocity (11 floats)")
    assert not any(store.iterdir())


def test_sweep_yaml_validation(walker_data, tmp_path, monkeypatch):
    good = dict(name="s", datasets=[str(walker_data)], tasks=["walker_stand"], learners=["td3", "bc"],
                seeds=[0, 1], grid={"td3": {"bc_alpha": [0.0, 2.5]}})
    trials = SweepConfig.from_dict(good).trials()
    # 2 dataset rows (be/0.5, shannon) x (td3 x 2 bc_alpha + bc) x 2 seeds
    assert len(trials) == 2 * 3 * 2
    assert {t.label for t in trials} == {"be/0.5", "shannon"}
    assert {t.filters["objective"] for t in trials} == {"be", "shannon"}
    # seed-major: a sweep cut after its first half has every dataset x learner cell at seed 0
    assert [t.seed for t in trials] == [0] * 6 + [1] * 6
    assert {(t.label, t.learner_config.get("bc_alpha")) for t in trials[:6]} == \
        {(d, a) for d in ("be/0.5", "shannon") for a in (0.0, 2.5, None)}
    # a dataset path relative to the driver's directory reaches the trials absolute (they run in their own dir)
    monkeypatch.chdir(walker_data.parent)
    rel = SweepConfig.from_dict(dict(good, datasets=[walker_data.name])).trials()
    assert {t.dataset for t in rel} == {str(walker_data.resolve())}
    for bad, needle in [(dict(good, learnerz=["td3"]), "unknown key(s) ['learnerz']"),
                        (dict(good, learners=["td3", "nope"]), "unknown learner 'nope'"),
                        (dict(good, tasks=["quadruped_walk"]), "no dataset of domain 'quadruped'"),
                        (dict(good, grid={"td3": {"tau": [2.0]}}), "tau"),
                        (dict(good, datasets=[{"path": str(walker_data), "filtr": {}}]), "unknown key(s) ['filtr']"),
                        (dict(good, datasets=[str(tmp_path / "none")]), "does not exist")]:
        with pytest.raises((ValueError, FileNotFoundError)) as e:
            SweepConfig.from_dict(bad).trials()
        assert needle in str(e.value) and "\n" not in str(e.value)
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("name: s\ndatasets: [x]\ntasks: [walker_stand]\nlearners: [td3]\nunknown_key: 1\n")
    one_line_error(bex("sweep", cfg), "unknown key(s) ['unknown_key']")


@pytest.mark.ray
def test_killed_trial_resumes_from_checkpoint(walker_data, tmp_path):
    """Kill the trial's worker process after its first checkpoint; Tune restarts it from there."""
    proc = subprocess.Popen([BEX, "train", "--dataset", walker_data, "--task", "walker_stand", "--learner", "td3",
                             "--steps", "3000", "--eval-every", "1000", "--eval-episodes", "1", "--storage",
                             tmp_path, "--name", "kill", "--max-failures", "3",
                             "--set", "hidden_dim=64", "--set", "batch_size=64"],  # checkpoint plumbing, not TD3
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not list(tmp_path.glob("kill/*/checkpoint_000000")):
        time.sleep(0.5)
    assert list(tmp_path.glob("kill/*/checkpoint_000000")), "no checkpoint appeared"
    kill_descendant(proc.pid, "ray::ImplicitFunc")
    out, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err[-2000:]
    final = last_json(out)
    assert final["steps"] == 3000
    assert final["resumed_from"] in (1000, 2000)  # continued its step count from a checkpoint
    rows = [json.loads(x) for x in next(tmp_path.glob("kill/*/result.json")).read_text().splitlines() if x.strip()]
    assert rows[-1]["steps"] == 3000
    assert np.isfinite(final["eval/return_mean"])


@pytest.mark.ray
def test_sweep_then_results_table(walker_data, tmp_path):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(f"""
name: tiny
storage: {tmp_path / 'runs'}
datasets: [{walker_data}]
tasks: [walker_stand]
learners: [bc]
seeds: [0, 1]
steps: 200
eval_every: 100
eval_episodes: 1
report_every: 100
max_concurrent_trials: 2
""")
    leaked_before = set(Path(tempfile.gettempdir()).glob("bex-ckpt-*"))
    logs = tmp_path / "logs"
    p = subprocess.run([BEX, "sweep", str(cfg)], capture_output=True, text=True, timeout=240,
                       env={**os.environ, "BEX_LOG_DIR": str(logs)})
    assert p.returncode == 0, p.stderr[-3000:]
    # bex's own lines only: Ray's and Tune's output (trial tables, banners) went to the log the command names
    (log,) = logs.glob("bex-*.log")
    assert f"bex: Ray's and Tune's own output goes to {log}\n" in p.stderr
    assert all(line.startswith(("[sweep", "bex: ")) for line in p.stderr.strip().splitlines()), p.stderr
    assert "Trial status" in log.read_text() and "Trial status" not in p.stderr + p.stdout
    run = tmp_path / "runs" / "tiny"
    assert len(list(run.glob("*/checkpoint_*"))) == 4 * 2  # 2 datasets x 2 seeds, 2 evaluations each
    # each checkpoint went through a temporary directory, removed once Tune had copied it
    assert set(Path(tempfile.gettempdir()).glob("bex-ckpt-*")) <= leaked_before
    md = (run / "results.md").read_text()
    assert "| dataset | walker_stand bc |" in md
    lines = [x for x in md.splitlines() if x.startswith("| be/0.5") or x.startswith("| shannon")]
    assert len(lines) == 2 and sum("**" in x for x in lines) == 1  # best of the column marked once
    assert "(n=2)" in lines[0]
    csv = (run / "results.csv").read_text().splitlines()
    assert csv[0] == "dataset,column,mean,sd,n,scores" and len(csv) == 3
    trials = (run / "trials.csv").read_text().splitlines()  # 2 datasets x 2 seeds x 2 evaluations
    assert trials[0].startswith("dataset,collection_seed,task,learner,seed,step,return_mean,episodes")
    assert len(trials) == 1 + 8
    assert list((run / "curves").glob("*.png"))
    # the same table again from `bex results`
    p2 = bex("results", run)
    assert p2.returncode == 0 and p2.stdout.strip() == md.strip()
    # resuming a finished sweep runs nothing new and keeps the table
    p3 = bex("sweep", cfg, "--resume")
    assert p3.returncode == 0, p3.stderr[-2000:]


def test_results_table_uses_only_real_evaluations(tmp_path):
    """Reports between evaluations carry the last one forward; the table and curves must not count them."""
    from bex.analysis.analyze import AnalysisConfig, analyze
    from bex.analysis.results import sweep_rows
    from bex.analysis.trials import curves

    def table(last=1):
        rows = sweep_rows(tmp_path)
        return analyze(rows, AnalysisConfig(score_last=last)), curves(rows)

    def trial(name, label, seed, evals):
        d = tmp_path / name
        d.mkdir()
        cfg = dict(dataset="x", task="walker_stand", learner="td3", label=label, seed=seed, steps=300,
                   learner_config={})
        (d / "params.json").write_text(json.dumps({"trial": cfg}))
        rows = []
        for step in (100, 150, 200, 250, 300):  # evaluation every 100 steps, reports every 50
            at = max(s for s in evals if s <= step)
            rows.append({"steps": step, "eval/return_mean": evals[at], "eval/at_step": at})
        (d / "result.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    trial("a", "be/0.5", 0, {100: 10.0, 200: 20.0, 300: 40.0})
    trial("b", "be/0.5", 1, {100: 30.0, 200: 10.0, 300: 20.0})
    res, curve = table()
    assert res["table"]["cells"]["be/0.5\twalker_stand td3"]["values"] == [40.0, 20.0]  # final evaluations
    assert table(last=2)[0]["table"]["cells"]["be/0.5\twalker_stand td3"]["values"] == [30.0, 15.0]
    (steps, values), _ = curve[("walker_stand", "td3")]["be/0.5"]
    assert steps == [100, 200, 300] and values == [10.0, 20.0, 40.0]
    assert res["incomplete_trials"] == 0
    # a fresh sweep over a killed one whose Tune state was lost: a second folder of seed 0's trial, less far
    trial("c", "be/0.5", 0, {100: 99.0})
    rows = [json.loads(x) for x in (tmp_path / "c" / "result.json").read_text().splitlines()][:1]
    (tmp_path / "c" / "result.json").write_text(json.dumps(rows[0]) + "\n")
    res, _ = table()
    assert res["table"]["cells"]["be/0.5\twalker_stand td3"]["values"] == [40.0, 20.0]
    assert res["incomplete_trials"] == 0


def test_paper_sweep_uses_exorl_variants_and_accepts_the_optional_learners():
    from bex.learners import make_config

    cfg = SweepConfig.from_yaml("tune_configs/offline_paper.yaml")
    assert cfg.learners == ["td3", "cql", "crr", "td3_bst"] and cfg.preset == "paper" and cfg.steps == 100_000
    resolved = {n: make_config(n, cfg.learner_config.get(n, {}), preset=cfg.preset) for n in cfg.learners}
    assert resolved["td3"].variant == "exorl" and resolved["cql"].variant == "exorl"
    assert [resolved["cql"].option(k) for k in ("importance_sampling", "per_dim_log_prob", "double_tanh")] == \
        [False, True, True]
    with_optional = SweepConfig.from_dict({**cfg.__dict__, "datasets": ["x"],
                                           "learners": cfg.learners + ["iql", "iql_bst"]})
    assert {make_config(n, preset="paper").extraction for n in with_optional.learners[-2:]} == {"awr", "bst"}


def test_carried_trials_read_like_tune_trials_and_other_data_is_refused_before_anything_is_written(walker_data,
                                                                                                    tmp_path):
    """``bex replicate --carry``: a complete trial of the file becomes a trial folder that reads back as the same
    trials.csv rows; an unfinished one is left to train; one trained on other data refuses the whole carry."""
    from bex.analysis.results import read_trials
    from bex.analysis.trials import rows_from_trials
    from bex.pipelines.replicate import carry_trials
    from bex.replay import Dataset

    trials = SweepConfig.from_dict(dict(name="s", datasets=[{"path": str(walker_data), "split": True}],
                                        tasks=["walker_stand"], learners=["td3"], seeds=[0], steps=200,
                                        eval_every=100, eval_episodes=2)).trials()
    be, sh = sorted(trials, key=lambda t: t.label)
    fp = {t.label: Dataset(t.dataset, **t.filters).fingerprint() for t in trials}
    assert be.label == "be/0.5" and fp["be/0.5"] != fp["shannon"]

    def rows(t, steps, fingerprint=None):
        return [{"dataset": t.label, "collection_seed": "", "task": "walker_stand", "learner": "td3", "seed": 0,
                 "step": s, "return_mean": 10.0 + s, "episodes": 2, "return_std": 1.0, "steps_planned": 200,
                 "fingerprint": fingerprint or fp[t.label], "trial": f"old_{t.label.replace('/', '-')}"}
                for s in steps]

    exp = tmp_path / "exp"
    exp.mkdir()
    left, n = carry_trials(exp, trials, rows(be, (100, 200)) + rows(sh, (100,)), ["x.csv"])
    assert n == 1 and [t.label for t in left] == ["shannon"]  # shannon's file stops at 100 of 200 steps
    got = sorted((r["dataset"], r["step"], r["return_mean"], r["fingerprint"], r["trial"])
                 for r in rows_from_trials(read_trials(exp)))
    assert got == [("be/0.5", 100, 110.0, fp["be/0.5"], "old_be-0.5"), ("be/0.5", 200, 210.0, fp["be/0.5"],
                                                                         "old_be-0.5")]
    assert carry_trials(exp, trials, rows(be, (100, 200)), ["x.csv"])[1] == 1  # again: nothing rewritten
    exp2 = tmp_path / "exp2"
    exp2.mkdir()
    with pytest.raises(ValueError) as e:
        carry_trials(exp2, trials, rows(be, (100, 200)) + rows(sh, (100, 200), fingerprint="0" * 16), ["x.csv"])
    assert "the data differ; retrain without --carry" in str(e.value) and "\n" not in str(e.value)
    assert not any(exp2.iterdir())
