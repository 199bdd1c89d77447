"""numpy building blocks of the CPU fast paths (``numpy_actor``, ``numpy_update``): the same arithmetic as the
torch modules they stand in for, on numpy views of the torch parameters."""

from __future__ import annotations

import numpy as np
from torch import nn

from .distributions import LOG_SQRT_2PI

LOG_SQRT_2PI_32 = np.float32(LOG_SQRT_2PI)


def linear_layers(trunk: nn.Sequential) -> list[nn.Linear]:
    """The Linear layers of a tanh MLP trunk (``nets.mlp``: Linear/Tanh pairs), in order."""
    assert all(isinstance(m, (nn.Linear, nn.Tanh)) for m in trunk)
    return [m for m in trunk if isinstance(m, nn.Linear)]


def tanh_mlp(layers: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> list[np.ndarray]:
    """Activations of every layer of a tanh MLP with (weight, bias) ``layers`` (weight (out, in), as torch's),
    input first."""
    acts = [x]
    for weight, bias in layers:
        acts.append(np.tanh(acts[-1] @ weight.T + bias))
    return acts


def gaussian_log_prob(mean: np.ndarray, log_std: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log N(actions; mean, exp(log_std)) summed over the action dimensions (cont.independent_dims), z): as
    ``distributions.DiagGaussian.log_prob``; z = (actions - mean) / std is what the gradients need."""
    z = (actions - mean) * np.exp(-log_std)
    return (-0.5 * z * z - log_std - LOG_SQRT_2PI_32).sum(-1), z
