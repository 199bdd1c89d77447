"""Action distributions as plain functions of the heads' output (``params``): logits for ``Categorical``,
(mean, log std) for ``DiagGaussian``.

Sampling takes its noise from the caller (drawn from the run's numpy RNG), so the torch rollout path and the
numpy fast path (``actors.NumpyMLPActor``) draw the same action from the same RNG state. The functions use raw
tensor ops rather than ``torch.distributions``, whose per-call construction costs more than the tiny MLP's
forward pass; tests check that they agree with it.
"""

from __future__ import annotations

import math

import numpy as np
import torch


class Categorical:
    """Discrete actions: logits of shape (B, n)."""

    @staticmethod
    def noise_shape(logits: torch.Tensor) -> tuple[int, ...]:
        return tuple(logits.shape)

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


_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


class DiagGaussian:
    """Continuous actions (cont.gaussian): a Normal per action dimension, parameterized by ``(mean, log_std)``,
    both of shape (B, act_dim) (a state-independent log std is expanded to the mean's shape, which costs nothing).

    cont.independent_dims: the dimensions are independent, so the log-prob and the entropy of an action are sums
    over its dimensions.
    """

    @staticmethod
    def noise_shape(params: tuple[torch.Tensor, torch.Tensor]) -> tuple[int, ...]:
        return tuple(params[0].shape)

    @staticmethod
    def noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return rng.standard_normal(size=shape, dtype=np.float32)

    @staticmethod
    def sample(params: tuple[torch.Tensor, torch.Tensor], noise: torch.Tensor) -> torch.Tensor:
        mean, log_std = params
        return mean + log_std.exp() * noise

    @staticmethod
    def mode(params: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return params[0]

    @staticmethod
    def log_prob(params: tuple[torch.Tensor, torch.Tensor], actions: torch.Tensor) -> torch.Tensor:
        mean, log_std = params
        z = (actions - mean) * (-log_std).exp()
        return (-0.5 * z * z - log_std - _LOG_SQRT_2PI).sum(-1)

    @staticmethod
    def entropy(params: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return (0.5 + _LOG_SQRT_2PI + params[1]).sum(-1)


# Gauss-Hermite nodes and weights for E[f(u)], u ~ N(mu, sigma^2) = sum_k w_k f(mu + sigma sqrt(2) x_k) / sqrt(pi)
_HERMITE_X, _HERMITE_W = np.polynomial.hermite.hermgauss(48)


def tanh_log_det(u: torch.Tensor) -> torch.Tensor:
    """log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), elementwise, finite for every u (the direct formula
    gives log 0 = -inf in float32 once |u| > 9)."""
    return 2.0 * (math.log(2.0) - u - torch.nn.functional.softplus(-2.0 * u))


class TanhDiagGaussian(DiagGaussian):
    """The ``squash_actions`` option: the policy samples u from ``DiagGaussian`` and the env receives
    a = low + (tanh(u) + 1) / 2 (high - low) (``policy.EnvAction``), so no action needs clipping. The rollout
    stores u; ``log_prob`` is the density of a:

        log p(a) = log N(u) - sum_d [log(1 - tanh(u_d)^2) + log((high_d - low_d) / 2)]

    The correction depends only on the stored u, so it cancels in the ratio pi_new / pi_old; the log-prob and
    the entropy reported include it. The entropy of a, H(u) + E[sum_d log |da_d/du_d|], has no closed form: the
    expectation is taken by 48-point Gauss-Hermite quadrature (deterministic and differentiable in mean and std).
    """

    def __init__(self, low: np.ndarray, high: np.ndarray):
        # sum_d log((high_d - low_d) / 2): the constant part of the log-det
        self.log_half_range = float(np.sum(np.log((np.asarray(high, np.float64) - np.asarray(low, np.float64)) / 2)))

    def log_prob(self, params, actions):
        return DiagGaussian.log_prob(params, actions) - tanh_log_det(actions).sum(-1) - self.log_half_range

    def entropy(self, params):
        mean, log_std = params
        x = torch.as_tensor(_HERMITE_X * math.sqrt(2.0), dtype=mean.dtype, device=mean.device)
        w = torch.as_tensor(_HERMITE_W / math.sqrt(math.pi), dtype=mean.dtype, device=mean.device)
        u = mean.unsqueeze(-1) + log_std.exp().unsqueeze(-1) * x  # (B, act_dim, nodes)
        expected_log_det = (tanh_log_det(u) * w).sum(-1)
        return DiagGaussian.entropy(params) + expected_log_det.sum(-1) + self.log_half_range
