"""DDPG pieces shared by the exploration agents (URLB ``agent/ddpg.py``, state observations).

* :class:`Actor`: trunk ``Linear(obs, hidden) -> LayerNorm -> Tanh``, head
  ``Linear(hidden, hidden) -> ReLU -> Linear(hidden, |A|)``, mean ``tanh(.)``.
  (URLB sets ``feature_dim = hidden_dim`` for states, so the 50-wide feature
  trunk only exists for pixels.)
* :class:`Critic`: trunk ``Linear(obs + |A|, hidden) -> LayerNorm -> Tanh``
  (the action enters at the start for states), two heads
  ``Linear(hidden, hidden) -> ReLU -> Linear(hidden, 1)`` sharing the trunk.
* Orthogonal weights, zero biases (URLB ``utils.weight_init``).
* :func:`truncated_normal_sample`: URLB's ``TruncatedNormal.sample`` — Gaussian
  noise of std ``stddev``, optionally clipped to ``[-clip, clip]``, added to the
  mean and clamped to ``[-1 + 1e-6, 1 - 1e-6]`` with a straight-through gradient.
* :func:`critic_target`: clipped double-Q target ``r + discount * min(Q1', Q2')``
  where ``discount`` already holds ``gamma**n * prod(env discounts)``.
* :func:`ddpg_update`: one critic step, one actor step (``-min(Q1, Q2)``, no
  delayed policy update, no target actor), then the Polyak update of the critic target.

Deliberate differences from URLB: all randomness (noise, seed-frame actions)
comes from one ``torch.Generator`` per agent so that ``state_dict`` captures
it; the actor's log-prob/entropy metrics are not computed.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from bex.core.nn import make_adam, orthogonal_init, soft_update

from .config import DDPGConfig


class Actor(nn.Module):
    """Deterministic mean policy ``tanh(head(trunk(obs)))`` in [-1, 1]^|A|."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_dim: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(obs_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.Tanh())
        self.policy = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True),
                                    nn.Linear(hidden_dim, action_dim))
        self.apply(orthogonal_init)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.policy(self.trunk(obs)))


class Critic(nn.Module):
    """Twin Q heads on a shared ``[obs, action]`` trunk."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_dim: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(obs_dim + action_dim, hidden_dim), nn.LayerNorm(hidden_dim),
                                   nn.Tanh())

        def head() -> nn.Sequential:
            return nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, 1))

        self.Q1 = head()
        self.Q2 = head()
        self.apply(orthogonal_init)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(torch.cat([obs, action], dim=-1))
        return self.Q1(h), self.Q2(h)


def truncated_normal_sample(mu: torch.Tensor, stddev: float, clip: float | None,
                            generator: torch.Generator | None = None, eps: float = 1e-6) -> torch.Tensor:
    """URLB ``TruncatedNormal(mu, stddev).sample(clip)`` (gradient flows to ``mu``)."""
    noise = torch.randn(mu.shape, dtype=mu.dtype, device=mu.device, generator=generator) * stddev
    if clip is not None:
        noise = noise.clamp(-clip, clip)
    x = mu + noise
    clamped = x.clamp(-1.0 + eps, 1.0 - eps)
    return x - x.detach() + clamped.detach()


def critic_target(reward: torch.Tensor, discount: torch.Tensor, target_q1: torch.Tensor,
                  target_q2: torch.Tensor) -> torch.Tensor:
    """Clipped double-Q target ``reward + discount * min(target_q1, target_q2)``.

    ``discount`` is the n-step bootstrap factor ``gamma**n * prod_i d_i`` from
    :meth:`actors.nstep.NStepReplay.sample`; all tensors have shape (B, 1).
    """
    return reward + discount * torch.min(target_q1, target_q2)


class DDPG:
    """Actor, twin critic, critic target and their optimisers (no Ray, no replay)."""

    def policy_state(self) -> dict:
        """Actor weights only (CPU copies), for env workers acting with a copy of the policy."""
        return {k: v.detach().cpu().clone() for k, v in self.actor.state_dict().items()}

    def load_policy_state(self, state) -> None:
        self.actor.load_state_dict(state)

    def __init__(self, obs_dim: int, action_dim: int, cfg: DDPGConfig, generator: torch.Generator):
        self.cfg = cfg
        self.obs_dim, self.action_dim = int(obs_dim), int(action_dim)
        self.device = torch.device(cfg.device)
        self.generator = generator
        self.actor = Actor(obs_dim, action_dim, cfg.hidden_dim).to(self.device)
        self.critic = Critic(obs_dim, action_dim, cfg.hidden_dim).to(self.device)
        self.critic_target = Critic(obs_dim, action_dim, cfg.hidden_dim).to(self.device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        for p in self.critic_target.parameters():
            p.requires_grad_(False)
        self.actor_opt = make_adam(self.actor.parameters(), cfg.lr)
        self.critic_opt = make_adam(self.critic.parameters(), cfg.lr)

    @torch.no_grad()
    def act(self, obs, step: int, eval_mode: bool = False) -> torch.Tensor:
        """URLB ``DDPGAgent.act``: the mean in eval mode, else mean + N(0, stddev) noise
        (not clipped), replaced by U[-1, 1] before ``num_seed_frames``.  Returns (|A|,)."""
        o = torch.as_tensor(obs, dtype=torch.float32, device=self.device).reshape(1, -1)
        mu = self.actor(o)
        if eval_mode:
            return mu[0]
        if step < self.cfg.num_seed_frames:
            u = torch.rand(mu.shape, generator=self.generator, device=self.device)
            return (2.0 * u - 1.0)[0]
        return truncated_normal_sample(mu, self.cfg.stddev, None, self.generator)[0]

    def state_dict(self) -> dict:
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "critic_target": self.critic_target.state_dict(), "actor_opt": self.actor_opt.state_dict(),
                "critic_opt": self.critic_opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])


def ddpg_update(ddpg: DDPG, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
                discount: torch.Tensor, next_obs: torch.Tensor) -> dict[str, float]:
    """One URLB DDPG update (critic, actor, critic target) on given rewards.

    ``obs``/``next_obs`` are detached inputs (s_t and s_{t+n}), ``reward`` and
    ``discount`` have shape (B, 1).  Returns ``critic/*`` and ``actor/*`` metrics.
    """
    cfg, g = ddpg.cfg, ddpg.generator
    obs, next_obs = obs.detach(), next_obs.detach()
    with torch.no_grad():
        next_action = truncated_normal_sample(ddpg.actor(next_obs), cfg.stddev, cfg.stddev_clip, g)
        tq1, tq2 = ddpg.critic_target(next_obs, next_action)
        target_q = critic_target(reward, discount, tq1, tq2)
    q1, q2 = ddpg.critic(obs, action)
    critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
    ddpg.critic_opt.zero_grad(set_to_none=True)
    critic_loss.backward()
    ddpg.critic_opt.step()

    pi = truncated_normal_sample(ddpg.actor(obs), cfg.stddev, cfg.stddev_clip, g)
    ddpg.critic.requires_grad_(False)  # the actor step needs no critic parameter gradients (URLB computes them)
    aq1, aq2 = ddpg.critic(obs, pi)
    actor_loss = -torch.min(aq1, aq2).mean()
    ddpg.actor_opt.zero_grad(set_to_none=True)
    actor_loss.backward()
    ddpg.critic.requires_grad_(True)
    ddpg.actor_opt.step()

    soft_update(ddpg.critic_target, ddpg.critic, cfg.critic_target_tau)
    return {"critic/loss": critic_loss.item(), "critic/target_q": target_q.mean().item(),
            "critic/q1": q1.mean().item(), "critic/q2": q2.mean().item(), "actor/loss": actor_loss.item()}


class DDPGAgent:
    """What every DDPG explorer agent (APT, RND, SMM) shares: its checkpoint and the policy it ships to workers.

    A subclass sets ``self.ddpg``, ``self.generator`` and ``self.num_updates``
    and lists in ``checkpoint_parts`` the attributes (modules, optimisers,
    running statistics) its checkpoint holds besides those.
    """

    checkpoint_parts: tuple[str, ...] = ("ddpg",)
    ddpg: DDPG
    generator: torch.Generator
    num_updates: int

    def state_dict(self) -> dict:
        sd = {name: getattr(self, name).state_dict() for name in self.checkpoint_parts}
        return dict(sd, generator=self.generator.get_state(), num_updates=self.num_updates)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        state = copy.deepcopy(dict(state))  # optimiser states would otherwise share tensors with the source
        for name in self.checkpoint_parts:
            getattr(self, name).load_state_dict(state[name])
        self.generator.set_state(state["generator"])
        self.num_updates = int(state["num_updates"])

    def policy_state(self) -> dict:
        return self.ddpg.policy_state()

    def load_policy_state(self, state) -> None:
        self.ddpg.load_policy_state(state)
