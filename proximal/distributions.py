"""Action distributions as plain functions of the head's output.

Sampling takes its noise from the caller (drawn from the run's numpy RNG), so the torch rollout path and the
numpy fast path (``actors.NumpyMLPActor``) draw the same action from the same RNG state. The functions use raw
tensor ops rather than ``torch.distributions``, whose per-call construction costs more than the tiny MLP's
forward pass; tests check that they agree with it.
"""

from __future__ import annotations

import numpy as np
import torch


class Categorical:
    """Discrete actions: logits of shape (B, n)."""

    @staticmethod
    def noise(rng: np.random.Generator, logits_shape: tuple[int, ...]) -> np.ndarray:
        return rng.gumbel(size=logits_shape)

    @staticmethod
    def sample(logits: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        # Gumbel-max: argmax(logits + Gumbel noise) is an exact sample of softmax(logits)
        return (logits + noise).argmax(-1)

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
