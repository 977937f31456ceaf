"""Behaviour cloning: a deterministic actor regressed onto the dataset actions.

``min_pi E_(s,a)~D ||pi(s) - a||^2`` (mean over batch and action dims), the
``-BC`` baseline of Fujimoto & Gu 2021 and ExORL's ``agent/bc.py`` objective.
Deliberate difference from ExORL's ``bc.py``: ExORL fits a Gaussian with a
fixed std by log-likelihood, which is the same minimiser up to a constant
factor on the loss; bex uses the plain MSE of a deterministic ``tanh`` actor.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from bex.replay.batch import Batch

from .common import (
    DeterministicActor,
    LearnerConfig,
    OfflineLearner,
    make_adam,
    to_float_dict,
)

__all__ = ["BCConfig", "BC", "bc_loss"]


@dataclass(frozen=True)
class BCConfig(LearnerConfig):
    """Behaviour-cloning hyper-parameters (defaults: ExORL network and optimiser): :class:`LearnerConfig`'s."""


def bc_loss(actor: nn.Module, batch: Batch):
    """``mean (pi(s) - a)^2`` over batch and action dims."""
    loss = (actor(batch.obs) - batch.action).pow(2).mean()
    return loss, {"actor/loss": loss.detach(), "actor/bc_loss": loss.detach()}


class BC(OfflineLearner):
    """Deterministic behaviour cloning."""

    config_cls = BCConfig

    def _build(self, c: BCConfig) -> None:
        self.actor = DeterministicActor(self.obs_dim, self.action_dim, c.hidden_dim).to(self.device)
        self.actor_opt = make_adam(self.actor.parameters(), c.lr)

    def update(self, batch: Batch) -> dict[str, float]:
        loss, metrics = bc_loss(self.actor, batch)
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_opt.step()
        self.steps += 1
        return to_float_dict(metrics)
