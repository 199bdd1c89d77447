"""Checkpoints: atomic writes and weights-only loads.

A checkpoint is a dict of tensors and plain Python values (``torch.load(weights_only=True)`` refuses anything
else, numpy values included), so loading one never runs pickled code.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import torch

from .errors import UserError

# 2: the carry ("obs", "carry") replaced next_obs, next_start, next_mask and lstm_state; the spaces were added
FORMAT = 2
_NAME = re.compile(r"update_(\d+)\.pt$")
_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
# what the trainer's TrainerState.checkpoint writes and what resume and eval read
KEYS = ("config", "update", "global_step", "policy", "optimizer", "generator", "rng", "obs", "carry", "normalizer",
        "spaces", "env")


def checkpoint_path(run_dir: Path, update: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"update_{update:07d}.pt"


def save(payload: dict, path: Path) -> None:
    """Write to a temporary file in the same directory, flush it to disk, then rename over ``path``: a reader
    (or a resumed run) sees either the old checkpoint or the complete new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp_", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint '{path}' does not exist; pass a run directory or a checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, corrupt, or a pickle that is not weights-only
        # torch names the refused class only in its message; naming it tells an unsafe file from a damaged one
        refused = _REFUSED_GLOBAL.search(str(e))
        if refused:
            raise UserError(f"checkpoint '{path}' holds a pickled {refused.group(1)}, which weights-only loading "
                            "refuses: a proximal checkpoint holds only tensors and plain values, and loading "
                            "other objects could run code from the file") from None
        raise UserError(f"checkpoint '{path}' cannot be read ({type(e).__name__}); it is corrupt or not a "
                        "proximal checkpoint: evaluate an earlier one from the run's checkpoints/ directory, or "
                        "move this one away before --resume") from None
    if not isinstance(payload, dict) or "format" not in payload:
        raise UserError(f"'{path}' is not a proximal checkpoint")
    if payload["format"] != FORMAT:
        raise UserError(f"checkpoint '{path}' has format {payload['format']}, and this version of proximal reads "
                        f"format {FORMAT}: evaluate or resume it with the proximal version that wrote it")
    # a KeyError deep in resume or eval would be a traceback instead of this message
    missing = sorted(set(KEYS) - set(payload))
    if missing:
        raise UserError(f"checkpoint '{path}' lacks {', '.join(missing)}; it was not written by this version of "
                        "proximal")
    return payload


def latest(run_dir: Path) -> Path:
    """The newest checkpoint of a run directory (or the file itself when given a file)."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        return run_dir
    if not run_dir.is_dir():
        raise UserError(f"'{run_dir}' is neither a run directory nor a checkpoint file")
    found = sorted((int(m.group(1)), p) for p in (run_dir / "checkpoints").glob("update_*.pt")
                   if (m := _NAME.search(p.name)))
    if not found:
        raise UserError(f"run directory '{run_dir}' has no checkpoints in {run_dir / 'checkpoints'}")
    return found[-1][1]
