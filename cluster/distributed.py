"""One learned-explorer run with E > 1 environment workers and one learner.

Workers (``EnvWorkerCore`` in Ray actors) step their own environment with a
copy of the policy and send *segments* of ``segment_steps`` transitions to the
learner (``LearnerCore`` in a Ray actor).  The learner feeds every transition
to the explorer's ``observe`` in arrival order, so the update schedule is
URLB's — one update of batch B per ``update_every_steps`` ingested env steps
after the seed frames — whatever E is.  Rate limiting: a worker's next segment
takes the learner's reply to its previous one as an argument (an ObjectRef), so
no worker runs ahead of the learner by more than one segment; more workers give
more env steps per second without changing what is learned per step.  The
reply carries the current policy weights and the global step count (for the
seed-frame schedule), so a worker acts with weights at most about
``E x segment_steps`` env steps old (URLB, E = 1: up to ``update_every_steps``).

Exactly-once output.  Episodes are *tickets* of a fixed plan (index, length).
The learner assembles a ticket's segments; finished episodes are committed in
files of ``episodes_per_chunk`` episodes named by a commit sequence number,
each followed by a checkpoint (explorer state with replay, committed tickets,
sequence).  A killed worker's partial episode is dropped and its ticket goes
back to the pool; a restarted learner restores its checkpoint, deletes files
committed after it, and rejects segments of tickets it no longer has in
progress (the worker then starts a fresh ticket).  Transitions of dropped
partial episodes may remain in the replay buffer, never in the dataset.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bex.replay import DatasetWriter, Episode, partition_dir

from .collect import CollectConfig, episode_seed, node_address, plan_chunks
from .learned import build_explorer, explorer_state, load_explorer_state, save_checkpoint


@dataclass
class Ticket:
    episode: int
    length: int


@dataclass
class Segment:
    slot: int
    ticket: Ticket
    first_row: int               # episode row index of ``obs[0]`` (0: the segment starts with the reset row)
    obs: np.ndarray              # (m, obs_dim) rows first_row .. first_row + m - 1
    action: np.ndarray
    physics: np.ndarray
    discount: np.ndarray
    last: bool
    node: str = ""


def _seq_file(run_key: str, seq: int) -> str:
    return f"{run_key}-c{seq:06d}-000000.parquet"


class EnvWorkerCore:
    """Steps one environment with a policy copy; returns segments of an episode (no Ray here)."""

    def __init__(self, cfg: CollectConfig, slot: int):
        from bex.actors import make_explorer

        self.cfg, self.slot = cfg, slot
        self.env = cfg.make_env()
        spec = self.env.spec
        settings = cfg.explorer_settings()
        self.explorer = make_explorer(cfg.explorer, spec.obs_dim, spec.action_dim, settings,
                                      seed=episode_seed(cfg.seed, 10_000_000 + slot))
        self.ticket: Ticket | None = None
        self.row = 0
        self.obs: np.ndarray | None = None

    def run_segment(self, feedback: dict, n: int) -> Segment | None:
        """Continue (or start) the episode the learner assigned in ``feedback`` for up to ``n`` steps."""
        ticket = feedback.get("ticket")
        if ticket is None:
            return None
        if feedback.get("policy") is not None:
            self.explorer.load_policy_state(feedback["policy"])
        spec = self.env.spec
        rows = []
        if self.ticket is None or self.ticket.episode != ticket.episode or not feedback.get("accepted", True):
            self.ticket, self.row = ticket, 0
            self.env.task._random = np.random.RandomState(episode_seed(self.cfg.seed, ticket.episode))
            s = self.env.reset()
            self.obs = s.obs
            rows.append((s.obs, np.zeros(spec.action_dim, np.float32), self.env.physics_state(), 1.0))
            first_row = 0
        else:
            first_row = self.row + 1
        step0 = int(feedback.get("steps", 0))
        last, taken = False, 0
        while taken < n and not last:
            a = np.asarray(self.explorer.act(self.obs, step0 + taken), np.float32)
            s = self.env.step(a)
            self.row += 1
            taken += 1
            rows.append((s.obs, a, self.env.physics_state(), s.discount))
            self.obs = s.obs
            last = s.last or self.row >= ticket.length
        obs, act, phys, disc = (np.array(x) for x in zip(*rows))
        return Segment(self.slot, ticket, first_row, obs.astype(np.float32), act.astype(np.float32), phys,
                       disc.astype(np.float32), last, node_address())


class LearnerCore:
    """Owns the explorer's learning, the ticket plan, the dataset commits and checkpoints."""

    def __init__(self, cfg: CollectConfig, run_key: str, knn: dict | None = None):
        self.cfg, self.run_key = cfg, run_key
        self.spec = cfg.make_env().spec
        self.explorer, self.knn = build_explorer(cfg, run_key, knn, self.spec)
        chunks = plan_chunks(int(cfg.steps), self.spec.episode_length, 1)
        self.tickets = {c.first_episode: Ticket(c.first_episode, c.lengths[0]) for c in chunks}
        self.pdir = partition_dir(Path(cfg.out), cfg.domain, cfg.partition_objective, cfg.partition_param, cfg.seed)
        self.ckpt = self.pdir / "_checkpoints" / f"{run_key}.pt"
        self.committed: set[int] = set()
        self.seq = 0
        self.steps_ingested = 0
        self.updates = 0
        self.in_progress: dict[int, dict] = {}   # slot -> {ticket, rows...}
        self.pending: list[Episode] = []
        self.pending_tickets: list[int] = []
        self.stats = {"intr": []}
        self.rejected = 0  # segments refused because their worker or this learner restarted
        self.restored = self._restore()

    # ------------------------------------------------------------------ tickets
    def _free(self) -> list[int]:
        busy = {p["ticket"].episode for p in self.in_progress.values()}
        return [e for e in sorted(self.tickets) if e not in self.committed and e not in busy
                and e not in self.pending_tickets]

    def _assign(self, slot: int) -> Ticket | None:
        free = self._free()
        if not free:
            self.in_progress.pop(slot, None)
            return None
        t = self.tickets[free[0]]
        self.in_progress[slot] = {"ticket": t, "rows": [], "rint": [], "next_row": 0, "last_obs": None}
        return t

    def _feedback(self, slot: int, ticket: Ticket | None, accepted: bool) -> dict:
        return {"ticket": ticket, "accepted": accepted, "policy": self.explorer.policy_state(),
                "steps": self.steps_ingested}

    def next_ticket(self, slot: int) -> dict:
        cur = self.in_progress.get(slot)
        return self._feedback(slot, cur["ticket"] if cur else self._assign(slot), True)

    def abort(self, slot: int) -> dict:
        """The worker in ``slot`` died: drop its partial episode and give the slot a fresh ticket."""
        self.in_progress.pop(slot, None)
        return self._feedback(slot, self._assign(slot), False)

    # ------------------------------------------------------------------ ingest
    def ingest(self, seg: Segment | None) -> dict:
        if seg is None:
            return self._feedback(-1, None, True)
        cur = self.in_progress.get(seg.slot)
        if cur is None or cur["ticket"].episode != seg.ticket.episode or seg.first_row != cur["next_row"]:
            # unknown ticket (e.g. after a learner restart) or a gap (a restarted worker): start a fresh ticket
            self.rejected += 1
            self.in_progress.pop(seg.slot, None)
            return self._feedback(seg.slot, self._assign(seg.slot), False)
        first = 1 if seg.first_row == 0 else 0
        for i in range(first, len(seg.obs)):
            o = seg.obs[i - 1] if i > 0 else cur["last_obs"]
            last_row = seg.last and i == len(seg.obs) - 1
            metrics = self.explorer.observe(o, seg.action[i], seg.obs[i], float(seg.discount[i]), last_row,
                                            self.steps_ingested)
            self.steps_ingested += 1
            if "critic/loss" in metrics:
                self.updates += 1
            if "intr/reward_mean" in metrics:
                self.stats["intr"].append(metrics["intr/reward_mean"])
        cur["next_row"] += len(seg.obs)
        cur["last_obs"] = seg.obs[-1]
        cur["rows"].append((seg.obs, seg.action, seg.physics, seg.discount))
        r = self.explorer.intrinsic_rewards(seg.obs[first:]) if len(seg.obs) > first else np.zeros(0)
        r = np.full(len(seg.obs) - first, np.nan, np.float32) if r is None else np.asarray(r, np.float32)
        cur["rint"].append(np.concatenate([np.zeros(first, np.float32), r]))
        ticket = seg.ticket
        if seg.last:
            obs, act, phys, disc = (np.concatenate(x) for x in zip(*cur["rows"]))
            ri = np.concatenate(cur["rint"])
            ep = Episode(f"{self.run_key}-{ticket.episode:06d}", obs, act, phys, disc,
                         None if np.isnan(ri[1:]).all() else np.nan_to_num(ri))
            self.pending.append(ep)
            self.pending_tickets.append(ticket.episode)
            del self.in_progress[seg.slot]
            ticket = self._assign(seg.slot)
            if len(self.pending) >= self.cfg.episodes_per_chunk or (not self._free() and not self.in_progress):
                self._commit()
        return self._feedback(seg.slot, ticket, True)

    def _commit(self) -> None:
        if not self.pending:
            return
        name = _seq_file(self.run_key, self.seq)
        writer = DatasetWriter(self.cfg.out, self.spec, self.cfg.partition_objective, self.cfg.partition_param,
                               self.cfg.seed, config=asdict(self.cfg), writer_id=name[:-len("-000000.parquet")],
                               rows_per_file=1 << 62, run_key=self.run_key)
        for ep in self.pending:
            writer.write_episode(ep)
        writer.close()
        self.committed.update(self.pending_tickets)
        self.pending, self.pending_tickets = [], []
        self.seq += 1
        self._checkpoint()

    # ------------------------------------------------------------------ checkpoint
    def _checkpoint(self) -> None:
        save_checkpoint(self.ckpt, explorer_state(self.explorer, self.knn, committed=sorted(self.committed),
                                                  seq=self.seq, steps_ingested=self.steps_ingested,
                                                  updates=self.updates))

    def _restore(self) -> bool:
        s = load_explorer_state(self.ckpt, self.explorer, self.knn)
        if s is not None:
            self.committed, self.seq = set(s["committed"]), int(s["seq"])
            self.steps_ingested, self.updates = int(s["steps_ingested"]), int(s["updates"])
        for p in self.pdir.glob(f"{self.run_key}-c*-000000.parquet") if self.pdir.is_dir() else []:
            if int(p.name[len(self.run_key) + 2:len(self.run_key) + 8]) >= self.seq:
                p.unlink()  # committed after the checkpoint: a lost future
        return s is not None

    def status(self) -> dict:
        intr = self.stats["intr"]
        out = {"done": len(self.committed) == len(self.tickets), "committed_steps":
               sum(self.tickets[e].length for e in self.committed), "steps_ingested": self.steps_ingested,
               "updates": self.updates, "restored": self.restored, "rejected": self.rejected, "node": node_address(),
               "intr_reward_mean": float(np.mean(intr)) if intr else None,
               "knn_ms": (1000 * self.knn.seconds / self.knn.calls) if self.knn and self.knn.calls else None}
        self.stats["intr"] = []
        return out
