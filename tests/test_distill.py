"""OBD / SDW-OBD core (learners/distill.py): hypergradient, inner loop, SDW weights."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bex.learners.distill import (
    DistillConfig,
    bc_loss,
    hypergradient,
    init_student,
    inner_train,
    sdw_weights,
    student_action,
)


def _tiny(seed=0):
    """2-D states, 2-D actions, N = 4 synthetic pairs, T = 3, a width-8 student, float64."""
    g = torch.Generator().manual_seed(seed)
    cfg = DistillConfig(size=4, inner_steps=3, inner_lr=0.3, hidden_dim=8, batch_size=5, batches=2)
    p0 = init_student(2, 2, 8, g, dtype=torch.float64)
    s = torch.randn(4, 2, generator=g, dtype=torch.float64)
    a = torch.rand(4, 2, generator=g, dtype=torch.float64) * 1.6 - 0.8
    noise = torch.randn(3, 4, 2, generator=g, dtype=torch.float64)
    real = [(torch.randn(5, 2, generator=g, dtype=torch.float64), torch.rand(5, 2, generator=g, dtype=torch.float64)
             * 2 - 1, torch.rand(5, generator=g, dtype=torch.float64) + 0.5, torch.randn(5, 2, generator=g,
                                                                                      dtype=torch.float64))
            for _ in range(2)]
    return cfg, p0, s, a, noise, real


def test_hypergradient_equals_finite_differences_through_the_unrolled_inner_loop():
    cfg, p0, s, a, noise, real = _tiny()
    loss, gs, ga = hypergradient(s, a, p0, cfg, noise, real)

    def f(s_, a_):
        return float(hypergradient(s_, a_, p0, cfg, noise, real)[0])

    h = 1e-6
    for x, g, which in ((s, gs, 0), (a, ga, 1)):
        for idx in np.ndindex(*x.shape):
            plus, minus = x.clone(), x.clone()
            plus[idx] += h
            minus[idx] -= h
            fd = (f(plus, a) - f(minus, a)) / (2 * h) if which == 0 else (f(s, plus) - f(s, minus)) / (2 * h)
            assert float(g[idx]) == pytest.approx(fd, rel=1e-5, abs=1e-9), (which, idx)
    assert float(gs.abs().sum()) > 1e-6 and float(ga.abs().sum()) > 1e-6  # the gradient is not trivially zero


def test_inner_loop_equals_t_explicit_sgd_steps_of_an_nn_module():
    cfg, p0, s, a, noise, _ = _tiny(1)

    class Student(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.l0, self.l1, self.l2, self.l3 = (torch.nn.Linear(2, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 8),
                                                  torch.nn.Linear(8, 4))
            self.log_std_mult = torch.nn.Parameter(torch.tensor(1.0))
            self.log_std_offset = torch.nn.Parameter(torch.tensor(-1.0))

        def forward(self, x, eps):
            h = torch.relu(self.l2(torch.relu(self.l1(torch.relu(self.l0(x))))))
            mean, raw = self.l3(h).chunk(2, -1)
            log_std = (self.log_std_mult * raw + self.log_std_offset).clamp(-20, 2)
            return torch.tanh(mean + log_std.exp() * eps)

    m = Student().double()
    with torch.no_grad():
        for name, prm in m.named_parameters():
            prm.copy_(p0[name])
    opt = torch.optim.SGD(m.parameters(), lr=cfg.inner_lr)
    for t in range(3):
        opt.zero_grad()
        torch.nn.functional.mse_loss(m(s, noise[t]), a).backward()
        opt.step()
    p3 = inner_train(dict(p0), s, a, cfg.inner_lr, noise, 3, create_graph=False)
    for name, prm in m.named_parameters():
        torch.testing.assert_close(p3[name], prm.detach(), rtol=1e-12, atol=1e-12)
    assert float(bc_loss(p3, s, a, noise[0])) < float(bc_loss(p0, s, a, noise[0]))


def test_student_init_is_obd_orthogonal_with_gain_sqrt2_and_zero_bias():
    p = init_student(24, 6, 256, torch.Generator().manual_seed(0))
    w = p["l1.weight"]
    torch.testing.assert_close(w @ w.T, 2.0 * torch.eye(256), atol=1e-4, rtol=0)
    assert all(float(p[f"l{i}.bias"].abs().sum()) == 0 for i in range(4))
    assert float(p["log_std_mult"]) == 1.0 and float(p["log_std_offset"]) == -1.0
    a = student_action(p, torch.randn(7, 24))
    assert a.shape == (7, 6) and float(a.abs().max()) < 1


def test_sdw_weights_rank_the_sparse_cluster_first_and_equal_reciprocal_knn_densities_by_hand():
    rng = np.random.default_rng(0)
    dense = rng.uniform(0.0, 1.0, 300)          # density 300 per unit
    sparse = rng.uniform(10.0, 20.0, 30)        # density 3 per unit
    x = np.concatenate([dense, sparse])[:, None]
    k = 3
    w = sdw_weights(x, k=k, clip_quantile=1.0)
    assert w[300:].mean() > 20 * w[:300].mean()
    assert w.mean() == pytest.approx(1.0)
    # by hand: p_hat_i = k / (n * 2 r_k(i)) in one dimension (V_1 = 2), w_i = (1 / p_hat_i) / mean(1 / p_hat)
    d = np.abs(x - x.T)
    np.fill_diagonal(d, np.inf)
    rk = np.sort(d, axis=1)[:, k - 1]
    inv = 1.0 / (k / (len(x) * 2.0 * rk))
    np.testing.assert_allclose(w, inv / inv.mean(), rtol=1e-4)
    clipped = sdw_weights(x, k=k, clip_quantile=0.9)
    assert clipped.mean() == pytest.approx(1.0) and clipped.max() <= np.quantile(w, 0.9) / np.minimum(
        w, np.quantile(w, 0.9)).mean() + 1e-9


def test_distill_config_is_strict():
    with pytest.raises(ValueError, match="weighting"):
        DistillConfig.from_dict({"weighting": "kde"})
    with pytest.raises(ValueError, match="size"):
        DistillConfig.from_dict({"size": 0})
    assert math.isclose(DistillConfig().inner_lr, 0.1) and DistillConfig().inner_steps == 100


# ------------------------------------------------------------------------------------------ bex distill
def _source(root):
    from bex.replay import DatasetWriter
    from tests.helpers import collect_episode

    ep, _, spec = collect_episode("walker", "stand", 3, 150)
    with DatasetWriter(root, spec, "random", None, 0) as w:
        w.write_episode(ep)
    return root


def _teacher(trial_dir, task="walker_stand", obs_dim=24, action_dim=6):
    """A bex CQL trial directory as Tune leaves it (params.json + checkpoint_000000/state.pt), untrained."""
    import json

    from bex.core.state import state_bytes
    from bex.learners import make_learner

    trial = {"dataset": "unused", "task": task, "learner": "cql", "learner_config": {"hidden_dim": 32}, "seed": 0}
    (trial_dir / "checkpoint_000000").mkdir(parents=True)
    (trial_dir / "params.json").write_text(json.dumps({"trial": trial}))
    learner = make_learner("cql", obs_dim, action_dim, {"hidden_dim": 32}, seed=0)
    (trial_dir / "checkpoint_000000" / "state.pt").write_bytes(state_bytes({"learner": learner.state_dict()}))
    return trial_dir


SMALL = ["--set", "hidden_dim=16", "--set", "baseline_bc_steps=20", "--set", "batches=2", "--set", "batch_size=16",
         "--inner-steps", "3", "--eval-episodes", "1"]


def _trial(data, teacher, steps, size=8, weighting="none"):
    from bex.learners.trial import TrialConfig

    lcfg = {"size": size, "weighting": weighting, "inner_steps": 3, "hidden_dim": 16, "baseline_bc_steps": 0,
            "batches": 2, "batch_size": 16, "teacher": str(teacher)}
    return TrialConfig.from_dict({"dataset": str(data), "task": "walker_stand", "learner": "distill",
                                  "learner_config": lcfg, "steps": steps, "eval_every": 2, "eval_episodes": 1,
                                  "report_every": 1, "seed": 4, "device": "cpu"})


def test_bex_distill_writes_a_flagged_synthetic_partition(tmp_path):
    import json
    import subprocess

    from bex.replay import Dataset
    from tests.conftest import BEX

    data, teacher = _source(tmp_path / "src"), _teacher(tmp_path / "teacher")
    out = tmp_path / "syn"
    p = subprocess.run([BEX, "distill", "--dataset", str(data), "--task", "walker_stand", "--teacher", str(teacher),
                        "--size", "8", "--steps", "4", "--eval-every", "2", "--weighting", "sdw", *SMALL,
                        "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout.splitlines()[-1])
    assert res["pairs"] == 8 and res["outer_steps"] == 4
    assert {"eval/return_mean", "baseline/random_pairs/return_mean", "baseline/bc_full/return_mean"} <= set(res)
    assert "[distill] step 4/4" in p.stderr and "s/step" in p.stderr
    ds = Dataset(out)
    (part,) = ds.partitions
    assert part == {"domain": "walker", "objective": "distill", "param": "sdw-n8", "seed": "0"}
    meta = ds.partition_meta(part)["config"]
    assert meta["synthetic"] is True and meta["distill"]["weighting"] == "sdw" and meta["outer_steps"] == 4
    tr = ds.transitions(None)
    assert len(tr) == 8 and np.all(np.abs(tr.obs).max(1) > 0)
    again = subprocess.run([BEX, "distill", "--dataset", str(data), "--task", "walker_stand", "--teacher",
                            str(teacher), "--size", "8", "--steps", "4", "--weighting", "sdw", *SMALL, "--out",
                            str(out)], capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and "already holds a synthetic set" in again.stderr


def test_an_interrupted_distillation_resumes_to_the_same_synthetic_set(tmp_path):
    from bex.learners import distill_trial as dmod
    from bex.replay import Dataset

    data, teacher = _source(tmp_path / "src"), _teacher(tmp_path / "teacher")
    dmod.run_distill(_trial(data, teacher, 4), tmp_path / "whole")

    class Killed(Exception):
        pass

    def die_after_step_3(event):
        if event.stage == "distill" and event.done == 3:
            raise Killed

    with pytest.raises(Killed):  # killed after the checkpoint of step 2
        dmod.run_distill(_trial(data, teacher, 4), tmp_path / "cut", progress=die_after_step_3)
    with pytest.raises(ValueError, match="pass --resume"):
        dmod.run_distill(_trial(data, teacher, 4), tmp_path / "cut")
    rows = []
    dmod.run_distill(_trial(data, teacher, 4), tmp_path / "cut", resume=True,
                     progress=lambda event: rows.extend(event.rows))
    assert [r["steps"] for r in rows] == [3, 4] and rows[0]["resumed_from"] == 2
    a = Dataset(tmp_path / "whole").load(["observation", "action"])
    b = Dataset(tmp_path / "cut").load(["observation", "action"])
    np.testing.assert_array_equal(a.observation, b.observation)
    np.testing.assert_array_equal(a.action, b.action)


def test_bex_distill_bad_input_is_one_line_and_writes_nothing(tmp_path):
    import subprocess

    from tests.conftest import BEX

    data = _source(tmp_path / "src")
    walker = _teacher(tmp_path / "t_walker")
    cheetah = _teacher(tmp_path / "t_cheetah", task="cheetah_run", obs_dim=17)
    narrow = _teacher(tmp_path / "t_narrow", obs_dim=20)
    # the command line for three cases (one line, exit 2, nothing written) ...
    cases = [(["--teacher", str(cheetah)], "trained on cheetah_run"),
             (["--teacher", str(walker), "--size", "100000"], "size=100000 is out of range"),
             (["--teacher", str(walker), "--weighting", "kde"], "'kde'")]
    # ... the same checks in-process for the others (each a one-line ValueError before anything is written)
    from bex.learners import distill_trial as dmod

    for teacher, lcfg, needle in [(narrow, {}, "observations of 20 dimensions"), (walker, {"size": 0}, "size=0"),
                                  (tmp_path / "none", {}, "does not exist"),
                                  (data, {}, "is not a bex trial directory")]:
        with pytest.raises((ValueError, FileNotFoundError), match=needle) as e:
            trial = _trial(data, teacher, 2)
            if lcfg:
                trial = trial.__class__.from_dict({**trial.to_dict(),
                                                   "learner_config": {**trial.learner_config, **lcfg}})
            dmod.run_distill(trial, tmp_path / "out")
        assert "\n" not in str(e.value) and not (tmp_path / "out").exists()
    for args, needle in cases:
        p = subprocess.run([BEX, "distill", "--dataset", str(data), "--task", "walker_stand", "--steps", "2",
                            *args, "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
        lines = [x for x in p.stderr.splitlines() if x.strip()]
        assert p.returncode == 2 and len(lines) == 1 and needle in lines[0], (args, p.stderr[-2000:])
        assert not (tmp_path / "out").exists()


def test_a_sweep_as_teacher_picks_the_cql_trial_of_the_same_dataset_selection_and_task(tmp_path):
    import json

    from bex.learners.distill_trial import find_teacher

    sweep = tmp_path / "teachers"
    for name, filters, learner, seed in [("a", {"objective": "be", "param": "0.5"}, "cql", 1),
                                         ("b", {"objective": "be", "param": "0.5"}, "cql", 0),
                                         ("c", {"objective": "be", "param": "0.5"}, "td3", 0),
                                         ("d", {"objective": "random"}, "cql", 0)]:
        _teacher(sweep / name)
        trial = {"dataset": str(tmp_path / "data"), "filters": filters, "task": "walker_stand", "learner": learner,
                 "seed": seed}
        (sweep / name / "params.json").write_text(json.dumps({"trial": trial}))
    match = {"dataset": str(tmp_path / "data"), "filters": {"objective": "be", "param": "0.5"},
             "task": "walker_stand"}
    state, trial = find_teacher(sweep, match)
    assert state == sweep / "b" / "checkpoint_000000" / "state.pt" and trial["seed"] == 0
    state, _ = find_teacher(sweep, {**match, "filters": {"objective": "random"}})
    assert state.parent.parent.name == "d"
    with pytest.raises(ValueError, match="has no trial"):
        find_teacher(sweep, {**match, "task": "walker_run"})


def test_results_tabulate_distillations_by_weighting_and_size_with_their_baselines_once_per_seed(tmp_path):
    import json

    from bex.analysis.analyze import analyze
    from bex.analysis.results import sweep_rows

    for i, (w, seed, ret, rp, bc) in enumerate([("none", 0, 100.0, 80.0, 300.0), ("sdw", 0, 120.0, 80.0, 300.0),
                                                ("none", 1, 110.0, 90.0, 310.0), ("sdw", 1, 140.0, 90.0, 310.0)]):
        d = tmp_path / f"t{i}"
        d.mkdir()
        trial = {"dataset": "/data", "filters": {}, "label": "be", "task": "walker_stand", "learner": "distill",
                 "seed": seed, "steps": 10, "learner_config": {"weighting": w, "size": 64, "teacher": "/x"}}
        (d / "params.json").write_text(json.dumps({"trial": trial}))
        row = {"steps": 10, "eval/return_mean": ret, "eval/at_step": 10, "baseline/random_pairs/return_mean": rp,
               "baseline/bc_full/return_mean": bc}
        (d / "result.json").write_text(json.dumps(row) + "\n")
    tab = analyze(sweep_rows(tmp_path))["table"]
    assert tab["cols"] == ["walker_stand baseline[bc_full]", "walker_stand baseline[random_pairs,N=64]",
                           "walker_stand distill[none,N=64]", "walker_stand distill[sdw,N=64]"]
    assert tab["cells"]["be\twalker_stand distill[sdw,N=64]"]["values"] == [120.0, 140.0]
    # the baselines: one per seed, not one per trial (each seed's two distillations report the same ones)
    assert tab["cells"]["be\twalker_stand baseline[bc_full]"]["values"] == [300.0, 310.0]
