"""``bex demo``: the whole pipeline at small scale on the embedded local Ray.

1. collect two walker datasets with APT (small preset): behavioral entropy
   (alpha 0.5) and Shannon, sharing the cluster's k-NN service;
2. relabel them for walker_stand (Ray tasks);
3. train TD3 and CQL on each (Ray Tune, small preset);
4. print the results table (Markdown + CSV + learning curves in the run dir) and write the report page
   ``ROOT/report.html`` (``bex report``).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from bex.core.progress import Progress, Reporter, report

#: The file a demo leaves in its run root; a later demo deletes only what a root with this file holds.
MARKER = ".bex_demo"


def prepare_demo_root(root: Path, steps: int, train_steps: int) -> None:
    """Check the demo's input, then clear what a previous demo wrote there (nothing else).

    ``steps`` >= 1 and ``train_steps`` >= 4 (evaluations every ``train_steps // 2``,
    reports every ``train_steps // 4``).  A non-empty ``root`` without the demo's
    marker file was not written by ``bex demo``: it is refused, not deleted.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"--steps {steps!r} is out of range: allowed an integer >= 1")
    if isinstance(train_steps, bool) or not isinstance(train_steps, int) or train_steps < 4:
        raise ValueError(f"--train-steps {train_steps!r} is out of range: allowed an integer >= 4")
    if root.exists() and not root.is_dir():
        raise ValueError(f"--root {str(root)!r} is a file, not a directory")
    if root.is_dir() and any(root.iterdir()) and not (root / MARKER).is_file() and not _demo_layout(root):
        raise ValueError(f"--root {str(root)!r} holds files bex demo did not write (no {MARKER} marker); "
                         f"choose another --root (the demo deletes its own previous output only)")
    for p in (root / "datasets" / "walker", root / "sweeps" / "demo"):
        if p.is_dir():
            shutil.rmtree(p)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("written by bex demo; a later demo replaces datasets/walker and sweeps/demo\n")


def _demo_layout(root: Path) -> bool:
    """A root written by a demo from before the marker existed: ``datasets/walker`` and ``sweeps/demo`` only."""
    def names(p: Path) -> set[str]:
        return {c.name for c in p.iterdir()} if p.is_dir() else set()

    return (names(root) <= {"datasets", "sweeps"} and names(root / "datasets") <= {"walker"}
            and names(root / "sweeps") <= {"demo"})


def run_demo(root: Path, steps: int = 4000, train_steps: int = 2000, progress: Reporter | None = None) -> dict:
    """Run the demo under ``root``; its narrative (stage lines, the dataset summary, Table 1, where the outputs
    are) comes as ``Progress("demo", stage, 4, message=...)`` events, and the collection's own events (one row
    per run) in between.  Returns ``write_results``' summary of the sweep."""
    from bex.actors.collect import CollectConfig
    from bex.analysis.coverage import CoverageConfig
    from bex.analysis.info import dataset_info, format_info
    from bex.analysis.report import build_report
    from bex.analysis.results import write_results
    from bex.cluster.driver import run_collections
    from bex.cluster.raymap import ray_map
    from bex.cluster.train import run_trials
    from bex.learners.trial import TrialConfig
    from bex.replay import relabel
    from bex.replay.card import update_card

    tick = report(progress)

    def say(stage: int, line: str) -> None:
        tick(Progress("demo", stage, 4, message=line))

    root = Path(root)
    data = root / "datasets" / "walker"
    prepare_demo_root(root, steps, train_steps)
    t0 = time.perf_counter()
    explorer_cfg = {"num_seed_frames": 1000}
    runs = [CollectConfig(out=str(data), explorer="apt", objective="be", param=0.5, steps=steps, preset="small",
                          episodes_per_chunk=2, explorer_config=explorer_cfg),
            CollectConfig(out=str(data), explorer="apt", objective="shannon", steps=steps, preset="small",
                          episodes_per_chunk=2, explorer_config=explorer_cfg)]
    say(0, f"[1/4] collect: APT with BE (alpha 0.5) and Shannon rewards, walker, {steps} steps each -> {data}")
    for s in run_collections(runs, progress=tick):
        say(0, f"      {s['config']['objective']}: {s['steps']} steps in {s['wall_s']:.1f}s, {s['updates']} updates")
    say(1, "[2/4] relabel: walker_stand (Ray tasks)")
    say(1, f"      {relabel(data, 'walker_stand', map_fn=ray_map())}")
    update_card(data)
    say(1, format_info(dataset_info(data)))
    say(2, f"[3/4] train: TD3 and CQL on each dataset, {train_steps} gradient steps (Ray Tune)")
    trials = [TrialConfig.from_dict(dict(dataset=str(data), filters=f, task="walker_stand", learner=learner,
                                         steps=train_steps, eval_every=train_steps // 2, eval_episodes=2,
                                         report_every=train_steps // 4, label=label))
              for learner in ("td3", "cql")
              for f, label in (({"objective": "be", "param": "0.5"}, "be/0.5"), ({"objective": "shannon"}, "shannon"))]
    run_trials(trials, name="demo", storage=str(root / "sweeps"), max_concurrent=2, verbose=0)
    say(3, "[4/4] results (Table 1: a trial's score, mean ± sample SD over seeds; what is beyond noise marked)")
    out = write_results(root / "sweeps" / "demo")
    say(3, out["markdown"])
    say(3, f"tables: {out['md']}, {out['csv']}; curves: {len(out['plots'])} PNG")
    page = root / "report.html"
    rep = build_report([root / "sweeps" / "demo"], page, CoverageConfig(map_states=1000))
    say(4, f"report page (coverage, Table 1, curves, per-task aggregates; opens offline): {page} "
           f"({len(rep['datasets'])} datasets, {rep['plots']} plots)")
    say(4, f"demo finished in {time.perf_counter() - t0:.0f}s")
    return out
