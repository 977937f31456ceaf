"""A peer baseline: RLlib's own offline BC / CQL trained on a bex dataset as a Tune trial.

RLlib 2.60's new-API-stack offline stack (``BCConfig``/``CQLConfig`` with
``.offline_data(input_=..., input_read_method="read_parquet",
input_read_schema=...)``) reads Parquet through Ray Data and turns **every row
into one transition** (``OfflinePreLearner._map_to_episodes``).  A bex file is
one row per *step*, so RLlib trains on a *transition view* of the data, written
by ``bex.replay.rllib_view`` (``export_rllib``, ``write_trial_view``; its
``INPUT_READ_SCHEMA`` maps the view's columns to RLlib's ``Columns``).  The
gymnasium wrapper RLlib's CQL set-up needs is ``bex.envs.gym``; this module
registers it with Tune (``register_gym_env``).

``RLlibTrainee`` is the trainee behind ``learner: rllib_bc`` and
``learner: rllib_cql`` in the trial loop every bex trial runs
(``bex.learners.trial.run_trial``; the Tune trainable is
``cluster.train.offline_trial``): it writes the view of the trial's data,
builds RLlib's algorithm on it (local learner, no env runners, CPU friendly),
runs the loop's gradient updates ``k`` per ``Algorithm.train()`` call, acts with
the RLlib module's deterministic action (the loop evaluates it with bex's own
``envs.evaluate``, so the returns are comparable with bex's learners) and saves
and restores the algorithm in the loop's checkpoints.  The trial reports the
same keys as bex's (``eval/return_mean``, ``eval/return_std``, ``steps``,
``wall_s``) plus RLlib's learner stats under ``rllib/``.  The hyperparameter
schema (``RLLIB_DEFAULTS``, presets, ``updates_per_iteration``) is plain data in
``bex.learners.trial`` so ``TrialConfig`` validates it without Ray.  See
``docs/rllib.md``.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from bex.envs.gym import GYM_ENV_NAME, make_gym_env, spaces
from bex.learners.trial import RLLIB_LEARNERS, OfflineData, TrialConfig, resolved_rllib_config, updates_per_iteration
from bex.replay.rllib_view import INPUT_READ_SCHEMA, bex_parquet_files, view_files, write_trial_view


# --------------------------------------------------------------------------- Ray Data on bex files
def read_bex_ray(root: str | os.PathLike, **filters):
    """The step rows of a bex dataset as a Ray Dataset, with the hive partition columns."""
    import ray
    from ray.data.datasource import Partitioning

    return ray.data.read_parquet(bex_parquet_files(root, **filters),
                                 partitioning=Partitioning("hive", base_dir=str(Path(root).resolve())))


# --------------------------------------------------------------------------- RLlib algorithm
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
            min_q_weight=hp["min_q_weight"], num_actions=int(hp["num_actions"]),
            bc_iters=-(-int(hp["bc_iters"]) // int(updates_per_iter)),  # RLlib counts train() calls
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


class RLlibTrainee:
    """RLlib's BC / CQL (``learner: rllib_bc | rllib_cql``) as a ``bex.learners.trial.Trainee``.

    Builds the algorithm on a temporary one-file transition view of ``od`` (the arrays every bex learner
    of the sweep trains on); a context manager: on exit the algorithm is stopped (after a clean run) and
    the view removed.  ``train(n)`` runs ``n`` gradient updates as ``n // k`` ``Algorithm.train()`` calls
    (``k = updates_per_iteration(...)`` divides every ``n`` the loop asks for); checkpoints are
    :func:`save_rllib_checkpoint` directories.
    """

    def __init__(self, cfg: TrialConfig, od: OfflineData, threads: int = 1):
        import torch

        from bex.envs import parse_task

        hp = resolved_rllib_config(cfg.learner, cfg.preset, cfg.learner_config)
        torch.manual_seed(cfg.seed)
        torch.set_num_threads(max(1, int(threads)))
        self.algo, self._policy = None, None
        self.view_dir = Path(tempfile.mkdtemp(prefix="bex-rllib-view-"))
        try:
            self.domain, self.task = parse_task(cfg.task, od.env_spec["domain"])
            tr = od.transitions(f"{self.domain}_{self.task}")  # the arrays every bex learner of this sweep trains on
            write_trial_view(tr, self.view_dir, cfg.seed)
            self.k = updates_per_iteration(cfg.steps, cfg.eval_every, cfg.report_every, cfg.learner)
            self.algo = build_algorithm_config(cfg.learner, self.view_dir, self.domain, self.task, tr.obs.shape[1],
                                               tr.action.shape[1], hp, cfg.seed, updates_per_iter=self.k).build_algo()
        except BaseException:
            shutil.rmtree(self.view_dir, ignore_errors=True)
            raise

    def __enter__(self) -> RLlibTrainee:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None and self.algo is not None:
                self.algo.stop()
        finally:
            shutil.rmtree(self.view_dir, ignore_errors=True)

    def start(self) -> None:
        """Nothing to do before a fresh run (RLlib's own ``bc_iters`` covers a BC warm-up)."""

    def train(self, n: int) -> dict[str, float]:
        for _ in range(n // self.k):
            result = self.algo.train()
        return _learner_metrics(result)

    def act(self, obs: np.ndarray) -> np.ndarray:
        if self._policy is None:
            self._policy = module_policy(self.algo)
        return self._policy(obs)

    def save(self, directory: str, meta: dict) -> None:
        save_rllib_checkpoint(self.algo, directory, meta)

    def restore(self, directory: str) -> dict:
        """RLlib's modules and optimisers, and the loop's counters (``steps``, ``last_eval``, ...)."""
        meta = restore_rllib_checkpoint(self.algo, directory)
        self._policy = None
        return meta


def _learner_metrics(result: dict) -> dict[str, float]:
    """RLlib's per-module learner stats under ``rllib/`` (finite scalars only)."""
    out = {}
    for k, v in (result.get("learners", {}).get("default_policy", {}) or {}).items():
        if isinstance(v, (int, float, np.floating, np.integer)) and np.isfinite(v):
            out[f"rllib/{k}"] = float(v)
    return out
