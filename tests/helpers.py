"""Helpers shared by tests (not fixtures)."""
from __future__ import annotations

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
