"""Benchmark: APT/BE collection throughput vs the random ceiling and vs URLB's ICM-APT update (issue 4).

For the ``small`` and the ``paper`` explorer presets (walker, APT with the BE
reward, alpha 0.5), in one run, side by side:

1. **Random ceiling** — env steps/s of walker with uniform random actions in
   one process (``envs.Env``: bare ``env.step``, and the full ``run_episode``
   loop that also records the physics state): the physical limit of one core.
2. **Breakdown** — the plain in-process loop (``actors.make_explorer("apt")``
   driven by ``actors.run_episode``) past a reduced number of seed frames, with
   timers around ``env.step`` (+ physics state), ``explorer.act`` (policy),
   replay sampling, ``agent.update`` and, inside it, the injected k-NN reward
   callable, and the ``intrinsic_rewards`` query of the dataset column (one call per episode).
   Two k-NN backends: the in-process default ``BatchKnnReward`` (chunked
   ``torch.norm``) and the ``KnnService`` logic (``KnnServiceCore``, FAISS, the
   k-NN that ``cluster/`` runs) called in process (no Ray hop).
3. **Update vs URLB** — updates/s of ``APTAgent.update`` against a faithful
   single-process re-implementation of URLB's ICM-APT update
   (``rll-research/url_benchmark`` ``agent/icm_apt.py``, ``agent/ddpg.py``,
   ``utils.py``; re-written here, not copied): plain Adam optimisers,
   ``update_icm``, ``compute_intr_reward`` with ``PBE`` (the broadcast
   ``torch.norm(src[:, None, :] - tgt[None, :, :], dim=-1)`` over the whole
   batch, then ``topk``, average, ``log(1 + x)``), ``update_critic``,
   ``update_actor`` (``log_prob`` computed; the backward pass also fills the
   critic's gradients, as URLB's does), per-parameter ``soft_update_params``.
   Same sizes (preset), same replay content: the very same pre-sampled
   batches are fed to every variant, interleaved round by round so machine
   load hits them alike.  ``use_tb``-style metrics are off in URLB (its
   fastest setting); bex computes its metrics.
4. **End to end through Ray** — ``cluster.driver.run_collections`` with E = 1
   (``LearnedRunner``: URLB's loop in one actor, k-NN in the ``KnnService``)
   and E = 2 (learner + 2 env workers).  Reports env steps/s and updates/s
   (overall incl. actor start-up, and steady state between progress reports
   when there are several), and k-NN latency through Ray.

The paper preset on a CPU does one update in about 0.3-1 s: its breakdown and
end-to-end runs use only a handful of updates, and the 500K-step estimate is an
extrapolation (stated in the output).  Targets printed at the end:
``TARGET updates/s vs URLB (<preset>): <ratio>x (>= 3x: PASS|FAIL)`` and, on a
GPU, the 500K-step walker dataset in under 20 minutes.

    MUJOCO_GL=disable BEX_NODE_IP=127.0.0.1 python bench/bench_collect.py [--quick] [--config small|paper|both]
        [--threads N] [--no-ray]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine_label

DOMAIN, TASK = "walker", "stand"
OBJECTIVE, ALPHA = "be", 0.5
TARGET_RATIO = 3.0
TARGET_STEPS, TARGET_MIN = 500_000, 20.0


def load_avg() -> str:
    return "load avg " + " / ".join(f"{x:.2f}" for x in os.getloadavg()) + f" (1/5/15 min, {os.cpu_count()} cores)"


# =========================================================================== URLB re-implementation
# Written from the published semantics of url_benchmark (agent/ddpg.py, agent/icm_apt.py, utils.py),
# state observations, reward_free pretraining, encoder = identity.

def _urlb_weight_init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.orthogonal_(m.weight.data)
        if m.bias is not None:
            m.bias.data.fill_(0.0)


class _UActor(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, hidden: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(obs_dim, hidden), nn.LayerNorm(hidden), nn.Tanh())
        self.policy = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, action_dim))
        self.apply(_urlb_weight_init)

    def forward(self, obs, std: float) -> _UTruncNormal:
        mu = torch.tanh(self.policy(self.trunk(obs)))
        return _UTruncNormal(mu, torch.ones_like(mu) * std)


class _UCritic(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, hidden: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(obs_dim + action_dim, hidden), nn.LayerNorm(hidden), nn.Tanh())

        def q():
            return nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

        self.Q1, self.Q2 = q(), q()
        self.apply(_urlb_weight_init)

    def forward(self, obs, action):
        h = self.trunk(torch.cat([obs, action], dim=-1))
        return self.Q1(h), self.Q2(h)


class _UTruncNormal(torch.distributions.Normal):
    """URLB ``utils.TruncatedNormal``: clipped noise, clamp with a straight-through gradient."""

    def __init__(self, loc, scale, low=-1.0, high=1.0, eps=1e-6):
        super().__init__(loc, scale, validate_args=False)
        self.low, self.high, self.eps = low, high, eps

    def _clamp(self, x):
        c = torch.clamp(x, self.low + self.eps, self.high - self.eps)
        return x - x.detach() + c.detach()

    def sample(self, clip=None, sample_shape=None):
        shape = self._extended_shape(torch.Size() if sample_shape is None else sample_shape)
        noise = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device) * self.scale
        if clip is not None:
            noise = torch.clamp(noise, -clip, clip)
        return self._clamp(self.loc + noise)


class _UICM(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, hidden: int, rep: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(obs_dim, rep), nn.LayerNorm(rep), nn.Tanh())
        self.forward_net = nn.Sequential(nn.Linear(rep + action_dim, hidden), nn.ReLU(), nn.Linear(hidden, rep))
        self.backward_net = nn.Sequential(nn.Linear(2 * rep, hidden), nn.ReLU(), nn.Linear(hidden, action_dim),
                                          nn.Tanh())
        self.apply(_urlb_weight_init)

    def forward(self, obs, action, next_obs):
        e, e2 = self.trunk(obs), self.trunk(next_obs)
        fe = torch.norm(e2 - self.forward_net(torch.cat([e, action], -1)), dim=-1, p=2, keepdim=True)
        be = torch.norm(action - self.backward_net(torch.cat([e, e2], -1)), dim=-1, p=2, keepdim=True)
        return fe, be


def urlb_pbe(rep: torch.Tensor, k: int, clip: float = 0.0) -> torch.Tensor:
    """URLB ``utils.PBE.__call__`` (knn_avg=True, knn_rms=False): broadcast norm, topk, mean, log(1 + x)."""
    b1, b2 = rep.size(0), rep.size(0)
    sim = torch.norm(rep[:, None, :].view(b1, 1, -1) - rep[None, :, :].view(1, b2, -1), dim=-1, p=2)
    r, _ = sim.topk(k, dim=1, largest=False, sorted=True)
    r = r.reshape(-1, 1)
    r = torch.maximum(r - clip, torch.zeros_like(r)) if clip >= 0.0 else r
    r = r.reshape((b1, k)).mean(dim=1, keepdim=True)
    return torch.log(1.0 + r)


class URLBICMAPT:
    """URLB ``ICMAPTAgent.update`` (state obs, reward-free) on a given batch."""

    def __init__(self, obs_dim, action_dim, hidden, rep, lr=1e-4, tau=0.01, k=12, stddev=0.2, stddev_clip=0.3):
        self.actor = _UActor(obs_dim, action_dim, hidden)
        self.critic = _UCritic(obs_dim, action_dim, hidden)
        self.critic_target = _UCritic(obs_dim, action_dim, hidden)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.icm = _UICM(obs_dim, action_dim, hidden, rep)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=lr)
        self.icm_opt = torch.optim.Adam(self.icm.parameters(), lr=lr)
        self.tau, self.k, self.stddev, self.clip = tau, k, stddev, stddev_clip
        self.knn_s = 0.0

    def update_icm(self, obs, action, next_obs):
        fe, be = self.icm(obs, action, next_obs)
        loss = fe.mean() + be.mean()
        self.icm_opt.zero_grad()
        loss.backward()
        self.icm_opt.step()

    def compute_intr_reward(self, obs):
        rep = self.icm.trunk(obs)
        t0 = time.perf_counter()
        r = urlb_pbe(rep, self.k).reshape(-1, 1)
        self.knn_s += time.perf_counter() - t0
        return r

    def update_critic(self, obs, action, reward, discount, next_obs):
        with torch.no_grad():
            next_action = self.actor(next_obs, self.stddev).sample(clip=self.clip)
            tq1, tq2 = self.critic_target(next_obs, next_action)
            target_q = reward + discount * torch.min(tq1, tq2)
        q1, q2 = self.critic(obs, action)
        loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()

    def update_actor(self, obs):
        dist = self.actor(obs, self.stddev)
        action = dist.sample(clip=self.clip)
        dist.log_prob(action).sum(-1, keepdim=True)  # computed outside URLB's metrics guard
        q1, q2 = self.critic(obs, action)
        loss = -torch.min(q1, q2).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()  # fills the critic's .grad too (cleared by the next critic step), as URLB
        self.actor_opt.step()

    def update(self, obs, action, discount, next_obs):
        self.update_icm(obs, action, next_obs)
        with torch.no_grad():
            reward = self.compute_intr_reward(obs)
        self.update_critic(obs.detach(), action, reward, discount, next_obs.detach())
        self.update_actor(obs.detach())
        for p, tp in zip(self.critic.parameters(), self.critic_target.parameters()):
            tp.data.copy_(self.tau * p.data + (1 - self.tau) * tp.data)


# =========================================================================== timing helpers

class Timed:
    """Wrap a callable and accumulate its wall time and calls (``query`` passes through)."""

    def __init__(self, fn):
        self.fn, self.s, self.c, self.n = fn, 0.0, 0.0, 0
        if hasattr(fn, "query"):
            self.query = fn.query

    def __call__(self, *a, **kw):
        t0, c0 = time.perf_counter(), time.thread_time()
        out = self.fn(*a, **kw)
        self.s += time.perf_counter() - t0
        self.c += time.thread_time() - c0
        self.n += 1
        return out


class ServiceCoreKnn:
    """The KnnService reward path (FAISS batch mode) in process: ``KnnServiceCore.rewards`` without Ray."""

    def __init__(self, acfg, threads: int):
        from bex.actors import BatchKnnReward
        from bex.cluster.knn_service import KnnServiceCore

        self.core = KnnServiceCore(acfg.rep_dim, capacity=1024, num_threads=threads, use_gpu=False)
        self.rc, self.mode = acfg.reward_config(), acfg.knn_mode
        self._local = BatchKnnReward(acfg)

    def __call__(self, rep):
        r = self.core.rewards("bench", rep.detach().cpu().numpy(), self.rc, mode=self.mode)
        self._local._ref = rep.detach()
        return torch.as_tensor(np.array(r), dtype=torch.float32)

    def query(self, rep_q):
        return self._local.query(rep_q)


def apt_settings(preset: str, seed_frames: int) -> dict:
    return {"preset": preset, "objective": OBJECTIVE, "alpha": ALPHA, "num_seed_frames": seed_frames}


# =========================================================================== 1. random ceiling

def random_ceiling(steps: int) -> dict:
    from bex.actors import RandomExplorer, run_episode
    from bex.envs import Env

    env = Env(DOMAIN, TASK, seed=0)
    rng = np.random.default_rng(0)
    a_dim = env.spec.action_dim
    env.reset()
    t0, n = time.perf_counter(), 0
    while n < steps:
        s = env.step(rng.uniform(-1, 1, a_dim).astype(np.float32))
        n += 1
        if s.last:
            env.reset()
    bare = n / (time.perf_counter() - t0)
    ex = RandomExplorer(a_dim, seed=0)
    t0, n = time.perf_counter(), 0
    while n < steps:
        n += len(run_episode(env, ex, f"r{n}", max_steps=min(1000, steps - n)))
    loop = n / (time.perf_counter() - t0)
    return {"bare": bare, "loop": loop}


# =========================================================================== 2. breakdown

def breakdown(preset: str, seed_frames: int, updates: int, knn_backend: str, threads: int) -> dict:
    """In-process loop past ``seed_frames`` for ``updates`` updates; returns per-part times (s per env step)."""
    from bex.actors import APTConfig, make_explorer, run_episode
    from bex.envs import Env

    env = Env(DOMAIN, TASK, seed=0)
    settings = apt_settings(preset, seed_frames)
    acfg = APTConfig.from_dict(settings)
    knn = ServiceCoreKnn(acfg, threads) if knn_backend == "service" else None
    ex = make_explorer("apt", env.spec.obs_dim, env.spec.action_dim, settings, seed=0, knn_reward=knn)
    # seed frames first (untimed), then the measured phase
    step = 0
    while step < seed_frames:
        step += len(run_episode(env, ex, f"s{step}", step0=step, max_steps=seed_frames - step))
    t_knn = Timed(ex.agent.knn_reward)
    ex.agent.knn_reward = t_knn
    t_upd = Timed(ex.agent.update)
    ex.agent.update = t_upd
    t_act, t_obs, t_intr = Timed(ex.act), Timed(ex.observe), Timed(ex.intrinsic_rewards)
    ex.act, ex.observe, ex.intrinsic_rewards = t_act, t_obs, t_intr
    env_step, env_phys = env.step, env.physics_state
    t_env, t_phys = Timed(env_step), Timed(env_phys)
    env.step, env.physics_state = t_env, t_phys
    n_steps = updates * acfg.update_every_steps
    t0, c0, done = time.perf_counter(), time.thread_time(), 0
    while done < n_steps:
        done += len(run_episode(env, ex, f"m{step}", step0=step + done, max_steps=n_steps - done))
    wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    env.step, env.physics_state = env_step, env_phys
    steps = done
    res = {
        "steps": steps, "updates": t_upd.n, "wall": wall, "cpu": cpu, "env_steps_per_s": steps / wall,
        "cpu_env_steps_per_s": steps / cpu, "updates_per_s": t_upd.n / wall, "cpu_updates_per_s": t_upd.n / cpu,
        "env": (t_env.c + t_phys.c) / steps, "policy": t_act.c / steps,
        "replay": (t_obs.c - t_upd.c) / steps, "update": (t_upd.c - t_knn.c) / steps, "knn": t_knn.c / steps,
        "intr_query": t_intr.c / steps, "update_ms": 1000 * t_upd.c / max(t_upd.n, 1),
        "knn_ms": 1000 * t_knn.c / max(t_knn.n, 1), "act_ms": 1000 * t_act.c / max(t_act.n, 1),
        "env_ms": 1000 * (t_env.c + t_phys.c) / max(t_env.n, 1),
    }
    res["other"] = cpu / steps - sum(res[k] for k in ("env", "policy", "replay", "update", "knn", "intr_query"))
    return res, ex


# =========================================================================== 3. update vs URLB

def update_vs_urlb(preset: str, ex, rounds: int, threads: int) -> dict:
    """Median seconds per update of bex (in-process k-NN, service k-NN) and URLB on the same batches."""
    from bex.actors import APTAgent, APTConfig

    cfg = ex.cfg
    obs_dim, a_dim = ex.agent.obs_dim, ex.agent.action_dim
    rng = np.random.default_rng(1)
    batches = [ex.replay.sample(cfg.batch_size, cfg.nstep, cfg.discount, rng) for _ in range(rounds + 1)]
    acfg = APTConfig.from_dict(apt_settings(preset, cfg.num_seed_frames))
    variants = {
        "bex (BatchKnnReward)": APTAgent(obs_dim, a_dim, acfg, seed=0),
        "bex (KnnService core)": APTAgent(obs_dim, a_dim, acfg, seed=0, knn_reward=ServiceCoreKnn(acfg, threads)),
    }
    torch.manual_seed(0)
    urlb = URLBICMAPT(obs_dim, a_dim, cfg.hidden_dim, cfg.rep_dim, lr=cfg.lr, tau=cfg.critic_target_tau, k=cfg.k,
                      stddev=cfg.stddev, stddev_clip=cfg.stddev_clip)
    fns = {name: (lambda b, a=a: a.update(b)) for name, a in variants.items()}
    fns["URLB ICM-APT"] = lambda b: urlb.update(b.obs, b.action, b.discount, b.next_obs)
    times: dict[str, list[float]] = {n: [] for n in fns}
    cpus: dict[str, list[float]] = {n: [] for n in fns}
    for i, b in enumerate(batches):
        if i == 1:
            urlb.knn_s = 0.0  # round 0 is the warm-up (first allocation of the broadcast tensor)
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), time.thread_time()
            fn(b)
            if i > 0:  # round 0 is the warm-up
                times[name].append(time.perf_counter() - t0)
                cpus[name].append(time.thread_time() - c0)
    urlb_knn_ms = 1000 * urlb.knn_s / rounds
    return {"median_s": {n: statistics.median(t) for n, t in times.items()},
            "cpu_s": {n: statistics.median(t) for n, t in cpus.items()}, "rounds": rounds, "urlb_knn_ms": urlb_knn_ms}


# =========================================================================== 4. end to end through Ray

def end_to_end(preset: str, actors: int, seed_frames: int, steps: int, out: Path) -> dict:
    from bex.actors.collect import CollectConfig
    from bex.cluster.driver import run_collections

    samples: list[tuple[float, int, float | None]] = []
    t_start = time.perf_counter()

    def progress(event):
        r = event.rows[0]
        samples.append((time.perf_counter(), r["steps"], r["knn_ms"]))

    cfg = CollectConfig(out=str(out / f"{preset}-E{actors}"), domain=DOMAIN, explorer="apt", objective=OBJECTIVE,
                        param=ALPHA, steps=steps, actors=actors, seed=0, preset=preset, episodes_per_chunk=1,
                        explorer_config={"num_seed_frames": seed_frames})
    s = run_collections([cfg], progress=progress)[0]
    wall = time.perf_counter() - t_start
    steady = None
    pts = [(t, n) for t, n, _ in samples if n > 0]
    if actors == 1 and len(pts) >= 2 and pts[-1][1] > pts[0][1] and pts[-1][0] > pts[0][0]:
        # E = 1 reports once per committed 1000-step chunk (all after the seed frames); with E > 1 several
        # episodes are committed together, so no steady-state figure is derived from them
        steady = (pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0])
    knn_ms = next((k for _, _, k in reversed(samples) if k is not None), None)
    post = max(s["steps"] - seed_frames, 1)
    return {"steps": s["steps"], "wall": wall, "env_steps_per_s": s["steps"] / wall, "updates": s["updates"],
            "updates_per_s": s["updates"] / wall, "steady_env_steps_per_s": steady, "knn_ms": knn_ms,
            "summary_env_steps_per_s": s["env_steps_per_s"], "post_seed_steps": post}


# =========================================================================== main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and updates")
    ap.add_argument("--config", choices=("small", "paper", "both"), default="both")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch / FAISS threads (default 1: what a Ray actor with num_cpus=1 gets)")
    ap.add_argument("--no-ray", action="store_true", help="skip the end-to-end Ray runs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("MUJOCO_GL", "disable")
    presets = ("small", "paper") if args.config == "both" else (args.config,)
    q = args.quick
    plan = {  # seed frames, measured updates (breakdown), URLB rounds, e2e steps, e2e seed frames
        "small": {"seed": 500, "updates": 100 if q else 400, "rounds": 10 if q else 30,
                  "e2e_seed": 500, "e2e_steps": 2000 if q else 3000},
        "paper": {"seed": 1100, "updates": 2 if q else 4, "rounds": 2 if q else 3,
                  "e2e_seed": 100, "e2e_steps": 106 if q else 120},
    }
    gpu = torch.cuda.is_available()
    print(f"bench_collect: {DOMAIN}/{TASK}, APT objective={OBJECTIVE} alpha={ALPHA}, presets {presets}"
          f"{' (quick)' if q else ''}")
    print(f"machine: {machine_label()}; torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print(f"start: {load_avg()}")

    ceil = random_ceiling(2000 if q else 5000)
    print(f"\n[1] random-action ceiling (one process): bare env.step {ceil['bare']:.0f} steps/s; "
          f"run_episode loop (obs + physics state recorded) {ceil['loop']:.0f} steps/s")

    results = {}
    for preset in presets:
        p = plan[preset]
        print(f"\n=== preset {preset} === ({load_avg()})")
        rows = {}
        for backend in ("inproc", "service"):
            res, ex = breakdown(preset, p["seed"], p["updates"], backend, args.threads)
            rows[backend] = res
            if backend == "inproc":
                ex_keep = ex
        print(f"[2] in-process loop breakdown after {p['seed']} seed frames ({rows['inproc']['updates']} updates), "
              f"thread CPU ms per env step (update every {ex_keep.cfg.update_every_steps} steps):")
        print(f"    {'k-NN backend':<24} {'env':>7} {'policy':>7} {'replay':>7} {'update':>8} {'k-NN':>8} "
              f"{'intr q':>7} {'other':>6} | {'env st/s cpu':>12} {'wall':>6} {'upd/s cpu':>9} {'ms/upd':>8} "
              f"{'knn ms':>7}")
        for backend, label in (("inproc", "BatchKnnReward (torch)"), ("service", "KnnServiceCore (FAISS)")):
            r = rows[backend]
            print(f"    {label:<24} " + " ".join(f"{1000 * r[k]:>7.3f}" if k not in ("update", "knn") else
                                                 f"{1000 * r[k]:>8.3f}" for k in
                                                 ("env", "policy", "replay", "update", "knn", "intr_query", "other"))
                  + f" | {r['cpu_env_steps_per_s']:>12.1f} {r['env_steps_per_s']:>6.1f} {r['cpu_updates_per_s']:>9.2f} "
                    f"{r['update_ms']:>8.1f} {r['knn_ms']:>7.2f}")
        print(f"    (update = agent.update minus its k-NN call; replay = n-step sampling; intr q = per-step "
              f"reward_intrinsic query; env incl. physics_state; 'wall' = env steps/s on the wall clock "
              f"under the current load; random ceiling {ceil['loop']:.0f} steps/s)")

        u = update_vs_urlb(preset, ex_keep, p["rounds"], args.threads)
        med, cpu = u["median_s"], u["cpu_s"]
        urlb_s, urlb_c = med["URLB ICM-APT"], cpu["URLB ICM-APT"]
        print(f"[3] update vs URLB ICM-APT, same {u['rounds']} batches (B={ex_keep.cfg.batch_size}, "
              f"hidden={ex_keep.cfg.hidden_dim}, rep={ex_keep.cfg.rep_dim}), interleaved, median per update:")
        print(f"    {'variant':<24} {'CPU ms':>9} {'upd/s':>7} {'vs URLB':>8} | "
              f"{'wall ms':>9} {'upd/s':>7} {'vs URLB':>8}")
        for name in med:
            c, w = cpu[name], med[name]
            print(f"    {name:<24} {1000 * c:>9.1f} {1 / c:>7.2f} {urlb_c / c:>7.2f}x | {1000 * w:>9.1f} "
                  f"{1 / w:>7.2f} {urlb_s / w:>7.2f}x")
        print(f"    URLB broadcast-norm PBE alone: {u['urlb_knn_ms']:.1f} ms/update (wall, mean after warm-up)")
        # URLB's whole single-process loop: per update, update_every_steps env steps + acts + one update
        k_env = ex_keep.cfg.update_every_steps
        per_step_env = rows["inproc"]["env"] + rows["inproc"]["policy"]
        urlb_loop_ups = 1 / (urlb_c + k_env * per_step_env)
        print(f"    URLB single-process loop estimate (CPU time): {urlb_loop_ups:.2f} updates/s, "
              f"{k_env * urlb_loop_ups:.1f} env steps/s (its update + {k_env} x (env step + act) measured above)")
        results[preset] = {"rows": rows, "upd": u, "urlb_loop_ups": urlb_loop_ups, "e2e": {}}

        if not args.no_ray:
            from bex.cluster.runtime import init_ray

            init_ray()  # once, before the timed runs (Ray start-up is not collection time)
            with tempfile.TemporaryDirectory(prefix="bex-bench-collect-") as tmp:
                for E in (1, 2):
                    e = end_to_end(preset, E, p["e2e_seed"], p["e2e_steps"], Path(tmp))
                    results[preset]["e2e"][E] = e
            print(f"[4] end to end through Ray (run_collections, {p['e2e_steps']} steps, {p['e2e_seed']} seed frames, "
                  f"k-NN in the KnnService):")
            print(f"    {'E':>2} {'env st/s':>9} {'steady':>8} {'updates':>8} {'upd/s':>7} {'knn ms':>7} {'wall s':>7}"
                  f" {'vs URLB loop (upd/s)':>21}")
            for E, e in results[preset]["e2e"].items():
                st = "-" if e["steady_env_steps_per_s"] is None else f"{e['steady_env_steps_per_s']:.1f}"
                kn = "-" if e["knn_ms"] is None else f"{e['knn_ms']:.1f}"
                print(f"    {E:>2} {e['env_steps_per_s']:>9.1f} {st:>8} {e['updates']:>8} {e['updates_per_s']:>7.2f} "
                      f"{kn:>7} {e['wall']:>7.1f} {e['updates_per_s'] / urlb_loop_ups:>20.2f}x")
            print("    (env st/s and upd/s over the whole call incl. actor start-up and seed frames; "
                  "steady (E = 1 only) = between the first and last committed chunk)")
        print(f"end of preset {preset}: {load_avg()}")

    print("\n=== targets ===")
    for preset, r in results.items():
        med, cpu = r["upd"]["median_s"], r["upd"]["cpu_s"]
        for name in ("bex (KnnService core)", "bex (BatchKnnReward)"):
            ratio = cpu["URLB ICM-APT"] / cpu[name]
            print(f"TARGET updates/s vs URLB ({preset}, {name}): {ratio:.2f}x "
                  f"(>= {TARGET_RATIO:g}x: {'PASS' if ratio >= TARGET_RATIO else 'FAIL'}) "
                  f"[CPU time; wall clock {med['URLB ICM-APT'] / med[name]:.2f}x]")
    if "paper" in results:
        r = results["paper"]
        best_upd_s = min(r["upd"]["cpu_s"][n] for n in ("bex (KnnService core)", "bex (BatchKnnReward)"))
        row = r["rows"]["service"]
        per_step = best_upd_s / 2 + row["env"] + row["policy"] + row["replay"] + row["intr_query"]
        est_min = TARGET_STEPS * per_step / 60
        where = "GPU" if gpu else "CPU (no GPU here: the target is for one GPU)"
        print(f"TARGET 500K walker steps, paper preset, < {TARGET_MIN:g} min on one GPU: "
              f"{'measured on ' + where}; extrapolated E=1 in-process {est_min:.0f} min "
              f"({1000 * per_step:.1f} ms/env step) -> "
              + ("PASS" if gpu and est_min < TARGET_MIN else ("FAIL" if gpu else "NOT MEASURED (no GPU)")))
    print(f"end: {load_avg()}")


if __name__ == "__main__":
    main()
