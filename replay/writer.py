"""Append whole episodes to a hive-partitioned Parquet dataset, atomically.

Layout: ``<root>/domain=D/objective=O/param=P/seed=S/<writer_id>-<seq>.parquet``.

* **Whole episodes only.** Episodes are buffered in memory and written when the
  buffer reaches ``rows_per_file`` (or on ``flush``/``close``); a writer killed
  mid-episode loses that episode and leaves no partial rows.
* **Atomic commits.** A file is written under a hidden temporary name
  (``.<name>.<random>.tmp``, created exclusively; readers ignore names starting with ``.`` or ``_``),
  fsynced, then hard-linked to its final name, which fails instead of
  overwriting if that name exists, and the temporary name is removed.
* **Unique names.** ``writer_id`` is unique per writer (a UUID unless the caller
  gives a deterministic one, as resumable collection does), so concurrent
  writers of one partition never collide.
* **Metadata.** ``_bex_dataset.json`` at the root (schema version, bex version)
  and ``_bex_partition.json`` per partition (env spec, collection config), both
  written atomically; an existing partition whose metadata differs is refused.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bex.envs import EnvSpec

from .schema import (
    DATASET_META_FILE,
    PARTITION_META_FILE,
    SCHEMA_VERSION,
    Episode,
    bex_version,
    dumps,
    format_param,
    read_meta,
    step_schema,
)

COMPRESSION = "lz4"


@contextlib.contextmanager
def temp_file(final: Path, suffix: str = ".tmp"):
    """A temporary file next to ``final``, created exclusively (``mkstemp``: ``O_EXCL``) under an unpredictable
    hidden name (readers skip names starting with ``.``), mode 0644; removed if the block raises."""
    final = Path(final)
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=suffix)
    tmp = Path(name)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would make shared datasets unreadable to others
        os.close(fd)
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temp_files(directory: Path) -> int:
    """Delete the temporary files (``.<name>.<random>.tmp``) a killed writer left in ``directory``; returns
    how many.  Call it only when no writer of that directory is running (``--resume`` of a stopped run)."""
    n = 0
    for p in Path(directory).glob(".*"):
        if p.is_file() and (p.name.endswith(".tmp") or ".tmp-" in p.name or p.name.endswith(".tmp.npz")):
            p.unlink(missing_ok=True)
            n += 1
    return n


def atomic_write_bytes(path: Path, data: bytes, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` via an exclusive temporary file, fsync, and rename (or no-clobber link)."""
    with temp_file(Path(path)) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _commit(tmp, Path(path), overwrite)


def _commit(tmp: Path, path: Path, overwrite: bool) -> None:
    try:
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # atomic and fails with FileExistsError instead of clobbering
            os.unlink(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def partition_dir(root: Path, domain: str, objective: str, param: Any, seed: int) -> Path:
    return (Path(root) / f"domain={domain}" / f"objective={objective}" / f"param={format_param(param)}"
            / f"seed={int(seed)}")


def check_output_root(root: str | os.PathLike) -> Path:
    """Validate a dataset output path: a directory or a path that can become one."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ValueError(f"output path {str(root)!r} is a file, not a directory")
    parent = root
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"output path {str(root)!r} is inside {str(parent)!r}, which is a file")
    return root


def ensure_dataset_meta(root: Path) -> None:
    meta_path = root / DATASET_META_FILE
    if meta_path.exists():
        meta = read_meta(meta_path)
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"dataset {str(root)!r} has schema version {meta.get('schema_version')!r}; "
                             f"this bex writes version {SCHEMA_VERSION}")
        return
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(meta_path, dumps({"schema_version": SCHEMA_VERSION, "bex_version": bex_version(),
                                         "format": "bex-steps"}).encode())


def ensure_partition_meta(pdir: Path, env_spec: EnvSpec, config: dict, run_key: str | None = None) -> None:
    """Create or check a partition's metadata.

    ``run_key`` identifies the run that owns the partition (e.g. a hash of its
    collection config); a partition already owned by a different run is refused
    so that two different collections never mix in one partition.
    """
    meta_path = pdir / PARTITION_META_FILE
    meta = {"schema_version": SCHEMA_VERSION, "bex_version": bex_version(), "env_spec": env_spec.to_dict(),
            "config": config, "run_key": run_key}
    if meta_path.exists():
        old = read_meta(meta_path)
        same_env = {k: v for k, v in old.get("env_spec", {}).items() if k != "task"} == \
            {k: v for k, v in json.loads(dumps(env_spec.to_dict())).items() if k != "task"}
        if not same_env:
            raise ValueError(f"partition {str(pdir)!r} holds data of another environment "
                             f"({old.get('env_spec', {}).get('domain')}); choose another --out")
        if run_key is not None and old.get("run_key") not in (None, run_key):
            raise ValueError(f"partition {str(pdir)!r} holds a different run's dataset "
                             f"(run {old.get('run_key')!r}, this run {run_key!r}); choose another --out or --resume it")
        return
    pdir.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write_bytes(meta_path, dumps(meta).encode(), overwrite=False)
    except FileExistsError:  # another writer created it first: check it instead
        ensure_partition_meta(pdir, env_spec, config, run_key)


class DatasetWriter:
    """Writes whole episodes of one partition.  Not thread-safe; one per actor."""

    def __init__(self, root: str | os.PathLike, env_spec: EnvSpec, objective: str, param: Any, seed: int,
                 config: dict | None = None, writer_id: str | None = None, rows_per_file: int = 50_000,
                 run_key: str | None = None, start_seq: int = 0, physics: bool = True):
        self.root = check_output_root(root)
        self.spec = env_spec
        self.pdir = partition_dir(self.root, env_spec.domain, objective, param, seed)
        self.writer_id = writer_id or uuid.uuid4().hex[:12]
        self.rows_per_file = int(rows_per_file)
        self.schema = step_schema(env_spec.obs_dim, env_spec.action_dim, env_spec.physics_dim, physics)
        self._buffer: list[pa.Table] = []
        self._rows = 0
        self._pending_steps = 0
        self.seq = int(start_seq)
        self.files: list[Path] = []
        self.episodes_written = 0
        self.steps_written = 0
        ensure_dataset_meta(self.root)
        ensure_partition_meta(self.pdir, env_spec, config or {}, run_key)

    def write_episode(self, episode: Episode) -> None:
        """Buffer one whole episode; a file is committed once enough rows are buffered."""
        self._buffer.append(episode.to_table(self.schema))
        self._rows += len(episode.observation)
        self._pending_steps += len(episode)
        if self._rows >= self.rows_per_file:
            self.flush()

    def flush(self) -> Path | None:
        """Commit buffered episodes to one new file; returns its path (None if empty)."""
        if not self._buffer:
            return None
        table = pa.concat_tables(self._buffer)
        path = self.pdir / f"{self.writer_id}-{self.seq:06d}.parquet"
        with temp_file(path) as tmp:
            pq.write_table(table, tmp, compression=COMPRESSION, row_group_size=max(1, table.num_rows),
                           use_dictionary=["episode_id"], write_page_checksum=True)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            _commit(tmp, path, overwrite=False)
        self.seq += 1
        self.files.append(path)
        self.episodes_written += len(self._buffer)
        self.steps_written += self._pending_steps
        self._buffer, self._rows, self._pending_steps = [], 0, 0
        return path

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        # on an exception the buffered (possibly partial) episodes are dropped
