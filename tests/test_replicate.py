"""``bex replicate``: an interrupted replication resumes to the same table; bad configs are one line."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import yaml

from tests.conftest import BEX

pytestmark = pytest.mark.ray


def _config(path, storage, name="tiny", **changes):
    cfg = {"name": name, "storage": str(storage),
           "collect": {"domains": ["walker"], "seeds": [0], "steps": 400, "preset": "small", "episodes_per_chunk": 1,
                       "max_concurrent_runs": 2,
                       "runs": [{"explorer": "random"}, {"explorer": "apt", "objective": "shannon"}]},
           "offline": {"tasks": ["walker_stand"], "learners": ["td3"], "seeds": [0, 1], "steps": 200,
                       "eval_every": 100, "report_every": 50, "eval_episodes": 1, "max_concurrent_trials": 2,
                       "learner_config": {"td3": {"hidden_dim": 64, "batch_size": 64}}},
           "coverage": {"max_states": 300, "map_states": 0, "replicates": 2},
           "analysis": {"claims": [{"a": "shannon", "b": "random"}], "score_last": 2}}
    for k, v in changes.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) else v
    path.write_text(yaml.safe_dump(cfg))
    return path


def _table(root) -> str:
    return (root / "results.md").read_text()


def test_an_interrupted_replication_resumes_to_the_table_of_an_uninterrupted_one(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # the uninterrupted run goes alongside the interrupted one (each mostly waits on Ray; the suite's time)
    a = _config(tmp_path / "a.yaml", tmp_path / "a")
    uninterrupted = subprocess.Popen([BEX, "replicate", "--config", str(a)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)

    try:
        b = _config(tmp_path / "b.yaml", tmp_path / "b")
        proc = subprocess.Popen([BEX, "replicate", "--config", str(b)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env, start_new_session=True)
        exp = tmp_path / "b" / "tiny" / "offline"
        deadline = time.time() + 600
        while time.time() < deadline and not list(exp.glob("*/checkpoint_000000")):  # the offline stage is under way
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            time.sleep(0.5)
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 143, err[-3000:]
        assert not (tmp_path / "b" / "tiny" / "results.md").exists()
        again = subprocess.run([BEX, "replicate", "--config", str(b)], capture_output=True, text=True, timeout=300,
                               env=env)
        assert again.returncode == 2 and "pass --resume" in again.stderr
        p = subprocess.run([BEX, "replicate", "--config", str(b), "--resume"], capture_output=True, text=True,
                           timeout=900, env=env)
        assert p.returncode == 0, p.stderr[-3000:]
        assert "0 of 2 runs to collect" in p.stderr and "resuming" in p.stderr
        summary = json.loads(p.stdout.strip().splitlines()[-1])
        # the root's stage times add the interrupted run's to the resumed one's
        total, this = summary["stage_wall_total_s"], summary["stage_wall_s"]
        assert set(total) == {"collect", "relabel", "offline", "coverage + report", "results"}
        assert total["collect"] > this["collect"] and total["offline"] > this["offline"] > 0
        root = tmp_path / "b" / "tiny"
        assert (root / "analysis.md").is_file() and (root / "trials.csv").is_file()
        # bex analyze on the replication's trials.csv, coverage and config reproduces its analysis files
        r = subprocess.run([BEX, "analyze", str(root / "trials.csv"), "--coverage",
                            str(root / "offline" / "coverage" / "coverage.json"), "--config", str(b), "--out",
                            str(tmp_path / "re")], capture_output=True, text=True, timeout=300, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        for name in ("analysis.md", "analysis.json"):
            assert (tmp_path / "re" / name).read_text() == (root / name).read_text(), name
        verdicts = json.loads(r.stdout.strip().splitlines()[-1])["verdicts"]
        assert list(verdicts) == ["shannon gives higher returns than random (td3[batch_size=64,hidden_dim=64], "
                                 "pooled over 1 task(s))"]
        _, err = uninterrupted.communicate(timeout=900)
    finally:
        if uninterrupted.poll() is None:
            os.killpg(uninterrupted.pid, signal.SIGKILL)
            uninterrupted.communicate()
    assert uninterrupted.returncode == 0, err[-3000:]
    whole = _table(tmp_path / "a" / "tiny")
    assert "random" in whole and "shannon" in whole and (tmp_path / "a" / "tiny" / "report.html").is_file()
    assert _table(tmp_path / "b" / "tiny") == whole

    # A third root (a new machine: the earlier roots gone but their trials.csv committed) carries a's complete
    # trials in and trains only the one whose last evaluation the file lacks; the data are re-collected with the
    # same fingerprints, so the table is a's.
    rows = (tmp_path / "a" / "tiny" / "trials.csv").read_text().splitlines()
    cut = [i for i, r in enumerate(rows) if r.startswith("shannon,") and ',walker_stand,' in r and ',1,200,' in r]
    assert len(cut) == 1
    partial = tmp_path / "partial.csv"
    partial.write_text("\n".join(rows[:cut[0]] + rows[cut[0] + 1:]) + "\n")
    c = _config(tmp_path / "c.yaml", tmp_path / "c")
    p = subprocess.run([BEX, "replicate", "--config", str(c), "--carry", str(partial)], capture_output=True,
                       text=True, timeout=900, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "4 trials (new, 3 carried from 1 file(s))" in p.stderr
    exp = tmp_path / "c" / "tiny" / "offline"
    assert len(list(exp.glob("*/carried.json"))) == 3 and _table(tmp_path / "c" / "tiny") == whole

    def evaluations(path):  # trials.csv without the trial-folder column (the retrained trial has a new folder)
        return [r.rsplit(",", 1)[0] for r in path.read_text().splitlines()]

    assert evaluations(tmp_path / "c" / "tiny" / "trials.csv") == evaluations(tmp_path / "a" / "tiny" / "trials.csv")
    # trials whose data now have another fingerprint are refused in one line, and nothing is lost
    fp = rows[1].split(",")[-2]
    wrong = tmp_path / "wrong.csv"
    wrong.write_text(partial.read_text().replace(fp, "0" * 16))
    r = subprocess.run([BEX, "replicate", "--config", str(c), "--resume", "--carry", str(wrong)],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 2 and "the data differ; retrain without --carry" in r.stderr
    assert len(r.stderr.strip().splitlines()[-1]) < 400 and "Traceback" not in r.stderr
    assert _table(tmp_path / "c" / "tiny") == whole and len(list(exp.glob("*/carried.json"))) == 3


def test_bex_replicate_bad_configs_are_one_line_before_anything_runs(tmp_path):
    cases = [({"offline": {"tasks": ["cheetah_run"]}}, "of domain 'cheetah'"),
             ({"collect": {"runs": [{"explorer": "icm"}]}}, "icm"),
             ({"offline": {"learners": ["td4"]}}, "td4"),
             ({"collect": {"domains": ["walker", "quadruped"]}}, "one config per domain"),
             ({"analysis": {"claims": [{"a": "be/0.5", "b": "random"}]}}, r"\['be/0.5'\]"),
             ({"analysis": {"score_last": 0}}, "score_last=0")]
    from bex.pipelines.replicate import ReplicateConfig, claim_root, run_replication

    for i, (change, needle) in enumerate(cases):
        cfg = _config(tmp_path / f"c{i}.yaml", tmp_path / "s", name=f"r{i}", **change)
        if i == 0:  # the command line: one line, exit 2
            p = subprocess.run([BEX, "replicate", "--config", str(cfg)], capture_output=True, text=True,
                               timeout=300)
            lines = [x for x in p.stderr.splitlines() if x.strip()]
            assert p.returncode == 2 and len(lines) == 1 and needle in lines[0], (change, p.stderr[-2000:])
        else:  # the same check in-process
            with pytest.raises(ValueError, match=needle):
                run_replication(ReplicateConfig.from_yaml(cfg))
        assert not (tmp_path / "s").exists()
    first = _config(tmp_path / "first.yaml", tmp_path / "s", name="r0")
    claim_root(ReplicateConfig.from_yaml(first), resume=False)  # as the first stage of a run does
    other = _config(tmp_path / "other.yaml", tmp_path / "s", name="r0", collect={"steps": 500})
    p = subprocess.run([BEX, "replicate", "--config", str(other), "--resume"], capture_output=True, text=True,
                       timeout=300)
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert p.returncode == 2 and len(lines) == 1 and "already holds a different replication" in lines[0]
    assert "['collect']" in lines[0]


def test_projected_time_left_uses_priors_then_measured_rates():
    """Hand-computed: a prior before a stage runs, elapsed × (1 − f)/f once it runs, later priors scaled by the
    measured/prior ratio of finished stages."""
    from bex.pipelines.time_left import TimeLeft

    now = [0.0]
    lines = []
    p = TimeLeft({"collect": 1000, "relabel": 100, "offline": 2000, "coverage + report": 50, "results": 10},
                 progress=lambda e: lines.append(e.message), every=30, clock=lambda: now[0])
    assert p.left() == 3160
    p.start("collect")
    p.update(1, 100)  # 1 %: below 2 %, still the prior: 1000 × 0.99 + the rest
    assert p.stage_left() == 990 and p.left() == 990 + 2160
    now[0] = 500.0
    p.update(25, 100)  # 25 % in 500 s: 1500 s left in the stage
    assert p.stage_left() == 1500 and p.left() == 1500 + 2160
    assert lines[-1].startswith("[replicate 1/5] collect 25.0% (0:08:20 in stage)") and "all 1:01:00" in lines[-1]
    now[0] = 2000.0
    assert p.finish() == 2000  # twice the prior: every later prior doubles
    assert p.scale() == 2.0 and p.left() == 2 * 2160
    p.skip("relabel")  # nothing to do: neither counted as work nor as time
    assert p.scale() == 2.0 and p.left() == 2 * 2060
    # a stage that did a quarter of its prior's work (resumed) in 100 s: (2100 + 100) / (1000 + 0.25 × 2000)
    now[0] = 0.0
    q = TimeLeft({"collect": 1000, "relabel": 100, "offline": 2000, "coverage + report": 50, "results": 10},
                 progress=lambda e: lines.append(e.message), every=30, clock=lambda: now[0])
    q.start("collect"), q.update(1, 1)
    now[0] = 2100.0
    q.finish()
    q.start("offline")
    now[0] = 2200.0
    q.finish(share=0.25)
    assert q.scale() == 2200 / 1500
    q.start("relabel")
    q.finish(share=0.0)  # every cache existed: a few seconds that say nothing of the machine's speed
    assert q.scale() == 2200 / 1500 and q.left() == 2200 / 1500 * 60
    # a finished stage under a minute does not scale the rest: the decisive replication's relabel of one task
    # in 9 s against 131 s × 1/3 of prior made a 2-hour offline prior read 0:25
    r = TimeLeft({"collect": 0, "relabel": 131.25, "offline": 7185.5, "coverage + report": 70, "results": 5},
                 clock=lambda: now[0])
    now[0] = 0.0
    r.skip("collect")
    r.start("relabel")
    now[0] = 9.0
    r.finish(share=1 / 3)
    r.start("offline")
    assert r.scale() == 1.0 and r.stage_left() == 7185.5
    # a resumed stage that starts at 80 %: its rate counts this run's work (84 − 80 % in 40 s → 1 %/10 s), not
    # 84 % in 40 s (which said 'stage 0:00:08' on the walker replication's resume)
    q.start("coverage + report")
    q.resumed_at(80, 100)
    now[0] += 40
    q.update(84, 100)
    assert q.stage_left() == pytest.approx(40 * 0.16 / 0.04)


def test_prior_of_the_small_replication_counts_its_work():
    """The projection's prior counts every run's steps and every trial's updates and evaluation steps."""
    from bex.pipelines.replicate import ReplicateConfig, prior_seconds
    from bex.pipelines.time_left import COST, collect_seconds, update_seconds

    cfg = ReplicateConfig.from_yaml("tune_configs/replicate_small.yaml")
    runs = cfg.grid().runs_()
    prior = prior_seconds(cfg, runs)
    cpus = os.cpu_count() or 1
    assert prior["collect"] == pytest.approx(collect_seconds(runs, min(cpus, cfg.grid().max_concurrent_runs)))
    steps = {c.explorer: c.steps for c in runs}
    assert steps["random"] >= 100_000
    sweep = cfg.sweep()
    lc = sweep.learner_config["td3"]
    assert lc["variant"] == "exorl"  # ExORL's TD3 (the paper's), costed as such
    per_trial = (sweep.steps * update_seconds("td3/exorl", lc["hidden_dim"], lc["batch_size"])
                 + -(-sweep.steps // sweep.eval_every) * sweep.eval_episodes * 1000 * COST["eval_step"])
    rows = {(c.partition_objective, c.partition_param) for c in runs}  # collection seeds pooled per row
    assert len(rows) == 12 and len(runs) == 24
    n = len(rows) * len(sweep.tasks) * len(sweep.seeds)
    assert prior["offline"] == pytest.approx(n * per_trial / min(cpus, sweep.max_concurrent_trials))
    assert update_seconds("td3", 256, 256) == COST["update_256"]["td3"]
    assert update_seconds("td3", 128, 128) == pytest.approx(COST["update_256"]["td3"] * (0.2 + 0.8 / 8))


def test_offline_settings_may_change_until_the_offline_stage_starts(tmp_path):
    """Collection settings are fixed once a root exists; an experiment's offline settings once it has started;
    another experiment name trains other settings on the same datasets."""
    from bex.pipelines.replicate import MARKER, OFFLINE_RECORD, ReplicateConfig, claim_root

    first = ReplicateConfig.from_yaml(_config(tmp_path / "a.yaml", tmp_path / "s"))
    root = claim_root(first, resume=False)
    longer = ReplicateConfig.from_yaml(_config(tmp_path / "b.yaml", tmp_path / "s", offline={"steps": 300}))
    with pytest.raises(ValueError, match="pass --resume"):
        claim_root(longer, resume=False)
    claim_root(longer, resume=True)  # accepted: the marker now holds the new offline settings
    assert yaml.safe_load((root / MARKER).read_text())["offline"]["steps"] == 300
    more_steps = ReplicateConfig.from_yaml(_config(tmp_path / "c.yaml", tmp_path / "s", collect={"steps": 500},
                                                   offline={"steps": 300}))
    with pytest.raises(ValueError, match=r"different replication \(its \['collect'\] differ\)"):
        claim_root(more_steps, resume=True)
    # the sweep has started with `longer`'s settings (as the offline stage records them)
    (root / "offline").mkdir()
    (root / "offline" / OFFLINE_RECORD).write_text(json.dumps({"offline": longer.offline, "train_on": "pooled"}))
    with pytest.raises(ValueError, match=r"its \['offline'\] differ"):
        claim_root(first, resume=True)
    claim_root(longer, resume=True)
    other_cov = ReplicateConfig.from_yaml(_config(tmp_path / "d.yaml", tmp_path / "s", offline={"steps": 300},
                                                  coverage={"max_states": 200}))
    claim_root(other_cov, resume=True)  # coverage is cached by its settings: always free
    # a second experiment: other learners on the same datasets, its own result files
    crr = ReplicateConfig.from_yaml(_config(tmp_path / "e.yaml", tmp_path / "s", experiment="more",
                                            offline={"learners": ["crr"], "learner_config": {}}))
    claim_root(crr, resume=True)
    assert crr.sweep().name == "more" and crr.output("results", ".md") == root / "results_more.md"
    assert first.output("results", ".md") == root / "results.md"
    with pytest.raises(ValueError, match="experiment='datasets' is reserved"):
        ReplicateConfig.from_yaml(_config(tmp_path / "f.yaml", tmp_path / "s", experiment="datasets"))


@pytest.mark.parametrize("name,domain,rows,tasks,learners", [
    ("replicate_small", "walker", 12, 3, ["td3"]), ("replicate_quadruped", "quadruped", 12, 2, ["td3"]),
    ("replicate_paper", "walker", 17, 3, ["td3", "cql", "crr", "td3_bst"]),
    ("replicate_paper_quadruped", "quadruped", 17, 2, ["td3", "cql", "crr", "td3_bst"])])
def test_the_shipped_replication_configs_validate(name, domain, rows, tasks, learners):
    """Each shipped config validates, collects both k-NN modes in separate partitions, and trains every row."""
    from bex.pipelines.replicate import ReplicateConfig

    cfg = ReplicateConfig.from_yaml(f"tune_configs/{name}.yaml")
    plan = cfg.validate()
    runs = cfg.grid().runs_()
    assert len({(c.domain, c.partition_objective, c.partition_param) for c in runs}) == rows
    assert plan["tasks"] == tasks and cfg.sweep().learners == learners
    objectives = {c.partition_objective for c in runs}
    assert {"shannon", "shannon-recent", "be", "be-recent", "renyi", "rnd", "smm", "random"} <= objectives
    for c in runs:
        mode = c.explorer_settings().get("knn_mode", "batch") if c.explorer == "apt" else None
        assert (mode == "recent") == c.partition_objective.endswith("-recent")
    assert {c.domain for c in runs} == {domain}
    if "paper" in name:
        assert {c.steps for c in runs} == {500_000} and {c.seed for c in runs} == {0}
    else:
        assert {c.steps for c in runs} == {100_000} and {c.seed for c in runs} == {0, 1}


def test_the_second_walker_experiment_shares_the_first_ones_datasets():
    """replicate_small_more.yaml trains other learners on replicate_small.yaml's collection: same root and grid."""
    from bex.pipelines.replicate import ReplicateConfig

    a = ReplicateConfig.from_yaml("tune_configs/replicate_small.yaml")
    b = ReplicateConfig.from_yaml("tune_configs/replicate_small_more.yaml")
    assert (a.name, a.storage, a.collect) == (b.name, b.storage, b.collect)
    assert a.experiment != b.experiment and set(b.sweep().learners) == {"crr", "cql", "td3_bst"}


def test_failed_offline_trials_stop_the_replication_with_one_line(tmp_path):
    """A replication whose trials errored (e.g. a dataset path they cannot see) must not tabulate them."""
    from types import SimpleNamespace

    from bex.pipelines.replicate import TrialsFailed, check_trials

    ok = SimpleNamespace(error=None, path=str(tmp_path / "t0"))
    bad = SimpleNamespace(error=RuntimeError("Traceback ...\nFileNotFoundError: dataset 'x' does not exist"),
                          path=str(tmp_path / "t1_td3_walker_stand"))
    check_trials([ok, ok], tmp_path)  # nothing failed: no error
    with pytest.raises(TrialsFailed) as e:
        check_trials([ok, bad, bad], tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("2 of 3 offline trials failed")
    assert "t1_td3_walker_stand: FileNotFoundError: dataset 'x' does not exist" in msg and "--resume" in msg


def test_a_killed_runs_stage_time_counts_up_to_its_last_progress_line(tmp_path):
    """The walker replication's first offline run was killed at a session's end after 48 min and its time was
    lost: progress lines now record the stage's seconds so far, and the next run folds them into the total."""
    from bex.pipelines.replicate import _checkpoint_time, _finish, _fold_interrupted, stage_times
    from bex.pipelines.time_left import TimeLeft

    now = [0.0]
    p = TimeLeft({"offline": 100}, clock=lambda: now[0])
    p.start("collect")
    now[0] = 50.0
    _finish(p, tmp_path)
    p.start("offline")
    now[0] = 80.0
    _checkpoint_time(p, tmp_path, "offline")
    now[0] = 120.0
    _checkpoint_time(p, tmp_path, "offline")  # killed here: 70 s of offline recorded
    assert stage_times(tmp_path) == {"collect": 50.0, "offline": 70.0}
    _fold_interrupted(tmp_path)  # the next run starts
    assert json.loads((tmp_path / "_bex_replicate_times.json").read_text()) == {"collect": 50.0, "offline": 70.0}
    q = TimeLeft({"offline": 100}, clock=lambda: now[0])
    q.start("offline")
    now[0] = 130.0
    _checkpoint_time(q, tmp_path, "more")  # another experiment's stage is keyed apart
    assert stage_times(tmp_path)["offline [more]"] == 10.0
    now[0] = 150.0
    _finish(q, tmp_path, "more")  # the finished stage's wall time replaces its running record
    assert stage_times(tmp_path) == {"collect": 50.0, "offline": 70.0, "offline [more]": 30.0}


def test_a_second_replication_on_a_root_in_use_is_refused_in_one_line(tmp_path):
    """Two runs on one root would collect the same partitions and double-count stage times: the second is
    refused while the first holds the root, and may start once it has let go."""
    from bex.pipelines.replicate import ReplicateConfig, claim_root, hold_root

    cfg = _config(tmp_path / "c.yaml", tmp_path / "s", name="busy")
    root = claim_root(ReplicateConfig.from_yaml(cfg), resume=False)
    held = hold_root(root)  # as a running `bex replicate` does
    p = subprocess.run([BEX, "replicate", "--config", str(cfg), "--resume"], capture_output=True, text=True,
                       timeout=300)
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert p.returncode == 2 and len(lines) == 1, p.stderr[-2000:]
    assert "is in use by another bex replicate (pid" in lines[0] and f"pid {os.getpid()} " in lines[0]
    assert not (root / "datasets").exists()  # nothing ran
    held.close()
    hold_root(root).close()  # free again
