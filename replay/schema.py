"""The versioned Arrow schema of a bex dataset (one row per environment step).

Convention (dm_env / ExORL): row ``i`` of an episode holds the observation and
physics state *after* step ``i``, the action that produced them, and the
step's ``discount``; row 0 holds the reset observation, a zero action and
``is_first = True``; the final row has ``is_last = True``.  A transition
``(s, a, r, s', discount)`` is therefore ``(obs[i-1], action[i], r(physics[i]),
obs[i], discount[i])`` for every row ``i`` with ``is_first = False``.

Column types: ``observation``/``action`` are ``fixed_size_list<float32>``,
``physics`` is ``fixed_size_list<float64>`` (bit-exact MuJoCo state; nullable, and
null in every row, only in partitions imported without a physics state, such as
D4RL-style files: those cannot be relabelled or measured in physics space),
``reward_intrinsic`` is a nullable float32 (null for explorers without one).
Partition columns (``domain, objective, param, seed``) live in the hive path,
not in the files.  Readers without bex (pyarrow, Ray Data, RLlib) need nothing
else.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (1,)
META_KEY = b"bex.schema_version"
PARTITION_KEYS = ("domain", "objective", "param", "seed")
DATASET_META_FILE = "_bex_dataset.json"
PARTITION_META_FILE = "_bex_partition.json"
REWARD_DIR = "_rewards"


def bex_version() -> str:
    try:
        from importlib.metadata import version

        return version("bex-rl")
    except Exception:  # not installed (running from a source tree)
        return "0+source"


def _vector(dtype: pa.DataType, width: int) -> pa.DataType:
    """A fixed-width vector column; non-null items skip Parquet's item definition levels."""
    return pa.list_(pa.field("element", dtype, nullable=False), width)


def step_schema(obs_dim: int, action_dim: int, physics_dim: int, physics: bool = True) -> pa.Schema:
    """The Arrow schema of one dataset file (without partition columns); ``physics=False``: a nullable physics
    column (imports of data recorded without the physics state)."""
    fields = [
        pa.field("episode_id", pa.string(), nullable=False),
        pa.field("step", pa.int32(), nullable=False),
        pa.field("observation", _vector(pa.float32(), obs_dim), nullable=False),
        pa.field("action", _vector(pa.float32(), action_dim), nullable=False),
        pa.field("physics", _vector(pa.float64(), physics_dim), nullable=not physics),
        pa.field("discount", pa.float32(), nullable=False),
        pa.field("is_first", pa.bool_(), nullable=False),
        pa.field("is_last", pa.bool_(), nullable=False),
        pa.field("reward_intrinsic", pa.float32(), nullable=True),
    ]
    return pa.schema(fields, metadata={META_KEY: str(SCHEMA_VERSION).encode()})


def format_param(value) -> str:
    """Partition value of an objective's parameter: ``0.5``, ``1.1`` or ``none``."""
    if value is None:
        return "none"
    if isinstance(value, (float, int)) and not isinstance(value, bool):
        return f"{float(value):g}"
    return str(value)


@dataclass
class Episode:
    """One whole episode in the dataset convention (T steps → T+1 rows)."""

    episode_id: str
    observation: np.ndarray          # (T+1, obs_dim) float32
    action: np.ndarray               # (T+1, action_dim) float32, row 0 zeros
    physics: np.ndarray | None       # (T+1, physics_dim) float64; None: not recorded (a null column)
    discount: np.ndarray             # (T+1,) float32, row 0 = 1
    reward_intrinsic: np.ndarray | None = None  # (T+1,) float32, row 0 = 0 (or None)

    def __post_init__(self) -> None:
        n = len(self.observation)
        if n < 2:
            raise ValueError(f"episode {self.episode_id!r} has {n} rows; an episode needs a reset row and >= 1 step")
        for name in ("action", "physics", "discount"):
            if getattr(self, name) is not None and len(getattr(self, name)) != n:
                raise ValueError(f"episode {self.episode_id!r}: {name} has {len(getattr(self, name))} rows, "
                                 f"observation has {n}")
        if self.reward_intrinsic is not None and len(self.reward_intrinsic) != n:
            raise ValueError(f"episode {self.episode_id!r}: reward_intrinsic has wrong length")

    def __len__(self) -> int:
        """Number of environment steps (transitions)."""
        return len(self.observation) - 1

    def to_table(self, schema: pa.Schema) -> pa.Table:
        n = len(self.observation)
        obs_dim = schema.field("observation").type.list_size
        act_dim = schema.field("action").type.list_size
        phys_dim = schema.field("physics").type.list_size

        def fsl(arr, dtype, width, name):
            arr = np.ascontiguousarray(arr, dtype=dtype)
            if arr.shape != (n, width):
                raise ValueError(f"episode {self.episode_id!r}: {name} has shape {arr.shape}, expected {(n, width)}")
            return pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)),
                                                     type=_vector(pa.from_numpy_dtype(dtype), width))

        is_first = np.zeros(n, dtype=bool)
        is_first[0] = True
        is_last = np.zeros(n, dtype=bool)
        is_last[-1] = True
        ri = (pa.nulls(n, pa.float32()) if self.reward_intrinsic is None
              else pa.array(np.asarray(self.reward_intrinsic, dtype=np.float32)))
        return pa.Table.from_arrays([
            pa.array([self.episode_id] * n, pa.string()),
            pa.array(np.arange(n, dtype=np.int32)),
            fsl(self.observation, np.float32, obs_dim, "observation"),
            fsl(self.action, np.float32, act_dim, "action"),
            (pa.nulls(n, schema.field("physics").type) if self.physics is None
             else fsl(self.physics, np.float64, phys_dim, "physics")),
            pa.array(np.asarray(self.discount, dtype=np.float32)),
            pa.array(is_first), pa.array(is_last), ri,
        ], schema=schema)


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str)


#: The keys (and their types) of each metadata file; ``None`` in a tuple of types allows null.
_META_KEYS: dict[str, dict[str, tuple]] = {
    DATASET_META_FILE: {"schema_version": (int,), "bex_version": (str,), "format": (str,)},
    PARTITION_META_FILE: {"schema_version": (int,), "bex_version": (str,), "env_spec": (dict,), "config": (dict,),
                          "run_key": (str, type(None))},
}
_ENV_SPEC_KEYS = {"domain": (str,), "task": (str,), "obs_dim": (int,), "action_dim": (int,), "physics_dim": (int,),
                  "obs_keys": (list,), "action_low": (list,), "action_high": (list,), "episode_length": (int,),
                  "control_timestep": (float, int)}


def _check_keys(d: dict, spec: dict[str, tuple], where: str) -> None:
    missing, extra = sorted(set(spec) - set(d)), sorted(set(d) - set(spec))
    if missing or extra:
        raise ValueError(f"malformed {where}: " + "; ".join(
            ([f"missing key(s) {missing}"] if missing else []) + ([f"unexpected key(s) {extra}"] if extra else [])))
    for k, types in spec.items():
        v = d[k]
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            allowed = "/".join("null" if t is type(None) else t.__name__ for t in types)
            raise ValueError(f"malformed {where}: {k}={v!r} has type {type(v).__name__}; expected {allowed}")


def read_meta(path) -> dict:
    """Read and check a ``_bex_dataset.json`` or ``_bex_partition.json``: bad JSON, a wrong type, a missing or
    an unexpected key is one ``ValueError`` line naming the file and the problem."""
    from pathlib import Path

    path = Path(path)
    where = str(path)
    try:
        d = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise ValueError(f"malformed {where}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"malformed {where}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(d, dict):
        raise ValueError(f"malformed {where}: expected a JSON object, got {type(d).__name__}")
    v = d.get("schema_version")
    if v not in SUPPORTED_SCHEMA_VERSIONS or isinstance(v, bool):  # another version may have other keys
        raise ValueError(f"{where} has unknown schema version {v!r}; this bex reads versions "
                         f"{list(SUPPORTED_SCHEMA_VERSIONS)}")
    _check_keys(d, _META_KEYS[path.name], where)
    if path.name == PARTITION_META_FILE:
        _check_keys(d["env_spec"], _ENV_SPEC_KEYS, f"{where} (env_spec)")
    return d
