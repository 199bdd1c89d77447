"""Run logging: TensorBoard events, plain CSV files for scripts, and the console progress bar."""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import os
import secrets
import socket
import struct
import time
import warnings
from collections import deque
from pathlib import Path

import google_crc32c
from tqdm import tqdm

from .errors import RunFailure, UserError
from .outputs import write_whole
from .video import VIDEO_DIR

EPISODE_COLUMNS = ("global_step", "episodic_return", "episodic_length")
# per-update scalars: CSV column -> TensorBoard tag (names people already compare against: CleanRL's)
UPDATE_TAGS = {
    "learning_rate": "charts/learning_rate",
    "clip_range": "charts/clip_range",
    "SPS": "charts/SPS",
    "policy_loss": "losses/policy_loss",
    "value_loss": "losses/value_loss",
    "entropy": "losses/entropy",
    "approx_kl": "losses/approx_kl",
    "old_approx_kl": "losses/old_approx_kl",
    "approxkl_ppo2": "losses/approxkl_ppo2",
    "clipfrac": "losses/clipfrac",
    "grad_norm": "losses/grad_norm",  # before clipping (core.grad_clip), mean over the minibatches
    "explained_variance": "losses/explained_variance",
    "epochs": "losses/epochs",
    # where the update's wall time went (the trainer measures them; they add up to the time since the previous
    # update was measured, so the logging and checkpoint of the previous update count as this one's "other")
    "env_seconds": "perf/env_seconds",
    "inference_seconds": "perf/inference_seconds",
    "learn_seconds": "perf/learn_seconds",
    "other_seconds": "perf/other_seconds",
}
# the progress bar's breakdown: short name -> column
PERF_SHARES = {"env": "env_seconds", "inf": "inference_seconds", "learn": "learn_seconds",
               "other": "other_seconds"}
UPDATE_COLUMNS = ("global_step", "update", *UPDATE_TAGS)


def whole_rows(path: Path, columns: tuple[str, ...] | None = None) -> tuple[list[dict], int]:
    """The rows of a CSV file written whole, and how many were dropped as torn: a line without its newline (a
    write cut short) or a row that is not as the writer writes them (a fault
    that left part of a row: a missing, extra or empty field, or a global_step that is not a whole number).
    ``columns`` fills the columns the file's header lacks (an older version's file) with "nan"."""
    text = path.read_text() if path.exists() else ""
    complete, _, tail = text.rpartition("\n")
    reader = csv.DictReader(io.StringIO(complete + "\n" if complete else ""))
    rows, dropped = [], int(bool(tail))
    for row in reader:
        if None in row or None in row.values() or "" in row.values() or not row["global_step"].isdigit():
            dropped += 1
            continue
        rows.append({c: row.get(c, "nan") for c in columns} if columns else row)
    return rows, dropped


def _truncate_csv(path: Path, columns: tuple[str, ...], last_step: int) -> None:
    """Keep the header and the whole rows up to ``last_step``: a resumed run rewrites what came after its
    checkpoint, and a row torn by a crash or a full disk is dropped."""
    rows, _ = whole_rows(path, columns)
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(r for r in rows if int(r["global_step"]) <= last_step)
    write_whole(path, text.getvalue(), durable=True)  # the logs a checkpoint goes with (RunLogger.sync)


def append_whole(fd: int, data: bytes, size: int, path: Path) -> int:
    """Append ``data`` to the file open as ``fd`` (``O_APPEND``, ``size`` bytes long) whole or not at all:
    unbuffered writes, and one that fails part way (a full disk) is undone by cutting the file back to ``size``,
    so that no reader, and no resumed run, sees part of it. Returns the new size; the error names ``path``."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError as e:
        # a file system gone read-only refuses the cut too: the write's error is the one to report
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        raise OSError(e.errno, e.strerror, str(path)) from None
    return size + len(data)


class RowFile:
    """A CSV file that rows are appended to whole or not at all (``append_whole``): no half row."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = os.fstat(self._fd).st_size

    def append(self, rows: list) -> None:
        if not rows:
            return
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(rows)
        self._size = append_whole(self._fd, text.getvalue().encode(), self._size, self.path)

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


class ScalarEvents:
    """TensorBoard scalars, written as few events as possible: one event holds every scalar of a step (a tag
    may appear once per event). Each record has a fixed cost whatever it holds, and ``SummaryWriter.add_scalar``
    writes one record per scalar (and computes each record's CRCs in pure Python, byte by byte; these come from
    google-crc32c's C code).

    Events are written in this thread, once per update (``flush``), as TFRecords (``tf_record``) into a file named
    as tensorboard's ``EventFileWriter`` names them. That writer's thread was the dearer way: its turns on the GIL
    between the rollout's numpy calls made CartPole's training 10% slower, for about 20 ms of writing in 100k
    steps; and tensorboard's record writer comes with 0.2-0.3 s of imports (its package's summary API and file
    systems, boto3 included). The events themselves are tensorboard's protobuf messages.

    A new file starts with a ``SessionLog.START`` at ``purge_step``: TensorBoard then drops the events of earlier
    files at that step and after, which a resumed run writes again (``SummaryWriter(purge_step=...)`` does the
    same)."""

    def __init__(self, log_dir: Path, purge_step: int):
        # imported here: tensorboard is slow to import, and only a run that starts needs it
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog
        from tensorboard.compat.proto.summary_pb2 import Summary

        self._event, self._summary, self._value = Event, Summary, Summary.Value
        # TensorBoard reads a run's files in name order: seconds, then a number counting this process's files
        self.path = Path(log_dir) / (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                                     f"{os.getpid()}.{next(_EVENT_FILES)}")
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        self._size = 0
        now = time.time()
        self._pending = [Event(wall_time=now, file_version="brain.Event:2"),
                         Event(wall_time=now, step=purge_step, session_log=SessionLog(status=SessionLog.START))]
        self.flush()

    def add(self, step: int, scalars: dict[str, float]) -> None:
        """One event at ``step`` holding ``{tag: value}``, written at the next ``flush``."""
        value = self._value
        summary = self._summary(value=[value(tag=tag, simple_value=float(v)) for tag, v in scalars.items()])
        self._pending.append(self._event(wall_time=time.time(), step=int(step), summary=summary))

    def flush(self) -> None:
        """Write the events added since the last flush, all or none (``append_whole``): after a failed flush they
        are still pending, and the file holds none of them."""
        data = b"".join(tf_record(event.SerializeToString()) for event in self._pending)
        self._size = append_whole(self._fd, data, self._size, self.path)
        self._pending.clear()

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            os.close(self._fd)


_EVENT_FILES = itertools.count()


def tf_record(data: bytes) -> bytes:
    """``data`` framed as a TFRecord, the records of TensorBoard's event files: its length (uint64, little-endian),
    the masked CRC-32C of those 8 bytes, the data, the masked CRC-32C of the data."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", _masked_crc32c(length)) + data + struct.pack("<I", _masked_crc32c(data))


def _masked_crc32c(data: bytes) -> int:
    # CRC-32C (Castagnoli) in Google's C library: tensorboard's own is pure Python, byte by byte, ~0.1 ms for an
    # update's event. TFRecord's mask: rotated right by 15 bits, plus a constant
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def check_tracking() -> None:
    """Before training (track): the wandb package and, unless W&B runs offline, a login; the run would otherwise
    fail or stop for a prompt after its envs are built."""
    try:
        import wandb
    except ImportError:
        raise UserError("--track needs the wandb package: pip install -e '.[wandb]'") from None
    if os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun"):
        return
    if not wandb.login(prompt=False, verify=False):
        raise UserError("--track: no W&B login; run 'wandb login' (or set WANDB_API_KEY), or set WANDB_MODE=offline "
                        "to log locally and 'wandb sync' later")


class WandbRun:
    """The run on Weights & Biases (track), as CleanRL's runs appear there: named after the run directory, the
    config as its config, the TensorBoard scalars under the same names against ``global_step``, and the captured
    videos. The scalars are logged directly rather than by syncing the event files (CleanRL's
    ``sync_tensorboard``): that patches tensorboard's writer, which ``ScalarEvents`` does not go through.

    The W&B run id is kept in the run directory (``wandb_id``), so that a resumed run continues the same W&B run,
    and so is what the W&B run holds (``wandb_steps.jsonl``): after each update, a line with its global_step, the
    W&B step (``_step``) of its last row and the videos logged with it. ``start`` rewinds the W&B run to the row
    of the checkpoint the run starts from (``wandb.init(resume_from="<id>?_step=<step>")``), as TensorBoard's
    purge_step and the cut CSVs do, so that the updates after the checkpoint are logged once, with the resumed
    run's values. A video logged by the checkpoint is not logged again; a video file left by an earlier process and
    not logged by the checkpoint (it was logged after the checkpoint, and rewound away) is logged when this run
    writes it again, and not otherwise: the episode counter is part of the checkpoint, so the resumed run records
    that episode again.

    Where W&B refuses the rewind (a preview feature of the W&B server, which not every account or server has), the
    run continues as W&B holds it and the rows of the updates W&B already holds are not logged again: those
    updates keep the values of the run that logged them first. A fresh run (no checkpoint: a run directory reused
    after a run killed before its first checkpoint) gets a new W&B run."""

    def __init__(self, run_dir: Path, config: dict, project: str, entity: str):
        import wandb

        self._wandb = wandb
        self.run_dir = Path(run_dir)
        self.video_dir = self.run_dir / VIDEO_DIR
        self._init = dict(project=project, entity=entity or None, name=self.run_dir.resolve().name, config=config,
                          # W&B's own files go into the run directory, unless WANDB_DIR says where
                          dir=None if "WANDB_DIR" in os.environ else str(self.run_dir))
        self.run = None  # started by ``start``, when the step the run starts from is known
        self._logged_videos: set[str] = set()
        self._stale: dict[str, tuple] = {}  # video files found at the start and not held by W&B: name -> _file_id
        self._step = 0
        self._update_step = 0  # the global_step of the last update logged: where close() logs the last videos
        self._next = 0  # the W&B step of the next row
        self._skip_through = -1  # rows at or below this global_step are already held by W&B (no rewind)
        self._steps_fd, self._steps_size, self._entry_step = None, 0, -1

    def start(self, start_step: int) -> None:
        """Start (or continue) the W&B run at ``start_step``, the global_step of the checkpoint the run starts
        from (0: a fresh run)."""
        wandb, init = self._wandb, self._init
        id_file, steps_file = self.run_dir / "wandb_id", self.run_dir / WANDB_STEPS
        self._step = self._update_step = start_step
        run_id = id_file.read_text().strip() if start_step and id_file.exists() else ""
        entries = _steps_entries(steps_file) if run_id else []
        kept = [e for e in entries if e["global_step"] <= start_step]
        run_id = run_id or secrets.token_hex(4)
        id_file.write_text(run_id + "\n")
        if kept:
            try:
                self.run = wandb.init(id=run_id, resume_from=f"{run_id}?_step={kept[-1]['wandb_step']}", **init)
                entries = kept
            except wandb.Error as e:
                warnings.warn(f"W&B did not rewind run {run_id} to the checkpoint at step {start_step} ({e}); it "
                              f"continues as W&B holds it: the updates up to step {entries[-1]['global_step']} "
                              "keep the values first logged", stacklevel=2)
                self.run = wandb.init(id=run_id, resume="allow", **init)
                self._skip_through = entries[-1]["global_step"]
        else:
            # nothing recorded of what W&B holds: an older version's run directory, whose rows after the checkpoint
            # W&B keeps (its videos are not logged again)
            self.run = wandb.init(id=run_id, resume="allow", **init)
        self.run.define_metric("global_step")
        self.run.define_metric("*", step_metric="global_step")
        self._next = self.run.starting_step
        self._logged_videos = {name for e in entries for name in e["videos"]}
        self._stale = {name: _file_id(self.video_dir / name) for name in self._videos() - self._logged_videos}
        write_whole(steps_file, "".join(json.dumps(e) + "\n" for e in entries))
        self._steps_fd = os.open(steps_file, os.O_WRONLY | os.O_APPEND)
        self._steps_size = os.fstat(self._steps_fd).st_size

    def _log(self, row: dict) -> None:
        self.run.log(row)
        self._next += 1

    def add(self, step: int, scalars: dict[str, float]) -> None:
        self._step = int(step)
        if self._step > self._skip_through:
            self._log({**scalars, "global_step": self._step})

    def _videos(self) -> set[str]:
        return {p.name for p in self.video_dir.glob("*.mp4") if not p.name.startswith(".")}

    def add_videos(self, step: int) -> None:
        """Log the videos finished since the last call (``video.RecordEpisodes`` names them when they are), and
        record the update at ``step`` as logged: after each update."""
        self._update_step = int(step)
        new = []
        for name in sorted(self._videos() - self._logged_videos):
            if name in self._stale and _file_id(self.video_dir / name) == self._stale[name]:
                continue  # an earlier process's file, not written again yet
            self._log({"videos": self._wandb.Video(str(self.video_dir / name), format="mp4"),
                       "global_step": int(step)})
            self._logged_videos.add(name)
            new.append(name)
        if int(step) > self._skip_through and self._next > 0 and (new or int(step) != self._entry_step):
            self._entry_step = int(step)
            line = json.dumps({"global_step": int(step), "wandb_step": self._next - 1, "videos": new}) + "\n"
            self._steps_size = append_whole(self._steps_fd, line.encode(), self._steps_size,
                                            self.run_dir / WANDB_STEPS)

    def close(self) -> None:
        """After the envs are closed: the recorder finishes its last video then, logged with the last update (a
        run stopped part way through a rollout has no update of its own step). W&B is finished whatever fails."""
        if self.run is None:
            return
        try:
            if self._steps_fd is not None:  # None: ``start`` failed after W&B began
                try:
                    self.add_videos(self._update_step)
                finally:
                    os.close(self._steps_fd)
                    self._steps_fd = None
        finally:
            try:
                self.run.finish()
            except Exception as e:  # noqa: BLE001 - wandb's errors have no common base; the first line says which
                where = os.environ.get("WANDB_DIR") or str(self.run_dir / "wandb")
                reason = (str(e).splitlines() or [""])[0]
                raise RunFailure(f"W&B could not finish its record of the run ({type(e).__name__}: {reason}); the "
                                 f"training's own files in {self.run_dir} are whole; what W&B kept is in {where} "
                                 "(wandb sync uploads it once the cause, a full disk mostly, is fixed)") from None


WANDB_STEPS = "wandb_steps.jsonl"


def _steps_entries(path: Path) -> list[dict]:
    """The whole lines of ``WandbRun``'s record of what W&B holds (a line torn by a crash is dropped)."""
    text = path.read_text() if path.exists() else ""
    entries = []
    for line in text.rpartition("\n")[0].splitlines():
        try:
            entry = json.loads(line)
            entries.append({"global_step": int(entry["global_step"]), "wandb_step": int(entry["wandb_step"]),
                            "videos": [str(v) for v in entry["videos"]]})
        except (ValueError, KeyError, TypeError):
            continue
    return entries


def _file_id(path: Path) -> tuple:
    """What changes when a video file is written again (``RecordEpisodes`` writes a new file and renames it)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return ()
    return st.st_ino, st.st_mtime_ns, st.st_size


class RunLogger:
    def __init__(self, run_dir: Path, start_step: int, total_steps: int, quiet: bool,
                 tracker: WandbRun | None = None):
        self.run_dir = Path(run_dir)
        self.tracker = tracker
        if tracker is not None:
            tracker.start(start_step)  # first: a W&B run that cannot start leaves no file open
        # the rows at start_step belong to the checkpoint this run starts from and are kept (the CSVs below
        # likewise); the rest of an earlier run is rewritten
        self.tb = ScalarEvents(self.run_dir, purge_step=start_step + 1)
        for name, columns in (("episodes.csv", EPISODE_COLUMNS), ("updates.csv", UPDATE_COLUMNS)):
            _truncate_csv(self.run_dir / name, columns, start_step)
        self._episodes = RowFile(self.run_dir / "episodes.csv")
        self._updates = RowFile(self.run_dir / "updates.csv")
        self.recent_returns: deque[float] = deque(maxlen=100)
        self.bar = tqdm(total=total_steps, initial=start_step, unit="step", unit_scale=True, disable=quiet,
                        dynamic_ncols=True, smoothing=0.1)
        self._step = start_step

    def episodes(self, episodes: list[tuple[int, float, int]]) -> None:
        for global_step, ret, length in episodes:
            self._scalars(global_step, {"charts/episodic_return": ret, "charts/episodic_length": length})
            self.recent_returns.append(ret)
        self._episodes.append(episodes)

    def update(self, global_step: int, update: int, scalars: dict[str, float]) -> None:
        self._scalars(global_step, {UPDATE_TAGS[name]: value for name, value in scalars.items()})
        self.tb.flush()  # this update's episodes and statistics
        if self.tracker is not None:
            self.tracker.add_videos(global_step)
        row = {"global_step": global_step, "update": update, **scalars}
        self._updates.append([[row.get(c, "") for c in UPDATE_COLUMNS]])
        postfix = [f"SPS {scalars['SPS']:.0f}"]
        if self.recent_returns:
            postfix.append(f"return {sum(self.recent_returns) / len(self.recent_returns):.1f}")
        seconds = {short: scalars.get(name, 0.0) for short, name in PERF_SHARES.items()}
        total = sum(seconds.values())
        if total > 0:
            postfix.append(" ".join(f"{short} {100 * s / total:.0f}%" for short, s in seconds.items()))
        self.bar.set_postfix_str(" | ".join(postfix), refresh=False)
        self.bar.update(global_step - self._step)
        self._step = global_step

    def _scalars(self, step: int, tags: dict[str, float]) -> None:
        self.tb.add(step, tags)
        if self.tracker is not None:
            self.tracker.add(step, tags)

    def sync(self) -> None:
        """The logs on the disk up to now: called before a checkpoint is written, which is flushed to the disk, so
        that a crash of the machine or of its file system never leaves a checkpoint whose logs end before it (a
        resumed run would go on from it with rows missing)."""
        for file in (self._episodes, self._updates, self.tb):
            try:
                file.sync()
            except OSError as e:
                raise OSError(e.errno, e.strerror, str(file.path)) from None

    def write(self, message: str) -> None:
        if not self.bar.disable:
            self.bar.write(message)

    def close(self) -> None:
        self.bar.close()
        try:
            self.tb.close()  # may raise what the last flush raised (a full disk)
        finally:
            self._episodes.close()
            self._updates.close()
