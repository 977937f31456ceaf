"""Offline training on Ray Tune: one trial = dataset + task + learner + seed.

The trial itself is Ray-free and lives in ``bex.learners.trial`` (``TrialConfig``,
the data, the train / evaluate / checkpoint / resume loop ``run_trial``); this
module is its Tune side:

* ``offline_trial`` is the Tune function trainable: it runs the loop with a
  bex learner (``LearnerTrainee``) or an RLlib peer (``rllib_peer.RLlibTrainee``),
  ``report_trial`` (``tune.report`` with a ``Checkpoint``) as the report
  callback and ``tune.get_checkpoint()`` as the checkpoint to resume from.
* Data is loaded by the driver once per (dataset, filters) — observations,
  actions and discounts once, one reward vector per task — and handed to the
  trials with ``tune.with_parameters``: it lands in Ray's object store once and
  every trial on a node maps the same shared-memory arrays (zero-copy on CPU),
  so nothing is loaded per trial or copied into a job's working directory.
* Trials report every ``report_every`` gradient steps, evaluate every
  ``eval_every`` steps with ``eval_episodes`` deterministic episodes, and save
  a checkpoint (learner, optimisers, sampler RNG, step) with each evaluation.
  A restarted trial resumes from ``tune.get_checkpoint()`` at the step it reached.
* ``run_trials`` runs a list of ``TrialConfig`` as one Tune experiment; ``can_restore`` says whether an
  experiment directory holds one to continue.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bex.core.storage import check_experiment_name
from bex.learners.distill_trial import run_distill_trial
from bex.learners.trial import (
    DISTILL,
    OfflineData,
    TrialConfig,
    check_checkpoints,
    check_trial,
    data_key,
    load_offline_data,
    run_learner_trial,
    run_trial,
    trial_data,
)

from .rllib_peer import RLLIB_LEARNERS, RLlibTrainee


def _trial_threads() -> int:
    """Torch threads of a trial: the CPUs Tune reserved for it (1 outside Tune)."""
    from ray import tune

    ctx = tune.get_context()
    cpus = (ctx.get_trial_resources().required_resources or {}).get("CPU", 1) if ctx else 1
    return max(1, int(cpus))


def offline_trial(config: dict, data: dict[str, OfflineData] | None = None) -> None:
    """Tune function trainable (see module docstring): ``config = {"trial": TrialConfig dict}``."""
    from ray import tune

    cfg = TrialConfig.from_dict(config["trial"])
    if cfg.learner in RLLIB_LEARNERS:
        t_start = time.perf_counter()  # the view and RLlib's set-up count in the trial's wall time
        od = trial_data(cfg, data)
        with RLlibTrainee(cfg, od, threads=_trial_threads()) as trainee:
            run_trial(cfg, trainee, report_trial, tune.get_checkpoint(), t_start=t_start, fingerprint=od.fingerprint)
        return
    if cfg.learner == DISTILL:
        run_distill_trial(cfg, data, report_trial, tune.get_checkpoint(), threads=_trial_threads())
        return
    run_learner_trial(cfg, data, report_trial, tune.get_checkpoint(), threads=_trial_threads())


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


def can_restore(path: str) -> bool:
    """Whether ``path`` holds a Tune experiment that ``run_trials(..., resume=True)`` can continue."""
    from ray import tune

    return tune.Tuner.can_restore(path)


def run_trials(trials: list[TrialConfig], name: str, storage: str, resources: dict | None = None,
               max_concurrent: int = 0, max_failures: int = 2, resume: bool = False, verbose: int = 1):
    """Run trials as one Tune experiment ``storage/name``; returns the ``ResultGrid``."""
    import ray
    from ray import tune

    from .runtime import init_ray

    check_experiment_name(name)

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
        if not can_restore(path):
            raise ValueError(f"no interrupted sweep to resume at {path!r}")
        if "://" not in path:
            check_checkpoints(path)  # trial state is untrusted: weights_only, before any trial restores it
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
