"""One offline trial without Ray: its config, its data, and the train / evaluate / checkpoint / resume loop.

A trial is dataset + task + learner + seed (``docs/cluster.md``, "Offline trials"; ``docs/rllib.md`` for the
RLlib peers).  This module is the Ray-free part of ``cluster/train.py``, which keeps the Tune side only
(resources, trial names, ``run_trials``, the Tune trainable that calls :func:`run_trial` with
``tune.report`` as the report callback), so bex's learners and RLlib's (``cluster/rllib_peer.py``) run the
same loop and ``rllib_peer`` needs nothing from ``cluster/train.py``.

* :class:`TrialConfig` is the strict, typed description of a trial (a Tune ``param_space`` entry).  It
  validates the RLlib peers' hyperparameters too (``RLLIB_DEFAULTS``, :func:`resolved_rllib_config`,
  :func:`check_schedule`: plain data and arithmetic, no Ray), so a config is checked the same way
  whichever modules are imported.
* :class:`OfflineData`, :func:`data_key`, :func:`load_offline_data`: a dataset selection is loaded once
  (observations, actions and discounts once, one reward vector per task) and shared by the trials
  that train on it (the Tune driver puts it in Ray's object store); :func:`check_trial` validates a trial
  against its dataset before anything starts.
* :func:`run_trial` is the loop.  It trains a *trainee* (the :class:`Trainee` protocol: ``train(n)``,
  ``act``, ``save``/``restore``, ``start``), reports every ``report_every`` gradient steps through
  ``report(metrics, write_checkpoint)``, evaluates every ``eval_every`` steps with ``eval_episodes``
  deterministic episodes (:func:`evaluate_trial`) and passes a checkpoint writer with each evaluation.
  Given the checkpoint of an interrupted run it resumes at the step that run reached.
* :class:`LearnerTrainee` is a bex learner (``learners.LEARNERS``) as a trainee; its checkpoint is
  ``state.pt`` (learner, optimisers, sampler RNG, step, history, wall time, torch RNG).
  :func:`run_learner_trial` runs one such trial.
"""
from __future__ import annotations

import functools
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bex.core import PRESET_NAMES, ConfigBase, param
from bex.core.state import load_state, state_bytes
from bex.replay import atomic_write_bytes

from . import LEARNERS, PRESETS, make_learner

#: A bex learner trial's checkpoint file (in the checkpoint directory).
STATE_FILE = "state.pt"
#: The learner name of a behaviour distillation trial (``learners/distill.py``; ``learner_config`` is a
#: ``DistillConfig``, "gradient steps" are outer steps).
DISTILL = "distill"

# --------------------------------------------------------------------------- RLlib peers' hyperparameters
#: Hyperparameters of the RLlib peers (strict: a key not listed here is rejected).
#: The ``small``/``paper`` presets are bex's learners' (:data:`bex.learners.PRESETS`: width, batch, rate).
RLLIB_DEFAULTS: dict[str, dict[str, Any]] = {
    "rllib_bc": {"hidden_dim": 256, "num_layers": 2, "batch_size": 256, "lr": 3e-4},
    "rllib_cql": {"hidden_dim": 256, "num_layers": 2, "batch_size": 256, "lr": 3e-4,
                  "actor_lr": None, "critic_lr": None, "alpha_lr": None,
                  "gamma": 0.99, "tau": 0.005, "min_q_weight": 5.0, "num_actions": 10,
                  "bc_iters": 0, "temperature": 1.0, "lagrangian": False, "lagrangian_thresh": 5.0,
                  "twin_q": True, "initial_alpha": 1.0},
}
RLLIB_LEARNERS = tuple(RLLIB_DEFAULTS)


def resolved_rllib_config(learner: str, preset: str = "small", overrides: dict | None = None) -> dict:
    """An RLlib peer's preset hyperparameters with ``overrides``; unknown keys and bad values raise ``ValueError``."""
    if learner not in RLLIB_DEFAULTS:
        raise ValueError(f"unknown learner {learner!r}; RLlib peers: {', '.join(RLLIB_LEARNERS)}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; allowed: {', '.join(PRESET_NAMES)}")
    cfg = dict(RLLIB_DEFAULTS[learner])
    cfg.update({k: v for k, v in PRESETS[preset].items() if k in cfg})  # the learners' presets
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
        return  # TrialConfig's field check names the bad key
    if cfg.learner == "rllib_cql" and updates_per_iteration(cfg.steps, cfg.eval_every, cfg.report_every,
                                                            cfg.learner) < 2:
        raise ValueError(f"rllib_cql needs steps, eval_every and report_every with a common divisor >= 2 "
                         f"(got {cfg.steps}, {cfg.eval_every}, {cfg.report_every}); RLlib 2.60's CQL cannot "
                         f"run one update per iteration on a local learner")


# --------------------------------------------------------------------------- trial config and data
@dataclass(frozen=True)
class TrialConfig(ConfigBase):
    """One offline trial."""

    dataset: str = param(doc="dataset root directory")
    task: str = param(doc="task to train for (walker_stand or stand)")
    learner: str = param("td3", "learner name (see ``learners.LEARNERS``) or an RLlib peer (``RLLIB_LEARNERS``)")
    filters: dict = param(doc="partition filters (objective, param, seed)", default_factory=dict)
    preset: str = param("small", "learner preset", choices=PRESET_NAMES)
    learner_config: dict = param(doc="overrides of the preset's fields", default_factory=dict)
    steps: int = param(10_000, "gradient steps", lo=1)
    eval_every: int = param(5_000, "gradient steps between evaluations (and checkpoints)", lo=1)
    eval_episodes: int = param(5, "deterministic evaluation episodes", lo=1)
    report_every: int = param(1_000, "gradient steps between reports of training metrics", lo=1)
    seed: int = param(0, "trial seed (learner initialisation, sampler, evaluation episodes)", lo=0, hi=2**32 - 1)
    device: str = param("auto", "torch device", choices=("auto", "cpu", "cuda"))
    label: str = param("", "dataset label for results tables (explorer/objective/param)")

    def check(self) -> None:
        if self.learner not in LEARNERS and self.learner not in RLLIB_LEARNERS and self.learner != DISTILL:
            raise ValueError(f"unknown learner {self.learner!r}; "
                             f"allowed: {', '.join(sorted(LEARNERS) + list(RLLIB_LEARNERS) + [DISTILL])}")
        check_schedule(self)
        self.resolved_learner_config()

    def resolved_learner_config(self) -> dict:
        """The preset's config with ``learner_config`` applied, validated by the learner's config class."""
        if self.learner.startswith("rllib_"):
            return resolved_rllib_config(self.learner, self.preset, self.learner_config)
        if self.learner == DISTILL:
            from .distill import DistillConfig

            cfg_cls = DistillConfig
        else:
            cfg_cls = LEARNERS[self.learner][0]
        base = cfg_cls.preset(self.preset).to_dict()
        unknown = sorted(set(self.learner_config) - set(base))
        if unknown:
            raise ValueError(f"unknown {self.learner} hyperparameter(s) {unknown}; allowed: {sorted(base)}")
        base.update(self.learner_config)
        return cfg_cls.from_dict(base).to_dict()


@dataclass
class OfflineData:
    """Transitions of one dataset selection, with one reward vector per task."""

    env_spec: dict
    obs: np.ndarray
    action: np.ndarray
    next_obs: np.ndarray
    discount: np.ndarray
    rewards: dict[str, np.ndarray]   # "domain_task" -> (N,)
    fingerprint: str = ""            # the selection's content hash (bex.replay.Dataset.fingerprint)

    def transitions(self, task: str):
        from bex.replay import Transitions

        return Transitions(self.obs, self.action, self.rewards[task], self.next_obs, self.discount,
                           np.zeros(len(self.discount), bool))


def data_key(dataset: str, filters: dict) -> str:
    """The key of a dataset selection in the ``{key: OfflineData}`` dict trials receive."""
    return json.dumps([str(Path(dataset).resolve()), sorted((k, str(v)) for k, v in filters.items())])


def load_offline_data(dataset: str, filters: dict, tasks: list[str]) -> OfflineData:
    """Load a dataset selection and the cached rewards of ``tasks`` (relabelling missing ones)."""
    from bex.envs import parse_task
    from bex.replay import Dataset, relabel, transition_rows

    ds = Dataset(dataset, **filters)
    if not ds.files:
        raise ValueError(f"dataset {dataset!r} has no data" + (f" matching {filters}" if filters else ""))
    domain = ds.env_spec.domain
    cached = ds.cached_tasks()
    rewards = {}
    for t in tasks:
        name = "_".join(parse_task(t, domain))
        if name not in cached:
            relabel(dataset, name, **filters)
        rewards[name] = ds.rewards(name)
    steps = ds.load(("observation", "action", "discount", "is_first", "is_last"))
    tr = ds.transitions(None, steps=steps, reward=np.zeros(len(steps), np.float32))  # rewards per task below
    idx = transition_rows(steps)
    return OfflineData(ds.env_spec.to_dict(), tr.obs, tr.action, tr.next_obs, tr.discount,
                       {k: v[idx].astype(np.float32) for k, v in rewards.items()}, ds.fingerprint())


def trial_data(cfg: TrialConfig, data: dict[str, OfflineData] | None = None) -> OfflineData:
    """The trial's arrays: ``data[data_key(...)]`` (the driver's shared arrays), else loaded from disk."""
    od = (data or {}).get(data_key(cfg.dataset, cfg.filters))
    if od is None:  # run without the driver's object-store arrays: load them here
        od = load_offline_data(cfg.dataset, cfg.filters, [cfg.task])
    return od


def check_trial(cfg: TrialConfig) -> str:
    """Validate a trial against its dataset before Tune starts; returns the canonical task name.

    A dataset whose observation layout differs from the task's (collected on
    ``quadruped_escape``, trained for ``quadruped_walk``) is refused here.
    """
    from bex.envs import check_layout, parse_task
    from bex.replay import Dataset

    ds = Dataset(cfg.dataset, **cfg.filters)
    if not ds.files:
        raise ValueError(f"dataset {cfg.dataset!r} has no data" + (f" matching {cfg.filters}" if cfg.filters else ""))
    d, t = parse_task(cfg.task, ds.env_spec.domain)
    check_layout(ds.env_spec, d, t)
    return f"{d}_{t}"


def choose_device(name: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cpu``/``cuda`` as given."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def evaluate_trial(policy, cfg: TrialConfig, domain: str, task: str, step: int) -> dict[str, float]:
    """The evaluation a trial reports at ``step`` (bex learners and RLlib peers alike).

    ``cfg.eval_episodes`` deterministic episodes on evaluation seeds derived from
    ``cfg.seed`` only, so every learner of a sweep is scored on the same starts;
    the metrics carry ``eval/at_step`` so later reports can repeat them.
    """
    from bex.envs import evaluate

    ev = evaluate(policy, domain, task, episodes=cfg.eval_episodes, seed=10_000 + cfg.seed * 100)
    return dict(ev.metrics("eval"), **{"eval/at_step": step})


# --------------------------------------------------------------------------- the loop
#: ``write_checkpoint(directory)`` fills an (existing, empty) checkpoint directory.
CheckpointWriter = Callable[[str], None]
#: ``report(metrics, write_checkpoint)``; ``write_checkpoint`` is None between evaluations.  A report
#: callback that keeps the checkpoint must call the writer before it returns: the trainee's state is
#: read when the writer runs, and training continues once ``report`` returns.
Report = Callable[[dict, CheckpointWriter | None], None]


class Trainee(Protocol):
    """What :func:`run_trial` trains: a bex learner (:class:`LearnerTrainee`) or an RLlib peer."""

    domain: str   #: evaluation domain (``walker``)
    task: str     #: evaluation task (``stand``)

    def start(self) -> None:
        """Called once on a fresh (not resumed) trial before training, e.g. to pre-train."""

    def train(self, n: int) -> dict[str, float]:
        """Run ``n`` gradient updates; returns the training metrics of the last."""

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The deterministic action in [-1, 1] for one observation."""

    def save(self, directory: str, meta: dict) -> None:
        """Write the trainee's state and the loop's ``meta`` to the checkpoint ``directory``."""

    def restore(self, directory: str) -> dict:
        """Load a :meth:`save` directory; returns the loop's meta: ``steps``, ``history``, ``wall_s``
        and optionally ``last_eval`` (the evaluation later reports repeat until the next one)."""


def _restore(trainee: Trainee, checkpoint) -> dict:
    """``checkpoint``: a directory, or an object with ``as_directory()`` (a Tune ``Checkpoint``)."""
    if hasattr(checkpoint, "as_directory"):
        with checkpoint.as_directory() as cdir:
            return trainee.restore(str(cdir))
    return trainee.restore(str(checkpoint))


def run_trial(cfg: TrialConfig, trainee: Trainee, report: Report, checkpoint=None,
              t_start: float | None = None, fingerprint: str = "") -> list[dict]:
    """Train ``trainee`` for ``cfg.steps`` gradient steps, reporting, evaluating and checkpointing on the way.

    Every ``report_every`` steps ``report(metrics, write_checkpoint)`` gets the trainee's training metrics
    plus ``steps``, ``train/updates_per_s``, ``resumed_from``, ``wall_s`` and the last evaluation's
    ``eval/*`` keys.  Every ``eval_every`` steps (and at the last step) the trainee is evaluated and
    ``write_checkpoint`` saves it with the loop's meta (``steps``, ``last_eval``, ``history``, ``wall_s``).
    With ``checkpoint`` (a directory or a Tune ``Checkpoint``) the trainee is restored and training
    continues at the saved step (``resumed_from``); wall time counts on from the saved ``wall_s``.
    ``t_start`` (``time.perf_counter()``) is when the trial's wall time starts, now by default.
    ``fingerprint``: the training data's content hash, reported in every row as ``data/fingerprint``.
    Returns the evaluation history (``[{"steps", "eval/..."}, ...]``).
    """
    t_start = time.perf_counter() if t_start is None else t_start
    step, resumed_from, history, last_eval, wall_before = 0, 0, [], {}, 0.0
    if checkpoint is not None:
        meta = _restore(trainee, checkpoint)
        step = resumed_from = int(meta["steps"])
        history = list(meta["history"])
        last_eval = dict(meta.get("last_eval") or {})
        wall_before = float(meta["wall_s"])
    else:
        trainee.start()
    while step < cfg.steps:
        n = min(cfg.report_every, cfg.steps - step)
        t0 = time.perf_counter()
        metrics = trainee.train(n)
        step += n
        dt = time.perf_counter() - t0
        row = {k: float(v) for k, v in metrics.items()}
        row.update({"steps": step, "train/updates_per_s": n / max(dt, 1e-9), "resumed_from": resumed_from})
        if fingerprint:
            row["data/fingerprint"] = fingerprint
        write = None
        if step % cfg.eval_every == 0 or step == cfg.steps:
            last_eval = evaluate_trial(trainee.act, cfg, trainee.domain, trainee.task, step)  # carried forward
            history.append({"steps": step, **last_eval})
            meta = {"steps": step, "last_eval": last_eval, "history": list(history),
                    "wall_s": wall_before + time.perf_counter() - t_start}
            write = functools.partial(trainee.save, meta=meta)
        row.update(last_eval)
        row["wall_s"] = wall_before + time.perf_counter() - t_start
        report(row, write)
    return history


def check_checkpoints(experiment_dir: str | Path) -> int:
    """Check every bex trial checkpoint (``**/checkpoint_*/state.pt``) under a local experiment directory
    with the ``weights_only`` unpickler, memory-mapped; returns how many.  An unsafe or corrupt one is a
    one-line ``ValueError`` naming it, before any trial restores it."""
    files = sorted(Path(experiment_dir).glob(f"**/checkpoint_*/{STATE_FILE}"))
    for f in files:
        load_state(f, check_only=True)
    return len(files)


# --------------------------------------------------------------------------- bex learners
class LearnerTrainee:
    """A bex learner (``learners.LEARNERS``) and its uniform transition sampler as a :class:`Trainee`.

    Checkpoint: ``state.pt`` with ``learner``, ``sampler``, ``step``, ``history``, ``wall_s``, ``torch_rng``.
    """

    def __init__(self, cfg: TrialConfig, od: OfflineData, threads: int = 1):
        import torch

        from bex.envs import parse_task
        from bex.replay import TransitionSampler

        self.domain, self.task = parse_task(cfg.task, od.env_spec["domain"])
        lcfg = cfg.resolved_learner_config()
        self.device = choose_device(cfg.device)
        torch.set_num_threads(max(1, int(threads)))
        torch.manual_seed(cfg.seed)
        self.learner = make_learner(cfg.learner, od.obs.shape[1], od.action.shape[1], lcfg, device=self.device,
                                    seed=cfg.seed)
        with warnings.catch_warnings():  # shared-memory arrays are read-only; the sampler never writes them
            warnings.simplefilter("ignore", UserWarning)
            self.sampler = TransitionSampler(od.transitions(f"{self.domain}_{self.task}"), lcfg["batch_size"],
                                             self.device, seed=cfg.seed)

    def start(self) -> None:
        if hasattr(self.learner, "pretrain"):
            self.learner.pretrain(self.sampler.sample)

    def train(self, n: int) -> dict[str, float]:
        for _ in range(n):
            metrics = self.learner.update(self.sampler.sample())
        return metrics

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.learner.act(obs)

    def save(self, directory: str, meta: dict) -> None:
        import torch

        state = {"learner": self.learner.state_dict(), "sampler": self.sampler.state_dict(), "step": meta["steps"],
                 "history": meta["history"], "wall_s": meta["wall_s"], "torch_rng": torch.get_rng_state()}
        atomic_write_bytes(Path(directory) / STATE_FILE, state_bytes(state))

    def restore(self, directory: str) -> dict:
        import torch

        state = load_state(Path(directory) / STATE_FILE, map_location=self.device)  # untrusted: weights_only
        self.learner.load_state_dict(state["learner"])
        # RNG states are CPU byte tensors; map_location moved them to the learner's device
        self.sampler.load_state_dict({k: v.cpu() if torch.is_tensor(v) else v for k, v in state["sampler"].items()})
        torch.set_rng_state(state["torch_rng"].cpu())
        return {"steps": int(state["step"]), "history": state["history"], "wall_s": float(state["wall_s"])}


def run_learner_trial(cfg: TrialConfig, data: dict[str, OfflineData] | None, report: Report, checkpoint=None,
                      threads: int = 1) -> list[dict]:
    """One bex-learner trial: :class:`LearnerTrainee` in :func:`run_trial` (``data`` as for :func:`trial_data`;
    a distillation trial: ``distill_trial.run_distill_trial``)."""
    od = trial_data(cfg, data)
    return run_trial(cfg, LearnerTrainee(cfg, od, threads), report, checkpoint, fingerprint=od.fingerprint)

