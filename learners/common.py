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
  1.2x slower per CQL update).  Q1 alone can be evaluated (``TwinCritic.q1``)
  for the actor step.  One optimizer covers both.
* ``tanh`` after the LayerNorm of every trunk is computed as ``2 sigmoid(2x) - 1``
  (:func:`fast_tanh`, absolute difference <= 2.4e-7, its gradient from the
  output as ``tanh``'s): torch 2.13's CPU ``tanh`` kernel is 6x slower than
  ``sigmoid`` on this machine's AVX-512 build.
* Soft target updates are one in-place ``torch._foreach_lerp_`` call.
* Adam uses the fused CPU/GPU kernel when the installed torch has it.
* Building the first learner of a process raises glibc's ``mmap``/trim
  thresholds (:func:`keep_freed_memory`): an update allocates and frees tens of
  MiB of activations, which glibc by default hands back to the kernel, so the
  next update page-faults them in again (2,000 faults, ~4 ms, of a 60 ms
  small-preset CQL update on this machine).  ``BEX_KEEP_HEAP=0`` turns it off.

Config convention: a learner's config is a frozen dataclass derived from
:class:`ConfigBase`; every field is declared with :func:`param`, which stores its
docstring and its allowed range/choices.  ``from_dict`` rejects unknown keys and
values of the wrong type or out of range with a one-line ``ValueError``.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "keep_freed_memory", "fast_tanh", "FastTanh", "param", "ConfigBase", "PRESETS", "mlp", "DeterministicActor", "TwinCritic",
    "soft_update", "make_adam", "set_requires_grad", "seeded", "make_generator", "to_float_dict",
    "act_numpy", "module_state", "load_module_state", "OfflineLearner",
]

# --------------------------------------------------------------------------- configs

#: Presets shared by every learner config.  ``paper`` is ExORL's offline setting.
#: Keys a config does not have are ignored (``morse_steps`` only exists for TD3-BST:
#: the small preset pretrains its Morse network for 5K steps instead of 100K).
PRESETS: dict[str, dict[str, Any]] = {
    "small": {"hidden_dim": 256, "batch_size": 256, "lr": 3e-4, "morse_steps": 5_000},
    "paper": {"hidden_dim": 1024, "batch_size": 1024, "lr": 1e-4},
}


def param(default: Any, doc: str, *, lo: float | None = None, hi: float | None = None,
          lo_open: bool = False, hi_open: bool = False, choices: Sequence[Any] | None = None):
    """Declare a config field with its docstring and its allowed values.

    ``lo``/``hi`` bound numeric fields (closed unless ``lo_open``/``hi_open``);
    ``choices`` lists the allowed values of a string field.  ``None`` is always
    allowed for fields annotated ``X | None``.
    """
    return field(default=default, metadata={"doc": doc, "lo": lo, "hi": hi, "lo_open": lo_open,
                                            "hi_open": hi_open, "choices": tuple(choices) if choices else None})


def _fmt_range(md: dict) -> str:
    if md["choices"]:
        return "one of " + ", ".join(repr(c) for c in md["choices"])
    lo, hi = md["lo"], md["hi"]
    left = "(" if md["lo_open"] or lo is None else "["
    right = ")" if md["hi_open"] or hi is None else "]"
    return f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"


def _allowed_types(tp: Any) -> tuple[tuple[type, ...], bool]:
    """(concrete types, None allowed) of an annotation such as ``float | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        return tuple(a for a in args if a is not type(None)), type(None) in args
    return (tp,), False


@dataclass(frozen=True)
class ConfigBase:
    """Base of every learner config: strict ``from_dict``/``to_dict`` and validation."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            self.validate(f.name, getattr(self, f.name))

    @classmethod
    def _field(cls, key: str) -> dataclasses.Field:
        for f in dataclasses.fields(cls):
            if f.name == key:
                return f
        raise ValueError(f"{cls.__name__}: unknown key {key!r}; allowed keys: "
                         + ", ".join(f.name for f in dataclasses.fields(cls)))

    @classmethod
    def validate(cls, key: str, value: Any) -> Any:
        """Check ``value`` for field ``key`` (type, range, choices); return it coerced.

        ints are accepted for float fields (and converted); bools are never
        accepted as numbers.  Raises a one-line ``ValueError`` naming key, value
        and the allowed range.
        """
        f = cls._field(key)
        md = f.metadata
        hints = typing.get_type_hints(cls)
        allowed, none_ok = _allowed_types(hints[key])
        name = f"{cls.__name__}.{key}"
        if value is None:
            if none_ok:
                return None
            raise ValueError(f"{name}=None not allowed; expected {'/'.join(t.__name__ for t in allowed)}")
        if isinstance(value, bool) and bool not in allowed:
            raise ValueError(f"{name}={value!r} has type bool; expected {'/'.join(t.__name__ for t in allowed)}")
        if float in allowed and isinstance(value, (int, np.integer, np.floating)) and not isinstance(value, bool):
            value = float(value)
        if int in allowed and isinstance(value, np.integer):
            value = int(value)
        if not isinstance(value, allowed):
            raise ValueError(f"{name}={value!r} has type {type(value).__name__}; "
                             f"expected {'/'.join(t.__name__ for t in allowed)}")
        if md.get("choices") and value not in md["choices"]:
            raise ValueError(f"{name}={value!r} not allowed; must be {_fmt_range(md)}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            lo, hi = md.get("lo"), md.get("hi")
            bad = (isinstance(value, float) and not math.isfinite(value))
            bad |= lo is not None and (value <= lo if md["lo_open"] else value < lo)
            bad |= hi is not None and (value >= hi if md["hi_open"] else value > hi)
            if bad:
                raise ValueError(f"{name}={value!r} out of range; must be in {_fmt_range(md)}")
        return value

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None):
        """Build a config from a plain dict; unknown keys and bad values raise ``ValueError``."""
        d = dict(d or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown key(s) {', '.join(map(repr, unknown))}; "
                             f"allowed keys: {', '.join(sorted(known))}")
        return cls(**{k: cls.validate(k, v) for k, v in d.items()})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes):
        return type(self).from_dict({**self.to_dict(), **changes})

    @classmethod
    def preset(cls, name: str, **overrides):
        """``small`` (hidden 256, batch 256, lr 3e-4) or ``paper`` (ExORL: 1024, 1024, 1e-4)."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
        known = {f.name for f in dataclasses.fields(cls)}
        base = {k: v for k, v in PRESETS[name].items() if k in known}
        return cls.from_dict({**base, **overrides})

    @classmethod
    def field_docs(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("doc", "") for f in dataclasses.fields(cls)}


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


def _orthogonal_(w: torch.Tensor) -> torch.Tensor:
    """ExORL's init: orthogonal weight (``nn.init.orthogonal_``); ``w`` stored as (out, in)."""
    return nn.init.orthogonal_(w)


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
            _orthogonal_(m.weight)
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
                _orthogonal_(ws[k])
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
        O = obs.shape[-1]
        out = []
        for i in range(self.n):
            h_s = torch.addmm(self.b1[i, 0], obs, self.w1[i, :O])                  # (B, H)
            h = torch.mm(actions.reshape(M * B, A), self.w1[i, O:]).view(M, B, -1)  # (M, B, H)
            out.append(self._rest(i, (h + h_s).view(M * B, -1)).view(M, B, 1))
        return torch.stack(out)


# --------------------------------------------------------------------------- updates


@torch.no_grad()
def soft_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """Polyak averaging in place: ``theta' <- (1 - tau) theta' + tau theta`` (one foreach call)."""
    torch._foreach_lerp_(list(target.parameters()), list(online.parameters()), tau)


def make_adam(params: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel where torch supports it on the params' device, else foreach."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):  # pragma: no cover - old torch / unsupported device
        return torch.optim.Adam(params, lr=lr, foreach=True)


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
    g = torch.Generator(device=device)
    g.manual_seed(int(seed) if seed is not None else int(torch.randint(0, 2**62, (1,)).item()))
    return g


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
    """The plumbing every offline learner shares; a subclass keeps its own losses and ``update``.

    :meth:`_setup` stores the config (``config_cls()`` when None) and device,
    builds ``networks(config)`` under ``seed`` in dict order (so the initial
    weights depend on the seed alone), a frozen ``<name>_target`` copy of each
    name in ``targets``, an Adam ``<name>_opt`` for each ``{name: lr_field}`` of
    ``optimise`` (learning rate ``config.<lr_field>``), the noise generator and
    ``steps = 0``.  ``act`` runs ``self.actor``; a checkpoint (:meth:`state_dict`) holds all of those parts
    (:meth:`_parts`, which a subclass may extend), ``steps``, the generator's
    state and the config.
    """

    config_cls: type

    def _setup(self, obs_dim: int, action_dim: int, config, device, seed: int | None,
               networks, targets: Sequence[str] = (), optimise: dict[str, str] | None = None):
        keep_freed_memory()
        self.config = c = config if config is not None else self.config_cls()
        self.obs_dim, self.action_dim, self.device = obs_dim, action_dim, torch.device(device)
        with seeded(seed):
            nets = {name: net.to(self.device) for name, net in networks(c).items()}
        names = list(nets)
        for name, net in nets.items():
            setattr(self, name, net)
        for name in targets:
            setattr(self, f"{name}_target", copy.deepcopy(nets[name]).requires_grad_(False))
            names.append(f"{name}_target")
        for name, lr_field in (optimise or {}).items():
            setattr(self, f"{name}_opt", make_adam(nets[name].parameters(), getattr(c, lr_field)))
            names.append(f"{name}_opt")
        self._part_names = tuple(names)
        self.generator = make_generator(seed, self.device)
        self.steps = 0
        return c

    def act(self, obs: np.ndarray) -> np.ndarray:
        return act_numpy(self.actor, obs, self.device)

    def _parts(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._part_names}

    def state_dict(self) -> dict:
        return module_state(self._parts(), self.steps, self.generator, self.config)

    def load_state_dict(self, sd: dict) -> None:
        self.steps = load_module_state(self._parts(), sd, self.generator)
