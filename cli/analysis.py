"""Analysis commands: ``bex coverage``, ``report``, ``analyze``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from .app import command, err, local_path, out, seed_option
from .progress import printer

PANEL = "Analysis"


@command(rich_help_panel=PANEL)
def coverage(dirs: List[Path] = typer.Argument(..., help="bex datasets or partitions (each partition of a dataset "
                                                   "is compared as its own dataset)"),
             space: str = typer.Option("physics", "--space", help="physics | observation | positions"),
             max_states: Optional[int] = typer.Option(None, "--max-states", help="equal sample size cap"),
             k: int = typer.Option(5, "--k", help="neighbours of the k-NN estimators"),
             replicates: int = typer.Option(10, "--replicates", help="half-size subsamples per interval"),
             seed: int = seed_option("seed of the samples and maps"),
             standardiser: str = typer.Option("pooled", "--standardiser", help="pooled (the compared datasets) | "
                                              "fixed (the domain's random-action reference: figures of separate "
                                              "calls compare)"),
             map_states: int = typer.Option(3000, "--map-states", help="pooled states behind the shared "
                                            "t-SNE/PHATE maps (0: no maps)"),
             out_dir: Path = typer.Option(..., "--out", help="output directory (coverage.json, tsne.png, phate.png)")):
    """k-NN entropies (Shannon, Rényi, BE), volumes and the near-static fraction of datasets, comparable."""
    from bex.analysis.coverage import CoverageConfig, load_state_sets, null_figures_note
    from bex.analysis.coverage import coverage as measure
    from bex.replay import atomic_write_bytes
    from bex.replay.schema import dumps

    cfg = CoverageConfig.from_dict({"space": space, "max_states": max_states, "k": k, "replicates": replicates,
                                    "seed": seed, "map_states": map_states, "standardiser": standardiser})
    folder = Path(local_path(out_dir, "--out"))
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {str(folder)!r} is a file, not a directory")
    bar = printer("coverage")
    sets = load_state_sets([local_path(d, "dataset") for d in dirs], cfg.space, progress=bar)
    rows = measure(sets, cfg, progress=bar, out_dir=folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / "coverage.json", dumps({"config": cfg.to_dict(), "datasets": rows}).encode())
    for row in rows:
        out(json.dumps(row))
    note = null_figures_note(rows)
    if note:
        err(f"bex: note: {note}")


@command(rich_help_panel=PANEL)
def report(inputs: List[Path] = typer.Argument(..., help="a sweep (STORAGE/NAME), `bex coverage` outputs, or bex "
                                               "datasets / partitions"),
           out_file: Path = typer.Option(..., "--out", help="the page to write (.html, self-contained)"),
           space: str = typer.Option("physics", "--space", help="coverage space: physics | observation | positions"),
           max_states: Optional[int] = typer.Option(None, "--max-states", help="coverage: equal sample size cap"),
           map_states: int = typer.Option(3000, "--map-states", help="coverage: states behind the shared maps"),
           figure: str = typer.Option("shannon", "--figure", help="coverage figure plotted against return"),
           no_coverage: bool = typer.Option(False, "--no-coverage", help="a sweep: skip its datasets' coverage"),
           score_last: int = typer.Option(3, "--score-last", help="a trial's score: the mean of its last K "
                                          "evaluations")):
    """One self-contained HTML page: coverage, Table 1, claims, learning curves, aggregates, coverage vs return."""
    from bex.analysis.analyze import AnalysisConfig
    from bex.analysis.coverage import CoverageConfig
    from bex.analysis.report import build_report

    cfg = CoverageConfig.from_dict({"space": space, "max_states": max_states, "map_states": map_states})
    acfg = AnalysisConfig.from_dict({"score_last": score_last, "figure": figure}, where="--score-last/--figure")
    res = build_report([local_path(p, "input") for p in inputs], local_path(out_file, "--out"), cfg,
                       figure=figure, with_coverage=not no_coverage, analysis_cfg=acfg, progress=printer("report"))
    out(json.dumps(res))


@command(rich_help_panel=PANEL)
def analyze(trials: List[Path] = typer.Argument(..., help="trials.csv file(s) of a sweep or replication (several: "
                                                "one per session of a long run)"),
            out_dir: Path = typer.Option(..., "--out", help="output directory (analysis.md, analysis.json, plots)"),
            coverage_files: List[Path] = typer.Option([], "--coverage", help="a coverage.json of the same "
                                                      "datasets (bex coverage, or a replication's); repeatable: "
                                                      "one per shard, combined over collection seeds"),
            config: Optional[Path] = typer.Option(None, "--config", help="a replication config: its analysis "
                                                  "section (primary claims, score, α) applies"),
            score_last: Optional[int] = typer.Option(None, "--score-last", help="a trial's score: the mean of its "
                                                     "last K evaluations (default: the config's, else 3)"),
            max_step: Optional[int] = typer.Option(None, "--max-step", help="leave out evaluations after this "
                                                   "gradient step (a longer pilot's trials as main-length ones)")):
    """Table 1, the primary claims' verdicts, exploratory comparisons and aggregates from trials.csv alone."""
    from bex.analysis.analyze import AnalysisConfig, combine_coverage, comparable_coverage, write_analysis
    from bex.analysis.analyze import analyze as run_analysis
    from bex.analysis.report import analysis_page, read_coverage_json
    from bex.analysis.results import curve_pngs, save_curves
    from bex.analysis.trials import curves, read_trials_csv

    settings = {}
    if config is not None:
        from bex.pipelines.replicate import ReplicateConfig

        settings = dict(ReplicateConfig.from_yaml(config).analysis)
    if score_last is not None:
        settings["score_last"] = score_last
    if max_step is not None:
        settings["max_step"] = max_step
    cfg = AnalysisConfig.from_dict(settings, where="analysis")
    folder = Path(local_path(out_dir, "--out"))
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {str(folder)!r} is a file, not a directory")
    files = []
    for cov_path in coverage_files:
        if not Path(cov_path).is_file():
            raise FileNotFoundError(f"--coverage {str(cov_path)!r} is not a file")
        files.append(read_coverage_json(Path(cov_path)))
    standardiser = comparable_coverage([(str(p), f.get("config", {})) for p, f in zip(coverage_files, files)])
    cov_rows = combine_coverage([f["datasets"] for f in files]) if files else []
    rows = read_trials_csv(trials)
    res = run_analysis(rows, cfg, cov_rows)
    paths = write_analysis(res, folder)
    curve_png = curve_pngs(curves(rows), res["random_policy"])
    save_curves(folder, curve_png)
    page = analysis_page(res, rows, cov_rows, folder / "report.html", [str(p) for p in [*trials, *coverage_files]],
                         standardiser, curve_png)
    out(json.dumps({**paths, "report": page["out"],
                    "verdicts": {c["claim"]: c["verdict"] for c in res["claims"] if c.get("primary")}}))
