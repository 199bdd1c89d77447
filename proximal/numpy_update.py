"""The PPO update of ``update.ppo_update`` for an MLP policy with discrete actions or Gaussian continuous ones (with
the reference's state-independent log std), in numpy with the gradients written out by hand.

Why: on the CPU, a small MLP's minibatch step in torch is nearly all per-op dispatch and autograd bookkeeping; the
same arithmetic in numpy takes a fraction of that (docs/benchmarks.md, "Measurements behind the design"), and the
update is half of a classic-control run's time. ``update.ppo_update`` stays the definition: this
file computes the same loss, the same gradients, the same global-norm clipping and the same Adam step, on the
same minibatch indices (drawn from the same torch generator), and tests check that both give the same parameters,
optimizer state and statistics for every switch of the details involved. Set ``fast_paths`` off in the config to
train with the torch code (do that when you change the loss).

Parameters and Adam's moments are copied into flat float32 arrays at the start of an update and back into the
torch module and optimizer at its end, so checkpoints, evaluation and the torch path see ordinary torch state.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from .config import Config
from .distributed import average_flat_gradient, average_scalar
from .distributions import LOG_SQRT_2PI, DiagGaussian
from .numpy_ops import (column_sum, gaussian_log_prob, linear_layers, log_softmax, matmul, rounded, row_sum,
                        taken_index, tanh_mlp)
from .update import minibatch_permutation


class _Flat:
    """The parameters, their gradients and Adam's moments as flat float32 arrays, with each parameter's view in
    each (``p``, ``g``, ``m``, ``v``, indexed as ``params``); allocated once, filled from the torch tensors at the
    start of every update and written back at its end (``load``, ``store``: numpy copies, a fraction of torch's
    per-tensor calls). ``scratch`` holds Adam's temporaries. The parameters lie in the arrays in ``order`` (Adam and
    the gradient norm do not depend on it), so that parameters of the same shape can be laid side by side and
    computed on as one stack (``stack``)."""

    def __init__(self, params: list[torch.Tensor], order: list[int]):
        self.params, self.order = params, order
        starts = np.cumsum([0, *(params[i].numel() for i in order)])
        self.start = dict(zip(order, starts))
        self.data, self.grad, self.m, self.v, self.scratch = np.zeros((5, starts[-1]), np.float32)
        self.p, self.g, self.pm, self.pv = (
            [flat[self.start[i]:self.start[i] + q.numel()].reshape(q.shape) for i, q in enumerate(params)]
            for flat in (self.data, self.grad, self.m, self.v))

    def stack(self, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(values, gradients) of parameters of one shape laid side by side, as (len(indices), *shape) arrays."""
        first, shape = self.start[indices[0]], self.params[indices[0]].shape
        size = self.params[indices[0]].numel()
        assert [self.start[i] for i in indices] == [first + k * size for k in range(len(indices))]
        span = slice(first, first + len(indices) * size)
        return self.data[span].reshape(len(indices), *shape), self.grad[span].reshape(len(indices), *shape)

    def load(self, states: list[dict]) -> float:
        """The parameters and Adam's state (zeros before its first step) into the flat arrays; returns the step
        count."""
        np.concatenate([self.params[i].detach().numpy().ravel() for i in self.order], out=self.data)
        if not states[0]:
            self.m[...] = 0.0
            self.v[...] = 0.0
            return 0.0
        np.concatenate([states[i]["exp_avg"].numpy().ravel() for i in self.order], out=self.m)
        np.concatenate([states[i]["exp_avg_sq"].numpy().ravel() for i in self.order], out=self.v)
        return float(states[0]["step"])

    def store(self, states: list[dict], step: float) -> None:
        """The flat arrays back into the parameters and Adam's state, which gets the layout torch's fused Adam creates
        on its first step where it has none yet."""
        for q, state, value, mom1, mom2 in zip(self.params, states, self.p, self.pm, self.pv):
            np.copyto(q.detach().numpy(), value)
            if not state:
                state.update(step=torch.zeros((), dtype=torch.float32), exp_avg=torch.zeros_like(q),
                             exp_avg_sq=torch.zeros_like(q))
            state["step"].numpy()[...] = step
            np.copyto(state["exp_avg"].numpy(), mom1)
            np.copyto(state["exp_avg_sq"].numpy(), mom2)


def _trunk_backward(layers, acts, d_out, bf16) -> None:
    """Backpropagate d(loss)/d(last activation) through a tanh MLP (or a stack of them), writing the gradients.
    In bf16 every gradient of a bf16 activation is itself bf16, as autograd's under autocast."""
    for i in range(len(layers) - 1, -1, -1):
        weight, weight_grad, bias_grad = layers[i]
        dz = acts[i + 1] * acts[i + 1]  # d_out * (1 - tanh^2), in one array
        np.subtract(1.0, dz, out=dz)
        dz *= d_out
        dz = rounded(dz, bf16)
        matmul(dz.swapaxes(-1, -2), acts[i], bf16=bf16, out=weight_grad)
        column_sum(dz, bf16, out=bias_grad)
        if i:
            d_out = matmul(dz, weight, bf16=bf16)


def _clip(x: np.ndarray, low, high) -> np.ndarray:
    """np.clip's numbers (NaNs included) without its Python wrapper's ~7 us."""
    return np.minimum(np.maximum(x, low), high)


def _maximum_grad(a, b, da, db):
    """Gradient of max(a, b) elementwise given those of a and b, with torch's rule: half to each on a tie."""
    return np.where(a > b, da, np.where(a < b, db, 0.5 * (da + db)))


def _clamp_passes(x, clipped):
    """Where torch's clamp passes the gradient through, bounds included: where clipping left x as it was (a NaN
    neither)."""
    return clipped == x


def _normalized_by_minibatch(advantages: np.ndarray, size: int) -> np.ndarray:
    """core.adv_norm of an epoch's minibatches at once: each ``size`` consecutive rows centred and divided by their
    population std (+ 1e-8), as ``update.normalize_advantages`` does to each minibatch (np.std is slower)."""
    rows = advantages.reshape(-1, size)
    centered = rows - rows.mean(1, keepdims=True)
    return (centered / (np.sqrt((centered * centered).mean(1, keepdims=True)) + np.float32(1e-8))).ravel()


def _categorical_forward(logits, actions):
    """(log pi(a), entropy, cache) of a Categorical, as distributions.Categorical."""
    logp = log_softmax(logits)
    probs = np.exp(logp)
    entropy = -row_sum(probs * logp)
    taken = taken_index(logp, actions)
    return logp.ravel()[taken], entropy, (logp, probs, entropy, taken)


def _categorical_backward(g_logprob, ent_coef, cache):
    """d(loss)/d(logits) given d(loss)/d(log pi(a)) per sample; the entropy term is -ent_coef * mean(H)."""
    logp, probs, entropy, taken = cache
    d_logits = -probs * g_logprob[:, None]
    d_logits.ravel()[taken] += g_logprob
    d_logits += np.float32(ent_coef / len(taken)) * probs * (logp + entropy[:, None])
    return d_logits, None


def _gaussian_forward(mean, log_std, actions):
    """(log pi(a), entropy, cache) of a DiagGaussian with a state-independent log std (cont.independent_dims:
    sums over the action dimensions)."""
    logprob, z = gaussian_log_prob(mean, log_std, actions)
    entropy = np.full(len(actions), (0.5 + LOG_SQRT_2PI + log_std).sum(), dtype=np.float32)
    return logprob, entropy, (z, log_std)


def _gaussian_backward(g_logprob, ent_coef, cache):
    """(d(loss)/d(mean), d(loss)/d(log std)): d log pi / d mean = z / std, d log pi / d log std = z^2 - 1,
    d H / d log std = 1 per sample."""
    z, log_std = cache
    d_mean = (g_logprob[:, None] * z) * np.exp(-log_std)
    d_log_std = (g_logprob[:, None] * (z * z - 1.0)).sum(0) - np.float32(ent_coef)
    return d_mean, d_log_std


def _adam_step(data, grad, m, v, scratch, lr, beta1, beta2, eps, step) -> None:
    """One step of torch's Adam on flat arrays, in place (bias corrections from the step count, eps added to the
    corrected sqrt(v)), its temporaries in ``scratch``: on arrays of every parameter, an allocation costs as much as
    the arithmetic. Python floats, not numpy float64 scalars, so that the arrays stay float32."""
    np.subtract(grad, m, out=scratch)
    scratch *= 1.0 - beta1
    m += scratch
    v *= beta2
    np.multiply(grad, 1.0 - beta2, out=scratch)
    scratch *= grad
    v += scratch
    np.sqrt(v, out=scratch)
    scratch /= math.sqrt(1.0 - beta2**step)
    scratch += eps
    np.divide(m, scratch, out=scratch)
    scratch *= lr / (1.0 - beta1**step)
    data -= scratch


class _Terms(NamedTuple):
    """One minibatch's per-sample terms of the statistics (views of a ``_Record`` row)."""

    policy_loss: np.ndarray
    value_loss: np.ndarray  # before the loss's factor 0.5
    entropy: np.ndarray
    ratio: np.ndarray
    logratio: np.ndarray


class _Record:
    """An update's per-sample terms, a row per minibatch, reduced to the statistics at the end: the means of every
    minibatch would cost a dozen numpy calls each. A statistic is the mean over minibatches of each one's mean, as
    ``update.ppo_update`` reports them."""

    def __init__(self, minibatches: int, size: int, clip: np.float32):
        self.terms = np.empty((len(_Terms._fields), minibatches, size), np.float32)
        self.clip = clip
        self.count = 0  # minibatches recorded

    def next_row(self) -> _Terms:
        self.count += 1
        return _Terms(*self.terms[:, self.count - 1])

    def approx_kl(self, first: int, last: int) -> float:
        """The mean approx_kl of minibatches first..last - 1."""
        terms = _Terms(*self.terms[:, first:last])
        return _average((terms.ratio - 1.0) - terms.logratio)

    def statistics(self, first: int = 0, last: int | None = None) -> dict[str, float]:
        """``update.STAT_NAMES`` over minibatches first..last - 1 (default: all recorded)."""
        last = self.count if last is None else last
        terms = _Terms(*self.terms[:, first:last])
        return {"policy_loss": _average(terms.policy_loss), "value_loss": 0.5 * _average(terms.value_loss),
                "entropy": _average(terms.entropy), "approx_kl": self.approx_kl(first, last),
                "old_approx_kl": -_average(terms.logratio),
                "approxkl_ppo2": 0.5 * _average(terms.logratio * terms.logratio),
                "clipfrac": _average(np.abs(terms.ratio - 1.0) > self.clip)}


def _average(rows: np.ndarray) -> float:
    return float(rows.mean(1).mean())


# What the numpy update reads of the config, as ``update.ppo_update`` and ``update.ppo_loss`` do: a test fails when
# the torch update reads anything else (a new switch must be written out here, or refused in ``fast_paths``)
HANDLED = frozenset({
    "update_epochs", "minibatches_per_epoch", "ent_coef", "vf_coef", "max_grad_norm", "target_kl",
    "core.adv_norm", "core.clipped_objective", "core.value_clipping", "core.entropy_bonus", "core.grad_clip",
    "aux.target_kl", "aux.parallel_gradients",
})


class NumpyMLPUpdate:
    """``update.ppo_update`` for ``policy.ActorCritic`` with a Categorical or state-independent DiagGaussian
    head, on the CPU."""

    def __init__(self, policy: nn.Module, optimizer: torch.optim.Adam, bf16: bool = False):
        self.bf16 = bf16  # the networks' matmuls in emulated bf16 (precision), as NumpyMLPActor's
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.record: _Record | None = None  # the last update's per-sample terms
        index = {id(q): i for i, q in enumerate(self.params)}
        trunk, head = policy.trunk, policy.policy_head
        # core.separate_networks: the actor's and the critic's trunks (of the same sizes) as one stack of two, each
        # layer's weights side by side in the flat arrays and so its biases, so that one numpy call serves both
        trunks = [linear_layers(trunk.actor)] + ([linear_layers(trunk.critic)] if trunk.critic is not None else [])
        self.separate = len(trunks) == 2
        layers = [([index[id(m.weight)] for m in same], [index[id(m.bias)] for m in same]) for same in zip(*trunks)]
        order = [i for weights, biases in layers for i in (*weights, *biases)]
        self.flat = _Flat(self.params, order + [i for i in range(len(self.params)) if i not in order])
        # each layer's (weight, weight gradient, bias gradient) for the backward and (weight transposed, bias as a
        # row) for tanh_mlp's forward, stacked where separate
        self.trunk, self.trunk_forward = [], []
        for weights, biases in layers:
            (w, gw), (b, gb) = self.flat.stack(weights), self.flat.stack(biases)
            if not self.separate:
                w, gw, b, gb = w[0], gw[0], b[0], gb[0]
            self.trunk.append((w, gw, gb))
            self.trunk_forward.append((w.swapaxes(-1, -2), b[..., None, :]))
        self.continuous = isinstance(policy.dist, DiagGaussian)
        linear = head.mean if self.continuous else head.linear
        self.policy_head = (index[id(linear.weight)], index[id(linear.bias)])
        self.log_std = index[id(head.log_std)] if self.continuous else None
        self.value_head = (index[id(policy.value_head.weight)], index[id(policy.value_head.bias)])

    # --- one minibatch: the loss of update.ppo_loss and its gradient -------------------------------------------
    def _loss_and_grad(self, p, g, obs, actions, old_logprob, old_value, neg_advantages, returns, clip, cfg,
                       terms: "_Terms") -> None:
        """The minibatch's gradient into ``g``; its per-sample loss terms, for the statistics, into ``terms``.
        ``neg_advantages``: minus the advantages, normalized already where core.adv_norm is on."""
        n, bf16 = len(actions), self.bf16
        acts = tanh_mlp(self.trunk_forward, obs, bf16)
        actor_features, critic_features = acts[-1] if self.separate else (acts[-1], acts[-1])
        pw, pb = self.policy_head
        vw, vb = self.value_head
        logits = matmul(actor_features, p[pw].T, p[pb], bf16)  # the mean for Box actions
        value = matmul(critic_features, p[vw].T, p[vb], bf16)[:, 0]

        if self.continuous:
            new_logprob, entropy, cache = _gaussian_forward(logits, p[self.log_std], actions)
        else:
            new_logprob, entropy, cache = _categorical_forward(logits, actions)

        terms.entropy[...] = entropy
        logratio = np.subtract(new_logprob, old_logprob, out=terms.logratio)
        ratio = np.exp(logratio, out=terms.ratio)

        pg_unclipped = neg_advantages * ratio
        if cfg.on("core.clipped_objective"):
            clipped = _clip(ratio, 1.0 - clip, 1.0 + clip)
            pg_clipped = neg_advantages * clipped
            np.maximum(pg_unclipped, pg_clipped, out=terms.policy_loss)
            d_ratio = _maximum_grad(pg_unclipped, pg_clipped, neg_advantages,
                                    neg_advantages * _clamp_passes(ratio, clipped))
        else:
            terms.policy_loss[...] = pg_unclipped
            d_ratio = neg_advantages

        v_error = value - returns
        v_loss_unclipped = v_error * v_error
        if cfg.on("core.value_clipping"):
            delta = value - old_value
            clipped = _clip(delta, -clip, clip)
            v_clipped_error = old_value + clipped - returns
            v_loss_clipped = v_clipped_error * v_clipped_error
            np.maximum(v_loss_unclipped, v_loss_clipped, out=terms.value_loss)
            d_value = _maximum_grad(v_loss_unclipped, v_loss_clipped, v_error,
                                    v_clipped_error * _clamp_passes(delta, clipped))
        else:
            terms.value_loss[...] = v_loss_unclipped
            d_value = v_error
        ent_coef = cfg.ent_coef if cfg.on("core.entropy_bonus") else 0.0

        # d(loss)/d(log pi(a)) per sample is d_ratio * ratio / n; then through the distribution to the head
        g_logprob = (d_ratio * ratio) * np.float32(1.0 / n)
        backward = _gaussian_backward if self.continuous else _categorical_backward
        d_logits, d_log_std = backward(g_logprob, ent_coef, cache)
        if d_log_std is not None:
            g[self.log_std][...] = d_log_std
        # the heads' outputs were cast from bf16 to float32: their gradients are cast back
        d_logits = rounded(d_logits, bf16)
        d_value = rounded((np.float32(cfg.vf_coef / n) * d_value)[:, None], bf16)

        matmul(d_logits.T, actor_features, bf16=bf16, out=g[pw])
        column_sum(d_logits, bf16, out=g[pb])
        matmul(d_value.T, critic_features, bf16=bf16, out=g[vw])
        column_sum(d_value, bf16, out=g[vb])
        if self.separate:  # the gradients of the two trunks' features, as one stack
            d_features = np.empty_like(acts[-1])
            matmul(d_logits, p[pw], bf16=bf16, out=d_features[0])
            matmul(d_value, p[vw], bf16=bf16, out=d_features[1])
        else:
            d_features = rounded(matmul(d_logits, p[pw], bf16=bf16) + matmul(d_value, p[vw], bf16=bf16), bf16)
        _trunk_backward(self.trunk, acts, d_features, bf16)

    # --- the update ---------------------------------------------------------------------------------------------
    def __call__(self, policy: nn.Module, optimizer: torch.optim.Adam, batch: dict[str, torch.Tensor], cfg: Config,
                 clip: float, generator: torch.Generator) -> dict[str, float]:
        flat = self.flat
        p, g = flat.p, flat.g
        group = optimizer.param_groups[0]
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        states = [optimizer.state[q] for q in self.params]
        step = flat.load(states)

        arrays = {k: t.numpy() for k, t in batch.items()}
        obs = arrays["obs"].reshape(len(arrays["obs"]), -1)
        clip32 = np.float32(clip)
        size = len(obs) // cfg.minibatches_per_epoch
        # kept for ``minibatch_statistics``
        record = self.record = _Record(cfg.update_epochs * cfg.minibatches_per_epoch, size, clip32)
        grad_norms = 0.0
        epochs_run = 0
        for _ in range(cfg.update_epochs):
            # the epoch's rows in minibatch order, gathered once: each minibatch is then a slice
            rows = minibatch_permutation(len(obs), generator).numpy()
            actions, logprobs, values, advantages, returns = (
                arrays[k][rows] for k in ("actions", "logprobs", "values", "advantages", "returns"))
            if cfg.on("core.adv_norm"):
                advantages = _normalized_by_minibatch(advantages, size)
            shuffled = (obs[rows], actions, logprobs, values, -advantages, returns)
            epoch_start = record.count
            for start in range(0, len(rows), size):
                # every parameter's gradient is written (not added to) by _loss_and_grad
                self._loss_and_grad(p, g, *(a[start:start + size] for a in shuffled), clip32, cfg,
                                    record.next_row())
                average_flat_gradient(flat.grad, cfg)  # aux.parallel_gradients
                norm = np.sqrt(np.dot(flat.grad, flat.grad))
                grad_norms += float(norm)
                if cfg.on("core.grad_clip"):  # as torch's clip_grad_norm_: always scaled, by at most 1
                    flat.grad *= np.float32(min(cfg.max_grad_norm / (norm + 1e-6), 1.0))
                step += 1.0
                _adam_step(flat.data, flat.grad, flat.m, flat.v, flat.scratch, lr, beta1, beta2, eps, step)
            epochs_run += 1
            if cfg.on("aux.target_kl") and average_scalar(
                    record.approx_kl(epoch_start, record.count), cfg) > cfg.target_kl:
                break

        flat.store(states, step)
        result = record.statistics()
        result["grad_norm"] = grad_norms / record.count
        result["epochs"] = epochs_run
        return result

    def minibatch_statistics(self) -> list[dict[str, float]]:
        """The statistics of each minibatch of the last update, in order (the update returns their means)."""
        return [self.record.statistics(k, k + 1) for k in range(self.record.count)]
