"""Critic Regularized Regression.

Wang et al. 2020, "Critic Regularized Regression", Eq. 3: the policy maximises
the weighted log-likelihood of dataset actions

    max_pi E_(s,a)~D [ f(A(s, a)) log pi(a | s) ],
    A(s, a) = Q(s, a) - 1/m sum_j Q(s, a_j),   a_j ~ pi(.|s),  m = n_value_samples,

with ``f = 1[A > 0]`` (``weight="binary"``, CRR-binary, ExORL's default) or
``f = min(exp(A / beta), max_weight)`` (``weight="exp"``).  ``Q = min(Q1, Q2)``
of the online critic, as in ExORL.  The critic is TD3's clipped double-Q
critic (:func:`learners.td3.critic_loss`) with the *online* actor's noisy
next action (ExORL ``agent/crr.py``: no target actor).

Policy (ExORL): a Gaussian ``N(tanh(mlp(s)), actor_std^2)`` with a fixed std;
samples are ``clip(mu + clip(std * eps, +-std_clip), -1, 1)``; ``act`` returns the
mean ``tanh(mlp(s))``.  Defaults (ExORL): hidden 1024, batch 1024, lr 1e-4,
tau 0.01, m = 10, binary weight; std 0.2 clipped at 0.3 is ExORL's TD3 setting,
assumed for CRR too (ExORL's ``crr.yaml`` was not checked).  Deliberate
differences from ExORL: the exp weight is ``exp(A / beta)`` with a ``beta``
field (ExORL hard-codes beta = 1, as does d3rlpy's default); the value samples
and Q(s, a) share one critic call (``TwinCritic.many``: each state's share of
the first layer once; ExORL also runs the actor on the m-times repeated states);
critics updated with fused Adam.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from bex.replay.batch import Batch

from .common import (
    DeterministicActor,
    OfflineLearner,
    TDConfig,
    TwinCritic,
    param,
    soft_update,
    to_float_dict,
)
from .td3 import critic_loss, smoothed_target_action

__all__ = ["CRRConfig", "CRR", "crr_weights", "crr_advantage", "crr_actor_loss"]


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class CRRConfig(TDConfig):
    """CRR hyper-parameters (defaults: ExORL offline CRR)."""

    actor_std: float = param(0.2, "Fixed std of the Gaussian policy (also the target-action noise).", lo=0.0,
                             lo_open=True)
    std_clip: float = param(0.3, "Policy samples' noise clipped to +-std_clip.", lo=0.0)
    n_value_samples: int = param(10, "m: policy samples averaged for V(s) = mean_j Q(s, a_j).", lo=1)
    weight: str = param("binary", "f(A): 'binary' = 1[A > 0], 'exp' = min(exp(A/beta), max_weight).",
                        choices=("binary", "exp"))
    beta: float = param(1.0, "Temperature of the exp weight.", lo=0.0, lo_open=True)
    max_weight: float = param(20.0, "Upper clip of the exp weight.", lo=0.0, lo_open=True)


# --------------------------------------------------------------------------- losses


def crr_weights(adv: torch.Tensor, kind: str, beta: float = 1.0, max_weight: float = 20.0) -> torch.Tensor:
    """``1[A > 0]`` (binary) or ``min(exp(A / beta), max_weight)`` (exp)."""
    if kind == "binary":
        return (adv > 0).to(adv.dtype)
    if kind == "exp":
        return torch.exp(adv / beta).clamp(max=max_weight)
    raise ValueError(f"unknown CRR weight {kind!r}; allowed: 'binary', 'exp'")


def _noisy(mu: torch.Tensor, std: float, clip: float, generator) -> torch.Tensor:
    """``mu`` plus N(0, std^2) noise clipped to +-clip, the action clipped to [-1, 1] (TD3's target smoothing)."""
    return smoothed_target_action(mu, torch.randn(mu.shape, generator=generator, device=mu.device) * std, clip)


@torch.no_grad()
def crr_advantage(critic: TwinCritic, actor: nn.Module, batch: Batch, *, n_value_samples: int, actor_std: float,
                  std_clip: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``A(s,a) = minQ(s,a) - mean_j minQ(s, a_j)``, ``a_j`` noisy policy samples; shape (B, 1)."""
    mu = actor(batch.obs)
    a_j = _noisy(mu.unsqueeze(0).expand(n_value_samples, *mu.shape), actor_std, std_clip, generator)
    q = critic.many(batch.obs, torch.cat([batch.action.unsqueeze(0), a_j])).min(dim=0).values  # (m + 1, B, 1)
    return q[0] - q[1:].mean(dim=0)


def crr_actor_loss(actor: nn.Module, batch: Batch, weights: torch.Tensor, actor_std: float):
    """``-mean(w * log N(a; pi(s), std^2))`` (log-prob summed over action dims)."""
    mu = actor(batch.obs)
    log_prob = (-0.5 * ((batch.action - mu) / actor_std).pow(2) - math.log(actor_std)
                - 0.5 * math.log(2 * math.pi)).sum(-1, keepdim=True)
    loss = -(weights * log_prob).mean()
    return loss, {"actor/loss": loss.detach(), "actor/weight_mean": weights.mean(),
                  "actor/log_prob": log_prob.detach().mean()}


# --------------------------------------------------------------------------- learner


class CRR(OfflineLearner):
    """CRR with a fixed-std Gaussian policy and a TD3-style twin critic (ExORL)."""

    config_cls = CRRConfig

    def _build(self, c: CRRConfig) -> None:
        self._actor_critic(DeterministicActor(self.obs_dim, self.action_dim, c.hidden_dim), c.hidden_dim, c.lr)

    def update(self, batch: Batch) -> dict[str, float]:
        c = self.config
        loss, metrics = critic_loss(self.critic, self.critic_target, self.actor, batch, gamma=c.gamma,
                                    policy_noise=c.actor_std, noise_clip=c.std_clip, generator=self.generator)
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()

        adv = crr_advantage(self.critic, self.actor, batch, n_value_samples=c.n_value_samples,
                            actor_std=c.actor_std, std_clip=c.std_clip, generator=self.generator)
        w = crr_weights(adv, c.weight, c.beta, c.max_weight)
        a_loss, a_metrics = crr_actor_loss(self.actor, batch, w, c.actor_std)
        self.actor_opt.zero_grad(set_to_none=True)
        a_loss.backward()
        self.actor_opt.step()
        soft_update(self.critic_target, self.critic, c.tau)
        metrics.update(a_metrics)
        metrics["actor/adv_mean"] = adv.mean()
        self.steps += 1
        return to_float_dict(metrics)
