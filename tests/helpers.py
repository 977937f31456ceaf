"""Helpers shared by tests (not fixtures)."""
from __future__ import annotations

import os

import numpy as np


def collect_episode(domain: str, task: str, seed: int, steps: int, episode_id: str = "ep"):
    """Run random actions in a live env; return (Episode, live rewards per step)."""
    from bex.envs import Env
    from bex.replay import Episode

    env = Env(domain, task, seed=seed)
    rng = np.random.default_rng(seed)
    s = env.reset()
    obs, act, phys = [s.obs], [np.zeros(env.spec.action_dim, np.float32)], [env.physics_state()]
    disc, rew = [1.0], [0.0]
    for _ in range(steps):
        a = rng.uniform(-1, 1, env.spec.action_dim).astype(np.float32)
        s = env.step(a)
        obs.append(s.obs)
        act.append(a)
        phys.append(env.physics_state())
        disc.append(s.discount)
        rew.append(s.reward)
    ep = Episode(episode_id, np.array(obs), np.array(act), np.array(phys), np.array(disc, np.float32))
    return ep, np.array(rew), env.spec


def last_json(stdout: str) -> dict:
    """The last JSON object line of a command's stdout (Ray may print notices after it)."""
    import json

    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"no JSON line in output: {stdout[-500:]!r}")


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, read from /proc."""
    import os

    tree: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(d))
    return tree


def kill_descendant(root_pid: int, pattern: str) -> int:
    """SIGKILL the first process under ``root_pid`` whose command line contains ``pattern``.

    Ray workers are descendants of the driver that started the embedded Ray, so
    this never touches another Ray instance on the same machine.
    """
    import os
    import signal

    tree, stack = _children(), [root_pid]
    while stack:
        pid = stack.pop(0)
        for child in tree.get(pid, []):
            try:
                with open(f"/proc/{child}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if pattern in cmd:
                os.kill(child, signal.SIGKILL)
                return child
            stack.append(child)
    raise AssertionError(f"no process under {root_pid} matches {pattern!r}")


def listening_sockets(pids: set[int]) -> list[tuple[int, str, int]]:
    """``(pid, address, port)`` of every TCP socket in LISTEN state owned by one of ``pids`` (from /proc)."""
    import socket as _socket
    import struct

    inodes: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    inodes[link[8:-1]] = pid
        except OSError:
            continue
    out = []
    for table, family in (("/proc/net/tcp", _socket.AF_INET), ("/proc/net/tcp6", _socket.AF_INET6)):
        with open(table) as f:
            next(f)
            for line in f:
                parts = line.split()
                local, state, inode = parts[1], parts[3], parts[9]
                if state != "0A" or inode not in inodes:
                    continue
                host, port = local.split(":")
                raw = bytes.fromhex(host)
                if family == _socket.AF_INET:
                    addr = _socket.inet_ntop(family, raw[::-1])
                else:  # four little-endian 32-bit words
                    addr = _socket.inet_ntop(family, b"".join(struct.pack(">I", w) for w in
                                                              struct.unpack("<4I", raw)))
                out.append((inodes[inode], addr, int(port, 16)))
    return sorted(out)


def descendants(pid: int) -> set[int]:
    """``pid`` and every process below it (from /proc)."""
    children = _children()
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        if p not in out:
            out.add(p)
            todo.extend(children.get(p, []))
    return out
