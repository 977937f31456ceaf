"""The offline stage of ``bex replicate`` against one trial per process, and its projection to a grid.

bex runs a replication's offline sweep as one Tune experiment: one driver, the
datasets loaded once and shared through Ray's object store, trials scheduled
two at a time in Ray worker processes.  The baseline is what a user does
without it: one ``bex train`` process per trial (its own Python start, Ray
start, dataset load and relabel check), two at a time.  Both run the same
trials (``--trials`` = datasets × seeds on walker_stand, the offline settings of
``tune_configs/replicate_small.yaml`` unless ``--steps`` is given) on two small
datasets this script collects (random actions and RND, walker), in one run, and
the script prints both wall times, their ratio and each projected to the
config's full offline grid (trials × measured time per trial / 2 slots:
*scaled from a subset*, stated as such).

    python bench/bench_replicate.py [--quick] [--config tune_configs/replicate_small.yaml] [--steps N]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("MUJOCO_GL", "disable")
os.environ.setdefault("BEX_NODE_IP", "127.0.0.1")

from common import machine_label  # noqa: E402

BEX = str(Path(sys.executable).with_name("bex"))


def sh(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run([BEX, *args], capture_output=True, text=True, cwd=cwd)
    if p.returncode != 0:
        raise SystemExit(f"bex {' '.join(args[:3])} failed ({p.returncode}): {p.stderr[-2000:]}")
    return p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="tune_configs/replicate_small.yaml")
    ap.add_argument("--steps", type=int, default=None, help="gradient steps per trial (default: the config's)")
    ap.add_argument("--seeds", type=int, default=2, help="training seeds per dataset (trials = 2 × seeds)")
    ap.add_argument("--quick", action="store_true", help="2000 steps per trial")
    a = ap.parse_args()
    from bex.pipelines.replicate import ReplicateConfig

    cfg = ReplicateConfig.from_yaml(a.config)
    off = cfg.sweep()
    steps = a.steps or (2000 if a.quick else off.steps)
    learner = off.learners[0]
    lc = off.learner_config.get(learner, {})
    eval_every = min(off.eval_every, steps)
    work = Path(tempfile.mkdtemp(prefix="bench_replicate_"))
    data = work / "data"
    t0 = time.perf_counter()
    sh("collect", "--out", str(data), "--explorer", "random", "--steps", "20000")
    sh("collect", "--out", str(data), "--explorer", "rnd", "--steps", "20000")
    sh("relabel", str(data), "--task", "walker_stand")
    print(f"data: 2 datasets x 20K walker steps in {time.perf_counter() - t0:.0f} s", flush=True)
    seeds = list(range(a.seeds))

    # bex: one sweep (the replication's offline stage does exactly this: one Tune experiment)
    sweep = {"name": "bex", "storage": str(work / "runs"), "datasets": [{"path": str(data), "split": True}],
             "tasks": ["walker_stand"], "learners": [learner], "seeds": seeds, "preset": off.preset,
             "steps": steps, "eval_every": eval_every, "eval_episodes": off.eval_episodes,
             "report_every": off.report_every, "max_concurrent_trials": 2, "learner_config": {learner: lc}}
    (work / "sweep.yaml").write_text(json.dumps(sweep))
    t0 = time.perf_counter()
    sh("sweep", str(work / "sweep.yaml"))
    t_bex = time.perf_counter() - t0
    n = 2 * len(seeds)

    # baseline: one `bex train` process per trial, two at a time
    sets = [x for k, v in lc.items() for x in ("--set", f"{k}={v}")]

    def one(job: tuple[str, int]) -> None:
        objective, seed = job
        sh("train", "--dataset", str(data), "--objective", objective, "--task", "walker_stand", "--learner", learner,
           "--preset", off.preset, "--steps", str(steps), "--seed", str(seed), "--eval-every", str(eval_every),
           "--eval-episodes", str(off.eval_episodes), "--storage", str(work / "runs"),
           "--name", f"solo_{objective}_{seed}", *sets)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, [(o, s) for o in ("random", "rnd") for s in seeds]))
    t_solo = time.perf_counter() - t0

    grid = len(cfg.sweep().tasks) * len(cfg.sweep().seeds) * len(
        {(c.domain, c.partition_objective, c.partition_param) for c in cfg.grid().runs_()})
    scale = grid / n
    print(f"machine: {machine_label()}")
    print(f"{n} trials ({learner} {lc}, {steps} steps, evaluation every {eval_every} x {off.eval_episodes} "
          f"episodes), 2 at a time")
    print(f"  bex (one Tune experiment, data shared):  {t_bex:7.1f} s  ({t_bex / n * 2:.1f} s per trial slot)")
    print(f"  one `bex train` process per trial:       {t_solo:7.1f} s  ({t_solo / n * 2:.1f} s per trial slot)")
    print(f"  ratio solo / bex: {t_solo / t_bex:.2f}x")
    if steps == off.steps:
        print(f"scaled from this subset to {a.config}'s {grid} trials (x{scale:.0f}, not measured): "
              f"bex {t_bex * scale / 3600:.2f} h, one trial per process {t_solo * scale / 3600:.2f} h")
    print(json.dumps({"trials": n, "steps": steps, "bex_s": round(t_bex, 1), "solo_s": round(t_solo, 1),
                      "ratio": round(t_solo / t_bex, 3), "grid_trials": grid}))


if __name__ == "__main__":
    main()
