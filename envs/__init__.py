"""dm_control environments, physics state and task rewards (no Ray)."""
from .core import (
    PRIMAL_TASKS,
    Env,
    EnvSpec,
    Step,
    check_domain,
    check_layout,
    collection_task,
    domains,
    env_spec,
    flatten_observation,
    make,
    parse_task,
    tasks_of,
)
from .evaluate import EvalResult, evaluate, random_policy
from .rewards import TaskReward, relabel_exact, task_rewards, task_rewards_exorl

__all__ = ["PRIMAL_TASKS", "check_layout", "collection_task", "Env", "EnvSpec", "Step", "check_domain", "domains",
           "env_spec", "flatten_observation", "make",
           "parse_task", "tasks_of", "EvalResult", "evaluate", "random_policy", "TaskReward",
           "relabel_exact", "task_rewards", "task_rewards_exorl"]
