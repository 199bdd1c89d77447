"""Action distributions: one class per kind of action space, each an instance that follows ``Distribution``, and
``make_distribution``, which picks the class for a space.

The distributions are plain functions of the policy head's output (``params``): logits for ``Categorical`` and
``MultiCategorical`` ((logits, mask) for a masked ``MultiCategorical``, aux.action_masking), (mean, log std) for
``DiagGaussian``. Sampling takes its noise from the caller (drawn from the run's numpy RNG), so the torch rollout
path and the numpy fast path (``numpy_actor.NumpyMLPActor``) draw the same action from the same RNG state. The
functions use raw tensor ops rather than ``torch.distributions``, whose per-call construction costs more than the
tiny MLP's forward pass; tests check that they agree with it.

A new kind of action space is one class with the ``Distribution`` methods and one entry in ``REGISTRY``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Protocol

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from .config import Config
from .errors import UserError
from .nets import GaussianHead, LinearHead

# log(sqrt(2 pi)), the Normal log-density's constant; the numpy fast paths use it too
LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


class Distribution(Protocol):
    """What the policy, the rollout and the update ask of an action distribution.

    ``action_shape`` and ``action_dtype``: one env's action as the rollout stores it (what the policy took);
    ``to_env`` turns a batch of those into what the env receives (the one place where the two differ: clipping
    or squashing, a space's shape, a Discrete or MultiDiscrete space's ``start``), for training, the agent and,
    in torch operations, the ONNX export alike. ``head`` builds the policy head: a module from features of
    ``width`` (per feature row: the grid trunk gives one row per cell) to ``params``.
    """

    action_shape: tuple[int, ...]
    action_dtype: type
    maskable: bool  # takes action masks (aux.action_masking): ``masked`` gives the masked parameters

    def head(self, width: int, rows: int, cfg: Config) -> nn.Module: ...
    def masked(self, params, mask: torch.Tensor) -> Any: ...
    def noise_shape(self, params) -> tuple[int, ...]: ...
    def noise(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray: ...
    def sample(self, params, noise: torch.Tensor) -> torch.Tensor: ...
    def mode(self, params) -> torch.Tensor: ...
    def log_prob(self, params, actions: torch.Tensor) -> torch.Tensor: ...
    def entropy(self, params) -> torch.Tensor: ...
    def log_prob_and_entropy(self, params, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
    def to_env(self, actions: np.ndarray) -> np.ndarray: ...


class Categorical:
    """Discrete actions: logits of shape (B, n); the head a Linear of n logits, gain 0.01. The policy takes
    action index i, which the rollout stores and the log-prob is of; the env receives ``start + i``."""

    action_shape: tuple[int, ...] = ()
    action_dtype = np.int64
    maskable = True

    def __init__(self, n: int, start: int = 0):
        self.n, self.start = int(n), int(start)

    def head(self, width: int, rows: int, cfg: Config) -> nn.Module:
        return LinearHead(width, self.n, cfg.on("core.orthogonal_init"))

    def masked(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_logits(logits, mask)

    def noise_shape(self, logits: torch.Tensor) -> tuple[int, ...]:
        return tuple(logits.shape)

    def noise(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return rng.gumbel(size=shape)

    def sample(self, logits: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        # Gumbel-max: argmax(logits + Gumbel noise) is an exact sample of softmax(logits)
        return (logits + noise).argmax(-1)

    def mode(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(-1)

    def log_prob(self, logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits, -1)
        return logp.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self, logits: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits, -1)
        return -(logp.exp() * logp).sum(-1)

    def log_prob_and_entropy(self, logits: torch.Tensor, actions: torch.Tensor):
        return self.log_prob(logits, actions), self.entropy(logits)

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        # the batch itself where there is nothing to add: this runs every rollout step
        return actions if self.start == 0 else actions + self.start


class DiagGaussian:
    """Box actions (cont.gaussian): a Normal per action dimension, parameterized by ``(mean, log_std)``, both of
    shape (B, act_dim) (a state-independent log std is expanded to the mean's shape, which costs nothing). The head
    is ``nets.GaussianHead``: the mean a Linear of gain 0.01, the log std a learned vector
    (cont.state_independent_logstd) or a Linear of the features.

    cont.independent_dims: the dimensions are independent, so the log-prob and the entropy of an action are sums
    over its dimensions. The rollout stores the unclipped sample u; ``to_env`` gives the env
    ``np.nan_to_num(u)`` clipped to the bounds with cont.action_clip (the reference's ClipActionsWrapper; an
    infinite bound clips nothing), the raw sample without it, reshaped to the space's shape and cast to its dtype.
    """

    action_dtype = np.float32

    def __init__(self, space: gym.spaces.Box, cfg: Config):
        self.shape, self.dtype = space.shape, space.dtype
        self.action_shape = (math.prod(space.shape),)
        self.low = space.low.reshape(-1).astype(np.float64)
        self.high = space.high.reshape(-1).astype(np.float64)
        self.clip = cfg.on("cont.action_clip")

    def head(self, width: int, rows: int, cfg: Config) -> nn.Module:
        return GaussianHead(width, self.action_shape[0], cfg.on("core.orthogonal_init"),
                            cfg.on("cont.state_independent_logstd"))

    maskable = False

    def masked(self, params, mask):
        raise NotImplementedError("Box actions take no action masks")

    def noise_shape(self, params: tuple[torch.Tensor, torch.Tensor]) -> tuple[int, ...]:
        return tuple(params[0].shape)

    def noise(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return rng.standard_normal(size=shape, dtype=np.float32)

    def sample(self, params: tuple[torch.Tensor, torch.Tensor], noise: torch.Tensor) -> torch.Tensor:
        mean, log_std = params
        return mean + log_std.exp() * noise

    def mode(self, params: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return params[0]

    def log_prob(self, params: tuple[torch.Tensor, torch.Tensor], actions: torch.Tensor) -> torch.Tensor:
        mean, log_std = params
        z = (actions - mean) * (-log_std).exp()
        return (-0.5 * z * z - log_std - LOG_SQRT_2PI).sum(-1)

    def entropy(self, params: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return (0.5 + LOG_SQRT_2PI + params[1]).sum(-1)

    def log_prob_and_entropy(self, params, actions: torch.Tensor):
        return self.log_prob(params, actions), self.entropy(params)

    def _env_sample(self, actions: np.ndarray) -> np.ndarray:
        return actions

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        actions = self._env_sample(actions)
        if self.clip:  # cont.action_clip
            # np.clip's numbers without its wrapper, and np.nan_to_num (~5 us a step) only where the sum shows a NaN
            # or an infinity (or overflows: then it has nothing to do, but the answer is the same): half the time
            if not math.isfinite(actions.sum()):
                actions = np.nan_to_num(actions)
            actions = np.minimum(np.maximum(actions, self.low), self.high)
        return actions.reshape(len(actions), *self.shape).astype(self.dtype, copy=False)


# Gauss-Hermite nodes and weights for E[f(u)], u ~ N(mu, sigma^2) = sum_k w_k f(mu + sigma sqrt(2) x_k) / sqrt(pi)
_HERMITE_X, _HERMITE_W = np.polynomial.hermite.hermgauss(48)


def tanh_log_det(u: torch.Tensor) -> torch.Tensor:
    """log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), elementwise, finite for every u (the direct formula
    gives log 0 = -inf in float32 once |u| > 9)."""
    return 2.0 * (math.log(2.0) - u - torch.nn.functional.softplus(-2.0 * u))


class TanhDiagGaussian(DiagGaussian):
    """The ``squash_actions`` option: the policy samples u from ``DiagGaussian`` and the env receives
    a = low + (tanh(u) + 1) / 2 (high - low), so no action needs clipping (cont.action_clip then only catches float
    rounding). The rollout stores u; ``log_prob`` is the density of a:

        log p(a) = log N(u) - sum_d [log(1 - tanh(u_d)^2) + log((high_d - low_d) / 2)]

    The correction depends only on the stored u, so it cancels in the ratio pi_new / pi_old; the log-prob and
    the entropy reported include it. The entropy of a, H(u) + E[sum_d log |da_d/du_d|], has no closed form: the
    expectation is taken by 48-point Gauss-Hermite quadrature (deterministic and differentiable in mean and std).
    """

    def __init__(self, space: gym.spaces.Box, cfg: Config):
        super().__init__(space, cfg)
        if not (np.isfinite(self.low).all() and np.isfinite(self.high).all()):
            raise UserError(f"squash_actions needs finite action bounds, and {space} has infinite ones; train "
                            "without --squash-actions (actions are then clipped where bounds are finite)")
        if (fixed := np.flatnonzero(self.high <= self.low)).size:
            # the density of a constant action is infinite: every log-prob would be inf and the ratio NaN
            raise UserError(f"squash_actions needs low < high in every action dimension, and {space} has none to "
                            f"choose in dimension(s) {fixed.tolist()}; train without --squash-actions (the "
                            "Gaussian's actions are then clipped to the bounds)")
        self.half_range = (self.high - self.low) / 2
        # sum_d log((high_d - low_d) / 2): the constant part of the log-det
        self.log_half_range = float(np.sum(np.log(self.half_range)))

    def log_prob(self, params, actions):
        return super().log_prob(params, actions) - tanh_log_det(actions).sum(-1) - self.log_half_range

    def entropy(self, params):
        mean, log_std = params
        x = torch.as_tensor(_HERMITE_X * math.sqrt(2.0), dtype=mean.dtype, device=mean.device)
        w = torch.as_tensor(_HERMITE_W / math.sqrt(math.pi), dtype=mean.dtype, device=mean.device)
        u = mean.unsqueeze(-1) + log_std.exp().unsqueeze(-1) * x  # (B, act_dim, nodes)
        expected_log_det = (tanh_log_det(u) * w).sum(-1)
        return super().entropy(params) + expected_log_det.sum(-1) + self.log_half_range

    def _env_sample(self, actions: np.ndarray) -> np.ndarray:
        return self.low + (np.tanh(actions) + 1.0) * self.half_range


# aux.action_masking: what invalid actions' logits are pushed down by. exp(logit + MASKED_LOGIT - logsumexp) is
# exactly 0 in float32, so an invalid action is never sampled, adds nothing to the entropy, and its logit's
# gradient (its probability times something finite) is exactly 0; no -inf ever meets a 0 (NaN)
MASKED_LOGIT = -1e8


def masked_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """aux.action_masking: ``MASKED_LOGIT`` added to the logits of invalid actions (``mask`` False or 0; bool or
    float). The reference replaces them (``torch.where``); adding gives the same probabilities and zero gradients,
    and on the CPU it is several times faster than a bool ``where`` over a muRTS minibatch's 5M logits."""
    return torch.add(logits, mask.to(logits.dtype) - 1.0, alpha=-MASKED_LOGIT)


class MultiCategorical:
    """MultiDiscrete actions (multidiscrete.independent_categoricals): one head of sum(nvec) logits, split into
    one Categorical per component, independent, so the log-prob and the entropy of an action are sums over its
    components. params: logits (B, sum(nvec)), or (logits, mask) with a bool mask of the same shape
    (aux.action_masking); actions (B, K) for the K components, in ``nvec``'s (flattened) order, each an index
    0..n-1: the env receives them in ``nvec``'s shape plus the space's ``start``.

    Vectorized: ``nvec`` is read as R rows of one pattern (the rows of a 2-D nvec whose rows are equal, as one per
    grid cell in Gym-muRTS; else one row), the logits as B * R rows, and each run of equal sizes n in the pattern
    (c components) as one (rows, c, n) view: no padding, one batch of tensor ops per run (four for Gym-muRTS's
    1792 components: 6 | 4 4 4 4 | 7 | 49), never a loop over components. With a mask, a component whose actions
    are all invalid (a grid cell without an own unit) contributes 0 to the log-prob and the entropy, and its
    sample is arbitrary (the env ignores it); rows without any valid action are left out of the computation
    altogether, their samples 0: most of a muRTS grid's cells hold no unit, and leaving them out saves most of a
    masked muRTS minibatch's work (docs/benchmarks.md).
    """

    def __init__(self, nvec, start=None):
        nvec = np.asarray(nvec, dtype=np.int64)
        self.shape, self.size = nvec.shape, int(nvec.sum())
        shift = np.broadcast_to(np.asarray(0 if start is None else start, np.int64), nvec.shape)
        self.start = shift if shift.any() else None  # None: to_env has nothing to add, every rollout step
        self.action_shape = (nvec.size,)
        rows = nvec.reshape(len(nvec), -1) if nvec.ndim > 1 else nvec.reshape(1, -1)
        if not (rows == rows[0]).all():
            rows = nvec.reshape(1, -1)
        self.num_components = nvec.size
        self.rows, pattern = len(rows), rows[0]
        self.row_size, self.row_components = int(pattern.sum()), len(pattern)
        # runs of equal sizes in the pattern: (first component, count, size, first logit)
        self.runs = []
        start = 0
        for k in range(1, len(pattern) + 1):
            if k == len(pattern) or pattern[k] != pattern[start]:
                self.runs.append((start, k - start, int(pattern[start]), int(pattern[:start].sum())))
                start = k

    action_dtype = np.int64
    maskable = True

    def head(self, width: int, rows: int, cfg: Config) -> nn.Module:
        """A Linear of sum(nvec) logits, gain 0.01; over ``rows`` feature rows (a grid's cells), a Linear of each
        row's share, applied to every row (a 1x1 convolution)."""
        return LinearHead(width, self.size // rows, cfg.on("core.orthogonal_init"))

    def masked(self, logits: torch.Tensor, mask: torch.Tensor):
        """(logits, mask): the mask also tells which components have no valid action."""
        return logits, mask

    def noise_shape(self, params) -> tuple[int, ...]:
        """The Gumbel noise ``sample`` adds to the rows it samples: every row of logits without a mask; with one, only
        the rows that have a valid action, (M, row_size). A muRTS grid's cells mostly hold no unit of the agent's:
        drawing noise for all of them (160k Gumbel numbers a step for 8 envs) was half of the rollout's inference."""
        if not isinstance(params, tuple):
            return tuple(params.shape)
        return int(self._valid_rows(params[1]).sum()), self.row_size

    def noise(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return rng.gumbel(size=shape)

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        actions = actions.reshape(len(actions), *self.shape)
        return actions if self.start is None else actions + self.start

    def _rows(self, params):
        """(logits (M, row_size) with invalid actions masked, mask (M, row_size) as floats or None, index (M,) of
        these rows among all B * R, or None when they are all of them): every row without a mask; with one, only
        the rows that have a valid action."""
        logits, mask = params if isinstance(params, tuple) else (params, None)
        logits = logits.reshape(-1, self.row_size)
        if mask is None:
            return logits, None, None
        mask = mask.reshape(-1, self.row_size).to(logits.dtype)
        index = self._valid_rows(mask).nonzero().squeeze(-1)
        return masked_logits(logits[index], mask[index]), mask[index], index

    def _valid_rows(self, mask: torch.Tensor) -> torch.Tensor:
        """Which rows of the mask hold a valid action."""
        # summed as floats: bool reductions are slow on the CPU
        return mask.reshape(-1, self.row_size).to(torch.float32).sum(-1) > 0

    def _run(self, rows: torch.Tensor, run) -> torch.Tensor:
        """The (M, c, n) view of a run in (M, row_size) rows of logits, noise or mask."""
        _, count, size, offset = run
        return rows[:, offset:offset + count * size].view(-1, count, size)  # -1: an ONNX export keeps the batch free

    @staticmethod
    def _scatter(values: torch.Tensor, index: torch.Tensor | None, num_rows: int) -> torch.Tensor:
        """Per-row ``values`` (M, ...) back in place among all ``num_rows`` rows, zeros elsewhere."""
        if index is None:
            return values
        return values.new_zeros((num_rows, *values.shape[1:])).index_copy(0, index, values)

    def _choose(self, params, noise: torch.Tensor | None) -> torch.Tensor:
        num_rows = params[0].numel() // self.row_size if isinstance(params, tuple) else None
        logits, _, index = self._rows(params)
        if noise is not None:  # Gumbel-max, as Categorical.sample; the noise is that of the rows sampled
            logits = logits + noise.reshape(-1, self.row_size).to(logits.dtype)
        chosen = torch.cat([self._run(logits, run).argmax(-1) for run in self.runs], 1)
        return self._scatter(chosen, index, num_rows).view(-1, self.num_components)

    def sample(self, params, noise: torch.Tensor) -> torch.Tensor:
        return self._choose(params, noise)

    def mode(self, params) -> torch.Tensor:
        return self._choose(params, None)

    def _totals(self, params, actions: torch.Tensor | None, entropy: bool):
        """(log-prob of ``actions``, entropy) summed over the components, from one log-softmax per run; 0.0 for
        what is not asked for. A component without a valid action adds 0 to both."""
        batch = len(params[0] if isinstance(params, tuple) else params)
        logits, mask, index = self._rows(params)
        if actions is not None:
            actions = actions.reshape(-1, self.row_components)
            actions = actions if index is None else actions[index]
        logprob_rows = entropy_rows = logits.new_zeros(len(logits))
        for run in self.runs:
            logp = torch.log_softmax(self._run(logits, run), -1)
            valid = None if mask is None else (self._run(mask, run).sum(-1) > 0).to(logits.dtype)
            if actions is not None:
                first, count, _, _ = run
                logprob = logp.gather(-1, actions[:, first:first + count].long().unsqueeze(-1)).squeeze(-1)
                logprob_rows = logprob_rows + (logprob if valid is None else logprob * valid).sum(-1)
            if entropy:
                ent = -(logp.exp() * logp).sum(-1)
                entropy_rows = entropy_rows + (ent if valid is None else ent * valid).sum(-1)

        def per_sample(rows):
            return self._scatter(rows, index, batch * self.rows).view(batch, self.rows).sum(-1)

        return per_sample(logprob_rows), per_sample(entropy_rows)

    def log_prob(self, params, actions: torch.Tensor) -> torch.Tensor:
        return self._totals(params, actions, entropy=False)[0]

    def entropy(self, params) -> torch.Tensor:
        return self._totals(params, None, entropy=True)[1]

    def log_prob_and_entropy(self, params, actions: torch.Tensor):
        """``log_prob`` and ``entropy`` together, for the training path: the log-softmax is most of a muRTS
        minibatch's time."""
        return self._totals(params, actions, entropy=True)


# The registry: the distribution class for each kind of action space; the first entry the space is an instance of
REGISTRY: list[tuple[type[gym.Space], Callable[[gym.Space, Config], Distribution]]] = [
    (gym.spaces.Discrete, lambda space, cfg: Categorical(space.n, space.start)),
    (gym.spaces.MultiDiscrete, lambda space, cfg: MultiCategorical(space.nvec, space.start)),
    (gym.spaces.Box, lambda space, cfg: (TanhDiagGaussian if cfg.squash_actions else DiagGaussian)(space, cfg)),
]


def make_distribution(space: gym.Space, cfg: Config) -> Distribution:
    if cfg.squash_actions and not isinstance(space, gym.spaces.Box):
        raise UserError(f"squash_actions maps a Gaussian's samples into a Box's bounds, and this env's actions are "
                        f"{space}: train without --squash-actions")
    for kind, build in REGISTRY:
        if isinstance(space, kind):
            if kind is gym.spaces.Box and not np.issubdtype(space.dtype, np.floating):
                break
            return build(space, cfg)
    kinds = ", ".join(kind.__name__ for kind, _ in REGISTRY)
    raise UserError(f"action space {space} is not supported yet; supported: {kinds} (Box with a float dtype)")
