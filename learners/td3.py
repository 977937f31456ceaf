"""TD3 and TD3+BC.

TD3: Fujimoto, van Hoof & Meger 2018, "Addressing Function Approximation Error
in Actor-Critic Methods" (Algorithm 1): clipped double-Q target

    y = r + gamma * discount * min_i Q'_i(s', clip(pi'(s') + clip(eps, -c, c), -1, 1)),
    eps ~ N(0, sigma^2)                                           (target smoothing)

critic loss ``sum_i mean (Q_i(s, a) - y)^2``, deterministic actor maximising
``Q1(s, pi(s))`` every ``policy_delay`` critic steps, Polyak targets.

TD3+BC: Fujimoto & Gu 2021, "A Minimalist Approach to Offline RL", Eq. 3:

    pi = argmax E[ lambda * Q1(s, pi(s)) - (pi(s) - a)^2 ],  lambda = alpha / mean|Q1(s, pi(s))|

with ``alpha = bc_alpha`` (2.5 in the paper; ``bc_alpha = 0`` gives plain TD3).
As in the authors' code the BC term is the mean over batch *and* action dims.

Two variants, one switch (``variant``):

``variant="td3"`` (default) — the TD3 paper: a target actor gives the next
action, the actor maximises ``Q1(s, pi(s))`` at the deterministic action every
``policy_delay`` (default 2) critic steps, and both targets are soft-updated on
actor steps.  The actor is updated on the calls where ``steps % policy_delay ==
0`` (counted before the increment), so the very first ``update`` trains it.

``variant="exorl"`` — exactly ExORL's ``agent/td3.py`` (denisyarats/exorl, the
code the BE paper trained with):

* **no target actor**: the next action is the *online* actor's output plus
  noise, ``clamp(pi(s') + clip(0.2 eps, +-0.3), -1 + 1e-6, 1 - 1e-6)``
  (ExORL ``utils.TruncatedNormal.sample(clip)``);
* actor loss ``-mean min(Q1, Q2)(s, a~)`` at a *noisy* action ``a~`` drawn the
  same way, the clamp passing gradients straight through (as ExORL's
  ``_clamp``); TD3+BC on top (ExORL ``agent/td3_bc.py``): ``lambda =
  alpha / mean|min Q|`` and the BC term on the deterministic ``pi(s)``;
* actor updated every step (``policy_delay`` defaults to 1), critic target
  soft-updated on every step.

Defaults of both are ExORL's offline setting: hidden 1024, batch 1024, lr
1e-4, tau 0.01, gamma 0.99, target-action noise 0.2 clipped at 0.3 (the TD3
paper clips at 0.5).  Deliberate differences from ExORL's code in both
variants, none of which changes the maths:

* ExORL's ``discount`` already contains gamma; a bex :class:`Batch` carries the
  environment discount (0 at terminals) and the learner multiplies by ``gamma``.
* Critic parameters get no gradients during the actor step
  (``requires_grad_(False)``; ExORL computes and discards them): same result,
  about a third less backward work.
* The twin critic is one batched ensemble module, Adam is fused, metrics are
  synchronised once per update (:mod:`learners.common`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from bex.replay.batch import Batch

from .common import (
    DeterministicActor,
    OfflineLearner,
    TDConfig,
    TwinCritic,
    param,
    set_requires_grad,
    soft_update,
    target_copy,
    to_float_dict,
)

__all__ = ["TD3Config", "TD3BCConfig", "TD3", "VARIANTS", "smoothed_target_action", "truncated_noisy_action",
           "td_target", "critic_loss", "q_bc_objective", "actor_loss", "exorl_actor_loss", "td3_update", "td3_schedule"]

#: ``td3`` = the TD3 paper; ``exorl`` = ExORL's ``agent/td3.py`` (see the module docstring).
VARIANTS = ("td3", "exorl")
#: ExORL's ``TruncatedNormal`` keeps samples inside (-1, 1) by this margin.
EXORL_EPS = 1e-6


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class TD3Config(TDConfig):
    """TD3 / TD3+BC hyper-parameters (defaults: ExORL offline TD3)."""

    policy_noise: float = param(0.2, "Std of the target-policy smoothing noise.", lo=0.0)
    noise_clip: float = param(0.3, "Smoothing noise is clipped to +-noise_clip (TD3 paper: 0.5).", lo=0.0)
    policy_delay: int | None = param(None, "Critic steps per actor step; None = 2 (variant td3) or 1 (exorl).",
                                     lo=1)
    bc_alpha: float = param(0.0, "TD3+BC alpha: Q weight lambda = alpha / mean|Q|; 0 = plain TD3.", lo=0.0)
    variant: str = param("td3", "'td3' = the TD3 paper (target actor, delayed Q1 actor step); 'exorl' = ExORL's "
                         "agent/td3.py (no target actor, min-Q at a noisy action, every-step updates).",
                         choices=VARIANTS)


@dataclass(frozen=True)
class TD3BCConfig(TD3Config):
    """TD3+BC: TD3 with ``bc_alpha = 2.5`` (Fujimoto & Gu 2021)."""

    bc_alpha: float = param(2.5, "TD3+BC alpha: Q weight lambda = alpha / mean|Q|; 0 = plain TD3.", lo=0.0)


# --------------------------------------------------------------------------- losses


def smoothed_target_action(next_mu: torch.Tensor, noise: torch.Tensor, noise_clip: float) -> torch.Tensor:
    """``clip(pi'(s') + clip(noise, -c, c), -1, 1)`` (TD3 target policy smoothing)."""
    return (next_mu + noise.clamp(-noise_clip, noise_clip)).clamp(-1.0, 1.0)


def truncated_noisy_action(mu: torch.Tensor, noise: torch.Tensor, noise_clip: float) -> torch.Tensor:
    """ExORL ``TruncatedNormal.sample(clip)``: ``clamp(mu + clip(noise, +-c), -1+1e-6, 1-1e-6)``.

    The clamp is straight-through (ExORL ``_clamp``: ``x - x.detach() +
    clamped.detach()``), so ``d a / d mu = 1`` even where the sample was clamped.
    """
    x = mu + noise.clamp(-noise_clip, noise_clip)
    clamped = x.detach().clamp(-1.0 + EXORL_EPS, 1.0 - EXORL_EPS)
    return x - x.detach() + clamped if x.requires_grad else clamped


def td_target(reward: torch.Tensor, discount: torch.Tensor, next_q: torch.Tensor, gamma: float) -> torch.Tensor:
    """``r + gamma * discount * min_i next_q[i]``; ``next_q`` is (n_critics, B, 1)."""
    return reward + gamma * discount * next_q.min(dim=0).values


def critic_loss(critic: TwinCritic, critic_target: TwinCritic, next_policy: Callable[[torch.Tensor], torch.Tensor],
                batch: Batch, *, gamma: float, policy_noise: float, noise_clip: float,
                generator: torch.Generator | None = None, noise: torch.Tensor | None = None, exorl: bool = False):
    """Clipped double-Q TD loss ``sum_i mean (Q_i(s,a) - y)^2`` (ExORL/TD3).

    ``next_policy`` gives the mean next action (TD3: target actor; ExORL TD3 and
    CRR: online actor).  ``noise`` overrides the sampled N(0, policy_noise^2)
    smoothing noise; ``exorl`` clamps the noisy action to ExORL's (-1+1e-6, 1-1e-6).
    """
    with torch.no_grad():
        next_mu = next_policy(batch.next_obs)
        if noise is None:
            noise = torch.randn(next_mu.shape, generator=generator, device=next_mu.device) * policy_noise
        next_action = (truncated_noisy_action if exorl else smoothed_target_action)(next_mu, noise, noise_clip)
        target = td_target(batch.reward, batch.discount, critic_target(batch.next_obs, next_action), gamma)
    q = critic(batch.obs, batch.action)
    loss = (q - target).pow(2).mean() * q.shape[0]
    with torch.no_grad():
        metrics = {"critic/loss": loss, "critic/q_mean": q.mean(), "critic/target_q": target.mean()}
    return loss, metrics


def q_bc_objective(pi: torch.Tensor, q: torch.Tensor, action: torch.Tensor, bc_alpha: float):
    """``-mean Q`` (TD3), or TD3+BC's ``-lambda mean Q + mean (pi - a)^2`` with ``lambda = bc_alpha / mean|Q|``."""
    metrics = {}
    if bc_alpha > 0:
        lmbda = bc_alpha / q.abs().mean().detach()
        bc = (pi - action).pow(2).mean()
        loss = -lmbda * q.mean() + bc
        metrics["actor/bc_loss"] = bc.detach()
        metrics["actor/lambda"] = lmbda
    else:
        loss = -q.mean()
    metrics["actor/loss"] = loss.detach()
    metrics["actor/q_mean"] = q.detach().mean()
    return loss, metrics


def actor_loss(actor: nn.Module, critic: TwinCritic, batch: Batch, *, bc_alpha: float = 0.0):
    """TD3: ``-mean Q1(s, pi(s))``; TD3+BC (Eq. 3): ``-lambda mean Q1 + mean (pi(s) - a)^2``."""
    pi = actor(batch.obs)
    return q_bc_objective(pi, critic.q1(batch.obs, pi), batch.action, bc_alpha)


def exorl_actor_loss(actor: nn.Module, critic: TwinCritic, batch: Batch, *, policy_noise: float, noise_clip: float,
                     bc_alpha: float = 0.0, generator: torch.Generator | None = None,
                     noise: torch.Tensor | None = None):
    """ExORL TD3: ``-mean min(Q1, Q2)(s, a~)``, ``a~`` = :func:`truncated_noisy_action` of ``pi(s)``.

    With ``bc_alpha > 0`` ExORL's TD3+BC: ``-lambda mean minQ + mean (pi(s) - a)^2``,
    ``lambda = bc_alpha / mean|minQ|`` (BC on the deterministic action).
    """
    pi = actor(batch.obs)
    if noise is None:
        noise = torch.randn(pi.shape, generator=generator, device=pi.device) * policy_noise
    q = critic(batch.obs, truncated_noisy_action(pi, noise, noise_clip)).min(dim=0).values
    return q_bc_objective(pi, q, batch.action, bc_alpha)


# --------------------------------------------------------------------------- update step


def td3_schedule(config) -> tuple[bool, int]:
    """``(exorl, policy_delay)`` of a TD3-family config (TD3-BST's config has no variant: TD3 paper)."""
    exorl = getattr(config, "variant", "td3") == "exorl"
    delay = config.policy_delay if config.policy_delay is not None else (1 if exorl else 2)
    return exorl, delay


def td3_update(learner, batch: Batch, actor_loss_fn: Callable[[Batch], tuple[torch.Tensor, dict]]) -> dict[str, float]:
    """One TD3 step, shared by TD3, TD3+BC and TD3-BST (which differ only in ``actor_loss_fn``).

    Critic step every call; every ``policy_delay`` calls an actor step on
    ``actor_loss_fn(batch)`` with the critic's parameters frozen (no critic
    gradients are computed for it).  Variant ``td3``: the next action comes from
    the target actor and both targets are soft-updated on actor steps.  Variant
    ``exorl``: the next action comes from the online actor (there is no target
    actor) and the critic target is soft-updated on every call.  ``learner``
    provides ``actor, critic, critic_target, actor_opt, critic_opt, generator,
    steps`` (and ``actor_target`` for ``td3``) and a config with ``gamma,
    policy_noise, noise_clip, policy_delay, tau``.
    """
    c = learner.config
    exorl, delay = td3_schedule(c)
    loss, metrics = critic_loss(learner.critic, learner.critic_target, learner.actor if exorl else learner.actor_target,
                                batch, gamma=c.gamma, policy_noise=c.policy_noise, noise_clip=c.noise_clip,
                                generator=learner.generator, exorl=exorl)
    learner.critic_opt.zero_grad(set_to_none=True)
    loss.backward()
    learner.critic_opt.step()
    if exorl:
        soft_update(learner.critic_target, learner.critic, c.tau)
    if learner.steps % delay == 0:
        set_requires_grad(learner.critic, False)
        try:
            a_loss, a_metrics = actor_loss_fn(batch)
            learner.actor_opt.zero_grad(set_to_none=True)
            a_loss.backward()
        finally:
            set_requires_grad(learner.critic, True)
        learner.actor_opt.step()
        if not exorl:
            soft_update(learner.critic_target, learner.critic, c.tau)
            soft_update(learner.actor_target, learner.actor, c.tau)
        metrics.update(a_metrics)
    learner.steps += 1
    return to_float_dict(metrics)


# --------------------------------------------------------------------------- learner


class TD3(OfflineLearner):
    """TD3 (``bc_alpha = 0``) or TD3+BC (``bc_alpha > 0``) learner, TD3-paper or ExORL variant."""

    config_cls = TD3Config

    def _build(self, c: TD3Config) -> None:
        self._actor_critic(DeterministicActor(self.obs_dim, self.action_dim, c.hidden_dim), c.hidden_dim, c.lr)
        if c.variant != "exorl":  # ExORL's TD3 has no target actor
            self.actor_target = target_copy(self.actor)

    def update(self, batch: Batch) -> dict[str, float]:
        c = self.config
        if c.variant == "exorl":
            def loss_fn(b):
                return exorl_actor_loss(self.actor, self.critic, b, policy_noise=c.policy_noise,
                                        noise_clip=c.noise_clip, bc_alpha=c.bc_alpha, generator=self.generator)
        else:
            def loss_fn(b):
                return actor_loss(self.actor, self.critic, b, bc_alpha=c.bc_alpha)
        return td3_update(self, batch, loss_fn)
