"""Helpers shared by tests (not fixtures)."""
from __future__ import annotations

import numpy as np


def collect_episode(domain: str, task: str, seed: int, steps: int, episode_id: str = "ep"):
    """Run random actions in a live env; return (Episode, live rewards per step)."""
    from envs import Env
    from replay import Episode

    env = Env(domain, task, seed=seed)
    rng = np.random.default_rng(seed)
    s = env.reset()
    obs, act, phys, disc, rew = [s.obs], [np.zeros(env.spec.action_dim, np.float32)], [env.physics_state()], [1.0], [0.0]
    for _ in range(steps):
        a = rng.uniform(-1, 1, env.spec.action_dim).astype(np.float32)
        s = env.step(a)
        obs.append(s.obs); act.append(a); phys.append(env.physics_state()); disc.append(s.discount)
        rew.append(s.reward)
    ep = Episode(episode_id, np.array(obs), np.array(act), np.array(phys), np.array(disc, np.float32))
    return ep, np.array(rew), env.spec
