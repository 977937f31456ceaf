"""``bex status``: the cluster, running collections and sweeps, the k-NN service."""
from __future__ import annotations

import json
import os

import typer

from .app import command, fail, out

PANEL = "Cluster"


@command(rich_help_panel=PANEL)
def status(as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
           all_records: bool = typer.Option(False, "--all", help="also list collections and sweeps that ended")):
    """Cluster resources per node, running collections and sweeps with progress, k-NN service health."""
    from bex.cluster.runtime import init_ray
    from bex.cluster.status import cluster_status, format_status

    if not os.environ.get("RAY_ADDRESS"):
        os.environ["RAY_ADDRESS"] = "auto"  # a running cluster, never a fresh embedded one
    try:
        ray = init_ray(log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError) as e:
        fail(f"no running Ray cluster to report on ({str(e).splitlines()[0]}); pass --address or set RAY_ADDRESS")
    st = cluster_status(ray)
    out(json.dumps(st, indent=2, default=str) if as_json else format_status(st, all_records))
