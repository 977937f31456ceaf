"""Hand-computed values of the learners' loss functions.

Each test builds inputs where the right answer is known in closed form, so a
wrong implementation (missing clip, missing mask, wrong correction) fails.
"""
from __future__ import annotations

import math

import pytest
import torch

from bex.learners.common import DeterministicActor, TwinCritic
from bex.learners.cql import TanhGaussianActor, cql_critic_loss, cql_penalty
from bex.learners.crr import crr_actor_loss, crr_advantage, crr_weights
from bex.learners.iql import (
    GaussianActor,
    awr_actor_loss,
    awr_weights,
    expectile_loss,
    iql_critic_loss,
    iql_value_loss,
    target_min_q,
)
from bex.learners.morse import MorseNetwork, morse_loss
from bex.learners.td3 import (
    actor_loss,
    critic_loss,
    exorl_actor_loss,
    smoothed_target_action,
    td_target,
    truncated_noisy_action,
)
from bex.learners.td3_bst import bst_actor_loss, bst_weight
from bex.replay.batch import Batch

torch.set_num_threads(1)


def _batch(B=4, obs_dim=3, act_dim=2, reward=None, discount=None, action=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(B, obs_dim, generator=g)
    nxt = torch.randn(B, obs_dim, generator=g)
    act = action if action is not None else torch.rand(B, act_dim, generator=g) * 2 - 1
    r = reward if reward is not None else torch.randn(B, 1, generator=g)
    d = discount if discount is not None else torch.ones(B, 1)
    return Batch(obs, act, r, nxt, d)


def _constant_critic(obs_dim, act_dim, values=(1.0, 1.0)) -> TwinCritic:
    """A TwinCritic with Q_i(s, a) == values[i] everywhere (last layer zeroed)."""
    c = TwinCritic(obs_dim, act_dim, 8)
    with torch.no_grad():
        c.w3.zero_()
        c.b3.copy_(torch.tensor(values).reshape(2, 1, 1))
    return c


def _constant_actor(obs_dim, act_dim, value) -> DeterministicActor:
    """pi(s) == value for every s (tanh of a constant bias)."""
    a = DeterministicActor(obs_dim, act_dim, 8)
    last = a.net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.atanh(torch.as_tensor(value, dtype=torch.float32)))
    return a


class _first_action_critic:
    """Fake twin critic: Q_i(s, a) = a[..., 0] + offsets[i] (``many`` as TwinCritic's)."""

    def __init__(self, offsets=(0.0, 1.0)):
        self.offsets = offsets

    def __call__(self, obs, a):
        return torch.stack([a[..., :1] + o for o in self.offsets])

    def many(self, obs, actions):
        return self(obs, actions)


# --------------------------------------------------------------------------- shared networks


def test_fast_tanh_is_tanh_with_tanh_gradients():
    from bex.learners.common import fast_tanh

    x = torch.linspace(-12, 12, 20001, dtype=torch.float32, requires_grad=True)
    y = fast_tanh(x)
    assert (y - torch.tanh(x.detach())).abs().max().item() <= 2.4e-7
    y.sum().backward()
    assert torch.allclose(x.grad, 1 - torch.tanh(x.detach()) ** 2, atol=5e-7)


def test_twin_critic_many_equals_forward_on_repeated_states():
    torch.manual_seed(0)
    critic = TwinCritic(5, 3, 16)
    obs, actions = torch.randn(7, 5), torch.rand(4, 7, 3) * 2 - 1
    many = critic.many(obs, actions)
    flat = critic(obs.unsqueeze(0).expand(4, 7, 5).reshape(28, 5), actions.reshape(28, 3)).reshape(2, 4, 7, 1)
    assert many.shape == (2, 4, 7, 1) and torch.allclose(many, flat, atol=1e-5)
    g_many = torch.autograd.grad(many.square().sum(), list(critic.parameters()))
    g_flat = torch.autograd.grad(flat.square().sum(), list(critic.parameters()))
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(g_many, g_flat))
    assert torch.equal(critic.q1(obs, actions[0]), critic(obs, actions[0])[0])


# --------------------------------------------------------------------------- TD3


def test_td_target_discount_masking():
    reward = torch.tensor([[1.0], [2.0], [-3.0]])
    discount = torch.tensor([[0.0], [1.0], [0.5]])
    next_q = torch.tensor([[[100.0], [7.0], [4.0]], [[200.0], [3.0], [8.0]]])  # (2, B, 1)
    y = td_target(reward, discount, next_q, gamma=0.9)
    # row 0: terminal -> reward exactly; row 1: 2 + .9 * min(7, 3); row 2: -3 + .9 * .5 * min(4, 8)
    assert torch.equal(y[0], reward[0])
    assert y[1].item() == pytest.approx(2.0 + 0.9 * 3.0)
    assert y[2].item() == pytest.approx(-3.0 + 0.9 * 0.5 * 4.0)


def test_smoothed_target_action_clips_noise_then_action():
    mu = torch.tensor([[0.9, -0.5, 0.0]])
    noise = torch.tensor([[0.5, 0.5, -0.2]])
    a = smoothed_target_action(mu, noise, noise_clip=0.3)
    # 0.9 + 0.3 = 1.2 -> 1.0 ; -0.5 + 0.3 = -0.2 (unclipped noise would give 0.0) ; 0 - 0.2
    assert torch.allclose(a, torch.tensor([[1.0, -0.2, -0.2]]))


def test_critic_loss_uses_smoothed_clipped_action_and_mask():
    B = 4
    reward = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    discount = torch.tensor([[1.0], [0.0], [1.0], [1.0]])
    batch = _batch(B=B, act_dim=2, reward=reward, discount=discount)
    # target actor outputs 0.9 (dim 0) / -0.5 (dim 1); noise 0.5 -> clipped 0.3 -> a'_0 = min(1.2, 1) = 1.0
    def target_actor(obs):
        return torch.tensor([0.9, -0.5]).expand(obs.shape[0], 2)
    critic = _constant_critic(3, 2, (0.0, 0.0))
    noise = torch.full((B, 2), 0.5)
    _, m = critic_loss(critic, _first_action_critic((0.0, 1.0)), target_actor, batch, gamma=0.9,
                       policy_noise=0.2, noise_clip=0.3, noise=noise)
    # y = r + .9 * d * min(a'_0, a'_0 + 1) = r + .9 * d * 1.0
    expected = (reward + 0.9 * discount * 1.0).mean().item()
    assert m["critic/target_q"].item() == pytest.approx(expected)
    # critic loss = sum_i mean (0 - y)^2 with Q == 0
    assert m["critic/loss"].item() == pytest.approx(2 * ((reward + 0.9 * discount) ** 2).mean().item(), rel=1e-6)


def test_td3_bc_actor_loss_lambda_normalisation():
    batch = _batch(B=5, act_dim=2, action=torch.zeros(5, 2))
    actor = _constant_actor(3, 2, [0.5, -0.5])
    critic = _constant_critic(3, 2, (-2.0, 7.0))  # actor uses Q1 == -2
    loss, m = actor_loss(actor, critic, batch, bc_alpha=2.5)
    lam = 2.5 / 2.0
    bc = 0.25  # mean over batch and dims of 0.5^2
    assert m["actor/lambda"].item() == pytest.approx(lam)
    assert m["actor/bc_loss"].item() == pytest.approx(bc)
    assert loss.item() == pytest.approx(-lam * -2.0 + bc)
    loss_td3, _ = actor_loss(actor, critic, batch, bc_alpha=0.0)
    assert loss_td3.item() == pytest.approx(2.0)


def test_truncated_noisy_action_clips_noise_then_clamps_inside_the_box_straight_through():
    mu = torch.tensor([[0.9, -0.5, 0.0]], requires_grad=True)
    noise = torch.tensor([[0.5, 0.5, -0.2]])
    a = truncated_noisy_action(mu, noise, noise_clip=0.3)
    # 0.9 + 0.3 -> 1 - 1e-6 (ExORL's TruncatedNormal stays inside the box); -0.5 + 0.3; 0 - 0.2
    assert torch.allclose(a, torch.tensor([[1.0 - 1e-6, -0.2, -0.2]]), atol=1e-7)
    assert a[0, 0].item() < 1.0
    a.sum().backward()  # the clamp passes gradients straight through, even where it clamped
    assert torch.equal(mu.grad, torch.ones(1, 3))


def test_exorl_critic_target_comes_from_the_online_actor():
    B = 4
    reward = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    discount = torch.tensor([[1.0], [0.0], [1.0], [1.0]])
    batch = _batch(B=B, act_dim=2, reward=reward, discount=discount)
    online = lambda obs: torch.tensor([0.9, -0.5]).expand(obs.shape[0], 2)  # noqa: E731
    noise = torch.full((B, 2), 0.5)  # clipped to 0.3 -> a'_0 = clamp(1.2) = 1 - 1e-6
    _, m = critic_loss(_constant_critic(3, 2, (0.0, 0.0)), _first_action_critic((0.0, 1.0)), online, batch,
                       gamma=0.9, policy_noise=0.2, noise_clip=0.3, noise=noise, exorl=True)
    expected = (reward + 0.9 * discount * (1.0 - 1e-6)).mean().item()
    assert m["critic/target_q"].item() == pytest.approx(expected, abs=1e-6)


def test_exorl_actor_loss_is_min_q_at_the_noisy_action():
    batch = _batch(B=3, act_dim=2, action=torch.zeros(3, 2))
    actor = _constant_actor(3, 2, [0.2, -0.4])
    critic = _first_action_critic((0.5, -0.25))  # min(Q1, Q2) = a_0 - 0.25
    noise = torch.tensor([[0.1, 0.0], [1.0, 0.0], [-0.2, 0.0]])  # a_0 = 0.3, 0.5 (clip .3), 0.0
    loss, m = exorl_actor_loss(actor, critic, batch, policy_noise=0.2, noise_clip=0.3, noise=noise)
    q = torch.tensor([0.3, 0.5, 0.0]) - 0.25
    assert loss.item() == pytest.approx(-q.mean().item(), rel=1e-5)
    assert m["actor/q_mean"].item() == pytest.approx(q.mean().item(), rel=1e-5)
    # TD3+BC (ExORL td3_bc.py): lambda from |min Q| of the noisy action, BC on the deterministic action
    loss, m = exorl_actor_loss(actor, critic, batch, policy_noise=0.2, noise_clip=0.3, noise=noise, bc_alpha=2.5)
    lam = 2.5 / q.abs().mean().item()
    bc = (0.2 ** 2 + 0.4 ** 2) / 2
    assert m["actor/bc_loss"].item() == pytest.approx(bc, rel=1e-5)
    assert loss.item() == pytest.approx(-lam * q.mean().item() + bc, rel=1e-5)


def test_td3_variants_schedule_and_targets():
    from bex.learners import make_learner
    from bex.learners.td3 import td3_schedule

    tiny = {"hidden_dim": 8, "batch_size": 4}
    exorl = make_learner("td3", 3, 2, {**tiny, "variant": "exorl"}, seed=0)
    paper = make_learner("td3", 3, 2, tiny, seed=0)
    assert td3_schedule(exorl.config) == (True, 1) and td3_schedule(paper.config) == (False, 2)
    assert not hasattr(exorl, "actor_target") and hasattr(paper, "actor_target")
    for lrn in (exorl, paper):
        keys, targets = [], []
        for i in range(3):
            before = lrn.critic_target.w1.detach().clone()
            keys.append("actor/loss" in lrn.update(_batch(B=4, act_dim=2, seed=i)))
            targets.append(not torch.equal(before, lrn.critic_target.w1))
        # ExORL: actor and critic target every step; TD3 paper: both on steps 0 and 2 only
        assert (keys, targets) == (([True] * 3, [True] * 3) if lrn is exorl else ([True, False, True],) * 2)
    with pytest.raises(ValueError, match=r"variant='exorll' not allowed; must be one of 'td3', 'exorl'"):
        make_learner("td3", 3, 2, {"variant": "exorll"})


# --------------------------------------------------------------------------- CQL


def test_cql_penalty_constant_q_importance_corrections():
    B, A, N, c = 3, 2, 3, 1.7
    q_data = torch.full((2, B, 1), c)
    q_samples = torch.full((2, 3 * N, B, 1), c)
    log_u = torch.full((N, B, 1), -A * math.log(2.0))   # U[-1,1]^2 density 1/4
    log_pi = torch.zeros((2 * N, B, 1))                  # policy densities 1
    penalty, _ = cql_penalty(q_data, q_samples, torch.cat([log_u, log_pi]))
    # per critic: log sum_j exp(c - log mu_j) - c = log(3 * 4 + 6 * 1) = log 18
    assert penalty.item() == pytest.approx(2 * math.log(18.0), rel=1e-6)
    # ExORL variant: logsumexp over 3N samples + the data value, no corrections: log(10)
    penalty_plain, lse = cql_penalty(q_data, q_samples, None)
    assert penalty_plain.item() == pytest.approx(2 * math.log(3 * N + 1), rel=1e-6)
    assert lse.item() == pytest.approx(2 * (c + math.log(3 * N + 1)), rel=1e-6)


def test_cql_critic_loss_constant_q_counts_samples():
    torch.manual_seed(0)
    batch = _batch(B=6, act_dim=2)
    critic = _constant_critic(3, 2, (0.3, 0.3))
    actor = TanhGaussianActor(3, 2, 8)
    _, m = cql_critic_loss(critic, critic, actor, batch, gamma=0.99, cql_alpha=1.0, n_action_samples=4,
                           importance_sampling=False)
    assert m["critic/cql_penalty"].item() == pytest.approx(2 * math.log(3 * 4 + 1), rel=1e-5)


def test_tanh_gaussian_log_prob_matches_change_of_variables():
    torch.manual_seed(0)
    actor = TanhGaussianActor(3, 2, 8)
    obs = torch.randn(5, 3)
    g = torch.Generator().manual_seed(1)
    a, logp = actor.sample(obs, n=3, generator=g)
    mu, log_std = actor.dist_params(obs)
    g = torch.Generator().manual_seed(1)
    eps = torch.randn((3, *mu.shape), generator=g)
    u = mu + log_std.exp() * eps
    ref = (torch.distributions.Normal(mu, log_std.exp()).log_prob(u)
           - torch.log1p(-torch.tanh(u) ** 2)).sum(-1, keepdim=True)
    assert torch.allclose(a, torch.tanh(u), atol=1e-6)
    assert torch.allclose(logp, ref, atol=1e-3)
    assert a.shape == (3, 5, 2) and logp.shape == (3, 5, 1)


def test_cql_exorl_variant_selects_its_three_options_and_each_can_be_overridden():
    from bex.learners import make_config

    cql, exorl = make_config("cql"), make_config("cql", {"variant": "exorl"})
    names = ("importance_sampling", "per_dim_log_prob", "double_tanh")
    assert [cql.option(n) for n in names] == [True, False, False]
    assert [exorl.option(n) for n in names] == [False, True, True]
    assert make_config("cql", {"variant": "exorl", "double_tanh": False}).option("double_tanh") is False
    with pytest.raises(ValueError, match=r"variant='ExORL' not allowed"):
        make_config("cql", {"variant": "ExORL"})


def test_cql_exorl_penalty_on_constant_q_has_no_importance_weights():
    torch.manual_seed(0)
    batch = _batch(B=5, act_dim=2)
    critic = _constant_critic(3, 2, (-1.5, -1.5))
    actor = TanhGaussianActor(3, 2, 8, double_tanh=True)
    for n in (1, 3):
        _, m = cql_critic_loss(critic, critic, actor, batch, gamma=0.99, cql_alpha=0.01, n_action_samples=n,
                               importance_sampling=False)
        # per critic: logsumexp over 3n + 1 equal values c minus c = log(3n + 1), whatever the densities
        assert m["critic/cql_penalty"].item() == pytest.approx(2 * math.log(3 * n + 1), rel=1e-5)
        assert m["critic/cql_logsumexp"].item() == pytest.approx(2 * (-1.5 + math.log(3 * n + 1)), rel=1e-5)


def test_exorl_double_tanh_and_per_dimension_log_prob():
    torch.manual_seed(0)
    actor = TanhGaussianActor(3, 2, 8, double_tanh=True)
    obs = 10 * torch.randn(6, 3)
    raw_mu, raw_log_std = actor.net(obs).chunk(2, dim=-1)
    m, _ = actor.dist_params(obs)
    assert torch.allclose(m, torch.tanh(raw_mu))
    det = actor(obs)
    assert torch.allclose(det, torch.tanh(torch.tanh(raw_mu)))
    assert det.abs().max().item() <= math.tanh(1.0) + 1e-6  # the deterministic action never leaves +-0.762
    g = torch.Generator().manual_seed(3)
    a, logp = actor.sample(obs, n=4, generator=g, per_dim=True)
    assert a.shape == (4, 6, 2) and logp.shape == (4, 6, 2)
    # torch's own tanh-transformed Normal (ExORL's SquashedNormal) gives the same per-dimension values
    std = raw_log_std.clamp(-10, 2).exp()
    base = torch.distributions.Normal(torch.tanh(raw_mu), std)
    u = torch.atanh(a.clamp(-1 + 1e-6, 1 - 1e-6))
    ref = base.log_prob(u) - torch.log1p(-a.pow(2))
    ok = a.abs() < 0.999  # away from saturation, where atanh is exact enough
    assert torch.allclose(logp[ok], ref[ok], atol=1e-3)
    g = torch.Generator().manual_seed(3)
    _, summed = actor.sample(obs, n=4, generator=g)
    assert torch.allclose(summed, logp.sum(-1, keepdim=True), atol=1e-5)


def test_sac_actor_loss_per_dimension_averages_over_action_dims():
    from bex.learners.cql import sac_actor_loss

    class FixedActor(torch.nn.Module):
        def sample(self, obs, generator=None, per_dim=False):
            lp = torch.tensor([[-1.0, -3.0]]).expand(obs.shape[0], 2)
            return torch.zeros(obs.shape[0], 2), (lp if per_dim else lp.sum(-1, keepdim=True))

    batch = _batch(B=4, act_dim=2)
    critic = _constant_critic(3, 2, (2.0, 5.0))
    log_alpha = torch.tensor([math.log(0.5)], requires_grad=True)
    # ExORL: (alpha * log pi - Q).mean() over B x |A| = 0.5 * -2 - 2; alpha loss -log_alpha * (-2 + -2)
    loss, alpha_loss, m = sac_actor_loss(FixedActor(), critic, log_alpha, batch, target_entropy=-2.0,
                                         per_dim_log_prob=True)
    assert loss.item() == pytest.approx(0.5 * -2.0 - 2.0)
    assert alpha_loss.item() == pytest.approx(-math.log(0.5) * (-2.0 - 2.0))
    assert m["actor/entropy"].item() == pytest.approx(2.0)
    loss, alpha_loss, _ = sac_actor_loss(FixedActor(), critic, log_alpha, batch, target_entropy=-2.0)
    assert loss.item() == pytest.approx(0.5 * -4.0 - 2.0)
    assert alpha_loss.item() == pytest.approx(-math.log(0.5) * (-4.0 - 2.0))


# --------------------------------------------------------------------------- CRR


def test_crr_weights_binary_and_clipped_exp():
    adv = torch.tensor([[-1.0], [0.0], [0.5], [5.0]])
    assert torch.equal(crr_weights(adv, "binary"), torch.tensor([[0.0], [0.0], [1.0], [1.0]]))
    w = crr_weights(adv, "exp", beta=1.0, max_weight=20.0)
    assert torch.allclose(w, torch.tensor([[math.exp(-1)], [1.0], [math.exp(0.5)], [20.0]]))
    w2 = crr_weights(adv, "exp", beta=2.0, max_weight=20.0)
    assert torch.allclose(w2, torch.tensor([[math.exp(-0.5)], [1.0], [math.exp(0.25)], [math.exp(2.5)]]))
    with pytest.raises(ValueError, match="bogus"):
        crr_weights(adv, "bogus")


def test_crr_advantage_against_policy_value():
    # Q_i(s, a) = a_0 + offset_i -> min = a_0; policy mean 0.5 with ~zero noise -> V = 0.5
    action = torch.tensor([[0.9, 0.0], [0.1, 0.0], [0.5, 0.3]])
    batch = _batch(B=3, act_dim=2, action=action)
    def actor(obs):
        return torch.tensor([0.5, 0.0]).expand(obs.shape[0], 2)
    adv = crr_advantage(_first_action_critic((0.0, 2.0)), actor, batch, n_value_samples=10, actor_std=1e-9,
                        std_clip=0.3)
    assert torch.allclose(adv, torch.tensor([[0.4], [-0.4], [0.0]]), atol=1e-6)


def test_crr_actor_loss_is_weighted_gaussian_nll():
    action = torch.tensor([[0.5, 0.5], [0.0, 0.0]])
    batch = _batch(B=2, act_dim=2, action=action)
    actor = _constant_actor(3, 2, [0.0, 0.0])
    w = torch.tensor([[1.0], [0.0]])
    loss, _ = crr_actor_loss(actor, batch, w, actor_std=0.5)
    # row 0: log N per dim = -0.5 (0.5/0.5)^2 - log 0.5 - 0.5 log 2pi; row 1 weighted 0
    logp = 2 * (-0.5 - math.log(0.5) - 0.5 * math.log(2 * math.pi))
    assert loss.item() == pytest.approx(-logp / 2, rel=1e-6)


# --------------------------------------------------------------------------- Morse / BST


def _constant_morse(obs_dim, act_dim, f_value, kernel_scale=None) -> MorseNetwork:
    m = MorseNetwork(obs_dim, act_dim, hidden_dim=8, kernel_scale=kernel_scale)
    last = m.f[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.as_tensor(f_value))
    return m


def test_morse_default_kernel_scale_is_half_action_dim():
    assert MorseNetwork(3, 4).kernel_scale == 2.0
    assert MorseNetwork(3, 6, kernel_scale=0.6).kernel_scale == pytest.approx(0.6)


def test_morse_loss_on_known_points():
    b = torch.tensor([0.2, -0.4])
    morse = _constant_morse(3, 2, b, kernel_scale=2.0)  # f == b, lambda^2 / 2 = 2
    obs = torch.randn(2, 3)
    action = torch.stack([b, b + torch.tensor([0.5, 0.0])])  # ||f - a||^2 = 0 and 0.25
    m = morse(obs, action)
    assert torch.allclose(m, torch.tensor([[1.0], [math.exp(-0.5)]]))
    neg = (b + torch.tensor([0.6, 0.8])).expand(3, 2, 2)   # ||f - a_u||^2 = 1 -> M = e^-2
    loss, metrics = morse_loss(morse, obs, action, neg_actions=neg)
    assert loss.item() == pytest.approx((0.0 + 0.5) / 2 + math.exp(-2.0), rel=1e-6)
    assert metrics["morse/neg_certainty"].item() == pytest.approx(math.exp(-2.0), rel=1e-6)


def test_bst_weight_zero_on_modes():
    assert bst_weight(torch.tensor(1.0), mu=0.3).item() == 0.0
    assert bst_weight(torch.tensor(0.0), mu=0.5).item() == pytest.approx(math.e ** 2 - 1, rel=1e-6)


def test_bst_actor_loss_omega_zero_on_mode_and_known_off_mode():
    pi_value = torch.tensor([0.3, -0.2])
    action = torch.zeros(4, 2)
    batch = _batch(B=4, act_dim=2, action=action)
    actor = _constant_actor(3, 2, pi_value)
    critic = _constant_critic(3, 2, (4.0, 9.0))
    # f == pi(s) -> M(s, pi(s)) = 1 -> omega = 0: no BC pull, loss = -Q1 / |Q1| = -1
    on_mode = _constant_morse(3, 2, pi_value)
    loss, m = bst_actor_loss(actor, critic, on_mode, batch, mu=0.5)
    assert m["bst/omega_mean"].item() == pytest.approx(0.0, abs=1e-7)
    assert m["actor/bc_loss"].item() == pytest.approx(0.0, abs=1e-7)
    assert loss.item() == pytest.approx(-1.0, rel=1e-6)
    # f == pi(s) + (0.5, 0): ||f - pi||^2 = .25, lambda = |A|/2 = 1 -> M = exp(-.125)
    off_mode = _constant_morse(3, 2, pi_value + torch.tensor([0.5, 0.0]))
    loss, m = bst_actor_loss(actor, critic, off_mode, batch, mu=0.5, normalize_q=False, q_scale=2.0)
    omega = math.expm1((1 - math.exp(-0.125)) / 0.5)
    sq = 0.3 ** 2 + 0.2 ** 2
    assert m["bst/omega_mean"].item() == pytest.approx(omega, rel=1e-5)
    assert loss.item() == pytest.approx(-2.0 * 4.0 + omega * sq, rel=1e-5)


def test_morse_training_separates_data_from_uniform_actions():
    from bex.learners.common import make_adam
    from bex.learners.morse import train_morse

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    morse = MorseNetwork(3, 2, hidden_dim=32)
    opt = make_adam(morse.parameters(), 3e-3)

    def sample():
        obs = torch.randn(128, 3, generator=g)
        act = (0.5 * torch.tanh(obs[:, :2]) + 0.02 * torch.randn(128, 2, generator=g)).clamp(-1, 1)
        return Batch(obs, act, torch.zeros(128, 1), obs, torch.ones(128, 1))

    train_morse(morse, opt, sample, 300, n_negatives=10, generator=g)
    b = sample()
    with torch.no_grad():
        m_data = morse(b.obs, b.action).mean().item()
        m_far = morse(b.obs, -b.action.sign() * 0.9).mean().item()  # opposite corner from the data
    assert m_data > 0.8 and m_far < 0.3, (m_data, m_far)


def test_bst_actor_loss_min_q_for_iql_bst():
    pi_value = torch.tensor([0.3, -0.2])
    batch = _batch(B=4, act_dim=2, action=torch.zeros(4, 2))
    actor = _constant_actor(3, 2, pi_value)
    critic = _constant_critic(3, 2, (4.0, 9.0))
    on_mode = _constant_morse(3, 2, pi_value)  # M = 1: omega = 0, no BC pull
    loss, m = bst_actor_loss(actor, critic, on_mode, batch, mu=0.5, normalize_q=False, min_q=True)
    assert m["bst/omega_mean"].item() == pytest.approx(0.0, abs=1e-7)
    assert loss.item() == pytest.approx(-4.0)  # min(Q1, Q2) = 4 (Q1 here too; see next)
    critic2 = _constant_critic(3, 2, (9.0, 4.0))
    assert bst_actor_loss(actor, critic2, on_mode, batch, mu=0.5, normalize_q=False, min_q=True)[0].item() \
        == pytest.approx(-4.0)
    assert bst_actor_loss(actor, critic2, on_mode, batch, mu=0.5, normalize_q=False)[0].item() \
        == pytest.approx(-9.0)  # TD3-BST reads Q1


# --------------------------------------------------------------------------- IQL


def test_expectile_loss_by_hand():
    u = torch.tensor([[2.0], [-1.0], [0.5], [-3.0]])
    # tau = 0.7: weights 0.7, 0.3, 0.7, 0.3 on u^2 = 4, 1, .25, 9 -> (2.8 + .3 + .175 + 2.7) / 4
    assert expectile_loss(u, 0.7).item() == pytest.approx((2.8 + 0.3 + 0.175 + 2.7) / 4)
    assert expectile_loss(u, 0.5).item() == pytest.approx(0.5 * (4 + 1 + 0.25 + 9) / 4)  # half the MSE


class _ConstValue(torch.nn.Module):
    def __init__(self, values):
        super().__init__()
        self.values = values  # callable obs -> (B, 1)

    def forward(self, obs):
        return self.values(obs)


def test_iql_value_and_critic_losses_by_hand():
    batch = _batch(B=3, act_dim=2, action=torch.tensor([[0.5, 0.0], [-0.5, 0.0], [0.1, 0.0]]),
                   reward=torch.tensor([[1.0], [0.0], [2.0]]), discount=torch.tensor([[1.0], [0.0], [1.0]]))
    target = _first_action_critic((0.0, 1.0))  # min Q' = a_0
    value = _ConstValue(lambda obs: torch.zeros(obs.shape[0], 1, requires_grad=True) + 0.1)
    loss, _ = iql_value_loss(value, target_min_q(target, batch), batch, expectile=0.7)
    u = torch.tensor([0.4, -0.6, 0.0])  # a_0 - V
    assert loss.item() == pytest.approx(((0.7 * (u > 0) + 0.3 * (u < 0)) * u ** 2).mean().item(), rel=1e-6)
    critic = _constant_critic(3, 2, (0.0, 0.0))
    loss, m = iql_critic_loss(critic, value, batch, gamma=0.9)
    y = torch.tensor([1.0 + 0.9 * 0.1, 0.0, 2.0 + 0.9 * 0.1])  # r + gamma * d * V(s')
    assert m["critic/target_q"].item() == pytest.approx(y.mean().item(), rel=1e-6)
    assert loss.item() == pytest.approx(2 * (y ** 2).mean().item(), rel=1e-6)


def test_awr_weights_and_actor_loss_by_hand():
    adv = torch.tensor([[-1.0], [0.0], [0.5], [2.0]])
    assert torch.allclose(awr_weights(adv, 3.0, 100.0),
                          torch.tensor([[math.exp(-3)], [1.0], [math.exp(1.5)], [100.0]]))  # exp(6) clipped
    batch = _batch(B=2, act_dim=2, action=torch.tensor([[0.5, 0.5], [0.2, 0.0]]))
    actor = GaussianActor(3, 2, 8)
    with torch.no_grad():
        actor.net[-1].weight.zero_()
        actor.net[-1].bias.zero_()
        actor.log_std.fill_(math.log(0.5))
    target = _first_action_critic((0.0, 1.0))  # min Q' = a_0: 0.5 and 0.2
    value = _ConstValue(lambda obs: torch.full((obs.shape[0], 1), 0.2))
    loss, m = awr_actor_loss(actor, target_min_q(target, batch), value, batch, beta=3.0, max_weight=100.0)
    w = torch.tensor([math.exp(3 * 0.3), 1.0])
    logp = torch.tensor([2 * (-0.5 - math.log(0.5) - 0.5 * math.log(2 * math.pi)),
                         (-0.5 * 0.16 - math.log(0.5) - 0.5 * math.log(2 * math.pi))
                         + (-math.log(0.5) - 0.5 * math.log(2 * math.pi))])
    assert m["actor/weight_mean"].item() == pytest.approx(w.mean().item(), rel=1e-6)
    assert loss.item() == pytest.approx(-(w * logp).mean().item(), rel=1e-5)
