"""Shared building blocks of the offline learners: strict configs, networks, updates.

Networks follow ExORL (denisyarats/exorl, ``agent/td3.py``): every actor and
critic trunk is ``Linear -> LayerNorm -> Tanh -> Linear -> ReLU -> Linear``
with orthogonal weights and zero biases (``utils.weight_init``).

Deliberate differences from ExORL, none of which changes the maths:

* The twin critic is one module holding the weights of Q1 and Q2 stacked
  (leading dimension 2), evaluated member by member with ``addmm``, the
  LayerNorm's affine fused into its kernel and ReLU in place: at bex's row
  counts (CQL evaluates 10 x batch rows) the elementwise passes over the
  (rows x hidden) activations cost as much as the matmuls, and this path makes
  the fewest (a batched ``baddbmm`` version with a separate affine step was
  slower per CQL update; docs/learners.md, "Choices").  Q1 alone can be evaluated (``TwinCritic.q1``)
  for the actor step.  One optimizer covers both.
* ``tanh`` after the LayerNorm of every trunk is computed as ``2 sigmoid(2x) - 1``
  (:func:`fast_tanh`, absolute difference <= 2.4e-7, its gradient from the
  output as ``tanh``'s): torch's CPU ``tanh`` kernel is several times slower
  than ``sigmoid`` on AVX-512 builds (docs/learners.md, "Choices").
* Soft target updates are one in-place ``torch._foreach_lerp_`` call.
* Adam uses the fused CPU/GPU kernel when the installed torch has it.
* Building the first learner of a process raises glibc's ``mmap``/trim
  thresholds (:func:`keep_freed_memory`): an update allocates and frees tens of
  MiB of activations, which glibc by default hands back to the kernel, so the
  next update page-faults them in again (the cost: docs/learners.md,
  "Choices").  ``BEX_KEEP_HEAP=0`` turns it off.

Config convention: a learner's config is a frozen dataclass derived from
:class:`LearnerConfig` (:class:`bex.core.ConfigBase` with the learners' presets);
every field is declared with :func:`bex.core.param`.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bex.core import ConfigBase, param
from bex.core.nn import make_adam, make_generator, seeded, set_requires_grad, soft_update

__all__ = [
    "keep_freed_memory", "fast_tanh", "FastTanh", "param", "ConfigBase", "LearnerConfig", "TDConfig", "PRESETS", "mlp",
    "DeterministicActor", "TwinCritic", "soft_update", "make_adam", "set_requires_grad", "seeded", "make_generator",
    "to_float_dict", "act_numpy", "module_state", "load_module_state", "OfflineLearner", "target_copy",
]

# --------------------------------------------------------------------------- configs

#: Presets shared by every learner config.  ``paper`` is ExORL's offline setting.
#: Keys a config does not have are ignored (``morse_steps`` only exists for TD3-BST:
#: the small preset pretrains its Morse network for 5K steps instead of 100K).
PRESETS: dict[str, dict[str, Any]] = {
    "small": {"hidden_dim": 256, "batch_size": 256, "lr": 3e-4, "morse_steps": 5_000},
    "paper": {"hidden_dim": 1024, "batch_size": 1024, "lr": 1e-4},
}


@dataclass(frozen=True)
class LearnerConfig(ConfigBase):
    """Base of every learner config: :class:`bex.core.ConfigBase` with the learners' :data:`PRESETS`,
    and the fields every learner has (defaults: ExORL's offline setting)."""

    hidden_dim: int = param(1024, "Width of the hidden layers of every network (actor, critics, value).", lo=1)
    batch_size: int = param(1024, "Transitions per gradient step (used by the sampler).", lo=1)
    lr: float = param(1e-4, "Adam learning rate of every network (and CQL's temperature).", lo=0.0, hi=1.0,
                      lo_open=True)

    _PRESETS: ClassVar[dict[str, dict[str, Any]]] = PRESETS


@dataclass(frozen=True)
class TDConfig(LearnerConfig):
    """A learner with critics: the discount and the Polyak rate of the target networks (ExORL: 0.99, 0.01)."""

    gamma: float = param(0.99, "Discount factor; multiplies the batch's env discount.", lo=0.0, hi=1.0)
    tau: float = param(0.01, "Polyak rate of the target networks (ExORL; the IQL paper uses 0.005).", lo=0.0,
                       hi=1.0, lo_open=True)


# --------------------------------------------------------------------------- networks


_HEAP_KEPT: bool | None = None


def keep_freed_memory() -> bool:
    """Make glibc keep freed heap memory in the process (once; True where it applied).

    ``mallopt(M_MMAP_THRESHOLD, 256 MiB)`` and ``mallopt(M_TRIM_THRESHOLD, 1 GiB)``:
    activation buffers up to 256 MiB come from the heap and freed ones are
    reused instead of being unmapped and faulted in again on the next update.
    The process keeps up to 1 GiB of freed memory.  No-op off glibc or with
    ``BEX_KEEP_HEAP=0``.
    """
    global _HEAP_KEPT
    if _HEAP_KEPT is None:
        _HEAP_KEPT = False
        if os.environ.get("BEX_KEEP_HEAP", "1") != "0":
            try:
                import ctypes

                libc = ctypes.CDLL("libc.so.6")
                m_trim_threshold, m_mmap_threshold = -1, -3  # glibc malloc.h
                _HEAP_KEPT = bool(libc.mallopt(m_mmap_threshold, 256 << 20)) and \
                    bool(libc.mallopt(m_trim_threshold, 1 << 30))
            except (OSError, AttributeError):  # not glibc
                pass
    return _HEAP_KEPT


class _SigmoidTanh(torch.autograd.Function):
    """``tanh(x) = 2 sigmoid(2x) - 1``; backward ``g (1 - y^2)`` from the saved output (``tanh_backward``)."""

    @staticmethod
    def forward(ctx, x):
        y = torch.sigmoid(x * 2.0).mul_(2.0).sub_(1.0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)


def fast_tanh(x: torch.Tensor) -> torch.Tensor:
    """``tanh`` through ``sigmoid`` (same function; see the module docstring for why)."""
    return _SigmoidTanh.apply(x)


class FastTanh(nn.Module):
    """:func:`fast_tanh` as a layer (the trunks' activation after LayerNorm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_tanh(x)


def mlp(in_dim: int, hidden_dim: int, out_dim: int, n_hidden: int = 2, layer_norm: bool = True) -> nn.Sequential:
    """ExORL trunk: ``Linear -> LayerNorm -> Tanh -> (Linear -> ReLU) * (n_hidden-1) -> Linear``.

    With ``layer_norm=False`` every hidden activation is ReLU (plain MLP).  The
    tanh is :class:`FastTanh`.
    """
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim)]
    layers += [nn.LayerNorm(hidden_dim), FastTanh()] if layer_norm else [nn.ReLU()]
    for _ in range(n_hidden - 1):
        layers += [nn.Linear(hidden_dim, hidden_dim), nn.ReLU()]
    layers.append(nn.Linear(hidden_dim, out_dim))
    for m in layers:
        if isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight)
            nn.init.zeros_(m.bias)
    return nn.Sequential(*layers)


class DeterministicActor(nn.Module):
    """``pi(s) = tanh(mlp(s))`` in [-1, 1]^|A|."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_dim: int):
        super().__init__()
        self.net = mlp(obs_dim, hidden_dim, action_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs))


class TwinCritic(nn.Module):
    """Q1 and Q2 (ExORL critic trunks) in one module.

    Weights are stored as (2, in, out), biases and the first layer's LayerNorm
    affine as (2, 1, out); each member runs its own ``addmm`` chain (see the
    module docstring).  ``forward`` returns a (2, B, 1) tensor: ``q[0]`` is Q1,
    ``q[1]`` is Q2.
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden_dim: int, n: int = 2):
        super().__init__()
        in_dim = obs_dim + action_dim
        self.n, self.hidden_dim = n, hidden_dim

        def w(i, o):
            ws = torch.empty(n, o, i)
            for k in range(n):
                nn.init.orthogonal_(ws[k])
            return nn.Parameter(ws.transpose(1, 2).contiguous())

        self.w1, self.b1 = w(in_dim, hidden_dim), nn.Parameter(torch.zeros(n, 1, hidden_dim))
        self.ln_w, self.ln_b = nn.Parameter(torch.ones(n, 1, hidden_dim)), nn.Parameter(torch.zeros(n, 1, hidden_dim))
        self.w2, self.b2 = w(hidden_dim, hidden_dim), nn.Parameter(torch.zeros(n, 1, hidden_dim))
        self.w3, self.b3 = w(hidden_dim, 1), nn.Parameter(torch.zeros(n, 1, 1))

    def member(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Member ``i`` on inputs ``x = [obs, action]`` of shape (B, in); returns (B, 1)."""
        return self._rest(i, torch.addmm(self.b1[i, 0], x, self.w1[i]))

    def _rest(self, i: int, h: torch.Tensor) -> torch.Tensor:
        """Member ``i`` from its first layer's pre-activation ``h`` (rows, hidden) on."""
        h = fast_tanh(F.layer_norm(h, (self.hidden_dim,), self.ln_w[i, 0], self.ln_b[i, 0]))
        h = torch.relu_(torch.addmm(self.b2[i, 0], h, self.w2[i]))
        return torch.addmm(self.b3[i, 0], h, self.w3[i])

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, action], dim=-1)
        return torch.stack([self.member(i, x) for i in range(self.n)])

    def q1(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Q1 only, shape (B, 1) (TD3's actor objective uses Q1)."""
        return self.member(0, torch.cat([obs, action], dim=-1))

    def many(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``Q_i(s_b, a_mb)`` for M actions per state: obs (B, O), actions (M, B, A) -> (n, M, B, 1).

        Equal to ``forward`` on the M-times repeated states, but the first
        layer's state part ``W_s s + b`` is computed once per state and added to
        each action's ``W_a a`` (CQL's 3N + 1 and CRR's m + 1 actions per state).
        """
        M, B, A = actions.shape
        n_obs = obs.shape[-1]
        out = []
        for i in range(self.n):
            h_s = torch.addmm(self.b1[i, 0], obs, self.w1[i, :n_obs])                  # (B, H)
            h = torch.mm(actions.reshape(M * B, A), self.w1[i, n_obs:]).view(M, B, -1)  # (M, B, H)
            out.append(self._rest(i, (h + h_s).view(M * B, -1)).view(M, B, 1))
        return torch.stack(out)


# --------------------------------------------------------------------------- updates


def to_float_dict(metrics: dict[str, torch.Tensor | float]) -> dict[str, float]:
    """Turn a dict of scalar tensors into floats with one device sync."""
    keys = [k for k, v in metrics.items() if isinstance(v, torch.Tensor)]
    out = {k: float(v) for k, v in metrics.items() if not isinstance(v, torch.Tensor)}
    if keys:
        vals = torch.stack([metrics[k].detach().float().reshape(()) for k in keys]).tolist()
        out.update(zip(keys, vals))
    return out


@torch.no_grad()
def act_numpy(policy, obs: np.ndarray, device: str | torch.device) -> np.ndarray:
    """Evaluate a deterministic policy on one obs (1-D) or a batch (2-D); clip to [-1, 1]."""
    x = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=device)
    single = x.dim() == 1
    if single:
        x = x.unsqueeze(0)
    a = policy(x).clamp(-1.0, 1.0).cpu().numpy()
    return a[0] if single else a


def module_state(parts: dict[str, Any], steps: int, generator: torch.Generator, config: ConfigBase) -> dict[str, Any]:
    """A learner's checkpoint: every module/optimizer ``state_dict``, ``steps``, RNG state, config."""
    sd = {name: obj.state_dict() for name, obj in parts.items()}
    sd.update(steps=int(steps), rng=generator.get_state(), config=config.to_dict())
    return sd


def load_module_state(parts: dict[str, Any], sd: dict[str, Any], generator: torch.Generator) -> int:
    """Inverse of :func:`module_state`; returns ``steps``.  Missing parts raise ``KeyError``."""
    missing = [name for name in parts if name not in sd]
    if missing:
        raise KeyError(f"state dict lacks {', '.join(missing)}")
    for name, obj in parts.items():
        obj.load_state_dict(sd[name])
    if "rng" in sd:
        generator.set_state(sd["rng"].cpu() if isinstance(sd["rng"], torch.Tensor) else sd["rng"])
    return int(sd["steps"])


class OfflineLearner:
    """The plumbing every offline learner shares; a subclass keeps its own networks, losses and ``update``.

    ``Learner(obs_dim, action_dim, config=None, device="cpu", seed=None)`` stores
    the config (``config_cls()`` when None) and the device, then calls the
    subclass's :meth:`_build` under :func:`bex.core.nn.seeded` (so the initial
    weights depend on the seed alone), which names every network, target copy
    (:func:`target_copy`) and optimiser as an attribute; then it makes the noise
    generator and sets ``steps = 0``.  ``act`` runs ``self.actor``; a checkpoint
    (:meth:`state_dict`) holds every module and optimiser attribute
    (:meth:`_parts`), ``steps``, the generator's state and the config.
    """

    config_cls: type

    def __init__(self, obs_dim: int, action_dim: int, config=None, device: str | torch.device = "cpu",
                 seed: int | None = None):
        keep_freed_memory()
        self.config = c = config if config is not None else self.config_cls()
        self.obs_dim, self.action_dim, self.device = obs_dim, action_dim, torch.device(device)
        with seeded(seed):
            self._build(c)
        self.generator = make_generator(seed, self.device)
        self.steps = 0

    def _build(self, c) -> None:
        """Create the learner's networks and optimisers as attributes (a subclass implements it)."""
        raise NotImplementedError

    def _actor_critic(self, actor: nn.Module, hidden_dim: int, lr: float) -> None:
        """``self.actor``, a twin critic ``self.critic`` and its frozen ``self.critic_target``, one Adam each
        (``self.actor_opt``, ``self.critic_opt``); networks are built in that order (actor first)."""
        self.actor = actor.to(self.device)
        self.critic = TwinCritic(self.obs_dim, self.action_dim, hidden_dim).to(self.device)
        self.critic_target = target_copy(self.critic)
        self.actor_opt = make_adam(self.actor.parameters(), lr)
        self.critic_opt = make_adam(self.critic.parameters(), lr)

    def act(self, obs: np.ndarray) -> np.ndarray:
        return act_numpy(self.actor, obs, self.device)

    def _parts(self) -> dict[str, Any]:
        """Every module and optimiser attribute, by attribute name (what a checkpoint holds)."""
        return {name: v for name, v in vars(self).items() if isinstance(v, (nn.Module, torch.optim.Optimizer))}

    def state_dict(self) -> dict:
        return module_state(self._parts(), self.steps, self.generator, self.config)

    def load_state_dict(self, sd: dict) -> None:
        self.steps = load_module_state(self._parts(), sd, self.generator)


def target_copy(net: nn.Module) -> nn.Module:
    """A frozen copy of ``net`` (a target network: updated by :func:`bex.core.nn.soft_update` only)."""
    return copy.deepcopy(net).requires_grad_(False)
