"""``bex results``: the paper's Table 1 layout from a Tune experiment directory.

Rows are datasets (explorer / objective / parameter), columns task × learner,
cells the mean ± std over seeds of each trial's final ``eval/return_mean``; the
best cell of each column is marked.  Written as ``results.md`` and
``results.csv`` in the run directory, plus one learning-curve PNG per
task × learner under ``curves/``.
"""
from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from bex.replay import atomic_write_bytes


def read_trials(run_dir: str | Path) -> list[dict]:
    """Every trial of a Tune experiment: its TrialConfig dict and its reported rows."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {str(run_dir)!r} does not exist")
    trials = []
    for params in sorted(run_dir.glob("*/params.json")):
        cfg = _read_params(params)
        if cfg is None:
            continue
        rows = []
        result = params.with_name("result.json")
        if result.exists():
            lines = [(i, line) for i, line in enumerate(_text(result).splitlines(), 1) if line.strip()]
            for k, (i, line) in enumerate(lines):
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    if k == len(lines) - 1:
                        break  # a trial killed mid-write leaves a partial last line
                    raise ValueError(f"broken trial file {str(result)!r}: line {i} is not JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"broken trial file {str(result)!r}: line {i} is not a JSON object")
                rows.append(row)
        by_step = {}  # a resumed trial re-reports the steps after its checkpoint: keep the latest report
        for row in rows:
            by_step[row.get("steps", len(by_step))] = row
        rows = [by_step[k] for k in sorted(by_step, key=lambda s: (not isinstance(s, (int, float)), s))]
        trials.append({"config": cfg, "rows": rows, "dir": str(params.parent)})
    if not trials:
        raise ValueError(f"{str(run_dir)!r} holds no bex trials (no */params.json)")
    return _one_per_config(trials)


def _one_per_config(trials: list[dict]) -> list[dict]:
    """One trial per configuration (seed included): a sweep started afresh over a killed one whose Tune state
    could not be restored leaves two folders of one trial; the one that got further counts."""
    def key(tr: dict) -> str:
        return json.dumps(tr["config"], sort_keys=True, default=str)

    def reached(tr: dict) -> float:
        return tr["rows"][-1].get("steps", 0) if tr["rows"] else -1

    best: dict[str, dict] = {}
    for tr in trials:
        if key(tr) not in best or reached(tr) > reached(best[key(tr)]):
            best[key(tr)] = tr
    return [tr for tr in trials if best[key(tr)] is tr]


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"broken trial file {str(path)!r}: not UTF-8 text") from None


def _read_params(path: Path) -> dict | None:
    """A trial's ``TrialConfig`` dict from Tune's ``params.json`` (None: not a bex trial); broken: one line."""
    try:
        d = json.loads(_text(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"broken trial file {str(path)!r}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(d, dict):
        raise ValueError(f"broken trial file {str(path)!r}: expected a JSON object")
    cfg = d.get("trial")
    if cfg is None:
        return None
    missing = [k for k in ("learner", "task", "seed") if not isinstance(cfg, dict) or k not in cfg]
    if missing:
        raise ValueError(f"broken trial file {str(path)!r}: its trial config lacks {missing}")
    return cfg


def _learner_label(cfg: dict) -> str:
    if cfg["learner"] == "distill":  # columns = weighting x size (the teacher path and loop settings omitted)
        lc = cfg.get("learner_config", {})
        return f"distill[{lc.get('weighting', 'none')},N={lc.get('size', 256)}]"
    extra = ",".join(f"{k}={v}" for k, v in sorted(cfg.get("learner_config", {}).items()))
    return cfg["learner"] + (f"[{extra}]" if extra else "")


def results_table(run_dir: str | Path) -> dict:
    """Aggregate final evaluation returns; returns rows, columns and cells."""
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    curves: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    baselines: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    incomplete = complete = 0
    for tr in read_trials(run_dir):
        cfg = tr["config"]
        # reports between evaluations carry the last one forward: keep the rows where it was made
        evals = [r for r in tr["rows"]
                 if "eval/return_mean" in r and r.get("eval/at_step", r.get("steps")) == r.get("steps")]
        if not evals or evals[-1].get("steps", 0) < cfg["steps"]:
            incomplete += 1
        else:
            complete += 1
        if not evals:
            continue
        row = cfg.get("label") or Path(cfg["dataset"]).name
        col = f"{cfg['task']} {_learner_label(cfg)}"
        cells[(row, col)].append(float(evals[-1]["eval/return_mean"]))
        if cfg["learner"] == "distill":  # its baselines (same evaluation episodes), one value per seed
            final = tr["rows"][-1] if tr["rows"] else {}
            n = cfg.get("learner_config", {}).get("size", 256)
            for key, name in (("baseline/random_pairs/return_mean", f"baseline[random_pairs,N={n}]"),
                              ("baseline/bc_full/return_mean", "baseline[bc_full]")):
                if key in final:
                    baselines[(row, f"{cfg['task']} {name}")][cfg["seed"]] = float(final[key])
        curves[col][row].append(([r["steps"] for r in evals], [r["eval/return_mean"] for r in evals]))
    for k, by_seed in baselines.items():
        cells[k] = [by_seed[seed] for seed in sorted(by_seed)]
    rows = sorted({r for r, _ in cells})
    cols = sorted({c for _, c in cells})
    return {"rows": rows, "cols": cols, "cells": {k: v for k, v in cells.items()}, "curves": curves,
            "incomplete_trials": incomplete, "complete_trials": complete}


def format_markdown(tab: dict) -> str:
    rows, cols, cells = tab["rows"], tab["cols"], tab["cells"]
    best = {c: max((np.mean(cells[(r, c)]) for r in rows if (r, c) in cells), default=None) for c in cols}
    out = ["| dataset | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for r in rows:
        line = [r]
        for c in cols:
            v = cells.get((r, c))
            if not v:
                line.append("–")
                continue
            s = f"{np.mean(v):.1f} ± {np.std(v):.1f} (n={len(v)})"
            line.append(f"**{s}**" if np.mean(v) == best[c] else s)
        out.append("| " + " | ".join(line) + " |")
    if tab["incomplete_trials"]:
        out.append(f"\n{tab['incomplete_trials']} trial(s) did not reach their final step; "
                   "their last evaluation is used.")
    return "\n".join(out)


def write_results(run_dir: str | Path) -> dict:
    run_dir = Path(run_dir)
    tab = results_table(run_dir)
    md = format_markdown(tab)
    atomic_write_bytes(run_dir / "results.md", (md + "\n").encode())
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["dataset", "column", "mean", "std", "n", "returns"])
    for (r, c), v in sorted(tab["cells"].items()):
        w.writerow([r, c, f"{np.mean(v):.3f}", f"{np.std(v):.3f}", len(v), " ".join(f"{x:.3f}" for x in v)])
    atomic_write_bytes(run_dir / "results.csv", buf.getvalue().encode())
    pngs = _plot_curves(run_dir, tab["curves"])
    return {"markdown": md, "complete": tab["complete_trials"], "csv": str(run_dir / "results.csv"),
            "md": str(run_dir / "results.md"), "plots": pngs}


def curve_pngs(curves, reference: dict[str, float] | None = None) -> dict[str, bytes]:
    """One PNG per results column: each dataset's mean evaluation return over gradient steps with a band of
    ± one std over seeds; ``reference`` (task -> return, e.g. the random policy's) draws a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    for col, by_row in sorted(curves.items()):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for row, runs in sorted(by_row.items()):
            n = min(len(s) for s, _ in runs)
            steps = np.array(runs[0][0][:n])
            vals = np.array([v[:n] for _, v in runs])
            m, s = vals.mean(0), vals.std(0)
            ax.plot(steps, m, label=f"{row} (n={len(runs)})")
            ax.fill_between(steps, m - s, m + s, alpha=0.2)
        task = col.split(" ", 1)[0]
        if reference and task in reference:
            ax.axhline(reference[task], color="k", ls="--", lw=1, label="random policy")
        ax.set_xlabel("gradient steps")
        ax.set_ylabel("evaluation return")
        ax.set_title(col)
        ax.legend(fontsize=7)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        out[col] = buf.getvalue()
    return out


def _plot_curves(run_dir: Path, curves) -> list[str]:
    out_dir = run_dir / "curves"
    out_dir.mkdir(exist_ok=True)
    paths = []
    for col, png in curve_pngs(curves).items():
        p = out_dir / (col.replace(" ", "_").replace("/", "-").replace("[", "").replace("]", "") + ".png")
        atomic_write_bytes(p, png)
        paths.append(str(p))
    return paths
