"""The dataset card: a human-readable ``_dataset_card.md`` at every dataset root.

Markdown with a small YAML header, in the style of the dataset cards the community writes (Hugging Face's
``README.md`` front matter): what the dataset is, the command that made each partition and its config, its
size, domain, the tasks relabelled so far, fingerprints, and how to load it with pyarrow, Ray Data, bex,
Minari and the npz export.  Only facts about the dataset itself: coverage figures are relative to the datasets
they were compared with and live in coverage outputs, not here.

The name starts with ``_`` because pyarrow's and Ray Data's Parquet discovery skip such files; a ``README.md``
at the root would be read as a data file by ``pyarrow.dataset.dataset(root)``.

:func:`write_card` is called by the one process that changed the dataset (``bex collect``'s driver after its
runs, ``bex relabel``, ``bex import``, the replication pipeline), never by parallel tasks, and writes
atomically (temporary file, rename).  A task that a training trial relabels on the fly (``learners/trial.py``,
in parallel Tune workers) appears on the card at the next of those commands; ``bex info`` is always current.
A partition's fingerprint costs one read of its rows; the card keeps it with the partition's file signature
(names and row counts) and reuses it while the files are unchanged.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import yaml

from bex.envs import EnvSpec

from .reader import Dataset, combine_digests, has_physics, read_parquet
from .schema import bex_version
from .writer import atomic_write_bytes

CARD_FILE = "_dataset_card.md"
CARD_VERSION = 1


def card_path(root: str | os.PathLike) -> Path:
    return Path(root) / CARD_FILE


def read_card_header(root: str | os.PathLike) -> dict | None:
    """The YAML header of the root's card, or None when there is none (or it cannot be parsed)."""
    p = card_path(root)
    if not p.is_file():
        return None
    text = p.read_text()
    if not text.startswith("---\n"):
        return None
    try:
        head = yaml.safe_load(text[4:text.index("\n---\n", 4)])
    except (ValueError, yaml.YAMLError):
        return None
    return head if isinstance(head, dict) else None


def card_partitions(root: str | os.PathLike) -> dict[str, dict]:
    """The card's per-partition records by partition name (empty without a card): what
    :func:`partition_facts` may reuse."""
    parts = (read_card_header(root) or {}).get("partitions", [])
    return {p["partition"]: p for p in parts if isinstance(p, dict) and "partition" in p}


def partition_name(part: dict) -> str:
    return "/".join(f"{k}={v}" for k, v in part.items())


def _signature(files) -> str:
    return hashlib.sha256("\n".join(f"{f.path.name}:{f.num_rows}" for f in files).encode()).hexdigest()[:16]


def collect_command(root: Path, config: dict) -> str:
    """The single ``bex collect`` command equivalent to a partition's collection config."""
    args = ["bex", "collect", "--out", str(root), "--domain", str(config.get("domain", "walker")),
            "--explorer", str(config.get("explorer", "random"))]
    obj, param = config.get("objective"), config.get("param")
    if obj and config.get("explorer") == "apt":
        args += ["--objective", obj]
        if obj in ("be", "renyi") and param is not None:
            args += ["--alpha" if obj == "be" else "--q", str(param)]
    if config.get("task"):
        args += ["--task", str(config["task"])]
    for key in ("steps", "actors", "seed", "preset", "episodes_per_chunk"):
        if key in config:
            args += ["--" + key.replace("_", "-"), str(config[key])]
    if config.get("tag"):
        args += ["--tag", str(config["tag"])]
    for k, v in sorted((config.get("explorer_config") or {}).items()):
        args += ["--set", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
    return shlex.join(args)


def made_by(root: Path, config: dict, part: dict, spec: EnvSpec | None = None) -> str:
    """How a partition was made: its ``bex collect`` command, or the ``bex import`` that brought it in."""
    fmt = config.get("format")
    if not config:
        return "# written through bex's Python API (DatasetWriter): no collection config recorded"
    if fmt:
        src = config.get("imported_from", "?")
        task = config.get("rewards_of") or (f"{spec.domain}_{spec.task}" if spec else "<a task of the domain>")
        return shlex.join(["bex", "import", str(src), "--format", fmt, "--task", task, "--out", str(root),
                           "--objective", part.get("objective", fmt), "--seed", part.get("seed", "0")])
    return collect_command(root, config)


def partition_facts(ds: Dataset, part: dict, cached: dict | None) -> dict:
    """Episodes, transitions, layout, physics and fingerprint of one partition (fingerprint reused from
    ``cached`` when its file signature still matches)."""
    files = [f for f in ds.files if f.partition == part]
    sig = _signature(files)
    if cached and cached.get("files_signature") == sig and cached.get("sha256"):
        sha = cached["sha256"]
    else:
        line = next(iter(Dataset(ds.root, **part).partition_digests().values()))
        sha = line.rsplit("=", 1)[1]
    episodes = sum(int(np.count_nonzero(read_parquet(f.path, ["is_first"]).column(0).to_numpy())) for f in files)
    rows = sum(f.num_rows for f in files)
    key = "/".join(f"{k}={v}" for k, v in sorted(part.items()))
    meta = ds.partition_meta(part)
    return {"partition": partition_name(part), "episodes": episodes, "transitions": rows - episodes,
            "layout": meta.get("config", {}).get("layout", "episodes"),
            "physics": all(has_physics(f.path) for f in files), "files": len(files),
            "bytes": sum(f.path.stat().st_size for f in files), "files_signature": sig, "sha256": sha,
            "fingerprint": combine_digests([f"{key}={sha}"]), "_key": key, "_config": meta.get("config", {}),
            "_spec": EnvSpec.from_dict(meta["env_spec"]) if "env_spec" in meta else None}


def digest_line(facts: dict) -> str:
    """A partition's ``partition=digest`` line from :func:`partition_facts` (``combine_digests`` of all of a
    dataset's lines is its fingerprint)."""
    return f"{facts['_key']}={facts['sha256']}"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def update_card(root: str | os.PathLike) -> Path | None:
    """:func:`write_card` for a command whose data is already written: a card that cannot be written is a one-line
    warning on stderr, not a failure of the command (``bex info`` still describes the dataset)."""
    try:
        return write_card(root)
    except Exception as e:  # the data is safe; the card is a description of it
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        print(f"bex: warning: the dataset card of {str(root)!r} was not updated: {first}", file=sys.stderr)
        return None


def _one(values: list):
    """The single value of a list of per-domain values, or the list when domains differ."""
    values = sorted(set(values), key=str)
    return values[0] if len(values) == 1 else (values or None)


def write_card(root: str | os.PathLike) -> Path:
    """Write (atomically, replacing) the card of the dataset at ``root``; returns its path.  A root may hold
    several domains (``tune_configs/collect_paper.yaml`` writes walker and quadruped into one): the header's
    domain, collection task and widths are then lists, and each partition row names its own."""
    ds = Dataset(root)
    root = ds.root
    old = card_partitions(root)
    facts = [partition_facts(ds, part, old.get(partition_name(part))) for part in ds.partitions]
    specs = [p["_spec"] for p in facts if p["_spec"] is not None]
    tasks = ds.cached_tasks()
    fingerprint = combine_digests([digest_line(p) for p in facts]) if facts else None
    header = {
        "bex_dataset_card": CARD_VERSION, "pretty_name": root.name, "format": "bex hive-partitioned Parquet",
        "schema_version": ds.meta.get("schema_version"), "bex_version": bex_version(),
        "domain": _one([s.domain for s in specs]), "collection_task": _one([f"{s.domain}_{s.task}" for s in specs]),
        "observation_dim": _one([s.obs_dim for s in specs]), "action_dim": _one([s.action_dim for s in specs]),
        "physics_dim": _one([s.physics_dim for s in specs]), "tasks_relabelled": tasks,
        "episodes": sum(p["episodes"] for p in facts), "transitions": sum(p["transitions"] for p in facts),
        "size_bytes": sum(p["bytes"] for p in facts), "fingerprint": fingerprint,
        "partitions": [{k: v for k, v in p.items() if not k.startswith("_")} for p in facts],
    }
    text = "---\n" + yaml.safe_dump(header, sort_keys=False, width=120) + "---\n\n" + _body(root, header, facts)
    path = card_path(root)
    atomic_write_bytes(path, text.encode())
    return path


def _listed(v) -> str:
    return ", ".join(map(str, v)) if isinstance(v, list) else str(v)


def _body(root: Path, h: dict, facts: list[dict]) -> str:
    dom = h["domain"] if isinstance(h["domain"], str) else "<domain>"
    several = isinstance(h["domain"], list)
    lines = [f"# {h['pretty_name']}", "",
             f"An offline reinforcement-learning dataset of the dm_control **{_listed(h['domain'])}** "
             f"domain{'s' if several else ''}, written by bex {h['bex_version']}: {h['episodes']} episodes, "
             f"{h['transitions']} transitions, {_size(h['size_bytes'])} of Parquet in {len(facts)} partition(s). "
             f"Every row holds the observation ({_listed(h['observation_dim'])} floats, the layout of "
             f"{_listed(h['collection_task'])}), the action in [-1, 1] ({_listed(h['action_dim'])} floats), and, "
             f"where recorded, the physics state ({_listed(h['physics_dim'])} floats: qpos, qvel, act), from which "
             f"any task of the domain is relabelled exactly.", "",
             f"- **Fingerprint** `{h['fingerprint']}`: a hash of the rows, independent of files and times "
             f"(`bex info` recomputes it; equal fingerprints, equal transitions).",
             f"- **Tasks relabelled**: {', '.join(h['tasks_relabelled']) or 'none yet'} "
             f"(`bex relabel {root} --task {dom}_<task>` adds one; this card is rewritten then).",
             "- Coverage figures are not on this card: they are relative to the datasets they were compared with "
             "(see `bex coverage` outputs).", "", "## Partitions", "",
             "| partition | episodes | transitions | physics | layout | fingerprint |", "|---|---|---|---|---|---|"]
    for p in facts:
        lines.append(f"| `{p['partition']}` | {p['episodes']} | {p['transitions']} | "
                     f"{'yes' if p['physics'] else 'no'} | {p['layout']} | `{p['fingerprint']}` |")
    if any(p["layout"] == "transitions" for p in facts):
        lines += ["", "Partitions with layout `transitions` hold shuffled transitions imported as one-step episodes "
                      "(row 0 the state, row 1 the next state with the action and reward)."]
    lines += ["", "## How it was made", ""]
    for p in facts:
        cfg = p["_config"]
        part = dict(kv.split("=", 1) for kv in p["partition"].split("/"))
        lines += [f"`{p['partition']}`:", "", "```sh", made_by(root, cfg, part, p["_spec"]), "```", "",
                  "<details><summary>config</summary>", "", "```json", json.dumps(cfg, indent=1, sort_keys=True,
                                                                                   default=str), "```", "",
                  "</details>", ""]
    first = facts[0]["partition"] if facts else "domain=.../objective=.../param=.../seed=..."
    task = (h["tasks_relabelled"] or [f"{dom}_<task>"])[0]
    objective = first.split("/")[1].split("=", 1)[1] if facts else "..."
    mid = "bex/" + re.sub(r"[^-\w]", "-", f"{root.name}-{objective}") + "-v0"  # Minari's id syntax: no dots
    lines += ["## Loading", "", "pyarrow and Ray Data read the Parquet files without bex (partitions become columns):",
              "", "```python", "import pyarrow.dataset as pads",
              f"table = pads.dataset({str(root)!r}, partitioning='hive').to_table()", "",
              "import ray", f"ds = ray.data.read_parquet({str(root)!r})", "```", "",
              "bex gives transitions with any task's rewards:", "", "```python", "from bex.replay import Dataset",
              f"tr = Dataset({str(root)!r}, objective={objective!r}).transitions({task!r})",
              "# tr.obs, tr.action, tr.reward, tr.next_obs, tr.discount, tr.is_last", "```", "",
              "D4RL-style arrays and Minari (one partition per Minari dataset; the physics state travels in "
              "`infos['physics']`):", "", "```sh", f"bex export {root}/{first} --task {task} --out {task}.npz",
              f"bex export {root}/{first} --task {task} --format minari --dataset-id {mid}",
              "```", "", "```python", "import minari",
              f"data = minari.load_dataset('{mid}')",
              "env = data.recover_environment()  # bex/<domain>_<task>-v0, needs bex installed", "```", ""]
    return "\n".join(lines)
