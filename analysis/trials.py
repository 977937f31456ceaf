"""Per-trial results as data: ``trials.csv``, one row per evaluation of every trial, and the trial scores and
table cells derived from it.

Every sweep and replication writes ``trials.csv`` beside its tables; ``bex analyze`` re-derives every table,
verdict and plot from such files alone (several of them: one per session of a long run), so a result can be
re-analysed without rerunning anything.  Columns, in this order::

    dataset,collection_seed,task,learner,seed,step,return_mean,episodes,return_std,steps_planned,fingerprint,trial

``dataset`` is the results row's label (``be/0.5``, ``be-recent/0.5``, ``shannon``, ``renyi/1.1``, ``rnd``,
``smm``, ``random``); ``collection_seed`` is empty when a dataset row pools its collection seeds into one
training set and the seed when each collection seed is trained on alone; ``learner`` is the column's learner
label (``td3[hidden_dim=128,...]``; a distillation's baselines are learners of their own, e.g.
``baseline[random_pairs,N=64]``); ``step`` the gradient step of the evaluation; ``return_mean`` the mean
return of its ``episodes`` episodes; ``steps_planned`` the trial's planned length (a trial whose last
evaluation is earlier did not finish); ``fingerprint`` the content hash of the data the trial trained on
(:meth:`bex.replay.Dataset.fingerprint`; empty for trials from before it existed); ``trial`` the trial's
directory name.

**A trial's score** is the mean of its last ``last`` evaluations (:func:`scores`), a declared statistic less
noisy than one checkpoint (Henderson et al. 2018): the analysis and the tables say which ``last`` they used.

**Cells and their unit.** A cell is one (dataset, task, learner).  When a dataset has trials on two or more
collection seeds, its unit is the collection seed (the mean of that seed's training-seed scores), so that
intervals resample collection seeds and, within them, training seeds; otherwise the unit is the training seed.
"""
from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

COLUMNS = ("dataset", "collection_seed", "task", "learner", "seed", "step", "return_mean", "episodes")
EXTRA = ("return_std", "steps_planned", "fingerprint", "trial")
FILE = "trials.csv"
KEY = ("dataset", "collection_seed", "task", "learner", "seed")  # the columns naming one trial (trial_key)


def learner_label(cfg: dict) -> str:
    """A results column's learner: the learner and its non-default settings (``td3[hidden_dim=128]``)."""
    if cfg["learner"] == "distill":  # columns = weighting x size (the teacher path and loop settings omitted)
        lc = cfg.get("learner_config", {})
        return f"distill[{lc.get('weighting', 'none')},N={lc.get('size', 256)}]"
    extra = ",".join(f"{k}={v}" for k, v in sorted(cfg.get("learner_config", {}).items()))
    return cfg["learner"] + (f"[{extra}]" if extra else "")


def trial_key(cfg: dict) -> tuple[str, str, str, str, int]:
    """A trial's identity in ``trials.csv`` from its ``TrialConfig`` dict: (dataset, collection_seed, task,
    learner, seed), the columns that name one trial."""
    return (cfg.get("label") or Path(cfg["dataset"]).name, str(cfg.get("filters", {}).get("seed", "")),
            cfg["task"], learner_label(cfg), int(cfg["seed"]))


def rows_from_trials(trials: Sequence[dict]) -> list[dict]:
    """``trials.csv`` rows of Tune trials (:func:`bex.analysis.results.read_trials`): one per evaluation (reports
    between evaluations carry the last one forward and are skipped); a distillation's baselines at its last
    report."""
    out = []
    for tr in trials:
        cfg = tr["config"]
        base = {**dict(zip(KEY, trial_key(cfg))), "episodes": int(cfg.get("eval_episodes", 0)),
                "steps_planned": int(cfg.get("steps", 0)), "trial": Path(tr.get("dir", "")).name}
        for r in tr["rows"]:
            if "eval/return_mean" in r and r.get("eval/at_step", r.get("steps")) == r.get("steps"):
                out.append({**base, "step": int(r["steps"]), "return_mean": float(r["eval/return_mean"]),
                            "return_std": float(r.get("eval/return_std", math.nan)),
                            "fingerprint": str(r.get("data/fingerprint", ""))})
        if cfg["learner"] == "distill" and tr["rows"]:
            final, n = tr["rows"][-1], cfg.get("learner_config", {}).get("size", 256)
            for key, name in (("baseline/random_pairs/return_mean", f"baseline[random_pairs,N={n}]"),
                              ("baseline/bc_full/return_mean", "baseline[bc_full]")):
                if key in final:
                    out.append({**base, "learner": name, "step": int(final.get("steps", 0)),
                                "return_mean": float(final[key]), "return_std": math.nan})
    return out


def trials_csv(rows: Iterable[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS + EXTRA)
    for r in sorted(rows, key=lambda r: (*(r[k] for k in KEY), r["step"])):
        w.writerow([_fmt(r.get(k, "")) for k in COLUMNS + EXTRA])
    return buf.getvalue()


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    return str(v)


def read_trials_csv(paths: Sequence[str | Path]) -> list[dict]:
    """The rows of one or more ``trials.csv`` files (a later file's row replaces an earlier one of the same
    trial and step: a resumed run's file holds what its session re-did).  A file that is missing, lacks the
    leading columns or holds a malformed value is a one-line error naming the file and line."""
    if not paths:
        raise ValueError("no trials.csv given")
    merged: dict[tuple, dict] = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"trials file {str(path)!r} does not exist" if not path.exists()
                                    else f"trials file {str(path)!r} is not a file")
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            raise ValueError(f"trials file {str(path)!r} is not UTF-8 text") from None
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        if header is None or tuple(header[:len(COLUMNS)]) != COLUMNS:
            raise ValueError(f"trials file {str(path)!r} does not start with the columns {','.join(COLUMNS)}")
        for i, values in enumerate(reader, 2):
            if not values:
                continue
            if len(values) != len(header):
                raise ValueError(f"{path}:{i}: {len(values)} values for {len(header)} columns")
            row = dict(zip(header, values))
            try:
                row["seed"], row["step"], row["episodes"] = int(row["seed"]), int(row["step"]), int(row["episodes"])
                row["return_mean"] = float(row["return_mean"])
                if not math.isfinite(row["return_mean"]):
                    raise ValueError
                if row.get("steps_planned", "") != "":
                    row["steps_planned"] = int(row["steps_planned"])
                row["return_std"] = float(row["return_std"]) if row.get("return_std", "") != "" else math.nan
            except ValueError:
                raise ValueError(f"{path}:{i}: malformed value in {values!r} (seed, step and episodes are integers, "
                                 f"return_mean a finite number)") from None
            if not row["dataset"] or not row["task"] or not row["learner"]:
                raise ValueError(f"{path}:{i}: dataset, task and learner must not be empty")
            merged[(*(row[k] for k in KEY), row["step"])] = row
    if not merged:
        raise ValueError(f"{', '.join(str(p) for p in paths)} hold(s) no evaluations")
    return list(merged.values())


@dataclass(frozen=True)
class TrialScore:
    """One trial's score: the mean of its last ``evals`` evaluations."""

    dataset: str
    collection_seed: str
    task: str
    learner: str
    seed: int
    score: float
    evals: int
    last_step: int
    complete: bool


def scores(rows: Iterable[dict], last: int = 3) -> list[TrialScore]:
    """Each trial's score (module docstring): the mean ``return_mean`` of its ``last`` latest evaluations (all
    of them when it has fewer)."""
    by_trial: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        by_trial[tuple(r[k] for k in KEY)].append(r)
    out = []
    for key, rs in sorted(by_trial.items()):
        rs = sorted(rs, key=lambda r: r["step"])[-last:]
        planned = rs[-1].get("steps_planned")
        complete = not isinstance(planned, int) or rs[-1]["step"] >= planned
        out.append(TrialScore(*key, score=sum(r["return_mean"] for r in rs) / len(rs), evals=len(rs),
                              last_step=rs[-1]["step"], complete=complete))
    return out


def cells(trial_scores: Iterable[TrialScore]) -> tuple[dict[tuple[str, str, str], list[float]], dict[str, str]]:
    """``{(dataset, task, learner): unit values}`` and each dataset's unit (``collection seed`` or ``training
    seed``; module docstring)."""
    by_cell: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for s in trial_scores:
        by_cell[(s.dataset, s.task, s.learner)][s.collection_seed].append(s.score)
    collections: dict[str, set] = defaultdict(set)
    for (dataset, _, _), by_seed in by_cell.items():
        collections[dataset] |= {c for c in by_seed if c != ""}
    unit = {d: "collection seed" if len(c) >= 2 else "training seed" for d, c in collections.items()}
    out = {}
    for key, by_seed in by_cell.items():
        if unit[key[0]] == "collection seed":
            out[key] = [sum(v) / len(v) for _, v in sorted(by_seed.items())]
        else:
            out[key] = [x for _, v in sorted(by_seed.items()) for x in v]
    return out, unit


def curves(rows: Iterable[dict]) -> dict[tuple[str, str], dict[str, list[tuple[list[int], list[float]]]]]:
    """``{(task, learner): {dataset: [(steps, returns) per trial]}}`` for learning-curve plots."""
    by_trial: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if not r["learner"].startswith("baseline["):
            by_trial[(r["task"], r["learner"], r["dataset"], r["collection_seed"], r["seed"])].append(r)
    out: dict = defaultdict(lambda: defaultdict(list))
    for (task, learner, dataset, _, _), rs in sorted(by_trial.items()):
        rs = sorted(rs, key=lambda r: r["step"])
        out[(task, learner)][dataset].append(([r["step"] for r in rs], [r["return_mean"] for r in rs]))
    return out


__all__ = ["COLUMNS", "EXTRA", "FILE", "learner_label", "rows_from_trials", "trials_csv", "read_trials_csv",
           "TrialScore", "scores", "cells", "curves"]
