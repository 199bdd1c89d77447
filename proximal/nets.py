"""Network building blocks."""

from __future__ import annotations

import math

import torch
from torch import nn


def layer_init(layer: nn.Module, gain: float = math.sqrt(2), orthogonal: bool = True) -> nn.Module:
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


class NatureCNN(nn.Module):
    """atari.nature_cnn: the reference's ``nature_cnn`` trunk, (N, C, 84, 84) images to 512 features.

    conv 32x8x8 stride 4, conv 64x4x4 stride 2, conv 64x3x3 stride 1 (each followed by ReLU), flatten, linear
    512, ReLU; every layer initialized with gain sqrt(2) (core.orthogonal_init). With ``scale`` (atari.scale_obs)
    the input, stored as uint8, is divided by 255 inside the network; without it the network sees 0..255.
    """

    def __init__(self, obs_shape: tuple[int, ...], orthogonal: bool = True, scale: bool = True):
        super().__init__()
        self.scale = scale  # atari.scale_obs
        channels = obs_shape[0]
        gain = math.sqrt(2)
        self.convs = nn.Sequential(
            layer_init(nn.Conv2d(channels, 32, 8, stride=4), gain, orthogonal), nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2), gain, orthogonal), nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1), gain, orthogonal), nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, *obs_shape)).shape[1]
        self.fc = nn.Sequential(layer_init(nn.Linear(flat, 512), gain, orthogonal), nn.ReLU())
        self.out_size = 512

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float()
        if self.scale:
            x = x / 255.0
        return self.fc(self.convs(x))


class GridCNN(nn.Module):
    """A trunk for games on a grid with one action group per cell (Gym-muRTS's grid mode): (N, H, W, C)
    observations, channels last as the env gives them, to per-cell features (N, 96, H, W) and global features
    (N, 256).

    Per cell: a 3x3 conv (32 channels) of the cell's neighbourhood, concatenated with a coarse map upsampled back
    to the grid (64 channels: two 3x3 convs, each after a 2x2 max-pool, so every cell sees its region of a
    quarter-resolution map). Global: the coarse map flattened, linear 256. ReLU throughout, gain sqrt(2)
    (core.orthogonal_init). Small on purpose: it trains at a few hundred steps per second on two CPU cores.
    """

    def __init__(self, obs_shape: tuple[int, ...], orthogonal: bool = True):
        super().__init__()
        height, width, channels = obs_shape
        gain = math.sqrt(2)
        self.local = nn.Sequential(layer_init(nn.Conv2d(channels, 32, 3, padding=1), gain, orthogonal), nn.ReLU())
        self.coarse = nn.Sequential(
            nn.MaxPool2d(2, ceil_mode=True), layer_init(nn.Conv2d(32, 64, 3, padding=1), gain, orthogonal), nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True), layer_init(nn.Conv2d(64, 64, 3, padding=1), gain, orthogonal), nn.ReLU(),
        )
        coarse_size = 64 * math.ceil(math.ceil(height / 2) / 2) * math.ceil(math.ceil(width / 2) / 2)
        self.upsample = nn.Upsample(scale_factor=4, mode="nearest")
        self.grid_size = (height, width)
        self.fc = nn.Sequential(nn.Flatten(), layer_init(nn.Linear(coarse_size, 256), gain, orthogonal), nn.ReLU())
        self.cell_size, self.out_size = 32 + 64, 256

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = obs.permute(0, 3, 1, 2).float()
        local = self.local(x)
        coarse = self.coarse(local)
        height, width = self.grid_size
        cells = torch.cat([local, self.upsample(coarse)[:, :, :height, :width]], 1)
        return cells, self.fc(coarse)
