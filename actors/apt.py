r"""APT with an ICM representation (ICM-APT), as URLB implements it, with BE / Rényi / Shannon rewards.

Sources: APT — Liu & Abbeel, "Behavior From the Void: Unsupervised Active
Pre-Training" (NeurIPS 2021); ICM — Pathak et al., "Curiosity-driven
Exploration by Self-supervised Prediction" (ICML 2017); behavioral entropy —
arXiv 2502.04141 (reward: Eq. 24, practical form in :mod:`entropy.rewards`);
reference code: ``rll-research/url_benchmark`` ``agent/icm_apt.py``,
``agent/ddpg.py``, ``utils.py`` (``PBE``, ``RMS``), ``pretrain.py``.

One update (``APTAgent.update``), in URLB's order, on an n-step batch
``(s_t, a_t, s_{t+n}, gamma**n prod d)``:

1. ICM step: ``e = trunk(s)``, forward model ``f([e_t, a_t]) ~ e_{t+n}``,
   backward model ``g([e_t, e_{t+n}]) ~ a_t``; loss = mean L2 norm of each
   error (not squared), Adam.  As in URLB the "next" observation is the n-step
   one, s_{t+n}.
2. Intrinsic reward (no grad, after the ICM step): ``knn_reward(trunk(s_t))``
   — the representation of the **current** observation ``s_t`` (URLB
   ``compute_intr_reward`` calls ``get_rep(obs, action)``), k-NN in the batch.
3. DDPG step on that reward (:func:`actors.nets.ddpg_update`).

URLB quirk kept as default: with n-step 3 the bootstrap uses ``gamma**3`` and
``s_{t+3}``, while the reward of the sample is the single intrinsic value of
``s_t`` (it replaces the n-step sum).  ``APTConfig.intr_nstep_sum = True``
instead uses ``sum_i gamma**i prod_{j<i} d_j r(s_{t+i})`` with each
``r(s_{t+i})`` computed by a k-NN over the batch of ``s_{t+i}``.

k-NN injection: the agent never computes neighbours itself; it calls
``knn_reward(rep: (B, D) float32 tensor) -> (B,) tensor``.  :class:`BatchKnnReward`
is URLB's batch-local ``PBE`` (self distance included among the k);
:class:`WindowKnnReward` queries a ring of recent embeddings (bex addition);
:class:`RecentKnnReward` queries the latest visited states re-embedded by the
current encoder (``knn_mode="recent"``, bex addition);
``cluster/`` passes a callable backed by the shared ``KnnService``.  Statistic
and objective transforms are :func:`entropy.rewards.knn_reward` (one implementation).

Deliberate differences from URLB (besides those of :mod:`actors.nets` and
:mod:`actors.nstep`): the objective is configurable (Shannon = URLB); the
distance matrix is computed in row chunks (same values, bounded memory); the
transform runs in float64 numpy; an update happens in ``observe`` right after
the transition is stored (URLB updates before the env step, so its batch lacks
the newest transition); the ``intrinsic_rewards`` of the dataset column
are a bex addition (see :class:`APTExplorer`).
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn as nn

from bex.core.nn import make_adam, orthogonal_init
from bex.entropy.rewards import KnnRewardTransform

from .config import APTConfig
from .nets import DDPG, DDPGAgent, ddpg_update
from .nstep import NStepBatch, NStepReplay, ReplayExplorer

KnnRewardFn = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- k-NN rewards

def pairwise_distances(src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """All Euclidean distances by one matrix product (``cdist``'s mm mode): used to *select* neighbours.

    URLB forms ``src[:, None] - tgt[None]`` (B x B x D floats: 2 GB and ~1 s per
    update at the paper size); the matmul form costs one GEMM but carries
    rounding error, so :func:`knn_exact` recomputes the selected distances with
    URLB's exact formula.
    """
    return torch.cdist(src, tgt, compute_mode="use_mm_for_euclid_dist")


def knn_exact(src: torch.Tensor, tgt: torch.Tensor, d: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` nearest of ``d``'s candidates per row, their distances recomputed exactly, ascending.

    Equals URLB's ``torch.norm(src[:, None] - tgt[None], dim=-1).topk(k, largest=False)``
    except when two neighbours tie to within float32 rounding at the k-th place.
    """
    idx = d.topk(k, dim=1, largest=False, sorted=False).indices
    return torch.norm(src[:, None, :] - tgt[idx], dim=-1, p=2).sort(dim=1).values


class BatchKnnReward:
    """URLB's batch-local particle reward: k-NN among the B representations of one batch.

    ``__call__(rep)``: distances ``(B, B)``, ``topk(k, largest=False)`` (the
    point's own zero distance is one of the k), then
    :class:`entropy.rewards.KnnRewardTransform` (average / running-mean
    normalisation / clip / objective transform).  ``query(rep_q)`` scores new
    points against the last batch without changing any state (k - 1 neighbours
    from the batch plus the zero self distance, and the running mean not updated).
    """

    def __init__(self, config: APTConfig):
        self.config = config
        self.transform = KnnRewardTransform(config.reward_config())
        self._ref: torch.Tensor | None = None

    def _rewards(self, d: torch.Tensor, update: bool) -> torch.Tensor:
        tr = self.transform if update or self.transform.rms is None else copy.deepcopy(self.transform)
        r = tr(d.detach().cpu().numpy())
        return torch.as_tensor(r, dtype=torch.float32, device=d.device)

    @torch.no_grad()
    def __call__(self, rep: torch.Tensor) -> torch.Tensor:
        k = self.config.k
        if rep.shape[0] < k:
            raise ValueError(f"batch of {rep.shape[0]} representations is smaller than k={k}")
        d = knn_exact(rep, rep, pairwise_distances(rep, rep), k)
        self._ref = rep.detach()
        return self._rewards(d, update=True)

    @torch.no_grad()
    def query(self, rep_q: torch.Tensor) -> torch.Tensor | None:
        """Rewards of ``rep_q`` (m, D) against the last batch, or None before the first call."""
        if self._ref is None:
            return None
        k = self.config.k
        if k > 1:
            d = knn_exact(rep_q, self._ref, pairwise_distances(rep_q, self._ref), k - 1)
            d = torch.cat([torch.zeros_like(d[:, :1]), d], dim=1)
        else:
            d = torch.zeros(rep_q.shape[0], 1, device=rep_q.device)
        return self._rewards(d, update=False)

    def state_dict(self) -> dict:
        return {"transform": self.transform.state_dict(), "ref": self._ref}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.transform.load_state_dict(state["transform"])
        self._ref = state.get("ref")


class _ReferenceKnnReward(BatchKnnReward):
    """A k-NN reward against a reference set other than the batch (window and recent modes)."""

    def _score(self, rep: torch.Tensor, ref: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
               extra: torch.Tensor | None = None) -> torch.Tensor:
        """Rewards of ``rep`` against ``ref``, with ``ref[cols[j]]`` (row ``rows[j]``'s own copy) excluded.

        ``extra`` (B, E): more candidate distances per row (``inf`` = none), merged before the k smallest.
        """
        d = pairwise_distances(rep, ref)
        d[rows, cols] = float("inf")
        k = min(self.config.k, ref.shape[0] - 1)
        self._ref = ref.detach()
        d = knn_exact(rep, ref, d, k)
        if extra is not None:
            d = torch.cat([d, extra], dim=1).sort(dim=1).values[:, :k]
        return self._rewards(d, update=True)

    @torch.no_grad()
    def query(self, rep_q: torch.Tensor) -> torch.Tensor | None:
        if self._ref is None:
            return None
        k = min(self.config.k, self._ref.shape[0])
        return self._rewards(knn_exact(rep_q, self._ref, pairwise_distances(rep_q, self._ref), k), update=False)


class WindowKnnReward(_ReferenceKnnReward):
    """k-NN against a ring of the last ``knn_window`` embeddings passed in (bex addition).

    Each call first inserts the batch into the ring, then queries each point
    against the ring with its own stored copy excluded — the semantics of the
    ``KnnService`` window mode, in process.  ``query`` scores new points
    against the ring (nothing inserted).  The ring holds embeddings made by
    past encoders (non-stationary, like the shared service).
    """

    def __init__(self, config: APTConfig):
        super().__init__(config)
        self._ring: torch.Tensor | None = None
        self._n = 0

    def _insert(self, rep: torch.Tensor) -> torch.Tensor:
        """Insert (the last ``knn_window`` rows of) ``rep``; returns their ring slots."""
        w = self.config.knn_window
        rep = rep.detach()[-w:]
        if self._ring is None:
            self._ring = torch.zeros(w, rep.shape[1], dtype=rep.dtype, device=rep.device)
        slots = ((torch.arange(rep.shape[0]) + self._n) % w).to(rep.device)
        self._ring[slots] = rep
        self._n += rep.shape[0]
        return slots

    def _ref_set(self) -> torch.Tensor:
        return self._ring[:min(self._n, self.config.knn_window)]

    @torch.no_grad()
    def __call__(self, rep: torch.Tensor) -> torch.Tensor:
        slots = self._insert(rep)
        ref = self._ref_set()
        if ref.shape[0] < 2:
            raise ValueError("window k-NN needs at least 2 embeddings")
        own = torch.arange(rep.shape[0] - slots.shape[0], rep.shape[0], device=rep.device)
        return self._score(rep, ref, own, slots)  # each point's own stored copy excluded

    def state_dict(self) -> dict:
        return {"transform": self.transform.state_dict(), "ring": self._ring, "n": self._n}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.transform.load_state_dict(state["transform"])
        self._ring, self._n = state["ring"], int(state["n"])
        self._ref = None if self._ring is None else self._ref_set()


class RecentKnnReward(_ReferenceKnnReward):
    """k-NN of each sample against the states the explorer visited last (``knn_mode="recent"``, bex addition).

    URLB's batch-local reward scores a state by its rarity in the whole replay
    (the mixture of every past policy).  A pose the agent has just found is rare
    there, and holding it earns the same high reward at every step until it
    fills about ``k / batch_size`` of the replay — thousands of steps at the
    small preset, where the explorer then stood still in 25-67% of some 10K-step
    windows (docs/actors.md).
    ``recent`` mode measures rarity against the last ``knn_window`` *visited*
    states (the newest replay entries), all embedded by the current encoder:
    a held pose is its own nearest neighbour after ``k`` steps, so its reward
    falls at once, and the estimate tracks the entropy of the current policy's
    state occupancy — the quantity the BE paper's objective is defined on
    (arXiv 2502.04141, Sec. 4).  A sample inside the window excludes its own
    stored copy; the statistic and transform are the shared ones.

    ``__call__(rep)`` falls back to batch mode (used before the replay holds
    ``k + 1`` states); :meth:`score` is the recent-window reward.
    """

    @torch.no_grad()
    def score(self, rep: torch.Tensor, ref: torch.Tensor, pos: torch.Tensor, local: torch.Tensor | None = None,
              local_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Rewards of ``rep`` (B, D) against ``ref`` (m, D); ``pos[i]`` = row i's own slot in ``ref`` (or out of range).

        ``local`` (B, E, D) with ``local_mask`` (B, E): per-row extra reference points (the
        sample's own-episode neighbours older than the window, ``APTConfig.knn_local``).
        """
        if ref.shape[0] < 2:
            return self(rep)
        rows = torch.nonzero((pos >= 0) & (pos < ref.shape[0])).reshape(-1)
        extra = None
        if local is not None:
            extra = torch.norm(rep[:, None, :] - local, dim=-1, p=2).masked_fill(~local_mask, float("inf"))
        return self._score(rep, ref, rows, pos[rows], extra)  # each sample's own stored copy excluded


def make_knn_reward(config: APTConfig) -> BatchKnnReward:
    """The in-process k-NN reward of ``config.knn_mode``."""
    if config.knn_mode == "window":
        return WindowKnnReward(config)
    return RecentKnnReward(config) if config.knn_mode == "recent" else BatchKnnReward(config)


# --------------------------------------------------------------------------- ICM representation

class ICM(nn.Module):
    """URLB's ICM with a trunk: ``trunk: Linear(obs, rep) -> LayerNorm -> Tanh``;
    ``forward_net: Linear(rep + |A|, hidden) -> ReLU -> Linear(hidden, rep)``;
    ``backward_net: Linear(2 rep, hidden) -> ReLU -> Linear(hidden, |A|) -> Tanh``."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_dim: int, rep_dim: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(obs_dim, rep_dim), nn.LayerNorm(rep_dim), nn.Tanh())
        self.forward_net = nn.Sequential(nn.Linear(rep_dim + action_dim, hidden_dim), nn.ReLU(),
                                         nn.Linear(hidden_dim, rep_dim))
        self.backward_net = nn.Sequential(nn.Linear(2 * rep_dim, hidden_dim), nn.ReLU(),
                                          nn.Linear(hidden_dim, action_dim), nn.Tanh())
        self.apply(orthogonal_init)

    def rep(self, obs: torch.Tensor) -> torch.Tensor:
        return self.trunk(obs)

    def forward(self, obs, action, next_obs) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample L2 errors ``(B, 1)`` of the forward and backward models."""
        e, e_next = self.trunk(obs), self.trunk(next_obs)
        e_next_hat = self.forward_net(torch.cat([e, action], dim=-1))
        a_hat = self.backward_net(torch.cat([e, e_next], dim=-1))
        return (torch.norm(e_next - e_next_hat, dim=-1, p=2, keepdim=True),
                torch.norm(action - a_hat, dim=-1, p=2, keepdim=True))


def icm_loss(icm: ICM, obs, action, next_obs) -> tuple[torch.Tensor, dict[str, float]]:
    """URLB ICM-APT loss ``mean ||f - e'|| + mean ||g - a||`` and its metrics."""
    fwd, bwd = icm(obs, action, next_obs)
    loss = fwd.mean() + bwd.mean()
    return loss, {"rep/loss": loss.item(), "rep/forward_error": fwd.mean().item(),
                  "rep/backward_error": bwd.mean().item()}


# --------------------------------------------------------------------------- agent

def _forked_init(seed: int, build: Callable[[], Any]) -> Any:
    """Build networks with torch's global RNG seeded by ``seed`` without disturbing it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


class APTAgent(DDPGAgent):
    """ICM-APT networks, optimisers and update (no replay, no environment)."""

    checkpoint_parts = ("ddpg", "icm", "icm_opt")

    def __init__(self, obs_dim: int, action_dim: int, config: APTConfig | Mapping[str, Any] | None = None,
                 knn_reward: KnnRewardFn | None = None, seed: int = 0):
        self.cfg = config if isinstance(config, APTConfig) else APTConfig.from_dict(config)
        self.obs_dim, self.action_dim = int(obs_dim), int(action_dim)
        self.device = torch.device(self.cfg.device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed))
        self.ddpg, self.icm = _forked_init(int(seed), lambda: (
            DDPG(obs_dim, action_dim, self.cfg, self.generator),
            ICM(obs_dim, action_dim, self.cfg.hidden_dim, self.cfg.rep_dim).to(self.device)))
        self.icm_opt = make_adam(self.icm.parameters(), self.cfg.lr)
        self.knn_reward: KnnRewardFn = knn_reward if knn_reward is not None else make_knn_reward(self.cfg)
        self.num_updates = 0

    def set_knn_reward(self, fn: KnnRewardFn) -> None:
        """Replace the k-NN reward callable (e.g. by one backed by the ``KnnService``)."""
        self.knn_reward = fn

    def act(self, obs: np.ndarray, step: int, eval_mode: bool = False) -> np.ndarray:
        """Action in [-1, 1]^|A| (uniform before ``num_seed_frames`` unless ``eval_mode``)."""
        return self.ddpg.act(obs, step, eval_mode).cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def rep(self, obs) -> torch.Tensor:
        return self.icm.rep(torch.as_tensor(obs, dtype=torch.float32, device=self.device))

    def _knn(self, rep: torch.Tensor) -> torch.Tensor:
        r = torch.as_tensor(self.knn_reward(rep), dtype=torch.float32, device=self.device)
        if r.shape != (rep.shape[0],) and r.numel() == rep.shape[0]:
            r = r.reshape(-1)
        if r.shape != (rep.shape[0],):
            raise ValueError(f"knn_reward returned shape {tuple(r.shape)}, expected ({rep.shape[0]},)")
        return r

    @torch.no_grad()
    def intrinsic_reward(self, batch: NStepBatch) -> torch.Tensor:
        """The (B, 1) reward of each sample: k-NN reward of rep(s_t) (or the n-step sum).

        In ``recent`` mode the neighbours are the current encoder's representations of
        ``batch.recent_obs`` (:class:`RecentKnnReward`)."""
        if self.cfg.knn_mode == "recent":
            if batch.recent_obs is None:
                raise ValueError("knn_mode 'recent' needs a batch sampled with recent > 0")
            if not isinstance(self.knn_reward, RecentKnnReward):
                raise ValueError("knn_mode 'recent' runs in process: the k-NN reward must be a RecentKnnReward")
            ref = self.icm.rep(batch.recent_obs)
            local = None
            if batch.local_obs is not None:  # only with intr_nstep_sum false (APTConfig), so shift is 0
                local = self.icm.rep(batch.local_obs.reshape(-1, batch.local_obs.shape[-1]))
                local = local.reshape(*batch.local_obs.shape[:2], -1)

            def knn(rep: torch.Tensor, shift: int = 0) -> torch.Tensor:  # s_{t+shift} sits at recent_pos + shift
                return self.knn_reward.score(rep, ref, batch.recent_pos + shift, local, batch.local_mask)
        else:
            def knn(rep: torch.Tensor, shift: int = 0) -> torch.Tensor:
                return self._knn(rep)
        if not self.cfg.intr_nstep_sum:
            return knn(self.icm.rep(batch.obs)).unsqueeze(1)
        if batch.step_obs is None:
            raise ValueError("intr_nstep_sum needs a batch sampled with with_steps=True")
        total = torch.zeros(len(batch), device=self.device)
        for i in range(batch.step_obs.shape[1]):
            total += batch.step_weights[:, i] * knn(self.icm.rep(batch.step_obs[:, i]), i)
        return total.unsqueeze(1)

    def update(self, batch: NStepBatch) -> dict[str, float]:
        """ICM step, intrinsic reward, DDPG step (module docstring). Returns namespaced metrics."""
        batch = batch.to(self.device)
        loss, metrics = icm_loss(self.icm, batch.obs, batch.action, batch.next_obs)
        self.icm_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.icm_opt.step()
        reward = self.intrinsic_reward(batch)
        metrics["intr/reward_mean"] = reward.mean().item()
        metrics["intr/reward_std"] = reward.std().item() if len(batch) > 1 else 0.0
        metrics.update(ddpg_update(self.ddpg, batch.obs, batch.action, reward, batch.discount, batch.next_obs))
        self.num_updates += 1
        return metrics

    def state_dict(self) -> dict:
        sd = super().state_dict()
        if hasattr(self.knn_reward, "state_dict"):
            sd["knn_reward"] = self.knn_reward.state_dict()
        return sd

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        if "knn_reward" in state and hasattr(self.knn_reward, "load_state_dict"):
            self.knn_reward.load_state_dict(copy.deepcopy(state["knn_reward"]))


# --------------------------------------------------------------------------- explorer

class APTExplorer(ReplayExplorer):
    """ICM-APT as an :class:`actors.base.Explorer`: ``run_episode(env, APTExplorer(...))`` is URLB's E=1 loop.

    ``intrinsic_rewards(states)`` (the dataset's ``reward_intrinsic`` column):
    when ``record_intrinsic`` is on and the k-NN reward has a ``query`` method
    (:class:`BatchKnnReward`, :class:`WindowKnnReward`, :class:`RecentKnnReward`),
    the reward of each ``rep(state)`` against the reference set of the last
    update (no state changes) — one call per episode (E = 1) or segment (E > 1);
    None before the first update, or when the injected callable has no
    ``query`` (the column is then null for the episode).
    """

    name = "apt"

    def __init__(self, obs_dim: int, action_dim: int, config: APTConfig | Mapping[str, Any] | None = None,
                 seed: int = 0, knn_reward: KnnRewardFn | None = None):
        self.cfg = config if isinstance(config, APTConfig) else APTConfig.from_dict(config)
        self.agent = APTAgent(obs_dim, action_dim, self.cfg, knn_reward=knn_reward, seed=seed)
        self.replay = NStepReplay(self.cfg.replay_capacity, obs_dim, action_dim)
        self._init_common(seed)

    def _with_steps(self) -> bool:
        return self.cfg.intr_nstep_sum

    def _recent(self) -> int:
        return self.cfg.knn_window if self.cfg.knn_mode == "recent" else 0

    def _local(self) -> int:
        return self.cfg.local_neighbours

    def set_knn_reward(self, fn: KnnRewardFn) -> None:
        self.agent.set_knn_reward(fn)

    def intrinsic_rewards(self, states: np.ndarray) -> np.ndarray | None:
        query = getattr(self.agent.knn_reward, "query", None)
        if not self.cfg.record_intrinsic or query is None:
            return None
        states = np.asarray(states, np.float32)
        r = query(self.agent.rep(states.reshape(-1, states.shape[-1])))
        return None if r is None else r.detach().cpu().numpy().reshape(-1).astype(np.float32)
