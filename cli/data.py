"""Dataset commands: ``bex collect``, ``relabel``, ``info``, ``import``, ``export``."""
from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import List, Optional

import typer

from .app import command, local_path, out, parse_set, resume_option, seed_option, set_option
from .progress import printer

PANEL = "Datasets"


@command(rich_help_panel=PANEL)
def collect(
    out_dir: Optional[str] = typer.Option(None, "--out", help="dataset root directory"),
    domain: str = typer.Option("walker", help="dm_control domain"),
    task: Optional[str] = typer.Option(None, "--task", help="collection task (walker_stand or stand); default: "
                                       "the domain's primal task (walker stand, quadruped walk, cheetah run ...)"),
    explorer: str = typer.Option("random", help="random | apt | rnd | smm"),
    objective: Optional[str] = typer.Option(None, help="APT entropy: be | renyi | shannon (APT's default: shannon)"),
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
    seed: int = seed_option("run seed (partition seed=)"),
    preset: str = typer.Option("small", help="explorer sizes and schedule: small | paper"),
    episodes_per_chunk: int = typer.Option(10, help="episodes per committed Parquet file / checkpoint"),
    tag: Optional[str] = typer.Option(None, "--tag", help="partition suffix: objective=<objective>-<tag> (keeps "
                                      "runs that differ in other settings, e.g. the k-NN mode, apart)"),
    set_: List[str] = set_option("explorer config override (e.g. hidden_dim=256, batch_size=256, knn_window=4096)"),
    config: Optional[Path] = typer.Option(None, "--config", help="a collection grid (tune_configs/collect_*.yaml)"),
    resume: bool = resume_option("collection or grid"),
):
    """Explore with Ray actors and write a hive-partitioned Parquet dataset (one run, or a --config grid)."""
    from bex.actors.collect import CollectConfig
    from bex.cluster.driver import run_collections

    if config is not None:
        from bex.pipelines.grids import load_grid

        if task is not None or set_ or tag is not None:
            raise ValueError("--task, --tag and --set apply to a single run; a --config grid sets `task:`, "
                             "`tag:` and `<explorer>_config:` in its YAML")
        grid = load_grid(config, out=None if out_dir is None else local_path(out_dir, "--out"))
        cfgs = [dataclasses.replace(c, out=local_path(c.out, "out")) for c in grid.runs_()]
        concurrent = grid.max_concurrent_runs
    else:
        if out_dir is None:
            raise ValueError("--out is required (or --config with a grid)")
        extra = {**parse_set(set_), **{key: v for key, v in (("k", k), ("knn_mode", knn_mode),
                                                               ("knn_local", knn_local)) if v is not None}}
        cfgs = [CollectConfig.from_options(
            explorer=explorer, objective=objective, alpha=alpha, q=q, out=local_path(out_dir, "--out"),
            domain=domain, task=task, steps=steps, actors=actors, seed=seed, preset=preset, tag=tag,
            episodes_per_chunk=episodes_per_chunk, explorer_config=extra).validate()]
        concurrent = 0
    summaries = run_collections(cfgs, resume=resume, progress=printer("collect"), max_concurrent_runs=concurrent)
    for s in summaries:
        out(json.dumps({"run": s["run_key"], "out": s["config"]["out"], "steps": s["steps"],
                        "wall_s": round(s["wall_s"], 2), "env_steps_per_s": round(s["env_steps_per_s"], 1),
                        "updates": s["updates"], "nodes": s["nodes"], "restarts": s["restarts"]}))


@command(rich_help_panel=PANEL)
def relabel(
    dataset: Path = typer.Argument(..., help="dataset root"),
    task: List[str] = typer.Option(..., "--task", help="task to relabel (walker_stand or stand); repeatable"),
    workers: Optional[int] = typer.Option(None, help="parallel workers (default: all CPUs)"),
    local: bool = typer.Option(False, "--local", help="use a local process pool instead of Ray tasks"),
    force: bool = typer.Option(False, "--force", help="recompute cached rewards"),
):
    """Compute and cache task rewards from the stored physics states."""
    from bex.envs import parse_task
    from bex.replay import Dataset, process_pool_map
    from bex.replay import relabel as do_relabel

    dataset = Path(local_path(dataset, "dataset"))
    tasks = [parse_task(t, Dataset(dataset).env_spec.domain) for t in task]
    if local:
        map_fn = process_pool_map(workers)
    else:
        from bex.cluster.raymap import ray_map

        map_fn = ray_map()
    for d, t in tasks:
        t0 = time.perf_counter()
        res = do_relabel(dataset, f"{d}_{t}", map_fn=map_fn, force=force, progress=printer("relabel"))
        res["wall_s"] = round(time.perf_counter() - t0, 3)
        res["states_per_s"] = round(res["computed_rows"] / max(res["wall_s"], 1e-9))
        out(json.dumps(res))
    from bex.replay.card import update_card

    update_card(dataset)


@command(rich_help_panel=PANEL)
def info(dataset: Path = typer.Argument(..., help="dataset root"),
         as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
         verify: bool = typer.Option(False, "--verify", help="read every page of every file (checksums, row "
                                     "counts); a corrupt file is an error naming it")):
    """Print partitions, episodes, transitions, shapes, schema version and cached task rewards."""
    from bex.analysis.info import dataset_info, format_info
    from bex.replay import Dataset

    root = local_path(dataset, "dataset")
    d = dataset_info(root)
    if verify:
        checked = Dataset(root).verify()
        d["verified"] = {"files": len(checked), "rows": sum(c["rows"] for c in checked)}
    text = format_info(d)
    if verify:
        text += f"\nverified     {d['verified']['files']} files, {d['verified']['rows']} rows: every page read, OK"
    out(json.dumps(d, indent=2) if as_json else text)


@command("import", rich_help_panel=PANEL)
def import_(src: str = typer.Argument(..., help="a folder of ExORL/URLB episode files (<time>_<index>_<len>.npz), "
                                           "one D4RL-style .npz file, or a Minari dataset (its folder or the id "
                                           "of a dataset in the local Minari root)"),
            task: str = typer.Option(..., "--task", help="a task of the data's domain (walker_stand ...); D4RL and "
                                     "Minari: the task whose rewards the data holds"),
            out_dir: Path = typer.Option(..., "--out", help="bex dataset root to write the partition into"),
            fmt: str = typer.Option("auto", "--format", help="auto (a Minari dataset or id: minari, another folder: "
                                    "exorl, a file: d4rl) | exorl | d4rl | minari"),
            objective: Optional[str] = typer.Option(None, "--objective",
                                                    help="partition name (objective=...; default: the format)"),
            seed: int = seed_option("partition seed")):
    """Import data bex did not generate as a partition of a bex dataset (relabel, train, coverage on it)."""
    from bex.replay.importers import FORMATS, detect_format, import_d4rl, import_exorl

    if fmt not in FORMATS:
        raise ValueError(f"unknown --format {fmt!r}; allowed: {', '.join(FORMATS)}")
    if fmt == "auto":
        fmt = detect_format(src)
    objective = objective or fmt
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", objective):
        raise ValueError(f"--objective {objective!r} is not allowed: letters, digits, '_', '.', '-' only")
    if seed < 0:
        raise ValueError(f"--seed {seed} is out of range: allowed >= 0")
    if fmt == "minari":
        from bex.replay.minari_io import import_minari as run
    else:
        run = import_exorl if fmt == "exorl" else import_d4rl
    res = run(src, local_path(out_dir, "--out"), task, objective=objective, seed=seed)
    res.pop("files")
    out(json.dumps(res))


EXPORT_FORMATS = ("npz", "minari")


@command(rich_help_panel=PANEL)
def export(dataset: Path = typer.Argument(..., help="dataset root or partition directory"),
           task: str = typer.Option(..., "--task", help="the task whose rewards to export (relabelled first)"),
           out_path: Optional[Path] = typer.Option(None, "--out", help="npz: the output .npz file; minari: the "
                                                   "Minari root (default $MINARI_DATASETS_PATH, else "
                                                   "~/.minari/datasets)"),
           fmt: str = typer.Option("npz", "--format", help="npz (D4RL-style arrays) | minari (one partition)"),
           dataset_id: Optional[str] = typer.Option(None, "--dataset-id", help="minari: NAMESPACE/NAME-vN"),
           objective: Optional[str] = typer.Option(None, "--objective", help="select a partition: objective="),
           param: Optional[str] = typer.Option(None, "--param", help="select a partition: param="),
           seed: Optional[int] = typer.Option(None, "--seed", help="select a partition: seed="),
           ref_max_score: Optional[float] = typer.Option(
               None, "--ref-max-score", help="minari: the return that normalises to 1 (default 1000, dm_control's "
                                             "largest; the minimum is the random policy's return)"),
           author: Optional[str] = typer.Option(None, "--author", help="minari: author name"),
           author_email: Optional[str] = typer.Option(None, "--author-email", help="minari: author contact"),
           code_permalink: Optional[str] = typer.Option(None, "--code-permalink", help="minari: link to the code"),
           storage: str = typer.Option("arrow", "--minari-storage", help="minari: arrow | parquet")):
    """Export D4RL-style arrays (.npz: observations, actions, rewards, next_observations, terminals, timeouts) or
    one partition as a Minari dataset."""
    from bex.replay import dataset_selection

    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown --format {fmt!r}; allowed: {', '.join(EXPORT_FORMATS)}")
    root, fixed = dataset_selection(local_path(dataset, "dataset"))
    chosen = {k: v for k, v in (("objective", objective), ("param", param), ("seed", seed)) if v is not None}
    clash = {k: v for k, v in chosen.items() if k in fixed and str(fixed[k]) != str(v)}
    if clash:
        raise ValueError(f"--{next(iter(clash))} {next(iter(clash.values()))} contradicts the partition directory "
                         f"{str(dataset)!r}")
    filters = {**fixed, **chosen}
    if fmt == "npz":
        from bex.replay import export_npz

        if out_path is None:
            raise ValueError("--out is required for --format npz (the output .npz file)")
        if dataset_id is not None:
            raise ValueError("--dataset-id applies to --format minari")
        out(json.dumps(export_npz(root, task, out_path, **filters)))
        return
    from bex.analysis.units import MAX_RETURN, random_return
    from bex.replay.minari_io import check_dataset_id, export_minari

    if dataset_id is None:
        raise ValueError("--dataset-id is required for --format minari (NAMESPACE/NAME-vN)")
    check_dataset_id(dataset_id)
    dest = None if out_path is None else local_path(out_path, "--out")
    res = export_minari(root, task, dataset_id, dest, ref_min_score=random_return,  # measured only if needed
                        ref_max_score=MAX_RETURN if ref_max_score is None else ref_max_score, author=author,
                        author_email=author_email, code_permalink=code_permalink, storage=storage, **filters)
    out(json.dumps(res))
