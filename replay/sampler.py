"""Uniform mini-batch sampling of transitions into typed ``Batch`` objects."""
from __future__ import annotations

import numpy as np
import torch

from .batch import Batch
from .reader import Transitions


class TransitionSampler:
    """Samples ``Batch``es uniformly with replacement from in-memory transitions.

    The arrays are converted to torch tensors once (on ``device``), so a sample
    is one index draw plus five gathers.
    """

    def __init__(self, transitions: Transitions, batch_size: int, device: str | torch.device = "cpu",
                 seed: int | None = None):
        if len(transitions) == 0:
            raise ValueError("cannot sample from an empty dataset")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self._t = {k: torch.as_tensor(np.ascontiguousarray(v, dtype=np.float32)).to(self.device)
                   for k, v in dict(obs=transitions.obs, action=transitions.action,
                                    reward=transitions.reward.reshape(-1, 1), next_obs=transitions.next_obs,
                                    discount=transitions.discount.reshape(-1, 1)).items()}
        self.size = len(transitions)
        self._gen = torch.Generator(device="cpu")
        self._gen.manual_seed(0 if seed is None else int(seed))

    def sample(self) -> Batch:
        idx = torch.randint(0, self.size, (self.batch_size,), generator=self._gen).to(self.device)
        return Batch(**{k: v.index_select(0, idx) for k, v in self._t.items()})

    def state_dict(self) -> dict:
        return {"generator": self._gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self._gen.set_state(state["generator"])
