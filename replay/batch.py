"""Typed data passed between the sampler and the learners.

A :class:`Batch` is what every learner's ``update`` takes: one-step transitions
``(s, a, r, s', discount)`` as torch tensors on one device.  ``discount`` is the
environment's per-step discount (0 at a true terminal, 1 otherwise); the learner
multiplies it by its own ``gamma``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch


@dataclass(frozen=True)
class Batch:
    """One mini-batch of transitions.

    Shapes: ``obs`` (B, obs_dim), ``action`` (B, act_dim), ``reward`` (B, 1),
    ``next_obs`` (B, obs_dim), ``discount`` (B, 1); all float32.
    """

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    discount: torch.Tensor

    def __post_init__(self) -> None:
        n = self.obs.shape[0]
        for f in fields(self):
            t = getattr(self, f.name)
            if t.shape[0] != n:
                raise ValueError(f"Batch.{f.name} has {t.shape[0]} rows, obs has {n}")
        for name in ("reward", "discount"):
            if getattr(self, name).dim() != 2:
                raise ValueError(f"Batch.{name} must have shape (B, 1), got {tuple(getattr(self, name).shape)}")

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    @classmethod
    def from_numpy(cls, obs, action, reward, next_obs, discount, device: str | torch.device = "cpu") -> "Batch":
        """Build a batch from numpy arrays (rewards/discounts may be 1-D)."""

        def t(x):
            x = np.asarray(x, dtype=np.float32)
            return torch.from_numpy(x).to(device)

        r = np.asarray(reward, dtype=np.float32).reshape(-1, 1)
        d = np.asarray(discount, dtype=np.float32).reshape(-1, 1)
        return cls(t(obs), t(action), t(r), t(next_obs), t(d))

    def to(self, device: str | torch.device) -> "Batch":
        return Batch(*(getattr(self, f.name).to(device) for f in fields(self)))
