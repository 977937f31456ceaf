"""Offline behaviour distillation: OBD (Av-PBC) and state-density-weighted OBD (SDW-OBD).

OBD (Lei et al., arXiv 2410.22728; code ``LeavesLei/OBD``) learns a synthetic set
of N (state, action) pairs such that a policy trained on it by behaviour cloning
(BC) for T steps imitates a teacher on the real states.  Bi-level:

    inner:  theta_{t+1} = theta_t - eta * grad_theta L_BC(theta_t; S_syn, A_syn),  t < T,  theta_0 fresh
    outer:  L(S_syn, A_syn) = mean_i w_i * mean_j (pi_{theta_T}(s_i)_j - a*_ij)^2

over real states ``s_i`` (normalised), with ``a*_i ~ pi*(s_i)`` from the teacher
and, for Av-PBC, ``w_i = q_scale * Q*(s_i, a*_i)`` (the teacher's critic; OBD's
``--q_weight``, ``beta_weight`` 0.02).  The outer gradient flows through the
whole unrolled inner loop.  SDW-OBD (arXiv 2512.06692) multiplies each real
state's term by ``1 / p_hat(s_i)`` (:func:`sdw_weights`).

Settings from the OBD code (its command-line defaults, which override its YAML):
N 256 initialised from random real pairs; states normalised with the dataset's
mean and std + 1e-3; the student is a Tanh-Gaussian MLP (3 hidden layers of
256, ReLU; every Linear orthogonal with gain sqrt(2), zero bias; log-std =
multiplier * raw + offset with the two scalars (1, -1) trained too, clamped to
[-20, 2]); BC loss = MSE of a *sampled* (reparameterised) action against the
synthetic action; inner SGD lr 0.1, no momentum, T = 100; outer SGD lr 0.1,
momentum 0.9, gradient-norm clipping at 2 over the synthetic set; each outer
loss averages over 10 batches of 256 real states; the student's action in the
outer loss is sampled as well.

Deviations from the OBD code, each deliberate:

* **Exact hypergradient.** OBD stores the weights of each inner step and, on the
  way back, recomputes each step's BC loss with *fresh* action noise (its
  ``bptt_efficient_backward``), so its hypergradient mixes two noise draws.  bex
  draws the inner noise once per outer step and differentiates the unrolled
  graph (``torch.autograd.grad`` with ``create_graph``), so the gradient is the
  exact derivative of the loss it reports (tested against finite differences).
* The teacher is a bex offline learner's checkpoint (CQL's stochastic actor by
  default; OBD uses Cal-QL); a deterministic actor gives ``a* = pi*(s)``.  Its
  ``Q*`` is the first critic of bex's twin critic (OBD: ``critic1``).  The
  teacher sees raw observations (bex learners do not normalise); the student
  sees normalised ones, as in OBD.
* SDW's density is a k-NN estimate (OBD's SDW paper's density model is not
  public in the summaries): see :func:`sdw_weights`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from bex.core import ConfigBase, param

WEIGHTINGS = ("none", "sdw")
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


@dataclass(frozen=True)
class DistillConfig(ConfigBase):
    """OBD / SDW-OBD settings; defaults are the OBD code's (command-line defaults)."""

    size: int = param(256, "N, synthetic (state, action) pairs", lo=1)
    inner_steps: int = param(100, "T, BC steps of the inner loop (OBD --bptt_inner_steps)", lo=1)
    inner_lr: float = param(0.1, "inner SGD learning rate (OBD --inner_lr; momentum 0)", lo=0.0, lo_open=True)
    outer_lr: float = param(0.1, "outer SGD learning rate on the synthetic set (OBD --synset_lr)", lo=0.0,
                            lo_open=True)
    outer_momentum: float = param(0.9, "outer SGD momentum (OBD --outer_momentum)", lo=0.0, hi=1.0, hi_open=True)
    clip_norm: float = param(2.0, "gradient-norm clip on the synthetic set (OBD max_norm)", lo=0.0, lo_open=True)
    batch_size: int = param(256, "real states per batch of the outer loss", lo=1)
    batches: int = param(10, "batches averaged per outer loss (OBD --test_batch_num)", lo=1)
    q_weight: bool = param(True, "Av-PBC: weight each real state by q_scale * Q*(s, a*) (OBD --q_weight)")
    q_scale: float = param(0.02, "the Q weight's factor (OBD --beta_weight)")
    hidden_dim: int = param(256, "student MLP width (3 hidden layers)", lo=1)
    weighting: str = param("none", "none: OBD; sdw: each real state's term times 1 / p_hat(s)", choices=WEIGHTINGS)
    sdw_k: int = param(5, "SDW: neighbours of the k-NN density", lo=1)
    sdw_clip_quantile: float = param(0.99, "SDW: weights above this quantile are clipped to it (then mean 1 "
                                     "again)", lo=0.0, hi=1.0, lo_open=True)
    norm_eps: float = param(1e-3, "added to the std of the state normalisation (OBD compute_mean_std)", lo=0.0)
    teacher: str = param("", "the teacher: a bex trial directory (its latest checkpoint), a checkpoint directory, "
                         "its state.pt, or a sweep directory (the trial on the same dataset selection and task; "
                         "CQL preferred, lowest seed)")
    baseline_bc_steps: int = param(5000, "final evaluation: gradient steps of the BC-on-the-whole-dataset "
                                   "baseline (bex's BC learner at the trial's preset; 0 = no such baseline)", lo=0)

    _PRESETS = {"small": {}, "paper": {}}  # the OBD code's settings in both (trials name a preset)


# --------------------------------------------------------------------------------------------- student
def init_student(obs_dim: int, action_dim: int, hidden_dim: int = 256,
                 generator: torch.Generator | None = None, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Fresh parameters of OBD's Tanh-Gaussian policy: Linear layers ``l0..l3`` (orthogonal, gain sqrt 2, zero
    bias) and the log-std scalars ``log_std_mult`` (1) and ``log_std_offset`` (-1)."""
    dims = [obs_dim, hidden_dim, hidden_dim, hidden_dim, 2 * action_dim]
    p = {}
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        w = torch.empty(b, a, dtype=dtype)
        _orthogonal_(w, math.sqrt(2.0), generator)
        p[f"l{i}.weight"], p[f"l{i}.bias"] = w, torch.zeros(b, dtype=dtype)
    p["log_std_mult"] = torch.tensor(1.0, dtype=dtype)
    p["log_std_offset"] = torch.tensor(-1.0, dtype=dtype)
    return p


def _orthogonal_(w: torch.Tensor, gain: float, generator: torch.Generator | None) -> None:
    """``nn.init.orthogonal_`` drawing from ``generator`` (QR of a Gaussian matrix, sign-corrected)."""
    rows, cols = w.shape
    flat = torch.randn(max(rows, cols), min(rows, cols), generator=generator, dtype=w.dtype)
    q, r = torch.linalg.qr(flat)
    q = q * torch.sign(torch.diagonal(r))
    w.copy_((q if rows >= cols else q.T)[:rows, :cols] * gain)


def student_dist(p: dict[str, torch.Tensor], s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, log_std)`` of the pre-tanh Gaussian."""
    h = s
    for i in range(3):
        h = F.relu(F.linear(h, p[f"l{i}.weight"], p[f"l{i}.bias"]))
    mean, raw = F.linear(h, p["l3.weight"], p["l3.bias"]).chunk(2, dim=-1)
    log_std = (p["log_std_mult"] * raw + p["log_std_offset"]).clamp(LOG_STD_MIN, LOG_STD_MAX)
    return mean, log_std


def student_action(p: dict[str, torch.Tensor], s: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    """``tanh(mean + std * eps)`` (reparameterised sample), or ``tanh(mean)`` when ``eps`` is None."""
    mean, log_std = student_dist(p, s)
    return torch.tanh(mean if eps is None else mean + log_std.exp() * eps)


def bc_loss(p: dict[str, torch.Tensor], s: torch.Tensor, a: torch.Tensor, eps: torch.Tensor | None) -> torch.Tensor:
    """OBD's inner loss: ``MSELoss(sampled action, a)`` (mean over pairs and action dimensions)."""
    return (student_action(p, s, eps) - a).pow(2).mean()


def inner_train(p: dict[str, torch.Tensor], s: torch.Tensor, a: torch.Tensor, lr: float,
                noise: torch.Tensor | list | None, steps: int, create_graph: bool = True) -> dict[str, torch.Tensor]:
    """``steps`` SGD steps of :func:`bc_loss` from ``p``; ``noise[t]`` is step t's action noise (None: the mean
    action).  With ``create_graph`` the result is differentiable in ``s``, ``a`` (and ``p``)."""
    names = list(p)
    for t in range(steps):
        eps = None if noise is None else noise[t]
        params = [p[n] if p[n].requires_grad else p[n].detach().requires_grad_() for n in names]
        grads = torch.autograd.grad(bc_loss(dict(zip(names, params)), s, a, eps), params, create_graph=create_graph)
        p = {n: (w - lr * g) if create_graph else (w - lr * g).detach() for n, w, g in zip(names, params, grads)}
    return p


def outer_loss(p: dict[str, torch.Tensor], s: torch.Tensor, a_star: torch.Tensor, w: torch.Tensor | None,
               eps: torch.Tensor | None) -> torch.Tensor:
    """OBD's ``weighted_mse_loss``: ``mean_ij w_i (pi(s_i)_j - a*_ij)^2`` (``w`` None: plain MSE)."""
    sq = (student_action(p, s, eps) - a_star).pow(2)
    return (sq if w is None else sq * w[:, None]).mean()


def hypergradient(s_syn: torch.Tensor, a_syn: torch.Tensor, p0: dict[str, torch.Tensor], cfg: DistillConfig,
                  inner_noise: torch.Tensor | None, real: list[tuple]) -> tuple[torch.Tensor, torch.Tensor,
                                                                               torch.Tensor]:
    """Outer loss (mean over ``real`` batches ``(s, a*, w, eps)``) after the unrolled inner loop, and its
    gradients with respect to the synthetic states and actions."""
    s_syn = s_syn.detach().requires_grad_()
    a_syn = a_syn.detach().requires_grad_()
    p_t = inner_train({k: v.detach().clone().requires_grad_() for k, v in p0.items()}, s_syn, a_syn, cfg.inner_lr,
                      inner_noise, cfg.inner_steps, create_graph=True)
    loss = sum(outer_loss(p_t, s, a, w, e) for s, a, w, e in real) / len(real)
    gs, ga = torch.autograd.grad(loss, (s_syn, a_syn))
    return loss.detach(), gs, ga


# --------------------------------------------------------------------------------------------- SDW
def sdw_weights(states: np.ndarray, k: int = 5, clip_quantile: float = 0.99) -> np.ndarray:
    """SDW weights ``w_i ∝ 1 / p_hat(s_i)`` with ``p_hat`` the k-NN density of ``states`` (already normalised).

    ``p_hat(s_i) = k / (n V_d r_k(s_i)^d)`` (:func:`bex.entropy.estimators.log_density_from_distances`; FAISS
    exact k-NN of :class:`bex.entropy.knn_index.KnnIndex`, the point itself excluded) — the density estimate
    of bex's entropy code.  The weights are normalised to mean 1, clipped at their ``clip_quantile`` quantile
    (in ``d`` dimensions ``r^d`` spans many orders of magnitude, and a handful of isolated states would
    otherwise carry the whole objective), and normalised to mean 1 again.  Computed in the log domain.
    """
    from bex.entropy.estimators import log_density_from_distances
    from bex.entropy.knn_index import KnnIndex

    x = np.ascontiguousarray(states, dtype=np.float32)
    n, d = x.shape
    if n < k + 1:
        raise ValueError(f"SDW needs more than k = {k} states, got {n}")
    dist, _ = KnnIndex(d, capacity=2).search_batch(x, k, include_self=False)
    r = np.maximum(dist[:, -1].astype(np.float64), 1e-12)
    log_w = -log_density_from_distances(r, n, d, k)
    w = np.exp(log_w - log_w.max())
    w /= w.mean()
    w = np.minimum(w, np.quantile(w, clip_quantile))
    return w / w.mean()


# --------------------------------------------------------------------------------------------- teacher
@dataclass
class Teacher:
    """A trained offline learner as OBD's teacher: ``a* ~ pi*(s)`` and ``Q*(s, a*)`` on raw observations."""

    learner: object
    name: str
    obs_dim: int
    action_dim: int

    @torch.no_grad()
    def act_and_value(self, obs: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        actor = self.learner.actor
        if hasattr(actor, "sample"):  # stochastic (CQL's Tanh-Gaussian, CRR ...): a reparameterised sample
            a, _ = actor.sample(obs, generator=generator)
        else:
            a = actor(obs)
        critic = getattr(self.learner, "critic", None)
        q = critic.q1(obs, a).reshape(-1) if critic is not None else torch.ones(len(obs))
        return a, q


# --------------------------------------------------------------------------------------------- distiller
class Distiller:
    """The state of one distillation: synthetic set, outer optimiser, real data and weights; :meth:`step` is one
    outer step.  States are held normalised (``(obs - mean) / std``); :meth:`synthetic` gives raw ones."""

    def __init__(self, obs: np.ndarray, action: np.ndarray, teacher: Teacher, cfg: DistillConfig, seed: int = 0):
        n = len(obs)
        if cfg.size > n:
            raise ValueError(f"DistillConfig.size={cfg.size} is out of range: allowed 1..{n} (the dataset's states)")
        if obs.shape[1] != teacher.obs_dim or action.shape[1] != teacher.action_dim:
            raise ValueError(f"the teacher ({teacher.name}) takes observations of {teacher.obs_dim} and actions of "
                             f"{teacher.action_dim} dimensions; the dataset has {obs.shape[1]} and {action.shape[1]}")
        self.cfg, self.teacher = cfg, teacher
        self.gen = torch.Generator().manual_seed(int(seed))
        self.mean = obs.mean(0).astype(np.float32)
        self.std = (obs.std(0) + cfg.norm_eps).astype(np.float32)
        self.raw = torch.as_tensor(np.asarray(obs, np.float32))
        self.z = (self.raw - torch.as_tensor(self.mean)) / torch.as_tensor(self.std)
        idx = torch.randperm(n, generator=self.gen)[:cfg.size]
        self.s_syn = self.z[idx].clone()
        self.a_syn = torch.as_tensor(np.asarray(action, np.float32))[idx].clone()
        self.density_w = None
        if cfg.weighting == "sdw":
            w = sdw_weights(self.z.numpy(), cfg.sdw_k, cfg.sdw_clip_quantile)
            self.density_w = torch.as_tensor(w, dtype=torch.float32)
        self.velocity = [torch.zeros_like(self.s_syn), torch.zeros_like(self.a_syn)]
        self.steps = 0

    def _real_batches(self) -> list[tuple]:
        c, out = self.cfg, []
        for _ in range(c.batches):
            i = torch.randint(0, len(self.z), (c.batch_size,), generator=self.gen)
            a_star, q = self.teacher.act_and_value(self.raw[i], self.gen)
            w = c.q_scale * q if c.q_weight else None
            if self.density_w is not None:
                w = self.density_w[i] if w is None else w * self.density_w[i]
            eps = torch.randn(c.batch_size, self.a_syn.shape[1], generator=self.gen)
            out.append((self.z[i], a_star, w, eps))
        return out

    def step(self) -> dict[str, float]:
        """One outer step: a fresh student, the unrolled inner loop, the hypergradient, clip, SGD with momentum."""
        c = self.cfg
        p0 = init_student(self.z.shape[1], self.a_syn.shape[1], c.hidden_dim, self.gen)
        noise = torch.randn(c.inner_steps, c.size, self.a_syn.shape[1], generator=self.gen)
        loss, gs, ga = hypergradient(self.s_syn, self.a_syn, p0, c, noise, self._real_batches())
        norm = torch.sqrt(gs.pow(2).sum() + ga.pow(2).sum())
        scale = min(1.0, c.clip_norm / (float(norm) + 1e-6))  # torch.nn.utils.clip_grad_norm_'s rule
        with torch.no_grad():
            for x, g, v in zip((self.s_syn, self.a_syn), (gs, ga), self.velocity):
                v.mul_(c.outer_momentum).add_(g * scale)  # torch.optim.SGD's momentum (dampening 0)
                x.sub_(c.outer_lr * v)
        self.steps += 1
        return {"distill/loss": float(loss), "distill/grad_norm": float(norm)}

    def synthetic(self) -> tuple[np.ndarray, np.ndarray]:
        """The synthetic set in raw observation units (float32) and its actions."""
        return (self.s_syn.numpy() * self.std + self.mean).astype(np.float32), self.a_syn.numpy().copy()

    def train_student(self, seed: int, steps: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
        """OBD's evaluation policy: a fresh student trained ``steps`` (default T) BC steps on the synthetic set;
        returns its deterministic policy on raw observations."""
        g = torch.Generator().manual_seed(int(seed))
        c = self.cfg
        p = init_student(self.z.shape[1], self.a_syn.shape[1], c.hidden_dim, g)
        t = steps or c.inner_steps
        noise = torch.randn(t, c.size, self.a_syn.shape[1], generator=g)
        p = inner_train(p, self.s_syn, self.a_syn, c.inner_lr, noise, t, create_graph=False)
        return student_policy(p, self.mean, self.std)

    def state_dict(self) -> dict:
        return {"s_syn": self.s_syn, "a_syn": self.a_syn, "velocity": list(self.velocity), "steps": self.steps,
                "rng": self.gen.get_state(), "config": self.cfg.to_dict()}

    def load_state_dict(self, sd: dict) -> None:
        self.s_syn.copy_(sd["s_syn"])
        self.a_syn.copy_(sd["a_syn"])
        for v, x in zip(self.velocity, sd["velocity"]):
            v.copy_(x)
        self.steps = int(sd["steps"])
        self.gen.set_state(sd["rng"])


def student_policy(p: dict[str, torch.Tensor], mean: np.ndarray, std: np.ndarray) -> Callable[[np.ndarray],
                                                                                                np.ndarray]:
    """The deterministic action ``tanh(mean)`` of a student on raw observations (normalised inside)."""
    p = {k: v.detach() for k, v in p.items()}

    @torch.no_grad()
    def act(obs: np.ndarray) -> np.ndarray:
        z = torch.as_tensor((np.asarray(obs, np.float32) - mean) / std)
        return student_action(p, z[None] if z.dim() == 1 else z).numpy().reshape(np.shape(obs)[:-1] + (-1,))

    return act
