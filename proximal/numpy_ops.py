"""numpy building blocks of the CPU fast paths (``numpy_actor``, ``numpy_update``): the same arithmetic as the
torch modules they stand in for, on numpy views of the torch parameters."""

from __future__ import annotations

import functools

import numpy as np
from torch import nn

from .distributions import LOG_SQRT_2PI

LOG_SQRT_2PI_32 = np.float32(LOG_SQRT_2PI)


def linear_layers(trunk: nn.Sequential) -> list[nn.Linear]:
    """The Linear layers of a tanh MLP trunk (``nets.mlp``: Linear/Tanh pairs), in order."""
    assert all(isinstance(m, (nn.Linear, nn.Tanh)) for m in trunk)
    return [m for m in trunk if isinstance(m, nn.Linear)]


def round_bf16(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16 (ties to even), kept as float32: torch's cast to bf16 and
    back."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((bits + (np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1)))) & np.uint32(0xFFFF0000)).view(np.float32)


def rounded(x: np.ndarray, bf16: bool) -> np.ndarray:
    """``x`` as a bf16 tensor of torch's autocast would hold it (``precision``), or ``x`` itself in fp32."""
    return round_bf16(x) if bf16 else x


def matmul(a: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None, bf16: bool = False,
           out: np.ndarray | None = None) -> np.ndarray:
    """a @ b (+ bias), written into ``out`` where given (a gradient's view: no temporary and no copy; without a
    bias). bf16 emulates autocast's matmul: bf16 operands, then one rounding of the result. The products of two
    bf16 values are exact in float64 and so, in practice, are their sums: the result does not depend on the batch
    size or the summation order, and the rollout and the update compute the same numbers."""
    if not bf16:
        result = _product(a, b, out)
        if bias is not None:
            result += bias  # in place: a temporary of a minibatch's activations costs as much as the addition
        return result
    result = round_bf16(a).astype(np.float64) @ round_bf16(b).astype(np.float64)
    if bias is not None:
        result += round_bf16(bias)
    return _into(round_bf16(result.astype(np.float32)), out)


def column_sum(x: np.ndarray, bf16: bool = False, out: np.ndarray | None = None) -> np.ndarray:
    """x.sum(-2), the sum over a minibatch's rows (of each array of a stack): a bias's gradient, into ``out`` where
    given; bf16 rounds it once, as autocast's bf16 bias gradient."""
    if not bf16:
        # as a product with a row of ones: BLAS takes a third of the time of numpy's sum over the rows
        return _product(_ones(x.shape[-2], x.dtype), x, out)
    return _into(round_bf16(x.astype(np.float64).sum(-2).astype(np.float32)), out)


@functools.cache
def _ones(n: int, dtype: np.dtype) -> np.ndarray:
    ones = np.ones(n, dtype)
    ones.flags.writeable = False
    return ones


def _into(x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    if out is None:
        return x
    out[...] = x
    return out


def tanh_mlp(layers: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray, bf16: bool = False) -> list[np.ndarray]:
    """Activations of every layer of a tanh MLP, input first. ``layers``: (the weight transposed, (in, out), a view
    of torch's (out, in) weight; the bias). Or of a stack of MLPs of the same sizes on the same input: transposed
    weights (k, in, out), biases (k, 1, out), activations (k, rows, out)."""
    acts = [x]
    for weight_t, bias in layers:
        z = matmul(acts[-1], weight_t, bias, bf16)  # a new array: the tanh goes in place
        acts.append(rounded(np.tanh(z, out=z), bf16))
    return acts


def _product(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """a @ b in float32. For vectors and matrices, np.dot: the same BLAS call with ~0.5 us less of numpy's
    overhead, and BLAS also for an (n, 1) by (1, m) outer product (the value head's backward), which matmul
    computes in a loop of its own (~9 us against ~2). Stacks of matrices: matmul."""
    if a.ndim <= 2 and b.ndim <= 2:
        return np.dot(a, b, out=out)
    return np.matmul(a, b, out=out)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log softmax over the last axis of (B, n) logits: one formula for the rollout's scores (numpy_actor) and the
    update's log-probs (numpy_update), so that both round alike."""
    shifted = logits - row_max(logits)
    return shifted - np.log(row_sum(np.exp(shifted)))[:, None]


def row_max(x: np.ndarray) -> np.ndarray:
    """x.max(1, keepdims=True) of a (B, n) array. numpy's reduction over a short last axis costs ~6 us whatever the
    rows; for a few actions, the maximum column by column is a fraction of that."""
    if x.shape[1] > 8:
        return x.max(1, keepdims=True)
    result = x[:, :1].copy()
    for j in range(1, x.shape[1]):
        np.maximum(result, x[:, j:j + 1], out=result)
    return result


def row_sum(x: np.ndarray) -> np.ndarray:
    """x.sum(1) of a (B, n) array, as a product with a column of ones (a third of numpy's reduction over a short
    last axis)."""
    return _product(x, _ones(x.shape[1], x.dtype))


def taken_index(logp: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """Each row's action as an index into the flattened (B, n) array: a flat gather or scatter costs a fifth of a
    two-dimensional one."""
    return np.arange(0, logp.size, logp.shape[1]) + actions


def gaussian_log_prob(mean: np.ndarray, log_std: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log N(actions; mean, exp(log_std)) summed over the action dimensions (cont.independent_dims), z): as
    ``distributions.DiagGaussian.log_prob``; z = (actions - mean) / std is what the gradients need."""
    z = (actions - mean) * np.exp(-log_std)
    return (-0.5 * z * z - log_std - LOG_SQRT_2PI_32).sum(-1), z
