"""``bex report``: one self-contained static HTML page comparing datasets.

Inputs (any mix): a Tune experiment directory of ``bex sweep`` (a *sweep*), an
output directory of ``bex coverage`` (holding ``coverage.json``), or bex
datasets / partitions (their coverage is computed).  The page holds:

* **Coverage**: the coverage table (every figure ``value [lo, hi]``, see
  :mod:`bex.analysis.coverage`) and the shared t-SNE/PHATE maps.  For a sweep, the
  coverage of each results row (the union of the dataset selections its trials
  trained on) is computed once and cached in ``RUN/coverage/`` (reused while the
  coverage settings and the selections are unchanged).
* For a sweep, everything :func:`bex.analysis.analyze.analyze` derives from its
  ``trials.csv`` (written into the sweep): **Table 1** with the best of each
  column and the cells below it beyond noise marked, the **primary claims**
  with their verdicts, intervals and minimum detectable differences, learning
  curves as small multiples per dataset family with the random policy's
  reference return (:mod:`bex.analysis.units`) as a dashed line, and the
  **aggregates**: per task the IQM of the normalised scores, then their mean,
  with 95 % stratified-bootstrap intervals (every task weighs the same).
* **Coverage against return** (the BE paper's open question 3): per dataset, a
  coverage figure (``--figure``, Shannon by default) against the mean normalised
  score over all columns, with Spearman's rank correlation and a 95 % bootstrap
  interval over datasets (fewer than 3 datasets: no correlation).

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

from bex.core.progress import Progress, Reporter, report
from bex.replay import atomic_write_bytes

from .analyze import footnotes, short
from .coverage import CoverageConfig, figure_names, null_figures_note
from .results import curve_pngs, read_trials, sweep_rows
from .trials import curves

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


def aggregate_png(agg: dict, learner: str) -> bytes:
    """Interval plot of one learner's aggregate per dataset (rliable's style: point and 95 % interval)."""
    plt = _pyplot()
    names = sorted(agg["datasets"], key=lambda n: agg["datasets"][n]["value"])
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(names) + 1.4))
    for i, n in enumerate(names):
        f = agg["datasets"][n]
        ax.plot([f["lo"], f["hi"]], [i, i], color="tab:blue", lw=6, alpha=0.4, solid_capstyle="butt")
        ax.plot([f["value"]], [i], "k|", ms=14)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel(f"mean over {len(agg['tasks'])} task(s) of the per-task IQM (0 = random policy, 1 = 1000)")
    ax.set_title(short("x " + learner).split(" ", 1)[1], fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return _fig_png(fig)


def scatter_png(points: list[tuple[str, float, float]], figure: str, corr: dict) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.8))
    for name, x, y in points:
        ax.scatter([x], [y], s=25)
        ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(f"coverage: {figure}")
    ax.set_ylabel("mean normalised score")
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
td.below{color:#888}
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


def coverage_note(cov: list[dict], standardiser: str = "pooled") -> str:
    """How the coverage rows were standardised and what their intervals are over: a ``bex coverage`` row's is a
    subsampling interval; a row combined over shards (``collections`` ≥ 2) is a t interval over collection seeds."""
    z = ("z-scored with the domain's fixed reference (the states of uniform random actions), the same in every "
         "call" if standardiser == "fixed" else "z-scored with statistics pooled over the compared datasets")
    n = max((r.get("collections") or 1) for r in cov)
    interval = (f"value: the mean over {n} collection seeds (shards) [95 % t interval over them]; a dataset with "
                f"one collection keeps its subsampling interval" if n > 1 else "value [95 % subsampling interval]")
    return (f"k-NN figures of equal-size samples ({cov[0]['states']} states each) {z}, in "
            f"{cov[0].get('space', '?')} space; {interval}")


def coverage_section(cov: list[dict], maps: dict[str, bytes], standardiser: str = "pooled") -> str:
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
    note = null_figures_note(cov)
    nulls = f'<p class="note">–: {html.escape(note)}.</p>' if note else ""
    return (f'<h2>Coverage</h2><p class="note">{html.escape(coverage_note(cov, standardiser))}. Definitions: '
            f'docs/coverage.md.</p>'
            f'<table id="coverage-table"><tr>{head}</tr>{"".join(body)}</table>{nulls}{imgs}')


def results_section(res: dict, curve_png: dict[str, bytes], agg_png: dict[str, bytes]) -> str:
    """Table 1 with its marks, the primary claims, learning curves and aggregates of an analysis."""
    t1 = res["table"]
    head = "<tr><th>dataset</th>" + "".join(f"<th>{html.escape(short(c))}</th>" for c in t1["cols"]) + "</tr>"
    body = []
    for r in t1["rows"]:
        tds = []
        for c in t1["cols"]:
            cell = t1["cells"].get(f"{r}\t{c}")
            if cell is None:
                tds.append("<td>–</td>")
                continue
            sd = "–" if cell["sd"] is None or math.isnan(cell["sd"]) else f"{cell['sd']:.1f}"
            cls = f' class="{cell["mark"]}"' if cell["mark"] else ""
            tail = " ▽" if cell["mark"] == "below" else ""
            tds.append(f"<td{cls}>{cell['mean']:.1f} ± {sd} <small>(n={cell['n']})</small>{tail}</td>")
        body.append(f'<tr class="dataset-row" data-dataset="{html.escape(r)}"><td>{html.escape(r)}</td>'
                    f'{"".join(tds)}</tr>')
    rnd = ", ".join(f"{html.escape(t)} {v:.1f}" for t, v in sorted(res["random_policy"].items()))
    note = (f"{res['incomplete_trials']} trial(s) did not reach their final step; their last evaluations are used. "
            if res["incomplete_trials"] else "")
    feet = "".join(f"<br>{html.escape(f)}" for f in footnotes(t1["cols"]))
    out = [f'<h2>Offline results (Table 1)</h2><p class="note">Score of a trial: {html.escape(res["score"])}; '
           f'cells: mean ± sample SD over runs (n). Bold: the best mean of the column; ▽ (grey): below the best '
           f'beyond noise (Welch 95 % interval of the difference below 0); unmarked cells are within noise of the '
           f'best. {note}Random policy (dashed line): {rnd}.{feet}</p>'
           f'<table id="results-table">{head}{"".join(body)}</table>']
    prim = [c for c in res["claims"] if c.get("primary")]
    if prim:
        trs = "".join(
            f"<tr><td>{html.escape(c['claim'])}</td><td>{c['value']:+.3f}</td><td>{_interval(c['adjusted'])}"
            f"</td><td><b>{html.escape(c['verdict'])}</b></td><td>{_num(c['mdd'])}</td></tr>" for c in prim)
        out.append(f'<h3>Primary claims</h3><p class="note">Pooled over tasks, {html.escape(res["unit"])}; '
                   f'Holm over the {len(prim)} claim(s) at family-wise error {res["config"]["alpha"]:g}; the '
                   f'interval is at the level of the Holm step that decided the claim; MDD: smallest difference '
                   f'detectable with 80 % power. analysis.md has the per-task differences and the exploratory '
                   f'comparisons.</p><table id="claims-table"><tr><th>claim</th><th>difference</th>'
                   f'<th>adjusted interval</th><th>verdict</th><th>MDD</th></tr>{trs}</table>')
    out.append("<h3>Learning curves</h3>" + "".join(_img(png, f"learning curve {c}") for c, png in curve_png.items()))
    for lr, agg in res["aggregates"].items():
        trs = "".join(f'<tr class="dataset-row" data-dataset="{html.escape(n)}"><td>{html.escape(n)}</td>'
                      f'<td>{_fmt(f)}</td></tr>' for n, f in sorted(agg["datasets"].items()))
        out.append(f'<h3>Aggregates ({html.escape(short("x " + lr).split(" ", 1)[1])})</h3><p class="note">Per '
                   f'task the interquartile mean of the normalised scores, then their mean over '
                   f'{len(agg["tasks"])} task(s) (each task weighs the same); 95 % stratified-bootstrap intervals '
                   f'over runs.</p><table id="aggregate-table"><tr><th>dataset</th><th>mean of per-task IQM</th>'
                   f'</tr>{trs}</table>' + (_img(agg_png[lr], f"aggregate intervals {lr}") if lr in agg_png else ""))
    return "".join(out)


def _num(x) -> str:
    return "–" if x is None else f"{x:.3f}"


def _interval(a: dict) -> str:
    if a.get("lo") is None:
        return "–"
    return f"[{a['lo']:+.3f}, {a['hi']:+.3f}] <small>({a['level']:.4f})</small>"


def render(title: str, sections: list[str], inputs: list[str]) -> str:
    from bex.replay.schema import bex_version

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    srcs = ", ".join(f"<code>{html.escape(s)}</code>" for s in inputs)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>'
            f'<p class="note">bex {html.escape(bex_version())}, {stamp}. Inputs: {srcs}.</p>'
            + "".join(sections) + "</body></html>\n")


def analysis_sections(res: dict, rows: list[dict], curve_png: dict[str, bytes] | None = None) -> tuple[list[str], dict]:
    """The page's sections from an analysis (:func:`bex.analysis.analyze.analyze`) of the trials' ``rows``: Table 1,
    the claims, learning curves, aggregates and coverage against return; and what they hold (the summary).
    ``curve_png``: the learning curves when the caller has drawn them (:func:`.results.curve_pngs`)."""
    curve_png = curve_pngs(curves(rows), res["random_policy"]) if curve_png is None else curve_png
    agg_png = {lr: aggregate_png(agg, lr) for lr, agg in res["aggregates"].items()}
    sections = [results_section(res, curve_png, agg_png)]
    found = dict(results_rows=res["table"]["rows"], random_policy=res["random_policy"],
                 aggregates={lr: {d: {k: a[k] for k in ("value", "lo", "hi")} for d, a in agg["datasets"].items()}
                             for lr, agg in res["aggregates"].items()},
                 verdicts={c["claim"]: c["verdict"] for c in res["claims"] if c.get("primary")},
                 plots=len(curve_png) + len(agg_png))
    corr = res.get("rank_correlation")
    if corr:
        found["rank_correlation"] = {k: v for k, v in corr.items() if k != "points"}
        rho = ("needs at least 3 datasets" if corr["rho"] is None
               else f"{corr['rho']:.2f}, 95 % bootstrap interval [{corr['lo']:.2f}, {corr['hi']:.2f}]")
        sections.append(f'<h2>Coverage against return</h2><p class="note">Per dataset: '
                        f'{html.escape(corr["figure"])} (coverage table) against the mean normalised score over '
                        f'all columns. Spearman rank correlation: {rho} ({corr["n"]} datasets; the interval '
                        f'resamples datasets).</p>'
                        + _img(scatter_png(corr["points"], corr["figure"], corr), "coverage against return"))
        found["plots"] += 1
    return sections, found


def analysis_page(res: dict, rows: list[dict], cov_rows: list[dict], out: str | Path, inputs: Sequence[str],
                  standardiser: str = "pooled", curve_png: dict[str, bytes] | None = None) -> dict:
    """``bex analyze``'s page (``report.html`` beside ``analysis.md``): the same sections as :func:`build_report`
    from trials.csv files alone, several shards' included, with their combined coverage table (no maps: those need
    the datasets).  Written atomically; returns what it holds."""
    sections = [coverage_section(cov_rows, {}, standardiser)] if cov_rows else []
    more, found = analysis_sections(res, rows, curve_png)
    page = render("bex analyze", sections + more, list(inputs))
    atomic_write_bytes(Path(out), page.encode())
    return {"out": str(out), "datasets": [r["dataset"] for r in cov_rows], **found, "bytes": len(page)}


def build_report(paths: Sequence[str | Path], out: str | Path, cov_cfg: CoverageConfig | None = None,
                 figure: str = "shannon", with_coverage: bool = True, progress: Reporter | None = None,
                 analysis_cfg=None, prepared: dict | None = None) -> dict:
    """Write the report page to ``out``; returns a summary (what the page holds).  ``prepared``: a sweep's
    ``rows`` (``trials.csv``), their ``analysis``, its ``coverage`` (:func:`sweep_coverage`) and, optionally, the
    drawn learning curves ``curve_png`` when the caller has them (``bex replicate``), so that nothing is derived,
    read or drawn twice."""
    from .analyze import AnalysisConfig, analyze
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
    res = rows = None

    standardisers = {cov_cfg.standardiser} if inp.datasets else set()
    for d in inp.coverage_dirs:
        cj = read_coverage_json(d / "coverage.json")
        cov_rows += cj["datasets"]
        standardisers.add(cj.get("config", {}).get("standardiser", "pooled"))
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
        given = prepared or {}
        trials = None if "coverage" in given and "rows" in given else read_trials(run)
        if with_coverage:
            cj = given.get("coverage") or sweep_coverage(run, trials, cov_cfg, progress=tick)
            cov_rows += cj["datasets"]
            standardisers.add(cj.get("config", {}).get("standardiser", "pooled"))
            for m in ("tsne", "phate"):
                if (run / COVERAGE_DIR / f"{m}.png").is_file():
                    maps[f"{m} (sweep)"] = (run / COVERAGE_DIR / f"{m}.png").read_bytes()
        if prepared is not None:
            rows, res = prepared["rows"], prepared["analysis"]
        else:
            rows = sweep_rows(run, trials)
            tick(Progress("analysis", 0, 1))
            cfg = analysis_cfg or AnalysisConfig(figure=figure)
            res = analyze(rows, cfg, cov_rows)
            tick(Progress("analysis", 1, 1))
    if cov_rows:
        if len(standardisers) > 1:
            raise ValueError(f"the coverage inputs were standardised differently ({sorted(standardisers)}): their "
                             f"figures are not comparable; recompute them with one standardiser")
        sections.append(coverage_section(cov_rows, maps, standardisers.pop()))
        summary["datasets"] += [r["dataset"] for r in cov_rows]
        summary["plots"] += len(maps)
    if res is not None:
        more, found = analysis_sections(res, rows, (prepared or {}).get("curve_png"))
        sections += more
        summary.update(found, plots=summary["plots"] + found["plots"])
    if not sections:
        raise ValueError("nothing to report: the inputs hold no coverage and no trial results")
    page = render("bex report", sections, [str(p) for p in paths])
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, page.encode())
    summary["bytes"] = len(page)
    return summary
