"""Morse neural network: an unnormalised density / certainty over (s, a).

Dherin et al. 2023, "Morse Neural Networks for Uncertainty Quantification":
``M(s, a) = K(f(s, a), a)`` with the RBF kernel
``K(z1, z2) = exp(-(lambda^2 / 2) ||z1 - z2||^2)``, so ``M = 1`` exactly where
``f(s, a) = a`` (the data modes) and ``1 - M`` is an uncertainty.  Trained,
as in TD3-BST (Srinivasan & Knottenbelt 2024, arXiv 2404.16399), with

    L = E_(s,a)~D [ -log M(s, a) ] + E_(s~D, a_u~U[-1,1]^|A|) [ M(s, a_u) ],

``n_negatives`` (10) uniform actions per state.  ``f`` is an MLP
``[s, a] -> 256 -> 256 -> 256 -> |A|`` (ReLU), Adam 3e-4, following a public
re-implementation of TD3-BST; ``lambda`` (``kernel_scale``) defaults to
``|A| / 2``, the TD3-BST paper's sweet spot (sweep {|A|/10, |A|/2, |A|, 2|A|}).
``-log M`` is computed in closed form (``(lambda^2/2) ||f - a||^2``), never as
``log(exp(.))``, so it stays finite far from the modes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from bex.replay.batch import Batch

from .common import LearnerConfig, mlp, param, to_float_dict

__all__ = ["MorseNetwork", "MorsePretraining", "BSTFields", "morse_loss", "train_morse"]


class MorseNetwork(nn.Module):
    """``M(s, a) = exp(-(lambda^2/2) ||f(s, a) - a||^2)`` in (0, 1]."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_dim: int = 256, n_hidden: int = 3,
                 kernel_scale: float | None = None):
        super().__init__()
        self.f = mlp(obs_dim + action_dim, hidden_dim, action_dim, n_hidden=n_hidden, layer_norm=False)
        self.kernel_scale = float(action_dim) / 2.0 if kernel_scale is None else float(kernel_scale)

    def neg_log_certainty(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``-log M(s, a) = (lambda^2/2) ||f(s,a) - a||^2``, shape (..., 1)."""
        z = self.f(torch.cat([obs, action], dim=-1))
        return 0.5 * self.kernel_scale ** 2 * (z - action).pow(2).sum(-1, keepdim=True)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Certainty ``M(s, a)``, shape (..., 1)."""
        return torch.exp(-self.neg_log_certainty(obs, action))


def morse_loss(morse: MorseNetwork, obs: torch.Tensor, action: torch.Tensor, *, n_negatives: int = 10,
               generator: torch.Generator | None = None, neg_actions: torch.Tensor | None = None):
    """``mean -log M(s, a) + mean M(s, a_u)``; ``neg_actions`` (K, B, |A|) overrides the uniform draws."""
    B, A = action.shape
    if neg_actions is None:
        neg_actions = torch.rand((n_negatives, B, A), generator=generator, device=action.device) * 2.0 - 1.0
    K = neg_actions.shape[0]
    pos = morse.neg_log_certainty(obs, action).mean()
    neg_obs = obs.unsqueeze(0).expand(K, *obs.shape)
    neg = morse(neg_obs, neg_actions).mean()
    loss = pos + neg
    with torch.no_grad():
        metrics = {"morse/loss": loss, "morse/data_nll": pos, "morse/neg_certainty": neg,
                   "morse/data_certainty": torch.exp(-pos)}
    return loss, metrics


def train_morse(morse: MorseNetwork, optimizer: torch.optim.Optimizer, sample_batch_fn: Callable[[], Batch],
                steps: int, *, n_negatives: int = 10, generator: torch.Generator | None = None) -> dict:
    """``steps`` Adam steps of :func:`morse_loss` on batches from ``sample_batch_fn``; returns the last metrics."""
    metrics: dict = {}
    for _ in range(steps):
        batch = sample_batch_fn()
        loss, metrics = morse_loss(morse, batch.obs, batch.action, n_negatives=n_negatives, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return metrics


@dataclass(frozen=True)
class BSTFields(LearnerConfig):
    """Config fields of the BST objective and its Morse network (TD3-BST, IQL-BST configs derive from it)."""

    mu: float = param(1.0, "BST temperature: omega = exp((1 - M)/mu) - 1 (unverified default).", lo=0.0,
                      lo_open=True)
    normalize_q: bool = param(True, "Scale Q by q_scale / mean|Q| as TD3+BC (unverified default).")
    q_scale: float = param(1.0, "Q weight (numerator of the normalisation if normalize_q).", lo=0.0)
    detach_omega: bool = param(False, "Stop gradients through omega (M) into pi (unverified default).")
    kernel_scale: float | None = param(None, "Morse RBF scale lambda; None = |A|/2.", lo=0.0, lo_open=True)
    morse_hidden_dim: int = param(256, "Width of the Morse MLP's three hidden layers.", lo=1)
    morse_lr: float = param(3e-4, "Adam learning rate of the Morse network.", lo=0.0, hi=1.0, lo_open=True)
    morse_steps: int = param(100_000, "Morse pretraining steps run by pretrain() (unverified default).", lo=0)
    morse_negatives: int = param(10, "Uniform negative actions per state in the Morse loss.", lo=1)


class MorsePretraining:
    """What a BST learner (TD3-BST, IQL-BST) adds to :class:`learners.common.OfflineLearner`.

    The Morse network ``self.morse`` (optimiser ``self.morse_opt``) is fitted by
    an explicit :meth:`pretrain` call (the Tune trainable calls it before the
    first ``update``) and then frozen; ``update`` must call
    :meth:`_check_pretrained`, which raises unless ``pretrain`` ran (or
    ``config.morse_steps == 0``).  Checkpoints carry ``morse_steps_done``.
    A learner whose config does not use BST (IQL with AWR extraction) calls
    ``_init_morse(False)``; its ``pretrain`` does nothing.
    """

    def _init_morse(self, enabled: bool = True) -> None:
        self.morse_steps_done = 0
        self._uses_morse = enabled
        if enabled:
            self.morse.requires_grad_(False)

    def pretrain(self, sample_batch_fn: Callable[[], Batch], steps: int | None = None) -> dict[str, float]:
        """Fit the Morse network for ``steps`` (default ``config.morse_steps``) batches; then freeze it."""
        if not self._uses_morse:
            return {}
        steps = self.config.morse_steps if steps is None else int(steps)
        self.morse.requires_grad_(True)
        try:
            metrics = train_morse(self.morse, self.morse_opt, sample_batch_fn, steps,
                                  n_negatives=self.config.morse_negatives, generator=self.generator)
        finally:
            self.morse.requires_grad_(False)
        self.morse_steps_done += steps
        return to_float_dict(metrics)

    @property
    def pretrained(self) -> bool:
        return not self._uses_morse or self.morse_steps_done > 0 or self.config.morse_steps == 0

    def _check_pretrained(self) -> None:
        if not self.pretrained:
            raise RuntimeError(f"{type(self).__name__}.update before pretrain(): fit the Morse network first "
                               "(learner.pretrain(sample_batch_fn)) or set morse_steps=0")

    def state_dict(self) -> dict:
        return {**super().state_dict(), "morse_steps_done": self.morse_steps_done}

    def load_state_dict(self, sd: dict) -> None:
        super().load_state_dict(sd)
        self.morse_steps_done = int(sd.get("morse_steps_done", 0))
