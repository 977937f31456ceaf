"""``KnnService``: one named Ray actor per cluster serving k-NN distances and rewards.

Explorers send batches of representations (512-d for ICM-APT) and get back k-NN
distances or intrinsic rewards (behavioral entropy, Rényi, Shannon; see
:mod:`entropy.rewards`, arXiv 2502.04141 Eq. 24 for BE).  Two reference modes:

* ``"batch"`` — exactly URLB's APT particle estimator (``utils.PBE``): each vector
  against the other vectors of the same call, the point's own zero distance
  counted among the k (``include_self=True``, URLB's behaviour; configurable).
  Nothing is stored.
* ``"window"`` — a shared ring buffer of each run's most recent ``capacity``
  representations (:class:`entropy.knn_index.KnnIndex`); with ``add=True`` the
  call's vectors are inserted first and each query excludes its own stored copy.

Deliberate differences from URLB: window mode itself (URLB only has batch
mode; the window gives stationary-ish rewards across explorers); distances are
FAISS brute force with the selected neighbours' distances recomputed exactly;
the running-mean state of ``knn_rms`` lives in the service per (run, reward
config) and is snapshotted.

Fault tolerance.  The actor is created with ``max_restarts=-1`` and
``max_task_retries=3`` under an explicit namespace with ``get_if_exists=True``
(:func:`get_knn_service`).  It snapshots its windows, insert ids and running
means to ``<snapshot_dir>/knn_service.npz`` (temp file, fsync, ``os.replace``)
every ``snapshot_every_s`` seconds of mutating calls, and ``__init__`` restores
the snapshot after a restart.  Inserts are idempotent: a call may carry
``seq`` (any string/int id unique per run); a repeated ``(run, seq)`` is not
inserted again (Ray may run a retried task twice).  :class:`KnnClient` retries
through restarts with exponential backoff and assigns ``seq`` automatically.
Vectors added after the last snapshot are lost in a crash (at most
``snapshot_every_s`` seconds of data; the window refills on its own).

Placement: ``num_gpus=1`` when the cluster has a GPU (FAISS ``knn_gpu``),
otherwise ``num_cpus`` CPUs (default 1) and FAISS OpenMP threads set to them
(Ray sets ``OMP_NUM_THREADS`` from the actor's CPUs).
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import ray
from ray.exceptions import ActorUnavailableError, RayActorError

from bex.entropy.knn_index import KnnIndex, check_vectors
from bex.entropy.rewards import KnnRewardTransform, RewardConfig
from bex.replay.writer import temp_file

log = logging.getLogger(__name__)

SERVICE_NAME = "bex-knn"
NAMESPACE = "bex"
SNAPSHOT_FILE = "knn_service.npz"
MODES = ("batch", "window")
_SEQ_MEMORY = 4096    # (run, seq) ids remembered per run for idempotency
_RESULT_MEMORY = 64   # results of recent calls with a seq, returned as-is on a retry


class KnnServiceCore:
    """The service logic as a plain class (no Ray): unit-testable, wrapped by :class:`KnnService`.

    ``KnnServiceCore(dim, capacity=100_000, snapshot_dir=None, snapshot_every_s=30.0,
    num_threads=None, use_gpu=None)``.
    """

    def __init__(self, dim: int, capacity: int = 100_000, snapshot_dir: str | os.PathLike | None = None,
                 snapshot_every_s: float = 30.0, num_threads: int | None = None,
                 use_gpu: bool | None = None) -> None:
        self.index = KnnIndex(dim, capacity, use_gpu=use_gpu, num_threads=num_threads)
        self.dim, self.capacity = self.index.dim, self.index.capacity
        self.snapshot_dir = Path(snapshot_dir) if snapshot_dir else None
        self.snapshot_every_s = float(snapshot_every_s)
        self._seqs: dict[str, OrderedDict[str, tuple[int, int]]] = {}
        self._results: OrderedDict[tuple[str, str, str], np.ndarray] = OrderedDict()
        self._transforms: dict[tuple[str, str], KnnRewardTransform] = {}
        self._lock = threading.RLock()
        self._dirty = False
        self._last_snapshot = time.monotonic()
        self.restored = False
        self.calls = 0
        if self.snapshot_dir is not None:
            self.snapshot_dir.mkdir(parents=True, exist_ok=True)
            self.restored = self._restore()

    # ----------------------------------------------------------------- public
    def add(self, run: str, vectors, seq: str | int | None = None) -> int:
        """Insert ``vectors`` (n, dim) into ``run``'s window (once per ``(run, seq)``); returns the run's size."""
        with self._lock:
            self._insert(run, check_vectors(vectors, self.dim), seq)
            self._after_mutation()
            return self.index.size(run)

    def knn(self, run: str, vectors, k: int, *, mode: str = "window", add: bool = True,
            seq: str | int | None = None, include_self: bool = True) -> np.ndarray:
        """k-NN distances (B, k), float32, ascending.

        ``mode="batch"``: URLB's batch-local k-NN (``include_self`` as URLB: True).
        ``mode="window"``: against ``run``'s window; ``add=True`` inserts first and
        excludes each query's own copy (``include_self`` is ignored).
        """
        return self._cached(run, seq, "knn", lambda: self._knn(run, vectors, k, mode, add, seq, include_self))

    def rewards(self, run: str, vectors, config: RewardConfig | Mapping[str, Any], *, mode: str = "window",
                add: bool = True, seq: str | int | None = None) -> np.ndarray:
        """Intrinsic rewards (B,), float32, for ``config`` (``RewardConfig`` or its dict)."""
        cfg = config if isinstance(config, RewardConfig) else RewardConfig.from_dict(config)

        def compute() -> np.ndarray:
            dist = self._knn(run, vectors, cfg.k, mode, add, seq, cfg.include_self)
            key = (run, json.dumps(cfg.to_dict(), sort_keys=True))
            with self._lock:
                transform = self._transforms.get(key)
                if transform is None:
                    transform = self._transforms[key] = KnnRewardTransform(cfg)
                out = transform(dist).astype(np.float32)
                if cfg.rms:
                    self._after_mutation()
            return out

        return self._cached(run, seq, "rewards", compute)

    def size(self, run: str) -> int:
        return self.index.size(run)

    def reset(self, run: str | None = None) -> None:
        """Forget one run (or all) including its insert ids and running means."""
        with self._lock:
            self.index.reset(run)
            for r in [r for r in self._seqs if run is None or r == run]:
                del self._seqs[r]
            for key in [key for key in self._transforms if run is None or key[0] == run]:
                del self._transforms[key]
            self._results.clear()
            self._after_mutation()

    def info(self) -> dict[str, Any]:
        """Sizes per run and the service settings."""
        return {"dim": self.dim, "capacity": self.capacity, "use_gpu": self.index.use_gpu,
                "runs": {r: self.index.size(r) for r in self.index.runs()},
                "written": {r: self.index.written(r) for r in self.index.runs()},
                "restored": self.restored, "calls": self.calls,
                "snapshot_path": str(self._snapshot_path()) if self.snapshot_dir else None}

    def ping(self) -> bool:
        return True

    # ---------------------------------------------------------------- helpers
    def _cached(self, run: str, seq, method: str, compute) -> np.ndarray:
        self.calls += 1
        if seq is None:
            return compute()
        key = (run, str(seq), method)
        with self._lock:
            if key in self._results:
                return self._results[key].copy()
        out = compute()
        with self._lock:
            self._results[key] = out
            while len(self._results) > _RESULT_MEMORY:
                self._results.popitem(last=False)
        return out

    def _knn(self, run: str, vectors, k: int, mode: str, add: bool, seq, include_self: bool) -> np.ndarray:
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is unknown: allowed {', '.join(MODES)}")
        x = check_vectors(vectors, self.dim)
        if mode == "batch":
            return self.index.search_batch(x, k, include_self=include_self)[0]
        if not add:
            return self.index.search(run, x, k)[0]
        with self._lock:  # insert and search together: the slots cannot be overwritten in between
            most = min(self.capacity, self.index.size(run) + x.shape[0])
            if int(k) != k or k < 1 or k >= most:  # reject before inserting anything
                raise ValueError(f"k={k!r} is out of range for run {run!r} with at most {most} stored vectors "
                                 f"after this insert: allowed 1 <= k < {most}")
            self_slots = self._insert(run, x, seq)
            try:
                return self.index.search(run, x, k, self_slots=self_slots)[0]
            finally:
                self._after_mutation()

    def _insert(self, run: str, x: np.ndarray, seq) -> np.ndarray:
        """Insert unless ``(run, seq)`` was seen; return the slots now holding ``x`` (-1: gone)."""
        seqs = self._seqs.setdefault(run, OrderedDict())
        if seq is not None and str(seq) in seqs:
            start, n = seqs[str(seq)]
            if n != x.shape[0]:
                raise ValueError(f"seq={seq!r} was used for {n} vectors of run {run!r}, now {x.shape[0]}")
            pos = start + np.arange(n)
            alive = pos >= self.index.written(run) - self.capacity
            return np.where(alive, pos % self.capacity, -1).astype(np.int64)
        start = self.index.written(run)
        slots = self.index.add(run, x)
        if seq is not None:
            seqs[str(seq)] = (start, x.shape[0])
            while len(seqs) > _SEQ_MEMORY:
                seqs.popitem(last=False)
        return slots

    # -------------------------------------------------------------- snapshots
    def _snapshot_path(self) -> Path:
        assert self.snapshot_dir is not None
        return self.snapshot_dir / SNAPSHOT_FILE

    def _after_mutation(self) -> None:
        self._dirty = True
        if self.snapshot_dir is not None and time.monotonic() - self._last_snapshot >= self.snapshot_every_s:
            self.snapshot()

    def snapshot(self) -> str | None:
        """Write the snapshot now (atomically); returns its path, or None without a snapshot_dir."""
        if self.snapshot_dir is None:
            return None
        with self._lock:
            state = self.index.state_dict()
            runs = list(state["runs"])
            meta = {"dim": self.dim, "capacity": self.capacity, "runs": runs,
                    "written": {r: state["runs"][r]["written"] for r in runs},
                    "seqs": {r: [[s, a, n] for s, (a, n) in q.items()] for r, q in self._seqs.items()},
                    "transforms": [[run, cfg, t.state_dict()] for (run, cfg), t in self._transforms.items()],
                    "time": time.time()}
            arrays = {f"run_{i}": state["runs"][r]["data"] for i, r in enumerate(runs)}
            path = self._snapshot_path()
            with temp_file(path) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            self._dirty = False
            self._last_snapshot = time.monotonic()
            return str(path)

    def _restore(self) -> bool:
        path = self._snapshot_path()
        if not path.exists():
            return False
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            if int(meta["dim"]) != self.dim:
                raise ValueError(f"snapshot {path} has dim={meta['dim']}, the service dim={self.dim}: "
                                 "use another snapshot_dir")
            runs = {r: {"data": z[f"run_{i}"], "written": int(meta["written"][r])}
                    for i, r in enumerate(meta["runs"])}
        self.index.load_state_dict({"dim": meta["dim"], "capacity": meta["capacity"], "runs": runs})
        if int(meta["capacity"]) == self.capacity:  # slot ids stay valid only with the same layout
            self._seqs = {r: OrderedDict((s, (a, n)) for s, a, n in q) for r, q in meta["seqs"].items()}
        for run, cfg, st in meta["transforms"]:
            t = self._transforms[(run, cfg)] = KnnRewardTransform(json.loads(cfg))
            t.load_state_dict(st)
        log.info("KnnService restored %d runs from %s", len(runs), path)
        return True


@ray.remote
class KnnService(KnnServiceCore):
    """Ray actor around :class:`KnnServiceCore`; create it with :func:`get_knn_service`."""

    def __init__(self, dim: int, capacity: int = 100_000, snapshot_dir: str | None = None,
                 snapshot_every_s: float = 30.0, num_threads: int | None = None,
                 use_gpu: bool | None = None) -> None:
        if num_threads is None:  # FAISS threads = the CPUs Ray gave this actor
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
            num_threads = max(1, int(round(cpus)))
        super().__init__(dim, capacity, snapshot_dir, snapshot_every_s, num_threads, use_gpu)
        with warnings.catch_warnings():  # Ray 2.60's own property reads a deprecated attribute internally
            warnings.simplefilter("ignore", DeprecationWarning)
            self.reconstructed = ray.get_runtime_context().was_current_actor_reconstructed

    def info(self) -> dict[str, Any]:
        return {**super().info(), "reconstructed": self.reconstructed}


def get_knn_service(dim: int, capacity: int = 100_000, snapshot_dir: str | os.PathLike | None = None, *,
                    name: str = SERVICE_NAME, namespace: str = NAMESPACE, num_cpus: float | None = None,
                    detached: bool = False, snapshot_every_s: float = 30.0, num_threads: int | None = None,
                    use_gpu: bool | None = None, check: bool = True):
    """Return the handle of the cluster's ``KnnService``, creating it if needed.

    Ray must be initialised (``cluster.runtime.init_ray``).  On a cluster with a GPU
    the actor asks for one GPU (and ``num_cpus`` or 1 CPU), otherwise ``num_cpus``
    (default 1) CPUs.  ``detached=True`` keeps it alive after the driver exits.
    With ``check`` an existing service of another ``dim`` raises ``ValueError``.
    """
    has_gpu = ray.cluster_resources().get("GPU", 0) >= 1
    resources: dict[str, Any] = {"num_cpus": 1 if num_cpus is None else num_cpus}
    if has_gpu and use_gpu is not False:
        resources["num_gpus"] = 1
    opts: dict[str, Any] = dict(name=name, namespace=namespace, get_if_exists=True, max_restarts=-1,
                                max_task_retries=3, **resources)
    if detached:
        opts["lifetime"] = "detached"
    handle = KnnService.options(**opts).remote(
        dim, capacity, None if snapshot_dir is None else str(snapshot_dir), snapshot_every_s,
        num_threads, use_gpu)
    if check:
        got = ray.get(handle.info.remote())["dim"]
        if got != dim:
            raise ValueError(f"KnnService {namespace}/{name} already exists with dim={got}, asked dim={dim}")
    return handle


class KnnClient:
    """Calls the ``KnnService`` and retries through actor restarts.

    Retries ``RayActorError`` / ``ActorUnavailableError`` up to ``retries`` times with
    exponential backoff (``backoff_s`` doubling up to ``max_backoff_s``), looking the
    actor up again (or re-creating it) between tries.  Each mutating call gets a
    unique ``seq`` so a retried insert is applied once.  Other errors (``ValueError``
    for bad input) propagate at once.
    """

    def __init__(self, dim: int, capacity: int = 100_000, snapshot_dir: str | os.PathLike | None = None, *,
                 retries: int = 10, backoff_s: float = 0.1, max_backoff_s: float = 5.0,
                 **service_kwargs: Any) -> None:
        self._create = dict(dim=dim, capacity=capacity, snapshot_dir=snapshot_dir, **service_kwargs)
        self.retries, self.backoff_s, self.max_backoff_s = int(retries), float(backoff_s), float(max_backoff_s)
        self._prefix = uuid.uuid4().hex[:12]
        self._counter = 0
        self.retried = 0
        self.handle = self._call_with_retry(lambda: get_knn_service(**self._create), relookup=False)

    def _next_seq(self) -> str:
        self._counter += 1
        return f"{self._prefix}-{self._counter}"

    def _call_with_retry(self, fn, relookup: bool = True):
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except (RayActorError, ActorUnavailableError) as e:
                if attempt == self.retries:
                    raise
                self.retried += 1
                log.warning("KnnService unavailable (%s); retry %d in %.2fs", type(e).__name__, attempt + 1, delay)
                time.sleep(delay)
                delay = min(2 * delay, self.max_backoff_s)
                if relookup:
                    try:
                        self.handle = get_knn_service(**self._create, check=False)
                    except (RayActorError, ActorUnavailableError):
                        pass
        raise AssertionError("unreachable")  # pragma: no cover

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``ray.get(service.<method>.remote(*args, **kwargs))`` with retries."""
        return self._call_with_retry(lambda: ray.get(getattr(self.handle, method).remote(*args, **kwargs)))

    def add(self, run: str, vectors) -> int:
        return self.call("add", run, np.asarray(vectors, np.float32), seq=self._next_seq())

    def knn(self, run: str, vectors, k: int, *, mode: str = "window", add: bool = True,
            include_self: bool = True) -> np.ndarray:
        return self.call("knn", run, np.asarray(vectors, np.float32), k, mode=mode, add=add,
                         seq=self._next_seq(), include_self=include_self)

    def rewards(self, run: str, vectors, config: RewardConfig | Mapping[str, Any], *, mode: str = "window",
                add: bool = True) -> np.ndarray:
        cfg = config.to_dict() if isinstance(config, RewardConfig) else dict(config)
        return self.call("rewards", run, np.asarray(vectors, np.float32), cfg, mode=mode, add=add,
                         seq=self._next_seq())

    def snapshot(self) -> str | None:
        return self.call("snapshot")

    def info(self) -> dict[str, Any]:
        return self.call("info")


# ---------------------------------------------------------------------------------------------- explorers' side
def uses_service(cfg, knn: dict | None) -> int | None:
    """The representation size of the ``KnnService`` a collection run calls, or None when it calls none.

    ``cfg`` is a :class:`bex.actors.collect.CollectConfig`.  APT's ``window``
    mode shares a ring buffer, so it goes to the cluster's service.  ``batch``
    mode (URLB's batch-local k-NN, the default) shares no state: it runs in the
    learner's process with the same exact selection, unless
    ``knn["remote_batch"]`` asks for the service (e.g. a GPU service node serving
    CPU learners).  ``recent`` mode needs the learner's replay, so it always runs
    in process.
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


class ServiceKnnRewards:
    """The k-NN reward factory a collection core calls in its own process (picklable: dim and options)."""

    def __init__(self, dim: int, opts: Mapping[str, Any] | None = None):
        self.dim = int(dim)
        self.opts = {k: v for k, v in (opts or {}).items() if k != "remote_batch"}

    def __call__(self, config, run_key: str) -> "ServiceKnnReward":
        client = KnnClient(self.dim, **dict(self.opts, name=service_name(self.dim)))
        return ServiceKnnReward(config, run_key, client)


def knn_reward_factory(cfg, knn: dict | None) -> ServiceKnnRewards | None:
    """What a collection core of run ``cfg`` builds its k-NN reward with (None: in process)."""
    dim = uses_service(cfg, knn)
    return None if dim is None else ServiceKnnRewards(dim, knn)


class ServiceKnnReward:
    """APT's k-NN reward computed by the cluster's ``KnnService`` (the injected callable).

    ``__call__(rep)`` sends the batch of representations to the service (mode
    ``batch`` = URLB's batch-local k-NN, or ``window``); ``query`` scores single
    new states against the last batch in process for the dataset's per-step
    ``reward_intrinsic`` column (diagnostic; with ``knn_rms`` the running mean
    lives in the service and is not applied there).
    """

    def __init__(self, config, run: str, client: KnnClient):
        from bex.actors import BatchKnnReward

        self._local = BatchKnnReward(config)  # only for query(): scores against the last batch
        self.config, self.run, self.client = config, run, client
        self.reward_config = config.reward_config()
        self.calls, self.seconds = 0, 0.0

    def __call__(self, rep):
        import torch

        t0 = time.perf_counter()
        with torch.no_grad():
            r = self.client.rewards(self.run, rep.detach().cpu().numpy(), self.reward_config,
                                    mode=self.config.knn_mode)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        self._local._ref = rep.detach()
        return torch.tensor(np.asarray(r), dtype=torch.float32, device=rep.device)  # copy: Ray returns read-only

    def query(self, rep_q):
        return self._local.query(rep_q)

    def state_dict(self) -> dict:
        return {"local": self._local.state_dict()}

    def load_state_dict(self, state) -> None:
        self._local.load_state_dict(state["local"])
