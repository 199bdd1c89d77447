"""Network building blocks."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
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


# A trunk maps observations to features: one tensor that both heads read, or a pair (the policy head's, the value
# head's). It tells the policy its sizes: ``width`` and ``value_width`` (the features' last axis) and ``rows`` (rows
# of features per observation for the policy head: 1, or one per cell of a grid).


def flat_observations(obs: torch.Tensor) -> torch.Tensor:
    """(N, features) float input of a flat trunk. Integer observations (uint8 vectors, small images and grids that
    no CNN takes) are cast to float32 unscaled, as the reference's ``encode_observation`` (``tf.to_float``): only
    the Nature CNN divides by 255. A scalar observation space gives (N,) rows: one feature each."""
    obs = obs.flatten(1) if obs.dim() > 1 else obs.unsqueeze(1)
    return obs if obs.is_floating_point() else obs.float()


class MLPTrunk(nn.Module):
    """Tanh MLP trunks on flattened observations, for the policy head and the value head: separate ones (``actor``,
    ``critic``) where the run's separate-networks detail is on, else one ``actor`` under both heads (the critic
    reads the actor's features)."""

    def __init__(self, in_size: int, hidden_sizes: tuple[int, ...], orthogonal: bool, separate: bool):
        super().__init__()
        self.actor = mlp(in_size, hidden_sizes, orthogonal)
        self.critic = mlp(in_size, hidden_sizes, orthogonal) if separate else None
        self.width = self.value_width = hidden_sizes[-1]
        self.rows = 1

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        obs = flat_observations(obs)
        features = self.actor(obs)
        return features, features if self.critic is None else self.critic(obs)


class FlatTrunk(nn.Module):
    """The flattened observation, through a tanh MLP where ``hidden_sizes`` are given: the input of a recurrent
    core (the reference's ``lstm`` network feeds the observation straight in)."""

    def __init__(self, in_size: int, hidden_sizes: tuple[int, ...] = (), orthogonal: bool = True):
        super().__init__()
        self.mlp = mlp(in_size, hidden_sizes, orthogonal)
        self.width = self.value_width = hidden_sizes[-1] if hidden_sizes else in_size
        self.rows = 1

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.mlp(flat_observations(obs))


class LinearHead(nn.Module):
    """A Linear of gain 0.01 (core.orthogonal_init) on the last axis of the features, flattened per sample: logits
    from (B, width) features, or from (B, rows, width) ones, each row (a grid's cell) through the same weights."""

    def __init__(self, width: int, out: int, orthogonal: bool):
        super().__init__()
        self.linear = layer_init(nn.Linear(width, out), 0.01, orthogonal)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features).flatten(1)


class GaussianHead(nn.Module):
    """The mean (cont.gaussian, a Linear of gain 0.01) and log std of a Gaussian policy. cont.state_independent_logstd
    on (the reference): ``log_std``, a learned vector with one entry per action dimension, initialised to 0, that
    does not depend on the observation; off: ``log_std_head``, a Linear from the features initialised like the
    mean (gain 0.01, zero bias, under core.orthogonal_init), so the log std starts near 0 as in the reference and
    only its dependence on the observation differs."""

    def __init__(self, width: int, act_dim: int, orthogonal: bool, state_independent: bool):
        super().__init__()
        self.mean = layer_init(nn.Linear(width, act_dim), 0.01, orthogonal)
        if state_independent:
            self.log_std = nn.Parameter(torch.zeros(act_dim))
            self.log_std_head = None
        else:
            self.register_parameter("log_std", None)
            self.log_std_head = layer_init(nn.Linear(width, act_dim), 0.01, orthogonal)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.mean(features)
        log_std = self.log_std.expand_as(mean) if self.log_std_head is None else self.log_std_head(features)
        return mean, log_std


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
        self.width = self.value_width = 512
        self.rows = 1
        # channels-last convolutions: the same values, ~25% faster training steps on CPU (oneDNN's native layout)
        self.convs.to(memory_format=torch.channels_last)
        self.channels_last = True  # update.channels_last_frames lays a batch's frames out this way, once per update

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.contiguous(memory_format=torch.channels_last)  # laid out while still 1 byte per pixel
        # Under bf16 autocast (precision) the first convolution would cast its input to bf16 anyway: the frames go
        # to bf16 at once, half the bytes to write and read. Bytes and 255 are exact in bf16, and a bf16 division
        # rounds the float32 quotient once, as that cast does: the same values.
        kind = x.device.type
        bf16 = torch.is_autocast_enabled(kind) and torch.get_autocast_dtype(kind) == torch.bfloat16
        x = x.to(torch.bfloat16 if bf16 else torch.float32, copy=True)
        if self.scale:
            x.div_(255.0)  # in place: a new tensor, no second image-sized one
        return self.fc(self.convs(x))


# The cost of a fused nn.LSTM call on the CPU (128 units, one thread, forward and backward) in rows, one row being
# one step of one sequence (about 7 us): about 350 us per call plus about one row per time step, whatever the
# number of sequences. ``replay_plan`` groups the episode segments into calls by this model.
CALL_COST_ROWS = 50


def _outside_autocast(method, x: torch.Tensor, *args):
    """``method(x, *args)`` in float32, autocast off: under bf16 autocast (``precision``) the core runs in float32,
    since its state is carried across a whole rollout, and the rollout's single-step cell and training's fused
    sequences must compute the same numbers. An fp32 run never comes here (one check per call)."""
    with torch.autocast(x.device.type, enabled=False):
        return method(x.float(), *args)


class LSTMCore(nn.Module):
    """The recurrent core between a trunk and the heads: one LSTM layer, its state (hidden and cell) kept as one
    (2, N, H) tensor per batch of envs.

    lstm.init: input and recurrent weights orthogonal with gain 1 over the whole four-gate matrix, all biases 0,
    as the reference's ``lstm`` (``ortho_init(1.0)`` on wx and wh, zero b; no forget-gate offset). Off: PyTorch's
    default LSTM init. lstm.reset_on_done: before each step, the state of an env whose input starts an episode is
    multiplied by 0, in ``step`` (the rollout) and in ``replay`` (training). Off: the state is carried across
    episodes.
    """

    def __init__(self, in_size: int, hidden_size: int, orthogonal: bool = True, reset_on_done: bool = True):
        super().__init__()
        self.lstm = nn.LSTM(in_size, hidden_size)
        self.hidden_size = hidden_size
        self.reset_on_done = reset_on_done  # lstm.reset_on_done
        if orthogonal:  # lstm.init
            for name, param in self.lstm.named_parameters():
                if name.startswith("weight"):
                    nn.init.orthogonal_(param, 1.0)
                else:
                    nn.init.zeros_(param)

    def initial_state(self, num_envs: int) -> torch.Tensor:
        """lstm.zero_state: hidden and cell state of ``num_envs`` envs, all zeros."""
        return torch.zeros(2, num_envs, self.hidden_size, device=self.lstm.weight_hh_l0.device)

    def step(self, x: torch.Tensor, state: torch.Tensor, start: torch.Tensor):
        """One step of N envs: ``x`` (N, F), ``state`` (2, N, H), ``start`` (N,) 1.0 where ``x`` is the first input
        of an episode. Returns the output (N, H) and the new state."""
        if torch.is_autocast_enabled(x.device.type):
            return _outside_autocast(self.step, x, state, start)
        if self.reset_on_done:
            state = state * (1.0 - start.view(1, -1, 1))
        # the LSTM's own cell function: for one step it costs half of an nn.LSTM call (oneDNN's setup)
        lstm = self.lstm
        h, c = torch.lstm_cell(x, (state[0], state[1]), lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0,
                               lstm.bias_hh_l0)
        return h, torch.stack([h, c])

    def replay(self, x: torch.Tensor, starts: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """The outputs of whole sequences, as ``step`` would give them one step at a time: ``x`` (T, k, F) inputs
        of k envs, ``starts`` (T, k) their episode starts, ``state`` (2, k, H) their state before the first step.

        With lstm.reset_on_done a reset state is exactly a zero state, so every episode segment is an
        independent sequence from a known state: the stored one for the segment at t = 0, zeros for the others.
        The segments run in a few fused calls (``replay_plan``), each over a group of them padded at their ends
        to the group's longest; padding comes after a segment's last step, so it changes none of its outputs."""
        if torch.is_autocast_enabled(x.device.type):
            return _outside_autocast(self.replay, x, starts, state)
        steps, k, features = x.shape
        plan = replay_plan(starts.cpu().numpy() > 0 if self.reset_on_done else np.zeros((steps, k), bool),
                           x.device)
        if self.reset_on_done:
            state = state * (1.0 - starts[0].view(1, -1, 1))
        # a zero row after the inputs and a zero column after the states: what padding and later segments read
        rows = torch.cat([x.reshape(steps * k, features), x.new_zeros(1, features)])
        state = torch.cat([state, state.new_zeros(2, 1, state.shape[2])], 1)
        outs = []
        for inputs, initial in plan.calls:
            s0 = state.index_select(1, initial)
            out, _ = self.lstm(rows.index_select(0, inputs.view(-1)).view(*inputs.shape, features),
                               (s0[:1], s0[1:]))
            outs.append(out.reshape(-1, self.hidden_size))
        return torch.cat(outs).index_select(0, plan.outputs).view(steps, k, self.hidden_size)


@dataclass
class ReplayPlan:
    """How ``LSTMCore.replay`` runs k sequences of T steps. ``calls``: per fused call, the (L, m) input rows of
    its m segments (t-major rows t * k + env; T * k is the zero row of the padding) and the (m,) state columns
    they start from (k is the zero column). ``outputs``: for each t-major row, where its output lies in the calls'
    outputs, flattened and concatenated."""

    calls: list[tuple[torch.Tensor, torch.Tensor]]
    outputs: torch.Tensor


def replay_plan(starts: np.ndarray, device: torch.device) -> ReplayPlan:
    """The episode segments of k sequences split where ``starts`` (T, k) is true (each sequence's first segment
    begins at t = 0), longest first, grouped into calls by a dynamic program that minimizes the rows run,
    padding included, plus ``CALL_COST_ROWS`` per call and one row per time step of a call. Sorted by length,
    some optimal grouping takes consecutive segments, and a call runs its first (longest) segment's length."""
    steps, k = starts.shape
    begins = starts.T.copy()
    begins[:, 0] = True
    env, t0 = np.nonzero(begins)  # env by env, in time order
    first = env * steps + t0
    lengths = np.append(first[1:], k * steps) - first
    order = np.argsort(-lengths, kind="stable")
    env, t0, lengths = env[order], t0[order], lengths[order]
    n = len(lengths)
    best, cut = np.zeros(n + 1), np.zeros(n + 1, np.int64)  # best[j]: cost of the j longest; cut[j]: last call
    for j in range(1, n + 1):
        cost = best[:j] + CALL_COST_ROWS + lengths[:j] * (j - np.arange(j) + 1)
        cut[j] = cost.argmin()
        best[j] = cost[cut[j]]
    bounds = [n]
    while bounds[-1] > 0:
        bounds.append(int(cut[bounds[-1]]))
    bounds.reverse()
    calls, outputs, offset = [], np.empty(steps * k, np.int64), 0
    for a, b in zip(bounds[:-1], bounds[1:]):
        position = np.arange(lengths[a])[:, None]
        valid = position < lengths[a:b]
        rows = (t0[a:b] + position) * k + env[a:b]
        outputs[rows[valid]] = offset + np.flatnonzero(valid)
        offset += valid.size
        initial = np.where(t0[a:b] == 0, env[a:b], k)
        calls.append((torch.from_numpy(np.where(valid, rows, steps * k)).to(device),
                      torch.from_numpy(initial).to(device)))
    return ReplayPlan(calls, torch.from_numpy(outputs).to(device))


class GridCNN(nn.Module):
    """A trunk for games on a grid with one action group per cell (Gym-muRTS's grid mode): (N, H, W, C)
    observations, channels last as the env gives them, to per-cell features (N, H * W, 96) and global features
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
        # a trunk's sizes: the policy head reads one row of features per cell
        self.width, self.rows, self.value_width = 32 + 64, height * width, 256

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-cell features (N, H * W, 96), cell-major as the actions and the env's masks; global features)."""
        x = obs.permute(0, 3, 1, 2).float()
        local = self.local(x)
        coarse = self.coarse(local)
        height, width = self.grid_size
        cells = torch.cat([local, self.upsample(coarse)[:, :, :height, :width]], 1)
        return cells.permute(0, 2, 3, 1).flatten(1, 2), self.fc(coarse)
