"""Ownership of a run directory: one process at a time, a run id, and no leftovers of a killed run.

The lock is ``fcntl.flock`` on ``RUN_DIR/lock``: the kernel drops it when the process ends however it ends
(exit, exception, ``kill -9``), so a crashed run never leaves a stale lock to remove by hand. The file holds the
owner's pid only to name it in the refusal.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from .errors import RunFailure, UserError
from .outputs import write_whole

LOCK = "lock"
RUN_FILE = "run.json"
# what a killed writer can leave behind: outputs.write_whole's temporaries (checkpoints, config, CSV rewrites)
STALE = ("checkpoints/.tmp_*", ".tmp_*")


def check_location(run_dir: Path, fresh: bool = False) -> None:
    """Refuse a run directory that cannot be one, before anything is built or written. ``fresh``: a new run starts
    there, so a directory that exists must be empty or a run's: a run writes its own config.json and CSVs over
    files of those names and removes temporary files (``STALE``), which must never hit a user's folder."""
    if str(run_dir).strip() == "":
        raise UserError("the run directory is empty; pass --run-dir DIR (or leave it out for runs/<name>)")
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--run-dir '{run_dir}' is a file, not a directory; choose another --run-dir")
    if fresh and run_dir.is_dir() and not is_run(run_dir) and any(run_dir.iterdir()):
        raise UserError(f"'{run_dir}' holds files but is not a run directory (no {RUN_FILE}, lock or checkpoints), "
                        "and a new run would write over them; choose a new or empty --run-dir")


def is_run(run_dir: Path) -> bool:
    """Whether a directory was made by a training: its id, its lock (created first) or its checkpoints."""
    run_dir = Path(run_dir)
    return ((run_dir / RUN_FILE).exists() or (run_dir / LOCK).exists()
            or any((run_dir / "checkpoints").glob("update_*.pt")))


def run_id(run_dir: Path) -> str | None:
    """The id written when the run was created; None for a directory without one (not a run, or a run written
    before run ids existed)."""
    try:
        return json.loads((Path(run_dir) / RUN_FILE).read_text())["run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def new_run_id(run_dir: Path, rid: str | None = None) -> str:
    """Write the run's id file: a new id, or ``rid`` (a resumed run whose file was lost, from its checkpoint)."""
    rid = rid or uuid.uuid4().hex
    write_whole(Path(run_dir) / RUN_FILE, json.dumps(
        {"run_id": rid, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}, indent=2) + "\n",
        durable=True)
    return rid


def _unwritable(run_dir: Path, error: OSError) -> UserError | RunFailure:
    """A directory that cannot be written is the input's fault (exit 2); a full disk is a fault of the machine, as
    it is later in the run (exit 1)."""
    # said for train, --resume and bench alike: --resume takes no --run-dir, so a run moves by copying
    full = error.errno == errno.ENOSPC
    return (RunFailure if full else UserError)(
        f"cannot write to the run directory '{run_dir}' ({error.strerror}); "
        f"{'free space on its disk' if full else 'make it writable'}, or use another directory (a stopped run can "
        "be copied to one and resumed there)")


@contextmanager
def owned(run_dir: Path):
    """Create ``run_dir`` if needed and hold its lock for the block; stale temporary files of an earlier,
    killed run are removed once the lock is held (no other process can be writing them then). A directory
    that cannot be created or written (a read-only file system, no permission) is a UserError, a full disk a
    RunFailure."""
    run_dir = Path(run_dir)
    check_location(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise _unwritable(run_dir, e) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise UserError(f"run directory '{run_dir}' is in use by another training (pid {owner}); wait for it "
                            "to finish or give another directory (--run-dir for train, --out for bench and "
                            "ablate)") from None
        try:  # a full disk shows here first
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as e:
            raise _unwritable(run_dir, e) from None
        for pattern in STALE:
            for stale in run_dir.glob(pattern):
                stale.unlink(missing_ok=True)
        yield run_dir
    finally:
        os.close(fd)  # releases the flock
