"""APT (ICM-APT) agent, n-step replay, k-NN rewards and configs: hand-checked values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bex.actors import APTAgent, APTConfig, APTExplorer, BatchKnnReward, NStepReplay, RecentKnnReward, WindowKnnReward
from bex.actors.nets import DDPG, critic_target, ddpg_update, truncated_normal_sample

torch.set_num_threads(1)

TINY = {"preset": "small", "hidden_dim": 32, "rep_dim": 16, "batch_size": 64, "num_seed_frames": 100,
        "replay_capacity": 2000}
OBS, ACT = 7, 3


def filled_replay(n=600, episode=200, seed=0, obs_dim=OBS):
    rng = np.random.default_rng(seed)
    rb = NStepReplay(5000, obs_dim, ACT)
    for i in range(n):
        rb.add(rng.normal(size=obs_dim), rng.uniform(-1, 1, ACT), rng.normal(size=obs_dim), 1.0,
               i % episode == episode - 1)
    return rb


# --------------------------------------------------------------------------- critic target, n-step replay

def test_critic_target_by_hand():
    reward = torch.tensor([[1.0], [2.0], [0.5]])
    discount = torch.tensor([[0.99 ** 3], [0.0], [0.5 * 0.99 ** 3]])
    q1 = torch.tensor([[10.0], [5.0], [-1.0]])
    q2 = torch.tensor([[8.0], [7.0], [-3.0]])
    out = critic_target(reward, discount, q1, q2)
    expected = [1.0 + 0.970299 * 8.0, 2.0, 0.5 + 0.5 * 0.970299 * -3.0]
    assert out.shape == (3, 1)
    np.testing.assert_allclose(out[:, 0].numpy(), expected, rtol=1e-6)


def test_ddpg_update_uses_clipped_double_q_target():
    cfg = APTConfig.from_dict(TINY)
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(0)
    ddpg = DDPG(OBS, ACT, cfg, g)
    b = filled_replay().sample(16, 3, 0.99, np.random.default_rng(1))
    reward = torch.linspace(0, 1, 16).unsqueeze(1)
    g2 = torch.Generator().manual_seed(0)
    g2.set_state(g.get_state())
    with torch.no_grad():
        na = truncated_normal_sample(ddpg.actor(b.next_obs), cfg.stddev, cfg.stddev_clip, g2)
        tq1, tq2 = ddpg.critic_target(b.next_obs, na)
        expected = (reward + b.discount * torch.min(tq1, tq2)).mean().item()
    m = ddpg_update(ddpg, b.obs, b.action, reward, b.discount, b.next_obs)
    assert m["critic/target_q"] == pytest.approx(expected, rel=1e-5)
    assert np.allclose(b.discount.numpy(), 0.99 ** 3)


def _hand_replay(capacity=50):
    # episode A: 5 transitions, env discounts 1, .5, 1, 1, 0 (terminal); episode B: 4 transitions.
    rb = NStepReplay(capacity, 1, 1)
    disc = [1, 0.5, 1, 1, 0, 1, 1, 1, 1]
    last = [0, 0, 0, 0, 1, 0, 0, 0, 1]
    for i in range(9):
        rb.add([i], [i / 10], [100 + i + 1], disc[i], bool(last[i]))
    return rb


def test_nstep_sample_hand_built_episode():
    rb = _hand_replay()
    assert rb.num_valid_starts(3) == 5
    b = rb.sample(4000, 3, 0.9, np.random.default_rng(0))
    starts = b.obs[:, 0].numpy().astype(int)
    assert set(starts) == {0, 1, 2, 5, 6}  # never a window crossing an episode end
    np.testing.assert_allclose(b.next_obs[:, 0].numpy(), 100 + starts + 3)  # s_{t+n}
    np.testing.assert_allclose(b.action[:, 0].numpy(), starts / 10, rtol=1e-6)
    d = {0: 0.5 * 0.729, 1: 0.5 * 0.729, 2: 0.0, 5: 0.729, 6: 0.729}
    w = {0: [1, 0.9, 0.81 * 0.5], 1: [1, 0.9 * 0.5, 0.81 * 0.5], 2: [1, 0.9, 0.81], 5: [1, 0.9, 0.81],
         6: [1, 0.9, 0.81]}
    for s in d:
        rows = starts == s
        np.testing.assert_allclose(b.discount[rows, 0].numpy(), d[s], rtol=1e-6)
        np.testing.assert_allclose(b.step_weights[rows].numpy(), np.tile(w[s], (rows.sum(), 1)), rtol=1e-6)


def test_nstep_sample_steps_and_ring_wrap():
    rb = _hand_replay(capacity=6)  # keeps logical transitions 3..8: valid 3-step starts 5, 6 only
    b = rb.sample(500, 3, 0.9, np.random.default_rng(1), with_steps=True)
    starts = b.obs[:, 0].numpy().astype(int)
    assert set(starts) == {5, 6}
    np.testing.assert_allclose(b.step_obs[:, :, 0].numpy(), starts[:, None] + np.arange(3))
    with pytest.raises(ValueError, match="nstep"):
        NStepReplay(10, 1, 1).sample(2, 3, 0.9, np.random.default_rng(0))


def test_nstep_replay_state_dict_round_trip():
    rb = _hand_replay(capacity=6)
    rb2 = NStepReplay(6, 1, 1)
    rb2.load_state_dict(rb.state_dict())
    b1 = rb.sample(50, 2, 0.9, np.random.default_rng(5))
    b2 = rb2.sample(50, 2, 0.9, np.random.default_rng(5))
    assert torch.equal(b1.obs, b2.obs) and torch.equal(b1.discount, b2.discount)


# --------------------------------------------------------------------------- k-NN rewards

def _numpy_rewards(rep, k, objective, avg, rms, clip, alpha=0.5, q=1.1, c=1.0):
    x = rep.astype(np.float64)
    dist = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    knn = np.sort(dist, axis=1)[:, :k]  # own zero distance included (URLB)
    d = knn if avg else knn[:, -1:]
    if rms:  # URLB RMS after one batch: M = mean * n / (1e-4 + n)
        d = d / (d.mean() * d.size / (1e-4 + d.size))
    d = np.maximum(d - clip, 0.0)
    R = d.mean(axis=1)
    if objective == "shannon":
        return np.log(c + R)
    if objective == "renyi":
        return (c + R) ** (1 - q) / (1 - q)
    beta = math.log(512) ** (1 - alpha)
    L = np.log(c + R)
    return R * np.exp(-beta * L ** alpha) * beta * L ** alpha


@pytest.mark.parametrize("objective,avg,rms,clip", [
    ("shannon", True, False, 0.0), ("shannon", False, False, 0.0), ("be", True, False, 0.0),
    ("be", True, True, 0.05), ("renyi", True, False, 0.0), ("renyi", False, True, 0.1)])
def test_batch_knn_reward_matches_brute_force(objective, avg, rms, clip):
    rep = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    cfg = APTConfig.from_dict({**TINY, "k": 5, "objective": objective, "knn_avg": avg, "knn_rms": rms,
                               "knn_clip": clip, "alpha": 0.5, "q": 1.1})
    r = BatchKnnReward(cfg)(torch.from_numpy(rep))
    assert r.shape == (50,) and r.dtype == torch.float32
    np.testing.assert_allclose(r.numpy(), _numpy_rewards(rep, 5, objective, avg, rms, clip), rtol=1e-5, atol=1e-6)


def test_knn_query_does_not_change_state_and_window_mode_runs():
    cfg = APTConfig.from_dict({**TINY, "k": 4, "knn_rms": True})
    f = BatchKnnReward(cfg)
    rep = torch.randn(30, 5)
    assert f.query(rep[:2]) is None
    f(rep)
    before = f.state_dict()["transform"]
    q = f.query(rep[:3])
    assert q.shape == (3,) and torch.isfinite(q).all()
    assert f.state_dict()["transform"] == before


def test_window_knn_reward_excludes_own_copy():
    w = WindowKnnReward(APTConfig.from_dict({**TINY, "k": 4, "knn_mode": "window", "knn_window": 50}))
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 5)).astype(np.float32), rng.normal(size=(30, 5)).astype(np.float32)
    w(torch.from_numpy(a))
    out = w(torch.from_numpy(b)).numpy()
    ref = np.concatenate([a[10:], b]).astype(np.float64)  # the ring keeps the last 50 embeddings
    dist = np.sqrt(((b[:, None, :].astype(np.float64) - ref[None]) ** 2).sum(-1))
    dist[np.arange(30), 20 + np.arange(30)] = np.inf  # own copy excluded
    expected = np.log(1.0 + np.sort(dist, axis=1)[:, :4].mean(1))
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    q = w.query(torch.from_numpy(b[:2]))
    np.testing.assert_allclose(q.numpy(), np.log(1.0 + np.sort(
        np.sqrt(((b[:2, None, :].astype(np.float64) - ref[None]) ** 2).sum(-1)), axis=1)[:, :4].mean(1)), rtol=1e-5)
    ex = APTExplorer(OBS, ACT, {**TINY, "knn_mode": "window", "knn_window": 200}, seed=0)
    ex.agent.update(filled_replay().sample(64, 3, 0.99, np.random.default_rng(0)))
    assert ex.intrinsic_rewards(np.zeros((1, OBS), np.float32))[0] > 0


def test_nstep_sample_recent_window_and_positions():
    rb = NStepReplay(10, 1, 1)
    for i in range(14):  # ring wraps: logical 4..13 kept
        rb.add([float(i)], [0.0], [float(i + 1)], 1.0, False)
    b = rb.sample(40, 2, 0.9, np.random.default_rng(0), recent=6)
    np.testing.assert_array_equal(b.recent_obs[:, 0].numpy(), [8, 9, 10, 11, 12, 13])  # oldest first
    starts = b.obs[:, 0].numpy().astype(int)
    np.testing.assert_array_equal(b.recent_pos.numpy(), starts - 8)  # negative: older than the window
    inside = b.recent_pos >= 0
    assert inside.any() and (~inside).any()
    assert torch.equal(b.recent_obs[b.recent_pos[inside]], b.obs[inside])
    assert rb.sample(5, 1, 0.9, recent=100).recent_obs.shape == (10, 1)  # capped at what the replay holds
    view = rb.sample(5, 1, 0.9, recent=3).recent_obs  # logical 11..13 sit unwrapped in slots 1..3
    np.testing.assert_array_equal(view[:, 0].numpy(), [11, 12, 13])
    assert np.shares_memory(view.numpy(), rb.obs)  # a view, not a copy
    assert rb.sample(5, 1, 0.9).recent_obs is None


def test_nstep_local_neighbours_stay_in_the_episode_and_out_of_the_window():
    rb = NStepReplay(12, 1, 1)
    for i in range(20):  # episodes of 5 transitions (obs 0-4, 5-9, ...); the ring keeps logical 8..19
        rb.add([float(i)], [0.0], [float(i + 1)], 1.0, i % 5 == 4)
    nb, mask = rb.local_neighbours(np.array([10, 9, 16]), 2)
    np.testing.assert_array_equal(nb, [[8, 9, 11, 12], [7, 8, 10, 11], [14, 15, 17, 18]])
    np.testing.assert_array_equal(mask, [[False, False, True, True],  # 8, 9: previous episode
                                         [False, True, False, False],  # 7: overwritten; 10, 11: next episode
                                         [False, True, True, True]])  # 14: previous episode
    b = rb.sample(64, 1, 0.9, np.random.default_rng(0), recent=4, local=2)  # window = logical 16..19
    starts = b.obs[:, 0].numpy().astype(int)
    _, m = rb.local_neighbours(starts, 2)
    expected = m & (starts[:, None] + np.array([-2, -1, 1, 2]) < 16)
    np.testing.assert_array_equal(b.local_mask.numpy(), expected)
    got = b.local_obs[..., 0].numpy()
    np.testing.assert_array_equal(got[expected], (starts[:, None] + np.array([-2, -1, 1, 2]))[expected])
    assert (starts >= 18).any() and b.local_mask[starts >= 18].sum() == 0  # all neighbours in recent_obs already
    assert b.local_mask[starts == 16][:, 1].all()  # at the window's edge: 15 (same episode) is only here
    with pytest.raises(ValueError, match="recent > 0"):
        rb.sample(4, 1, 0.9, local=2)


def test_local_neighbours_zero_an_old_held_pose_and_join_the_k_nearest():
    cfg = APTConfig.from_dict({**TINY, "k": 3, "knn_mode": "recent", "knn_window": 40, "knn_local": 2})
    rng = np.random.default_rng(3)
    ref = torch.tensor(rng.normal(size=(40, 5)), dtype=torch.float32)
    held, moving = rng.normal(size=5), rng.normal(size=5)
    rep = torch.tensor(np.stack([held, moving]), dtype=torch.float32)
    local = torch.tensor(np.stack([np.repeat(held[None], 4, 0),  # its episode held the pose all along
                                   moving + 0.01 * np.arange(1, 5)[:, None]]), dtype=torch.float32)
    mask = torch.tensor([[True, True, True, True], [True, False, True, False]])
    pos = torch.tensor([-5, -9])  # both older than the window
    out = RecentKnnReward(cfg).score(rep, ref, pos, local, mask).numpy()
    without = RecentKnnReward(cfg).score(rep, ref, pos).numpy()
    d_ref = np.sqrt(((rep.numpy()[:, None] - ref.numpy()[None]) ** 2).sum(-1))
    d_loc = np.sqrt(((rep.numpy()[:, None] - local.numpy()) ** 2).sum(-1))
    d_loc[~mask.numpy()] = np.inf
    R = np.sort(np.concatenate([d_ref, d_loc], 1), 1)[:, :3].mean(1)
    np.testing.assert_allclose(out, np.log1p(R), rtol=1e-5, atol=1e-6)
    assert out[0] == pytest.approx(0.0, abs=1e-6) and without[0] > 0.5  # scored as when it was visited
    assert 0 < out[1] < without[1]
    assert APTConfig.from_dict({**TINY, "knn_mode": "recent", "k": 5}).local_neighbours == 5  # default: k
    assert APTConfig.from_dict({**TINY, "knn_mode": "recent", "knn_local": 0}).local_neighbours == 0  # off
    assert APTConfig.from_dict(TINY).local_neighbours == 0  # batch mode: never
    assert APTConfig.from_dict({**TINY, "knn_mode": "recent", "intr_nstep_sum": True}).local_neighbours == 0
    with pytest.raises(ValueError, match="knn_local=2 needs knn_mode 'recent'"):
        APTConfig.from_dict({**TINY, "knn_local": 2})
    with pytest.raises(ValueError, match="knn_local=-1 is out of range"):
        APTConfig.from_dict({**TINY, "knn_mode": "recent", "knn_local": -1})


@pytest.mark.parametrize("objective", ["shannon", "be"])
def test_recent_knn_reward_matches_brute_force_and_zeroes_a_held_state(objective):
    cfg = APTConfig.from_dict({**TINY, "k": 3, "objective": objective, "knn_mode": "recent", "knn_window": 40})
    f = RecentKnnReward(cfg)
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(40, 5))
    ref[30:35] = ref[30]  # a pose held for 5 steps
    rep = np.concatenate([ref[[3, 30, 39]], rng.normal(size=(2, 5))])  # 3 samples in the window, 2 older ones
    pos = np.array([3, 30, 39, -7, -1])
    out = f.score(torch.tensor(rep, dtype=torch.float32), torch.tensor(ref, dtype=torch.float32),
                  torch.tensor(pos)).numpy()
    dist = np.sqrt(((rep[:, None, :] - ref[None]) ** 2).sum(-1))
    dist[[0, 1, 2], [3, 30, 39]] = np.inf  # own stored copy excluded
    R = np.sort(dist, axis=1)[:, :3].mean(1)
    beta = math.log(512) ** 0.5
    L = np.log1p(R)
    expected = np.log1p(R) if objective == "shannon" else R * np.exp(-beta * L ** 0.5) * beta * L ** 0.5
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert out[1] == pytest.approx(0.0, abs=1e-6)  # the held pose has k copies at distance 0: no reward
    assert (out[[0, 2, 3, 4]] > 0.05).all()


def test_recent_mode_update_scores_against_the_latest_visited_states():
    ex = APTExplorer(OBS, ACT, {**TINY, "k": 4, "knn_mode": "recent", "knn_window": 100}, seed=0)
    rng = np.random.default_rng(0)
    for i in range(400):
        ex.replay.add(rng.normal(size=OBS), rng.uniform(-1, 1, ACT), rng.normal(size=OBS), 1.0, i % 200 == 199)
    batch = ex.replay.sample(64, 3, 0.99, np.random.default_rng(2), recent=100)
    ref = ex.agent.rep(batch.recent_obs)
    expected = RecentKnnReward(ex.cfg).score(ex.agent.rep(batch.obs), ref, batch.recent_pos)
    got = ex.agent.intrinsic_reward(batch)[:, 0]
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(ex.agent.knn_reward._ref, ref)  # the diagnostic query scores against the window
    with pytest.raises(ValueError, match="recent"):
        ex.agent.intrinsic_reward(ex.replay.sample(64, 3, 0.99))  # a batch without the window
    # with own-episode neighbours: the agent passes them, embedded by the same encoder
    ex = APTExplorer(OBS, ACT, {**TINY, "k": 4, "knn_mode": "recent", "knn_window": 100, "knn_local": 3}, seed=0)
    ex.replay = filled_replay(400)
    batch = ex.replay.sample(64, 3, 0.99, np.random.default_rng(2), recent=100, local=3)
    assert batch.local_mask.any()
    local = ex.agent.rep(batch.local_obs.reshape(-1, OBS)).reshape(64, 6, -1)
    expected = RecentKnnReward(ex.cfg).score(ex.agent.rep(batch.obs), ex.agent.rep(batch.recent_obs),
                                             batch.recent_pos, local, batch.local_mask)
    torch.testing.assert_close(ex.agent.intrinsic_reward(batch)[:, 0], expected)
    assert ex._local() == 3


# --------------------------------------------------------------------------- agent

def test_representation_loss_decreases_on_fixed_batch():
    agent = APTAgent(OBS, ACT, {**TINY, "lr": 1e-3}, seed=0)
    batch = filled_replay().sample(64, 3, 0.99, np.random.default_rng(0))
    losses = [agent.update(batch)["rep/loss"] for _ in range(50)]
    assert np.mean(losses[-5:]) < 0.8 * losses[0]
    assert np.mean(np.diff(losses) < 0) > 0.8
    assert agent.num_updates == 50


def test_injected_knn_reward_and_nstep_sum_flag():
    calls = []

    def fake(rep):
        calls.append(tuple(rep.shape))
        return rep.sum(dim=1)

    agent = APTAgent(OBS, ACT, TINY, knn_reward=fake, seed=0)
    batch = filled_replay().sample(64, 3, 0.99, np.random.default_rng(0), with_steps=True)
    r = agent.intrinsic_reward(batch)
    np.testing.assert_allclose(r[:, 0].numpy(), agent.icm.rep(batch.obs).sum(1).detach().numpy(), rtol=1e-5)
    m = agent.update(batch)
    assert calls[-1] == (64, 16) and math.isfinite(m["critic/loss"])
    agent2 = APTAgent(OBS, ACT, {**TINY, "intr_nstep_sum": True}, seed=0)
    agent2.set_knn_reward(fake)
    r2 = agent2.intrinsic_reward(batch)
    with torch.no_grad():
        expected = sum(batch.step_weights[:, i] * agent2.icm.rep(batch.step_obs[:, i]).sum(1) for i in range(3))
    np.testing.assert_allclose(r2[:, 0].numpy(), expected.numpy(), rtol=1e-5)


def test_update_metrics_namespaced_and_finite():
    agent = APTAgent(OBS, ACT, {**TINY, "objective": "be", "alpha": 0.7}, seed=0)
    m = agent.update(filled_replay().sample(64, 3, 0.99, np.random.default_rng(0)))
    for key in ("critic/loss", "critic/target_q", "actor/loss", "rep/loss", "intr/reward_mean"):
        assert math.isfinite(m[key]), key


def test_explorer_state_dict_round_trip_reproduces_act():
    ex = APTExplorer(OBS, ACT, TINY, seed=0)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=OBS).astype(np.float32)
    for step in range(130):
        a = ex.act(obs, step)
        nxt = rng.normal(size=OBS).astype(np.float32)
        ex.observe(obs, a, nxt, 1.0, False, step)
        obs = nxt
    assert ex.agent.num_updates > 0
    ex2 = APTExplorer(OBS, ACT, TINY, seed=99)
    ex2.load_state_dict(ex.state_dict())
    np.testing.assert_array_equal(ex.agent.act(obs, 500, eval_mode=True), ex2.agent.act(obs, 500, eval_mode=True))
    np.testing.assert_array_equal(ex.act(obs, 500), ex2.act(obs, 500))  # RNG state restored too
    m1 = ex.observe(obs, ex.act(obs, 130), obs, 1.0, False, 130)
    m2 = ex2.observe(obs, ex2.act(obs, 130), obs, 1.0, False, 130)
    assert m1 == m2
    ex3 = APTExplorer(OBS, ACT, TINY, seed=5)
    ex3.load_policy_state(ex.policy_state())
    np.testing.assert_array_equal(ex.agent.act(obs, 0, eval_mode=True), ex3.agent.act(obs, 0, eval_mode=True))


# --------------------------------------------------------------------------- config

@pytest.mark.parametrize("key,value,needle", [
    ("alpha", 0.0, "alpha=0.0"), ("alpha", -1.0, "alpha=-1.0"), ("alpha", 11.0, "alpha=11.0"),
    ("q", 1.0, "q=1.0"), ("q", 0.0, "q=0.0"), ("q", 10.5, "q=10.5"), ("k", 0, "k=0"), ("k", 64, "k=64"),
    ("objective", "tsallis", "objective='tsallis'"), ("knn_mode", "global", "knn_mode='global'"),
    ("beta", -2.0, "beta=-2.0"), ("c", 0.0, "c=0.0"), ("batch_size", 1, "batch_size=1"),
    ("discount", 1.5, "discount=1.5")])
def test_apt_config_rejects_out_of_range(key, value, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        APTConfig.from_dict({**TINY, key: value})


def test_apt_config_unknown_key_presets_and_defaults():
    with pytest.raises(ValueError, match="'hiden_dim'"):
        APTConfig.from_dict({"hiden_dim": 3})
    with pytest.raises(ValueError, match="'huge'"):
        APTConfig.preset("huge")
    paper = APTConfig.preset("paper")
    assert paper == APTConfig()
    assert (paper.hidden_dim, paper.rep_dim, paper.batch_size, paper.nstep, paper.k) == (1024, 512, 1024, 3, 12)
    assert (paper.lr, paper.critic_target_tau, paper.discount, paper.stddev, paper.stddev_clip) == \
        (1e-4, 0.01, 0.99, 0.2, 0.3)
    assert (paper.num_seed_frames, paper.replay_capacity, paper.update_every_steps) == (4000, 1_000_000, 2)
    assert (paper.avg, paper.rms, paper.clip, paper.objective) == (True, False, 0.0, "shannon")
    small = APTConfig.preset("small")
    assert small.hidden_dim < paper.hidden_dim and small.rep_dim < paper.rep_dim
    assert APTConfig.from_dict({"preset": "small", "alpha": 2.0}).alpha == 2.0
    assert APTConfig(objective="be", alpha=0.5).reward_config().resolved_beta == pytest.approx(
        math.log(512) ** 0.5)
