"""Cluster connection checks and ``bex status``.

``check_cluster_address`` runs before any command joins a running cluster
(``--address``/``RAY_ADDRESS``): ``ray.init`` on a wrong address retries for
minutes and a missing token fails after ~20 s with a bare ``ConnectionError``,
so bex probes the GCS first with one gRPC call (``GetClusterId``, 5 s timeout)
and turns the outcome into a one-line reason:

* nothing listens / unreachable  -> "cannot reach the Ray cluster at ...";
* the cluster wants a token and none is found (``RAY_AUTH_TOKEN``,
  ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``)  -> "... needs an auth token";
* the token is rejected  -> "... rejected the auth token".

Ray 2.60 turns token auth on for ``address="auto"`` when a token exists, but not
for an explicit address; bex does the same for an explicit address (it sets
``RAY_AUTH_MODE=token`` when the cluster asks for a token and one is found), so
``bex --address HOST:PORT`` works with the token ``ray start`` generated.

Live progress: drivers publish small JSON records into Ray's internal KV
(namespace ``bex_status``): the collection driver its per-run progress rows
(:func:`publishing`), ``run_trials`` a record naming the Tune experiment
(:func:`publish_sweep`).  ``bex status`` lists the records whose driver job is
still alive, reads sweep progress from the trials' ``result.json`` files under
the storage root (Tune's ``experiment_state-*.json``), and adds cluster
resources per node and the health of the ``KnnService``.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from bex.core.progress import Progress, Reporter

KV_NAMESPACE = "bex_status"
PROBE_TIMEOUT_S = 5.0


# --------------------------------------------------------------------------------------------- connecting
def find_token() -> str | None:
    """The auth token a Ray client would send, looked up as Ray does (env, token path, ~/.ray/auth_token)."""
    tok = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if tok:
        return tok
    for p in (os.environ.get("RAY_AUTH_TOKEN_PATH"), str(Path.home() / ".ray" / "auth_token")):
        if p and Path(p).is_file():
            tok = Path(p).read_text().strip()
            if tok:
                return tok
    return None


def _split_address(address: str) -> tuple[str, int] | None:
    a = address.strip()
    if a in ("", "auto", "local") or "://" in a:  # auto / ray:// client / http dashboard: Ray's own path
        return None
    host, sep, port = a.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"Ray address {address!r} is not HOST:PORT (or auto)")
    return host.strip("[]"), int(port)


def _probe(target: str, token: str | None, timeout: float):
    """One ``GetClusterId`` call; returns the gRPC status code (``OK`` on success)."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    md = [("authorization", f"Bearer {token}")] if token else []
    ch = grpc.insecure_channel(target)
    try:
        gcs_service_pb2_grpc.NodeInfoGcsServiceStub(ch).GetClusterId(
            gcs_service_pb2.GetClusterIdRequest(), timeout=timeout, metadata=md)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), (e.details() or "").splitlines()[0] if e.details() else ""
    finally:
        ch.close()


def check_cluster_address(address: str | None, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail fast (``ValueError``, one line) if the cluster at ``address`` can't be joined; see module doc."""
    if not address:
        return
    hp = _split_address(address)
    if hp is None:
        return
    host, port = hp
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        raise ValueError(f"cannot reach the Ray cluster at {address} ({e.strerror or e}); "
                         f"check --address / RAY_ADDRESS") from None
    import grpc

    target = f"{host}:{port}"
    code, detail = _probe(target, None, timeout)
    if code == grpc.StatusCode.OK:
        return
    if code != grpc.StatusCode.UNAUTHENTICATED:
        raise ValueError(f"{address} does not answer as a Ray cluster (GCS {code.name}: {detail[:80]}); "
                         f"check --address / RAY_ADDRESS (the GCS port, not the dashboard's)")
    token = find_token()
    if token is None:
        raise ValueError(f"the Ray cluster at {address} needs an auth token and none was found: set "
                         f"RAY_AUTH_TOKEN or copy the head's ~/.ray/auth_token (and RAY_AUTH_MODE=token)")
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        raise ValueError(f"the Ray cluster at {address} needs token auth but RAY_AUTH_MODE=disabled")
    code, detail = _probe(target, token, timeout)
    if code != grpc.StatusCode.OK:
        raise ValueError(f"the Ray cluster at {address} rejected the auth token ({detail or code.name}); "
                         f"use the head's ~/.ray/auth_token or RAY_AUTH_TOKEN")
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        os.environ["RAY_AUTH_MODE"] = "token"
        try:  # refresh Ray's cached config if ray was imported already
            from ray._raylet import Config

            Config.initialize("")
        except Exception:
            pass


# --------------------------------------------------------------------------------------------- publishing
def _kv():
    from ray.experimental import internal_kv

    return internal_kv


def _job_id(ray) -> str:
    try:
        return ray.get_runtime_context().get_job_id()
    except Exception:
        return "?"


def publish(ray, key: str, record: dict) -> None:
    """Store ``record`` (plus job id and time) under ``key``; never raises."""
    try:
        rec = dict(record, job=_job_id(ray), updated=time.time(), host=socket.gethostname())
        _kv()._internal_kv_put(f"{key}/{rec['job']}", json.dumps(rec, default=str), overwrite=True,
                               namespace=KV_NAMESPACE)
    except Exception:
        pass


def publishing(progress: Reporter, kind: str = "collect", every_s: float = 2.0) -> Reporter:
    """Wrap a collection's ``progress`` callback so the rows of its events are also published for ``bex status``."""
    import ray

    last = [0.0]

    def show(event: Progress) -> None:
        rows = list(event.rows)
        now = time.monotonic()
        if now - last[0] >= every_s or all(r.get("steps", 0) >= r.get("total", 1) for r in rows):
            last[0] = now
            publish(ray, kind, {"kind": kind, "rows": rows})
        progress(event)

    return show


def publish_sweep(name: str, path: str, trials: list) -> None:
    """Record a Tune experiment (name, path, trial count, total steps) for ``bex status``."""
    import ray

    total = sum(int(getattr(t, "steps", 0) or 0) for t in trials)
    publish(ray, f"sweep/{name}", {"kind": "sweep", "name": name, "path": path, "trials": len(trials),
                                   "total_steps": total})


# --------------------------------------------------------------------------------------------- reading
def _alive_jobs(ray) -> set[str] | None:
    try:
        from ray._private.state import state

        return {j["JobID"] for j in state.job_table() if not j.get("IsDead")}
    except Exception:
        return None


def _records(ray) -> list[dict]:
    kv = _kv()
    out = []
    try:
        keys = kv._internal_kv_list("", namespace=KV_NAMESPACE)
    except Exception:
        return out
    for k in keys:
        try:
            raw = kv._internal_kv_get(k, namespace=KV_NAMESPACE)
            out.append(json.loads(raw))
        except Exception:
            continue
    return out


def sweep_progress(path: str) -> dict:
    """Trial states and steps of a Tune experiment directory (a local or shared path).

    Reads the newest ``experiment_state-*.json`` the Tune driver keeps in the
    experiment directory (trial status, last reported ``steps``, node); before the
    first one is written, counts the trial directories with a ``result.json``.
    """
    p = Path(path)
    empty = dict(started=None, steps=None, errored=None, trials_running=None, finished=None)
    if "://" in path or not p.is_dir():
        return empty
    states = sorted(p.glob("experiment_state-*.json"), key=lambda f: f.stat().st_mtime)
    if states:
        try:
            trials = json.loads(states[-1].read_text())["trial_data"]
            status, steps, nodes = [], 0, {}
            for meta, runtime in trials:
                st = json.loads(meta).get("status", "?")
                last = (json.loads(runtime) if isinstance(runtime, str) else runtime).get("last_result") or {}
                status.append(st)
                steps += int(last.get("steps", 0) or 0)
                if st == "RUNNING" and last.get("node_ip"):
                    nodes[last["node_ip"]] = nodes.get(last["node_ip"], 0) + 1
            return dict(started=sum(s != "PENDING" for s in status), steps=steps,
                        errored=status.count("ERROR"), trials_running=status.count("RUNNING"),
                        finished=status.count("TERMINATED"), running_on=nodes)
        except (OSError, ValueError, KeyError, TypeError):
            pass
    started = sum(1 for d in p.iterdir() if (d / "result.json").exists())
    return dict(empty, started=started, steps=0, errored=sum(1 for d in p.iterdir() if (d / "error.txt").exists()))


def _knn_health(ray) -> dict:
    """Ping every ``KnnService`` (one per representation size, named ``bex-knn-<dim>``)."""
    from .knn_service import NAMESPACE

    try:
        names = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                       if a.get("namespace") == NAMESPACE and a["name"].startswith("bex-knn"))
    except Exception as e:
        return {"state": "unhealthy", "error": f"{type(e).__name__}: {e}", "services": []}
    if not names:
        return {"state": "absent", "services": []}
    services = []
    for name in names:
        t0 = time.perf_counter()
        try:
            info = ray.get(ray.get_actor(name, namespace=NAMESPACE).info.remote(), timeout=10)
        except Exception as e:
            services.append({"name": name, "state": "unhealthy",
                             "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
            continue
        services.append({"name": name, "state": "healthy", "ping_ms": round(1000 * (time.perf_counter() - t0), 1),
                         "use_gpu": info.get("use_gpu"), "dim": info.get("dim"), "runs": len(info.get("runs", {})),
                         "vectors": sum(info.get("runs", {}).values()), "restored": info.get("restored")})
    state = "healthy" if all(x["state"] == "healthy" for x in services) else "unhealthy"
    return {"state": state, "services": services}


def cluster_status(ray) -> dict:
    """Everything ``bex status`` prints, as a dict (Ray must be initialised)."""
    nodes = []
    for n in ray.nodes():
        res = n.get("Resources", {})
        nodes.append({"ip": n["NodeManagerAddress"], "alive": bool(n["Alive"]), "node_id": n["NodeID"],
                      "head": "node:__internal_head__" in res, "cpu": res.get("CPU", 0), "gpu": res.get("GPU", 0),
                      "memory_gb": round(res.get("memory", 0) / 2**30, 1)})
    alive = _alive_jobs(ray)
    collections, sweeps = [], []
    for rec in _records(ray):
        running = alive is None or rec.get("job") in alive
        rec["running"] = running
        if rec.get("kind") == "collect":
            collections.append(rec)
        elif rec.get("kind") == "sweep":
            rec.update(sweep_progress(rec.get("path", "")))
            sweeps.append(rec)
    return {"resources": {"total": ray.cluster_resources(), "available": ray.available_resources()},
            "nodes": nodes, "collections": collections, "sweeps": sweeps, "knn_service": _knn_health(ray)}


def format_status(st: dict, all_records: bool = False) -> str:
    tot, av = st["resources"]["total"], st["resources"]["available"]
    lines = ["resources: " + ", ".join(f"{k} {av.get(k, 0):g}/{tot.get(k, 0):g} free"
                                       for k in ("CPU", "GPU") if k in tot or k == "CPU")]
    lines.append(f"nodes ({sum(n['alive'] for n in st['nodes'])} alive):")
    for n in st["nodes"]:
        lines.append(f"  {n['ip']:<16} {'head' if n['head'] else 'worker':<6} {'alive' if n['alive'] else 'dead':<5} "
                     f"CPU {n['cpu']:g}  GPU {n['gpu']:g}  mem {n['memory_gb']:g} GiB")
    cols = [r for r in st["collections"] if r["running"] or all_records]
    lines.append(f"collections ({len(cols)}):" if cols else "collections: none running")
    for rec in cols:
        for r in rec.get("rows", []):
            frac = r["steps"] / max(r["total"], 1)
            lines.append(f"  {r['run']:<28} {r['steps']:>8}/{r['total']:<8} {frac:6.1%} "
                         f"{r.get('env_steps_per_s', 0):7.0f} st/s  restarts {r.get('restarts', 0)}  "
                         f"job {rec['job']}{'' if rec['running'] else ' (ended)'}")
    sws = [r for r in st["sweeps"] if r["running"] or all_records]
    lines.append(f"sweeps ({len(sws)}):" if sws else "sweeps: none running")
    for r in sws:
        prog = "" if r.get("steps") is None else \
            f"{r['started']}/{r['trials']} trials started ({r.get('trials_running') or 0} running, " \
            f"{r.get('finished') or 0} done, {r['errored']} errored), {r['steps']}/{r['total_steps']} steps " \
            f"({r['steps'] / max(r['total_steps'], 1):.1%})"
        lines.append(f"  {r['name']:<28} {prog}  job {r['job']}{'' if r['running'] else ' (ended)'}  {r['path']}")
    k = st["knn_service"]
    if not k.get("services"):
        lines.append(f"knn service: {k['state']}" + (f" ({k['error']})" if k.get("error") else ""))
    for svc in k.get("services", []):
        if svc["state"] == "healthy":
            lines.append(f"knn service {svc['name']}: healthy ({svc['ping_ms']} ms), "
                         f"{'GPU' if svc['use_gpu'] else 'CPU'}, dim {svc['dim']}, {svc['runs']} run(s), "
                         f"{svc['vectors']} vectors")
        else:
            lines.append(f"knn service {svc['name']}: {svc['state']} ({svc.get('error', '')})")
    return "\n".join(lines)
