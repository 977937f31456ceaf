"""Implicit Q-Learning (IQL) and IQL-BST.

IQL: Kostrikov, Nair & Levine 2022, "Offline Reinforcement Learning with
Implicit Q-Learning" (ICLR).  No action outside the dataset is ever queried:

* value, Eq. 5: ``L_V = E_(s,a)~D [ L2^tau( min_i Q'_i(s, a) - V(s) ) ]`` with the
  expectile loss ``L2^tau(u) = |tau - 1(u < 0)| u^2`` (tau = 0.7 for locomotion);
* critics, Eq. 6: ``L_Q = sum_i E [ (r + gamma * discount * V(s') - Q_i(s, a))^2 ]``;
* policy extraction by advantage-weighted regression, Eq. 7:
  ``L_pi = -E [ min(exp(beta (min_i Q'_i(s, a) - V(s))), max_weight) log pi(a|s) ]``
  (beta = 3 for locomotion, weights clipped at 100 as the authors' code).

IQL-BST: the TD3-BST paper (Srinivasan & Knottenbelt 2024, arXiv 2404.16399)
states that its objective replaces IQL's policy extraction.  With
``extraction="bst"`` the AWR step becomes the BST objective of
:func:`learners.td3_bst.bst_actor_loss` on the policy's mean action,

    max_pi E [ lambda_Q Q(s, pi(s)) - omega(s) ||pi(s) - a||^2 ],  omega = exp((1 - M(s, pi(s))) / mu) - 1,

with the same pretrained, frozen Morse network ``M`` as TD3-BST
(:mod:`learners.morse`), so ``omega = 0`` on the data modes.  ``Q`` is
``min(Q1, Q2)`` of the online critics (an *unverified* choice: IQL's own
extraction reads the target critics; the TD3-BST paper's text was not
available).  Value and critic losses are IQL's in both modes.

Order of one update as in the authors' code (``learner.py``): value step on the
target critics, actor step with the new V, critic step with the new V(s'),
soft target update.

Policy (authors' locomotion setting): a Gaussian with mean ``tanh(mlp(s))`` and a
state-independent log-std parameter clamped to [-10, 2]; ``act`` returns the
mean.  Deliberate differences from the authors' code:

* sizes and optimiser follow bex's presets (``paper`` = ExORL: hidden 1024,
  batch 1024, lr 1e-4, tau 0.01; the IQL paper: 256/256, 3e-4, tau 0.005) and
  ExORL's LayerNorm-Tanh trunks, so IQL is compared with the other learners at
  the same size;
* no cosine decay of the actor's learning rate and no reward rescaling
  (the authors rescale D4RL locomotion rewards by 1000 / return range, a
  property of fixed D4RL datasets, not of relabelled ones);
* all three networks use Adam with the same learning rate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
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
from .morse import BSTFields, MorseNetwork, MorsePretraining
from .td3_bst import bst_actor_loss

__all__ = ["IQLConfig", "IQLBSTConfig", "IQL", "GaussianActor", "expectile_loss", "iql_value_loss",
           "iql_critic_loss", "target_min_q", "awr_weights", "awr_actor_loss", "EXTRACTIONS"]

LOG_STD_MIN, LOG_STD_MAX = -10.0, 2.0
#: ``awr`` = IQL's advantage-weighted regression; ``bst`` = the BST objective (IQL-BST).
EXTRACTIONS = ("awr", "bst")


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class IQLConfig(TDConfig, BSTFields):
    """IQL hyper-parameters (sizes: bex presets; tau/beta: the IQL paper's locomotion values); the
    :class:`BSTFields` apply with ``extraction="bst"`` only."""

    expectile: float = param(0.7, "Expectile tau of the value loss (IQL locomotion: 0.7).", lo=0.0, hi=1.0,
                             lo_open=True, hi_open=True)
    beta: float = param(3.0, "AWR inverse temperature: weight exp(beta * A) (IQL locomotion: 3).", lo=0.0,
                        lo_open=True)
    max_weight: float = param(100.0, "Upper clip of the AWR weight (IQL code: 100).", lo=0.0, lo_open=True)
    extraction: str = param("awr", "Policy extraction: 'awr' (IQL) or 'bst' (IQL-BST, Morse-network objective).",
                            choices=EXTRACTIONS)


@dataclass(frozen=True)
class IQLBSTConfig(IQLConfig):
    """IQL-BST: IQL with ``extraction = "bst"``."""

    extraction: str = param("bst", "Policy extraction: 'awr' (IQL) or 'bst' (IQL-BST, Morse-network objective).",
                            choices=EXTRACTIONS)


# --------------------------------------------------------------------------- actor


class GaussianActor(nn.Module):
    """``pi(.|s) = N(tanh(mlp(s)), diag(exp(log_std))^2)``, state-independent log-std (IQL locomotion)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_dim: int):
        super().__init__()
        self.net = mlp(obs_dim, hidden_dim, action_dim)
        self.log_std = nn.Parameter(torch.zeros(action_dim))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """The mean action ``tanh(mlp(s))`` (what ``act`` returns)."""
        return torch.tanh(self.net(obs))

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``log pi(a|s)`` summed over action dims, shape (B, 1)."""
        log_std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        z = (action - self(obs)) / log_std.exp()
        return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1, keepdim=True)


# --------------------------------------------------------------------------- losses


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """``mean |tau - 1(u < 0)| u^2`` of ``u = diff`` (IQL Eq. 5's L2^tau)."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff.pow(2)).mean()


def target_min_q(critic_target: TwinCritic, batch: Batch) -> torch.Tensor:
    """``min_i Q'_i(s, a)`` at the data actions, (B, 1), no gradient: what Eqs. 5 and 7 both read."""
    with torch.no_grad():
        return critic_target(batch.obs, batch.action).min(dim=0).values


def iql_value_loss(value: nn.Module, target_q: torch.Tensor, batch: Batch, *, expectile: float):
    """Eq. 5: expectile regression of ``V(s)`` onto ``target_q = min_i Q'_i(s, a)`` (:func:`target_min_q`)."""
    v = value(batch.obs)
    loss = expectile_loss(target_q - v, expectile)
    return loss, {"value/loss": loss.detach(), "value/v_mean": v.detach().mean()}


def iql_critic_loss(critic: TwinCritic, value: nn.Module, batch: Batch, *, gamma: float):
    """Eq. 6: ``sum_i mean (Q_i(s, a) - (r + gamma * discount * V(s')))^2``."""
    with torch.no_grad():
        target = batch.reward + gamma * batch.discount * value(batch.next_obs)
    q = critic(batch.obs, batch.action)
    loss = (q - target).pow(2).mean() * q.shape[0]
    return loss, {"critic/loss": loss.detach(), "critic/q_mean": q.detach().mean(),
                  "critic/target_q": target.mean()}


def awr_weights(adv: torch.Tensor, beta: float, max_weight: float) -> torch.Tensor:
    """``min(exp(beta * A), max_weight)`` (IQL Eq. 7 with the authors' clip)."""
    return torch.exp(beta * adv).clamp(max=max_weight)


def awr_actor_loss(actor: GaussianActor, target_q: torch.Tensor, value: nn.Module, batch: Batch, *,
                   beta: float, max_weight: float):
    """Eq. 7: ``-mean w(s, a) log pi(a|s)``, ``w = awr_weights(target_q - V(s))``, ``target_q = min_i Q'_i(s, a)``."""
    with torch.no_grad():
        adv = target_q - value(batch.obs)
        w = awr_weights(adv, beta, max_weight)
    log_prob = actor.log_prob(batch.obs, batch.action)
    loss = -(w * log_prob).mean()
    return loss, {"actor/loss": loss.detach(), "actor/weight_mean": w.mean(), "actor/adv_mean": adv.mean(),
                  "actor/log_prob": log_prob.detach().mean()}


# --------------------------------------------------------------------------- learner


class IQL(MorsePretraining, OfflineLearner):
    """IQL (``extraction="awr"``) or IQL-BST (``extraction="bst"``; call :meth:`pretrain` first)."""

    config_cls = IQLConfig

    def _build(self, c: IQLConfig) -> None:
        self._actor_critic(GaussianActor(self.obs_dim, self.action_dim, c.hidden_dim), c.hidden_dim, c.lr)
        self.value = mlp(self.obs_dim, c.hidden_dim, 1).to(self.device)
        self.value_opt = make_adam(self.value.parameters(), c.lr)
        bst = c.extraction == "bst"
        if bst:
            self.morse = MorseNetwork(self.obs_dim, self.action_dim, c.morse_hidden_dim,
                                      kernel_scale=c.kernel_scale).to(self.device)
            self.morse_opt = make_adam(self.morse.parameters(), c.morse_lr)
        self._init_morse(bst)

    def update(self, batch: Batch) -> dict[str, float]:
        self._check_pretrained()
        c = self.config
        target_q = target_min_q(self.critic_target, batch)  # the target critics do not change until the end
        v_loss, metrics = iql_value_loss(self.value, target_q, batch, expectile=c.expectile)
        self.value_opt.zero_grad(set_to_none=True)
        v_loss.backward()
        self.value_opt.step()

        set_requires_grad(self.critic, False)  # the BST objective differentiates through Q, not into it
        try:
            a_loss, a_metrics = self._actor_loss(batch, target_q)
            self.actor_opt.zero_grad(set_to_none=True)
            a_loss.backward()
        finally:
            set_requires_grad(self.critic, True)
        self.actor_opt.step()

        q_loss, q_metrics = iql_critic_loss(self.critic, self.value, batch, gamma=c.gamma)
        self.critic_opt.zero_grad(set_to_none=True)
        q_loss.backward()
        self.critic_opt.step()
        soft_update(self.critic_target, self.critic, c.tau)
        metrics.update(a_metrics)
        metrics.update(q_metrics)
        self.steps += 1
        return to_float_dict(metrics)

    def _actor_loss(self, batch: Batch, target_q: torch.Tensor):
        c = self.config
        if c.extraction == "awr":
            return awr_actor_loss(self.actor, target_q, self.value, batch, beta=c.beta,
                                  max_weight=c.max_weight)
        return bst_actor_loss(self.actor, self.critic, self.morse, batch, mu=c.mu, normalize_q=c.normalize_q,
                              q_scale=c.q_scale, detach_omega=c.detach_omega, min_q=True)
