"""Offline training on Ray Tune: one trial = dataset + task + learner + seed.

* ``TrialConfig`` is the strict, typed description of a trial (a Tune
  ``param_space`` entry); ``offline_trial`` is the Tune function trainable.
* Data is loaded by the driver once per (dataset, filters) — observations,
  actions and discounts once, one reward vector per task — and handed to the
  trials with ``tune.with_parameters``: it lands in Ray's object store once and
  every trial on a node maps the same shared-memory arrays (zero-copy on CPU),
  so nothing is loaded per trial or copied into a job's working directory.
* Trials report every ``report_every`` gradient steps, evaluate every
  ``eval_every`` steps with ``eval_episodes`` deterministic episodes, and save
  a checkpoint (learner, optimisers, sampler RNG, step) with each evaluation.
  A restarted trial resumes from ``tune.get_checkpoint()`` at the step it reached.
"""
from __future__ import annotations

import functools
import json
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

PRESETS = ("small", "paper")


def _learners():
    import bex.learners as learners

    return learners


@dataclass(frozen=True)
class TrialConfig:
    """One offline trial."""

    dataset: str                          #: dataset root directory
    task: str                             #: task to train for (walker_stand or stand)
    learner: str = "td3"                  #: learner name (see ``learners.LEARNERS``)
    filters: dict = field(default_factory=dict)  #: partition filters (objective, param, seed)
    preset: str = "small"                 #: learner preset: small | paper
    learner_config: dict = field(default_factory=dict)  #: overrides of the preset's fields
    steps: int = 10_000                   #: gradient steps
    eval_every: int = 5_000               #: gradient steps between evaluations (and checkpoints)
    eval_episodes: int = 5                #: deterministic evaluation episodes
    report_every: int = 1_000             #: gradient steps between reports of training metrics
    seed: int = 0
    device: str = "auto"                  #: auto | cpu | cuda
    label: str = ""                       #: dataset label for results tables (explorer/objective/param)

    @classmethod
    def from_dict(cls, d: dict) -> "TrialConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown trial key(s) {unknown}; allowed: {sorted(names)}")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        # RLlib peers (rllib_bc, rllib_cql)
        from .rllib_peer import RLLIB_LEARNERS, check_schedule

        learners = _learners()
        if self.learner not in learners.LEARNERS and self.learner not in RLLIB_LEARNERS:
            raise ValueError(f"unknown learner {self.learner!r}; "
                             f"allowed: {', '.join(sorted(learners.LEARNERS) + list(RLLIB_LEARNERS))}")
        check_schedule(self)
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; allowed: {', '.join(PRESETS)}")
        for k in ("steps", "eval_every", "eval_episodes", "report_every"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"{k} must be a positive integer, got {getattr(self, k)}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        self.resolved_learner_config()

    def resolved_learner_config(self) -> dict:
        """The preset's config with ``learner_config`` applied, validated by the learner's config class."""
        if self.learner.startswith("rllib_"):
            from .rllib_peer import resolved_config
            return resolved_config(self.learner, self.preset, self.learner_config)
        cfg_cls = _learners().LEARNERS[self.learner][0]
        base = cfg_cls.preset(self.preset).to_dict()
        unknown = sorted(set(self.learner_config) - set(base))
        if unknown:
            raise ValueError(f"unknown {self.learner} hyperparameter(s) {unknown}; allowed: {sorted(base)}")
        base.update(self.learner_config)
        return cfg_cls.from_dict(base).to_dict()

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class OfflineData:
    """Transitions of one dataset selection, with one reward vector per task."""

    env_spec: dict
    obs: np.ndarray
    action: np.ndarray
    next_obs: np.ndarray
    discount: np.ndarray
    rewards: dict[str, np.ndarray]   # "domain_task" -> (N,)

    def transitions(self, task: str):
        from bex.replay import Transitions

        return Transitions(self.obs, self.action, self.rewards[task], self.next_obs, self.discount,
                           np.zeros(len(self.discount), bool))


def data_key(dataset: str, filters: dict) -> str:
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
                       {k: v[idx].astype(np.float32) for k, v in rewards.items()})


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


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def evaluate_trial(policy, cfg: "TrialConfig", domain: str, task: str, step: int) -> dict[str, float]:
    """The evaluation a trial reports at ``step`` (bex learners and RLlib peers alike).

    ``cfg.eval_episodes`` deterministic episodes on evaluation seeds derived from
    ``cfg.seed`` only, so every learner of a sweep is scored on the same starts;
    the metrics carry ``eval/at_step`` so later reports can repeat them.
    """
    from bex.envs import evaluate

    ev = evaluate(policy, domain, task, episodes=cfg.eval_episodes, seed=10_000 + cfg.seed * 100)
    return dict(ev.metrics("eval"), **{"eval/at_step": step})


def offline_trial(config: dict, data: dict[str, OfflineData] | None = None) -> None:
    """Tune function trainable (see module docstring)."""
    import torch
    from ray import tune

    from bex.envs import parse_task
    from bex.learners import make_learner
    from bex.replay import TransitionSampler

    cfg = TrialConfig.from_dict(config["trial"])
    if cfg.learner.startswith("rllib_"):
        from .rllib_peer import rllib_trial
        return rllib_trial(config, data)
    od = data[data_key(cfg.dataset, cfg.filters)]
    domain = od.env_spec["domain"]
    d, t = parse_task(cfg.task, domain)
    lcfg = cfg.resolved_learner_config()
    device = _device(cfg.device)
    ctx = tune.get_context()
    cpus = (ctx.get_trial_resources().required_resources or {}).get("CPU", 1) if ctx else 1
    torch.set_num_threads(max(1, int(cpus)))
    torch.manual_seed(cfg.seed)
    learner = make_learner(cfg.learner, od.obs.shape[1], od.action.shape[1], lcfg, device=device, seed=cfg.seed)
    with warnings.catch_warnings():  # shared-memory arrays are read-only; the sampler never writes them
        warnings.simplefilter("ignore", UserWarning)
        sampler = TransitionSampler(od.transitions(f"{d}_{t}"), lcfg["batch_size"], device, seed=cfg.seed)
    step, resumed_from, history = 0, 0, []
    t_start, wall_before = time.perf_counter(), 0.0
    ckpt = tune.get_checkpoint()
    if ckpt:
        with ckpt.as_directory() as cdir:
            state = torch.load(Path(cdir) / "state.pt", map_location=device, weights_only=False)
        learner.load_state_dict(state["learner"])
        sampler.load_state_dict(state["sampler"])
        step = resumed_from = int(state["step"])
        history = state["history"]
        wall_before = float(state["wall_s"])
        torch.set_rng_state(state["torch_rng"])
    elif hasattr(learner, "pretrain"):
        learner.pretrain(sampler.sample)

    def policy(obs):
        return learner.act(obs)

    last_eval: dict[str, float] = {}
    while step < cfg.steps:
        n = min(cfg.report_every, cfg.steps - step)
        t0 = time.perf_counter()
        for _ in range(n):
            metrics = learner.update(sampler.sample())
        step += n
        dt = time.perf_counter() - t0
        report = {k: float(v) for k, v in metrics.items()}
        report.update({"steps": step, "train/updates_per_s": n / max(dt, 1e-9), "resumed_from": resumed_from})
        checkpoint = None
        if step % cfg.eval_every == 0 or step == cfg.steps:
            last_eval = evaluate_trial(policy, cfg, d, t, step)  # later reports carry it forward
            history.append({"steps": step, **last_eval})
            wall = wall_before + time.perf_counter() - t_start
            state = {"learner": learner.state_dict(), "sampler": sampler.state_dict(), "step": step,
                     "history": history, "wall_s": wall, "torch_rng": torch.get_rng_state()}
            checkpoint = functools.partial(save_trial_state, state)
        report.update(last_eval)
        report["wall_s"] = wall_before + time.perf_counter() - t_start
        report_trial(report, checkpoint)


def save_trial_state(state: dict, directory: str) -> None:
    """A bex trial's checkpoint: ``state.pt`` in ``directory`` (read back at the top of :func:`offline_trial`)."""
    import torch

    torch.save(state, Path(directory) / "state.pt")


def report_trial(metrics: dict, write_checkpoint=None) -> None:
    """``tune.report`` from a trial; ``write_checkpoint(dir)``, when given, fills a checkpoint directory.

    The directory is temporary: ``tune.report`` copies it to the experiment's
    storage before it returns, and Tune leaves deleting the original to the
    caller, so it is removed here (one leaked copy per evaluation otherwise).
    """
    from ray import tune

    if write_checkpoint is None:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="bex-ckpt-") as tmp:
        write_checkpoint(tmp)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


def trial_resources(resources: dict | None) -> dict:
    """Per-trial resources; ``gpu: auto`` takes a quarter GPU when the cluster has GPUs."""
    import ray

    res = {"cpu": 1, "gpu": "auto"}
    res.update(resources or {})
    unknown = sorted(set(res) - {"cpu", "gpu"})
    if unknown:
        raise ValueError(f"unknown resource key(s) {unknown}; allowed: cpu, gpu")
    gpu = res["gpu"]
    if gpu == "auto":
        gpu = 0.25 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    if float(res["cpu"]) <= 0 or float(gpu) < 0:
        raise ValueError(f"resources must have cpu > 0 and gpu >= 0, got {res}")
    return {"cpu": float(res["cpu"]), "gpu": float(gpu)}


def _trial_dirname(trial) -> str:
    t = trial.config.get("trial", {})
    label = (t.get("label") or "data").replace("/", "-")
    return f"{trial.trial_id}_{t.get('learner')}_{t.get('task')}_{label}_s{t.get('seed')}"


def run_trials(trials: list[TrialConfig], name: str, storage: str, resources: dict | None = None,
               max_concurrent: int = 0, max_failures: int = 2, resume: bool = False, verbose: int = 1):
    """Run trials as one Tune experiment ``storage/name``; returns the ``ResultGrid``."""
    import ray
    from ray import tune

    from .runtime import init_ray

    keys = {}
    for tr in trials:
        keys.setdefault(data_key(tr.dataset, tr.filters), (tr.dataset, tr.filters, set()))[2].add(check_trial(tr))
    init_ray()
    from .status import publish_sweep
    from .storage import check_storage_for_cluster

    checked = check_storage_for_cluster(storage, ray, root="")  # node-local storage on a multi-node cluster fails
    publish_sweep(name, f"{checked.rstrip('/')}/{name}", trials)  # for `bex status`
    data = {k: load_offline_data(ds, filters, sorted(tasks)) for k, (ds, filters, tasks) in keys.items()}
    res = trial_resources(resources)
    trainable = tune.with_resources(tune.with_parameters(offline_trial, data=data), res)
    storage = str(Path(storage).resolve()) if "://" not in storage else storage
    path = f"{storage.rstrip('/')}/{name}"
    if resume:
        if not tune.Tuner.can_restore(path):
            raise ValueError(f"no interrupted sweep to resume at {path!r}")
        tuner = tune.Tuner.restore(path, trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([t.to_dict() for t in trials])},
            tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent or None,
                                        trial_dirname_creator=_trial_dirname, trial_name_creator=_trial_dirname),
            run_config=tune.RunConfig(
                name=name, storage_path=storage, verbose=verbose,
                failure_config=tune.FailureConfig(max_failures=max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            ),
        )
    del ray
    return tuner.fit()
