"""Offline learning commands: ``bex train``, ``sweep``, ``results``, ``distill``."""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import List, Optional

import typer

from .app import (
    command,
    err,
    fail,
    local_path,
    out,
    parse_set,
    resume_option,
    seed_option,
    set_option,
    storage_option,
    storage_path,
)
from .progress import printer

PANEL = "Offline learning"


@command(rich_help_panel=PANEL)
def train(
    dataset: Path = typer.Option(..., "--dataset", help="dataset root"),
    task: str = typer.Option(..., "--task", help="walker_stand or stand"),
    learner: str = typer.Option("td3", "--learner"),
    preset: str = typer.Option("small", "--preset", help="small | paper"),
    steps: Optional[int] = typer.Option(None, "--steps", help="gradient steps (default: 10000)"),
    seed: int = seed_option("trial seed"),
    eval_every: Optional[int] = typer.Option(None, "--eval-every"),
    eval_episodes: int = typer.Option(5, "--eval-episodes"),
    objective: Optional[str] = typer.Option(None, "--objective", help="partition filter"),
    param: Optional[str] = typer.Option(None, "--param", help="partition filter"),
    set_: List[str] = set_option("learner hyperparameter"),
    storage: str = storage_option("bex_runs/train", "Tune results root"),
    name: Optional[str] = typer.Option(None, "--name", help="experiment name (default: generated)"),
    max_failures: int = typer.Option(2, "--max-failures"),
):
    """Train one offline learner as a Tune trial; prints one JSON line of final metrics."""
    from bex.cluster.train import run_trials
    from bex.core.storage import check_experiment_name
    from bex.learners.trial import TrialConfig

    filters = {k: v for k, v in (("objective", objective), ("param", param)) if v is not None}
    if steps is None:  # the config's default; an explicit --steps 0 is an error, never the default
        steps = TrialConfig.default("steps")
    cfg = TrialConfig.from_dict(dict(dataset=local_path(dataset, "--dataset"), task=task, learner=learner,
                                     preset=preset, steps=steps, seed=seed,
                                     eval_every=steps if eval_every is None else eval_every,
                                     eval_episodes=eval_episodes, learner_config=parse_set(set_), filters=filters,
                                     report_every=min(1000, steps)))
    if name is None:
        name = f"train-{learner}-{Path(dataset).name}-{task}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    check_experiment_name(name, "--name")
    grid = run_trials([cfg], name=name, storage=storage_path(storage), resources={"cpu": 1},
                      max_failures=max_failures, verbose=0)
    r = grid[0]
    if r.error:
        fail(f"trial failed: {str(r.error).splitlines()[0]}", code=1)
    m = r.metrics
    out(json.dumps({"eval/return_mean": m.get("eval/return_mean"), "eval/return_std": m.get("eval/return_std"),
                    "steps": m.get("steps"), "wall_s": round(m.get("wall_s", 0.0), 2),
                    "resumed_from": m.get("resumed_from"), "path": r.path}))


@command(rich_help_panel=PANEL)
def sweep(config: Path = typer.Argument(..., help="tune_configs/*.yaml"),
          resume: bool = resume_option("sweep"),
          storage: Optional[str] = storage_option(None, "override the config's storage root")):
    """Run a Tune grid of offline trials (datasets x tasks x learners x seeds x hyperparameters)."""
    from bex.analysis.results import write_results
    from bex.cluster.train import run_trials
    from bex.pipelines.grids import SweepConfig

    sc = SweepConfig.from_yaml(config)
    sc = dataclasses.replace(sc, datasets=[dataclasses.replace(d, path=local_path(d.path, "dataset"))
                                           for d in sc.datasets])
    trials = sc.trials()
    root = storage_path(storage or sc.storage)
    err(f"[sweep {sc.name}] {len(trials)} trials -> {root}/{sc.name}")
    grid = run_trials(trials, name=sc.name, storage=root, resources=sc.resources,
                      max_concurrent=sc.max_concurrent_trials, max_failures=sc.max_failures, resume=resume)
    errors = sum(1 for r in grid if r.error)
    res = write_results(Path(root) / sc.name)
    out(res["markdown"])
    err(f"[sweep {sc.name}] {res['complete']}/{len(trials)} trials complete, {errors} failed; tables: "
        f"{res['md']}, {res['csv']}")
    if errors:
        raise typer.Exit(1)


@command(rich_help_panel=PANEL)
def results(run: Path = typer.Argument(..., help="Tune experiment directory (STORAGE/NAME)"),
            score_last: int = typer.Option(3, "--score-last", help="a trial's score: the mean of its last K "
                                           "evaluations")):
    """Write trials.csv, the results table (Markdown, CSV) and learning-curve PNGs of a sweep; print the table."""
    from bex.analysis.analyze import AnalysisConfig
    from bex.analysis.results import write_results

    cfg = AnalysisConfig.from_dict({"score_last": score_last}, where="--score-last")
    res = write_results(local_path(run, "run directory"), cfg)
    out(res["markdown"])
    err(f"written: {res['md']}, {res['csv']}, {len(res['plots'])} plot(s)")


@command(rich_help_panel=PANEL)
def distill(dataset: Path = typer.Option(..., "--dataset", help="source dataset (root or partition directory)"),
            task: str = typer.Option(..., "--task", help="the teacher's task, evaluated on (walker_walk ...)"),
            teacher: Path = typer.Option(..., "--teacher", help="a bex trial directory, checkpoint directory or "
                                         "state.pt (e.g. a CQL trial on the dataset)"),
            size: int = typer.Option(256, "--size", help="N, synthetic (state, action) pairs"),
            weighting: str = typer.Option("none", "--weighting", help="none (OBD) | sdw (SDW-OBD)"),
            steps: int = typer.Option(200, "--steps", help="outer steps (the OBD paper ran 50000)"),
            inner_steps: int = typer.Option(100, "--inner-steps", help="T, BC steps of the inner loop"),
            eval_every: int = typer.Option(50, "--eval-every", help="outer steps between evaluations/checkpoints"),
            eval_episodes: int = typer.Option(5, "--eval-episodes"),
            report_every: int = typer.Option(1, "--report-every", help="outer steps between progress lines"),
            seed: int = seed_option("distillation seed"),
            set_: List[str] = set_option("another DistillConfig field"),
            out_dir: Path = typer.Option(..., "--out", help="bex dataset root for the synthetic set"),
            resume: bool = resume_option("distillation (from OUT's checkpoint)")):
    """Distil a dataset into N synthetic pairs (OBD with Av-PBC; --weighting sdw: SDW-OBD)."""
    from bex.learners.distill_trial import run_distill
    from bex.learners.trial import DISTILL, TrialConfig
    from bex.replay import dataset_selection

    src = Path(local_path(dataset, "--dataset"))
    root, filters = dataset_selection(src)
    filters.pop("domain", None)
    lcfg = {**parse_set(set_), "size": size, "weighting": weighting, "inner_steps": inner_steps,
            "teacher": str(Path(local_path(teacher, "--teacher")).resolve())}
    trial = TrialConfig.from_dict({"dataset": str(root), "filters": filters, "task": task, "learner": DISTILL,
                                   "learner_config": lcfg, "steps": steps, "eval_every": eval_every,
                                   "eval_episodes": eval_episodes, "report_every": report_every, "seed": seed,
                                   "device": "cpu", "label": src.name})
    out(json.dumps(run_distill(trial, local_path(out_dir, "--out"), resume=resume, progress=printer("distill"))))
