"""Datasets bex did not generate, as bex datasets: ExORL/URLB episode folders and D4RL-style files (Minari
datasets: ``minari_io.py``, through :func:`write_imported` and :func:`detect_format` here).

ExORL (denisyarats/exorl) and URLB (``replay_buffer.py``, ``save_episode``)
store one ``.npz`` per episode, named ``<timestamp>_<index>_<length>.npz``, with
arrays of T + 1 rows in the convention bex uses too: row 0 is the reset (zero
action, reward 0, discount 1), row t holds the action taken at t − 1 and what
followed.  Keys: ``observation``, ``action``, ``reward``, ``discount`` and
``physics`` (ExORL adds it; it is what makes relabelling exact).

:func:`import_exorl` writes such a folder as one partition of a bex dataset
(``objective`` names it, default ``exorl``); rewards are not copied — ``bex
relabel`` computes any task's from the physics state, as for bex's own data.
The observation and physics widths are checked against the named task.

:func:`import_d4rl` reads one D4RL-style ``.npz`` (``observations, actions,
rewards, terminals`` and optionally ``timeouts, next_observations``; the layout
``bex export`` writes and D4RL's ``get_dataset`` returns) into a partition
(default objective ``d4rl``).  It has no physics state: the partition's physics
column is null, so it cannot be relabelled or measured in physics space (both
refuse it in one line); its rewards are stored as the named task's reward cache,
so the learners train on it.  Episodes end at ``terminals | timeouts`` (and at
the end of the file).  Without ``next_observations`` the next observation is the
following row's (bex assumes the rows are in step order: without
``next_observations`` that cannot be checked), and the last transition of each
episode, whose next observation is unknown, is dropped, as D4RL's
``qlearning_dataset`` does.  With them, when every ``next_observations[i]``
inside an episode equals ``observations[i + 1]`` the episodes are kept; when any
differs (a replay-buffer dump, shuffled transitions) the file is imported as
**one-step episodes**: row 0 the state, row 1 the next state with the action and
the reward; its partition records ``layout: transitions`` (``bex info`` shows
it), and training and observation-space coverage work on it.

Data that does not fit is refused before anything is written, in one line naming
the array, the row and the value: a non-finite value in any array, or an action
outside dm_control's [−1, 1] by more than :data:`ACTION_TOLERANCE`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from bex.envs import env_spec, parse_task

from .card import update_card
from .reader import Dataset, read_parquet
from .relabel import write_reward_cache
from .schema import Episode, format_param
from .writer import DatasetWriter, partition_dir

_EPISODE_NAME = re.compile(r"^(?P<stamp>.+)_(?P<index>\d+)_(?P<length>\d+)\.npz$")
EXORL_KEYS = ("observation", "action", "discount", "physics")
#: How far outside [-1, 1] an imported action may lie (float32 rounding of a clipped action), no further.
ACTION_TOLERANCE = 1e-3
D4RL_KEYS = ("observations", "actions", "rewards", "terminals")


def check_values(where: str, arrays: dict[str, np.ndarray], action_key: str) -> None:
    """Refuse non-finite values in any array and actions outside [-1, 1] (beyond :data:`ACTION_TOLERANCE`), in
    one line naming the array, the row and the value."""
    for k, a in arrays.items():
        if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.integer):
            continue
        bad = ~np.isfinite(a)
        if bad.any():
            i = np.argwhere(bad)[0]
            raise ValueError(f"{where}: {k}[{i[0]}] holds {float(a[tuple(i)])}; every value must be finite")
    act = arrays.get(action_key)
    if act is not None:
        bad = np.abs(act) > 1.0 + ACTION_TOLERANCE
        if bad.any():
            i = np.argwhere(bad)[0]
            raise ValueError(f"{where}: {action_key}[{i[0]}] holds {float(act[tuple(i)]):.6g}, outside the action "
                             f"space [-1, 1] (tolerance {ACTION_TOLERANCE:g}); rescale the actions to [-1, 1]")


def check_fresh_partition(out, domain: str, objective: str, param, seed: int) -> None:
    """An import never adds to a partition that holds data (one line naming it)."""
    pdir = partition_dir(Path(out), domain, objective, param, seed)
    if pdir.is_dir() and any(pdir.glob("*.parquet")):
        raise ValueError(f"{str(pdir)!r} already holds data; import into another --out, --objective or --seed")


def exorl_episode_files(src: str | os.PathLike) -> list[Path]:
    """The episode files of an ExORL/URLB folder, in episode order (the index in their names)."""
    src = Path(src)
    if not src.is_dir():
        raise ValueError(f"{str(src)!r} is not a directory of ExORL episodes")
    files = [p for p in src.iterdir() if _EPISODE_NAME.match(p.name)]
    if not files:
        raise ValueError(f"{str(src)!r} holds no ExORL episode files (<timestamp>_<index>_<length>.npz)")
    return sorted(files, key=lambda p: (int(_EPISODE_NAME.match(p.name)["index"]), p.name))


def read_exorl_episode(path: Path, obs_dim: int, action_dim: int, physics_dim: int) -> Episode:
    """One ExORL episode file as an :class:`Episode` (widths checked; bad files are one line naming them)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in EXORL_KEYS if k in z.files}
            missing = [k for k in EXORL_KEYS if k not in z.files]
    except Exception as e:  # truncated zip, pickled objects (refused), not an npz
        raise ValueError(f"ExORL episode {str(path)!r} cannot be read: {str(e).splitlines()[0]}") from None
    if missing:
        raise ValueError(f"ExORL episode {str(path)!r} lacks {missing} (physics is needed for exact relabelling)")
    check_values(f"ExORL episode {str(path)!r}", arrays, "action")
    widths = {"observation": obs_dim, "action": action_dim, "physics": physics_dim}
    for k, w in widths.items():
        a = arrays[k]
        if a.ndim != 2 or a.shape[1] != w:
            raise ValueError(f"ExORL episode {str(path)!r}: {k} has shape {a.shape}, the task needs (T+1, {w})")
    length = int(_EPISODE_NAME.match(path.name)["length"])
    if len(arrays["observation"]) != length + 1:
        raise ValueError(f"ExORL episode {str(path)!r}: its name says {length} steps, it holds "
                         f"{len(arrays['observation']) - 1}")
    return Episode(path.stem, arrays["observation"].astype(np.float32), arrays["action"].astype(np.float32),
                   arrays["physics"].astype(np.float64), arrays["discount"].reshape(-1).astype(np.float32))


def import_exorl(src: str | os.PathLike, out: str | os.PathLike, task: str, objective: str = "exorl",
                 param=None, seed: int = 0) -> dict:
    """Write the ExORL/URLB episode folder ``src`` as partition ``objective``/``param``/``seed`` of the bex
    dataset ``out``, for ``task``'s domain (its observation layout must match the episodes')."""
    domain, task_name = parse_task(task)
    spec = env_spec(domain, task_name)
    files = exorl_episode_files(src)
    check_fresh_partition(out, domain, objective, param, seed)
    episodes = [read_exorl_episode(f, spec.obs_dim, spec.action_dim, spec.physics_dim) for f in files]
    with DatasetWriter(out, spec, objective, param, seed, config={"imported_from": str(Path(src).resolve()),
                                                                  "format": "exorl"}) as w:
        for ep in episodes:
            w.write_episode(ep)
    update_card(out)
    return {"out": str(out), "episodes": len(episodes), "transitions": sum(len(e) for e in episodes),
            "domain": domain, "task": task_name, "files": [str(p) for p in w.files]}


def read_d4rl(path: str | os.PathLike, obs_dim: int, action_dim: int) -> tuple[list[Episode], list[np.ndarray], str]:
    """A D4RL-style ``.npz`` as episodes (no physics), each episode's reward rows (row 0: 0), and the layout:
    ``episodes``, or ``transitions`` when the file's transitions are out of episode order (module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{str(path)!r} is not a D4RL-style .npz file")
    try:
        with np.load(path, allow_pickle=False) as z:
            a = {k: np.asarray(z[k]) for k in z.files}
    except Exception as e:  # not a zip, truncated, pickled objects (refused)
        raise ValueError(f"D4RL file {str(path)!r} cannot be read: {str(e).splitlines()[0]}") from None
    missing = [k for k in D4RL_KEYS if k not in a]
    if missing:
        raise ValueError(f"D4RL file {str(path)!r} lacks {missing}")
    n = len(a["observations"])
    widths = {"observations": obs_dim, "actions": action_dim, "next_observations": obs_dim}
    for k in ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations"):
        if k not in a:
            continue
        want = (n, widths[k]) if k in widths else (n,)
        if (a[k].shape if k in widths else (a[k].size,)) != want or a[k].ndim > len(want) + (k not in widths):
            raise ValueError(f"D4RL file {str(path)!r}: {k} has shape {a[k].shape}, the task needs {want}")
    if n == 0:
        raise ValueError(f"D4RL file {str(path)!r} holds no transitions")
    check_values(f"D4RL file {str(path)!r}", {k: a[k] for k in ("observations", "actions", "rewards",
                                                                 "next_observations") if k in a}, "actions")
    rewards = a["rewards"].reshape(n).astype(np.float64)
    terminals = a["terminals"].reshape(n).astype(bool)
    ends = terminals | (a["timeouts"].reshape(n).astype(bool) if "timeouts" in a else False)
    ends[-1] = True
    obs, act = a["observations"].astype(np.float32), a["actions"].astype(np.float32)
    nxt = a.get("next_observations")
    if nxt is not None and _out_of_order(obs, nxt.astype(np.float32), ends):
        return _one_step_episodes(path, obs, act, nxt.astype(np.float32), rewards, terminals) + ("transitions",)
    episodes, reward_rows = [], []
    start = 0
    for end in np.flatnonzero(ends):
        sl = slice(start, end + 1)
        if nxt is None:  # the next observation is the following row's; the episode's last one is unknown
            sl = slice(start, end)
            next_obs = obs[start + 1:end + 1]
        else:
            next_obs = nxt[sl].astype(np.float32)
        start = end + 1
        t = sl.stop - sl.start
        if t < 1:
            continue
        zero = np.zeros((1, action_dim), np.float32)
        episodes.append(Episode(f"{path.stem}-{len(episodes):06d}", np.concatenate([obs[sl.start:sl.start + 1],
                                                                                     next_obs]),
                                np.concatenate([zero, act[sl]]), None,
                                np.concatenate([[1.0], 1.0 - terminals[sl]]).astype(np.float32)))
        reward_rows.append(np.concatenate([[0.0], rewards[sl]]))
    return episodes, reward_rows, "episodes"


def _out_of_order(obs: np.ndarray, nxt: np.ndarray, ends: np.ndarray) -> bool:
    """Whether some ``next_observations[i]`` inside an episode differs from ``observations[i + 1]``."""
    inside = ~ends[:-1]
    return bool((nxt[:-1][inside] != obs[1:][inside]).any())


def _one_step_episodes(path: Path, obs, act, nxt, rewards, terminals) -> tuple[list[Episode], list[np.ndarray]]:
    """Each transition as an episode of one step: row 0 the state, row 1 the next state with the action and
    the reward (discount 0 after a terminal)."""
    zero = np.zeros_like(act[:1])
    episodes = [Episode(f"{path.stem}-t{i:08d}", np.stack([obs[i], nxt[i]]), np.concatenate([zero, act[i:i + 1]]),
                        None, np.array([1.0, 1.0 - terminals[i]], np.float32)) for i in range(len(obs))]
    return episodes, [np.array([0.0, rewards[i]]) for i in range(len(obs))]


def write_imported(out, spec, objective: str, param, seed: int, episodes: list[Episode],
                   reward_rows: list[np.ndarray] | None, config: dict, physics: bool) -> dict:
    """Write imported episodes as one partition and, when ``reward_rows`` are given, store them as the reward
    cache of ``config["rewards_of"]`` (the task whose rewards the source holds)."""
    with DatasetWriter(out, spec, objective, param, seed, physics=physics, config=config) as w:
        for ep in episodes:
            w.write_episode(ep)
    if reward_rows is not None:
        domain, task_name = parse_task(config["rewards_of"])
        by_id = {ep.episode_id: r for ep, r in zip(episodes, reward_rows)}
        ds = Dataset(out, domain=domain, objective=objective, param=format_param(param), seed=seed)
        for f in ds.files:
            t = read_parquet(f.path, ["episode_id", "step"])
            ids, steps = t.column("episode_id").to_pylist(), t.column("step").to_numpy()
            write_reward_cache(ds, f, domain, task_name, [by_id[e][s] for e, s in zip(ids, steps)])
    update_card(out)
    return {"out": str(out), "episodes": len(episodes), "transitions": sum(len(e) for e in episodes),
            "files": [str(p) for p in w.files]}


def import_d4rl(src: str | os.PathLike, out: str | os.PathLike, task: str, objective: str = "d4rl",
                param=None, seed: int = 0) -> dict:
    """Write the D4RL-style file ``src`` as partition ``objective``/``param``/``seed`` of the bex dataset ``out``
    for ``task`` (whose rewards the file holds; stored as that task's reward cache)."""
    domain, task_name = parse_task(task)
    spec = env_spec(domain, task_name)
    check_fresh_partition(out, domain, objective, param, seed)
    episodes, reward_rows, layout = read_d4rl(src, spec.obs_dim, spec.action_dim)
    config = {"imported_from": str(Path(src).resolve()), "format": "d4rl", "rewards_of": f"{domain}_{task_name}",
              "layout": layout}
    res = write_imported(out, spec, objective, param, seed, episodes, reward_rows, config, physics=False)
    return {**res, "domain": domain, "task": task_name, "physics": False, "layout": layout}


#: A Minari dataset id as bex writes them, ``NAMESPACE/NAME-vN``, in Minari's syntax (its ``DATASET_ID_RE``).
DATASET_ID = re.compile(r"(?P<namespace>[-\w][-\w/]*[-\w])/(?P<name>[-\w]+?)-v(?P<version>\d+)")
#: Any versioned Minari id (the namespace is optional in Minari).
MINARI_ID = re.compile(r"(?:[-\w][-\w/]*[-\w]/)?[-\w]+?-v\d+")


def minari_root(out: str | os.PathLike | None) -> Path:
    """The Minari datasets root: ``out``, else ``$MINARI_DATASETS_PATH``, else Minari's default
    (``~/.minari/datasets``)."""
    if out is not None:
        return Path(out)
    env = os.environ.get("MINARI_DATASETS_PATH")
    return Path(env) if env else Path.home() / ".minari" / "datasets"


def is_minari(src: str | os.PathLike) -> bool:
    """Whether ``src`` is a Minari dataset folder (or its ``data`` folder), or the id of a local one."""
    path = Path(src)
    if path.exists():
        return (path / "metadata.json").is_file() or (path / "data" / "metadata.json").is_file()
    return bool(MINARI_ID.fullmatch(str(src))) and (minari_root(None) / str(src) / "data").is_dir()


#: What ``bex import --format`` accepts.
FORMATS = ("auto", "exorl", "d4rl", "minari")


def detect_format(src: str | os.PathLike) -> str:
    """``minari`` for a Minari dataset folder or the id of a local one, ``exorl`` for another folder, ``d4rl``
    for a file; a path that does not exist and is no local Minari id is a one-line error."""
    path = Path(src)
    if is_minari(src):
        return "minari"
    if path.is_dir():
        return "exorl"
    if path.is_file():
        return "d4rl"
    raise ValueError(f"{str(src)!r} does not exist (and is not the id of a dataset in the local Minari root)")
