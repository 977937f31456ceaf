"""Conformance tests run against every registered learner, configs, and a learning sanity check."""
from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch

from bex.learners import LEARNERS, PRESETS, make_config, make_learner
from bex.replay.batch import Batch

torch.set_num_threads(1)

OBS, ACT = 5, 3
TINY = {"hidden_dim": 16, "batch_size": 32}


#: every learner, and the ExORL variants of TD3, TD3+BC and CQL (``name:variant``)
CASES = list(LEARNERS) + ["td3:exorl", "td3_bc:exorl", "cql:exorl"]


def _tiny(name):
    name, _, variant = name.partition(":")
    d = dict(TINY)
    if variant:
        d["variant"] = variant
    if name in ("td3_bst", "iql", "iql_bst"):
        d.update(morse_hidden_dim=16, morse_steps=3)
    if name in ("td3", "td3_bc", "td3_bst"):
        d["policy_delay"] = 1
    return d


def _random_batch(rng, B=32):
    return Batch.from_numpy(rng.standard_normal((B, OBS)), rng.uniform(-1, 1, (B, ACT)), rng.standard_normal(B),
                            rng.standard_normal((B, OBS)), (rng.uniform(size=B) > 0.1).astype(np.float32))


def _make(name, seed=0):
    learner = make_learner(name.partition(":")[0], OBS, ACT, _tiny(name), seed=seed)
    if hasattr(learner, "pretrain"):
        rng = np.random.default_rng(123)
        learner.pretrain(lambda: _random_batch(rng))
    return learner


def _params(learner):
    out = {}
    for attr, obj in vars(learner).items():
        if isinstance(obj, torch.nn.Module):
            for k, p in obj.state_dict().items():
                out[f"{attr}.{k}"] = p.detach().clone()
    return out


@pytest.mark.parametrize("name", CASES)
def test_update_finite_and_changes_parameters(name):
    learner = _make(name)
    rng = np.random.default_rng(0)
    before = _params(learner)
    for _ in range(2):
        metrics = learner.update(_random_batch(rng))
    assert metrics and all(isinstance(v, float) and np.isfinite(v) for v in metrics.values()), metrics
    assert all("/" in k for k in metrics), metrics
    assert learner.steps == 2
    after = _params(learner)
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert "actor" in changed
    if name != "bc":
        assert "critic" in changed and "critic_target" in changed
    if name in ("td3_bst", "iql_bst"):
        assert "morse" not in changed  # frozen after pretrain
    if name.startswith("iql"):
        assert "value" in changed


@pytest.mark.parametrize("name", CASES)
def test_state_dict_round_trip_reproduces_act_and_next_update(name):
    learner = _make(name, seed=0)
    rng = np.random.default_rng(1)
    for _ in range(3):
        learner.update(_random_batch(rng))
    buf = io.BytesIO()
    torch.save(learner.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf)
    assert sd["steps"] == 3
    fresh = make_learner(name.partition(":")[0], OBS, ACT, _tiny(name), seed=99)
    obs = np.random.default_rng(2).standard_normal((7, OBS)).astype(np.float32)
    assert not np.array_equal(fresh.act(obs), learner.act(obs))
    fresh.load_state_dict(sd)
    assert fresh.steps == 3
    np.testing.assert_array_equal(fresh.act(obs), learner.act(obs))
    # same weights, optimiser moments and RNG state: the next update is identical too
    batch = _random_batch(rng)
    assert fresh.update(batch) == learner.update(batch)
    np.testing.assert_array_equal(fresh.act(obs), learner.act(obs))


@pytest.mark.parametrize("name", CASES)
def test_act_shapes_and_range(name):
    learner = _make(name)
    a1 = learner.act(np.zeros(OBS, dtype=np.float32))
    aN = learner.act(100 * np.random.default_rng(0).standard_normal((4, OBS)))
    assert a1.shape == (ACT,) and aN.shape == (4, ACT)
    assert np.all(np.abs(aN) <= 1.0) and a1.dtype == np.float32
    np.testing.assert_array_equal(learner.act(np.zeros(OBS)), a1)  # deterministic


@pytest.mark.parametrize("name", list(LEARNERS))
def test_strict_config_round_trip(name):
    cfg_cls, _ = LEARNERS[name]
    cfg = make_config(name, TINY)
    assert cfg_cls.from_dict(cfg.to_dict()) == cfg
    assert dataclasses.is_dataclass(cfg)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0
    with pytest.raises(ValueError, match="hidden_dimm"):
        cfg_cls.from_dict({"hidden_dimm": 3})
    with pytest.raises(ValueError, match=r"hidden_dim=0.*\[1, inf\)"):
        cfg_cls.from_dict({"hidden_dim": 0})
    with pytest.raises(ValueError, match=r"lr=-0\.1"):
        cfg_cls.from_dict({"lr": -0.1})
    with pytest.raises(ValueError, match="batch_size"):
        cfg_cls.from_dict({"batch_size": "big"})
    with pytest.raises(ValueError, match="hidden_dim"):
        cfg_cls.from_dict({"hidden_dim": True})
    assert cfg_cls.from_dict({"lr": 1}).lr == 1.0  # ints accepted for floats
    for field in dataclasses.fields(cfg_cls):
        assert field.metadata.get("doc"), f"{name}.{field.name} has no docstring"


@pytest.mark.parametrize("name", list(LEARNERS))
def test_presets(name):
    cfg_cls, _ = LEARNERS[name]
    for preset, values in PRESETS.items():
        cfg = cfg_cls.preset(preset)
        assert (cfg.hidden_dim, cfg.batch_size, cfg.lr) == (values["hidden_dim"], values["batch_size"], values["lr"])
    assert cfg_cls() == cfg_cls.preset("paper")
    assert cfg_cls.preset("small", lr=1e-3).lr == 1e-3
    with pytest.raises(ValueError, match="huge"):
        cfg_cls.preset("huge")


def test_registry_defaults_and_errors():
    assert set(LEARNERS) == {"td3", "td3_bc", "cql", "crr", "td3_bst", "bc", "iql", "iql_bst"}
    assert make_config("td3").bc_alpha == 0.0 and make_config("td3_bc").bc_alpha == 2.5
    td3 = make_config("td3")
    assert (td3.tau, td3.gamma, td3.policy_noise, td3.noise_clip, td3.variant) == (0.01, 0.99, 0.2, 0.3, "td3")
    iql = make_config("iql")
    assert (iql.expectile, iql.beta, iql.max_weight, iql.extraction) == (0.7, 3.0, 100.0, "awr")
    assert make_config("iql_bst").extraction == "bst"
    cql = make_config("cql")
    assert (cql.cql_alpha, cql.n_action_samples) == (0.01, 3)
    crr = make_config("crr")
    assert (crr.weight, crr.n_value_samples, crr.max_weight) == ("binary", 10, 20.0)
    with pytest.raises(ValueError, match=r"'sac'.*td3, td3_bc, cql, crr, td3_bst, bc, iql, iql_bst"):
        make_learner("sac", OBS, ACT)
    with pytest.raises(ValueError, match="weight"):
        make_config("crr", {"weight": "linear"})
    with pytest.raises(ValueError, match="kernel_scale"):
        make_config("td3_bst", {"kernel_scale": -1.0})
    assert make_config("td3_bst", {"kernel_scale": None}).kernel_scale is None


def test_make_learner_accepts_config_instance():
    cfg = make_config("td3_bc", TINY)
    assert make_learner("td3_bc", OBS, ACT, cfg).config is cfg
    with pytest.raises(ValueError, match="CQLConfig"):
        make_learner("cql", OBS, ACT, cfg)


@pytest.mark.parametrize("name", ["td3_bst", "iql_bst"])
def test_bst_learners_require_pretrain(name):
    learner = make_learner(name, OBS, ACT, _tiny(name), seed=0)
    with pytest.raises(RuntimeError, match="pretrain"):
        learner.update(_random_batch(np.random.default_rng(0)))
    learner0 = make_learner(name, OBS, ACT, {**_tiny(name), "morse_steps": 0}, seed=0)
    assert np.isfinite(list(learner0.update(_random_batch(np.random.default_rng(0))).values())).all()
    iql = make_learner("iql", OBS, ACT, _tiny("iql"), seed=0)  # AWR extraction: nothing to pretrain
    assert iql.pretrain(lambda: _random_batch(np.random.default_rng(0))) == {} and not hasattr(iql, "morse")


def test_td3_policy_delay():
    learner = make_learner("td3", OBS, ACT, {**TINY, "policy_delay": 2}, seed=0)
    rng = np.random.default_rng(0)
    keys = [set(learner.update(_random_batch(rng))) for _ in range(3)]
    assert "actor/loss" in keys[0] and "actor/loss" not in keys[1] and "actor/loss" in keys[2]


def test_seed_reproducible():
    a, b = make_learner("cql", OBS, ACT, TINY, seed=5), make_learner("cql", OBS, ACT, TINY, seed=5)
    batch = _random_batch(np.random.default_rng(0))
    assert a.update(batch) == b.update(batch)


# --------------------------------------------------------------------------- learning sanity


def _linear_policy_data(n=4096, obs_dim=4, act_dim=2, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.uniform(-0.4, 0.4, (act_dim, obs_dim))
    obs = rng.uniform(-1, 1, (n, obs_dim)).astype(np.float32)
    act = np.tanh(obs @ W.T).astype(np.float32)
    return W, obs, act


@pytest.mark.parametrize("name", ["bc", "td3_bc"])
def test_recovers_linear_policy(name):
    W, obs, act = _linear_policy_data()
    # behaviour = expert + N(0, 0.2^2) noise; reward peaks at the expert action
    noisy = np.clip(act + np.random.default_rng(1).normal(0, 0.2, act.shape), -1, 1).astype(np.float32)
    reward = -np.sum((noisy - act) ** 2, axis=1)
    nxt = np.roll(obs, -1, axis=0)
    cfg = {"hidden_dim": 64, "batch_size": 256, "lr": 3e-3}
    if name == "td3_bc":
        cfg.update(policy_delay=1, gamma=0.9)
    learner = make_learner(name, 4, 2, cfg, seed=0)
    rng = np.random.default_rng(2)
    for _ in range(300):
        idx = rng.integers(0, len(obs), 256)
        learner.update(Batch.from_numpy(obs[idx], noisy[idx], reward[idx], nxt[idx], np.ones(256)))
    test_obs = np.random.default_rng(3).uniform(-1, 1, (500, 4)).astype(np.float32)
    err = np.mean((learner.act(test_obs) - np.tanh(test_obs @ W.T)) ** 2)
    assert err < 5e-3, err  # the zero policy scores 0.075, a saturated one ~1


def test_keep_freed_memory_applies_once_and_can_be_turned_off():
    import subprocess
    import sys

    from bex.learners.common import keep_freed_memory

    make_learner("bc", OBS, ACT, TINY)  # building a learner applies it
    assert keep_freed_memory() is True  # glibc (this machine and CI)
    code = "from learners.common import keep_freed_memory as k; print(k())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"BEX_KEEP_HEAP": "0", "PATH": ""}, cwd=".")
    assert out.stdout.strip() == "False", out.stderr
