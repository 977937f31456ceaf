"""RND and SMM explorers, the explorer factory, and a real-env smoke run per explorer."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bex.actors import (
    APTExplorer,
    RandomExplorer,
    RNDConfig,
    RNDExplorer,
    SMMConfig,
    SMMExplorer,
    make_explorer,
    run_episode,
)

torch.set_num_threads(1)

BASE = {"preset": "small", "hidden_dim": 32, "batch_size": 64, "num_seed_frames": 100, "replay_capacity": 2000}
CONFIGS = {"random": {}, "apt": {**BASE, "rep_dim": 16}, "rnd": {**BASE, "rnd_rep_dim": 16},
           "smm": {**BASE, "vae_hidden_dim": 16, "code_dim": 8}}
OBS, ACT = 7, 3


def drive(ex, steps, seed=0, episode=60):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=OBS).astype(np.float32)
    metrics = []
    for step in range(steps):
        a = ex.act(obs, step)
        assert a.shape == (ACT,) and np.all(np.abs(a) <= 1.0)
        nxt = rng.normal(size=OBS).astype(np.float32)
        m = ex.observe(obs, a, nxt, 1.0, step % episode == episode - 1, step)
        if m:
            metrics.append(m)
        obs = nxt
    return obs, metrics


@pytest.mark.parametrize("name", ["rnd", "smm"])
def test_baseline_updates_finite_and_state_dict_round_trip(name):
    ex = make_explorer(name, OBS, ACT, CONFIGS[name], seed=0)
    obs, metrics = drive(ex, 140)
    assert len(metrics) == 20 and ex.agent.num_updates == 20
    for m in metrics:
        assert all(math.isfinite(v) for v in m.values()), m
    assert "intr/reward_mean" in metrics[-1] and "critic/loss" in metrics[-1]
    block = np.stack([obs, obs * 0.5, -obs])
    r = ex.intrinsic_rewards(block)
    assert r.shape == (3,) and np.all(np.isfinite(r))
    for i in range(3):  # a block scores each row as it would alone
        assert ex.intrinsic_rewards(block[i:i + 1])[0] == pytest.approx(r[i], rel=1e-5)
    ex2 = make_explorer(name, OBS, ACT, CONFIGS[name], seed=7)
    ex2.load_state_dict(ex.state_dict())
    o = ex._replay_obs(obs)
    np.testing.assert_array_equal(ex.agent.act(o, 1000, eval_mode=True), ex2.agent.act(o, 1000, eval_mode=True))
    np.testing.assert_array_equal(ex.act(obs, 1000), ex2.act(obs, 1000))
    np.testing.assert_allclose(ex.intrinsic_rewards(block), ex2.intrinsic_rewards(block), rtol=1e-6)


def test_smm_skill_is_one_hot_and_changes_only_between_episodes():
    ex = SMMExplorer(OBS, ACT, CONFIGS["smm"], seed=0)
    rng = np.random.default_rng(0)
    skills = []
    for step in range(200):
        obs = rng.normal(size=OBS).astype(np.float32)
        ex.act(obs, step)
        skills.append(ex.skill.copy())
        ex.observe(obs, np.zeros(ACT), obs, 1.0, step % 50 == 49, step)
    skills = np.array(skills)
    assert np.all(skills.sum(1) == 1)
    for e in range(4):
        assert np.all(skills[e * 50:(e + 1) * 50] == skills[e * 50])  # constant within an episode
    assert len({tuple(s) for s in skills[::50]}) > 1
    b = ex.replay.sample(32, 3, 0.99, np.random.default_rng(0))
    assert b.obs.shape == (32, OBS + 4) and torch.all(b.obs[:, OBS:].sum(1) == 1)


def test_baseline_configs_validate():
    with pytest.raises(ValueError, match="'rnd_scal'"):
        RNDConfig.from_dict({"rnd_scal": 1.0})
    with pytest.raises(ValueError, match="z_dim=0"):
        SMMConfig.from_dict({"z_dim": 0})
    assert SMMConfig().z_dim == 4 and SMMConfig().vae_lr == 1e-2 and RNDConfig().rnd_rep_dim == 512


def test_make_explorer_factory():
    assert isinstance(make_explorer("random", OBS, ACT, seed=0), RandomExplorer)
    apt = make_explorer("apt", OBS, ACT, CONFIGS["apt"], knn_reward=lambda r: r.sum(1))
    assert isinstance(apt, APTExplorer)
    assert apt.intrinsic_rewards(np.zeros((2, OBS), np.float32)) is None  # injected callable without query()
    assert isinstance(make_explorer("rnd", OBS, ACT, CONFIGS["rnd"]), RNDExplorer)
    with pytest.raises(ValueError, match=r"unknown explorer 'icm'.*random, apt, rnd, smm"):
        make_explorer("icm", OBS, ACT)
    with pytest.raises(ValueError, match="knn_reward"):
        make_explorer("rnd", OBS, ACT, CONFIGS["rnd"], knn_reward=lambda r: r)
    with pytest.raises(ValueError, match="'alpha'"):
        make_explorer("rnd", OBS, ACT, {"alpha": 0.5})
    with pytest.raises(ValueError, match="random"):
        make_explorer("random", OBS, ACT, {"hidden_dim": 3})


@pytest.fixture(scope="module")
def walker():
    from bex.envs import make

    env = make("walker", "stand", seed=0)
    yield env
    env.close()


@pytest.mark.parametrize("name", ["random", "apt", "rnd", "smm"])
def test_run_episode_on_walker(walker, name):
    spec = walker.spec
    ex = make_explorer(name, spec.obs_dim, spec.action_dim, CONFIGS[name], seed=1)
    seen = []
    ep = run_episode(walker, ex, f"{name}-0", max_steps=300, on_step=lambda m: seen.append(m) if m else None)
    assert len(ep) == 300
    if name == "random":
        assert ep.reward_intrinsic is None and not seen
        return
    assert ex.agent.num_updates == 100 and len(seen) == 100  # steps 100..298 even
    assert ep.reward_intrinsic is not None and np.all(np.isfinite(ep.reward_intrinsic))
    # scored in one call at the episode's end, with the explorer as it is then
    assert ep.reward_intrinsic[0] == 0 and np.count_nonzero(ep.reward_intrinsic[1:]) == 300
    np.testing.assert_allclose(ep.reward_intrinsic[1:], ex.intrinsic_rewards(ep.observation[1:]), rtol=1e-6)
