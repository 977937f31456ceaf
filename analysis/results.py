"""``bex results``: a sweep's per-trial table (``trials.csv``), Table 1 and learning curves, from its Tune
experiment directory.

The trials' evaluations become ``trials.csv`` (:mod:`.trials`); Table 1 is :func:`.analyze.analyze`'s table
of it (rows are datasets, columns task × learner, cells mean ± sample SD of the trial scores, the best of each
column bold and the cells below it beyond noise marked), written as ``results.md`` and ``results.csv`` in the
run directory with one learning-curve PNG per task × learner under ``curves/``.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from bex.replay import atomic_write_bytes

from .trials import FILE, curves, rows_from_trials, trials_csv


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


def sweep_rows(run_dir: str | Path, trials: list[dict] | None = None) -> list[dict]:
    """The ``trials.csv`` rows of a Tune experiment directory (written there as ``trials.csv``); ``trials``: its
    :func:`read_trials` when the caller has read them."""
    rows = rows_from_trials(read_trials(run_dir) if trials is None else trials)
    atomic_write_bytes(Path(run_dir) / FILE, trials_csv(rows).encode())
    return rows


def write_results(run_dir: str | Path, cfg=None, coverage_rows=(), rows: list[dict] | None = None) -> dict:
    """``trials.csv``, ``results.md``, ``results.csv`` and the learning curves of a sweep; returns their paths,
    the markdown table and the analysis they came from (:func:`.analyze.analyze`)."""
    from .analyze import analyze, table1_markdown

    run_dir = Path(run_dir)
    rows = sweep_rows(run_dir) if rows is None else rows
    res = analyze(rows, cfg, coverage_rows)
    md = table1_markdown(res["table"], res["config"]["score_last"], res["units"])
    if res["incomplete_trials"]:
        md += (f"\n{res['incomplete_trials']} trial(s) did not reach their final step; their last evaluations are "
               "used.\n")
    atomic_write_bytes(run_dir / "results.md", md.encode())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["dataset", "column", "mean", "sd", "n", "scores"])
    for key, c in sorted(res["table"]["cells"].items()):
        r, col = key.split("\t")
        w.writerow([r, col, f"{c['mean']:.3f}", "" if np.isnan(c["sd"]) else f"{c['sd']:.3f}", c["n"],
                    " ".join(f"{x:.3f}" for x in c["values"])])
    atomic_write_bytes(run_dir / "results.csv", buf.getvalue().encode())
    curve_png = curve_pngs(curves(rows), res["random_policy"])
    return {"markdown": md.rstrip("\n"), "complete": res["trials"] - res["incomplete_trials"],
            "csv": str(run_dir / "results.csv"), "md": str(run_dir / "results.md"),
            "trials_csv": str(run_dir / FILE), "plots": save_curves(run_dir, curve_png), "curve_png": curve_png,
            "analysis": res, "rows": rows}


def curve_pngs(by_col, reference: dict[str, float] | None = None) -> dict[str, bytes]:
    """One PNG per (task, learner): small multiples, one panel per dataset family (``be``, ``be-recent``,
    ``shannon`` ...), each dataset a distinct colour, its mean evaluation return over seeds with a band of ± one
    sample SD; ``reference`` (task -> return, the random policy's) draws a dashed line in every panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .analyze import footnotes, short
    from .claims import family

    out = {}
    for (task, learner), by_row in sorted(by_col.items()):
        fams = sorted({family(r) for r in by_row})
        ncol = min(4, len(fams))
        nrow = -(-len(fams) // ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), squeeze=False, sharey=True)
        for ax, fam in zip(axes.flat, fams):
            rows = sorted(r for r in by_row if family(r) == fam)
            for i, row in enumerate(rows):
                runs = by_row[row]
                n = min(len(s) for s, _ in runs)
                steps = np.array(runs[0][0][:n])
                vals = np.array([v[:n] for _, v in runs])
                m = vals.mean(0)
                s = vals.std(0, ddof=1) if len(vals) > 1 else np.zeros_like(m)
                color = plt.cm.tab10(i % 10)
                ax.plot(steps, m, color=color, label=f"{row} (n={len(runs)})")
                ax.fill_between(steps, m - s, m + s, color=color, alpha=0.2)
            if reference and task in reference:
                ax.axhline(reference[task], color="k", ls="--", lw=1, label="random policy")
            ax.set_title(fam, fontsize=9)
            ax.legend(fontsize=6)
            ax.tick_params(labelsize=7)
        for ax in list(axes.flat)[len(fams):]:
            ax.axis("off")
        col = f"{task} {learner}"
        note = footnotes([col])
        fig.suptitle(short(col) + (f"   ({note[0][2:]})" if note else ""), fontsize=9)
        fig.supxlabel("gradient steps", fontsize=8)
        fig.supylabel("evaluation return (band: ± 1 SD over runs)", fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        out[col] = buf.getvalue()
    return out


def save_curves(run_dir: Path, curve_png: dict[str, bytes]) -> list[str]:
    """The learning curves (:func:`curve_pngs`, drawn once: the report page embeds the same PNGs) as
    ``run_dir/curves/<task>_<learner>.png``."""
    out_dir = run_dir / "curves"
    out_dir.mkdir(exist_ok=True)
    paths = []
    for col, png in curve_png.items():
        p = out_dir / (col.replace(" ", "_").replace("/", "-").replace("[", "").replace("]", "") + ".png")
        atomic_write_bytes(p, png)
        paths.append(str(p))
    return paths


__all__ = ["read_trials", "sweep_rows", "write_results", "curve_pngs", "save_curves"]
