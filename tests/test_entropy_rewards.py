"""Reward transforms: hand-computed values, URLB's PBE statistic, config validation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bex.entropy import (
    KnnRewardTransform,
    RewardConfig,
    RunningMean,
    be_reward,
    default_beta,
    knn_reward,
    knn_statistic,
    renyi_reward,
    shannon_reward,
)


def urlb_pbe(rep_dists: torch.Tensor, state: dict, *, knn_avg: bool, knn_rms: bool, knn_clip: float):
    """URLB's PBE statistic + log(1 + x), re-derived here from its published semantics
    (utils.PBE / utils.RMS), on precomputed sorted k-NN distances (b, k)."""
    def rms(x):
        bs = x.size(0)
        delta = torch.mean(x, dim=0) - state["M"]
        new_m = state["M"] + delta * bs / (state["n"] + bs)
        state["M"], state["n"] = new_m, state["n"] + bs
        return new_m

    b1, k = rep_dists.shape
    reward = rep_dists.clone().double()
    if not knn_avg:
        reward = reward[:, -1].reshape(-1, 1)
    else:
        reward = reward.reshape(-1, 1)
    if knn_rms:
        reward = reward / rms(reward)
    if knn_clip >= 0.0:
        reward = torch.maximum(reward - knn_clip, torch.zeros_like(reward))
    if knn_avg:
        reward = reward.reshape(b1, k).mean(dim=1, keepdim=True)
    return torch.log(1.0 + reward).reshape(-1)


@pytest.mark.parametrize("avg", [True, False])
@pytest.mark.parametrize("rms,clip", [(False, 0.0), (True, 1e-4), (True, 0.3), (False, -1.0)])
def test_statistic_matches_urlb_pbe(avg, rms, clip):
    rng = np.random.default_rng(0)
    state = {"M": torch.zeros(1, dtype=torch.float64), "n": 1e-4}
    transform = KnnRewardTransform(RewardConfig(objective="shannon", avg=avg, rms=rms, clip=clip))
    for step in range(3):  # running mean carries across calls
        d = np.sort(rng.gamma(2.0, 1.0 + step, size=(64, 12)), axis=1)
        ours = transform(d)
        ref = urlb_pbe(torch.from_numpy(d), state, knn_avg=avg, knn_rms=rms, knn_clip=clip).numpy()
        np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)


def test_running_mean_matches_closed_form():
    rm = RunningMean(epsilon=1e-4)
    rng = np.random.default_rng(1)
    chunks = [rng.normal(3.0, 2.0, size=n) for n in (10, 50, 7)]
    for c in chunks:
        rm.update(c)
    allx = np.concatenate(chunks)
    eps = 1e-4
    assert rm.mean == pytest.approx(allx.sum() / (allx.size + eps), rel=1e-12)  # M0 = 0 weighted by eps
    assert rm.count == pytest.approx(allx.size + eps)


def test_hand_values():
    e1 = math.e - 1.0  # log(1 + R) = 1, so L**alpha = 1 for every alpha
    for alpha in (0.5, 1.0, 2.0):
        b = default_beta(alpha)
        assert be_reward([e1], alpha)[0] == pytest.approx(e1 * math.exp(-b) * b, rel=1e-12)
    assert be_reward([e1], 0.5, beta=2.0)[0] == pytest.approx(e1 * math.exp(-2.0) * 2.0, rel=1e-12)
    # L = log(3) with c = 2, R = 1, alpha = 2, beta = 0.5
    L = math.log(3.0)
    assert be_reward([1.0], 2.0, 0.5, c=2.0)[0] == pytest.approx(math.exp(-0.5 * L * L) * 0.5 * L * L)
    assert shannon_reward([0.0, e1], c=1.0) == pytest.approx([0.0, 1.0])
    assert shannon_reward([1.0], c=2.0)[0] == pytest.approx(math.log(3.0))
    assert renyi_reward([1.0], 2.0)[0] == pytest.approx(-0.5)           # 2**-1 / -1
    assert renyi_reward([1.0], 0.5)[0] == pytest.approx(2 * math.sqrt(2.0))  # 2**0.5 / 0.5
    assert renyi_reward([3.0], 1.1, c=1.0)[0] == pytest.approx(4.0 ** -0.1 / -0.1)


@pytest.mark.parametrize("c", [1.0, 2.0])
def test_signs_monotonicity_and_finiteness_at_zero(c):
    R = np.concatenate([[0.0], np.geomspace(1e-8, 1e3, 200)])
    for alpha in (0.2, 0.5, 1.0, 2.0, 5.0, 10.0):
        r = be_reward(R, alpha, c=c)
        assert np.all(np.isfinite(r)) and np.all(r >= 0)
        assert r[0] == 0.0  # tends to 0 as R -> 0
    sh = shannon_reward(R, c)
    assert np.all(sh >= 0) and np.all(np.diff(sh) > 0)
    for q in (0.5, 1.1, 2.0, 10.0):
        rr = renyi_reward(R, q, c)
        assert np.all(np.isfinite(rr)) and np.all(np.diff(rr) > 0)
        assert np.all(rr < 0) if q > 1 else np.all(rr > 0)
    # small c keeps everything finite too (odd power extension for log(c + R) < 0)
    assert np.all(np.isfinite(be_reward(R, 0.5, c=0.1)))
    assert np.all(np.isfinite(renyi_reward(R, 3.0, c=0.1)))


def test_knn_reward_dispatch_equals_pieces():
    d = np.sort(np.random.default_rng(2).uniform(0, 3, size=(32, 5)), axis=1)
    stat = d.mean(axis=1)
    np.testing.assert_allclose(knn_reward(d, "be", alpha=0.5), be_reward(stat, 0.5))
    np.testing.assert_allclose(knn_reward(d, "renyi", q=1.1, c=2.0), renyi_reward(stat, 1.1, 2.0))
    np.testing.assert_allclose(knn_reward(d, "shannon"), shannon_reward(stat))
    np.testing.assert_allclose(knn_reward(d, "shannon", avg=False), np.log1p(d[:, -1]))
    np.testing.assert_allclose(knn_reward(torch.from_numpy(d), "shannon"), np.log1p(stat))
    np.testing.assert_allclose(knn_statistic(d, clip=1.0), np.maximum(d - 1.0, 0).mean(1))


def test_config_from_dict_validation():
    cfg = RewardConfig.from_dict({"objective": "renyi", "q": 0.5, "k": 5})
    assert cfg.q == 0.5 and cfg.k == 5 and cfg.resolved_beta == pytest.approx(default_beta(0.5))
    with pytest.raises(ValueError, match="unknown key.*'alhpa'"):
        RewardConfig.from_dict({"alhpa": 0.5})
    for bad, key in [({"alpha": 0.0}, "alpha="), ({"alpha": 11}, "alpha="), ({"q": 1.0}, "q="),
                     ({"q": 0}, "q="), ({"k": 0}, "k="), ({"c": 0.0}, "c="), ({"beta": -1.0}, "beta="),
                     ({"objective": "rnd"}, "objective=")]:
        with pytest.raises(ValueError, match=key):
            RewardConfig.from_dict(bad)
    with pytest.raises(Exception):
        cfg.alpha = 2.0  # frozen


def test_bad_reward_input():
    with pytest.raises(ValueError, match=r"q=1\b"):
        renyi_reward([1.0], 1)
    with pytest.raises(ValueError, match="alpha=-0.5"):
        be_reward([1.0], -0.5)
    with pytest.raises(ValueError, match="NaN or inf"):
        shannon_reward([np.nan])
    with pytest.raises(ValueError, match="NaN or inf"):
        knn_reward(np.array([[1.0, np.inf]]), "be", alpha=0.5)
    with pytest.raises(ValueError, match="c=0"):
        shannon_reward([1.0], c=0)
    with pytest.raises(ValueError, match="objective='rnd'"):
        knn_reward(np.ones((2, 2)), "rnd")


def test_transform_state_round_trip():
    cfg = RewardConfig(objective="be", rms=True)
    a, b = KnnRewardTransform(cfg), KnnRewardTransform(cfg.to_dict())
    d = np.random.default_rng(3).uniform(0, 2, size=(16, 12))
    a(d)
    b.load_state_dict(a.state_dict())
    d2 = d * 1.7
    np.testing.assert_array_equal(a(d2), b(d2))
