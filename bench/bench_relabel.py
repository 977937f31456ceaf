"""Relabel throughput: bex against ExORL's per-state method, side by side.

ExORL (denisyarats/exorl) relabels each stored state with
``with physics.reset_context(): physics.set_state(s)`` then ``task.get_reward``
in one process.  bex writes ``qpos/qvel/act`` directly and calls ``mj_forward``
(envs/rewards.py).  Both run here on the same states; rewards must be identical.
Then the parallel figure: ``replay.relabel`` over a real dataset with a process
pool of all cores.

    python bench/bench_relabel.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("MUJOCO_GL", "disable")

import numpy as np
from common import machine_label

from bex.envs import Env, TaskReward, task_rewards_exorl


def states(domain: str, task: str, n: int, seed: int = 0) -> np.ndarray:
    env, rng, out = Env(domain, task, seed=seed), np.random.default_rng(seed), []
    env.reset()
    while len(out) < n:
        s = env.step(rng.uniform(-1, 1, env.spec.action_dim))
        out.append(env.physics_state())
        if s.last:
            env.reset()
    return np.array(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 5000 if args.quick else 20000
    print(f"# relabel throughput — {machine_label()}")
    print(f"{'task':<16} {'ExORL st/s':>11} {'bex st/s':>10} {'ratio':>6}  identical")
    rows = []
    for domain, task in [("walker", "stand"), ("walker", "run"), ("quadruped", "walk"), ("quadruped", "run")]:
        s = states(domain, task, n)
        t0 = time.perf_counter()
        ref = task_rewards_exorl(domain, task, s)
        t_ref = time.perf_counter() - t0
        tr = TaskReward(domain, task)
        t0 = time.perf_counter()
        mine = tr(s)
        t_bex = time.perf_counter() - t0
        same = bool(np.array_equal(ref, mine))
        rows.append((f"{domain}_{task}", n / t_ref, n / t_bex))
        print(f"{domain + '_' + task:<16} {n / t_ref:>11.0f} {n / t_bex:>10.0f} {t_ref / t_bex:>5.2f}x  {same}")
        assert same, "rewards differ"

    # parallel: a real dataset relabelled with a process pool of all cores
    from bex.replay import DatasetWriter, Episode, relabel
    from bex.replay.relabel import process_pool_map

    s = states("walker", "stand", 4 * n, seed=1)
    env = Env("walker", "stand", seed=0)
    with tempfile.TemporaryDirectory() as d:
        with DatasetWriter(d, env.spec, "random", None, 0, rows_per_file=n) as w:
            for i in range(0, len(s), 1000):
                chunk = s[i:i + 1000]
                m = len(chunk)
                w.write_episode(Episode(f"e{i}", np.zeros((m, 24), np.float32), np.zeros((m, 6), np.float32),
                                        chunk, np.ones(m, np.float32)))
        cores = os.cpu_count() or 1
        t0 = time.perf_counter()
        res = relabel(d, "walker_stand", map_fn=process_pool_map(cores), chunk_rows=n // 2)
        t = time.perf_counter() - t0
        print(f"parallel: walker_stand {res['computed_rows']} states, {cores} processes: "
              f"{res['computed_rows'] / t:.0f} states/s end to end (read, compute, write cache)")


if __name__ == "__main__":
    main()
