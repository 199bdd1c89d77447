"""The carry: what a policy needs besides the observation, handed from each step to the next and from each rollout
to the next (envs are never reset between rollouts).

Every policy kind takes the same ``Carry`` and reads what it needs: a recurrent core its state and the episode
starts (it resets where an episode starts, lstm.reset_on_done), a masked policy the action masks
(aux.action_masking); the others ignore it. The trainer keeps the carry in ``TrainerState`` and checkpoints it.
Where the rollout and evaluation hold it (``actors``), ``start`` and ``mask`` are numpy arrays as the envs give
them; the actor hands the policy the same carry with torch tensors. ``state`` is a torch tensor on the policy's
device throughout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .envs import action_masks


@dataclass(frozen=True)
class Carry:
    start: np.ndarray | torch.Tensor  # (N,) float: 1.0 where the observation begins an episode
    mask: np.ndarray | torch.Tensor | None = None  # (N, mask size) bool: the valid actions (aux.action_masking)
    state: torch.Tensor | None = None  # (2, N, H): a recurrent core's hidden and cell state before the observation

    def after_step(self, done: np.ndarray, envs) -> "Carry":
        """The carry of the observation ``envs`` just returned: ``done`` their episode ends (the observation then
        begins a new episode), the envs' action masks where the policy takes them (after an autoreset: the new
        episode's first), the state as the policy's ``act`` left it."""
        return Carry(done.astype(np.float32), None if self.mask is None else action_masks(envs), self.state)

    def continuing(self, index: np.ndarray) -> "Carry":
        """Envs ``index`` as if their episodes went on: their state, no episode start. For the value of a
        truncated episode's final observation, which follows the episode's last state without a reset."""
        return Carry(start=np.zeros(len(index), np.float32),
                     state=None if self.state is None else self.state[:, index])

    def to_checkpoint(self) -> dict:
        return {"start": torch.as_tensor(self.start).clone(),
                "mask": None if self.mask is None else torch.as_tensor(self.mask).clone(),
                "state": None if self.state is None else self.state.detach().cpu().clone()}

    @staticmethod
    def from_checkpoint(saved: dict, device: torch.device) -> "Carry":
        return Carry(start=saved["start"].numpy().copy(),
                     mask=None if saved["mask"] is None else saved["mask"].numpy().copy(),
                     state=None if saved["state"] is None else saved["state"].to(device))
