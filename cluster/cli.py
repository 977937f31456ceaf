"""The ``bex`` command line.

Every command validates its input before starting Ray, prints progress for long
work, and exits non-zero with a one-line ``bex: error: ...`` on bad input.
Ray starts embedded on this machine unless ``--address``/``RAY_ADDRESS`` names
a cluster; ``--node-ip``/``BEX_NODE_IP`` pins the embedded Ray to an address
(127.0.0.1 keeps every Ray listener on loopback; see ``runtime.py``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

os.environ.setdefault("MUJOCO_GL", "disable")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="bex: behavioral-entropy exploration datasets and offline RL on Ray.")


def fail(msg: str, code: int = 2):
    typer.echo(f"bex: error: {msg}", err=True)
    raise typer.Exit(code)


@app.callback()
def main_options(
    node_ip: Optional[str] = typer.Option(None, "--node-ip", envvar="BEX_NODE_IP",
                                          help="address the embedded Ray binds to (127.0.0.1: loopback only)"),
    address: Optional[str] = typer.Option(None, "--address", envvar="RAY_ADDRESS",
                                          help="Ray cluster to join (HOST:PORT or auto)"),
    storage: Optional[str] = typer.Option(None, "--storage", envvar="BEX_STORAGE",
                                          help="storage root for datasets and Tune results (path or URI)"),
):
    if node_ip:
        os.environ["BEX_NODE_IP"] = node_ip
    if address:
        os.environ["RAY_ADDRESS"] = address
    from .status import check_cluster_address  # fail in seconds, not minutes, on a wrong address or token
    from .storage import resolve_storage

    try:
        check_cluster_address(address)
        if storage:
            os.environ["BEX_STORAGE"] = resolve_storage(storage, root="")
    except ValueError as e:
        fail(str(e))


def stage_bar(prefix: str, stream=None, width: int = 24):
    """A ``progress(stage, done, total)`` callback drawing one bar per stage on stderr (redrawn in place on a
    terminal; elsewhere a line at the start, each quarter and the end of a stage), with elapsed time and ETA."""
    stream = stream or sys.stderr
    tty = stream.isatty()
    state = {"stage": None, "t0": 0.0, "quarter": -1}

    def show(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if stage != state["stage"]:
            state.update(stage=stage, t0=now, quarter=-1)
        frac = done / total if total else 1.0
        quarter = int(frac * 4)
        if not tty and quarter == state["quarter"]:
            return
        state["quarter"] = quarter
        el = now - state["t0"]
        eta = f", ~{el / frac - el:.0f} s left" if 0 < frac < 1 else ""
        fill = int(round(frac * width))
        line = f"[{prefix}] {stage:<13} |{'#' * fill}{'.' * (width - fill)}| {done}/{total} {el:.1f} s{eta}"
        stream.write(("\r\x1b[K" + line + ("\n" if done >= total else "")) if tty else line + "\n")
        stream.flush()

    return show


def _set_overrides(items: List[str]) -> dict:
    """``--set KEY=VALUE`` options as a dict (values parsed as YAML scalars)."""
    import yaml

    out = {}
    for kv in items:
        if "=" not in kv:
            raise ValueError(f"--set expects KEY=VALUE, got {kv!r}")
        k, v = kv.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


def _path(p, what: str = "path", local: bool = False) -> str:
    """Resolve a path argument: relative paths go under ``--storage``/``BEX_STORAGE`` when set."""
    from .storage import is_uri, resolve_storage

    if local and is_uri(str(p)):
        raise ValueError(f"{what} {str(p)!r} is a URI; datasets live on a local or shared-filesystem path "
                         f"(atomic renames and hard links); Tune results may use URIs")
    out = resolve_storage(p)
    if local and is_uri(out):
        raise ValueError(f"{what} {out!r} lies under a URI storage root; datasets need a local or "
                         f"shared-filesystem path")
    return out


@app.command()
def collect(
    out: Optional[str] = typer.Option(None, "--out", help="dataset root directory"),
    domain: str = typer.Option("walker", help="dm_control domain"),
    task: Optional[str] = typer.Option(None, "--task", help="collection task (walker_stand or stand); default: "
                                       "the domain's primal task (walker stand, quadruped walk, cheetah run ...)"),
    explorer: str = typer.Option("random", help="random | apt | rnd | smm"),
    objective: Optional[str] = typer.Option(None, help="APT entropy: be | renyi | shannon"),
    alpha: Optional[float] = typer.Option(None, help="BE Prelec alpha, 0 < alpha <= 10"),
    q: Optional[float] = typer.Option(None, help="Renyi order, 0 < q <= 10, q != 1"),
    k: Optional[int] = typer.Option(None, help="k-NN neighbours (default 12)"),
    knn_mode: Optional[str] = typer.Option(
        None, "--knn-mode", help="batch (URLB) | window (shared ring buffer) | recent (last visited states)"),
    knn_local: Optional[int] = typer.Option(
        None, "--knn-local",
        help="recent mode: own-episode neighbours on either side in each sample's reference set (default k, 0 = off)"),
    steps: int = typer.Option(10_000, help="environment steps to write (exact)"),
    actors: int = typer.Option(1, help="environment workers (E); random: parallel actors"),
    seed: int = typer.Option(0),
    preset: str = typer.Option("small", help="explorer sizes and schedule: small | paper"),
    episodes_per_chunk: int = typer.Option(10, help="episodes per committed Parquet file / checkpoint"),
    tag: Optional[str] = typer.Option(None, "--tag", help="partition suffix: objective=<objective>-<tag> (keeps "
                                      "runs that differ in other settings, e.g. the k-NN mode, apart)"),
    set_: List[str] = typer.Option([], "--set", help="explorer config override KEY=VALUE (e.g. hidden_dim=256, "
                                   "batch_size=256, knn_window=4096); repeatable"),
    config: Optional[Path] = typer.Option(None, "--config", help="a collection grid (tune_configs/collect_*.yaml)"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted collection or grid"),
):
    """Explore with Ray actors and write a hive-partitioned Parquet dataset (one run, or a --config grid)."""
    from bex.actors.collect import CollectConfig

    from .driver import CollectionError, print_progress, run_collections

    try:
        if config is not None:
            from .collect_grid import load_grid

            if task is not None or set_ or tag is not None:
                raise ValueError("--task, --tag and --set apply to a single run; a --config grid sets `task:`, "
                                 "`tag:` and `<explorer>_config:` in its YAML")

            grid = load_grid(config, out=None if out is None else _path(out, "--out", local=True))
            cfgs = [dataclasses.replace(c, out=_path(c.out, "out", local=True)) for c in grid.runs()]
            concurrent = grid.max_concurrent_runs
        else:
            if out is None:
                raise ValueError("--out is required (or --config with a grid)")
            if explorer == "apt" and objective is None:
                objective = "shannon"
            param = alpha if objective == "be" else q if objective == "renyi" else None
            if objective == "be" and q is not None or objective == "renyi" and alpha is not None:
                raise ValueError(f"objective {objective} takes {'--alpha' if objective == 'be' else '--q'} only")
            extra = {**_set_overrides(set_),
                     **{key: v for key, v in (("k", k), ("knn_mode", knn_mode), ("knn_local", knn_local))
                        if v is not None}}
            cfgs = [CollectConfig(out=_path(out, "--out", local=True), domain=domain, explorer=explorer,
                                  objective=objective, param=param, task=task, steps=steps, actors=actors, seed=seed,
                                  preset=preset, tag=tag,
                                  episodes_per_chunk=episodes_per_chunk, explorer_config=extra).validate()]
            concurrent = 0
        summaries = run_collections(cfgs, resume=resume, progress=print_progress(), max_concurrent_runs=concurrent)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    except CollectionError as e:  # actors that keep dying: stopped, reported; --resume continues
        fail(str(e), code=1)
    for s in summaries:
        typer.echo(json.dumps({"run": s["run_key"], "out": s["config"]["out"], "steps": s["steps"],
                               "wall_s": round(s["wall_s"], 2), "env_steps_per_s": round(s["env_steps_per_s"], 1),
                               "updates": s["updates"], "nodes": s["nodes"], "restarts": s["restarts"]}))


@app.command()
def relabel(
    dataset: Path = typer.Argument(..., help="dataset root"),
    task: List[str] = typer.Option(..., "--task", help="task to relabel (walker_stand or stand); repeatable"),
    workers: Optional[int] = typer.Option(None, help="parallel workers (default: all CPUs)"),
    local: bool = typer.Option(False, "--local", help="use a local process pool instead of Ray tasks"),
    force: bool = typer.Option(False, "--force", help="recompute cached rewards"),
):
    """Compute and cache task rewards from the stored physics states."""
    from bex.replay import Dataset, process_pool_map
    from bex.replay import relabel as do_relabel

    try:
        dataset = Path(_path(dataset, "dataset", local=True))
        ds = Dataset(dataset)
        from bex.envs import parse_task

        tasks = [parse_task(t, ds.env_spec.domain) for t in task]
        map_fn = process_pool_map(workers) if local else None
        if map_fn is None:
            from .relabel import ray_map

            map_fn = ray_map()
        for d, t in tasks:
            t0 = time.perf_counter()
            res = do_relabel(dataset, f"{d}_{t}", map_fn=map_fn, force=force)
            res["wall_s"] = round(time.perf_counter() - t0, 3)
            res["states_per_s"] = round(res["computed_rows"] / max(res["wall_s"], 1e-9))
            typer.echo(json.dumps(res))
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))


@app.command()
def info(dataset: Path = typer.Argument(..., help="dataset root"),
         as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
         verify: bool = typer.Option(False, "--verify", help="read every page of every file (checksums, row "
                                     "counts); a corrupt file is an error naming it")):
    """Print partitions, episodes, transitions, shapes, schema version and cached task rewards."""
    from bex.replay import Dataset

    from .info import dataset_info, format_info

    try:
        root = _path(dataset, "dataset", local=True)
        d = dataset_info(root)
        if verify:
            checked = Dataset(root).verify()
            d["verified"] = {"files": len(checked), "rows": sum(c["rows"] for c in checked)}
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    text = format_info(d)
    if verify:
        text += f"\nverified     {d['verified']['files']} files, {d['verified']['rows']} rows: every page read, OK"
    typer.echo(json.dumps(d, indent=2) if as_json else text)


@app.command()
def export(dataset: Path = typer.Argument(..., help="dataset root"),
           task: str = typer.Option(..., "--task"),
           out: Path = typer.Option(..., "--out", help="output .npz file")):
    """Export D4RL-style arrays (observations, actions, rewards, next_observations, terminals, timeouts)."""
    from bex.replay import export_npz

    try:
        typer.echo(json.dumps(export_npz(_path(dataset, "dataset", local=True), task, out)))
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))


@app.command()
def train(
    dataset: Path = typer.Option(..., "--dataset", help="dataset root"),
    task: str = typer.Option(..., "--task", help="walker_stand or stand"),
    learner: str = typer.Option("td3", "--learner"),
    preset: str = typer.Option("small", "--preset", help="small | paper"),
    steps: Optional[int] = typer.Option(None, "--steps", help="gradient steps (default: 10000)"),
    seed: int = typer.Option(0, "--seed"),
    eval_every: Optional[int] = typer.Option(None, "--eval-every"),
    eval_episodes: int = typer.Option(5, "--eval-episodes"),
    objective: Optional[str] = typer.Option(None, "--objective", help="partition filter"),
    param: Optional[str] = typer.Option(None, "--param", help="partition filter"),
    set_: List[str] = typer.Option([], "--set", help="learner hyperparameter KEY=VALUE (repeatable)"),
    storage: str = typer.Option("bex_runs/train", "--storage", help="Tune results root (path or URI)"),
    name: Optional[str] = typer.Option(None, "--name", help="experiment name (default: generated)"),
    max_failures: int = typer.Option(2, "--max-failures"),
):
    """Train one offline learner as a Tune trial; prints one JSON line of final metrics."""

    from bex.learners.trial import TrialConfig

    from .train import check_experiment_name, run_trials

    try:
        overrides = _set_overrides(set_)
        filters = {k: v for k, v in (("objective", objective), ("param", param)) if v is not None}
        steps = 10_000 if steps is None else steps  # an explicit --steps 0 is an error, never the default
        cfg = TrialConfig.from_dict(dict(dataset=_path(dataset, "--dataset", local=True), task=task, learner=learner,
                                         preset=preset, steps=steps, seed=seed,
                                         eval_every=steps if eval_every is None else eval_every,
                                         eval_episodes=eval_episodes, learner_config=overrides, filters=filters,
                                         report_every=min(1000, steps)))
        if name is None:
            name = f"train-{learner}-{Path(dataset).name}-{task}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        check_experiment_name(name, "--name")
        grid = run_trials([cfg], name=name, storage=_path(storage, "--storage"), resources={"cpu": 1},
                          max_failures=max_failures, verbose=0)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    r = grid[0]
    if r.error:
        fail(f"trial failed: {str(r.error).splitlines()[0]}", code=1)
    m = r.metrics
    typer.echo(json.dumps({"eval/return_mean": m.get("eval/return_mean"), "eval/return_std": m.get("eval/return_std"),
                           "steps": m.get("steps"), "wall_s": round(m.get("wall_s", 0.0), 2),
                           "resumed_from": m.get("resumed_from"), "path": r.path}))


@app.command()
def sweep(config: Path = typer.Argument(..., help="tune_configs/*.yaml"),
          resume: bool = typer.Option(False, "--resume", help="continue an interrupted sweep"),
          storage: Optional[str] = typer.Option(None, "--storage", help="override the config's storage root")):
    """Run a Tune grid of offline trials (datasets x tasks x learners x seeds x hyperparameters)."""
    from .results import write_results
    from .sweep import SweepConfig
    from .train import run_trials

    try:
        sc = SweepConfig.from_yaml(config)
        sc = dataclasses.replace(sc, datasets=[dataclasses.replace(d, path=_path(d.path, "dataset", local=True))
                                               for d in sc.datasets])
        trials = sc.trials()
        root = _path(storage or sc.storage, "storage")
        typer.echo(f"[sweep {sc.name}] {len(trials)} trials -> {root}/{sc.name}", err=True)
        grid = run_trials(trials, name=sc.name, storage=root, resources=sc.resources,
                          max_concurrent=sc.max_concurrent_trials, max_failures=sc.max_failures, resume=resume)
        errors = sum(1 for r in grid if r.error)
        out = write_results(Path(root) / sc.name)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    typer.echo(out["markdown"])
    typer.echo(f"[sweep {sc.name}] {out['complete']}/{len(trials)} trials complete, {errors} failed; tables: "
               f"{out['md']}, {out['csv']}", err=True)
    if errors:
        raise typer.Exit(1)


@app.command()
def results(run: Path = typer.Argument(..., help="Tune experiment directory (STORAGE/NAME)")):
    """Print and write the results table (Markdown, CSV) and learning-curve PNGs of a sweep."""
    from .results import write_results

    try:
        out = write_results(_path(run, "run directory", local=True))
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    typer.echo(out["markdown"])
    typer.echo(f"written: {out['md']}, {out['csv']}, {len(out['plots'])} plot(s)", err=True)


@app.command()
def demo(root: Path = typer.Option(Path("bex_runs/demo"), "--root", help="run root of the demo"),
         steps: int = typer.Option(4000, help="environment steps per dataset"),
         train_steps: int = typer.Option(2000, "--train-steps", help="gradient steps per offline trial")):
    """Run the whole pipeline at small scale on the embedded local Ray."""
    from .demo import run_demo

    try:
        run_demo(Path(_path(root, "--root", local=True)), steps=steps, train_steps=train_steps, echo=typer.echo)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))


@app.command()
def coverage(dirs: List[Path] = typer.Argument(..., help="bex datasets or partitions (each partition of a dataset "
                                                   "is compared as its own dataset)"),
             space: str = typer.Option("physics", "--space", help="physics | observation | positions"),
             max_states: Optional[int] = typer.Option(None, "--max-states", help="equal sample size cap"),
             k: int = typer.Option(5, "--k", help="neighbours of the k-NN estimators"),
             replicates: int = typer.Option(10, "--replicates", help="half-size subsamples per interval"),
             seed: int = typer.Option(0, "--seed"),
             map_states: int = typer.Option(3000, "--map-states", help="pooled states behind the shared "
                                            "t-SNE/PHATE maps (0: no maps)"),
             out: Path = typer.Option(..., "--out", help="output directory (coverage.json, tsne.png, phate.png)")):
    """k-NN entropies (Shannon, Rényi, BE), volumes and the near-static fraction of datasets, comparable."""
    from bex.replay import atomic_write_bytes
    from bex.replay.coverage import CoverageConfig, load_state_sets, null_figures_note
    from bex.replay.coverage import coverage as measure
    from bex.replay.schema import dumps

    try:
        cfg = CoverageConfig.from_dict({"space": space, "max_states": max_states, "k": k, "replicates": replicates,
                                        "seed": seed, "map_states": map_states})
        out_dir = Path(_path(out, "--out", local=True))
        if out_dir.exists() and not out_dir.is_dir():
            raise ValueError(f"--out {str(out_dir)!r} is a file, not a directory")
        bar = stage_bar("coverage")
        sets = load_state_sets([_path(d, "dataset", local=True) for d in dirs], cfg.space, progress=bar)
        rows = measure(sets, cfg, progress=bar, out_dir=out_dir)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / "coverage.json", dumps({"config": cfg.to_dict(), "datasets": rows}).encode())
    for row in rows:
        typer.echo(json.dumps(row))
    note = null_figures_note(rows)
    if note:
        typer.echo(f"bex: note: {note}", err=True)



@app.command()
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
            seed: int = typer.Option(0, "--seed"),
            set_: List[str] = typer.Option([], "--set", help="another DistillConfig field KEY=VALUE (repeatable)"),
            out: Path = typer.Option(..., "--out", help="bex dataset root for the synthetic set"),
            resume: bool = typer.Option(False, "--resume", help="continue from OUT's distillation checkpoint")):
    """Distil a dataset into N synthetic pairs (OBD with Av-PBC; --weighting sdw: SDW-OBD)."""

    from bex.learners.distill_trial import run_distill
    from bex.learners.trial import DISTILL, TrialConfig
    from bex.replay.coverage import dataset_selection

    try:
        overrides = _set_overrides(set_)
        src = Path(_path(dataset, "--dataset", local=True))
        root, filters = dataset_selection(src)
        filters.pop("domain", None)
        lcfg = {**overrides, "size": size, "weighting": weighting, "inner_steps": inner_steps,
                "teacher": str(Path(_path(teacher, "--teacher", local=True)).resolve())}
        trial = TrialConfig.from_dict({"dataset": str(root), "filters": filters, "task": task, "learner": DISTILL,
                                       "learner_config": lcfg, "steps": steps, "eval_every": eval_every,
                                       "eval_episodes": eval_episodes, "report_every": report_every, "seed": seed,
                                       "device": "cpu", "label": src.name})
        t0 = time.perf_counter()

        def show(row: dict) -> None:
            ev = (f" eval {row['eval/return_mean']:.1f} ± {row['eval/return_std']:.1f}"
                  if "eval/return_mean" in row else "")
            left = (steps - row["steps"]) * row.get("distill/s_per_step", 0.0)
            typer.echo(f"[distill] step {row['steps']}/{steps} loss {row['distill/loss']:.4g} "
                       f"{row.get('distill/s_per_step', 0):.2f} s/step{ev} ({time.perf_counter() - t0:.0f} s, "
                       f"~{left:.0f} s left)", err=True)

        res = run_distill(trial, _path(out, "--out", local=True), resume=resume, progress=show)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    typer.echo(json.dumps(res))


@app.command()
def replicate(config: Path = typer.Option(..., "--config", help="tune_configs/replicate_*.yaml"),
              resume: bool = typer.Option(False, "--resume", help="continue an interrupted replication")):
    """Collect, relabel, train, measure coverage and report: the paper's comparison in one resumable command."""
    from .replicate import ReplicateConfig, TrialsFailed, run_replication

    try:
        cfg = ReplicateConfig.from_yaml(config)
        res = run_replication(cfg, resume=resume, say=lambda m: typer.echo(m, err=True))
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    except TrialsFailed as e:
        fail(str(e), code=1)
    if res.get("terminated"):
        return  # main() reports the SIGTERM (exit 143)
    typer.echo(res.pop("markdown"))
    typer.echo(json.dumps(res))


@app.command()
def report(inputs: List[Path] = typer.Argument(..., help="a sweep (STORAGE/NAME), `bex coverage` outputs, or bex "
                                               "datasets / partitions"),
           out: Path = typer.Option(..., "--out", help="the page to write (.html, self-contained)"),
           space: str = typer.Option("physics", "--space", help="coverage space: physics | observation | positions"),
           max_states: Optional[int] = typer.Option(None, "--max-states", help="coverage: equal sample size cap"),
           map_states: int = typer.Option(3000, "--map-states", help="coverage: states behind the shared maps"),
           figure: str = typer.Option("shannon", "--figure", help="coverage figure plotted against return"),
           no_coverage: bool = typer.Option(False, "--no-coverage", help="a sweep: skip its datasets' coverage"),
           random_episodes: int = typer.Option(5, "--random-episodes", help="episodes of the random-policy "
                                               "reference per task")):
    """One self-contained HTML page: coverage, Table 1, learning curves, rliable aggregates, coverage vs return."""
    from bex.replay.coverage import CoverageConfig

    from .report import build_report

    try:
        cfg = CoverageConfig.from_dict({"space": space, "max_states": max_states, "map_states": map_states})
        if random_episodes < 1:
            raise ValueError(f"--random-episodes {random_episodes} is out of range: allowed >= 1")
        res = build_report([_path(p, "input", local=True) for p in inputs], _path(out, "--out", local=True), cfg,
                           figure=figure, with_coverage=not no_coverage, random_episodes=random_episodes,
                           progress=stage_bar("report"))
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    typer.echo(json.dumps(res))


@app.command("import")
def import_(src: Path = typer.Argument(..., help="a folder of ExORL/URLB episode files (<time>_<index>_<len>.npz) "
                                            "or one D4RL-style .npz file"),
            task: str = typer.Option(..., "--task", help="a task of the data's domain (walker_stand ...); D4RL: "
                                     "the task whose rewards the file holds"),
            out: Path = typer.Option(..., "--out", help="bex dataset root to write the partition into"),
            fmt: str = typer.Option("auto", "--format", help="auto (a folder: exorl, a file: d4rl) | exorl | d4rl"),
            objective: Optional[str] = typer.Option(None, "--objective",
                                                    help="partition name (objective=...; default: the format)"),
            seed: int = typer.Option(0, "--seed", help="partition seed")):
    """Import data bex did not generate as a partition of a bex dataset (relabel, train, coverage on it)."""
    from bex.replay.importers import import_d4rl, import_exorl

    try:
        if fmt not in ("auto", "exorl", "d4rl"):
            raise ValueError(f"unknown --format {fmt!r}; allowed: auto, exorl, d4rl")
        if fmt == "auto":
            fmt = "exorl" if src.is_dir() else "d4rl"
        objective = objective or fmt
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", objective):
            raise ValueError(f"--objective {objective!r} is not allowed: letters, digits, '_', '.', '-' only")
        if seed < 0:
            raise ValueError(f"--seed {seed} is out of range: allowed >= 0")
        run = import_exorl if fmt == "exorl" else import_d4rl
        res = run(src, _path(out, "--out", local=True), task, objective=objective, seed=seed)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    res.pop("files")
    typer.echo(json.dumps(res))


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
           all_records: bool = typer.Option(False, "--all", help="also list collections and sweeps that ended")):
    """Cluster resources per node, running collections and sweeps with progress, k-NN service health."""
    from .runtime import init_ray
    from .status import cluster_status, format_status

    if not os.environ.get("RAY_ADDRESS"):
        os.environ["RAY_ADDRESS"] = "auto"  # a running cluster, never a fresh embedded one
    try:
        ray = init_ray(log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError) as e:
        fail(f"no running Ray cluster to report on ({str(e).splitlines()[0]}); pass --address or set RAY_ADDRESS")
    st = cluster_status(ray)
    typer.echo(json.dumps(st, indent=2, default=str) if as_json else format_status(st, all_records))


def _usage_message(e: Exception, argv: list[str]) -> str:
    """One line for a typer/click usage error, naming the value the user gave where the error has one."""
    if type(e).__name__ == "NoArgsIsHelpError":
        return "a command is required (the list is above)"
    message = e.format_message() if hasattr(e, "format_message") else str(e)
    line = (message.strip().splitlines() or [type(e).__name__])[0]
    param = getattr(e, "param", None)
    for opt in getattr(param, "opts", None) or []:
        for i, tok in enumerate(argv):
            if tok == opt and i + 1 < len(argv):
                return f"{line} (got {argv[i + 1]!r})"
            if tok.startswith(opt + "="):
                return f"{line} (got {tok[len(opt) + 1:]!r})"
    return line


def _stop_ray() -> None:
    """Stop this process's Ray work (the embedded cluster's actors and tasks, or our jobs on a cluster)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def main() -> None:
    """The console script: every error of the command line (typer's own usage errors too) is one line.

    SIGTERM (and Ray's own SIGTERM handler, which exits with status 15) stops the command's Ray work and
    exits 143 without a traceback; every file is committed atomically, so ``--resume`` continues.
    """
    from .runtime import TERMINATED, handle_sigterm

    def terminated() -> None:
        _stop_ray()
        typer.echo("bex: terminated (SIGTERM); run the same command with --resume to continue", err=True)
        sys.exit(128 + signal.SIGTERM)

    handle_sigterm()
    try:
        rc = app(standalone_mode=False)
    except (KeyboardInterrupt, typer.Abort):
        if TERMINATED.is_set():
            terminated()
        _stop_ray()
        typer.echo("bex: interrupted", err=True)
        sys.exit(130)
    except typer.Exit as e:
        if TERMINATED.is_set():
            terminated()
        sys.exit(e.exit_code)
    except typer.exceptions.TyperException as e:  # usage errors: --steps abc, an unknown option or command, ...
        typer.echo(f"bex: error: {_usage_message(e, sys.argv[1:])}", err=True)
        sys.exit(getattr(e, "exit_code", 2))
    except SystemExit as e:
        if e.code == signal.SIGTERM or TERMINATED.is_set():
            terminated()
        raise
    except BaseException:
        if TERMINATED.is_set():  # whatever the signal interrupted, the answer is the same
            terminated()
        raise
    if TERMINATED.is_set():  # Tune stopped on the signal (and saved its state), then returned
        terminated()
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
