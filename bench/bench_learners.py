"""Gradient steps/s of bex's learners, and bex TD3 against a re-implementation of ExORL's TD3.

    python bench/bench_learners.py [--quick] [--learners td3,cql,...] [--configs paper,small]

For each config (``paper``: hidden 1024, batch 1024; ``small``: hidden 256,
batch 256) and learner, on walker's shapes (obs 24, action 6): updates/s, the
analytic matmul FLOPs of one update (forward + backward, counting only the
products autograd actually runs), the achieved FLOP/s as a fraction of the
float32 matmul peak measured in the same run (2048^3
products timed next to each measurement), and for TD3 the ratio bex / ExORL with ExORL's update
(denisyarats/exorl ``agent/td3.py``: two ``nn.Sequential`` critics, separate
default Adam optimisers, actor loss through ``min(Q1, Q2)`` of a noisy action
computing critic parameter gradients too, per-parameter soft update, metrics
via ``.item()``) re-implemented below.  bex TD3 runs with ``policy_delay=1``
for the comparison so both do one critic and one actor step per update
(``td3(d=2)`` is the default delay, shown for reference).  bex and ExORL are
timed in alternating rounds and the median round is reported, so load from
other processes hits both alike; the fraction of peak of each round uses a
2048^3 matmul timed just before and after it (the better of the two).  Batches are pre-built tensors (sampling is
not timed).  One torch thread by default: on the shared 2-core dev machine,
2 OpenMP threads competing with other processes ran 10-20x slower.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine_label as common_label  # noqa: E402

from learners import LEARNERS, make_learner  # noqa: E402
from replay.batch import Batch  # noqa: E402

OBS, ACT = 24, 6  # walker
CONFIGS = {"paper": {"hidden_dim": 1024, "batch_size": 1024, "lr": 1e-4},
           "small": {"hidden_dim": 256, "batch_size": 256, "lr": 3e-4}}


# --------------------------------------------------------------------------- ExORL TD3 (re-implemented)


class _ExActor(nn.Module):
    def __init__(self, obs_dim, action_dim, hidden_dim):
        super().__init__()
        self.policy = nn.Sequential(nn.Linear(obs_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.Tanh(),
                                    nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True),
                                    nn.Linear(hidden_dim, action_dim))

    def forward(self, obs):
        return torch.tanh(self.policy(obs))


def _ex_q(in_dim, hidden_dim):
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.Tanh(),
                         nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, 1))


class _ExCritic(nn.Module):
    def __init__(self, obs_dim, action_dim, hidden_dim):
        super().__init__()
        self.q1_net, self.q2_net = _ex_q(obs_dim + action_dim, hidden_dim), _ex_q(obs_dim + action_dim, hidden_dim)

    def forward(self, obs, action):
        x = torch.cat([obs, action], dim=-1)
        return self.q1_net(x), self.q2_net(x)


def _truncated_sample(mu, std, clip):
    """ExORL ``utils.TruncatedNormal.sample(clip)``: clipped noise, then clamp to (-1, 1)."""
    eps = (torch.randn_like(mu) * std).clamp(-clip, clip)
    return (mu + eps).clamp(-1.0 + 1e-6, 1.0 - 1e-6)


class ExorlTD3:
    """ExORL's TD3 update (stddev 0.2, clip 0.3, tau 0.01, use_tb metrics)."""

    def __init__(self, obs_dim, action_dim, hidden_dim, lr, std=0.2, clip=0.3, tau=0.01):
        self.actor = _ExActor(obs_dim, action_dim, hidden_dim)
        self.critic = _ExCritic(obs_dim, action_dim, hidden_dim)
        self.critic_target = copy.deepcopy(self.critic)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=lr)
        self.std, self.clip, self.tau = std, clip, tau

    def update(self, b: Batch, gamma=0.99):
        metrics = {"batch_reward": b.reward.mean().item()}
        discount = b.discount * gamma  # ExORL's replay discount already includes gamma
        with torch.no_grad():
            next_action = _truncated_sample(self.actor(b.next_obs), self.std, self.clip)
            tq1, tq2 = self.critic_target(b.next_obs, next_action)
            target_q = b.reward + discount * torch.min(tq1, tq2)
        q1, q2 = self.critic(b.obs, b.action)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        metrics.update(critic_target_q=target_q.mean().item(), critic_q1=q1.mean().item(),
                       critic_q2=q2.mean().item(), critic_loss=critic_loss.item())
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        # actor
        a = _truncated_sample(self.actor(b.obs), self.std, self.clip)
        q1, q2 = self.critic(b.obs, a)
        actor_loss = -torch.min(q1, q2).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        metrics["actor_loss"] = actor_loss.item()
        # ExORL utils.soft_update_params
        for p, tp in zip(self.critic.parameters(), self.critic_target.parameters()):
            tp.data.copy_(self.tau * p.data + (1 - self.tau) * tp.data)
        return metrics


# --------------------------------------------------------------------------- analytic FLOPs


def _trunk(B, dims, *, fwd=True, dw=False, dx_first=False, grad=False):
    """Matmul FLOPs of an MLP with layer widths ``dims`` on B rows.

    ``grad``: backward runs; then input grads of every layer but the first
    (plus the first if ``dx_first``) and weight grads if ``dw``.
    """
    total = 0
    for k, (i, o) in enumerate(zip(dims[:-1], dims[1:])):
        mm = 2 * B * i * o
        total += mm if fwd else 0
        if grad:
            total += mm if dw else 0
            total += mm if (k > 0 or dx_first) else 0
    return total


def flops_per_update(name: str, B: int, H: int, policy_delay: int = 1) -> float:
    actor = [OBS, H, H, ACT]
    critic = [OBS + ACT, H, H, 1]
    fwd = lambda dims, rows=B: _trunk(rows, dims)  # noqa: E731
    train = lambda dims, rows=B: _trunk(rows, dims, dw=True, grad=True)  # noqa: E731
    through = lambda dims, rows=B: _trunk(rows, dims, dx_first=True, grad=True)  # noqa: E731  (no param grads)
    critic_step = fwd(actor) + 2 * fwd(critic) + 2 * train(critic)
    if name == "exorl_td3":
        # actor loss through min(Q1, Q2): both critics, input grads *and* parameter grads
        actor_step = train(actor) + 2 * _trunk(B, critic, dw=True, dx_first=True, grad=True)
        return critic_step + actor_step
    if name in ("td3", "td3_bc"):
        return critic_step + (train(actor) + through(critic)) / policy_delay
    if name == "td3_bst":
        morse = [OBS + ACT, 256, 256, 256, ACT]
        return critic_step + (train(actor) + through(critic) + through(morse)) / policy_delay
    if name == "bc":
        return train(actor)
    if name == "cql":
        pa = [OBS, H, H, 2 * ACT]
        n = 3
        crit = fwd(pa) + 2 * fwd(critic) + fwd(pa, 2 * B) + 2 * train(critic, (3 * n + 1) * B)
        return crit + train(pa) + 2 * through(critic)
    if name == "crr":
        m = 10
        return critic_step + fwd(actor) + 2 * fwd(critic, (m + 1) * B) + train(actor)
    raise ValueError(name)


# --------------------------------------------------------------------------- timing


def matmul_rate(n: int = 2048, reps: int = 2) -> float:
    """Best FLOP/s of ``reps`` float32 n x n x n products (the matmul peak "right now")."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t))
    return best


def _batches(B, n=4, seed=0):
    rng = np.random.default_rng(seed)
    return [Batch.from_numpy(rng.standard_normal((B, OBS)), rng.uniform(-1, 1, (B, ACT)), rng.standard_normal(B),
                             rng.standard_normal((B, OBS)), np.ones(B)) for _ in range(n)]


def _rate(learner, batches, steps):
    t = time.perf_counter()
    for i in range(steps):
        learner.update(batches[i % len(batches)])
    return steps / (time.perf_counter() - t)


def _build(name, cfg):
    if name == "exorl_td3":
        torch.manual_seed(0)
        return ExorlTD3(OBS, ACT, cfg["hidden_dim"], cfg["lr"])
    lname, extra = name, {}
    if name == "td3(d=2)":
        lname = "td3"
    elif name in ("td3", "td3_bc", "td3_bst"):
        extra["policy_delay"] = 1
    if lname == "td3_bst":
        extra["morse_steps"] = 0  # pretraining is not part of the update rate
    return make_learner(lname, OBS, ACT, {**cfg, **extra}, seed=0)


def bench(names, cfg_name, quick, rounds):
    """Median updates/s per learner over alternating rounds; each timing is bracketed by
    matmul-peak measurements so the fraction of peak is taken under the same load."""
    cfg = CONFIGS[cfg_name]
    B, H = cfg["batch_size"], cfg["hidden_dim"]
    batches = _batches(B)
    paper = cfg_name == "paper"
    steps = 2 if paper else (20 if quick else 60)
    learners = {n: _build(n, cfg) for n in names}
    for n, lrn in learners.items():  # warm-up
        _rate(lrn, batches, 1 if paper else 10)
    matmul_rate()
    rates = {n: [] for n in names}
    fracs = {n: [] for n in names}
    peaks = []
    for _ in range(rounds):
        for n, lrn in learners.items():
            fl = flops_per_update("td3" if n == "td3(d=2)" else n, B, H, 2 if n == "td3(d=2)" else 1)
            p0 = matmul_rate()
            r = _rate(lrn, batches, steps)
            peak = max(p0, matmul_rate())
            rates[n].append(r)
            fracs[n].append(r * fl / peak)
            peaks.append(peak)
    out = {}
    for n in names:
        fl = flops_per_update("td3" if n == "td3(d=2)" else n, B, H, 2 if n == "td3(d=2)" else 1)
        out[n] = (statistics.median(rates[n]), fl, statistics.median(fracs[n]))
    return out, peaks


def machine_label() -> str:
    return f"{common_label()} | torch {torch.__version__} | {torch.get_num_threads()} thread(s)"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and rounds")
    ap.add_argument("--learners", default="exorl_td3,td3,td3(d=2),td3_bc,cql,crr,td3_bst,bc")
    ap.add_argument("--configs", default="paper,small")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: on shared cores 2 threads stall on each other)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.learners.split(",") if n.strip()]
    allowed = {"exorl_td3", "td3(d=2)", *LEARNERS}
    bad = [n for n in names if n not in allowed]
    if bad:
        ap.error(f"unknown learner(s) {bad}; allowed: {', '.join(sorted(allowed))}")
    if "td3" in names and "exorl_td3" not in names:
        names.insert(0, "exorl_td3")
    print("machine:", machine_label())
    t0 = time.perf_counter()
    rounds = 2 if args.quick else 5
    for cfg_name in [c.strip() for c in args.configs.split(",")]:
        res, peaks = bench(names, cfg_name, args.quick, rounds)
        print(f"\n[{cfg_name}] hidden {CONFIGS[cfg_name]['hidden_dim']}, batch {CONFIGS[cfg_name]['batch_size']}, "
              f"obs {OBS}, action {ACT}; median of {rounds} rounds")
        print(f"float32 2048^3 matmul peak next to each timing: median {statistics.median(peaks) / 1e9:.1f}, "
              f"max {max(peaks) / 1e9:.1f} GFLOP/s")
        print(f"{'learner':<11} {'updates/s':>10} {'GFLOP/upd':>10} {'GFLOP/s':>8} {'of peak':>8}  (peak: adjacent matmul)")
        for n, (r, fl, frac) in res.items():
            print(f"{n:<11} {r:>10.2f} {fl / 1e9:>10.2f} {r * fl / 1e9:>8.1f} {100 * frac:>7.1f}%")
        if "exorl_td3" in res and "td3" in res:
            print(f"bex td3 / ExORL td3 updates/s: {res['td3'][0] / res['exorl_td3'][0]:.2f}x")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
