"""A real two-node Ray cluster on loopback, for the cluster-mode tests.

The head runs on 127.0.0.2 and the worker on 127.0.0.3 (Ray rewrites 127.0.0.1
to the machine's network address on some hosts but keeps the other loopback
addresses), each a ``ray start --block`` under its own process group
(``start_new_session``), so a node is stopped - and, in the node-loss test,
killed - by signalling its group: TERM, then KILL if it lingers.

Every port is picked free at start (no clash with another Ray on the default
ports), the cluster's session files live under a short private temp dir, and
token auth is on with a token of our own (``RAY_AUTH_MODE=token`` plus
``RAY_AUTH_TOKEN``), so nothing depends on ``~/.ray/auth_token``.  ``env()``
gives the environment a client (``bex``, ``ray job submit``) needs.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HEAD_IP = "127.0.0.2"
WORKER_IP = "127.0.0.3"
RAY = str(Path(sys.executable).with_name("ray"))
AVOID = {6379, 8265, 10001, 52365, 8076, 8077}


def free_port(ip: str, taken: set[int]) -> int:
    """A TCP port free on ``ip`` (and not in ``taken``), from a random high range."""
    for _ in range(500):
        p = random.randint(20000, 59000)
        if p in taken or p in AVOID:
            continue
        with socket.socket() as s:
            try:
                s.bind((ip, p))
            except OSError:
                continue
        taken.add(p)
        return p
    raise RuntimeError("no free port found")


def port_range(ip: str, taken: set[int], n: int = 100) -> tuple[int, int]:
    """A block of ``n`` consecutive free ports (worker ports)."""
    for _ in range(200):
        lo = random.randint(20000, 59000 - n)
        ok = True
        for p in range(lo, lo + n):
            if p in taken or p in AVOID:
                ok = False
                break
            with socket.socket() as s:
                try:
                    s.bind((ip, p))
                except OSError:
                    ok = False
                    break
        if ok:
            taken.update(range(lo, lo + n))
            return lo, lo + n - 1
    raise RuntimeError("no free port range found")


def stop_group(proc: subprocess.Popen | None, grace: float = 8.0) -> None:
    """TERM the process group of ``proc`` (a ``ray start --block``), then KILL it if it lingers."""
    if proc is None:
        return
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = proc.pid
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        t0 = time.monotonic()
        while time.monotonic() - t0 < wait:
            if proc.poll() is not None and not _group_alive(pgid):
                return
            time.sleep(0.2)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class TwoNodeCluster:
    """``start()`` brings up head + worker and waits until both are alive; ``stop()`` tears down."""

    def __init__(self, head_cpus: int = 1, worker_cpus: int = 1, worker_resources: dict | None = None,
                 object_store_mb: int = 120):
        self.head_cpus, self.worker_cpus = head_cpus, worker_cpus
        self.worker_resources = worker_resources or {}
        self.object_store = object_store_mb * 1024 * 1024
        self.tmp = Path(tempfile.mkdtemp(prefix="bexc", dir="/tmp"))  # short: Ray's unix sockets live here
        self.token = uuid.uuid4().hex + uuid.uuid4().hex
        self.head: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        taken: set[int] = set()
        self.gcs_port = free_port(HEAD_IP, taken)
        self.dash_port = free_port(HEAD_IP, taken)
        self.taken = taken

    # -- environment ---------------------------------------------------------------------------------------
    def env(self, address: bool = True, **extra: str) -> dict:
        """Environment of a client of this cluster (token auth, loopback, headless MuJoCo)."""
        e = dict(os.environ)
        for k in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
            e.pop(k, None)
        # the venv first on PATH: a job entrypoint (`bex ...`) runs with the PATH of `ray start` on the head
        e["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), e.get("PATH", "")])
        e.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, MUJOCO_GL="disable",
                 BEX_NODE_IP=HEAD_IP, PYTHONUNBUFFERED="1", RAY_USAGE_STATS_ENABLED="0",
                 # notice a killed node in seconds (GCS health checks; defaults are slower)
                 RAY_health_check_period_ms="1000", RAY_health_check_failure_threshold="5")
        if address:
            e["RAY_ADDRESS"] = self.address
        e.update(extra)
        return e

    @property
    def address(self) -> str:
        return f"{HEAD_IP}:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://{HEAD_IP}:{self.dash_port}"

    def _node_args(self, ip: str) -> list[str]:
        t = self.taken
        lo, hi = port_range(ip, t)
        return [f"--node-ip-address={ip}", f"--node-manager-port={free_port(ip, t)}",
                f"--object-manager-port={free_port(ip, t)}", f"--min-worker-port={lo}", f"--max-worker-port={hi}",
                f"--dashboard-agent-listen-port={free_port(ip, t)}", f"--dashboard-agent-grpc-port={free_port(ip, t)}",
                f"--metrics-export-port={free_port(ip, t)}", f"--runtime-env-agent-port={free_port(ip, t)}",
                f"--object-store-memory={self.object_store}", "--disable-usage-stats", "--block"]

    def _spawn(self, args: list[str], log: str) -> subprocess.Popen:
        out = open(self.tmp / log, "wb")
        return subprocess.Popen([RAY, "start", *args], env=self.env(address=False), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=str(self.tmp))

    # -- life cycle ----------------------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> "TwoNodeCluster":
        try:
            self.head = self._spawn(
                ["--head", f"--port={self.gcs_port}", f"--num-cpus={self.head_cpus}", "--num-gpus=0",
                 "--include-dashboard=true", f"--dashboard-host={HEAD_IP}", f"--dashboard-port={self.dash_port}",
                 f"--ray-client-server-port={free_port(HEAD_IP, self.taken)}",
                 f"--temp-dir={self.tmp / 'h'}", *self._node_args(HEAD_IP)], "head.log")
            self.wait_nodes(1, timeout)
            self.start_worker()
            self.wait_nodes(2, timeout)
            self.wait_dashboard(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def start_worker(self) -> None:
        args = [f"--address={self.address}", f"--num-cpus={self.worker_cpus}", "--num-gpus=0",
                f"--temp-dir={self.tmp / 'w'}", *self._node_args(WORKER_IP)]
        if self.worker_resources:
            args.append(f"--resources={json.dumps(self.worker_resources)}")
        self.worker = self._spawn(args, "worker.log")

    def alive_nodes(self) -> list[str]:
        """Node IPs the GCS reports alive (asked from a subprocess, so this process stays Ray-free)."""
        code = ("import ray, json; ray.init(address='auto', log_to_driver=False, logging_level='ERROR');"
                "print('NODES', json.dumps([n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']]))")
        try:
            r = subprocess.run([sys.executable, "-c", code], env=self.env(), capture_output=True, text=True,
                               timeout=60, cwd=str(self.tmp))
        except subprocess.TimeoutExpired:
            return []
        for line in r.stdout.splitlines():
            if line.startswith("NODES "):
                return json.loads(line[6:])
        return []

    def wait_nodes(self, n: int, timeout: float) -> list[str]:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            for p, name in ((self.head, "head"), (self.worker, "worker")):
                if p is not None and p.poll() is not None:
                    raise RuntimeError(f"ray {name} exited with {p.returncode}:\n{self.log(name)}")
            nodes = self.alive_nodes()
            if len(nodes) == n:
                return nodes
            time.sleep(1.0)
        raise TimeoutError(f"cluster did not reach {n} alive node(s) in {timeout:.0f}s:\n{self.log('head')}")

    def wait_dashboard(self, timeout: float) -> None:
        import urllib.request

        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            try:
                req = urllib.request.Request(f"{self.dashboard}/api/version",
                                             headers={"Authorization": f"Bearer {self.token}"})
                with urllib.request.urlopen(req, timeout=5) as r:
                    if r.status == 200:
                        return
            except Exception:
                pass
            time.sleep(1.0)
        raise TimeoutError(f"dashboard {self.dashboard} not up in {timeout:.0f}s")

    def kill_worker(self) -> None:
        """Stop the worker node abruptly (KILL its whole process group)."""
        if self.worker is not None:
            try:
                os.killpg(os.getpgid(self.worker.pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.worker.wait(timeout=10)

    def ensure_worker(self, timeout: float = 120.0) -> None:
        """Restart the worker node if it was stopped (a failed test must not take the next test's node).  A killed
        worker stays "alive" in the GCS until its health checks time out: the new one starts after that, or the
        cluster would count a dead node (which sees no file) beside the new one."""
        if self.worker is None or self.worker.poll() is not None:
            self.worker = None  # stopped: not a process to watch while the GCS notices
            self.wait_nodes(1, timeout)
            self.start_worker()
            self.wait_nodes(2, timeout)

    def log(self, name: str) -> str:
        p = self.tmp / f"{name}.log"
        return p.read_text(errors="replace")[-4000:] if p.exists() else ""

    def stop(self) -> None:
        stop_group(self.worker)
        stop_group(self.head)
        self.worker = self.head = None
        shutil.rmtree(self.tmp, ignore_errors=True)
