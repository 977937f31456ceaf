"""Multi-stage commands: ``bex replicate``, ``demo``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from .app import command, local_path, out, resume_option
from .progress import printer

PANEL = "Pipelines"


@command(rich_help_panel=PANEL)
def replicate(config: Path = typer.Option(..., "--config", help="tune_configs/replicate_*.yaml"),
              resume: bool = resume_option("replication"),
              shard: Optional[int] = typer.Option(None, "--shard", help="one collection seed of the config: its "
                                                  "runs alone, in root NAME-s<seed>, trained on alone"),
              carry: List[Path] = typer.Option([], "--carry", help="a trials.csv of this experiment from an earlier "
                                               "session whose root is gone (repeatable): its complete trials on "
                                               "data with the same fingerprint are copied in, not rerun")):
    """Collect, relabel, train, measure coverage and report: the paper's comparison in one resumable command."""
    from bex.pipelines.replicate import ReplicateConfig, run_replication

    cfg = ReplicateConfig.from_yaml(config)
    if shard is not None:
        cfg = cfg.shard(shard)
    res = run_replication(cfg, resume=resume, progress=printer("replicate"), carry=carry)
    if res.get("terminated"):
        return  # main() reports the SIGTERM (exit 143)
    out(res.pop("markdown"))
    out(json.dumps(res))


@command(rich_help_panel=PANEL)
def demo(root: Path = typer.Option(Path("bex_runs/demo"), "--root", help="run root of the demo"),
         steps: int = typer.Option(4000, help="environment steps per dataset"),
         train_steps: int = typer.Option(2000, "--train-steps", help="gradient steps per offline trial")):
    """Run the whole pipeline at small scale on the embedded local Ray."""
    from bex.pipelines.demo import run_demo

    run_demo(Path(local_path(root, "--root")), steps=steps, train_steps=train_steps,
             progress=printer("demo", messages=out))
