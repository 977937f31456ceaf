"""Gradient steps/s of bex's learners, and bex against re-implementations of ExORL's TD3, CQL and CRR.

    python bench/bench_learners.py [--quick] [--learners td3:exorl,cql,...] [--configs paper,small]

For each config (``paper``: hidden 1024, batch 1024; ``small``: hidden 256,
batch 256) and learner, on walker's shapes (obs 24, action 6): updates/s, the
analytic matmul FLOPs of one update (forward + backward, counting only the
products autograd actually runs), the achieved FLOP/s as a fraction of the
float32 matmul peak measured in the same run (2048^3 products timed next to
each measurement), and bex / ExORL for each learner with an ExORL counterpart,
re-implemented below from denisyarats/exorl's ``agent/*.py`` as written there
(two ``nn.Sequential`` critics, separate default Adam optimisers, losses
computing every gradient ExORL's code computes, per-parameter soft updates,
``use_tb`` metrics via ``.item()``; CQL through torch's ``TransformedDistribution``
like ExORL's ``SquashedNormal``).  The like-for-like pairs are ``td3:exorl`` /
ExORL TD3 and ``cql:exorl`` / ExORL CQL (same algorithm), and ``crr`` / ExORL
CRR; ``td3`` (TD3-paper variant at policy delay 1, one actor step per update
as ExORL) and ``cql`` (the CQL paper's importance-sampled estimator, same
sampled actions) are shown against the same baselines for reference.

bex and ExORL are timed in alternating rounds and the ratio is the median of
the per-round ratios, so load from other processes hits both alike; the
fraction of peak of each round uses a 2048^3 matmul timed just before and
after it (the better of the two).  Batches are pre-built tensors (sampling is
not timed).  One torch thread by default: on the shared 2-core dev machine,
2 OpenMP threads competing with other processes ran 10-20x slower.  The
process applies bex's allocator setting (``learners.common.keep_freed_memory``)
before any timing, so the ExORL runs get it too.
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

from bex.learners import make_learner  # noqa: E402
from bex.learners.common import keep_freed_memory  # noqa: E402
from bex.replay.batch import Batch  # noqa: E402

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

    def update_critic(self, b: Batch, gamma: float) -> dict:
        """ExORL's ``update_critic`` of TD3, TD3+BC and CRR (the same method in each file)."""
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
        return metrics

    def update(self, b: Batch, gamma=0.99):
        metrics = self.update_critic(b, gamma)
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


class _ExTanhTransform(torch.distributions.transforms.Transform):
    """ExORL ``utils.TanhTransform`` (stable log-det-Jacobian, cache_size 1)."""

    domain = torch.distributions.constraints.real
    codomain = torch.distributions.constraints.interval(-1.0, 1.0)
    bijective = True
    sign = +1

    def __init__(self, cache_size=1):
        super().__init__(cache_size=cache_size)

    def __eq__(self, other):
        return isinstance(other, _ExTanhTransform)

    def _call(self, x):
        return x.tanh()

    def _inverse(self, y):
        return 0.5 * (y.log1p() - (-y).log1p())

    def log_abs_det_jacobian(self, x, y):
        return 2.0 * (np.log(2.0) - x - F.softplus(-2.0 * x))


class _ExSquashedNormal(torch.distributions.transformed_distribution.TransformedDistribution):
    """ExORL ``utils.SquashedNormal``: a *Normal* base (log-probs stay per dimension) through tanh."""

    def __init__(self, loc, scale):
        self.loc, self.scale = loc, scale
        super().__init__(torch.distributions.Normal(loc, scale), [_ExTanhTransform()])


class _ExCQLActor(nn.Module):
    def __init__(self, obs_dim, action_dim, hidden_dim):
        super().__init__()
        self.policy = nn.Sequential(nn.Linear(obs_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.Tanh(),
                                    nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True),
                                    nn.Linear(hidden_dim, 2 * action_dim))

    def forward(self, obs):
        mu, log_std = self.policy(obs).chunk(2, dim=-1)
        return _ExSquashedNormal(torch.tanh(mu), log_std.clamp(-10, 2).exp())  # ExORL's double tanh


def _ex_soft_update(net, target, tau):
    for p, tp in zip(net.parameters(), target.parameters()):
        tp.data.copy_(tau * p.data + (1 - tau) * tp.data)


class ExorlCQL:
    """ExORL's CQL update (``agent/cql.py``: alpha 0.01, n_samples 3, no Lagrange, use_tb metrics)."""

    def __init__(self, obs_dim, action_dim, hidden_dim, lr, alpha=0.01, n_samples=3, tau=0.01):
        self.actor = _ExCQLActor(obs_dim, action_dim, hidden_dim)
        self.critic = _ExCritic(obs_dim, action_dim, hidden_dim)
        self.critic_target = copy.deepcopy(self.critic)
        self.log_actor_alpha = torch.zeros(1, requires_grad=True)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=lr)
        self.actor_alpha_opt = torch.optim.Adam([self.log_actor_alpha], lr=lr)
        self.alpha, self.n_samples, self.tau, self.target_entropy = alpha, n_samples, tau, -action_dim

    def _repeated(self, obs, actions):
        n, B = actions.shape[0], obs.shape[0]
        q1, q2 = self.critic(obs.unsqueeze(0).repeat((n, 1, 1)).reshape(n * B, -1), actions.reshape(n * B, -1))
        return q1.reshape(n, B, 1), q2.reshape(n, B, 1)

    def update(self, b: Batch, gamma=0.99):
        metrics = {"batch_reward": b.reward.mean().item()}
        discount = b.discount * gamma
        with torch.no_grad():
            next_action = self.actor(b.next_obs).sample()
            tq1, tq2 = self.critic_target(b.next_obs, next_action)
            target_q = b.reward + discount * torch.min(tq1, tq2)
        q1, q2 = self.critic(b.obs, b.action)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        with torch.no_grad():
            rand = torch.FloatTensor(self.n_samples, q1.shape[0], b.action.shape[-1]).uniform_(-1, 1)
            sampled = self.actor(b.obs).sample(sample_shape=(self.n_samples,))
            next_sampled = self.actor(b.next_obs).sample(sample_shape=(self.n_samples,))
        r1, r2 = self._repeated(b.obs, rand)
        s1, s2 = self._repeated(b.obs, sampled)
        n1, n2 = self._repeated(b.obs, next_sampled)
        lse = (torch.logsumexp(torch.cat([r1, s1, n1, q1.unsqueeze(0)]), dim=0).mean()
               + torch.logsumexp(torch.cat([r2, s2, n2, q2.unsqueeze(0)]), dim=0).mean())
        penalty = lse - (q1 + q2).mean()
        critic_loss = critic_loss + self.alpha * penalty
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        metrics.update(critic_target_q=target_q.mean().item(), critic_q1=q1.mean().item(),
                       critic_q2=q2.mean().item(), critic_loss=critic_loss.item(), critic_cql=penalty.item(),
                       critic_cql_logsum=lse.item())
        # actor
        policy = self.actor(b.obs)
        a = policy.rsample()
        log_pi = policy.log_prob(a)
        alpha_loss = -(self.log_actor_alpha * (log_pi + self.target_entropy).detach()).mean()
        self.actor_alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.actor_alpha_opt.step()
        alpha = self.log_actor_alpha.exp().detach()
        q1, q2 = self.critic(b.obs, a)
        actor_loss = (alpha * log_pi - torch.min(q1, q2)).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        metrics.update(actor_loss=actor_loss.item(), actor_ent=-log_pi.mean().item(), actor_alpha=alpha.item(),
                       actor_alpha_loss=alpha_loss.item())
        _ex_soft_update(self.critic, self.critic_target, self.tau)
        return metrics


class ExorlCRR:
    """ExORL's CRR update (``agent/crr.py``, ``crr.yaml``: 10 value samples, indicator weight, std 0.2 clip 0.3)."""

    def __init__(self, obs_dim, action_dim, hidden_dim, lr, std=0.2, clip=0.3, tau=0.01, n_value=10):
        self.actor = _ExActor(obs_dim, action_dim, hidden_dim)
        self.critic = _ExCritic(obs_dim, action_dim, hidden_dim)
        self.critic_target = copy.deepcopy(self.critic)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=lr)
        self.std, self.clip, self.tau, self.n_value = std, clip, tau, n_value

    update_critic = ExorlTD3.update_critic

    def update(self, b: Batch, gamma=0.99):
        metrics = self.update_critic(b, gamma)
        with torch.no_grad():  # compute_value: einops repeat 'b x -> (b n) x'
            obses = b.obs.repeat_interleave(self.n_value, dim=0)
            vq1, vq2 = self.critic(obses, _truncated_sample(self.actor(obses), self.std, self.clip))
            v = torch.min(vq1, vq2).reshape(-1, self.n_value, 1).mean(dim=1)
            q1, q2 = self.critic(b.obs, b.action)
            w = torch.sign(torch.relu(torch.min(q1, q2) - v))
        mu = self.actor(b.obs)
        policy = torch.distributions.Normal(mu, torch.ones_like(mu) * self.std)
        log_prob = policy.log_prob(b.action).sum(-1, keepdim=True)
        actor_loss = -(log_prob * w).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        metrics["actor_loss"] = actor_loss.item()
        _ex_soft_update(self.critic, self.critic_target, self.tau)
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


def flops_per_update(name: str, B: int, H: int) -> float:
    """Analytic matmul FLOPs of one update of bench learner ``name`` (see :data:`BEX` and :data:`EXORL`)."""
    actor = [OBS, H, H, ACT]
    pa = [OBS, H, H, 2 * ACT]            # CQL's Gaussian head (mean and log-std)
    critic = [OBS + ACT, H, H, 1]        # one member of the twin critic
    value = [OBS, H, H, 1]               # IQL's V
    morse = [OBS + ACT, 256, 256, 256, ACT]
    fwd = lambda dims, rows=B: _trunk(rows, dims)  # noqa: E731
    train = lambda dims, rows=B: _trunk(rows, dims, dw=True, grad=True)  # noqa: E731
    through = lambda dims, rows=B: _trunk(rows, dims, dx_first=True, grad=True)  # noqa: E731  (no param grads)
    both = lambda dims, rows=B: _trunk(rows, dims, dw=True, dx_first=True, grad=True)  # noqa: E731  (ExORL)
    critic_step = fwd(actor) + 2 * fwd(critic) + 2 * train(critic)
    n, m = 3, 10  # CQL action samples per proposal, CRR value samples

    def many(rows, dw):  # TwinCritic.many: layer 1's state part once per state, its action part per row
        return 2 * B * OBS * H * (2 if dw else 1) + 2 * rows * ACT * H * (2 if dw else 1) \
            - 2 * rows * (OBS + ACT) * H * (2 if dw else 1)

    delay = 2 if name == "td3(d=2)" else 1
    if name == "exorl_td3":  # actor loss through min(Q1, Q2): both members, input *and* parameter grads
        return critic_step + train(actor) + 2 * both(critic)
    if name == "td3:exorl":  # same algorithm, critic parameters frozen in the actor step
        return critic_step + train(actor) + 2 * through(critic)
    if name in ("td3", "td3(d=2)", "td3_bc"):  # TD3 paper: Q1 at the deterministic action
        return critic_step + (train(actor) + through(critic)) / delay
    if name == "td3_bst":
        return critic_step + train(actor) + through(critic) + through(morse)
    if name == "bc":
        return train(actor)
    if name in ("cql", "cql:exorl"):  # one actor call on [s, s'], one critic call on (3n + 1) B rows
        rows = (3 * n + 1) * B
        return (fwd(pa, 2 * B) + 2 * fwd(critic) + 2 * (train(critic, rows) + many(rows, True)) + train(pa)
                + 2 * through(critic))
    if name == "exorl_cql":  # actor on s' twice and on s; Q1, Q2 of data and 3 x n B samples; critic dW in actor step
        return 3 * fwd(pa) + 2 * fwd(critic) + 2 * train(critic, (3 * n + 1) * B) + train(pa) + 2 * both(critic)
    if name == "crr":  # one actor call on B rows; Q(s, a) and the m value samples share one critic call
        return critic_step + fwd(actor) + 2 * (fwd(critic, (m + 1) * B) + many((m + 1) * B, False)) + train(actor)
    if name == "exorl_crr":  # the actor on the m-times repeated states; Q(s, a) in a separate call
        return critic_step + fwd(actor, m * B) + 2 * fwd(critic, m * B) + 2 * fwd(critic) + train(actor)
    if name in ("iql", "iql_bst"):
        v_step = train(value) + 2 * fwd(critic)
        c_step = fwd(value) + 2 * train(critic)
        a_step = (fwd(value) + train(actor) if name == "iql"  # reuses the value step's target min Q
                  else train(actor) + 2 * through(critic) + through(morse))
        return v_step + a_step + c_step
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


EXORL = {"exorl_td3": ExorlTD3, "exorl_cql": ExorlCQL, "exorl_crr": ExorlCRR}


#: bex learners timed: name -> (learner, overrides); ``X:exorl`` is learner X with ``variant="exorl"``.
BEX = {
    "td3": ("td3", {"policy_delay": 1}),  # TD3 paper variant at ExORL's one actor step per update
    "td3(d=2)": ("td3", {}),               # TD3 paper variant, its default delay
    "td3:exorl": ("td3", {"variant": "exorl"}),
    "td3_bc": ("td3_bc", {"policy_delay": 1}),
    "cql": ("cql", {}),
    "cql:exorl": ("cql", {"variant": "exorl"}),
    "crr": ("crr", {}),
    "td3_bst": ("td3_bst", {"policy_delay": 1, "morse_steps": 0}),  # pretraining is not part of the update rate
    "iql": ("iql", {}),
    "iql_bst": ("iql_bst", {"morse_steps": 0}),
    "bc": ("bc", {}),
}
#: bex learner -> its ExORL counterpart, for the ratio lines
PAIRS = {"td3:exorl": "exorl_td3", "td3": "exorl_td3", "cql:exorl": "exorl_cql", "cql": "exorl_cql",
         "crr": "exorl_crr"}


def _build(name, cfg):
    if name in EXORL:
        torch.manual_seed(0)
        return EXORL[name](OBS, ACT, cfg["hidden_dim"], cfg["lr"])
    lname, extra = BEX[name]
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
            fl = flops_per_update(n, B, H)
            p0 = matmul_rate()
            r = _rate(lrn, batches, steps)
            peak = max(p0, matmul_rate())
            rates[n].append(r)
            fracs[n].append(r * fl / peak)
            peaks.append(peak)
    out = {}
    for n in names:
        ratios = [r / e for r, e in zip(rates[n], rates[PAIRS[n]])] if PAIRS.get(n) in rates else []
        out[n] = (statistics.median(rates[n]), flops_per_update(n, B, H), statistics.median(fracs[n]),
                  statistics.median(ratios) if ratios else None)
    return out, peaks


def machine_label() -> str:
    return f"{common_label()} | torch {torch.__version__} | {torch.get_num_threads()} thread(s)"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and rounds")
    ap.add_argument("--learners", default=",".join(list(EXORL) + list(BEX)))
    ap.add_argument("--configs", default="paper,small")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: on shared cores 2 threads stall on each other)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.learners.split(",") if n.strip()]
    bad = [n for n in names if n not in EXORL and n not in BEX]
    if bad:
        ap.error(f"unknown learner(s) {bad}; allowed: {', '.join([*EXORL, *BEX])}")
    for n in list(names):  # every compared learner brings its ExORL counterpart
        if n in PAIRS and PAIRS[n] not in names:
            names.insert(0, PAIRS[n])
    keep_freed_memory()  # the allocator setting bex learners apply, here for the ExORL runs too
    print("machine:", machine_label())
    t0 = time.perf_counter()
    rounds = 2 if args.quick else 5
    for cfg_name in [c.strip() for c in args.configs.split(",")]:
        res, peaks = bench(names, cfg_name, args.quick, rounds)
        print(f"\n[{cfg_name}] hidden {CONFIGS[cfg_name]['hidden_dim']}, batch {CONFIGS[cfg_name]['batch_size']}, "
              f"obs {OBS}, action {ACT}; median of {rounds} rounds")
        print(f"float32 2048^3 matmul peak next to each timing: median {statistics.median(peaks) / 1e9:.1f}, "
              f"max {max(peaks) / 1e9:.1f} GFLOP/s")
        print(f"{'learner':<11} {'updates/s':>10} {'GFLOP/upd':>10} {'GFLOP/s':>8} {'of peak':>8} {'/ ExORL':>8}"
              "  (peak: adjacent matmul; / ExORL: median of the per-round ratios)")
        for n, (r, fl, frac, ratio) in res.items():
            rs = f"{ratio:>7.2f}x" if ratio is not None else f"{'':>8}"
            print(f"{n:<11} {r:>10.2f} {fl / 1e9:>10.2f} {r * fl / 1e9:>8.1f} {100 * frac:>7.1f}% {rs}")
        for n, ref in PAIRS.items():
            if n in res and ref in res:
                print(f"RATIO [{cfg_name}] bex {n} / ExORL {ref[6:]} updates/s: {res[n][3]:.2f}x "
                      f"(target >= {1.2 if cfg_name == 'small' else 1.0}x)")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
