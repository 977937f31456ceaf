"""Seconds per OBD outer step: bex's distiller against the OBD code's loop structure, in one run.

    python bench/bench_distill.py [--quick] [--size 256] [--inner-steps 100] [--repeat 3]

Both sides do the same work per outer step at the OBD defaults (N 256 synthetic pairs, T 100 inner SGD
steps of a Tanh-Gaussian 3 x 256 student, 10 batches of 256 real states, walker widths: 24-D observations,
6-D actions): a fresh student, the inner loop, the Av-PBC outer loss on teacher (CQL actor and critic)
actions, the hypergradient on the synthetic set, clipping, one SGD-with-momentum step.

* bex: :meth:`bex.learners.distill.Distiller.step` (one unrolled graph, ``torch.autograd.grad`` through it).
* OBD's structure (``LeavesLei/OBD``, ``data_lib/data_bptt.py``), re-implemented here without wandb/D4RL:
  an ``nn.Module`` student trained with ``torch.optim.SGD``, a ``copy.deepcopy`` of the student saved
  before every inner step, then a reverse loop that recomputes each step's BC loss (with fresh noise,
  as OBD does), its gradient with ``create_graph`` and a Hessian-vector product with respect to the
  synthetic states, actions and weights (``higher``-style reverse-mode BPTT).

Prints the per-step times, the ratio, the projected time of OBD's 50K outer steps on this machine, and
the machine label.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import numpy as np
import torch
from torch import nn

from bex.learners import make_learner
from bex.learners.distill import LOG_STD_MAX, LOG_STD_MIN, DistillConfig, Distiller, Teacher

sys.path.insert(0, os.path.dirname(__file__))
from common import machine_label  # noqa: E402


class OBDPolicy(nn.Module):
    """OBD's ``TanhGaussianPolicy`` (network.py): 3 x 256 ReLU, orthogonal gain sqrt 2, Scalar log-std terms."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: int = 256):
        super().__init__()
        self.action_dim = action_dim
        self.base_network = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                          nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2 * action_dim))
        for m in self.base_network:
            if isinstance(m, nn.Linear):
                nn.init.orthogonal_(m.weight, gain=np.sqrt(2))
                nn.init.constant_(m.bias, 0.0)
        self.log_std_multiplier = nn.Parameter(torch.tensor(1.0))
        self.log_std_offset = nn.Parameter(torch.tensor(-1.0))

    def forward(self, obs):
        mean, log_std = torch.split(self.base_network(obs), self.action_dim, dim=-1)
        log_std = (self.log_std_multiplier * log_std + self.log_std_offset).clamp(LOG_STD_MIN, LOG_STD_MAX)
        return torch.tanh(mean + log_std.exp() * torch.randn_like(mean))  # rsample of the tanh-Gaussian


class OBDStep:
    """One outer step with the OBD code's structure (bptt_efficient_forward / _backward)."""

    def __init__(self, obs, action, teacher: Teacher, cfg: DistillConfig, seed: int = 0):
        torch.manual_seed(seed)
        self.cfg, self.teacher = cfg, teacher
        self.raw = torch.as_tensor(obs)
        mean, std = obs.mean(0), obs.std(0) + cfg.norm_eps
        self.z = (self.raw - torch.as_tensor(mean)) / torch.as_tensor(std)
        idx = torch.randperm(len(obs))[:cfg.size]
        self.syn_obs = nn.Parameter(self.z[idx].clone())
        self.syn_act = nn.Parameter(torch.as_tensor(action)[idx].clone())
        self.opt = torch.optim.SGD([self.syn_obs, self.syn_act], lr=cfg.outer_lr, momentum=cfg.outer_momentum)
        self.gen = torch.Generator().manual_seed(seed)

    @staticmethod
    def flatten(data):
        return torch.cat([e.flatten() for e in data])

    def step(self) -> float:
        c = self.cfg
        backbone = OBDPolicy(self.z.shape[1], self.syn_act.shape[1], c.hidden_dim)
        bopt = torch.optim.SGD(backbone.parameters(), lr=c.inner_lr, momentum=0.0)
        mse = nn.MSELoss()
        ws = []
        for _ in range(c.inner_steps):  # forward: save the student before each SGD step
            loss = mse(backbone(self.syn_obs.detach()), self.syn_act.detach())
            bopt.zero_grad()
            ws.append(copy.deepcopy(backbone))
            loss.backward()
            bopt.step()
        loss = 0
        for _ in range(c.batches):  # objective_loss with q_weight
            i = torch.randint(0, len(self.z), (c.batch_size,), generator=self.gen)
            a_star, q = self.teacher.act_and_value(self.raw[i], self.gen)
            w = (c.q_scale * q).expand(a_star.shape[1], -1).t()
            loss = loss + torch.mean(((backbone(self.z[i]) - a_star) ** 2) * w)
        loss = loss / c.batches
        dl_dw = list(torch.autograd.grad(loss, list(backbone.parameters())))
        obs, act = self.syn_obs.detach().requires_grad_(), self.syn_act.detach().requires_grad_()
        gobs, gact = torch.zeros_like(obs), torch.zeros_like(act)
        dl_dv = [0] * len(dl_dw)
        for bw in reversed(ws):  # backward: one HVP per inner step
            dl_dv = [v + c.inner_lr * -g for v, g in zip(dl_dv, dl_dw)]
            bw.zero_grad()
            params = list(bw.parameters())
            gw = torch.autograd.grad(mse(bw(obs), act), params, create_graph=True)
            hvp = torch.autograd.grad(self.flatten(gw), [obs, act, *params], grad_outputs=self.flatten(dl_dv))
            gobs += hvp[0]
            gact += hvp[1]
            for j in range(len(dl_dw)):
                dl_dw[j] = dl_dw[j] + hvp[j + 2]
            dl_dv = [v * 0.0 for v in dl_dv]  # inner momentum 0 (OBD default)
        self.syn_obs.grad, self.syn_act.grad = gobs, gact
        torch.nn.utils.clip_grad_norm_([self.syn_obs, self.syn_act], max_norm=c.clip_norm)
        self.opt.step()
        return float(loss.detach())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="T 20, 2 repeats (a smoke run)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--inner-steps", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.quick:
        args.inner_steps, args.repeat = 20, 2
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(20_000, 24)).astype(np.float32)
    action = rng.uniform(-1, 1, size=(20_000, 6)).astype(np.float32)
    teacher = Teacher(make_learner("cql", 24, 6, {"hidden_dim": 256}, seed=0), "cql", 24, 6)
    cfg = DistillConfig(size=args.size, inner_steps=args.inner_steps)
    sides = {"bex": Distiller(obs, action, teacher, cfg, seed=0), "OBD structure": OBDStep(obs, action, teacher, cfg)}
    times = {k: [] for k in sides}
    for name, side in sides.items():  # warm-up
        side.step()
    for _ in range(args.repeat):  # alternate, so load drifts hit both sides alike
        for name, side in sides.items():
            t0 = time.perf_counter()
            side.step()
            times[name].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"machine: {machine_label()}; torch {torch.__version__}, {args.threads} thread(s)")
    print(f"OBD outer step, N {args.size}, T {args.inner_steps}, 10 x 256 real states, walker widths "
          f"(median of {args.repeat}):")
    for k, v in med.items():
        print(f"  {k:<14} {v:7.3f} s/step   (runs: {', '.join(f'{x:.3f}' for x in times[k])})")
    print(f"ratio OBD structure / bex: {med['OBD structure'] / med['bex']:.2f}x")
    print(f"projected 50K outer steps here: bex {50_000 * med['bex'] / 3600:.1f} h, OBD structure "
          f"{50_000 * med['OBD structure'] / 3600:.1f} h (OBD paper: ~1.8 s/step, ~25 h on a V100)")


if __name__ == "__main__":
    main()
