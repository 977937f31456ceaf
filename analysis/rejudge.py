"""Re-judging a replication whose per-trial data are gone, from the mean, SD and n of each cell of its
``results.md`` (``python -m bex.analysis.rejudge results.md [--ddof0]``).

Welch's intervals need only each cell's mean, sample variance and count, so the primary claims
(:func:`.claims.primary_claims`: pooled differences in the declared unit, Holm over the family, minimum
detectable differences) can be redone from a Table 1 alone.  ``--ddof0``: the table's ± is a population SD
(bex before trials.csv), multiplied by √(n/(n−1)).  What cannot be redone from a table: a score other than the
one it holds (there is one value per trial, the final evaluation), the aggregates' bootstrap over runs, and
anything about collection seeds that were pooled into one training set.
"""
from __future__ import annotations

import math
import re
import sys
from pathlib import Path

from .claims import Table, default_claims, primary_claims
from .stats import Summary
from .units import normalised

CELL = re.compile(r"\**\s*(-?[\d.]+) ± ([\d.]+) \(n=(\d+)\)\s*\**")


class SummaryTable(Table):
    """A :class:`~.claims.Table` of cell summaries (raw returns) instead of values."""

    def __init__(self, summaries: dict[tuple[str, str, str], Summary]):
        super().__init__({k: [s.mean] * s.n for k, s in summaries.items()})
        self.summaries = summaries

    def summary(self, dataset: str, task: str, learner: str, unit: bool = True) -> Summary | None:
        s = self.summaries.get((dataset, task, learner))
        if s is None or not unit:
            return s
        width = normalised(1.0, task) - normalised(0.0, task)  # the unit is affine: a mean maps, an SD scales
        return Summary(normalised(s.mean, task), s.var * width ** 2, s.n)


def read_results_md(path: str | Path, ddof0: bool = False) -> SummaryTable:
    """The cells of a ``results.md`` table (``| dataset | task learner | ... |`` with ``mean ± sd (n=k)``)."""
    lines = [x for x in Path(path).read_text().splitlines() if x.startswith("|")]
    header = [h.strip() for h in lines[0].strip("|").split("|")][1:]
    cols = [h.split(" ", 1) for h in header]
    out = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        for (task, learner), cell in zip(cols, cells[1:]):
            m = CELL.fullmatch(cell)
            if not m:
                continue
            mean, sd, n = float(m.group(1)), float(m.group(2)), int(m.group(3))
            if ddof0 and n > 1:
                sd *= math.sqrt(n / (n - 1))
            out[(cells[0], task, learner)] = Summary(mean, sd * sd if n > 1 else math.nan, n)
    if not out:
        raise ValueError(f"{str(path)!r} holds no 'mean ± sd (n=k)' cells")
    return SummaryTable(out)


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: python -m bex.analysis.rejudge results.md [--ddof0]")
    tab = read_results_md(argv[0], ddof0="--ddof0" in argv)
    print("| claim | difference | adjusted interval (level) | 95 % interval | verdict | MDD | runs for 0.05 |")
    print("|---|---|---|---|---|---|---|")
    for c in primary_claims(tab, default_claims(tab.rows)):
        adj, ci = c["adjusted"], c["interval_95"]
        print(f"| {c['a']} − {c['b']} | {c['value']:+.3f} | [{adj['lo']:+.3f}, {adj['hi']:+.3f}] ({adj['level']:.4f}) "
              f"| [{ci['lo']:+.3f}, {ci['hi']:+.3f}] | {c['verdict']} | {c['mdd']:.3f} | "
              f"{c['seeds_for_target']['runs']} |")
        print("|  per task | " + "; ".join(f"{p['task']} {p['value']:+.3f} [{p['lo']:+.3f}, {p['hi']:+.3f}]"
                                          for p in c["per_task"]) + " | | | | | |")


if __name__ == "__main__":
    main(sys.argv[1:])
