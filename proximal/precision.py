"""The networks' arithmetic precision (``Config.precision``): fp32, the reference's numerics, or bf16.

bf16 runs the networks' matmuls and convolutions with bfloat16 operands, as ``torch.autocast`` does, in the
rollout's inference and in the update's forward and backward. Everything else stays float32: the weights, Adam's
state, the gradients applied to the weights, the losses and their reductions, the advantages and returns, the
normalization statistics, the recurrent core's state, and the log-probs and values the rollout stores for the
ratio (the heads' outputs are cast to float32 before any distribution arithmetic). Checkpoints are therefore the
same in either precision, and a run can be evaluated or loaded without knowing it.

Where the numpy fast paths run (an MLP policy on the CPU), bf16 is emulated in numpy with the same rounding
points (``numpy_ops.matmul``, ``numpy_ops.round_bf16``): for its numerics, not for speed, since a small MLP has
nothing to gain.

``auto`` picks bf16 where the hardware has native bf16 matmul and the torch path runs, and fp32 otherwise; the
run says which at its start. Asking for bf16 where torch would have to emulate it (no bf16 units: slower than
fp32) is refused with a message.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from .errors import UserError


def native_bf16(device: torch.device) -> str | None:
    """What gives ``device`` native bf16 matmul (for the messages), or None where it has none: a CUDA GPU of
    compute capability 8.0 or newer, or a CPU with AVX512-BF16 or AMX that oneDNN uses."""
    if device.type == "cuda":
        return "a CUDA GPU with bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else None
    if not torch.backends.mkldnn.is_available():
        return None
    if torch.cpu._is_amx_tile_supported():
        return "a CPU with AMX"
    if torch.cpu._is_avx512_bf16_supported():
        return "a CPU with AVX512-BF16"
    return None


def resolve(requested: str, device: torch.device, numpy_paths: bool) -> tuple[str, str]:
    """(the precision the run uses, why: a line for the start of the run). ``numpy_paths``: the numpy fast
    paths run the policy, where bf16 is emulated."""
    if requested == "fp32":
        return "fp32", "fp32 (the reference's numerics)"
    if numpy_paths:
        if requested == "auto":
            return "fp32", "fp32 (auto: the numpy fast path runs this MLP policy, where bf16 gains nothing)"
        return "bf16", "bf16, emulated in the numpy fast path for its numerics (slower than fp32, not faster)"
    native = native_bf16(device)
    if native is None:
        if requested == "auto":
            return "fp32", f"fp32 (auto: this {device.type.upper()} has no native bf16 matmul)"
        raise UserError(f"--precision bf16: this {device.type.upper()} has no native bf16 matmul (a CPU needs "
                        "AVX512-BF16 or AMX, a GPU compute capability 8.0), so bf16 would run emulated and slower "
                        "than fp32; use --precision fp32 or auto")
    how = "auto: " if requested == "auto" else ""
    return "bf16", f"bf16 ({how}{native}; weights, optimizer and log-probs in fp32)"


def autocast(precision: str, device: torch.device):
    """The context in which the networks run: bf16 autocast, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()
