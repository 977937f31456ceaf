"""Torch helpers shared by the explorers (``bex.actors``) and the offline learners (``bex.learners``).

Each exists once: Polyak averaging, Adam construction, URLB/ExORL's orthogonal
initialisation, seeded construction and seeded generators.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


@torch.no_grad()
def soft_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """Polyak averaging in place, ``theta' <- (1 - tau) theta' + tau theta`` over parameters (one foreach call).

    Argument order as the assignment reads: the target first.  Parameters only,
    as URLB's and ExORL's ``utils.soft_update_params`` (no buffers).
    """
    torch._foreach_lerp_([p.data for p in target.parameters()], [p.data for p in online.parameters()], tau)


def make_adam(params: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam with torch's defaults (URLB's, ExORL's), in the fused kernel where the device has one, else ``foreach``.

    Same maths as a plain ``torch.optim.Adam``; one kernel per parameter group
    instead of a dozen per tensor (12% of a small-preset APT update on CPU).
    """
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):  # pragma: no cover - old torch / device without the fused kernel
        return torch.optim.Adam(params, lr=lr, foreach=True)


def orthogonal_init(m: nn.Module) -> None:
    """URLB's and ExORL's ``utils.weight_init`` for ``module.apply``: orthogonal Linear weights, zero biases."""
    if isinstance(m, nn.Linear):
        nn.init.orthogonal_(m.weight.data)
        if m.bias is not None:
            m.bias.data.fill_(0.0)


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


class seeded:
    """Context manager: run the body under ``torch.manual_seed(seed)`` without
    disturbing the global RNG afterwards (no-op for ``seed=None``)."""

    def __init__(self, seed: int | None):
        self.seed = seed
        self._fork = torch.random.fork_rng(devices=[]) if seed is not None else None

    def __enter__(self):
        if self._fork is not None:
            self._fork.__enter__()
            torch.manual_seed(self.seed)

    def __exit__(self, *exc):
        if self._fork is not None:
            return self._fork.__exit__(*exc)
        return False


def make_generator(seed: int | None, device: str | torch.device) -> torch.Generator:
    """A torch generator on ``device`` seeded with ``seed`` (from the global RNG when None)."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed) if seed is not None else int(torch.randint(0, 2**62, (1,)).item()))
    return g
