"""Exact k-NN over per-run ring buffers of recent vectors (FAISS brute force).

``KnnIndex`` keeps, for each named run, the most recent ``capacity`` vectors of
dimension ``dim`` in a float32 ring buffer, and answers exact Euclidean k-NN
queries against it with ``faiss.knn`` (CPU, BLAS-backed, OpenMP threads) or
``faiss.knn_gpu`` when ``faiss.get_num_gpus() > 0`` (reference.md §8: a ring
buffer plus brute-force search is exact, O(1) to insert, needs no id
bookkeeping).  FAISS returns *squared* distances from ``|x|^2 + |y|^2 - 2 x.y``;
bex recomputes the distances of the selected neighbours directly
(``||q - x_j||``), so returned distances carry no cancellation error (the
neighbour *set* can differ from an exact computation only at float32 near-ties).

Queries can exclude their own stored copy (``self_slots``: the slot each query
vector was written to, as returned by :meth:`KnnIndex.add`); ``-1`` means the
query is not stored.  Thread-safe: one lock per run around add/search on CPU,
and a global lock around every GPU call (GPU FAISS is not thread-safe).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

try:  # faiss is a hard dependency of bex, but keep import errors readable
    import faiss
except ImportError as e:  # pragma: no cover
    raise ImportError("entropy.knn_index needs faiss (pip install faiss-cpu)") from e


def gpu_available() -> bool:
    """True when this FAISS build sees a GPU (the only safe gate for ``knn_gpu``)."""
    try:
        return faiss.get_num_gpus() > 0
    except AttributeError:
        return False


def check_vectors(x, dim: int, what: str = "vectors") -> np.ndarray:
    """Return ``x`` as a C-contiguous float32 (n, dim) array or raise ``ValueError``."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 1 and a.size == dim:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] != dim:
        raise ValueError(f"{what} have shape {a.shape}: allowed (n, {dim})")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what} contain NaN or inf: only finite values are allowed")
    return np.ascontiguousarray(a)


@dataclass
class _Ring:
    data: np.ndarray
    count: int = 0        # vectors stored (<= capacity)
    written: int = 0      # vectors ever written (global position of the next write)
    lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def capacity(self) -> int:
        return self.data.shape[0]


class KnnIndex:
    """Exact k-NN over a ring buffer of the latest ``capacity`` vectors per run.

    ``KnnIndex(dim, capacity, use_gpu=None, num_threads=None)``; ``use_gpu=None``
    picks the GPU when FAISS sees one; ``num_threads`` sets FAISS's OpenMP threads.
    """

    def __init__(self, dim: int, capacity: int = 100_000, *, use_gpu: bool | None = None,
                 num_threads: int | None = None) -> None:
        if int(dim) < 1:
            raise ValueError(f"dim={dim!r} is out of range: allowed integer dim >= 1")
        if int(capacity) < 2:
            raise ValueError(f"capacity={capacity!r} is out of range: allowed integer capacity >= 2")
        self.dim, self.capacity = int(dim), int(capacity)
        self.use_gpu = gpu_available() if use_gpu is None else bool(use_gpu and gpu_available())
        if num_threads is not None:
            faiss.omp_set_num_threads(max(1, int(num_threads)))
        self._rings: dict[str, _Ring] = {}
        self._rings_lock = threading.Lock()
        self._gpu_lock = threading.Lock()
        self._gpu_res: Any = None

    # ----------------------------------------------------------------- storage
    def _ring(self, run: str, create: bool = False) -> _Ring:
        with self._rings_lock:
            ring = self._rings.get(run)
            if ring is None:
                if not create:
                    raise ValueError(f"run={run!r} has no stored vectors: known runs {sorted(self._rings)}")
                ring = self._rings[run] = _Ring(np.zeros((self.capacity, self.dim), np.float32))
            return ring

    def add(self, run: str, vectors) -> np.ndarray:
        """Append ``vectors`` (n, dim) to ``run``'s ring; returns the slot of each (-1 if
        already overwritten within this call, when n > capacity)."""
        x = check_vectors(vectors, self.dim)
        ring = self._ring(run, create=True)
        n, cap = x.shape[0], ring.capacity
        with ring.lock:
            start = ring.written
            slots = (start + np.arange(n)) % cap
            keep = slice(max(0, n - cap), n)  # only the last `cap` survive
            ring.data[slots[keep]] = x[keep]
            ring.written += n
            ring.count = min(cap, ring.count + n)
        out = slots.astype(np.int64)
        out[: max(0, n - cap)] = -1
        return out

    def size(self, run: str) -> int:
        """Number of vectors stored for ``run`` (0 for an unknown run)."""
        ring = self._rings.get(run)
        return 0 if ring is None else ring.count

    def written(self, run: str) -> int:
        """Number of vectors ever added to ``run``."""
        ring = self._rings.get(run)
        return 0 if ring is None else ring.written

    def runs(self) -> list[str]:
        return sorted(self._rings)

    def vectors(self, run: str) -> np.ndarray:
        """A copy of ``run``'s stored vectors, in slot order (rows ``0..size-1``)."""
        ring = self._ring(run)
        with ring.lock:
            return ring.data[: ring.count].copy()

    def reset(self, run: str | None = None) -> None:
        """Forget ``run`` (or every run)."""
        with self._rings_lock:
            if run is None:
                self._rings.clear()
            else:
                self._rings.pop(run, None)

    # ------------------------------------------------------------------ search
    def search(self, run: str, queries, k: int, *, self_slots=None) -> tuple[np.ndarray, np.ndarray]:
        """Exact k-NN of ``queries`` (B, dim) among ``run``'s stored vectors.

        ``self_slots`` (B,) int: the slot holding each query's own stored copy, to be
        excluded (``-1``: not stored).  Returns ``(distances, slots)``, each (B, k),
        Euclidean (not squared), ascending.  ``k`` must be < the number stored.
        """
        q = check_vectors(queries, self.dim, "queries")
        ring = self._ring(run)
        with ring.lock:
            n = ring.count
            if int(k) != k or k < 1 or k >= n:
                raise ValueError(f"k={k!r} is out of range for run {run!r} with {n} stored vectors: "
                                 f"allowed 1 <= k < {n}")
            base = ring.data[:n]
            exclude = self_slots is not None
            kk = min(k + 1, n) if exclude else k
            _, idx = self._raw_knn(q, base, kk)
            if exclude:
                idx = _drop_self(idx, np.asarray(self_slots, dtype=np.int64).reshape(-1), k)
            dist = _exact_distances(q, base, idx)
        return dist, idx

    def add_and_search(self, run: str, vectors, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Insert ``vectors``, then return their k-NN in the window excluding their own copies.

        ``k`` is checked before inserting (``k < size after the insert``).
        """
        x = check_vectors(vectors, self.dim)
        ring = self._ring(run, create=True)
        with ring.lock:  # no other thread may overwrite the new slots before the search
            most = min(self.capacity, ring.count + x.shape[0])
            if int(k) != k or k < 1 or k >= most:
                raise ValueError(f"k={k!r} is out of range for run {run!r} with {most} vectors after "
                                 f"this insert: allowed 1 <= k < {most}")
            return self.search(run, x, k, self_slots=self.add(run, x))

    def search_batch(self, queries, k: int, *, include_self: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """URLB's batch-local k-NN: each query against the whole query batch itself.

        ``include_self=True`` (URLB) counts the point's own zero distance as the first of
        the k; ``False`` returns the k nearest *other* points.  Nothing is stored.
        """
        q = check_vectors(queries, self.dim, "queries")
        n = q.shape[0]
        kk = k - 1 if include_self else k
        limit = n if include_self else n - 1
        if int(k) != k or k < 1 or k > limit:
            raise ValueError(f"k={k!r} is out of range for a batch of {n}: allowed 1 <= k <= {limit}"
                             f"{' (self included)' if include_self else ''}")
        own = np.arange(n, dtype=np.int64)
        if kk == 0:
            return np.zeros((n, 1), np.float32), own[:, None]
        _, idx = self._raw_knn(q, q, min(kk + 1, n))
        idx = _drop_self(idx, own, kk)
        dist = _exact_distances(q, q, idx)
        if include_self:
            dist = np.concatenate([np.zeros((n, 1), np.float32), dist], axis=1)
            idx = np.concatenate([own[:, None], idx], axis=1)
        return dist, idx

    def _raw_knn(self, q: np.ndarray, base: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.use_gpu:
            with self._gpu_lock:
                if self._gpu_res is None:
                    self._gpu_res = faiss.StandardGpuResources()
                return faiss.knn_gpu(self._gpu_res, q, base, k)
        return faiss.knn(q, base, k)

    # -------------------------------------------------------------- snapshots
    def state_dict(self) -> dict[str, Any]:
        """Plain-numpy state of every run (stored rows, write counter) for snapshots."""
        out: dict[str, Any] = {"dim": self.dim, "capacity": self.capacity, "runs": {}}
        for run in self.runs():
            ring = self._ring(run)
            with ring.lock:
                out["runs"][run] = {"data": ring.data[: ring.count].copy(), "written": ring.written}
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore runs saved by :meth:`state_dict` (same ``dim``; capacity may differ)."""
        if int(state["dim"]) != self.dim:
            raise ValueError(f"snapshot dim={state['dim']} does not match index dim={self.dim}")
        self.reset()
        for run, s in state["runs"].items():
            data, written = np.asarray(s["data"], np.float32), int(s["written"])
            ring = self._ring(run, create=True)
            m = min(data.shape[0], self.capacity)
            if m == data.shape[0] and self.capacity == int(state["capacity"]):
                ring.data[:m] = data  # same layout: slots keep their meaning
                ring.count, ring.written = m, written
            else:  # re-insert in write order (oldest first) when the capacity changed
                order = np.argsort((np.arange(data.shape[0]) - written) % data.shape[0])
                self.add(run, data[order][-m:])


def _drop_self(idx: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    """Remove each row's own slot from ``idx`` (k+1 columns), else its last column; keep k."""
    if own.shape[0] != idx.shape[0]:
        raise ValueError(f"self_slots has {own.shape[0]} entries for {idx.shape[0]} queries")
    is_self = idx == own[:, None]
    # rows where the own slot was not returned (own = -1, or ties at distance 0) drop the last column
    no_self = ~is_self.any(axis=1)
    is_self[no_self, -1] = True
    is_self &= np.cumsum(is_self, axis=1) == 1  # drop at most one entry per row
    return idx[~is_self].reshape(idx.shape[0], idx.shape[1] - 1)[:, :k]


def _exact_distances(q: np.ndarray, base: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``||q_i - base[idx_ij]||`` computed directly, sorted ascending per row (idx reordered too)."""
    diff = base[idx]
    diff -= q[:, None, :]
    d = np.sqrt(np.einsum("bkd,bkd->bk", diff, diff))
    order = np.argsort(d, axis=1, kind="stable")
    idx[:] = np.take_along_axis(idx, order, axis=1)
    return np.take_along_axis(d, order, axis=1)
