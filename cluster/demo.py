"""``bex demo``: the most complete pipeline at small scale on the embedded local Ray."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable


def run_demo(root: Path, steps: int = 4000, echo: Callable[[str], None] = print) -> dict:
    from replay import relabel

    from .collect import CollectConfig, run_collection
    from .info import dataset_info, format_info
    from .relabel import ray_map

    root = Path(root)
    data = root / "datasets" / "walker"
    if data.exists():
        shutil.rmtree(data)
    t0 = time.perf_counter()
    echo(f"[1/3] collect: random explorer, walker, {steps} steps, 2 actors -> {data}")
    summary = run_collection(CollectConfig(out=str(data), domain="walker", explorer="random", steps=steps,
                                           actors=2, seed=0, episodes_per_chunk=1))
    echo(f"      {summary['steps']} steps in {summary['wall_s']:.1f}s ({summary['env_steps_per_s']:.0f}/s)")
    echo("[2/3] relabel: walker_stand, walker_walk, walker_run (Ray tasks)")
    for task in ("walker_stand", "walker_walk", "walker_run"):
        res = relabel(data, task, map_fn=ray_map())
        echo(f"      {json.dumps(res)}")
    echo("[3/3] bex info")
    echo(format_info(dataset_info(data)))
    echo(f"demo finished in {time.perf_counter() - t0:.1f}s")
    return summary
