"""``bex report``: one self-contained static HTML page comparing datasets.

Inputs (any mix): a Tune experiment directory of ``bex sweep`` (a *sweep*), an
output directory of ``bex coverage`` (holding ``coverage.json``), or bex
datasets / partitions (their coverage is computed).  The page holds:

* **Coverage**: the coverage table (every figure ``value [lo, hi]``, see
  :mod:`bex.analysis.coverage`) and the shared t-SNE/PHATE maps.  For a sweep, the
  coverage of each results row (the union of the dataset selections its trials
  trained on) is computed once and cached in ``RUN/coverage/`` (reused while the
  coverage settings and the selections are unchanged).
* **Table 1** (:func:`bex.analysis.results.results_table`), learning curves (mean
  ± one std over seeds) with the uniform random policy's return on each task as a
  dashed reference line (``random_episodes`` episodes, seeds 0..n-1).
* **Aggregates** with rliable (Agarwal et al., 2021): the interquartile mean and
  the mean of normalised scores with 95 % stratified-bootstrap intervals, per
  dataset, over tasks × learners (the strata) and seeds (the runs).  Scores are
  ``return / 1000`` (every dm_control task's episode return lies in [0, 1000]);
  only the columns every dataset has are used, and each column contributes the
  same number of seeds (the smallest count; extra seeds are dropped, said on
  the page).
* **Coverage against return** (the BE paper's open question 3): per dataset, a
  coverage figure (``--figure``, Shannon by default) against the mean normalised
  return over all columns, with Spearman's rank correlation and a 95 % bootstrap
  interval over datasets (resampling datasets; fewer than 3 datasets: no
  correlation).

Images are embedded as ``data:`` URIs and the page has no script and no external
reference, so it opens offline; it is written atomically.
"""
from __future__ import annotations

import base64
import datetime
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from bex.core.progress import Progress, Reporter, report
from bex.replay import atomic_write_bytes

from .coverage import CoverageConfig, figure_names, null_figures_note
from .results import curve_pngs, read_trials, results_table

#: dm_control's episode returns lie in [0, 1000] (1000 steps, rewards in [0, 1]).
RETURN_SCALE = 1000.0
COVERAGE_DIR = "coverage"


@dataclass
class Inputs:
    """The classified inputs of a report."""

    sweeps: list[Path] = field(default_factory=list)
    coverage_dirs: list[Path] = field(default_factory=list)
    datasets: list[Path] = field(default_factory=list)


def classify(paths: Sequence[str | Path]) -> Inputs:
    """Sort the inputs into sweeps, coverage outputs and datasets; anything else is one ``ValueError`` line."""
    from bex.replay import dataset_root_of

    inp = Inputs()
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{str(p)!r} does not exist")
        if p.is_dir() and any(p.glob("*/params.json")):
            inp.sweeps.append(p)
        elif p.is_dir() and (p / "coverage.json").is_file():
            inp.coverage_dirs.append(p)
        else:
            try:
                dataset_root_of(p.resolve())
            except ValueError:
                raise ValueError(f"{str(p)!r} is not a sweep (no */params.json), a `bex coverage` output (no "
                                 f"coverage.json) or a bex dataset") from None
            inp.datasets.append(p)
    return inp


def _png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def read_coverage_json(path: Path) -> dict:
    try:
        d = json.loads(path.read_text())
        if not isinstance(d, dict) or not isinstance(d.get("datasets"), list):
            raise ValueError
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"broken coverage file {str(path)!r}: expected bex coverage's JSON object") from None
    return d


# ------------------------------------------------------------------------------------------- sweep side
def row_selections(trials: list[dict]) -> dict[str, list[tuple[str, dict]]]:
    """Each results row's dataset selections ``(root, partition filters)``, as the trials name them."""
    out: dict[str, list[tuple[str, dict]]] = {}
    for tr in trials:
        cfg = tr["config"]
        row = cfg.get("label") or Path(cfg["dataset"]).name
        sel = (str(cfg["dataset"]), {k: str(v) for k, v in sorted(cfg.get("filters", {}).items())})
        if sel not in out.setdefault(row, []):
            out[row].append(sel)
    return out


def sweep_coverage(run_dir: Path, trials: list[dict], cfg: CoverageConfig,
                   progress: Reporter | None = None) -> dict:
    """Coverage per results row of a sweep, cached in ``RUN/coverage/coverage.json`` (with its maps)."""
    from bex.replay.schema import dumps

    from .coverage import coverage, selection_state_set

    sels = row_selections(trials)
    key = {"config": cfg.to_dict(), "selections": {r: [[d, f] for d, f in v] for r, v in sorted(sels.items())}}
    out_dir = run_dir / COVERAGE_DIR
    cache = out_dir / "coverage.json"
    if cache.is_file():
        try:
            d = read_coverage_json(cache)
        except ValueError:
            d = {}
        if {k: d.get(k) for k in key} == json.loads(dumps(key)):
            return d
    sets = [selection_state_set(r, v, cfg.space) for r, v in sorted(sels.items())]
    rows = coverage(sets, cfg, progress=progress, out_dir=out_dir)
    d = {**key, "datasets": rows}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(cache, dumps(d).encode())
    return json.loads(dumps(d))


def random_policy_returns(tasks: Sequence[str], episodes: int = 5) -> dict[str, dict]:
    """The uniform random policy's return on each task: ``{task: {"mean", "std", "episodes"}}``."""
    from bex.envs import env_spec, parse_task
    from bex.envs.evaluate import evaluate, random_policy

    out = {}
    for task in sorted(set(tasks)):
        domain, name = parse_task(task)
        res = evaluate(random_policy(env_spec(domain, name).action_dim, seed=0), domain, name, episodes=episodes)
        out[task] = {"mean": res.mean, "std": res.std, "episodes": episodes}
    return out


def aggregates(tab: dict, reps: int = 2000, seed: int = 0) -> dict:
    """rliable IQM and mean of normalised scores with 95 % stratified-bootstrap intervals, per dataset."""
    from rliable import library as rly
    from rliable import metrics

    rows, cells = tab["rows"], tab["cells"]
    cols = [c for c in tab["cols"] if all((r, c) in cells for r in rows)]
    if not rows or not cols:
        return {"columns": [], "runs": 0, "datasets": {}}
    runs = min(len(cells[(r, c)]) for r in rows for c in cols)
    scores = {r: np.array([[cells[(r, c)][i] / RETURN_SCALE for c in cols] for i in range(runs)]) for r in rows}

    def agg(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)])

    np.random.seed(seed)  # rliable's bootstrap draws from numpy's global generator
    point, interval = rly.get_interval_estimates(scores, agg, reps=reps)
    ds = {r: {"iqm": {"value": float(point[r][0]), "lo": float(interval[r][0, 0]), "hi": float(interval[r][1, 0])},
              "mean": {"value": float(point[r][1]), "lo": float(interval[r][0, 1]), "hi": float(interval[r][1, 1])}}
          for r in rows}
    dropped = sum(len(cells[(r, c)]) - runs for r in rows for c in cols)
    return {"columns": cols, "runs": runs, "datasets": ds, "dropped_runs": dropped}


def rank_correlation(x: Sequence[float], y: Sequence[float], reps: int = 2000, seed: int = 0) -> dict:
    """Spearman's rho of ``x`` and ``y`` with a 95 % percentile bootstrap interval over the pairs."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    if n < 3:
        return {"rho": None, "lo": None, "hi": None, "n": n}
    rho = float(spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(reps):
        i = rng.integers(0, n, n)
        if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0:
            boot.append(spearmanr(x[i], y[i]).statistic)
    lo, hi = (np.percentile(boot, [2.5, 97.5]) if boot else (math.nan, math.nan))
    return {"rho": rho, "lo": float(lo), "hi": float(hi), "n": n}


# ------------------------------------------------------------------------------------------------ plots
def _fig_png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def aggregate_png(agg: dict) -> bytes:
    """Interval plot of the IQM and mean per dataset (rliable's style: point and 95 % interval)."""
    plt = _pyplot()
    names = sorted(agg["datasets"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.45 * len(names) + 1.4), sharey=True)
    for ax, key, title in zip(axes, ("iqm", "mean"), ("IQM", "mean")):
        for i, n in enumerate(names):
            f = agg["datasets"][n][key]
            ax.plot([f["lo"], f["hi"]], [i, i], color="tab:blue", lw=6, alpha=0.4, solid_capstyle="butt")
            ax.plot([f["value"]], [i], "k|", ms=14)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_xlabel(f"{title} of return / {RETURN_SCALE:g}")
        ax.grid(axis="x", alpha=0.3)
    return _fig_png(fig)


def scatter_png(points: list[tuple[str, float, float]], figure: str, corr: dict) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.8))
    for name, x, y in points:
        ax.scatter([x], [y], s=25)
        ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(f"coverage: {figure}")
    ax.set_ylabel(f"mean return / {RETURN_SCALE:g}")
    rho = "n/a" if corr["rho"] is None else f"{corr['rho']:.2f} [{corr['lo']:.2f}, {corr['hi']:.2f}]"
    ax.set_title(f"Spearman rho = {rho}, {corr['n']} datasets", fontsize=9)
    return _fig_png(fig)


# ------------------------------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:sans-serif;margin:1.5em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:0.5em 0 1em}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}
th:first-child,td:first-child{text-align:left}
td.best{font-weight:bold;background:#eef6ee}
small{color:#666}
img.plot{max-width:100%;border:1px solid #ddd;margin:4px}
p.note{color:#555;font-size:13px}
"""


def _fmt(f) -> str:
    if isinstance(f, dict):
        if f.get("value") is None:
            return "–"
        return f"{f['value']:.3g} <small>[{f['lo']:.3g}, {f['hi']:.3g}]</small>"
    return html.escape(str(f))


def _img(png: bytes, alt: str) -> str:
    return f'<img class="plot" alt="{html.escape(alt)}" src="{_png_uri(png)}">'


def coverage_section(cov: list[dict], maps: dict[str, bytes]) -> str:
    rank = ("shannon", "renyi_q", "be_alpha", "volume", "near_static")

    def order(k: str):
        p = next(i for i, r in enumerate(rank + ("",)) if k.startswith(r))
        tail = k[len(rank[p]):] if p < len(rank) else k
        return (p, float(tail) if tail.replace(".", "", 1).isdigit() else 0.0, k)

    keys = sorted((k for k in cov[0] if isinstance(cov[0][k], dict) and "value" in cov[0][k]), key=order)
    head = "".join(f"<th>{html.escape(k)}</th>" for k in ["dataset", "states", *keys])
    body = []
    for row in cov:
        cells = "".join(f"<td>{_fmt(row.get(k))}</td>" for k in keys)
        body.append(f'<tr class="dataset-row" data-dataset="{html.escape(row["dataset"])}"><td>'
                    f'{html.escape(row["dataset"])}</td><td>{row["states"]}</td>{cells}</tr>')
    imgs = "".join(_img(png, f"shared {m} map") for m, png in sorted(maps.items()))
    space = html.escape(str(cov[0].get("space", "?")))
    note = null_figures_note(cov)
    nulls = f'<p class="note">–: {html.escape(note)}.</p>' if note else ""
    return (f'<h2>Coverage</h2><p class="note">k-NN figures of equal-size samples ({cov[0]["states"]} states '
            f'each) z-scored with statistics pooled over the compared datasets, in {space} space; '
            f'value [95 % subsampling interval]. Definitions: docs/coverage.md.</p>'
            f'<table id="coverage-table"><tr>{head}</tr>{"".join(body)}</table>{nulls}{imgs}')


def results_section(tab: dict, random_ret: dict, curves: dict[str, bytes], agg: dict, agg_png: bytes | None) -> str:
    rows, cols, cells = tab["rows"], tab["cols"], tab["cells"]
    best = {c: max((np.mean(cells[(r, c)]) for r in rows if (r, c) in cells), default=None) for c in cols}
    head = "<tr><th>dataset</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>"
    body = []
    for r in rows:
        tds = []
        for c in cols:
            v = cells.get((r, c))
            if not v:
                tds.append("<td>–</td>")
                continue
            cls = ' class="best"' if np.mean(v) == best[c] else ""
            tds.append(f"<td{cls}>{np.mean(v):.1f} ± {np.std(v):.1f} <small>(n={len(v)})</small></td>")
        body.append(f'<tr class="dataset-row" data-dataset="{html.escape(r)}"><td>{html.escape(r)}</td>'
                    f'{"".join(tds)}</tr>')
    rnd = ", ".join(f"{html.escape(t)} {v['mean']:.1f} ± {v['std']:.1f}" for t, v in sorted(random_ret.items()))
    note = (f"{tab['incomplete_trials']} trial(s) did not reach their final step; their last evaluation is used. "
            if tab["incomplete_trials"] else "")
    episodes = next(iter(random_ret.values()))["episodes"] if random_ret else 0
    out = [f'<h2>Offline results (Table 1)</h2><p class="note">Final evaluation return, mean ± std over seeds; best '
           f'per column in bold. {note}Uniform random policy ({episodes} episodes, dashed line): {rnd}.</p>'
           f'<table id="results-table">{head}{"".join(body)}</table>',
           "<h3>Learning curves</h3>" + "".join(_img(png, f"learning curve {c}") for c, png in curves.items())]
    if agg["datasets"]:
        dropped = (f" {agg['dropped_runs']} run(s) beyond the smallest seed count were left out."
                   if agg.get("dropped_runs") else "")
        trs = "".join(f'<tr class="dataset-row" data-dataset="{html.escape(n)}"><td>{html.escape(n)}</td>'
                      f'<td>{_fmt(f["iqm"])}</td><td>{_fmt(f["mean"])}</td></tr>'
                      for n, f in sorted(agg["datasets"].items()))
        out.append(f'<h3>Aggregates (rliable)</h3><p class="note">Interquartile mean and mean of return / '
                   f'{RETURN_SCALE:g} over {len(agg["columns"])} task × learner column(s) and {agg["runs"]} '
                   f'seed(s) each, 95 % stratified-bootstrap intervals.{dropped}</p>'
                   f'<table id="aggregate-table"><tr><th>dataset</th><th>IQM</th><th>mean</th></tr>{trs}</table>'
                   + (_img(agg_png, "aggregate intervals") if agg_png else ""))
    return "".join(out)


def render(title: str, sections: list[str], inputs: list[str]) -> str:
    from bex.replay.schema import bex_version

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    srcs = ", ".join(f"<code>{html.escape(s)}</code>" for s in inputs)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>'
            f'<p class="note">bex {html.escape(bex_version())}, {stamp}. Inputs: {srcs}.</p>'
            + "".join(sections) + "</body></html>\n")


def build_report(paths: Sequence[str | Path], out: str | Path, cov_cfg: CoverageConfig | None = None,
                 figure: str = "shannon", with_coverage: bool = True, random_episodes: int = 5,
                 progress: Reporter | None = None) -> dict:
    """Write the report page to ``out``; returns a summary (what the page holds)."""
    from .coverage import coverage, load_state_sets

    cov_cfg = cov_cfg or CoverageConfig()
    out = Path(out)
    if out.suffix not in (".html", ".htm"):
        raise ValueError(f"--out {str(out)!r} must end in .html")
    if out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a directory; give an .html file path")
    if figure not in figure_names(cov_cfg):
        raise ValueError(f"unknown --figure {figure!r}; allowed: {', '.join(figure_names(cov_cfg))}")
    inp = classify(paths)
    if len(inp.sweeps) > 1:
        raise ValueError(f"one sweep per report; got {len(inp.sweeps)}: {[str(s) for s in inp.sweeps]}")
    tick = report(progress)
    cov_rows: list[dict] = []
    maps: dict[str, bytes] = {}
    sections: list[str] = []
    summary: dict = {"out": str(out), "datasets": [], "plots": 0}
    tab = None

    for d in inp.coverage_dirs:
        cj = read_coverage_json(d / "coverage.json")
        cov_rows += cj["datasets"]
        for m in ("tsne", "phate"):
            if (d / f"{m}.png").is_file():
                maps[f"{m} ({d.name})"] = (d / f"{m}.png").read_bytes()
    if inp.datasets:
        import tempfile

        sets = load_state_sets(inp.datasets, cov_cfg.space, progress=tick)
        with tempfile.TemporaryDirectory() as tmp:
            cov_rows += coverage(sets, cov_cfg, progress=tick, out_dir=tmp)
            for m in ("tsne", "phate"):
                if (Path(tmp) / f"{m}.png").is_file():
                    maps[f"{m} (datasets)"] = (Path(tmp) / f"{m}.png").read_bytes()
    if inp.sweeps:
        run = inp.sweeps[0]
        trials = read_trials(run)
        tab = results_table(run)
        if with_coverage:
            cj = sweep_coverage(run, trials, cov_cfg, progress=tick)
            cov_rows += cj["datasets"]
            for m in ("tsne", "phate"):
                if (run / COVERAGE_DIR / f"{m}.png").is_file():
                    maps[f"{m} (sweep)"] = (run / COVERAGE_DIR / f"{m}.png").read_bytes()
    if cov_rows:
        sections.append(coverage_section(cov_rows, maps))
        summary["datasets"] += [r["dataset"] for r in cov_rows]
        summary["plots"] += len(maps)
    if tab is not None:
        tasks = sorted({c.split(" ", 1)[0] for c in tab["cols"]})
        tick(Progress("random policy", 0, len(tasks)))
        random_ret = {}
        for i, t in enumerate(tasks):
            random_ret.update(random_policy_returns([t], random_episodes))
            tick(Progress("random policy", i + 1, len(tasks)))
        curves = curve_pngs(tab["curves"], {t: v["mean"] for t, v in random_ret.items()})
        tick(Progress("rliable", 0, 1))
        agg = aggregates(tab)
        tick(Progress("rliable", 1, 1))
        agg_png = aggregate_png(agg) if agg["datasets"] else None
        sections.append(results_section(tab, random_ret, curves, agg, agg_png))
        summary.update(results_rows=tab["rows"], random_policy=random_ret,
                       aggregates=agg["datasets"], plots=summary["plots"] + len(curves) + bool(agg_png))
        by_name = {r["dataset"]: r for r in cov_rows}
        pts = []
        for r in tab["rows"]:
            f = by_name.get(r, {}).get(figure)
            vals = [np.mean(v) for (row, _), v in tab["cells"].items() if row == r]
            if isinstance(f, dict) and f.get("value") is not None and vals:
                pts.append((r, f["value"], float(np.mean(vals)) / RETURN_SCALE))
        if pts:
            corr = rank_correlation([p[1] for p in pts], [p[2] for p in pts])
            summary["rank_correlation"] = {"figure": figure, **corr}
            rho = ("needs at least 3 datasets" if corr["rho"] is None
                   else f"{corr['rho']:.2f}, 95 % bootstrap interval [{corr['lo']:.2f}, {corr['hi']:.2f}]")
            sections.append(f'<h2>Coverage against return</h2><p class="note">Per dataset: {html.escape(figure)} '
                            f'(coverage table) against the mean of return / {RETURN_SCALE:g} over all columns. '
                            f'Spearman rank correlation: {rho} ({corr["n"]} datasets; the interval resamples '
                            f'datasets).</p>' + _img(scatter_png(pts, figure, corr), "coverage against return"))
            summary["plots"] += 1
    if not sections:
        raise ValueError("nothing to report: the inputs hold no coverage and no trial results")
    page = render("bex report", sections, [str(p) for p in paths])
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, page.encode())
    summary["bytes"] = len(page)
    return summary
