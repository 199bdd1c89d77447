"""Checkpoints: atomic, self-verifying writes and weights-only loads.

A checkpoint is a dict of tensors and plain Python values (``torch.load(weights_only=True)`` refuses anything
else, numpy values included), so loading one never runs pickled code.

The file (format 3) is a small outer record holding the SHA-256 of the serialized payload and the payload's bytes.
The hash lives inside the file rather than in a sidecar or in the name so that one rename publishes the checkpoint
and its hash together (a sidecar could be lost or left stale by a kill between two renames), and the file names
stay ``update_NNNNNNN.pt``. The payload holds the run id of ``rundir``: a checkpoint copied into another run's
directory is recognised as foreign.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import warnings
from pathlib import Path

import torch

from . import rundir
from .errors import UserError
from .outputs import write_whole

# 2: the carry ("obs", "carry") replaced next_obs, next_start, next_mask and lstm_state; the spaces were added
# 3: the payload wrapped with its SHA-256; the run id added
FORMAT = 3
_NAME = re.compile(r"update_(\d+)\.pt$")
_REFUSED_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)")
# what the trainer's TrainerState.checkpoint writes and what resume and eval read
KEYS = ("config", "update", "global_step", "policy", "optimizer", "generator", "rng", "obs", "carry", "normalizer",
        "spaces", "env", "run_id")


def checkpoint_path(run_dir: Path, update: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"update_{update:07d}.pt"


def _serialize(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def save(payload: dict, path: Path) -> None:
    """Write the checkpoint whole, on the disk, or not at all (``outputs.write_whole``): a reader (or a resumed
    run) sees either the old checkpoint or the complete new one, never half of one. Serialized in memory first: a
    full disk then fails in a plain ``write`` (an ``OSError`` naming the path) rather than inside torch's zip
    writer."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = _serialize({**payload, "format": FORMAT})
    record = _serialize({"format": FORMAT, "sha256": hashlib.sha256(body).hexdigest(),
                         "payload": torch.frombuffer(bytearray(body), dtype=torch.uint8)})
    write_whole(path, record, durable=True)


def _torch_load(source, path: Path):
    try:
        # quiet: a damaged file can make torch warn (of a pickle protocol it does not expect) before it fails, and
        # the failure is reported in one line below
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, corrupt, not a torch file, or pickled code
        # torch refuses, before running it, any pickled object that is not a tensor or a plain value, and names
        # the function or class only in its message
        refused = _REFUSED_GLOBAL.search(str(e)) if isinstance(e, pickle.UnpicklingError) else None
        if refused:
            raise UserError(f"checkpoint '{path}' refused: the file holds pickled code, which proximal never loads "
                            f"(it calls for {refused.group(1)}); a checkpoint proximal wrote holds none, so if this "
                            "was one, it is damaged: use an earlier one from the run's checkpoints/ directory") \
                from None
        raise UserError(f"checkpoint '{path}' cannot be read ({type(e).__name__}); it is corrupt or not a "
                        "proximal checkpoint: evaluate an earlier one from the run's checkpoints/ directory, or "
                        "move this one away before --resume") from None


def _migrate(payload: dict, path: Path) -> dict:
    """A payload of an older format as today's, where the difference can be filled in."""
    if payload["format"] == 2:  # no run id was recorded: the checkpoint is accepted by any run
        payload = {**payload, "format": FORMAT, "run_id": None}
    else:
        raise UserError(f"checkpoint '{path}' has format {payload['format']}, and this version of proximal reads "
                        f"formats 2 and {FORMAT}: evaluate or resume it with the proximal version that wrote it (if "
                        "this one did, the file is damaged)")
    return payload


def _owner(path: Path) -> str | None:
    """The run id of the run directory holding ``path`` in its checkpoints/, if it has one."""
    return rundir.run_id(path.parent.parent) if path.parent.name == "checkpoints" else None


def read(path: Path) -> dict:
    """The payload of a file ``save`` wrote, its hash verified, migrated to today's format; ``load`` also checks
    that it is a whole checkpoint of the right run."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint '{path}' does not exist; pass a run directory or a checkpoint file")
    record = _torch_load(path, path)
    if not isinstance(record, dict) or "format" not in record:
        raise UserError(f"'{path}' is not a proximal checkpoint, or is a damaged one")
    if record["format"] == FORMAT:
        if not isinstance(record.get("payload"), torch.Tensor) or not isinstance(record.get("sha256"), str):
            raise UserError(f"'{path}' is not a proximal checkpoint, or is a damaged one")
        body = record["payload"].numpy().tobytes()
        if hashlib.sha256(body).hexdigest() != record["sha256"]:
            raise UserError(f"checkpoint '{path}' is damaged: its contents do not match the SHA-256 it was written "
                            "with; move it out of checkpoints/ to resume from the one before")
        payload = _torch_load(io.BytesIO(body), path)
    elif "sha256" in record and isinstance(record["format"], int) and record["format"] < FORMAT:
        # only today's records carry a hash: an older format in one is a damaged format field
        raise UserError(f"checkpoint '{path}' is damaged: a record of format {FORMAT} that reads format "
                        f"{record['format']}; move it out of checkpoints/ to resume from the one before")
    else:
        payload = _migrate(record, path)
    return payload


def load(path: Path) -> dict:
    """The payload of a checkpoint file (``read``), checked to hold every entry the trainer and evaluation read. A
    file inside a run directory's checkpoints/ must belong to that run."""
    path = Path(path)
    payload = read(path)
    # a KeyError deep in resume or eval would be a traceback instead of this message
    missing = sorted(set(KEYS) - set(payload))
    if missing:
        raise UserError(f"checkpoint '{path}' lacks {', '.join(missing)}; it was not written by this version of "
                        "proximal")
    owner = _owner(path)
    if owner is not None and payload["run_id"] not in (None, owner):
        raise UserError(f"checkpoint '{path}' belongs to another run (run id {payload['run_id']}, "
                        f"{payload['config'].get('env_id')}), not to this directory's run {owner}: move it out of "
                        f"{path.parent}")
    return payload


def finished(run_dir: Path) -> list[tuple[int, Path]]:
    """The finished checkpoint files of a run directory by the update in their names, oldest first (a temporary
    file of an interrupted write never counts)."""
    return sorted((int(m.group(1)), p) for p in (Path(run_dir) / "checkpoints").glob("update_*.pt")
                  if (m := _NAME.search(p.name)))


def latest(run_dir: Path) -> Path:
    """The newest checkpoint of a run directory (or the file itself when given a file): the one of the highest
    update, read from inside the file, checked to be whole and of this run (``load``)."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        return run_dir
    if not run_dir.is_dir():
        raise UserError(f"'{run_dir}' is neither a run directory nor a checkpoint file")
    found = finished(run_dir)
    if not found and not rundir.is_run(run_dir):
        raise UserError(f"'{run_dir}' is not a run directory (no {rundir.RUN_FILE} and no checkpoints); give the "
                        "directory of a run, e.g. runs/<env>__<preset>__<seed>__<time>")
    if not found:
        raise UserError(f"run directory '{run_dir}' has no finished checkpoint in {run_dir / 'checkpoints'}: "
                        "start it again with the command that started it (its options, and torchrun where it "
                        "ran under torchrun)")
    named, path = found[-1]
    # names are written from the update inside; a renamed file must not decide where the run continues
    recorded = load(path)["update"]
    if recorded != named:
        raise UserError(f"checkpoint '{path}' holds update {recorded}, not the {named} of its name; move it out of "
                        f"{path.parent}")
    return path
