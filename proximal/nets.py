"""Network building blocks."""

from __future__ import annotations

import math

import torch
from torch import nn


def layer_init(layer: nn.Linear, gain: float = math.sqrt(2), orthogonal: bool = True) -> nn.Linear:
    """core.orthogonal_init: orthogonal weights scaled by ``gain`` and zero biases, as the reference's ``ortho_init``.
    With ``orthogonal=False`` the layer keeps PyTorch's default initialization (the detail switched off)."""
    if orthogonal:
        nn.init.orthogonal_(layer.weight, gain)
        nn.init.zeros_(layer.bias)
    return layer


def mlp(in_size: int, hidden_sizes: tuple[int, ...], orthogonal: bool) -> nn.Sequential:
    """Tanh MLP trunk with hidden layers of gain sqrt(2)."""
    layers: list[nn.Module] = []
    for size in hidden_sizes:
        layers += [layer_init(nn.Linear(in_size, size), math.sqrt(2), orthogonal), nn.Tanh()]
        in_size = size
    return nn.Sequential(*layers)
