"""State Marginal Matching on DDPG with a one-hot skill, as URLB implements it (``agent/smm.py``).

Source: Lee et al., "Efficient Exploration via State Marginal Matching"
(arXiv 1906.05274, 2019); reference code ``rll-research/url_benchmark``
``agent/smm.py`` (itself a re-implementation of ``RLAgent/state-marginal-matching``).

* A skill ``z`` (one-hot of size ``z_dim`` = 4) is drawn uniformly at the start of
  every episode and appended to the observation of the actor, the critic and
  the replay (``[s, z]``).
* Density model: a VAE over ``[s, z]`` (encoder ``Linear(.,150) -> ReLU ->
  Linear(150,150) -> ReLU``, Gaussian code of size 128, decoder back to
  ``[s, z]``), loss ``vae_beta * KL + mean squared error``, Adam lr 1e-2.
  ``h_s_z`` is the per-sample summed squared reconstruction error
  (~ ``-log q(s | z)`` up to constants).
* Skill discriminator ``q(z | s)``: ``Linear(obs, hidden) -> ReLU ->
  Linear(hidden, hidden) -> ReLU -> Linear(hidden, z_dim)``, cross entropy
  ``h_z_s`` (~ ``-log q(z | s)``), Adam lr 1e-3.
* Reward of a sampled transition:
  ``state_ent_coef * h_s_z + latent_ent_coef * log(z_dim) + latent_cond_ent_coef * h_z_s``.
  The ``log p*(s)`` term of SMM is dropped (uniform target), as in URLB.
  Then one DDPG step on ``[s, z]`` (:func:`actors.nets.ddpg_update`); the
  single reward replaces the n-step sum as in URLB.

Deliberate differences from URLB: the skill is not part of URLB's
fine-tuning logic (not needed for data collection); the
``intrinsic_rewards(states)`` of the dataset column are a bex addition — the
same reward for each ``[s, z]`` with the VAE decoding the mean code
(no sampling, nothing updated).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from bex.core.nn import make_adam, orthogonal_init

from .config import SMMConfig
from .nets import DDPG, DDPGAgent, ddpg_update
from .nstep import NStepBatch, NStepReplay, ReplayExplorer


class VAE(nn.Module):
    """URLB's state VAE over ``[s, z]``."""

    def __init__(self, in_dim: int, hidden: int, code_dim: int, beta: float):
        super().__init__()
        self.code_dim, self.beta = code_dim, beta
        self.enc = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.enc_mu = nn.Linear(hidden, code_dim)
        self.enc_logvar = nn.Linear(hidden, code_dim)
        self.dec = nn.Sequential(nn.Linear(code_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, in_dim))
        self.apply(orthogonal_init)

    def loss(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(beta * KL + mean squared error, per-sample summed squared error (B, 1))``."""
        h = self.enc(x)
        mu, logvar = self.enc_mu(h), self.enc_logvar(h)
        recon = self.dec(eps * (0.5 * logvar).exp() + mu)
        kle = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1).mean()
        sq = F.mse_loss(x, recon, reduction="none")
        return self.beta * kle + sq.mean(), sq.sum(dim=1, keepdim=True)


class SMMAgent(DDPGAgent):
    """DDPG on ``[s, z]`` + VAE density + skill discriminator (no replay, no environment)."""

    checkpoint_parts = ("ddpg", "z_pred", "vae", "pred_opt", "vae_opt")

    def __init__(self, obs_dim: int, action_dim: int, config: SMMConfig | Mapping[str, Any] | None = None,
                 seed: int = 0):
        self.cfg = cfg = config if isinstance(config, SMMConfig) else SMMConfig.from_dict(config)
        self.obs_dim, self.z_dim = int(obs_dim), cfg.z_dim
        self.device = torch.device(cfg.device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            self.ddpg = DDPG(obs_dim + cfg.z_dim, action_dim, cfg, self.generator)
            self.z_pred = nn.Sequential(nn.Linear(obs_dim, cfg.hidden_dim), nn.ReLU(),
                                        nn.Linear(cfg.hidden_dim, cfg.hidden_dim), nn.ReLU(),
                                        nn.Linear(cfg.hidden_dim, cfg.z_dim)).to(self.device)
            self.z_pred.apply(orthogonal_init)
            self.vae = VAE(obs_dim + cfg.z_dim, cfg.vae_hidden_dim, cfg.code_dim, cfg.vae_beta).to(self.device)
        self.pred_opt = make_adam(self.z_pred.parameters(), cfg.sp_lr)
        self.vae_opt = make_adam(self.vae.parameters(), cfg.vae_lr)
        self.num_updates = 0

    def act(self, obs_z: np.ndarray, step: int, eval_mode: bool = False) -> np.ndarray:
        """Action for ``[s, z]`` (the skill already appended)."""
        return self.ddpg.act(obs_z, step, eval_mode).cpu().numpy().astype(np.float32)

    def _reward(self, h_s_z: torch.Tensor, h_z_s: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        return c.state_ent_coef * h_s_z + c.latent_ent_coef * math.log(self.z_dim) + c.latent_cond_ent_coef * h_z_s

    def update(self, batch: NStepBatch) -> dict[str, float]:
        batch = batch.to(self.device)
        obs_z = batch.obs
        obs, z = obs_z[:, :self.obs_dim], obs_z[:, self.obs_dim:]
        eps = torch.randn(len(batch), self.cfg.code_dim, generator=self.generator, device=self.device)
        vae_loss, h_s_z = self.vae.loss(obs_z, eps)
        self.vae_opt.zero_grad(set_to_none=True)
        vae_loss.backward()
        self.vae_opt.step()
        h_z_s = F.cross_entropy(self.z_pred(obs), z.argmax(dim=1), reduction="none").unsqueeze(1)
        pred_loss = h_z_s.mean()
        self.pred_opt.zero_grad(set_to_none=True)
        pred_loss.backward()
        self.pred_opt.step()
        reward = self._reward(h_s_z.detach(), h_z_s.detach())
        metrics = {"smm/vae_loss": vae_loss.item(), "smm/pred_loss": pred_loss.item(),
                   "intr/reward_mean": reward.mean().item()}
        metrics.update(ddpg_update(self.ddpg, obs_z, batch.action, reward, batch.discount, batch.next_obs))
        self.num_updates += 1
        return metrics

    @torch.no_grad()
    def step_rewards(self, obs_z: np.ndarray) -> np.ndarray:
        """The rewards (T,) of rows ``[s, z]`` (T, O + z) with the mean VAE code, changing nothing."""
        x = torch.as_tensor(np.asarray(obs_z, np.float32), device=self.device)
        x = x.reshape(-1, x.shape[-1])
        _, h_s_z = self.vae.loss(x, torch.zeros(x.shape[0], self.cfg.code_dim, device=self.device))
        h_z_s = F.cross_entropy(self.z_pred(x[:, :self.obs_dim]), x[:, self.obs_dim:].argmax(dim=1),
                                reduction="none").unsqueeze(1)
        return self._reward(h_s_z, h_z_s).reshape(-1).cpu().numpy().astype(np.float32)



class SMMExplorer(ReplayExplorer):
    """SMM as an :class:`actors.base.Explorer`; a new skill is drawn at the first ``act`` after an episode's last step.

    ``act``/``observe`` take the plain env observation; the explorer appends
    the current skill.  ``skill`` is the current one-hot skill.
    """

    name = "smm"

    def __init__(self, obs_dim: int, action_dim: int, config: SMMConfig | Mapping[str, Any] | None = None,
                 seed: int = 0):
        self.cfg = config if isinstance(config, SMMConfig) else SMMConfig.from_dict(config)
        self.agent = SMMAgent(obs_dim, action_dim, self.cfg, seed=seed)
        self.replay = NStepReplay(self.cfg.replay_capacity, obs_dim + self.cfg.z_dim, action_dim)
        self._init_common(seed)
        self.skill = self._new_skill()
        self._episode_over = False

    def _new_skill(self) -> np.ndarray:
        z = np.zeros(self.cfg.z_dim, np.float32)
        z[self.rng.integers(self.cfg.z_dim)] = 1.0
        return z

    def _replay_obs(self, obs: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(obs, np.float32).reshape(-1), self.skill])

    def act(self, obs: np.ndarray, step: int) -> np.ndarray:
        if self._episode_over:  # first action of a new episode: new skill (URLB init_meta at reset)
            self.skill = self._new_skill()
            self._episode_over = False
        return super().act(obs, step)

    def observe(self, obs, action, next_obs, discount, last, step) -> dict[str, float]:
        metrics = super().observe(obs, action, next_obs, discount, last, step)
        self._episode_over = bool(last)
        return metrics

    def intrinsic_rewards(self, states: np.ndarray) -> np.ndarray | None:
        states = np.asarray(states, np.float32).reshape(-1, self.agent.obs_dim)
        return self.agent.step_rewards(np.concatenate([states, np.broadcast_to(self.skill, (len(states),
                                                                                            len(self.skill)))], 1))

    def state_dict(self) -> dict:
        sd = super().state_dict()
        sd["skill"] = self.skill.copy()
        sd["episode_over"] = self._episode_over
        return sd

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.skill = np.asarray(state["skill"], np.float32).copy()
        self._episode_over = bool(state["episode_over"])
