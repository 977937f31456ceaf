"""TD3-BST: TD3 with Behavioral Supervisor Tuning.

Srinivasan & Knottenbelt 2024, "Offline RL with Behavioral Supervisor Tuning",
arXiv 2404.16399.  A Morse network ``M`` (:mod:`learners.morse`, Dherin et al.
2023) is first fitted to the dataset's (s, a) pairs; then TD3 runs with the
policy objective

    max_pi E_(s,a)~D [ lambda_Q Q1(s, pi(s)) - omega(s) ||pi(s) - a||^2 ],
    omega(s) = exp((1 - M(s, pi(s))) / mu) - 1,

so the BC pull vanishes on the data modes (``M = 1`` gives ``omega = 0``) and
grows out of distribution.  The critic and the update step are TD3's (:func:`learners.td3.td3_update`),
with target actor, smoothing noise and policy delay.  Deterministic actor.

Schedule (a bex choice): the Morse network is trained by an explicit
``pretrain(sample_batch_fn, steps=None)`` call (``morse_steps`` Adam steps,
the Tune trainable calls it before the first ``update``) and then frozen;
``update`` raises ``RuntimeError`` if ``pretrain`` was not called
(unless ``morse_steps == 0``).  Gradients still flow *through* the frozen M
into pi unless ``detach_omega``.

*Unverified* choices (the paper's text was not available; exposed as config
fields): ``mu`` (default 1.0), ``normalize_q`` (default True: TD3+BC's
``lambda_Q = q_scale / mean|Q|``), ``q_scale`` (1.0), ``detach_omega`` (default
False), ``morse_steps`` (100k).  The squared error is summed over action
dims (a squared norm, as written in the objective) and averaged over the batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bex.replay.batch import Batch

from .common import DeterministicActor, OfflineLearner, TwinCritic, make_adam, target_copy
from .morse import BSTFields, MorseNetwork, MorsePretraining
from .td3 import TD3Config, td3_update

__all__ = ["TD3BSTConfig", "TD3BST", "bst_weight", "bst_actor_loss"]


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class TD3BSTConfig(TD3Config, BSTFields):
    """TD3-BST hyper-parameters: TD3's config (ExORL defaults; the TD3-paper variant, no BC term) + the Morse
    network and BST objective (:class:`BSTFields`)."""

    def check(self) -> None:
        if self.variant != "td3":
            raise ValueError(f"TD3BSTConfig.variant={self.variant!r} not allowed; must be 'td3' (TD3-BST keeps "
                             f"TD3's target actor)")
        if self.bc_alpha != 0.0:
            raise ValueError(f"TD3BSTConfig.bc_alpha={self.bc_alpha!r} not allowed; must be 0.0 (BST replaces the "
                             f"BC term)")


# --------------------------------------------------------------------------- losses


def bst_weight(certainty: torch.Tensor, mu: float) -> torch.Tensor:
    """``omega = exp((1 - M) / mu) - 1``: 0 on the data modes (M = 1)."""
    return torch.expm1((1.0 - certainty) / mu)


def bst_actor_loss(actor: nn.Module, critic: TwinCritic, morse: MorseNetwork, batch: Batch, *, mu: float,
                   normalize_q: bool = True, q_scale: float = 1.0, detach_omega: bool = False, min_q: bool = False):
    """``-lambda_Q mean Q(s, pi(s)) + mean omega(s) ||pi(s) - a||^2``; ``Q = Q1`` (TD3-BST) or ``min(Q1, Q2)``
    (``min_q``, IQL-BST)."""
    pi = actor(batch.obs)
    q = critic(batch.obs, pi).min(dim=0).values if min_q else critic.q1(batch.obs, pi)
    lmbda = q_scale / q.abs().mean().detach() if normalize_q else float(q_scale)
    certainty = morse(batch.obs, pi)
    omega = bst_weight(certainty, mu)
    if detach_omega:
        omega = omega.detach()
    bc = (omega * (pi - batch.action).pow(2).sum(-1, keepdim=True)).mean()
    loss = -lmbda * q.mean() + bc
    metrics = {"actor/loss": loss.detach(), "actor/bc_loss": bc.detach(), "actor/q_mean": q.detach().mean(),
               "actor/lambda": lmbda, "bst/omega_mean": omega.detach().mean(),
               "bst/certainty_mean": certainty.detach().mean()}
    return loss, metrics


# --------------------------------------------------------------------------- learner


class TD3BST(MorsePretraining, OfflineLearner):
    """TD3 critic + BST actor objective with a pretrained, frozen Morse network."""

    config_cls = TD3BSTConfig

    def _build(self, c: TD3BSTConfig) -> None:
        self._actor_critic(DeterministicActor(self.obs_dim, self.action_dim, c.hidden_dim), c.hidden_dim, c.lr)
        self.morse = MorseNetwork(self.obs_dim, self.action_dim, c.morse_hidden_dim,
                                  kernel_scale=c.kernel_scale).to(self.device)
        self.actor_target = target_copy(self.actor)
        self.morse_opt = make_adam(self.morse.parameters(), c.morse_lr)
        self._init_morse()

    def update(self, batch: Batch) -> dict[str, float]:
        self._check_pretrained()
        c = self.config
        return td3_update(self, batch, lambda b: bst_actor_loss(
            self.actor, self.critic, self.morse, b, mu=c.mu, normalize_q=c.normalize_q, q_scale=c.q_scale,
            detach_omega=c.detach_omega))
