"""The declared unit of every pooled difference and aggregate: per task, the uniform random policy's return = 0
and the suite's maximum return = 1.

``normalised(R, task) = (R − random(task)) / (1000 − random(task))``.  Both ends are fixed before any data is
seen.  The upper end is dm_control's maximum episode return, 1000 for every task (1000 steps, each reward in
[0, 1]): an expert score would be a better reference where one is published for every task at this scale, but
none is for bex's small learners, and a reference taken from the compared runs themselves would make the unit
depend on the data.  The lower end removes what a task gives for nothing (walker stand pays ~130 to a random
policy, walker run ~25), so that a pooled difference is not ruled by the task with the largest free baseline;
raw return / 1000 mixes stand (~0.4) with run (~0.04) and an aggregate over it is stand's.

:data:`RANDOM_POLICY` holds the random policy's mean return over 100 episodes (``bex.envs``'s
``random_policy``, environment seeds 0..99), measured once (docs/replication.md, "Units"); a task not in it is
measured the same way when first needed (seconds to a minute; the same numbers every time).
"""
from __future__ import annotations

import functools

MAX_RETURN = 1000.0
EPISODES = 100

#: Mean return of the uniform random policy over 100 episodes (:func:`measure_random_return`), per task.
RANDOM_POLICY: dict[str, float] = {
    "walker_stand": 131.748, "walker_walk": 32.307, "walker_run": 23.261,
    "quadruped_walk": 103.637, "quadruped_run": 105.018, "cheetah_run": 3.574,
    "cartpole_balance": 337.366, "cartpole_swingup": 26.916, "hopper_hop": 0.068, "hopper_stand": 1.647,
}


@functools.lru_cache(maxsize=None)
def random_return(task: str) -> float:
    """The random policy's reference return on ``task`` (:data:`RANDOM_POLICY`, or measured as it was)."""
    if task in RANDOM_POLICY:
        return RANDOM_POLICY[task]
    return measure_random_return(task)


def measure_random_return(task: str, episodes: int = EPISODES) -> float:
    """The mean return of ``episodes`` episodes of the uniform random policy (actions from one generator seeded
    0; episode ``i`` on environment seed ``i``)."""
    from bex.envs import env_spec, parse_task
    from bex.envs.evaluate import evaluate, random_policy

    domain, name = parse_task(task)
    return evaluate(random_policy(env_spec(domain, name).action_dim, seed=0), domain, name, episodes=episodes).mean


def normalised(value: float, task: str) -> float:
    """``value`` (an episode return on ``task``) in the declared unit."""
    lo = random_return(task)
    return (value - lo) / (MAX_RETURN - lo)


UNIT = ("per task, (return − the uniform random policy's return) / (1000 − the random policy's return): "
        "0 = random policy, 1 = the suite's maximum return")

__all__ = ["MAX_RETURN", "RANDOM_POLICY", "UNIT", "normalised", "random_return", "measure_random_return"]
