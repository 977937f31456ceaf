"""bex partitions as Minari datasets and back (Farama's offline-RL format, Minari 0.5).

**Export** (:func:`export_minari`).  One bex partition becomes one Minari dataset, written with Minari's own
``create_dataset_from_buffers`` from episode buffers bex builds (not ``DataCollector``, which needs jax):

* one Minari episode per bex episode.  bex's T + 1 rows map one to one on Minari's T + 1 observations; the
  action, reward, termination and truncation of step t are bex row t + 1's (row 0 is the reset: zero action,
  no reward);
* ``rewards``: the task's, from the relabel cache (``bex relabel`` first); ``terminations``: a discount-0 step
  (dm_control's terminal state); ``truncations``: the last step of an episode that did not terminate
  (dm_control's time limit);
* ``infos["physics"]``: the physics state of each of the T + 1 observations (``qpos, qvel, act``), so that the
  dataset relabels exactly to any task of the domain after the trip (absent for partitions imported without
  one); ``infos["reward_intrinsic"]``: the explorer's reward per observation, shape (T + 1, 1), NaN where it had
  none (absent when it never had one);
* the task must observe what the dataset holds (``envs.check_layout``): the recovered environment's
  observations then have the dataset's layout;
* spaces: ``Box(-inf, inf, (obs_dim,))`` and ``Box(-1, 1, (action_dim,))``, float32;
* the environment: ``bex/<domain>_<task>-v0`` (``bex.envs.gym``), so ``recover_environment()`` returns a
  working environment with the dataset's observation layout wherever bex is installed;
* metadata: Minari's fields (algorithm, author, requirements, description, reference scores) and bex's
  under ``bex_*`` keys (partition, collection config, fingerprint, layout, bex version).

Reference scores: Minari keeps ``ref_min_score`` only next to a ``ref_max_score``; the caller gives both
(``bex export`` takes the random policy's return for the minimum, ``bex.analysis.units``, and 1000 for the
maximum unless ``--ref-max-score`` is given: dm_control's largest episode return, bex's own unit).  Without a
maximum, neither is stored.

The dataset is built in a hidden folder under the Minari root and moved into place when complete, so a failed
export leaves nothing under its id; an id that exists is refused before anything is written.

**Import** (:func:`import_minari`).  A Minari dataset of a dm_control domain (bex's exports at least) becomes a
partition: with ``infos["physics"]`` of the domain's width it keeps the physics state (``bex relabel`` then
gives any task's rewards); without, the physics column is null, as for D4RL-style imports.  Either way the
file's rewards are stored as the named task's reward cache, and they must be that task's: a bex export labelled
with another task (``bex_task``) is refused, and with physics (where relabelling is exact) every stored reward
is checked against the physics' reward for the task (to 1e-5).  Observations and actions must be ``Box`` spaces
of the task's widths; values are checked as every import's are (``importers.check_values``).

Minari is an optional dependency (``pip install 'bex-rl[minari]'``; Minari 0.5.4 needs Python >= 3.11):
nothing in collection or training imports this module.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from bex.envs import check_layout, env_spec, parse_task

from .card import card_partitions, partition_facts, partition_name
from .importers import DATASET_ID, MINARI_ID, check_fresh_partition, check_values, minari_root, write_imported
from .reader import Dataset, has_physics
from .schema import Episode, bex_version

STORAGE_FORMATS = ("arrow", "parquet")


def minari_module():
    """``import minari``, or a one-line error saying how to install it."""
    try:
        import minari
    except ImportError:
        raise ValueError("Minari is not installed: pip install 'bex-rl[minari]' (Minari 0.5.4 needs "
                         "Python >= 3.11)") from None
    return minari


@contextlib.contextmanager
def _datasets_path(root: Path):
    """Minari reads its root from ``MINARI_DATASETS_PATH`` on every call; point it at ``root`` for a block."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def check_dataset_id(dataset_id: str) -> str:
    """``NAMESPACE/NAME-vN`` in Minari's own syntax (``minari.dataset.minari_dataset.DATASET_ID_RE``: letters,
    digits, ``_`` and ``-``; no dots), with the namespace bex asks for."""
    if not DATASET_ID.fullmatch(dataset_id):
        raise ValueError(f"--dataset-id {dataset_id!r} is not allowed: give NAMESPACE/NAME-vN (letters, digits, "
                         f"'_', '-'; no dots), e.g. bex/walker-be-a05-v0")
    return dataset_id


def episode_buffers(steps, rewards: np.ndarray, physics: np.ndarray | None,
                    intrinsic: np.ndarray | None = None) -> list:
    """Minari ``EpisodeBuffer`` s of a partition's rows (module docstring: row t + 1 holds step t); ``physics``
    and the explorer's ``intrinsic`` rewards (NaN where it had none) go to ``infos``, one row per observation."""
    from minari.data_collector.episode_buffer import EpisodeBuffer

    starts = np.flatnonzero(steps.is_first)
    ends = np.append(starts[1:], len(steps.is_first))
    out = []
    for i, (a, b) in enumerate(zip(starts, ends)):
        terminated = steps.discount[a + 1:b] == 0.0
        out.append(EpisodeBuffer(
            id=i, observations=steps.observation[a:b], actions=steps.action[a + 1:b],
            rewards=np.asarray(rewards[a + 1:b], np.float64), terminations=terminated,
            truncations=steps.is_last[a + 1:b] & ~terminated,
            infos={**({} if physics is None else {"physics": physics[a:b]}),
                   # (T+1, 1), not (T+1,): Minari 0.5.4's Arrow storage cannot read back a 1-D array in infos
                   **({} if intrinsic is None else {"reward_intrinsic": intrinsic[a:b, None]})} or None))
    return out


def algorithm_name(config: dict) -> str:
    """A one-line name of the collection: ``bex APT, behavioral entropy (alpha 0.5), k-NN batch`` ..."""
    if config.get("format"):
        return f"imported by bex from {config['format']}"
    names = {"random": "random actions", "apt": "APT", "rnd": "RND", "smm": "SMM"}
    explorer = names.get(config.get("explorer"), str(config.get("explorer", "unknown explorer")))
    obj = config.get("objective")
    bits = [f"bex {explorer}"]
    if obj:
        names = {"be": "behavioral entropy", "renyi": "Renyi entropy", "shannon": "Shannon entropy"}
        param = {"be": ("alpha", config.get("param")), "renyi": ("q", config.get("param"))}.get(obj)
        bits.append(names.get(obj, obj) + (f" ({param[0]} {param[1]})" if param and param[1] is not None else ""))
    mode = (config.get("explorer_config") or {}).get("knn_mode")
    if mode:
        bits.append(f"k-NN {mode}")
    return ", ".join(bits)


def export_minari(root: str | os.PathLike, task: str, dataset_id: str, out: str | os.PathLike | None = None, *,
                  ref_min_score: float | Callable[[str], float] | None = None, ref_max_score: float | None = None,
                  author: str | None = None, author_email: str | None = None, code_permalink: str | None = None,
                  storage: str = "arrow", **filters) -> dict:
    """Write one partition of the bex dataset ``root`` (``filters`` select it) as the Minari dataset
    ``dataset_id`` under the Minari root ``out`` (module docstring).  Returns what was written.

    ``ref_min_score`` may be a function of the task (``walker_walk``), such as the random policy's return, which
    may take a minute to measure: it is called only once every check has passed."""
    minari = minari_module()
    check_dataset_id(dataset_id)
    if storage not in STORAGE_FORMATS:
        raise ValueError(f"unknown Minari storage {storage!r}; allowed: {', '.join(STORAGE_FORMATS)}")
    if (ref_min_score is None) != (ref_max_score is None):
        raise ValueError("give both reference scores or neither (Minari stores the minimum only beside a maximum)")
    ds = Dataset(root, **filters)
    parts = ds.partitions
    if len(parts) != 1:
        names = ["/".join(f"{k}={v}" for k, v in p.items()) for p in parts] or ["none"]
        raise ValueError(f"a Minari dataset holds one partition; {str(ds.root)!r} selects {len(parts)} "
                         f"({', '.join(names[:6])}{' ...' if len(names) > 6 else ''}): give a partition directory "
                         f"or --objective/--param/--seed")
    spec = ds.env_spec
    domain, task_name = parse_task(task, spec.domain)
    check_layout(spec, domain, task_name)  # the recovered environment must observe what the dataset holds
    dest_root = minari_root(out)
    if dest_root.exists() and not dest_root.is_dir():
        raise ValueError(f"Minari root {str(dest_root)!r} is a file, not a directory")
    dest = dest_root / dataset_id
    if dest.exists():
        raise ValueError(f"Minari dataset {dataset_id!r} already exists at {str(dest)!r}; give another name or "
                         f"version")
    rewards = ds.rewards(f"{domain}_{task_name}")  # one line when the task is not relabelled
    with_physics = all(has_physics(f.path) for f in ds.files)
    cols = ["observation", "action", "discount", "is_first", "is_last", "reward_intrinsic"]
    steps = ds.load(cols + (["physics"] if with_physics else []))
    meta = ds.partition_meta(parts[0])
    config = meta.get("config", {})
    partition = partition_name(parts[0])
    cached = card_partitions(ds.root).get(partition)  # the card's fingerprint, while the partition's files match
    fingerprint = partition_facts(ds, parts[0], cached)["fingerprint"]
    intrinsic = None if np.isnan(steps.reward_intrinsic).all() else steps.reward_intrinsic
    buffers = episode_buffers(steps, rewards, steps.physics if with_physics else None, intrinsic)
    ref_min = ref_min_score(f"{domain}_{task_name}") if callable(ref_min_score) else ref_min_score

    import gymnasium as gym

    from bex.envs.gym import register, spaces

    eid = register(domain, task_name)
    obs_space, act_space = spaces(spec.obs_dim, spec.action_dim)
    from importlib.metadata import version

    requirements = ["bex-rl", f"dm_control=={version('dm_control')}", f"mujoco=={version('mujoco')}"]
    description = (f"{partition} of the bex dataset {ds.root.name!r}: {len(buffers)} episodes, "
                   f"{int(len(steps.is_first) - len(buffers))} steps of dm_control {domain}, rewards of "
                   f"{domain}_{task_name}; physics state per observation in infos['physics']"
                   + ("" if with_physics else " (absent: imported without one)")
                   + f". Collected by: {algorithm_name(config)}.")
    made_root = not dest_root.exists()
    try:
        dest_root.mkdir(parents=True, exist_ok=True)
        tmp_root = Path(tempfile.mkdtemp(prefix=".bex-minari-", dir=dest_root))
    except OSError as e:
        raise ValueError(f"cannot write under the Minari root {str(dest_root)!r}: {e.strerror or e}") from None
    done = False
    try:
        with _datasets_path(tmp_root), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"minari(\.|$)")
            dataset = minari.create_dataset_from_buffers(
                dataset_id, buffers, env=gym.spec(eid), algorithm_name=algorithm_name(config), author=author,
                author_email=author_email, code_permalink=code_permalink, action_space=act_space,
                observation_space=obs_space, ref_min_score=ref_min, ref_max_score=ref_max_score,
                description=description, data_format=storage, requirements=requirements)
            dataset.storage.update_metadata({
                "bex_version": bex_version(), "bex_partition": partition, "bex_task": f"{domain}_{task_name}",
                "bex_fingerprint": fingerprint, "bex_physics": with_physics,
                "bex_layout": config.get("layout", "episodes"), "bex_config": json.loads(json.dumps(config))})
        namespace = DATASET_ID.fullmatch(dataset_id)["namespace"]
        made_ns = not (dest_root / namespace).exists()
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.rename(tmp_root / dataset_id, dest)  # fails, leaving nothing, if another export took the id meanwhile
        except OSError as e:
            if made_ns:
                shutil.rmtree(dest_root / namespace.split("/")[0], ignore_errors=True)
            raise ValueError(f"cannot move the Minari dataset into {str(dest)!r}: {e.strerror or e}") from None
        with _datasets_path(dest_root):  # Minari's namespace record, once the dataset is in place
            from minari.namespace import create_namespace, list_local_namespaces

            if namespace not in list_local_namespaces():
                create_namespace(namespace)
        done = True
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
        if made_root and not done:
            shutil.rmtree(dest_root, ignore_errors=True)
    return {"dataset_id": dataset_id, "path": str(dest), "episodes": len(buffers),
            "steps": int(len(steps.is_first) - len(buffers)), "physics": with_physics, "fingerprint": fingerprint,
            "storage": storage}


def open_minari(src: str | os.PathLike):
    """A ``MinariDataset`` from a path (the dataset's folder or its ``data`` folder) or a dataset id in the local
    Minari root (``$MINARI_DATASETS_PATH`` or Minari's default; never downloaded)."""
    minari_module()
    from minari.dataset.minari_dataset import MinariDataset

    path = Path(src)
    if not path.exists():
        if not MINARI_ID.fullmatch(str(src)):
            raise ValueError(f"{str(src)!r} is neither a path nor a Minari dataset id (NAMESPACE/NAME-vN)")
        path = minari_root(None) / str(src)
        if not (path / "data" / "metadata.json").is_file():
            raise ValueError(f"Minari dataset {str(src)!r} is not in the local Minari root "
                             f"{str(minari_root(None))!r} (bex never downloads; `minari download` it first)")
    for cand in (path / "data", path):
        if (cand / "metadata.json").is_file():
            try:
                return MinariDataset(cand)
            except Exception as e:
                raise ValueError(f"Minari dataset {str(src)!r} cannot be read: {str(e).splitlines()[0]}") from None
    raise ValueError(f"{str(src)!r} is not a Minari dataset (no metadata.json in it or in its data folder)")


def read_minari(src, spec) -> tuple[list[Episode], list[np.ndarray], dict]:
    """A Minari dataset's episodes for the task of ``spec`` (an ``EnvSpec``), each episode's reward rows (row 0:
    0), and facts for the partition metadata.  Physics comes from ``infos["physics"]`` where every episode has it
    at the domain's width, and then the stored rewards must be the task's (recomputed from the physics where the
    relabelling is exact); a bex export whose ``bex_task`` is another task is refused."""
    import gymnasium as gym

    from bex.envs import TaskReward, relabel_exact

    data = open_minari(src)
    name = f"Minari dataset {data.id!r}"
    task = f"{spec.domain}_{spec.task}"
    for what, space, width in (("observation", data.observation_space, spec.obs_dim),
                               ("action", data.action_space, spec.action_dim)):
        if not isinstance(space, gym.spaces.Box) or space.shape != (width,):
            raise ValueError(f"{name}: its {what} space is {space}, the task needs Box of shape ({width},)")
    labelled = data.storage.metadata.get("bex_task")
    if labelled and labelled != task:
        raise ValueError(f"{name} holds the rewards of {labelled}, not of --task {task}; import it with --task "
                         f"{labelled} (then `bex relabel` gives any task's)")
    raw = list(data.iterate_episodes())
    if not raw:
        raise ValueError(f"{name} holds no episodes")
    with_physics = all(np.shape(ep.infos.get("physics")) == (len(ep) + 1, spec.physics_dim) for ep in raw)
    with_intrinsic = all(np.shape(ep.infos.get("reward_intrinsic")) in ((len(ep) + 1,), (len(ep) + 1, 1))
                         for ep in raw)
    rewarder = TaskReward(spec.domain, spec.task) if with_physics and relabel_exact(spec.domain, spec.task) else None
    episodes, reward_rows = [], []
    for ep in raw:
        where = f"{name}, episode {ep.id}"
        if len(ep) < 1:
            raise ValueError(f"{where} has no steps")
        obs, act = np.asarray(ep.observations, np.float32), np.asarray(ep.actions, np.float32)
        arrays = {"observations": obs, "actions": act, "rewards": np.asarray(ep.rewards, np.float64)}
        if with_physics:
            arrays["physics"] = np.asarray(ep.infos["physics"], np.float64)
        if with_intrinsic:
            arrays["reward_intrinsic"] = np.asarray(ep.infos["reward_intrinsic"], np.float32).reshape(-1)
        finite = {k: (np.nan_to_num(v, nan=0.0, posinf=np.inf, neginf=-np.inf) if k == "reward_intrinsic" else v)
                  for k, v in arrays.items()}  # intrinsic rewards are NaN where the explorer had none
        check_values(where, finite, "actions")
        action_rows = np.concatenate([np.zeros((1, spec.action_dim), np.float32), act])
        if rewarder is not None:
            want = rewarder(arrays["physics"], action_rows)[1:]
            bad = np.flatnonzero(~np.isclose(arrays["rewards"], want, rtol=1e-5, atol=1e-5))
            if len(bad):
                i = int(bad[0])
                raise ValueError(f"{where}: rewards[{i}] is {arrays['rewards'][i]:.6g} but the stored physics gives "
                                 f"{want[i]:.6g} for {task}: are these {task}'s rewards? (--task names the task the "
                                 f"dataset's rewards belong to)")
        terminal = np.asarray(ep.terminations, bool)
        episodes.append(Episode(f"minari-{int(ep.id):06d}", obs, action_rows, arrays.get("physics"),
                                np.concatenate([[1.0], 1.0 - terminal]).astype(np.float32),
                                arrays.get("reward_intrinsic")))
        reward_rows.append(np.concatenate([[0.0], arrays["rewards"]]))
    md = data.storage.metadata
    facts = {"dataset_id": data.id, "physics": with_physics, "layout": md.get("bex_layout", "episodes"),
             "source_fingerprint": md.get("bex_fingerprint"), "rewards_checked": rewarder is not None}
    return episodes, reward_rows, facts


def import_minari(src, out: str | os.PathLike, task: str, objective: str = "minari", param=None,
                  seed: int = 0) -> dict:
    """Write the Minari dataset ``src`` (id or path) as partition ``objective``/``param``/``seed`` of the bex
    dataset ``out`` for ``task``, whose rewards the dataset holds (module docstring)."""
    domain, task_name = parse_task(task)
    spec = env_spec(domain, task_name)
    check_fresh_partition(out, domain, objective, param, seed)
    episodes, reward_rows, facts = read_minari(src, spec)
    src_name = str(Path(src).resolve()) if Path(src).exists() else str(src)
    config = {"imported_from": src_name, "format": "minari", "minari_dataset_id": facts["dataset_id"],
              "rewards_of": f"{domain}_{task_name}", "layout": facts["layout"]}
    res = write_imported(out, spec, objective, param, seed, episodes, reward_rows, config,
                         physics=facts["physics"])
    return {**res, "domain": domain, "task": task_name, "physics": facts["physics"], "layout": facts["layout"],
            "rewards_checked": facts["rewards_checked"], "source_fingerprint": facts["source_fingerprint"]}
