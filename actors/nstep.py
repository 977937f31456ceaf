"""The explorers' own replay: a numpy ring buffer of transitions with n-step sampling.

Follows URLB ``replay_buffer.ReplayBuffer._sample`` for a sample starting at
transition ``t`` of an episode:

* ``obs = s_t``, ``action = a_t``, ``next_obs = s_{t+n}``;
* ``discount = prod_{i<n} (d_{t+i} * gamma) = gamma**n * prod_i d_{t+i}``
  (``d`` the env discount, 0 at a true terminal);
* ``step_weights[:, i] = gamma**i * prod_{j<i} d_{t+j}`` — the weights URLB uses
  to sum the per-step rewards of the n steps (``reward += discount * r``), so a
  caller with per-step rewards ``r_{t+i}`` gets the n-step return
  ``sum_i step_weights[:, i] * r_{t+i}``;
* a sample never crosses an episode end: only starts ``t`` whose n transitions
  ``t .. t+n-1`` all belong to the same episode are drawn (URLB draws
  ``idx`` in ``[1, len - n + 1]``), so the last ``n - 1`` transitions of an
  episode are never a start.

Deliberate differences from URLB: starts are uniform over all valid
transitions (URLB picks an episode uniformly then a step — the same for
equal-length episodes); the unfinished current episode can be sampled at once
(URLB only loads finished episodes, refreshed every 1000 samples); the buffer
is a transition ring (``obs`` and ``next_obs`` stored), not a list of episode files.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

import numpy as np
import torch


@dataclass(frozen=True)
class NStepBatch:
    """An n-step mini-batch. Shapes: ``obs``/``next_obs`` (B, O), ``action`` (B, A),
    ``discount`` (B, 1), ``step_weights`` (B, n); ``step_obs`` (B, n, O) = ``s_t .. s_{t+n-1}``
    when requested, else None.  All float32 torch tensors, except:

    ``recent_obs`` (m, O): the observations of the last m transitions added (the states the
    explorer visited most recently, oldest first) when ``sample(recent=m)`` asked for them;
    ``recent_pos`` (B,) int64: the position of each sample's ``s_t`` in ``recent_obs``
    (``s_{t+i}`` is at ``recent_pos + i``), negative when it is older than the window;
    ``local_obs`` (B, 2w, O) and ``local_mask`` (B, 2w) bool, when ``sample(recent=m, local=w)``
    asked for them: the observations ``s_{t-w} .. s_{t-1}, s_{t+1} .. s_{t+w}`` around each
    sample, and which of them are states of the sample's own episode, still in the buffer,
    and older than the recent window (those inside it are in ``recent_obs`` already)."""

    obs: torch.Tensor
    action: torch.Tensor
    next_obs: torch.Tensor
    discount: torch.Tensor
    step_weights: torch.Tensor
    step_obs: torch.Tensor | None = None
    recent_obs: torch.Tensor | None = None
    recent_pos: torch.Tensor | None = None
    local_obs: torch.Tensor | None = None
    local_mask: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    def to(self, device) -> "NStepBatch":
        return NStepBatch(*(None if getattr(self, f.name) is None else getattr(self, f.name).to(device)
                            for f in fields(self)))


class NStepReplay:
    """Ring buffer of ``(obs, action, next_obs, discount, last)`` transitions."""

    def __init__(self, capacity: int, obs_dim: int, action_dim: int, seed: int = 0):
        if capacity < 1:
            raise ValueError(f"capacity={capacity!r} is out of range: allowed capacity >= 1")
        self.capacity = int(capacity)
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.action = np.zeros((capacity, action_dim), np.float32)
        self.discount = np.zeros(capacity, np.float32)
        self.last = np.zeros(capacity, bool)
        self.added = 0  # transitions ever added (logical index of the next one)
        self.rng = np.random.default_rng(seed)  # used when sample() gets no rng

    def __len__(self) -> int:
        return min(self.added, self.capacity)

    def add(self, obs, action, next_obs, discount: float, last: bool) -> None:
        """Append one transition; ``last`` marks the final transition of an episode."""
        i = self.added % self.capacity
        self.obs[i] = obs
        self.action[i] = action
        self.next_obs[i] = next_obs
        self.discount[i] = discount
        self.last[i] = bool(last)
        self.added += 1

    def _valid(self, starts: np.ndarray, nstep: int) -> np.ndarray:
        if nstep == 1:
            return np.ones(len(starts), bool)
        idx = (starts[:, None] + np.arange(nstep - 1)) % self.capacity
        return ~self.last[idx].any(axis=1)

    def num_valid_starts(self, nstep: int) -> int:
        lo, hi = self.added - len(self), self.added - nstep + 1
        if hi <= lo:
            return 0
        return int(self._valid(np.arange(lo, hi), nstep).sum())

    def sample(self, batch_size: int, nstep: int, gamma: float, rng: np.random.Generator | None = None,
               with_steps: bool = False, device: str | torch.device = "cpu", recent: int = 0,
               local: int = 0) -> NStepBatch:
        """Draw ``batch_size`` n-step samples uniformly over valid starts (with replacement).

        ``rng``: the generator to draw with (default: the buffer's own, seeded by ``seed``).
        ``recent > 0``: also return the observations of the last ``min(recent, len(self))``
        transitions and each sample's position among them (``NStepBatch.recent_*``).
        ``local > 0`` (with ``recent > 0``): also each sample's ``local`` neighbours on either
        side in time and their mask (``NStepBatch.local_*``, see :meth:`local_neighbours`).
        """
        if local > 0 and recent <= 0:
            raise ValueError(f"local={local} neighbours need recent > 0, got recent={recent}")
        rng = self.rng if rng is None else rng
        lo, hi = self.added - len(self), self.added - nstep + 1  # logical start range [lo, hi)
        if hi <= lo:
            raise ValueError(f"replay holds {len(self)} transitions: need at least nstep={nstep}")
        starts = rng.integers(lo, hi, size=batch_size)
        for _ in range(64):  # rejection: invalid starts are rare (n-1 per episode)
            bad = ~self._valid(starts, nstep)
            if not bad.any():
                break
            starts[bad] = rng.integers(lo, hi, size=int(bad.sum()))
        else:
            valid = np.arange(lo, hi)[self._valid(np.arange(lo, hi), nstep)]
            if len(valid) == 0:
                raise ValueError(f"replay has no {nstep}-step window inside one episode")
            bad = ~self._valid(starts, nstep)
            starts[bad] = rng.choice(valid, size=int(bad.sum()))
        idx = (starts[:, None] + np.arange(nstep)) % self.capacity  # (B, n)
        d = self.discount[idx].astype(np.float64) * gamma  # (B, n)
        cum = np.cumprod(d, axis=1)
        weights = np.concatenate([np.ones((batch_size, 1)), cum[:, :-1]], axis=1)

        def t(x):
            return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)

        first, final = idx[:, 0], idx[:, -1]
        recent_obs = recent_pos = local_obs = local_mask = None
        if recent > 0:
            m = min(int(recent), len(self))
            a, b = (self.added - m) % self.capacity, (self.added - 1) % self.capacity + 1
            # a view of the ring when the window does not wrap (read-only use; no 16K-row copy per update)
            recent_obs = t(self.obs[a:b] if a < b else self.obs[np.arange(self.added - m, self.added) % self.capacity])
            recent_pos = torch.from_numpy(starts - (self.added - m)).to(device)  # < 0: older than the window
            if local > 0:
                nb, mask = self.local_neighbours(starts, int(local))
                mask &= nb < self.added - m  # the window's states are scored there already
                local_obs, local_mask = t(self.obs[nb % self.capacity]), torch.from_numpy(mask).to(device)
        return NStepBatch(obs=t(self.obs[first]), action=t(self.action[first]), next_obs=t(self.next_obs[final]),
                          discount=t(cum[:, -1:]), step_weights=t(weights),
                          step_obs=t(self.obs[idx]) if with_steps else None,
                          recent_obs=recent_obs, recent_pos=recent_pos, local_obs=local_obs, local_mask=local_mask)

    def local_neighbours(self, starts: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
        """Logical indices ``starts + j`` for ``j = -w .. -1, 1 .. w`` (B, 2w), and a mask (B, 2w):
        True where that transition is still in the buffer and in the same episode as ``starts``
        (no episode end from the earlier of the two up to, not including, the later one)."""
        starts = np.asarray(starts, np.int64)
        offsets = np.concatenate([np.arange(-w, 0), np.arange(1, w + 1)])
        nb = starts[:, None] + offsets
        oldest = self.added - len(self)
        span = starts[:, None] + np.arange(-w, w)  # transitions at offsets -w .. w-1
        ends = self.last[span % self.capacity] & (span >= oldest) & (span < self.added)
        after = np.cumsum(ends[:, w:], axis=1) == 0  # j = 1..w: no end at offsets 0 .. j-1
        before = np.cumsum(ends[:, :w][:, ::-1], axis=1)[:, ::-1] == 0  # j = -w..-1: none at j .. -1
        mask = np.concatenate([before, after], axis=1) & (nb >= oldest) & (nb < self.added)
        return nb, mask

    def state_dict(self) -> dict:
        n = len(self)
        return {"capacity": self.capacity, "added": self.added, "obs": self.obs[:n].copy(),
                "next_obs": self.next_obs[:n].copy(), "action": self.action[:n].copy(),
                "discount": self.discount[:n].copy(), "last": self.last[:n].copy(),
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"replay capacity {state['capacity']} in the state, {self.capacity} here")
        n = len(state["obs"])
        for name in ("obs", "next_obs", "action", "discount", "last"):
            getattr(self, name)[:n] = state[name]
        self.added = int(state["added"])
        if "rng" in state:
            self.rng.bit_generator.state = state["rng"]


class ReplayExplorer:
    """The part of every DDPG explorer that owns the replay and the update schedule.

    Subclasses set ``self.agent`` (with ``act``, ``update``, ``state_dict``,
    ``load_state_dict``, ``policy_state``, ``load_policy_state``) and
    ``self.replay``, and may override :meth:`_replay_obs` (SMM appends its skill).
    """

    name = "replay"
    cfg: Any
    agent: Any
    replay: NStepReplay

    def _init_common(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.env_steps = 0
        self.last_metrics: dict[str, float] = {}

    def _replay_obs(self, obs: np.ndarray) -> np.ndarray:
        return obs

    def _with_steps(self) -> bool:
        return False

    def _recent(self) -> int:
        """How many of the latest transitions each batch carries (``recent`` of :meth:`NStepReplay.sample`)."""
        return 0

    def _local(self) -> int:
        """Own-episode neighbours on either side that each batch carries (``local`` of :meth:`NStepReplay.sample`)."""
        return 0

    @property
    def updates(self) -> int:
        """Gradient updates made so far (the agent's count; callers read this, not metric keys)."""
        return self.agent.num_updates

    def act(self, obs: np.ndarray, step: int) -> np.ndarray:
        return self.agent.act(self._replay_obs(obs), step)

    def observe(self, obs, action, next_obs, discount, last, step) -> dict[str, float]:
        """Store the transition; from ``num_seed_frames`` on, update every ``update_every_steps`` steps."""
        self.replay.add(self._replay_obs(obs), action, self._replay_obs(next_obs), discount, last)
        self.env_steps += 1
        cfg = self.cfg
        if step < cfg.num_seed_frames or step % cfg.update_every_steps != 0:
            return {}
        if self.replay.added < cfg.nstep:
            return {}
        batch = self.replay.sample(cfg.batch_size, cfg.nstep, cfg.discount, self.rng, with_steps=self._with_steps(),
                                   device=cfg.device, recent=self._recent(), local=self._local())
        self.last_metrics = self.agent.update(batch)
        return self.last_metrics

    def policy_state(self) -> dict:
        return self.agent.policy_state()

    def load_policy_state(self, state) -> None:
        self.agent.load_policy_state(state)

    def state_dict(self) -> dict:
        return {"agent": self.agent.state_dict(), "replay": self.replay.state_dict(),
                "rng": self.rng.bit_generator.state, "env_steps": self.env_steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.agent.load_state_dict(state["agent"])
        self.replay.load_state_dict(state["replay"])
        self.rng.bit_generator.state = state["rng"]
        self.env_steps = int(state["env_steps"])
