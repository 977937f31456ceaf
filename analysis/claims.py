"""The BE paper's claims checked on a replication's results: ranks, pairwise comparisons, verdicts.

Input: the results table of a sweep (:func:`bex.analysis.results.results_table`:
rows = datasets labelled ``objective[/param]``, e.g. ``be/0.5``, ``be-recent/5.0``,
``shannon``, ``rnd``; columns = task × learner; cells = final returns, one per
seed) and the coverage rows of the same datasets (``bex coverage`` figures with
intervals).  Everything here is arithmetic on those numbers; nothing is tuned.

Verdict rules (stated in docs/replication.md, applied mechanically):

* a return claim "A beats B in at least a fraction p of the cells" compares, in
  each cell, the best row of family A with the best row of family B (by mean,
  as the paper's bold entries do).  The pooled difference is the mean over cells
  of (A − B)/1000 with a 95 % stratified bootstrap interval (strata = cells,
  seeds resampled within each row of a cell, the rows fixed).
  With fewer than 2 runs in a compared cell there is no spread to judge by:
  *inconclusive*.  *held*: A wins ≥ p of the cells and the interval lies above 0;
  *not held*: A wins < p of the cells and in at least one lost cell the loss
  exceeds twice its standard error, or the interval lies below 0;
  otherwise *inconclusive at this scale*.
* the best-of-family pick favours the family with more rows (three batch-mode
  BE α against one Shannon row): with equally good datasets its pooled
  difference is biased upward.  Each BE return claim is therefore repeated with
  BE at one α fixed before looking at returns (``fixed_alpha``, 0.5 — the
  paper's suggested setting), no pick, same rules; a claim that holds only with
  the pick rests on choosing α per cell after the fact.
* a coverage claim "A covers more than B" compares the figure's value and 95 %
  interval of the best row of A with that of the best row of B: *held* when
  A's interval lies above B's, *not held* when below, otherwise inconclusive.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

RETURN_SCALE = 1000.0


def family(row: str) -> str:
    """``be/0.5`` -> ``be``; ``be-recent/5.0`` -> ``be-recent``; ``rnd`` -> ``rnd``."""
    return row.split("/", 1)[0]


def rows_of(tab: dict, fam: str) -> list[str]:
    return [r for r in tab["rows"] if family(r) == fam]


def full_columns(tab: dict, rows: Sequence[str]) -> list[str]:
    """The columns in which every one of ``rows`` has at least one run."""
    return [c for c in tab["cols"] if all(tab["cells"].get((r, c)) for r in rows)]


def ranks(tab: dict) -> dict[str, dict[str, int]]:
    """Per column, each row's rank by mean return (1 = best; ties share the better rank)."""
    out = {}
    for c in tab["cols"]:
        means = {r: float(np.mean(tab["cells"][(r, c)])) for r in tab["rows"] if tab["cells"].get((r, c))}
        out[c] = {r: 1 + sum(m > means[r] for m in means.values()) for r in means}
    return out


def _best(tab: dict, rows: Sequence[str], col: str) -> str:
    return max(rows, key=lambda r: float(np.mean(tab["cells"][(r, col)])))


def compare(tab: dict, a_rows: Sequence[str], b_rows: Sequence[str], reps: int = 2000, seed: int = 0) -> dict:
    """Family A against family B, cell by cell (best row of each per cell) and pooled over cells."""
    cols = full_columns(tab, list(a_rows) + list(b_rows))
    rng = np.random.default_rng(seed)
    cells, boot = [], np.zeros(reps)
    for c in cols:
        ra, rb = _best(tab, a_rows, c), _best(tab, b_rows, c)
        xa = np.asarray(tab["cells"][(ra, c)], float) / RETURN_SCALE
        xb = np.asarray(tab["cells"][(rb, c)], float) / RETURN_SCALE
        diff = xa.mean() - xb.mean()
        se = math.sqrt((xa.var(ddof=1) / len(xa) if len(xa) > 1 else 0.0)
                       + (xb.var(ddof=1) / len(xb) if len(xb) > 1 else 0.0))
        cells.append({"column": c, "a": ra, "b": rb, "diff": float(diff), "se": se, "win": bool(diff > 0),
                      "runs": min(len(xa), len(xb))})
        boot += (rng.choice(xa, (reps, len(xa))).mean(1) - rng.choice(xb, (reps, len(xb))).mean(1))
    if not cols:
        return {"cells": [], "wins": 0, "n": 0, "pooled": None}
    boot /= len(cols)
    pooled = {"value": float(np.mean([x["diff"] for x in cells])), "lo": float(np.percentile(boot, 2.5)),
              "hi": float(np.percentile(boot, 97.5))}
    return {"cells": cells, "wins": sum(x["win"] for x in cells), "n": len(cols), "pooled": pooled}


def return_verdict(cmp: dict, fraction: float = 1.0) -> str:
    """held / not held / inconclusive for "A beats B in at least ``fraction`` of the cells" (module rules)."""
    if not cmp["n"]:
        return "no data"
    if min(x["runs"] for x in cmp["cells"]) < 2:  # no spread to judge a difference by
        return "inconclusive at this scale"
    share = cmp["wins"] / cmp["n"]
    p = cmp["pooled"]
    if share >= fraction - 1e-12 and p["lo"] > 0:
        return "held"
    clear_loss = any(not x["win"] and x["diff"] < -2 * x["se"] and x["se"] > 0 for x in cmp["cells"])
    if share < fraction - 1e-12 and (clear_loss or p["hi"] < 0):
        return "not held"
    return "inconclusive at this scale"


def coverage_verdict(a: dict, b: dict) -> str:
    """A's figure {value, lo, hi} above B's: held / not held / inconclusive (intervals disjoint or not)."""
    if a is None or b is None:
        return "no data"
    if a["lo"] > b["hi"]:
        return "held"
    if a["hi"] < b["lo"]:
        return "not held"
    return "inconclusive at this scale"


LOWER_IS_BETTER = frozenset({"near_static"})  # coverage figures where a smaller value means broader data


def finite_figure(cov: dict[str, dict], row: str, figure: str) -> dict | None:
    """``row``'s coverage ``figure`` when it has a finite value (a BE estimate with alpha > 1 is -inf, stored as
    null, when some state's k-NN density exceeds 1; a ``maps`` entry has no value)."""
    f = cov.get(row, {}).get(figure)
    ok = isinstance(f, dict) and isinstance(f.get("value"), (int, float)) and np.isfinite(f["value"])
    return f if ok else None


def best_coverage(cov: dict[str, dict], rows: Sequence[str], figure: str) -> tuple[str, dict] | None:
    have = [r for r in rows if finite_figure(cov, r, figure)]
    if not have:
        return None
    r = max(have, key=lambda x: cov[x][figure]["value"])
    return r, cov[r][figure]


def alpha_of(row: str) -> float | None:
    try:
        return float(row.split("/", 1)[1])
    except (IndexError, ValueError):
        return None


def statistic_picks_alpha(tab: dict, cov: dict[str, dict], fam: str, figures: Sequence[str]) -> list[dict]:
    """Open question 4: per task, does the α that maximises a pre-training statistic have the best return?

    For each figure and task: the α of family ``fam`` with the highest figure (lowest for the near-static
    fraction, where less is broader), the α with the highest mean
    return over the task's columns, and whether they agree.
    """
    rows = [r for r in rows_of(tab, fam) if alpha_of(r) is not None]
    tasks = sorted({c.split(" ", 1)[0] for c in tab["cols"]})
    out = []
    for fig in figures:
        have = [r for r in rows if finite_figure(cov, r, fig)]
        if len(have) < 2:
            continue
        better = min if fig in LOWER_IS_BETTER else max
        pick = better(have, key=lambda r: cov[r][fig]["value"])
        for t in tasks:
            cols = [c for c in full_columns(tab, rows) if c.startswith(t + " ")]
            if not cols:
                continue
            # the best return among every α (a row whose figure is null can still be the best)
            best = max(rows, key=lambda r: np.mean([np.mean(tab["cells"][(r, c)]) for c in cols]))
            out.append({"figure": fig, "task": t, "picked": alpha_of(pick), "best": alpha_of(best),
                        "agree": pick == best})
    return out


def _fmt_cmp(c: dict) -> str:
    p = c["pooled"]
    return (f"wins {c['wins']}/{c['n']} cells; pooled difference {p['value']:+.3f} "
            f"[{p['lo']:+.3f}, {p['hi']:+.3f}] (return/1000)")


def _fmt_fig(name: str, f: dict) -> str:
    return f"{name} {f['value']:.3g} [{f['lo']:.3g}, {f['hi']:.3g}]"


def claims(tab: dict, cov_rows: Sequence[dict], figure: str = "shannon", volume: str = "volume_cells",
           reps: int = 2000, fixed_alpha: float | None = 0.5) -> dict:
    """Every claim of the paper that the table and coverage can answer: ``{"claims": [...], "ranks": ...}``.

    Each claim: ``{"claim", "mode", "verdict", "evidence"}``.  BE is compared within its k-NN mode
    (``be`` with ``shannon``/``renyi``; ``be-recent`` with ``shannon-recent``); RND, SMM and random actions
    have no mode and are compared with both.
    """
    cov = {r["dataset"]: r for r in cov_rows}
    fams = {family(r) for r in tab["rows"]}
    out = []
    for mode in ("", "-recent"):
        be = rows_of(tab, "be" + mode)
        if not be:
            continue
        label = "batch k-NN (URLB)" if not mode else "recent k-NN (bex)"
        targets = [("shannon" + mode, 1.0), ("rnd", 1.0), ("smm", 1.0)] + ([("renyi", 0.8)] if not mode else [])
        for other, frac in targets:
            if other not in fams:
                continue
            c = compare(tab, be, rows_of(tab, other), reps=reps)
            what = "every cell" if frac == 1.0 else f"at least {frac:.0%} of cells"
            out.append({"claim": f"BE datasets give higher returns than {other} datasets in {what}", "mode": label,
                        "verdict": return_verdict(c, frac), "evidence": _fmt_cmp(c), "detail": c})
            fixed = [r for r in be if fixed_alpha is not None and alpha_of(r) == fixed_alpha]
            if fixed and len(be) > 1:  # the same claim without choosing α per cell (module docstring)
                c = compare(tab, fixed, rows_of(tab, other), reps=reps)
                out.append({"claim": f"BE α {fixed_alpha:g} alone (no pick) gives higher returns than {other} "
                                     f"datasets in {what}", "mode": label,
                            "verdict": return_verdict(c, frac), "evidence": _fmt_cmp(c), "detail": c})
        for fig in (figure, volume):
            mine = best_coverage(cov, be, fig)
            for other in ["shannon" + mode, "renyi", "rnd", "smm", "random"]:
                if other not in fams or mine is None or (mode and other == "renyi"):
                    continue
                theirs = best_coverage(cov, rows_of(tab, other), fig)
                if theirs is None:
                    continue
                out.append({"claim": f"BE covers more than {other} ({fig})", "mode": label,
                            "verdict": coverage_verdict(mine[1], theirs[1]),
                            "evidence": f"{_fmt_fig(mine[0], mine[1])} vs {_fmt_fig(theirs[0], theirs[1])}"})
        alphas = sorted((r for r in be if alpha_of(r) is not None), key=alpha_of)
        if len(alphas) >= 2 and all(finite_figure(cov, r, figure) for r in alphas):
            figs = [cov[r][figure] for r in alphas]
            ordered = all(coverage_verdict(a, b) == "held" for a, b in zip(figs, figs[1:]))
            reversed_ = any(coverage_verdict(a, b) == "not held" for a, b in zip(figs, figs[1:]))
            out.append({"claim": "low α covers broadly, high α narrowly (coverage falls as α grows)", "mode": label,
                        "verdict": "held" if ordered else "not held" if reversed_ else "inconclusive at this scale",
                        "evidence": "; ".join(_fmt_fig(r, f) for r, f in zip(alphas, figs))})
            cols = full_columns(tab, alphas)
            if cols:
                mean_ret = {r: float(np.mean([np.mean(tab["cells"][(r, c)]) for c in cols])) for r in alphas}
                top = alphas[-1]
                best_cov = max(alphas, key=lambda r: cov[r][figure]["value"])
                worst_ret = min(alphas, key=lambda r: mean_ret[r])
                others = [cov[r][figure] for r in alphas if r != top]
                cov_top = all(coverage_verdict(cov[top][figure], o) == "held" for o in others)
                cov_below = any(coverage_verdict(cov[top][figure], o) == "not held" for o in others)
                # not held needs evidence: another α covers clearly more (disjoint intervals); a return order
                # alone, at these spreads, is not enough to reject
                v = ("held" if cov_top and worst_ret == top else
                     "not held" if cov_below else "inconclusive at this scale")
                out.append({"claim": f"the largest α ({alpha_of(top):g}) has the best coverage but the worst returns",
                            "mode": label, "verdict": v,
                            "evidence": f"best {figure}: {best_cov}; mean return over {len(cols)} cells: "
                                        + ", ".join(f"{r} {mean_ret[r]:.1f}" for r in alphas)})
    return {"claims": out, "ranks": ranks(tab)}


def claims_markdown(res: dict, tab: dict) -> str:
    """The claims as a markdown table, then the rank of the best BE row of each mode in every cell."""
    lines = ["| claim | k-NN mode | verdict | evidence |", "|---|---|---|---|"]
    lines += [f"| {c['claim']} | {c['mode']} | **{c['verdict']}** | {c['evidence']} |" for c in res["claims"]]
    fams = [f for f in ("be", "be-recent") if rows_of(tab, f)]
    if fams:
        lines += ["", f"Rank of the best BE dataset among all {len(tab['rows'])} datasets, per cell (1 = best):", "",
                  "| column | " + " | ".join(fams) + " |", "|---|" + "---|" * len(fams)]
        for c, rk in res["ranks"].items():
            cells = [str(min((rk[r] for r in rows_of(tab, f) if r in rk), default="-")) for f in fams]
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


__all__ = ["claims", "claims_markdown", "family", "rows_of", "ranks", "compare", "return_verdict",
           "coverage_verdict", "best_coverage", "statistic_picks_alpha", "full_columns"]
