"""Rewards of any task of a domain for stored physics states (ExORL relabelling).

ExORL recomputes a downstream reward per stored state with
``with physics.reset_context(): physics.set_state(s)`` and ``task.get_reward``.
``reset_context`` also resets the whole ``mjData`` and wraps the call in
invalid-state checks; here the state is written straight into ``qpos, qvel,
act`` and ``mj_forward`` recomputes every derived quantity (positions,
velocities, sensors, contacts), which gives bit-identical rewards at about twice
the speed per core.

Exact for tasks whose reward is a function of the physics state and the
control (walker, quadruped walk/run, cheetah, cartpole, hopper, humanoid ...).
Some rewards read the control of the step as well (cartpole's, hopper stand's
and humanoid's ``small_control`` term), which ``physics.get_state()`` does not
hold: pass the stored actions (row ``i``'s action is the control that produced
row ``i``'s state, rescaled to the task's bounds as :meth:`Env.scale_action`
does) and ``data.ctrl`` is set before ``mj_forward``.  ExORL's method sets no
control and is off by up to 0.2 per step on cartpole.  Tasks whose reward
also depends on per-episode randomisation stored *outside* the state (reacher's
target, fish's target, quadruped escape's terrain) cannot be relabelled from
the state alone; :func:`relabel_exact` tells them apart.
"""
from __future__ import annotations

import numpy as np

from .core import Env, parse_task

# Tasks whose reward reads model quantities that are randomised per episode.
_NOT_STATE_ONLY = {("reacher", "easy"), ("reacher", "hard"), ("fish", "swim"), ("fish", "upright"),
                   ("quadruped", "escape"), ("quadruped", "fetch"), ("manipulator", "bring_ball"),
                   ("manipulator", "bring_peg"), ("manipulator", "insert_ball"), ("manipulator", "insert_peg"),
                   ("point_mass", "hard"), ("stacker", "stack_2"), ("stacker", "stack_4")}


def relabel_exact(domain: str, task: str) -> bool:
    """Whether a task's reward is a function of the stored physics state alone."""
    return (domain, task) not in _NOT_STATE_ONLY


class TaskReward:
    """Computes one task's reward for batches of physics states."""

    def __init__(self, domain: str, task: str):
        self.domain, self.task_name = parse_task(task, domain)
        self._env = Env(self.domain, self.task_name, seed=0)
        self._physics = self._env.physics
        self._task = self._env.task
        m = self._physics.model
        self._nq, self._nv, self._na = int(m.nq), int(m.nv), int(m.na)
        self.physics_dim = self._nq + self._nv + self._na

    def __call__(self, states: np.ndarray, actions: np.ndarray | None = None) -> np.ndarray:
        """Rewards (float64, shape (N,)) for physics states of shape (N, physics_dim).

        ``actions`` (N, action_dim) in [-1, 1]: the control of each state's step
        (needed by rewards with a control term; see the module docstring).
        Without them the control is zero.
        """
        import mujoco

        states = np.asarray(states, dtype=np.float64)
        if states.ndim != 2 or states.shape[1] != self.physics_dim:
            raise ValueError(f"physics states must have shape (N, {self.physics_dim}) for "
                             f"{self.domain}, got {states.shape}")
        ph = self._physics
        model, data = ph.model.ptr, ph.data.ptr
        nq, nv = self._nq, self._nv
        if actions is not None:
            actions = np.asarray(actions)
            if actions.shape != (states.shape[0], self._env.spec.action_dim):
                raise ValueError(f"actions must have shape ({states.shape[0]}, {self._env.spec.action_dim}), "
                                 f"got {actions.shape}")
            controls = self._env.scale_action(actions)
        data.ctrl[:] = 0.0
        out = np.empty(states.shape[0], dtype=np.float64)
        for i, s in enumerate(states):
            data.qpos[:] = s[:nq]
            data.qvel[:] = s[nq:nq + nv]
            if self._na:
                data.act[:] = s[nq + nv:]
            if actions is not None:
                data.ctrl[:] = controls[i]
            mujoco.mj_forward(model, data)
            out[i] = self._task.get_reward(ph)
        return out


def task_rewards(domain: str, task: str, states: np.ndarray, actions: np.ndarray | None = None) -> np.ndarray:
    """Convenience wrapper: rewards of ``domain``/``task`` for ``states`` (N, P) and their ``actions``."""
    return TaskReward(domain, task)(states, actions)


def task_rewards_exorl(domain: str, task: str, states: np.ndarray) -> np.ndarray:
    """ExORL's reference method (one ``reset_context`` + ``set_state`` per state).

    Kept as the baseline of ``bench/bench_relabel.py`` and as an oracle in tests.
    """
    env = Env(domain, task, seed=0)
    ph, tk = env.physics, env.task
    out = np.empty(len(states), dtype=np.float64)
    for i, s in enumerate(np.asarray(states, dtype=np.float64)):
        with ph.reset_context():
            ph.set_state(s)
        out[i] = tk.get_reward(ph)
    return out
