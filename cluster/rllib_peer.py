"""A peer baseline: RLlib's own offline BC / CQL trained on a bex dataset as a Tune trial.

RLlib 2.60's new-API-stack offline stack (``BCConfig``/``CQLConfig`` with
``.offline_data(input_=..., input_read_method="read_parquet",
input_read_schema=...)``) reads Parquet through Ray Data and turns **every row
into one transition** (``OfflinePreLearner._map_to_episodes``): a row must hold
``obs``, ``actions``, ``rewards`` and ``new_obs`` (optionally ``terminateds``,
``truncateds``, ``eps_id``, ``t``); ``input_read_schema`` only renames columns.
A bex file is one row per *step* (dm_env convention: row ``i`` holds the
observation after step ``i`` and the action that produced it), its task rewards
live in the relabel cache ``_rewards/<domain>_<task>/<file stem>.arrow``, and ``s'`` is the
next row, so RLlib cannot train on the step files directly (pairing a row's
``observation`` with its own ``action`` would even be off by one step).

This module therefore writes a *transition view* of a dataset for one task
(``export_rllib``): one Parquet file per data file, the same hive layout,
columns in bex's names, and ``INPUT_READ_SCHEMA`` maps them to RLlib's
``Columns``.  Row ``k`` of the view is row ``k`` of ``Dataset.transitions(task)``.

``rllib_trial`` is the Tune function trainable behind ``learner: rllib_bc`` and
``learner: rllib_cql``: it writes the view of the trial's data, builds RLlib's
algorithm on it (local learner, no env runners, CPU friendly), runs ``steps``
gradient updates and evaluates the RLlib module's deterministic action with
bex's own ``envs.evaluate`` so the returns are comparable with bex's learners;
it reports the same keys (``eval/return_mean``, ``eval/return_std``, ``steps``,
``wall_s``).  See ``docs/rllib.md``.
"""
from __future__ import annotations

import functools
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

#: ``input_read_schema`` for the transition view: RLlib ``Columns`` name -> view column.
INPUT_READ_SCHEMA: dict[str, str] = {
    "eps_id": "episode_id",          # Columns.EPS_ID
    "t": "t",                        # Columns.T (step index of ``observation`` in its episode)
    "obs": "observation",            # Columns.OBS
    "actions": "action",             # Columns.ACTIONS
    "rewards": "reward",             # Columns.REWARDS
    "new_obs": "next_observation",   # Columns.NEXT_OBS
    "terminateds": "terminated",     # Columns.TERMINATEDS (discount == 0)
    "truncateds": "truncated",       # Columns.TRUNCATEDS (last row of an episode without a terminal)
}
#: Columns of the transition view, in file order (``discount`` is extra: bex's learners use it).
VIEW_COLUMNS = ("episode_id", "t", "observation", "action", "reward", "next_observation", "discount",
                "terminated", "truncated")
VIEW_META_FILE = "_bex_rllib_view.json"

#: Hyperparameters of the RLlib peers (strict: a key not listed here is rejected).
#: ``small``/``paper`` presets mirror bex's (hidden width, batch size, learning rate).
RLLIB_DEFAULTS: dict[str, dict[str, Any]] = {
    "rllib_bc": {"hidden_dim": 256, "num_layers": 2, "batch_size": 256, "lr": 3e-4},
    "rllib_cql": {"hidden_dim": 256, "num_layers": 2, "batch_size": 256, "lr": 3e-4,
                  "actor_lr": None, "critic_lr": None, "alpha_lr": None,
                  "gamma": 0.99, "tau": 0.005, "min_q_weight": 5.0, "num_actions": 10,
                  "bc_iters": 0, "temperature": 1.0, "lagrangian": False, "lagrangian_thresh": 5.0,
                  "twin_q": True, "initial_alpha": 1.0},
}
_PRESETS = {"small": {"hidden_dim": 256, "batch_size": 256, "lr": 3e-4},
            "paper": {"hidden_dim": 1024, "batch_size": 1024, "lr": 1e-4}}
RLLIB_LEARNERS = tuple(RLLIB_DEFAULTS)


def resolved_config(learner: str, preset: str = "small", overrides: dict | None = None) -> dict:
    """The preset's hyperparameters with ``overrides``; unknown keys and bad values raise ``ValueError``."""
    if learner not in RLLIB_DEFAULTS:
        raise ValueError(f"unknown learner {learner!r}; RLlib peers: {', '.join(RLLIB_LEARNERS)}")
    if preset not in _PRESETS:
        raise ValueError(f"unknown preset {preset!r}; allowed: {', '.join(_PRESETS)}")
    cfg = dict(RLLIB_DEFAULTS[learner])
    cfg.update(_PRESETS[preset])
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(cfg))
    if unknown:
        raise ValueError(f"unknown {learner} hyperparameter(s) {unknown}; allowed: {sorted(cfg)}")
    cfg.update(overrides)
    for k, v in cfg.items():
        want = (bool,) if isinstance(RLLIB_DEFAULTS[learner][k], bool) else (
            (int,) if k in ("hidden_dim", "num_layers", "batch_size", "num_actions", "bc_iters") else (int, float))
        if not (v is None and RLLIB_DEFAULTS[learner][k] is None) and (
                not isinstance(v, want) or (bool not in want and isinstance(v, bool))):
            raise ValueError(f"{learner} {k} must be {' or '.join(w.__name__ for w in want)}, got {v!r}")
    for k in ("hidden_dim", "num_layers", "batch_size", "num_actions"):
        if k in cfg and cfg[k] < 1:
            raise ValueError(f"{learner} {k} must be a positive integer, got {cfg[k]!r}")
    for k in ("lr", "actor_lr", "critic_lr", "alpha_lr", "tau", "initial_alpha", "temperature"):
        if cfg.get(k) is not None and not (0.0 < float(cfg[k]) <= (1.0 if k != "temperature" else 1e6)):
            raise ValueError(f"{learner} {k} must be in (0, 1], got {cfg[k]!r}")
    for k in ("gamma",):
        if k in cfg and not 0.0 <= float(cfg[k]) <= 1.0:
            raise ValueError(f"{learner} {k} must be in [0, 1], got {cfg[k]!r}")
    for k in ("min_q_weight", "bc_iters", "lagrangian_thresh"):
        if k in cfg and float(cfg[k]) < 0:
            raise ValueError(f"{learner} {k} must be >= 0, got {cfg[k]!r}")
    return cfg


def updates_per_iteration(steps: int, eval_every: int, report_every: int, learner: str = "rllib_bc",
                          cap: int = 1000) -> int:
    """Gradient updates per ``Algorithm.train()`` call, a divisor of ``gcd(steps, eval_every,
    report_every)`` (so reports and evaluations land on exactly the steps bex's own trials use).

    BC: the largest such divisor up to ``cap`` (fewer Ray Data round trips).  CQL: the
    smallest one >= 2, because RLlib soft-updates the target critics once per ``train()``
    call, not per gradient step (``DQNLearner.after_gradient_based_update``); ``tau`` is
    rescaled to ``1 - (1 - tau)**k`` so the target's time constant stays the same.
    """
    g = math.gcd(math.gcd(int(steps), int(eval_every)), int(report_every))
    divisors = [k for k in range(1, min(g, cap) + 1) if g % k == 0]
    if learner == "rllib_cql":
        return next((k for k in divisors if k >= 2), 1)
    return max(divisors)


def check_schedule(cfg) -> None:
    """RLlib-specific checks of a ``TrialConfig`` (no-op for bex's own learners).

    RLlib 2.60's CQL ``training_step`` passes a single batch as ``data_iterators``
    when ``dataset_num_iters_per_learner == 1`` with a local learner (``KeyError: 0``),
    so ``rllib_cql`` needs at least 2 updates per ``train()`` call.
    """
    if cfg.learner not in RLLIB_DEFAULTS:
        return
    if min(int(cfg.steps), int(cfg.eval_every), int(cfg.report_every)) < 1:
        return  # TrialConfig.validate names the bad key
    if cfg.learner == "rllib_cql" and updates_per_iteration(cfg.steps, cfg.eval_every, cfg.report_every,
                                                            cfg.learner) < 2:
        raise ValueError(f"rllib_cql needs steps, eval_every and report_every with a common divisor >= 2 "
                         f"(got {cfg.steps}, {cfg.eval_every}, {cfg.report_every}); RLlib 2.60's CQL cannot "
                         f"run one update per iteration on a local learner")


# --------------------------------------------------------------------------- Ray Data on bex files
def bex_parquet_files(root: str | os.PathLike, **filters) -> list[str]:
    """The data files of a bex dataset selected by partition ``filters`` (bex's own reader).

    ``ray.data.read_parquet(root)`` reads the whole dataset correctly too (relabel
    caches are ``.arrow``, not Parquet); this selects partitions without listing them.
    """
    from bex.replay import Dataset

    return [str(f.path) for f in Dataset(root, **filters).files]


def read_bex_ray(root: str | os.PathLike, **filters):
    """The step rows of a bex dataset as a Ray Dataset, with the hive partition columns."""
    import ray
    from ray.data.datasource import Partitioning

    return ray.data.read_parquet(bex_parquet_files(root, **filters),
                                 partitioning=Partitioning("hive", base_dir=str(Path(root).resolve())))


# --------------------------------------------------------------------------- transition view
def _view_table(episode_id, t, obs, action, reward, next_obs, discount, is_last):
    import pyarrow as pa

    def fsl(x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])

    discount = np.asarray(discount, np.float32)
    terminated = discount == 0.0
    return pa.table({
        "episode_id": pa.array(episode_id, pa.string()),
        "t": pa.array(np.asarray(t, np.int32)),
        "observation": fsl(obs),
        "action": fsl(action),
        "reward": pa.array(np.asarray(reward, np.float32)),
        "next_observation": fsl(next_obs),
        "discount": pa.array(discount),
        "terminated": pa.array(terminated),
        "truncated": pa.array(np.asarray(is_last, bool) & ~terminated),
    })


def _write_table(table, path: Path) -> None:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def export_rllib(dataset: str | os.PathLike, task: str, out_dir: str | os.PathLike, **filters) -> dict:
    """Write the transition view of ``dataset`` for ``task`` under ``out_dir`` (RLlib-ready Parquet).

    One view file per data file, at the same relative (hive) path; rewards come
    from the relabel cache (computed first where missing).  Returns
    ``{"out", "task", "files", "transitions", "input_read_schema"}``.
    """
    from bex.envs import parse_task
    from bex.replay import Dataset, atomic_write_bytes, relabel, transition_rows

    ds = Dataset(dataset, **filters)
    if not ds.files:
        raise ValueError(f"dataset {str(dataset)!r} has no data" + (f" matching {filters}" if filters else ""))
    domain, t = parse_task(task, ds.env_spec.domain)
    task = f"{domain}_{t}"
    if task not in ds.cached_tasks():
        relabel(dataset, task, **filters)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {str(out)!r} is a file; give a directory")
    src = Path(dataset).resolve()
    if out.resolve() == src or src in out.resolve().parents:
        raise ValueError(f"output {str(out)!r} is inside the dataset; Ray Data would read it as data")
    steps = ds.load(("episode_id", "step", "observation", "action", "discount", "is_first", "is_last"))
    tr = ds.transitions(task, steps=steps)
    idx = transition_rows(steps)                      # row of s' (the row of s is idx - 1)
    ends = np.cumsum([f.num_rows for f in ds.files])
    bounds = np.searchsorted(idx, np.concatenate([[0], ends]))  # transitions of file j: bounds[j]:bounds[j+1]
    for j, f in enumerate(ds.files):
        k = slice(bounds[j], bounds[j + 1])
        if len(idx[k]) and not steps.is_first[idx[k][0] - 1]:
            raise ValueError(f"data file {str(f.path)!r} does not start with an episode's first row")
        table = _view_table(steps.episode_id[idx[k]], steps.step[idx[k]] - 1, tr.obs[k], tr.action[k],
                            tr.reward[k], tr.next_obs[k], tr.discount[k], tr.is_last[k])
        _write_table(table, out / f.path.relative_to(ds.root))
    total = len(tr)
    meta = {"task": task, "source": str(src), "filters": {k: str(v) for k, v in filters.items()},
            "files": len(ds.files), "transitions": total, "input_read_schema": INPUT_READ_SCHEMA}
    atomic_write_bytes(out / VIEW_META_FILE, json.dumps(meta, indent=2, sort_keys=True).encode())
    return {"out": str(out), "task": task, "files": len(ds.files), "transitions": total,
            "input_read_schema": dict(INPUT_READ_SCHEMA)}


def view_files(out_dir: str | os.PathLike) -> list[str]:
    """The Parquet files of a transition view, sorted (the order of ``Dataset.transitions``)."""
    out = Path(out_dir)
    return sorted(str(p) for p in out.rglob("*.parquet")
                  if not any(part.startswith((".", "_")) for part in p.relative_to(out).parts))


# --------------------------------------------------------------------------- gymnasium wrapper
def make_gym_env(env_config: dict):
    """A gymnasium view of ``envs.Env`` (flat float32 obs, Box action in [-1, 1]) for RLlib env runners."""
    import gymnasium as gym

    from bex.envs import Env

    class BexGymEnv(gym.Env):
        def __init__(self, domain: str, task: str, seed: int | None = None):
            self._env = Env(domain, task, seed=seed)
            spec = self._env.spec
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, (spec.obs_dim,), np.float32)
            self.action_space = gym.spaces.Box(-1.0, 1.0, (spec.action_dim,), np.float32)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return self._env.reset().obs.astype(np.float32), {}

        def step(self, action):
            s = self._env.step(np.asarray(action))
            terminated = s.last and s.discount == 0.0
            return s.obs.astype(np.float32), s.reward, terminated, s.last and not terminated, {}

        def close(self):
            self._env.close()

    return BexGymEnv(env_config["domain"], env_config["task"], env_config.get("seed"))


def spaces(obs_dim: int, action_dim: int):
    import gymnasium as gym

    return (gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32),
            gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32))


# --------------------------------------------------------------------------- RLlib algorithm
GYM_ENV_NAME = "bex_dmc"


def register_gym_env() -> str:
    """Register ``make_gym_env`` with Tune as ``bex_dmc`` (``env_config={"domain", "task", "seed"}``)."""
    from ray import tune

    tune.register_env(GYM_ENV_NAME, make_gym_env)
    return GYM_ENV_NAME


def build_algorithm_config(learner: str, view_dir: str | os.PathLike, domain: str, task: str, obs_dim: int,
                           action_dim: int, hp: dict, seed: int = 0, updates_per_iter: int = 1):
    """RLlib ``BCConfig``/``CQLConfig`` reading the transition view at ``view_dir``.

    The env (``bex_dmc``) is only there because RLlib's SAC/CQL set-up always
    builds a local EnvRunner; training never steps it (``num_env_runners=0``).
    """
    obs_space, act_space = spaces(obs_dim, action_dim)
    hidden = [int(hp["hidden_dim"])] * int(hp["num_layers"])
    if learner == "rllib_bc":
        from ray.rllib.algorithms.bc import BCConfig

        cfg = BCConfig().training(lr=hp["lr"], train_batch_size_per_learner=int(hp["batch_size"]))
        cfg = cfg.rl_module(model_config={"fcnet_hiddens": hidden, "fcnet_activation": "relu"})
    elif learner == "rllib_cql":
        from ray.rllib.algorithms.cql import CQLConfig

        cfg = CQLConfig().training(
            actor_lr=hp["actor_lr"] or hp["lr"], critic_lr=hp["critic_lr"] or hp["lr"],
            alpha_lr=hp["alpha_lr"] or hp["lr"], gamma=hp["gamma"],
            tau=1.0 - (1.0 - hp["tau"]) ** int(updates_per_iter),  # one target update per train() call
            min_q_weight=hp["min_q_weight"], num_actions=int(hp["num_actions"]), bc_iters=-(-int(hp["bc_iters"]) // int(updates_per_iter)),  # RLlib counts train() calls
            temperature=hp["temperature"], lagrangian=bool(hp["lagrangian"]),
            lagrangian_thresh=hp["lagrangian_thresh"], twin_q=bool(hp["twin_q"]),
            initial_alpha=hp["initial_alpha"], train_batch_size_per_learner=int(hp["batch_size"]),
            n_step=1, lr=None)
        cfg = cfg.rl_module(model_config={"fcnet_hiddens": hidden, "fcnet_activation": "relu",
                                          "head_fcnet_hiddens": []})
    else:
        raise ValueError(f"unknown RLlib learner {learner!r}; allowed: {', '.join(RLLIB_LEARNERS)}")
    cfg = (cfg.environment(register_gym_env(), env_config={"domain": domain, "task": task, "seed": seed},
                           observation_space=obs_space, action_space=act_space)
           .framework("torch")
           .env_runners(num_env_runners=0)
           .learners(num_learners=0, num_cpus_per_learner=0)
           .evaluation(evaluation_interval=None)
           .reporting(min_time_s_per_iteration=0, min_train_timesteps_per_iteration=0,
                      min_sample_timesteps_per_iteration=0)
           .debugging(seed=seed, log_level="ERROR")
           .offline_data(
               input_=view_files(view_dir),
               input_read_method="read_parquet",
               # Ray Data's ListFiles task always takes 1 CPU (not configurable); the read tasks and
               # the OfflinePreLearner actor take ~none, so a trial needs one spare CPU in the cluster.
               input_read_method_kwargs={"columns": list(INPUT_READ_SCHEMA.values()), "partitioning": None,
                                         "num_cpus": 0.001},
               input_read_schema=dict(INPUT_READ_SCHEMA),
               dataset_num_iters_per_learner=int(updates_per_iter),
               map_batches_kwargs={"concurrency": 1, "num_cpus": 0},
               # BC/MARWIL passes these to the Learner's iterator too: full batches only. CQL's
               # training_step does not, so its last batch of each epoch has N mod batch_size rows.
               iter_batches_kwargs={"prefetch_batches": 1, "drop_last": True},
           ))
    return cfg


def module_policy(algo):
    """``obs -> action`` with the RLlib module's deterministic action (inference distribution's mode)."""
    import torch

    # Offline algorithms never sync weights to the (unused) local EnvRunner, and BC has no
    # EnvRunner module at all, so read the local Learner's module (the one being trained).
    module = algo.learner_group._learner.module["default_policy"]
    dist_cls = module.get_inference_action_dist_cls()

    def policy(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = module.forward_inference({"obs": torch.as_tensor(np.asarray(obs, np.float32)[None])})
            dist = dist_cls.from_logits(out["action_dist_inputs"]).to_deterministic()
            return np.clip(dist.sample().numpy()[0], -1.0, 1.0)

    return policy


def write_trial_view(tr, view_dir: str | os.PathLike, seed: int) -> Path:
    """The one-file transition view a trial trains on, from ``Transitions`` arrays ``tr``.

    RLlib reads the view in epochs, in file order, without shuffling: the rows are
    stored in one seeded random order so a batch is not a run of consecutive steps.
    """
    n = len(tr)
    p = np.random.default_rng(seed).permutation(n)
    path = Path(view_dir) / "part-000000.parquet"
    _write_table(_view_table(p.astype(str), np.zeros(n, np.int32), tr.obs[p], tr.action[p],
                             tr.reward[p], tr.next_obs[p], tr.discount[p], np.zeros(n, bool)), path)
    return path


RLLIB_STATE_FILE = "bex_rllib_state.json"


def save_rllib_checkpoint(algo, path: str | os.PathLike, meta: dict) -> Path:
    """Write ``algo``'s state (``Algorithm.save_to_path``) and bex's ``meta`` (step counter, history) to ``path``."""
    path = Path(path)
    algo.save_to_path(str(path / "algorithm"))
    (path / RLLIB_STATE_FILE).write_text(json.dumps(meta))
    return path


def restore_rllib_checkpoint(algo, path: str | os.PathLike) -> dict:
    """Load a :func:`save_rllib_checkpoint` directory into ``algo``; returns the saved ``meta``."""
    path = Path(path)
    algo.restore_from_path(str(path / "algorithm"))
    return json.loads((path / RLLIB_STATE_FILE).read_text())


def rllib_trial(config: dict, data: dict | None = None) -> None:
    """Tune function trainable for ``learner: rllib_bc | rllib_cql`` (same ``config`` as ``offline_trial``)."""
    import torch
    from ray import tune

    from bex.envs import parse_task

    from .train import TrialConfig, data_key, evaluate_trial, load_offline_data, report_trial

    cfg = TrialConfig.from_dict(config["trial"])
    hp = resolved_config(cfg.learner, cfg.preset, cfg.learner_config)
    torch.manual_seed(cfg.seed)
    ctx = tune.get_context()
    cpus = (ctx.get_trial_resources().required_resources or {}).get("CPU", 1) if ctx else 1
    torch.set_num_threads(max(1, int(cpus)))
    t_start = time.perf_counter()
    view_dir = Path(tempfile.mkdtemp(prefix="bex-rllib-view-"))
    try:
        od = (data or {}).get(data_key(cfg.dataset, cfg.filters))
        if od is None:  # run without the driver's object-store arrays: load them here
            od = load_offline_data(cfg.dataset, cfg.filters, [cfg.task])
        d, t = parse_task(cfg.task, od.env_spec["domain"])
        tr = od.transitions(f"{d}_{t}")  # the arrays every bex learner of this sweep trains on
        write_trial_view(tr, view_dir, cfg.seed)
        obs_dim, action_dim = tr.obs.shape[1], tr.action.shape[1]
        k = updates_per_iteration(cfg.steps, cfg.eval_every, cfg.report_every, cfg.learner)
        algo = build_algorithm_config(cfg.learner, view_dir, d, t, obs_dim, action_dim, hp, cfg.seed,
                                      updates_per_iter=k).build_algo()
        step, last_eval, history, resumed_from, wall_before = 0, {}, [], 0, 0.0
        ckpt = tune.get_checkpoint()
        if ckpt:  # a restarted trial: RLlib's modules and optimisers, and our counters
            with ckpt.as_directory() as cdir:
                meta = restore_rllib_checkpoint(algo, cdir)
            step = resumed_from = int(meta["steps"])
            last_eval, history, wall_before = meta["last_eval"], meta["history"], float(meta["wall_s"])
        policy = module_policy(algo)
        while step < cfg.steps:
            n = min(cfg.report_every, cfg.steps - step)
            t0 = time.perf_counter()
            for _ in range(n // k):
                result = algo.train()
            step += n
            dt = time.perf_counter() - t0
            report = {"steps": step, "train/updates_per_s": n / max(dt, 1e-9), "resumed_from": resumed_from}
            report.update(_learner_metrics(result))
            checkpoint = None
            if step % cfg.eval_every == 0 or step == cfg.steps:
                last_eval = evaluate_trial(policy, cfg, d, t, step)  # the same starts as bex's learners
                history.append({"steps": step, **last_eval})
                meta = {"steps": step, "last_eval": last_eval, "history": history,
                        "wall_s": wall_before + time.perf_counter() - t_start}
                checkpoint = functools.partial(save_rllib_checkpoint, algo, meta=meta)
            report.update(last_eval)
            report["wall_s"] = wall_before + time.perf_counter() - t_start
            report_trial(report, checkpoint)
        algo.stop()
    finally:
        shutil.rmtree(view_dir, ignore_errors=True)


def _learner_metrics(result: dict) -> dict[str, float]:
    """RLlib's per-module learner stats under ``rllib/`` (finite scalars only)."""
    out = {}
    for k, v in (result.get("learners", {}).get("default_policy", {}) or {}).items():
        if isinstance(v, (int, float, np.floating, np.integer)) and np.isfinite(v):
            out[f"rllib/{k}"] = float(v)
    return out
