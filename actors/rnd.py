"""Random Network Distillation on DDPG, as URLB implements it (``agent/rnd.py``).

Source: Burda et al., "Exploration by Random Network Distillation" (ICLR 2019,
arXiv 1810.12894); reference code ``rll-research/url_benchmark`` ``agent/rnd.py``.

* Observation normalisation: ``BatchNorm1d(obs, affine=False)`` (batch
  statistics in updates, running statistics otherwise), then clip to
  ``[-obs_clip, obs_clip]`` (5).
* Predictor and frozen random target: ``Linear(obs, hidden) -> ReLU ->
  Linear(hidden, hidden) -> ReLU -> Linear(hidden, rnd_rep_dim)``.
* Error ``e(s) = mean_j (target_j(s) - pred_j(s))**2``; loss ``mean e``; Adam lr 1e-4.
* Reward of a sampled transition ``rnd_scale * e(s_t) / (sqrt(var) + 1e-8)``
  with ``var`` the running variance of all errors seen (URLB ``utils.RMS``,
  here :class:`entropy.rewards.RunningMean`), computed after the RND step;
  then one DDPG step (:func:`actors.nets.ddpg_update`) on n-step samples, the
  single reward replacing the n-step sum as in URLB.

Deliberate differences from URLB: the ``intrinsic_rewards(states)`` of the
dataset column are a bex addition — the same formula with the
BatchNorm in eval mode (running statistics) and the running variance not
updated; the running variance is kept in float64.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn

from bex.core.nn import make_adam, orthogonal_init
from bex.entropy.rewards import RunningMean

from .config import RNDConfig
from .nets import DDPG, DDPGAgent, ddpg_update
from .nstep import NStepBatch, NStepReplay, ReplayExplorer


def _mlp(i: int, h: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, o))


class RND(nn.Module):
    """Normaliser, predictor and frozen target."""

    def __init__(self, obs_dim: int, hidden_dim: int, rep_dim: int, obs_clip: float = 5.0):
        super().__init__()
        self.obs_clip = obs_clip
        self.normalize_obs = nn.BatchNorm1d(obs_dim, affine=False)
        self.predictor = _mlp(obs_dim, hidden_dim, rep_dim)
        self.target = _mlp(obs_dim, hidden_dim, rep_dim)
        for p in self.target.parameters():
            p.requires_grad_(False)
        self.apply(orthogonal_init)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Per-sample prediction error (B, 1)."""
        x = self.normalize_obs(obs).clamp(-self.obs_clip, self.obs_clip)
        return torch.square(self.target(x).detach() - self.predictor(x)).mean(dim=-1, keepdim=True)


class RNDAgent(DDPGAgent):
    """DDPG + RND (no replay, no environment)."""

    checkpoint_parts = ("ddpg", "rnd", "rnd_opt", "reward_rms")

    def __init__(self, obs_dim: int, action_dim: int, config: RNDConfig | Mapping[str, Any] | None = None,
                 seed: int = 0):
        self.cfg = config if isinstance(config, RNDConfig) else RNDConfig.from_dict(config)
        self.device = torch.device(self.cfg.device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            self.ddpg = DDPG(obs_dim, action_dim, self.cfg, self.generator)
            self.rnd = RND(obs_dim, self.cfg.hidden_dim, self.cfg.rnd_rep_dim, self.cfg.obs_clip).to(self.device)
        self.rnd_opt = make_adam([p for p in self.rnd.parameters() if p.requires_grad], self.cfg.lr)
        self.reward_rms = RunningMean()
        self.num_updates = 0

    def act(self, obs: np.ndarray, step: int, eval_mode: bool = False) -> np.ndarray:
        return self.ddpg.act(obs, step, eval_mode).cpu().numpy().astype(np.float32)

    def _scale(self, err: torch.Tensor) -> torch.Tensor:
        return self.cfg.rnd_scale * err / (float(np.sqrt(self.reward_rms.var)) + 1e-8)

    def update(self, batch: NStepBatch) -> dict[str, float]:
        batch = batch.to(self.device)
        self.rnd.train()
        loss = self.rnd(batch.obs).mean()
        self.rnd_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.rnd_opt.step()
        with torch.no_grad():
            err = self.rnd(batch.obs)
            self.reward_rms.update(err.cpu().numpy())
            reward = self._scale(err)
        metrics = {"rnd/loss": loss.item(), "intr/reward_mean": reward.mean().item(),
                   "rnd/pred_error_mean": float(self.reward_rms.mean),
                   "rnd/pred_error_std": float(np.sqrt(self.reward_rms.var))}
        metrics.update(ddpg_update(self.ddpg, batch.obs, batch.action, reward, batch.discount, batch.next_obs))
        self.num_updates += 1
        return metrics

    @torch.no_grad()
    def step_rewards(self, obs: np.ndarray) -> np.ndarray:
        """The rewards (T,) of observations (T, O) with the running statistics, changing nothing."""
        self.rnd.eval()
        try:
            x = torch.as_tensor(np.asarray(obs, np.float32), device=self.device)
            err = self.rnd(x.reshape(-1, x.shape[-1]))
        finally:
            self.rnd.train()
        return self._scale(err).reshape(-1).cpu().numpy().astype(np.float32)



class RNDExplorer(ReplayExplorer):
    """RND as an :class:`actors.base.Explorer`; ``intrinsic_reward`` is :meth:`RNDAgent.step_reward`."""

    name = "rnd"

    def __init__(self, obs_dim: int, action_dim: int, config: RNDConfig | Mapping[str, Any] | None = None,
                 seed: int = 0):
        self.cfg = config if isinstance(config, RNDConfig) else RNDConfig.from_dict(config)
        self.agent = RNDAgent(obs_dim, action_dim, self.cfg, seed=seed)
        self.replay = NStepReplay(self.cfg.replay_capacity, obs_dim, action_dim)
        self._init_common(seed)

    def intrinsic_rewards(self, states: np.ndarray) -> np.ndarray | None:
        return self.agent.step_rewards(states)
