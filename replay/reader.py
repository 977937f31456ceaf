"""Load a bex dataset (or a filtered subset of its partitions) into arrays.

The reader validates every file's footer and schema version before loading, so
a truncated or corrupt file or one written by an unknown schema version is
reported by name instead of being half-read.  Arrays are contiguous numpy
arrays in a fixed order (files sorted by path, rows in file order), so the
relabel cache and the transitions line up row for row.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bex.envs import EnvSpec, parse_task

from .schema import (
    DATASET_META_FILE,
    META_KEY,
    PARTITION_KEYS,
    PARTITION_META_FILE,
    REWARD_DIR,
    SUPPORTED_SCHEMA_VERSIONS,
    read_meta,
)


@dataclass(frozen=True)
class DataFile:
    path: Path
    partition: dict[str, str]
    num_rows: int


@dataclass
class StepArrays:
    """All rows of the selected files, as contiguous arrays."""

    episode_id: np.ndarray      # (N,) object (str)
    step: np.ndarray            # (N,) int32
    observation: np.ndarray     # (N, obs_dim) float32
    action: np.ndarray          # (N, action_dim) float32
    physics: np.ndarray         # (N, physics_dim) float64
    discount: np.ndarray        # (N,) float32
    is_first: np.ndarray        # (N,) bool
    is_last: np.ndarray         # (N,) bool
    reward_intrinsic: np.ndarray  # (N,) float32, NaN where null

    def __len__(self) -> int:
        return next(len(v) for v in vars(self).values() if v is not None)


@dataclass
class Transitions:
    """One-step transitions ``(s, a, r, s', discount)`` plus episode boundaries."""

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    discount: np.ndarray
    is_last: np.ndarray   # s' is the final observation of its episode (time limit or terminal)

    def __len__(self) -> int:
        return len(self.reward)


def transition_rows(steps: StepArrays) -> np.ndarray:
    """Rows that end a transition (every row but an episode's first); row ``i`` pairs with ``i - 1``."""
    if len(steps) and not steps.is_first[0]:
        raise ValueError("dataset does not start with an episode's first row")
    return np.flatnonzero(~steps.is_first)


def _parse_partition(root: Path, path: Path) -> dict[str, str]:
    part = {}
    for comp in path.relative_to(root).parts[:-1]:
        if "=" in comp:
            k, v = comp.split("=", 1)
            part[k] = v
    return part


def _visible(name: str) -> bool:
    return not name.startswith((".", "_"))


def read_parquet(path, columns: Iterable[str] | None = None) -> pa.Table:
    """``pq.read_table`` with page checksums verified; a corrupt file is one ``ValueError`` line naming it."""
    try:
        return pq.read_table(path, columns=None if columns is None else list(columns), use_threads=False,
                             page_checksum_verification=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"corrupt Parquet file {str(path)!r}: {first}") from None


def no_physics_error(path) -> ValueError:
    """The one-line error for a file without the physics state (imported, e.g. from a D4RL-style file)."""
    return ValueError(f"{str(path)!r} has no physics state (imported without one, e.g. from a D4RL-style file): "
                      f"relabelling and physics/positions coverage need it; use the observation")


def has_physics(path) -> bool:
    """Whether a data file records the physics state (its footer's schema; imports without one have a nullable,
    all-null physics column)."""
    return not pq.read_schema(path).field("physics").nullable


class Dataset:
    """A bex dataset on disk: ``Dataset(root, domain="walker", objective="be")``.

    Keyword filters select partitions (a value or a list of values; compared as
    strings, so ``param=0.5`` and ``param="0.5"`` are the same).
    """

    def __init__(self, root: str | os.PathLike, **filters):
        self.root = Path(root)
        if not self.root.exists():
            raise FileNotFoundError(f"dataset {str(self.root)!r} does not exist")
        if not self.root.is_dir():
            raise ValueError(f"dataset path {str(self.root)!r} is a file, not a dataset directory")
        meta_path = self.root / DATASET_META_FILE
        if not meta_path.exists():
            raise ValueError(f"{str(self.root)!r} is not a bex dataset (no {DATASET_META_FILE})")
        self.meta = read_meta(meta_path)
        v = self.meta.get("schema_version")
        if v not in SUPPORTED_SCHEMA_VERSIONS:
            raise ValueError(f"dataset {str(self.root)!r} has unknown schema version {v!r}; "
                             f"this bex reads versions {list(SUPPORTED_SCHEMA_VERSIONS)}")
        for k in filters:
            if k not in PARTITION_KEYS:
                raise ValueError(f"unknown partition filter {k!r}; allowed: {', '.join(PARTITION_KEYS)}")
        self.filters = {k: ({str(x) for x in v} if isinstance(v, (list, tuple, set)) else {str(v)})
                        for k, v in filters.items() if v is not None}
        self.files = self._discover()

    # ---------------------------------------------------------------- discovery
    def _discover(self) -> list[DataFile]:
        files = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if _visible(d))
            for name in sorted(filenames):
                if not (_visible(name) and name.endswith(".parquet")):
                    continue
                path = Path(dirpath) / name
                part = _parse_partition(self.root, path)
                if any(part.get(k) not in vals for k, vals in self.filters.items()):
                    continue
                files.append(DataFile(path, part, self._check_file(path)))
        files.sort(key=lambda f: str(f.path))
        return files

    @staticmethod
    def _check_file(path: Path) -> int:
        try:
            md = pq.read_metadata(path)
        except Exception as e:  # truncated or not Parquet at all
            raise ValueError(f"corrupt or truncated Parquet file {str(path)!r}: {str(e).splitlines()[0]}") from None
        kv = md.metadata or {}
        v = kv.get(META_KEY)
        version = int(v) if v is not None and v.isdigit() else v
        if version not in SUPPORTED_SCHEMA_VERSIONS:
            raise ValueError(f"file {str(path)!r} has unknown schema version {version!r}; "
                             f"this bex reads versions {list(SUPPORTED_SCHEMA_VERSIONS)}")
        return md.num_rows

    @property
    def partitions(self) -> list[dict[str, str]]:
        seen = []
        for f in self.files:
            if f.partition not in seen:
                seen.append(f.partition)
        return seen

    def partition_meta(self, partition: Mapping[str, str]) -> dict:
        pdir = self.root.joinpath(*(f"{k}={partition[k]}" for k in PARTITION_KEYS if k in partition))
        p = pdir / PARTITION_META_FILE
        return read_meta(p) if p.exists() else {}

    @property
    def env_spec(self) -> EnvSpec:
        """The environment of the selected files (one domain per loaded dataset)."""
        domains = sorted({f.partition.get("domain") for f in self.files})
        if not domains:
            raise ValueError(f"dataset {str(self.root)!r} has no data files"
                             + (f" matching {self.filters}" if self.filters else ""))
        if len(domains) > 1:
            raise ValueError(f"dataset {str(self.root)!r} mixes domains {domains}; filter with domain=...")
        meta = self.partition_meta(self.files[0].partition)
        return EnvSpec.from_dict(meta["env_spec"])

    @property
    def num_rows(self) -> int:
        return sum(f.num_rows for f in self.files)

    # ---------------------------------------------------------------- loading
    def _read(self, f: DataFile, columns: Iterable[str] | None) -> pa.Table:
        return read_parquet(f.path, columns)

    def verify(self) -> list[dict]:
        """Read every page of every selected file (all columns; CRC-checked where the file has page
        checksums, as bex's writer writes them) and compare each file's rows with its footer.

        Returns one ``{"file", "rows"}`` per file; the first bad file is a one-line ``ValueError`` naming it.
        """
        out = []
        for f in self.files:
            table = self._read(f, None)
            if table.num_rows != f.num_rows:
                raise ValueError(f"corrupt Parquet file {str(f.path)!r}: footer says {f.num_rows} rows, "
                                 f"read {table.num_rows}")
            out.append({"file": str(f.path), "rows": table.num_rows})
        return out

    def load(self, columns: Iterable[str] | None = None, threads: int | None = None) -> StepArrays:
        """Read the selected files into contiguous arrays (all columns by default).

        Output arrays are allocated once from the footers' row counts and each
        file is decoded straight into its slice (files decode in parallel
        threads; Arrow releases the GIL), so the data is copied once.
        """
        spec = self.env_spec
        cols = list(columns or StepArrays.__dataclass_fields__)
        unknown = [c for c in cols if c not in StepArrays.__dataclass_fields__]
        if unknown:
            raise ValueError(f"unknown column(s) {unknown}; allowed: {list(StepArrays.__dataclass_fields__)}")
        n = self.num_rows
        widths = {"observation": spec.obs_dim, "action": spec.action_dim, "physics": spec.physics_dim}
        dtypes = {"observation": np.float32, "action": np.float32, "physics": np.float64, "step": np.int32,
                  "discount": np.float32, "is_first": np.bool_, "is_last": np.bool_,
                  "reward_intrinsic": np.float32, "episode_id": object}
        out = {c: np.empty((n, widths[c]) if c in widths else n, dtype=dtypes[c]) for c in cols}
        offsets = np.concatenate([[0], np.cumsum([f.num_rows for f in self.files])]).astype(int)

        def fill(i: int) -> None:
            f, lo, hi = self.files[i], offsets[i], offsets[i + 1]
            table = self._read(f, cols)
            if table.num_rows != hi - lo:
                raise ValueError(f"corrupt Parquet file {str(f.path)!r}: footer says {hi - lo} rows, "
                                 f"read {table.num_rows}")
            for c in cols:
                col = table.column(c).combine_chunks()
                if c == "physics" and col.null_count:
                    raise no_physics_error(f.path)
                if c in widths:
                    out[c][lo:hi] = col.values.to_numpy(zero_copy_only=False).reshape(-1, widths[c])
                elif c == "episode_id":
                    out[c][lo:hi] = col.to_pylist()
                elif c == "reward_intrinsic":
                    out[c][lo:hi] = col.fill_null(np.nan).to_numpy(zero_copy_only=False)
                else:
                    out[c][lo:hi] = col.to_numpy(zero_copy_only=False)

        workers = min(threads or os.cpu_count() or 1, max(1, len(self.files)))
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(fill, range(len(self.files))))
        else:
            for i in range(len(self.files)):
                fill(i)
        return StepArrays(**{c: out.get(c) for c in StepArrays.__dataclass_fields__})

    # ---------------------------------------------------------------- identity
    def fingerprint(self) -> str:
        """A content hash of the selected rows, independent of file layout, chunking, file names and times.

        Per partition, the rows in (episode, step) order: steps, observations, actions, physics states (or
        their absence), discounts, episode flags and intrinsic rewards (NaN where there are none), each as
        canonical bytes, hashed with SHA-256; the dataset's fingerprint hashes the sorted ``partition=digest``
        lines and is given as 16 hex digits.  Episode ids order the rows but are not hashed (they carry the
        run key, which changes with settings such as the chunk size that do not change the data).  Two
        collections with the same config and seed on one machine write identical rows and so the same
        fingerprint; relabelled reward caches are not part of it (they are derived from the rows).
        """
        lines = self.partition_digests()
        if not lines:
            raise ValueError(f"dataset {str(self.root)!r} holds no data files to fingerprint")
        return combine_digests(lines.values())

    def partition_digests(self) -> dict[str, str]:
        """Each selected partition's ``partition=digest`` line (:meth:`fingerprint`), keyed by ``k=v/...`` of the
        partition; :func:`combine_digests` of one line is that partition's fingerprint, of all the dataset's."""
        import hashlib

        lines = {}
        for part in self.partitions:
            sub = Dataset(self.root, **part)
            with_physics = all(has_physics(f.path) for f in sub.files)
            cols = [c for c in StepArrays.__dataclass_fields__ if c != "physics" or with_physics]
            arr = sub.load(cols)
            order = np.lexsort((arr.step, np.asarray(arr.episode_id, dtype=str)))
            h = hashlib.sha256()
            for c in cols:
                if c == "episode_id":
                    continue
                x = np.ascontiguousarray(getattr(arr, c)[order])
                if c == "reward_intrinsic":
                    x = np.where(np.isnan(x), np.float32(0), x)
                    h.update(np.isnan(getattr(arr, c)[order]).tobytes())
                h.update(c.encode() + x.tobytes())
            h.update(b"physics" if with_physics else b"no-physics")
            key = "/".join(f"{k}={v}" for k, v in sorted(part.items()))
            lines[key] = key + "=" + h.hexdigest()
        return lines

    # ---------------------------------------------------------------- rewards
    def reward_cache_path(self, f: DataFile, domain: str, task: str) -> Path:
        """``<partition>/_rewards/<domain>_<task>/<file stem>.arrow`` (Arrow IPC, not Parquet, so
        that readers of ``*.parquet``, such as ``ray.data.read_parquet(DIR)``, see only data files)."""
        return f.path.parent / REWARD_DIR / f"{domain}_{task}" / (f.path.stem + ".arrow")

    def cached_tasks(self) -> list[str]:
        tasks = set()
        for f in self.files:
            rdir = f.path.parent / REWARD_DIR
            if rdir.is_dir():
                tasks.update(p.name for p in rdir.iterdir() if (p / (f.path.stem + ".arrow")).exists())
        return sorted(t for t in tasks if all((f.path.parent / REWARD_DIR / t / (f.path.stem + ".arrow")).exists()
                                               for f in self.files))

    def rewards(self, task: str) -> np.ndarray:
        """Cached task rewards for every row (run ``relabel`` first)."""
        domain, task = parse_task(task, self.env_spec.domain)
        parts = []
        for f in self.files:
            p = self.reward_cache_path(f, domain, task)
            if not p.exists():
                raise ValueError(f"task {domain}_{task} is not relabelled for {str(f.path)!r}; "
                                 f"run `bex relabel {self.root} --task {domain}_{task}`")
            with pa.memory_map(str(p)) as src:
                t = pa.ipc.open_file(src).read_all()
            if t.num_rows != f.num_rows:
                raise ValueError(f"reward cache {str(p)!r} has {t.num_rows} rows, data file has {f.num_rows}; "
                                 f"delete it and relabel")
            parts.append(t.column("reward").to_numpy())
        return np.concatenate(parts) if parts else np.zeros(0)

    def transitions(self, task: str | None = None, steps: StepArrays | None = None,
                    reward: np.ndarray | None = None) -> Transitions:
        """Transitions for ``task`` (rewards from the relabel cache), or intrinsic rewards when ``task`` is None."""
        steps = steps or self.load(("observation", "action", "discount", "is_first", "is_last",
                                    "reward_intrinsic"))
        if reward is None:
            reward = self.rewards(task) if task is not None else steps.reward_intrinsic
        idx = transition_rows(steps)
        return Transitions(obs=steps.observation[idx - 1], action=steps.action[idx],
                           reward=np.asarray(reward, dtype=np.float32)[idx], next_obs=steps.observation[idx],
                           discount=steps.discount[idx], is_last=steps.is_last[idx])


def dataset_root_of(path: Path) -> Path:
    """The dataset root holding ``path`` (itself, or the nearest parent with ``_bex_dataset.json``)."""
    for p in (path, *path.parents):
        if (p / DATASET_META_FILE).is_file():
            return p
    raise ValueError(f"{str(path)!r} is not a bex dataset or a partition of one (no {DATASET_META_FILE} in it "
                     f"or above it)")


def dataset_selection(path: str | Path) -> tuple[Path, dict[str, str]]:
    """``(root, partition filters)`` of a dataset root or a partition directory (``.../objective=be/param=0.5``);
    a missing path or a path that is not one is a one-line error."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset {str(path)!r} does not exist")
    root = dataset_root_of(path.resolve())
    fixed = dict(c.split("=", 1) for c in path.resolve().relative_to(root).parts if "=" in c)
    unknown = sorted(set(fixed) - set(PARTITION_KEYS))
    if unknown:
        raise ValueError(f"{str(path)!r} is not a partition directory (unknown key(s) {unknown})")
    return root, fixed


def combine_digests(lines) -> str:
    """The 16-hex-digit fingerprint of partition digest lines (:meth:`Dataset.partition_digests`)."""
    import hashlib

    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()[:16]
