"""One learned-explorer run (APT, RND, SMM) in one process: URLB's loop, checkpointed.

``LearnedRunner`` is a plain class; the collection driver wraps it in a Ray
actor (``max_restarts=-1``).  With one environment worker (E = 1) it runs
URLB's single-process loop exactly: act, step, store, one update of batch B
every ``update_every_steps`` env steps after the seed frames.

Exactly-once output.  The run is cut into chunks of whole episodes
(:func:`cluster.collect.plan_chunks`).  After each chunk the runner commits the
chunk's Parquet file (deterministic name, atomic), then atomically replaces its
checkpoint (explorer networks, optimisers, replay, RNG states, counters, the
index of the next chunk) under ``<partition>/_checkpoints/``.  A restarted
runner restores the checkpoint and deletes any chunk file committed after it
(the crash fell between the two writes), so the dataset ends with exactly the
requested steps and no episode twice.  The k-NN service keeps its own
snapshot (``cluster/knn_service.py``).
"""
from __future__ import annotations

import io
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from bex.replay import DatasetWriter, atomic_write_bytes, partition_dir

from .collect import Chunk, CollectConfig, chunk_file_name, episode_seed, node_address, plan_chunks


def save_checkpoint(path: Path, state: dict) -> None:
    """``torch.save`` to ``path`` atomically (temporary name, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def uses_service(cfg: CollectConfig, knn: dict | None) -> int | None:
    """The representation size of the ``KnnService`` a run calls, or None when it calls none.

    APT's ``window`` mode shares a ring buffer, so it goes to the cluster's
    service.  ``batch`` mode (URLB's batch-local k-NN, the default) shares no
    state: it runs in the learner's process with the same exact selection,
    unless ``knn["remote_batch"]`` asks for the service (e.g. a GPU service
    node serving CPU learners).  ``recent`` mode needs the learner's replay, so
    it always runs in process.
    """
    if cfg.explorer != "apt":
        return None
    from bex.actors import APTConfig

    acfg = APTConfig.from_dict(cfg.explorer_settings())
    remote = acfg.knn_mode == "window" or (acfg.knn_mode == "batch" and (knn or {}).get("remote_batch"))
    return acfg.rep_dim if remote else None


def service_name(dim: int) -> str:
    """One ``KnnService`` per representation size (a service's index has one dimension)."""
    return f"bex-knn-{dim}"


def explorer_state(explorer, knn_reward, **counters) -> dict:
    """A run's checkpoint: the explorer (networks, optimisers, replay, RNGs), its k-NN reward state,
    torch's RNG, and the caller's ``counters``."""
    return {"explorer": explorer.state_dict(), "torch_rng": torch.get_rng_state(),
            "knn": None if knn_reward is None else knn_reward.state_dict(), **counters}


def load_explorer_state(path: Path, explorer, knn_reward) -> dict | None:
    """Restore what :func:`explorer_state` saved at ``path``; returns the state (for the counters) or None."""
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    explorer.load_state_dict(state["explorer"])
    if knn_reward is not None and state.get("knn"):
        knn_reward.load_state_dict(state["knn"])
    torch.set_rng_state(state["torch_rng"])
    return state


def build_explorer(cfg: CollectConfig, run_key: str, knn: dict | None, spec):
    """The run's explorer; APT's k-NN reward comes from the ``KnnService`` when :func:`uses_service`."""
    from bex.actors import APTConfig, make_explorer

    from .knn_service import KnnClient

    settings = cfg.explorer_settings()
    knn_reward = None
    dim = uses_service(cfg, knn)
    if dim is not None:
        opts = {k: v for k, v in (knn or {}).items() if k != "remote_batch"}
        client = KnnClient(dim, **dict(opts, name=service_name(dim)))
        knn_reward = ServiceKnnReward(APTConfig.from_dict(settings), run_key, client)
    torch.manual_seed(cfg.seed)
    explorer = make_explorer(cfg.explorer, spec.obs_dim, spec.action_dim, settings, seed=cfg.seed,
                             knn_reward=knn_reward)
    return explorer, knn_reward


class ServiceKnnReward:
    """APT's k-NN reward computed by the cluster's ``KnnService`` (the injected callable).

    ``__call__(rep)`` sends the batch of representations to the service (mode
    ``batch`` = URLB's batch-local k-NN, or ``window``); ``query`` scores single
    new states against the last batch in process for the dataset's per-step
    ``reward_intrinsic`` column (diagnostic; with ``knn_rms`` the running mean
    lives in the service and is not applied there).
    """

    def __init__(self, config, run: str, client):
        from bex.actors import BatchKnnReward

        self._local = BatchKnnReward(config)  # only for query(): scores against the last batch
        self.config, self.run, self.client = config, run, client
        self.reward_config = config.reward_config()
        self.calls, self.seconds = 0, 0.0

    @torch.no_grad()
    def __call__(self, rep: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        r = self.client.rewards(self.run, rep.detach().cpu().numpy(), self.reward_config, mode=self.config.knn_mode)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        self._local._ref = rep.detach()
        return torch.tensor(np.asarray(r), dtype=torch.float32, device=rep.device)  # copy: Ray returns read-only arrays

    def query(self, rep_q: torch.Tensor):
        return self._local.query(rep_q)

    def state_dict(self) -> dict:
        return {"local": self._local.state_dict()}

    def load_state_dict(self, state) -> None:
        self._local.load_state_dict(state["local"])


class LearnedRunner:
    """Collects one run's chunks in order, checkpointing after each (see module docstring)."""

    def __init__(self, cfg: CollectConfig, run_key: str, knn: dict | None = None):
        self.cfg, self.run_key = cfg, run_key
        self.env = cfg.make_env()
        spec = self.env.spec
        self.explorer, self.knn = build_explorer(cfg, run_key, knn, spec)
        self.plan = plan_chunks(int(cfg.steps), spec.episode_length, int(cfg.episodes_per_chunk))
        self.pdir = partition_dir(Path(cfg.out), cfg.domain, cfg.partition_objective, cfg.partition_param, cfg.seed)
        self.ckpt = self.pdir / "_checkpoints" / f"{run_key}.pt"
        self.next_chunk, self.steps_done, self.updates = 0, 0, 0
        self.restored = self._restore()

    # ------------------------------------------------------------------ checkpoint
    def _checkpoint(self) -> None:
        save_checkpoint(self.ckpt, explorer_state(self.explorer, self.knn, next_chunk=self.next_chunk,
                                                  steps_done=self.steps_done, updates=self.updates))

    def _restore(self) -> bool:
        state = load_explorer_state(self.ckpt, self.explorer, self.knn)
        if state is not None:
            self.next_chunk, self.steps_done = int(state["next_chunk"]), int(state["steps_done"])
            self.updates = int(state["updates"])
        # chunk files committed after the checkpoint belong to a lost future: remove them
        for c in self.plan[self.next_chunk:]:
            (self.pdir / chunk_file_name(self.run_key, c)).unlink(missing_ok=True)
        return state is not None

    # ------------------------------------------------------------------ work
    def run_chunk(self, index: int) -> dict:
        """Collect chunk ``index`` (the next one), commit it, checkpoint; returns its statistics."""
        base = dict(index=index, node=node_address(), pid=os.getpid(), restored=self.restored)
        if index < self.next_chunk:  # done before a restart; the reply was lost
            return dict(base, steps=self.plan[index].steps, reused=True, wall_s=0.0)
        if index != self.next_chunk:
            raise RuntimeError(f"chunk {index} requested but the run is at chunk {self.next_chunk}")
        from bex.actors import run_episode

        chunk: Chunk = self.plan[index]
        cfg, t0 = self.cfg, time.perf_counter()
        knn_calls0, knn_s0 = (self.knn.calls, self.knn.seconds) if self.knn else (0, 0.0)
        writer = DatasetWriter(cfg.out, self.env.spec, cfg.partition_objective, cfg.partition_param, cfg.seed,
                               config=asdict(cfg), writer_id=chunk_file_name(self.run_key, chunk)[:-len("-000000.parquet")],
                               rows_per_file=1 << 62, run_key=self.run_key)
        intr, updates = [], 0

        def on_step(metrics: dict) -> None:
            nonlocal updates
            if "critic/loss" in metrics:
                updates += 1
            if "intr/reward_mean" in metrics:
                intr.append(metrics["intr/reward_mean"])

        for j, length in enumerate(chunk.lengths):
            ep = chunk.first_episode + j
            self.env.task._random = np.random.RandomState(episode_seed(cfg.seed, ep))
            episode = run_episode(self.env, self.explorer, f"{self.run_key}-{ep:06d}", step0=self.steps_done,
                                  max_steps=length, on_step=on_step)
            self.steps_done += len(episode)
            writer.write_episode(episode)
        writer.close()
        self.next_chunk = index + 1
        self.updates += updates
        self._checkpoint()
        wall = time.perf_counter() - t0
        calls = (self.knn.calls - knn_calls0) if self.knn else 0
        return dict(base, steps=chunk.steps, reused=False, wall_s=wall, updates=updates,
                    env_steps_per_s=chunk.steps / max(wall, 1e-9), updates_per_s=updates / max(wall, 1e-9),
                    intr_reward_mean=float(np.mean(intr)) if intr else None,
                    knn_ms=1000 * (self.knn.seconds - knn_s0) / calls if calls else None)
