"""``bex analyze``: Table 1, the primary claims' verdicts, the exploratory comparisons, the aggregates and the
open questions, re-derived from per-trial tables alone (``trials.csv``, :mod:`.trials`) and, optionally, a
coverage file.

``bex replicate``, ``bex results`` and ``bex report`` derive their tables through :func:`analyze`, once per run:
Table 1 of a sweep is :func:`analyze`'s table, its verdicts are these.  Everything is arithmetic on the trial
scores; nothing is tuned.

* **Score** of a trial: the mean of its last ``score_last`` evaluations (:func:`.trials.scores`).
* **Table 1**: per dataset and column (task × learner), the mean ± sample SD (ddof 1) of the cell's units (n
  given), raw returns.  The best mean of a column is bold; a cell whose Welch 95 % interval of its difference
  from the best lies below 0 is marked ▽ (below the best beyond noise); an unmarked cell is within noise of the
  best: 134.9 against 133.2 is not a result.
* **Claims**: :mod:`.claims` (primary: Holm over the family, verdicts, power; exploratory: intervals only).
* **Aggregates**: per dataset and learner, each task's IQM of the normalised scores, then their mean (every
  task weighs the same), with a stratified bootstrap over runs (:func:`.stats.aggregate`).
* **Open question 3** (does coverage predict return?): Spearman's ρ between a coverage figure and the mean
  normalised score over every column, with a bootstrap interval over datasets.  **Open question 4** (does a
  pre-training statistic pick a good α?): :func:`.claims.statistic_picks_alpha`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from bex.core import ConfigBase, param

from .claims import (
    ClaimSpec,
    Table,
    default_claims,
    exploratory_coverage,
    exploratory_returns,
    finite_figure,
    primary_claims,
    statistic_picks_alpha,
)
from .stats import Summary, aggregate, pooled_difference
from .trials import cells, scores
from .units import UNIT, normalised, random_return


@dataclass(frozen=True)
class AnalysisConfig(ConfigBase):
    """How trial tables are analysed (a replication config's ``analysis:`` section; ``bex analyze`` options)."""

    score_last: int = param(3, "a trial's score: the mean of its last K evaluations", lo=1)
    alpha: float = param(0.05, "family-wise error of the primary claims", lo=0, hi=1, lo_open=True, hi_open=True)
    target: float = param(0.05, "the difference (declared unit) the runs per cell are planned for", lo=0,
                          lo_open=True)
    claims: list = param(doc="primary claims, [{a: be-recent/0.5, b: rnd}, ...]; empty: BE α 0.5 against "
                         "Shannon, RND and SMM in each k-NN mode", default_factory=list)
    max_step: int | None = param(None, "evaluations after this gradient step are left out (a longer pilot's trials "
                                 "count as trials of the main length)", lo=1)
    figure: str = param("shannon", "the coverage figure of open question 3 and the coverage comparisons")
    volume: str = param("volume_cells", "the volume figure of the coverage comparisons")

    def specs(self, rows: Sequence[str]) -> list[ClaimSpec]:
        if not self.claims:
            return default_claims(rows)
        return [ClaimSpec.from_dict(c, where=f"analysis.claims[{i}]") for i, c in enumerate(self.claims)]


def mean_se(vals) -> tuple[float, float]:
    """Mean and standard error (ddof 1) of ``vals``, computed on values scaled to at most 1 in magnitude: BE
    coverage figures at α > 1 reach 1e200 and more, whose squares overflow float64."""
    x = np.asarray(vals, dtype=float)
    scale = float(np.max(np.abs(x))) or 1.0
    return float(np.mean(x / scale) * scale), float(np.std(x / scale, ddof=1) / np.sqrt(len(x)) * scale)


def table1(tab: Table) -> dict:
    """Table 1's cells (raw returns) with their marks (module docstring)."""
    cols = [(t, lr) for t in tab.tasks for lr in tab.learners
            if any(tab.values.get((r, t, lr)) for r in tab.rows)]
    out = {"rows": tab.rows, "cols": [f"{t} {lr}" for t, lr in cols], "cells": {}}
    for t, lr in cols:
        col = f"{t} {lr}"
        have = {r: Summary.of(tab.values[(r, t, lr)]) for r in tab.rows if tab.values.get((r, t, lr))}
        best = max(have, key=lambda r: have[r].mean)
        for r, s in have.items():
            mark = "best" if r == best else ""
            if r != best:
                d = pooled_difference([(s, have[best])])
                if d["hi"] is not None and d["hi"] < 0:
                    mark = "below"
            out["cells"][f"{r}\t{col}"] = {"mean": s.mean, "sd": s.sd, "n": s.n, "values": tab.values[(r, t, lr)],
                                           "mark": mark}
    return out


def table1_markdown(t1: dict, score_last: int, units: dict[str, str]) -> str:
    lines = ["| dataset | " + " | ".join(short(c) for c in t1["cols"]) + " |", "|---|" + "---|" * len(t1["cols"])]
    for r in t1["rows"]:
        line = [r]
        for c in t1["cols"]:
            cell = t1["cells"].get(f"{r}\t{c}")
            if cell is None:
                line.append("–")
                continue
            sd = "–" if math.isnan(cell["sd"]) else f"{cell['sd']:.1f}"
            s = f"{cell['mean']:.1f} ± {sd} (n={cell['n']})"
            line.append(f"**{s}**" if cell["mark"] == "best" else s + " ▽" if cell["mark"] == "below" else s)
        lines.append("| " + " | ".join(line) + " |")
    seeds = sorted(set(units.values()))
    lines += ["", f"Score of a trial: the mean return of its last {score_last} evaluation(s). Cells: mean ± sample "
              f"SD (ddof 1) over {' / '.join(u + 's' for u in seeds)} (n runs). **Bold**: the best mean of the "
              f"column; ▽: below the best beyond noise (Welch 95 % interval of the difference below 0, not "
              f"corrected for the number of cells); unmarked cells are within noise of the best."]
    if t1["cells"] and all(cell["n"] < 2 for cell in t1["cells"].values()):
        lines += ["", "One run per cell: no difference in this table can be told apart from noise."]
    notes = footnotes(t1["cols"])
    if notes:
        lines += [""] + notes
    return "\n".join(lines) + "\n"


def short(col: str) -> str:
    """A column label without its learner settings (they go in a footnote): ``walker_run td3*``."""
    task, learner = col.split(" ", 1)
    return f"{task} {learner.split('[', 1)[0]}{'*' if '[' in learner else ''}"


def footnotes(cols: Sequence[str]) -> list[str]:
    learners = sorted({c.split(" ", 1)[1] for c in cols if "[" in c})
    return [f"\\* {lr.split('[', 1)[0]}: {lr[lr.index('[') + 1:-1]}" for lr in learners]


def aggregates(tab: Table, reps: int = 2000) -> dict:
    """Per learner and dataset: per-task IQM of the normalised scores, then their mean (module docstring)."""
    out: dict = {}
    for lr in tab.learners:
        tasks = [t for t in tab.tasks if all(tab.values.get((r, t, lr)) for r in tab.rows)]
        if not tasks:
            continue
        out[lr] = {"tasks": tasks, "datasets": {
            r: aggregate({t: [normalised(x, t) for x in tab.values[(r, t, lr)]] for t in tasks}, reps=reps)
            for r in tab.rows}}
    return out


def rank_correlation(x: Sequence[float], y: Sequence[float], reps: int = 2000, seed: int = 0) -> dict:
    """Spearman's ρ of ``x`` and ``y`` with a 95 % percentile bootstrap interval over the pairs."""
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


def comparable_coverage(configs: Sequence[tuple[str, dict]]) -> str:
    """The standardiser of coverage files (``(path, its config)``) that :func:`combine_coverage` may combine, or
    a one-line ``ValueError``: files from several calls (shards) must use the fixed standardiser (a pooled one is
    relative to each call's datasets) and the same space and sample size.  No file: ``"pooled"``."""
    if not configs:
        return "pooled"
    first_path, first = configs[0]
    if len(configs) > 1:
        for path, c in configs:
            if c.get("standardiser", "pooled") != "fixed":
                raise ValueError(f"--coverage {path!r} has standardiser {c.get('standardiser', 'pooled')!r}; coverage "
                                 f"of several shards combines only with 'fixed' (coverage.standardiser: fixed)")
            for k in ("space", "max_states"):
                if c.get(k) != first.get(k):
                    raise ValueError(f"--coverage {path!r} has {k}={c.get(k)!r} but {first_path!r} has "
                                     f"{first.get(k)!r}: the figures are not comparable")
    return first.get("standardiser", "pooled")


def combine_coverage(files: Sequence[Sequence[dict]]) -> list[dict]:
    """Coverage rows of several ``coverage.json`` files (one per shard: one collection seed each) as one row
    per dataset: a figure present in two or more files becomes the mean over them with a 95 % t interval over
    the files (collection seeds are the unit); a dataset in one file keeps its own interval.  The files must
    share a fixed standardiser and sample size (a pooled one is relative to the datasets of each call)."""
    from scipy import stats as st

    by: dict[str, list[dict]] = {}
    for rows in files:
        for r in rows:
            by.setdefault(r["dataset"], []).append(r)
    out = []
    for name, rs in by.items():
        row = {"dataset": name, "states": rs[0].get("states"), "collections": len(rs),
               **{k: rs[0][k] for k in ("space", "domain", "dims") if k in rs[0]}}
        for k, v in rs[0].items():
            if not (isinstance(v, dict) and "value" in v):
                continue
            vals = [r[k]["value"] for r in rs if isinstance(r.get(k), dict) and r[k].get("value") is not None]
            if len(rs) == 1 or len(vals) < 2:
                row[k] = ({**v, "values": vals} if len(rs) == 1 else
                          {"value": None, "lo": None, "hi": None, "values": vals})
                continue
            m, se = mean_se(vals)
            q = float(st.t.ppf(0.975, len(vals) - 1))
            row[k] = {"value": m, "lo": m - q * se, "hi": m + q * se, "values": vals}
        out.append(row)
    return out


def data_versions(rows: Sequence[dict]) -> dict[str, dict[str, str]]:
    """The data (content fingerprint) each learner trained on, for every dataset and collection seed whose
    learners trained on *different* versions (``{"dataset@collection_seed": {learner: fingerprint}}``; a shard
    re-collected on another CPU for a second learner).  One learner's trials of one dataset and collection seed
    on two versions is a one-line error: a re-collection that differs is retrained, never mixed into the same
    cell (docs/replication.md).  Rows without a fingerprint (older files) are not checked."""
    by: dict[tuple[str, str], dict[str, set[str]]] = {}
    for r in rows:
        if r.get("fingerprint"):
            by.setdefault((r["dataset"], r["collection_seed"]), {}).setdefault(r["learner"], set()).add(
                r["fingerprint"])
    out = {}
    for (dataset, seed), per in sorted(by.items()):
        for learner, fps in sorted(per.items()):
            if len(fps) > 1:
                raise ValueError(f"{learner} trials of {dataset} (collection seed {seed or 'pooled'}) trained on "
                                 f"data with fingerprints {', '.join(sorted(fps))}: a re-collected dataset that "
                                 f"differs is retrained, not mixed; analyse one version")
        if len({f for fps in per.values() for f in fps}) > 1:
            out[f"{dataset}@{seed or 'pooled'}"] = {learner: next(iter(fps)) for learner, fps in sorted(per.items())}
    return out


def analyze(rows: Sequence[dict], cfg: AnalysisConfig | None = None, coverage_rows: Sequence[dict] = ()) -> dict:
    """Everything :mod:`.analyze` derives (module docstring) from ``trials.csv`` rows and coverage rows."""
    cfg = cfg or AnalysisConfig()
    versions = data_versions(rows)
    if cfg.max_step is not None:
        # a trial planned longer counts as complete when it reached max_step: its score is a main-length one
        rows = [{**r, "steps_planned": min(r["steps_planned"], cfg.max_step)}
                if isinstance(r.get("steps_planned"), int) else r for r in rows if r["step"] <= cfg.max_step]
        if not rows:
            raise ValueError(f"no evaluation at or before step max_step={cfg.max_step}")
    trial_scores = scores(rows, cfg.score_last)
    values, units = cells(trial_scores)
    tab = Table(values)
    t1 = table1(tab)
    specs = cfg.specs(tab.rows)
    unknown = sorted({x for s in specs if s.figure is None for x in (s.a, s.b)} - set(tab.rows))
    if unknown and cfg.claims:
        raise ValueError(f"analysis.claims name dataset row(s) {unknown} that the trials do not have; rows: "
                         f"{', '.join(tab.rows)}")
    cov = {r["dataset"]: r for r in coverage_rows}
    primary = primary_claims(tab, specs, cfg.alpha, cfg.target, cov)
    figures = [k for k in (coverage_rows[0] if coverage_rows else {}) if isinstance(coverage_rows[0][k], dict)
               and "value" in coverage_rows[0][k]]
    res = {
        "score": f"mean of the last {cfg.score_last} evaluation(s) of a trial",
        "unit": UNIT, "random_policy": {t: random_return(t) for t in tab.tasks},
        "units": units, "config": cfg.to_dict(), "table": t1,
        "incomplete_trials": sum(not s.complete for s in trial_scores), "trials": len(trial_scores),
        "data_versions": versions,
        "claims": primary + exploratory_returns(tab, primary)
        + exploratory_coverage(tab.rows, cov, [f for f in (cfg.figure, cfg.volume) if f in figures]),
        "aggregates": aggregates(tab),
        "ranks": {c: _ranks(t1, c) for c in t1["cols"]},
        "alpha_picks": {fam: statistic_picks_alpha(tab, cov, fam, figures) for fam in ("be", "be-recent")},
        "stability": stability(rows),
    }
    pts = [(r, cov[r][cfg.figure]["value"], float(np.mean([normalised(x, t) for (d, t, _), v in values.items()
                                                            if d == r for x in v])))
           for r in tab.rows if finite_figure(cov, r, cfg.figure)]
    res["rank_correlation"] = ({"figure": cfg.figure, "points": pts,
                                **rank_correlation([p[1] for p in pts], [p[2] for p in pts])} if pts else None)
    return res


def stability(rows: Sequence[dict]) -> list[dict]:
    """How stable evaluations are along training (the learning-length pilot): per task, learner and evaluation
    step, Spearman's ρ over all trials between the return at this evaluation and at the next, and the share of
    the variance of the returns at this step that lies between datasets (one-way: SS between / SS total)."""
    from scipy.stats import spearmanr

    by: dict[tuple, dict[tuple, dict[int, float]]] = {}
    for r in rows:
        if r["learner"].startswith("baseline["):
            continue
        trial = (r["dataset"], r["collection_seed"], r["seed"])
        by.setdefault((r["task"], r["learner"]), {}).setdefault(trial, {})[r["step"]] = r["return_mean"]
    out = []
    for (task, learner), trials in sorted(by.items()):
        steps = sorted({s for t in trials.values() for s in t})
        for s, nxt in zip(steps, steps[1:] + [None]):
            have = [(k, t[s]) for k, t in trials.items() if s in t]
            if len(have) < 3:
                continue
            x = np.array([v for _, v in have])
            groups: dict[str, list[float]] = {}
            for (dataset, _, _), v in have:
                groups.setdefault(dataset, []).append(v)
            ss_total = float(((x - x.mean()) ** 2).sum())
            ss_between = float(sum(len(g) * (np.mean(g) - x.mean()) ** 2 for g in groups.values()))
            row = {"task": task, "learner": learner, "step": s, "trials": len(have),
                   "between_share": ss_between / ss_total if ss_total > 0 else None, "rho_next": None}
            pairs = [(t[s], t[nxt]) for t in trials.values() if nxt is not None and s in t and nxt in t]
            if len(pairs) >= 3 and np.ptp([a for a, _ in pairs]) > 0 and np.ptp([b for _, b in pairs]) > 0:
                row["rho_next"] = float(spearmanr([a for a, _ in pairs], [b for _, b in pairs]).statistic)
            out.append(row)
    return out


def _ranks(t1: dict, col: str) -> dict[str, int]:
    means = {r: t1["cells"][f"{r}\t{col}"]["mean"] for r in t1["rows"] if f"{r}\t{col}" in t1["cells"]}
    return {r: 1 + sum(m > means[r] for m in means.values()) for r in means}


def _fmt_i(lo, hi) -> str:
    return "no interval (fewer than 2 runs)" if lo is None else f"[{lo:+.3f}, {hi:+.3f}]"


def analysis_markdown(res: dict) -> str:
    """``analysis.md``: Table 1, the primary claims, power, the exploratory findings, aggregates, Q3, Q4."""
    cfg = res["config"]
    prim = [c for c in res["claims"] if c.get("primary")]
    lines = ["# Analysis", "", f"Score: {res['score']}. Unit of every difference and aggregate: {res['unit']} "
             "(random-policy returns: " + ", ".join(f"{t} {v:.1f}" for t, v in res["random_policy"].items())
             + "). Rules: `bex.analysis.claims` and docs/replication.md.", "",
             "## Table 1 (raw returns)", "", table1_markdown(res["table"], cfg["score_last"], res["units"])]
    if res["incomplete_trials"]:
        lines += [f"{res['incomplete_trials']} of {res['trials']} trial(s) did not reach their final step; their "
                  "last evaluations are used.", ""]
    if res.get("data_versions"):
        lines += ["Learners trained on different versions of the same dataset and collection seed (a "
                  "re-collection on another machine; each claim compares one learner's trials, so no cell mixes "
                  "versions):", ""] + [f"- {k}: " + ", ".join(f"{learner} `{fp}`" for learner, fp in v.items())
                                       for k, v in res["data_versions"].items()] + [""]
    lines += ["## Primary claims", "",
              f"{len(prim)} primary claim(s), one family: Holm's step-down at family-wise error "
              f"{cfg['alpha']:g}. Held: the adjusted interval lies above 0; not held: below 0; otherwise "
              f"inconclusive. MDD: the smallest true difference found with 80 % power at the Bonferroni level "
              f"{cfg['alpha']:g}/{max(len(prim), 1)}; runs: per dataset and task to detect {cfg['target']:g}.", ""]
    if prim:
        lines += ["| claim | difference | adjusted interval (level) | 95 % interval | verdict | MDD | runs now | "
                  f"runs for {cfg['target']:g} |", "|---|---|---|---|---|---|---|---|"]
        for c in prim:
            adj = c["adjusted"]
            mdd_ = "–" if c["mdd"] is None else f"{c['mdd']:.3f}"
            need = c["seeds_for_target"]["runs"]
            lines.append(f"| {c['claim']} | {c['value']:+.3f} | {_fmt_i(adj['lo'], adj['hi'])} ({adj['level']:.4f}) "
                         f"| {_fmt_i(c['interval_95']['lo'], c['interval_95']['hi'])} | **{c['verdict']}** | {mdd_} "
                         f"| {c['runs']} | {'> 10000' if need is None else need} |")
        lines += ["", "Per task (exploratory, 95 %):", ""]
        for c in prim:
            lines.append(f"- {c['a']} − {c['b']} ({c['learner'] or 'coverage'}): " + "; ".join(
                f"{p['task']} {p['value']:+.3f} {_fmt_i(p['lo'], p['hi'])}" for p in c["per_task"]))
    else:
        lines.append("No primary claim has data on both of its datasets.")
    expl = [c for c in res["claims"] if not c.get("primary")]
    ret = [c for c in expl if "value" in c]
    if ret:
        lines += ["", "## Exploratory comparisons of returns (no verdicts)", "",
                  "Pooled over tasks in the declared unit; 95 % Welch intervals unless a Bonferroni level is "
                  "given; none is corrected for the number of comparisons below.", "",
                  "| comparison | difference | interval |", "|---|---|---|"]
        for c in ret:
            lvl = f" ({c['level']:.3f})" if "level" in c else ""
            lines.append(f"| {c['claim']} | {c['value']:+.3f} | {_fmt_i(c['lo'], c['hi'])}{lvl} |")
    cov = [c for c in expl if "a_figure" in c]
    if cov:
        lines += ["", "## Exploratory coverage comparisons", "", "| comparison | A | B | intervals |",
                  "|---|---|---|---|"]
        for c in cov:
            fa, fb = c["a_figure"], c["b_figure"]
            lines.append(f"| {c['claim']} | {fa['value']:.3g} [{fa['lo']:.3g}, {fa['hi']:.3g}] | "
                         f"{fb['value']:.3g} [{fb['lo']:.3g}, {fb['hi']:.3g}] | A {c['intervals']} |")
    for lr, agg in res["aggregates"].items():
        lines += ["", f"## Aggregates, {short('x ' + lr).split(' ', 1)[1]} (exploratory)", "",
                  f"Per task the IQM of the normalised scores, then the mean over {len(agg['tasks'])} task(s); 95 % "
                  "stratified bootstrap over runs.", "", "| dataset | mean of per-task IQM | "
                  + " | ".join(agg["tasks"]) + " |", "|---|---|" + "---|" * len(agg["tasks"])]
        for r, a in sorted(agg["datasets"].items(), key=lambda kv: -kv[1]["value"]):
            lines.append(f"| {r} | {a['value']:.3f} [{a['lo']:.3f}, {a['hi']:.3f}] | "
                         + " | ".join(f"{a['per_task'][t]:.3f}" for t in agg["tasks"]) + " |")
    corr = res.get("rank_correlation")
    lines += ["", "## Open question 3: does coverage predict return? (exploratory)", ""]
    if corr and corr.get("rho") is not None:
        lines.append(f"Spearman's ρ of {corr['figure']} and the mean normalised score over {corr['n']} datasets: "
                     f"{corr['rho']:.2f} [{corr['lo']:.2f}, {corr['hi']:.2f}] (95 % bootstrap over datasets).")
    else:
        lines.append("Not computed (no coverage file, or fewer than 3 datasets with the figure).")
    picks = res["alpha_picks"]
    lines += ["", "## Open question 4: does a pre-training statistic pick a good α? (exploratory)", ""]
    rows = [p for fam in picks.values() for p in fam]
    if rows:
        lines += ["| BE mode | figure | α it picks | agrees with the best-scoring α in |", "|---|---|---|---|"]
        for fam, ps in picks.items():
            for fig in dict.fromkeys(p["figure"] for p in ps):
                mine = [p for p in ps if p["figure"] == fig]
                lines.append(f"| {fam} | {fig} | {mine[0]['picked']:g} | {sum(p['agree'] for p in mine)}/"
                             f"{len(mine)} task × learner cells |")
    else:
        lines.append("Not computed (no coverage file, or fewer than two α of a BE family).")
    stab = [s for s in res.get("stability", []) if s["rho_next"] is not None]
    if stab:
        lines += ["", "## Stability of the evaluations along training (exploratory)", "",
                  "Per evaluation step: Spearman's ρ over all trials between this evaluation's return and the "
                  "next one's, and the share of the returns' variance that lies between datasets. A score is "
                  "worth taking where ρ is high and the between-dataset share is what a comparison needs.", "",
                  "| task | learner | step | trials | ρ with the next evaluation | between-dataset share |",
                  "|---|---|---|---|---|---|"]
        for s in stab:
            share = "–" if s["between_share"] is None else f"{s['between_share']:.2f}"
            lines.append(f"| {s['task']} | {short('x ' + s['learner']).split(' ', 1)[1]} | {s['step']} | "
                         f"{s['trials']} | {s['rho_next']:.2f} | {share} |")
    return "\n".join(lines) + "\n"


def finite_json(x):
    """``x`` with every non-finite float as None (strict JSON)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: finite_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite_json(v) for v in x]
    return x


def write_analysis(res: dict, out_dir: str | Path, stem: str = "analysis") -> dict[str, str]:
    """``<stem>.md`` and ``<stem>.json`` (strict JSON; ``claims``: each with ``claim``, ``primary`` and, for
    primary claims, ``verdict``) under ``out_dir``, atomically."""
    from bex.replay import atomic_write_bytes

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
    atomic_write_bytes(md, analysis_markdown(res).encode())
    atomic_write_bytes(js, json.dumps(finite_json(res), indent=1, default=str, allow_nan=False).encode())
    return {"md": str(md), "json": str(js)}


__all__ = ["AnalysisConfig", "analyze", "combine_coverage", "comparable_coverage", "stability",
           "analysis_markdown", "table1", "table1_markdown", "aggregates",
           "rank_correlation", "write_analysis", "short", "footnotes"]
