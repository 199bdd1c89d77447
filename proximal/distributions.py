"""Action distributions as plain functions of the head's output.

The rollout calls ``sample`` and ``log_prob``; training calls ``log_prob`` and ``entropy``. They are written
with raw tensor ops rather than ``torch.distributions`` because the per-step overhead of constructing a
distribution object is larger than the tiny MLP's forward pass (tests check they agree with it).
"""

from __future__ import annotations

import torch


class Categorical:
    """Discrete actions: logits of shape (B, n)."""

    @staticmethod
    def sample(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # Gumbel-max: argmax(logits + Gumbel noise) is an exact sample of softmax(logits)
        u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
        return (logits - torch.log(-torch.log(u))).argmax(-1)

    @staticmethod
    def mode(logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(-1)

    @staticmethod
    def log_prob(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits, -1)
        return logp.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    @staticmethod
    def entropy(logits: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits, -1)
        return -(logp.exp() * logp).sum(-1)
