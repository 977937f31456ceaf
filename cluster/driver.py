"""The collection driver: many runs (a grid) at once on one Ray cluster.

Three kinds of run, multiplexed with one ``ray.wait`` loop:

* random explorer: stateless chunk collectors (``ChunkCollector``), as many as
  ``actors``, fed chunks dynamically;
* learned explorer, E = 1: one ``LearnedRunner`` actor running URLB's loop,
  a chunk per call;
* learned explorer, E > 1: one ``LearnerCore`` actor and E ``EnvWorkerCore``
  actors exchanging segments.

The cores are Ray-free classes of :mod:`bex.actors.collect` (plans, seeds,
chunk files, checkpoints and exactly-once commits live there); this module only
wraps them in Ray actors and multiplexes them.

All learned runs share the cluster's one ``KnnService``.  Every actor is created
with ``max_restarts=-1``; learners and runners also retry their calls after a
restart (they restore from their checkpoints), workers do not (the driver
reassigns their episode).  A live table shows env steps/s, updates/s,
intrinsic reward and k-NN latency per run.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bex.actors.collect import ChunkCollector, CollectConfig, EnvWorkerCore, LearnedRunner, LearnerCore, prepare_output
from bex.core.errors import RunFailed
from bex.core.progress import Progress, Reporter, report
from bex.replay import atomic_write_bytes
from bex.replay.schema import dumps

from .knn_service import knn_reward_factory
from .runtime import TERMINATED, node_address

SEGMENT_STEPS = 100
#: A run whose actors die this many times more than it has workers stops with an error (a worker that
#: cannot be created, or crashes at once, would otherwise be re-created forever).
MAX_EXTRA_FAILURES = 5


class CollectionError(RunFailed):
    """A collection run that cannot go on (its actors keep dying); the message is one line."""


def _first_line(e: BaseException) -> str:
    cause = getattr(e, "cause", None) or e.__cause__ or e
    text = str(cause).strip().splitlines()
    for line in reversed(text):  # a remote traceback ends with the exception line
        if line.strip() and not line.startswith(" "):
            return line.strip()[:300]
    return type(cause).__name__


class _Run:
    """Common state of one run in the driver."""

    def __init__(self, cfg: CollectConfig, resume: bool):
        self.cfg = cfg
        self.spec, self.chunks, self.done_chunks = prepare_output(cfg, resume)
        self.run_key = cfg.run_key()
        self.label = (f"{cfg.domain}/{cfg.partition_objective}"
                      + ("" if cfg.partition_param is None else f"={cfg.partition_param}") + f"/s{cfg.seed}")
        self.steps = sum(c.steps for c in self.chunks if c.first_episode in self.done_chunks)
        self.t0 = time.perf_counter()  # reset when the run launches (see launch())
        self.t_end: float | None = None  # set when the run finishes: its clock stops there
        self.steps_at_start = self.steps
        self.nodes: dict[str, int] = {}
        self.updates = 0
        self.intr: float | None = None
        self.knn_ms: float | None = None
        self.restarts = 0     # failures the driver saw (a call raised)
        self.recovered = 0    # recoveries reported by the run itself (restored checkpoints, refused segments)
        self.finished = False

    def elapsed(self) -> float:
        """Seconds from the run's launch to its end (or to now while it runs)."""
        return max((self.t_end if self.t_end is not None else time.perf_counter()) - self.t0, 1e-9)

    def row(self) -> dict:
        el = self.elapsed()
        return dict(run=self.label, steps=self.steps, total=int(self.cfg.steps), resumed_from=self.steps_at_start,
                    env_steps_per_s=(self.steps - self.steps_at_start) / el, updates_per_s=self.updates / el,
                    intr_reward_mean=self.intr, knn_ms=self.knn_ms, restarts=self.restarts + self.recovered)

    def summary(self) -> dict:
        wall = self.elapsed()
        s = dict(run_key=self.run_key, config=asdict(self.cfg), env_spec=self.spec.to_dict(), steps=self.steps,
                 chunks=len(self.chunks), wall_s=wall,
                 env_steps_per_s=(self.steps - self.steps_at_start) / max(wall, 1e-9),
                 updates=self.updates, nodes=self.nodes, restarts=self.restarts + self.recovered)
        atomic_write_bytes(self.cfg.partition / "_bex_run.json", dumps(s).encode())
        return s

    def _check_failures(self, e: BaseException) -> None:
        if self.restarts > int(self.cfg.actors) + MAX_EXTRA_FAILURES:
            raise CollectionError(f"run {self.label}: its actors died {self.restarts} times; last error: "
                                  f"{_first_line(e)}")

    def _count(self, res: dict) -> None:
        self.steps += res["steps"]
        self.nodes[res["node"]] = self.nodes.get(res["node"], 0) + res["steps"]


class _RandomRun(_Run):
    def start(self, ray, opts: dict) -> list:
        self.ray, self.opts = ray, dict(opts, max_task_retries=-1, scheduling_strategy="SPREAD")
        self.Worker = ray.remote(ChunkCollector)
        self.queue = [c for c in self.chunks if c.first_episode not in self.done_chunks]
        self.inflight: dict[Any, tuple[int, Any]] = {}
        if not self.queue:  # resumed and already complete: no actor (it would hold a CPU and a run slot)
            self.workers, self.finished = [], True
            return []
        n = min(self.cfg.actors, len(self.queue))
        self.workers = [self.Worker.options(**self.opts).remote(self.cfg, self.run_key, node=node_address)
                        for _ in range(n)]
        for i in range(n):
            self._submit(i)
        return list(self.inflight)

    def _submit(self, i: int) -> None:
        if self.queue:
            c = self.queue.pop(0)
            self.inflight[self.workers[i].collect.remote(c)] = (i, c)

    def handle(self, ref) -> list:
        i, chunk = self.inflight.pop(ref)
        try:
            res = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as e:  # died for good: a fresh actor redoes the chunk
            self.restarts += 1
            self._check_failures(e)
            self.workers[i] = self.Worker.options(**self.opts).remote(self.cfg, self.run_key, node=node_address)
            self.queue.insert(0, chunk)
            res = None
        if res is not None:
            self._count(res)
        self._submit(i)
        self.finished = not self.inflight
        if self.finished:
            for w in self.workers:
                self.ray.kill(w)
        return [r for r, (j, _) in self.inflight.items() if j == i]


class _LearnedRun(_Run):
    """E = 1: one runner actor, one chunk per call, in order."""

    def start(self, ray, opts: dict, knn: dict) -> list:
        self.ray = ray
        self.actor = ray.remote(LearnedRunner).options(**dict(opts, max_task_retries=-1)).remote(
            self.cfg, self.run_key, knn_reward_factory(self.cfg, knn), node=node_address)
        self.next = 0
        self.steps = 0
        return self._submit()

    def _submit(self) -> list:
        if self.next >= len(self.chunks):
            self.finished = True
            self.ray.kill(self.actor)
            return []
        self.ref = self.actor.run_chunk.remote(self.next)
        return [self.ref]

    def handle(self, ref) -> list:
        try:
            res = self.ray.get(ref)  # the actor restarts and the call is retried by Ray after a crash
        except self.ray.exceptions.RayError as e:  # it cannot be (re)created or its task fails for good
            raise CollectionError(f"run {self.label}: {_first_line(e)}") from None
        self.recovered = max(self.recovered, int(res.get("restored", False)))
        self._count(res)
        self.updates += res.get("updates", 0) or 0
        self.intr = res.get("intr_reward_mean", self.intr)
        self.knn_ms = res.get("knn_ms", self.knn_ms)
        self.next += 1
        return self._submit()


class _DistributedRun(_Run):
    """E > 1: a learner actor and E environment worker actors."""

    def start(self, ray, opts: dict, knn: dict) -> list:
        self.ray = ray
        self.learner = ray.remote(LearnerCore).options(**dict(opts, max_task_retries=-1)).remote(
            self.cfg, self.run_key, knn_reward_factory(self.cfg, knn), node=node_address)
        wopts = dict(opts, max_task_retries=0, scheduling_strategy="SPREAD",
                     num_cpus=worker_cpus(ray.cluster_resources().get("CPU", 1), self.cfg.actors))
        self.workers = [ray.remote(EnvWorkerCore).options(**wopts).remote(self.cfg, i, node=node_address)
                        for i in range(self.cfg.actors)]
        self.inflight = {w.run_segment.remote(self.learner.next_ticket.remote(i), SEGMENT_STEPS): i
                         for i, w in enumerate(self.workers)}
        self.steps = 0
        self.last_status = 0.0
        return list(self.inflight)

    def handle(self, ref) -> list:
        i = self.inflight.pop(ref)
        try:
            seg = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as e:  # the worker died: Ray restarts it, its episode is dropped
            self.restarts += 1
            self._check_failures(e)
            fb = self.learner.abort.remote(i)
            new = self.workers[i].run_segment.remote(fb, SEGMENT_STEPS)
            self.inflight[new] = i
            return [new]
        if seg is None:  # no tickets left for this worker
            if not self.inflight:
                return self._finish()
            return []
        self.nodes[seg.node] = self.nodes.get(seg.node, 0) + len(seg.obs) - (seg.first_row == 0)
        fb = self.learner.ingest.remote(seg)
        new = self.workers[i].run_segment.remote(fb, SEGMENT_STEPS)
        self.inflight[new] = i
        now = time.perf_counter()
        if now - self.last_status > 1.0:
            self._status()
            self.last_status = now
        return [new]

    def _status(self) -> dict:
        st = self.ray.get(self.learner.status.remote())
        self.steps, self.updates = st["committed_steps"], st["updates"]
        # recoveries the driver does not see itself: a restored learner, segments of restarted workers
        self.recovered = int(st["restored"]) + st["rejected"]
        self.intr = st["intr_reward_mean"] if st["intr_reward_mean"] is not None else self.intr
        self.knn_ms = st["knn_ms"] if st["knn_ms"] is not None else self.knn_ms
        return st

    def _finish(self) -> list:
        st = self._status()
        if not st["done"]:
            raise RuntimeError(f"run {self.label}: workers idle but the learner has not committed every episode")
        self.finished = True
        for a in (*self.workers, self.learner):
            self.ray.kill(a)
        return []


def worker_cpus(cluster_cpus: float, workers: int) -> float:
    """CPUs asked per environment worker: 1, or a share of what the learner leaves on a small machine."""
    return float(min(1.0, max(0.1, (cluster_cpus - 1) / max(workers, 1))))


def knn_service_cpus(cluster_cpus: float) -> float:
    """The k-NN service reserves a CPU on clusters of 4+ CPUs; on a laptop it shares the learner's."""
    return 1.0 if cluster_cpus >= 4 else 0.0


def _make_run(cfg: CollectConfig, resume: bool) -> _Run:
    if cfg.explorer == "random":
        return _RandomRun(cfg, resume)
    if cfg.actors == 1:
        return _LearnedRun(cfg, resume)
    if cfg.explorer == "smm":
        raise ValueError("explorer smm runs with --actors 1 only (its skill is part of the replay observation)")
    return _DistributedRun(cfg, resume)


def run_collections(cfgs: list[CollectConfig], resume: bool = False,
                    progress: Reporter | None = None, max_concurrent_runs: int = 0,
                    knn: dict | None = None, worker_options: dict | None = None) -> list[dict]:
    """Run every collection (validated up front, before any actor starts); returns their summaries.

    ``progress`` gets ``Progress("collect", steps done, steps planned, rows=...)`` at most once a second and at
    the end, with one row per run (``run``, ``steps``, ``total``, ``resumed_from``, rates, ``restarts``)."""
    runs = [_make_run(c, resume) for c in cfgs]  # raises on bad input before Ray starts
    import ray

    from .runtime import init_ray

    init_ray()
    from .status import publishing
    from .storage import check_storage_for_cluster

    for out in sorted({c.out for c in cfgs}):  # a node-local --out on a multi-node cluster fails here
        check_storage_for_cluster(out, ray, root="")
    progress = publishing(report(progress))  # rows also go to `bex status`
    opts = dict(num_cpus=1, max_restarts=-1)
    opts.update(worker_options or {})
    knn = dict(knn or {})
    knn.setdefault("snapshot_dir", str(Path(cfgs[0].out) / "_knn_service"))
    cpus = ray.cluster_resources().get("CPU", 1)
    knn.setdefault("num_cpus", knn_service_cpus(cpus))
    knn.setdefault("num_threads", max(1, int(cpus)) if knn["num_cpus"] == 0 else None)
    # the driver owns the services: they outlive every run's actors and serve the whole grid
    from bex.actors import APTConfig

    from .knn_service import get_knn_service, service_name, uses_service

    windows: dict[int, int] = {}
    for c in cfgs:
        dim = uses_service(c, knn)
        if dim is not None:
            windows[dim] = max(windows.get(dim, 0), APTConfig.from_dict(c.explorer_settings()).knn_window)
    knn.setdefault("capacity", max(windows.values(), default=100_000))
    service_opts = {k: v for k, v in knn.items() if k != "remote_batch"}
    services = [get_knn_service(dim, **dict(service_opts, name=service_name(dim))) for dim in sorted(windows)]
    limit = max_concurrent_runs or len(runs)
    pending, active, owner = list(runs), [], {}

    def launch() -> None:
        while pending and len(active) < limit:
            r = pending.pop(0)
            r.t0 = time.perf_counter()
            refs = r.start(ray, opts) if isinstance(r, _RandomRun) else r.start(ray, opts, knn)
            active.append(r)
            owner.update({ref: r for ref in refs})
            if r.finished:
                r.t_end = time.perf_counter()
                active.remove(r)

    launch()
    last = 0.0
    while owner:
        ready, _ = ray.wait(list(owner), num_returns=1)
        run = owner.pop(ready[0])
        for ref in run.handle(ready[0]):
            owner[ref] = run
        if run.finished and run in active:
            run.t_end = time.perf_counter()
            active.remove(run)
            launch()
        now = time.perf_counter()
        if now - last > 1.0 or not owner:
            rows = tuple(r.row() for r in runs)
            progress(Progress("collect", sum(r["steps"] for r in rows), sum(r["total"] for r in rows), rows=rows))
            last = now
    del services
    if not TERMINATED.is_set():  # a stopped collection's card is written when --resume completes it
        from bex.replay.card import update_card

        for root in sorted({c.out for c in cfgs}):
            update_card(root)
    return [r.summary() for r in runs]
