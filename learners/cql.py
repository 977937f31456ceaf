"""Conservative Q-Learning, CQL(H) with a SAC actor.

Kumar, Zhou, Tucker & Levine 2020, "Conservative Q-Learning for Offline RL",
Eq. 4 with the entropy regulariser, i.e. CQL(H): for each critic Q_i

    L_i = alpha_cql * E_s[ log sum_a exp Q_i(s, a) - E_(a~D) Q_i(s, a) ]
          + 1/2 E_D[(Q_i(s, a) - y)^2]-style TD error,

where ``log sum exp`` over the continuous action space is estimated by
importance sampling (paper Appendix F, the authors' ``min_q_version=3``):
with ``N = n_action_samples`` actions from each of three proposals,

    uniform a_u ~ U[-1,1]^|A|    (density 2^-|A|),
    a ~ pi(.|s),  a' ~ pi(.|s')  (both evaluated at Q(s, .)),

    logsumexp_j [ Q(s, a_j) - log mu_j(a_j) ]   over the 3N samples.

As in the authors' code the constant ``log 3N`` is not subtracted (it does not
change gradients); on a constant ``Q = c`` the penalty is
``log sum_j 1/mu_j(a_j)`` per critic.

TD target (ExORL/CQL code default, no entropy backup):
``y = r + gamma * discount * min_i Q'_i(s', a'),  a' ~ pi(.|s')``; critic loss
``sum_i mean (Q_i - y)^2 + alpha_cql * sum_i penalty_i`` (ExORL's scaling).
Actor (SAC): ``mean(alpha * log pi(a|s) - min_i Q_i(s, a))``, ``a ~ pi(.|s)``
reparameterised; automatic entropy tuning with target entropy ``-|A|``
(``alpha_loss = -mean(log_alpha * (log pi + target_entropy))``).

Defaults are ExORL's sizes: hidden 1024, batch 1024, lr 1e-4 for actor, critics
and temperature, tau 0.01, fixed conservative weight ``alpha_cql = 0.01`` (no
Lagrange version), 3 sampled actions per proposal, initial temperature 1.

Two variants, one switch (``variant``); each of its three options can also be
set on its own (``None`` = as the variant says):

====================  =========================  ==================================
option                ``variant="cql"`` (default)  ``variant="exorl"`` (``agent/cql.py``)
====================  =========================  ==================================
importance_sampling   True: the paper's estimator  False: plain logsumexp over the 3N
                                                   sampled Q-values *and* the data Q
per_dim_log_prob      False: ``log pi(a|s)``       True: ExORL's ``SquashedNormal.log_prob``
                      summed over action dims      is a *Normal* (not Independent) base,
                                                   so log pi stays (B, |A|); the actor and
                                                   temperature losses average it over
                                                   batch *and* dims, against the target
                                                   entropy -|A| (so the temperature keeps
                                                   falling: per-dim log pi rarely reaches
                                                   |A|)
double_tanh           False: standard SAC          True: ExORL's actor applies tanh to the
                      ``u ~ N(mu, std), a=tanh(u)``  mean, then ``SquashedNormal`` again:
                                                   ``u ~ N(tanh(mu), std)``, ``a = tanh(u)``;
                                                   the deterministic action is
                                                   ``tanh(tanh(mu))``, within +-0.762
====================  =========================  ==================================

The importance weights always use the joint (summed) log-density;
``per_dim_log_prob`` changes the SAC actor and temperature losses only.  An
earlier bex docstring called the summed-log-prob tuning ExORL's: it is not; the
``exorl`` variant is.  Deliberate differences from ExORL's ``cql.py`` in both
variants (none changes the maths): log-std clamped to [-10, 2] as ExORL; all
Q(s, .) evaluations of the penalty and the data batch share one critic call;
one actor call on ``[s, s']`` gives the penalty's pi(s) and pi(s') samples and
the target's next action (ExORL evaluates the actor on s' twice: same
distribution, independent draws); critic parameters get no gradients during
the actor step (ExORL computes and discards them); the critic's first layer
computes each state's share once for its 3N + 1 actions (``TwinCritic.many``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bex.replay.batch import Batch

from .common import (
    OfflineLearner,
    TDConfig,
    TwinCritic,
    make_adam,
    mlp,
    param,
    set_requires_grad,
    soft_update,
    to_float_dict,
)
from .td3 import td_target

__all__ = ["CQLConfig", "CQL", "VARIANTS", "TanhGaussianActor", "cql_penalty", "cql_critic_loss", "sac_actor_loss"]

LOG_STD_MIN, LOG_STD_MAX = -10.0, 2.0
#: ``cql`` = the CQL paper's estimator on a standard SAC actor; ``exorl`` = ExORL's ``agent/cql.py``.
VARIANTS = ("cql", "exorl")


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class CQLConfig(TDConfig):
    """CQL(H) hyper-parameters (defaults: ExORL offline CQL)."""

    cql_alpha: float = param(0.01, "Fixed weight of the conservative penalty (ExORL 0.01; d3rlpy 5.0).", lo=0.0)
    n_action_samples: int = param(3, "Sampled actions per proposal (uniform, pi(s), pi(s')).", lo=1)
    variant: str = param("cql", "'cql' = the CQL paper's estimator, SAC actor; 'exorl' = ExORL's agent/cql.py "
                         "(the three options below as ExORL has them).", choices=VARIANTS)
    importance_sampling: bool | None = param(None, "Subtract log-densities of the proposals (CQL paper); "
                                             "None = by variant (cql True, exorl False).")
    per_dim_log_prob: bool | None = param(None, "Keep log pi per action dim in the actor/temperature losses "
                                          "(ExORL); None = by variant (cql False, exorl True).")
    double_tanh: bool | None = param(None, "tanh on the mean before the tanh-Gaussian (ExORL); "
                                     "None = by variant (cql False, exorl True).")
    init_temperature: float = param(1.0, "Initial SAC entropy temperature alpha.", lo=0.0, lo_open=True)
    target_entropy: float | None = param(None, "Target entropy of automatic tuning; None = -|A|.")

    def option(self, name: str) -> bool:
        """``importance_sampling``, ``per_dim_log_prob`` or ``double_tanh`` as set, or as the variant says."""
        value = getattr(self, name)
        if value is not None:
            return value
        exorl = self.variant == "exorl"
        return not exorl if name == "importance_sampling" else exorl


# --------------------------------------------------------------------------- actor


class TanhGaussianActor(nn.Module):
    """SAC policy: ``u ~ N(m(s), std(s))``, ``a = tanh(u)``; deterministic action ``tanh(m)``.

    ``m = mu(s)`` (standard SAC) or ``m = tanh(mu(s))`` with ``double_tanh`` (ExORL).
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden_dim: int, double_tanh: bool = False):
        super().__init__()
        self.net = mlp(obs_dim, hidden_dim, 2 * action_dim)
        self.double_tanh = double_tanh

    def dist_params(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(m, log_std)``: the pre-tanh Gaussian's mean and clamped log-std."""
        mu, log_std = self.net(obs).chunk(2, dim=-1)
        return (torch.tanh(mu) if self.double_tanh else mu), log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dist_params(obs)[0])

    def sample(self, obs: torch.Tensor, n: int | None = None, generator: torch.Generator | None = None,
               per_dim: bool = False):
        """Reparameterised ``(a, log pi(a|s))``; shapes (B, A), (B, 1), or (n, B, A), (n, B, 1).

        ``per_dim`` keeps the log-probability per action dimension, (..., A), as
        ExORL's ``SquashedNormal.log_prob`` returns it.
        """
        return self.sample_from(*self.dist_params(obs), n=n, generator=generator, per_dim=per_dim)

    @staticmethod
    def sample_from(mu: torch.Tensor, log_std: torch.Tensor, n: int | None = None,
                    generator: torch.Generator | None = None, per_dim: bool = False):
        """:meth:`sample` from precomputed :meth:`dist_params` (one actor call, several draws)."""
        shape = mu.shape if n is None else (n, *mu.shape)
        eps = torch.randn(shape, generator=generator, device=mu.device)
        u = mu + log_std.exp() * eps
        # log N(u; m, std) - log(1 - tanh(u)^2), the latter as 2 (log 2 - u - softplus(-2u))
        log_prob = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)
                    - 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u)))
        return torch.tanh(u), (log_prob if per_dim else log_prob.sum(-1, keepdim=True))


# --------------------------------------------------------------------------- losses


def cql_penalty(q_data: torch.Tensor, q_samples: torch.Tensor, log_density: torch.Tensor | None):
    """Sum over critics of ``mean_s [logsumexp_j (Q(s,a_j) - log mu_j) - Q(s, a_data)]``.

    ``q_data`` (n_critics, B, 1); ``q_samples`` (n_critics, M, B, 1) for M sampled
    actions; ``log_density`` (M, B, 1) or ``None`` for the uncorrected
    (ExORL) variant, which also includes the data Q-value in the logsumexp.
    Returns ``(penalty, logsumexp mean)``.
    """
    if log_density is not None:
        cat = q_samples - log_density
    else:
        cat = torch.cat([q_samples, q_data.unsqueeze(1)], dim=1)
    lse = torch.logsumexp(cat, dim=1)  # (n_critics, B, 1)
    n = q_data.shape[0]
    return (lse - q_data).mean() * n, lse.mean() * n


def cql_critic_loss(critic: TwinCritic, critic_target: TwinCritic, actor: TanhGaussianActor, batch: Batch, *,
                    gamma: float, cql_alpha: float, n_action_samples: int, importance_sampling: bool,
                    generator: torch.Generator | None = None):
    """TD loss with a sampled next action plus ``cql_alpha`` times the CQL(H) penalty."""
    obs, action = batch.obs, batch.action
    B, A, N = action.shape[0], action.shape[1], n_action_samples
    with torch.no_grad():
        mu, log_std = actor.dist_params(torch.cat([obs, batch.next_obs]))  # pi(.|s), pi(.|s'): one actor call
        next_a, _ = actor.sample_from(mu[B:], log_std[B:], generator=generator)
        target = td_target(batch.reward, batch.discount, critic_target(batch.next_obs, next_a), gamma)
        rand_a = torch.rand((N, B, A), generator=generator, device=obs.device) * 2.0 - 1.0
        pi_a, pi_logp = actor.sample_from(mu, log_std, n=N, generator=generator)
        pi_a, pi_logp = pi_a.reshape(N, 2, B, A).transpose(0, 1), pi_logp.reshape(N, 2, B, 1).transpose(0, 1)
        sampled = torch.cat([rand_a, pi_a[0], pi_a[1]])  # (3N, B, A)
        log_density = None
        if importance_sampling:
            log_u = torch.full((N, B, 1), -A * math.log(2.0), device=obs.device)
            log_density = torch.cat([log_u, pi_logp[0], pi_logp[1]])
    # one critic call for Q(s, a_data) and the 3N sampled actions (the state's share of layer 1 computed once)
    q_all = critic.many(obs, torch.cat([action.unsqueeze(0), sampled]))  # (n_critics, 3N + 1, B, 1)
    q, q_samples = q_all[:, 0], q_all[:, 1:]
    td = (q - target).pow(2).mean() * q.shape[0]
    penalty, lse = cql_penalty(q, q_samples, log_density)
    loss = td + cql_alpha * penalty
    with torch.no_grad():
        metrics = {"critic/loss": loss, "critic/td_loss": td, "critic/cql_penalty": penalty,
                   "critic/cql_logsumexp": lse, "critic/q_mean": q.mean(), "critic/target_q": target.mean()}
    return loss, metrics


def sac_actor_loss(actor: TanhGaussianActor, critic: TwinCritic, log_alpha: torch.Tensor, batch: Batch, *,
                   target_entropy: float, generator: torch.Generator | None = None, per_dim_log_prob: bool = False):
    """Returns ``(actor_loss, alpha_loss, metrics)``; SAC with automatic entropy tuning.

    ``per_dim_log_prob`` (ExORL): ``log pi`` is (B, |A|) and both losses average
    it over batch and dims (``Q`` (B, 1) broadcasts against it).
    """
    a, log_pi = actor.sample(batch.obs, generator=generator, per_dim=per_dim_log_prob)
    alpha_loss = -(log_alpha * (log_pi.detach() + target_entropy)).mean()
    alpha = log_alpha.detach().exp()
    q = critic(batch.obs, a).min(dim=0).values
    loss = (alpha * log_pi - q).mean()
    metrics = {"actor/loss": loss.detach(), "actor/entropy": -log_pi.detach().mean(), "actor/alpha": alpha.reshape(()),
               "actor/alpha_loss": alpha_loss.detach(), "actor/q_mean": q.detach().mean()}
    return loss, alpha_loss, metrics


# --------------------------------------------------------------------------- learner


class CQL(OfflineLearner):
    """CQL(H) with a SAC tanh-Gaussian actor (the CQL paper's estimator, or ExORL's variant)."""

    config_cls = CQLConfig

    def _build(self, c: CQLConfig) -> None:
        actor = TanhGaussianActor(self.obs_dim, self.action_dim, c.hidden_dim, double_tanh=c.option("double_tanh"))
        self._actor_critic(actor, c.hidden_dim, c.lr)
        self.log_alpha = nn.Parameter(torch.tensor([math.log(c.init_temperature)], device=self.device))
        self.target_entropy = -float(self.action_dim) if c.target_entropy is None else c.target_entropy
        self.alpha_opt = make_adam([self.log_alpha], c.lr)

    def update(self, batch: Batch) -> dict[str, float]:
        c = self.config
        loss, metrics = cql_critic_loss(self.critic, self.critic_target, self.actor, batch, gamma=c.gamma,
                                        cql_alpha=c.cql_alpha, n_action_samples=c.n_action_samples,
                                        importance_sampling=c.option("importance_sampling"),
                                        generator=self.generator)
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()

        set_requires_grad(self.critic, False)
        try:
            a_loss, alpha_loss, a_metrics = sac_actor_loss(self.actor, self.critic, self.log_alpha, batch,
                                                           target_entropy=self.target_entropy,
                                                           generator=self.generator,
                                                           per_dim_log_prob=c.option("per_dim_log_prob"))
            self.actor_opt.zero_grad(set_to_none=True)
            self.alpha_opt.zero_grad(set_to_none=True)
            (a_loss + alpha_loss).backward()  # disjoint parameters: one backward for both
        finally:
            set_requires_grad(self.critic, True)
        self.actor_opt.step()
        self.alpha_opt.step()
        soft_update(self.critic_target, self.critic, c.tau)
        metrics.update(a_metrics)
        self.steps += 1
        return to_float_dict(metrics)

    def _parts(self):
        return {**super()._parts(), "log_alpha": _TensorHolder(self.log_alpha)}


class _TensorHolder:
    """Adapter giving a bare parameter the ``state_dict`` protocol."""

    def __init__(self, t: torch.Tensor):
        self.t = t

    def state_dict(self):
        return self.t.detach().clone()

    def load_state_dict(self, value):
        with torch.no_grad():
            self.t.copy_(value)
