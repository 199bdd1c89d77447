"""Run logging: what TensorBoard reads back is what was logged (several scalars per event), and the progress bar
shows the time breakdown."""

import errno
import os
import threading
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from proximal.logs import UPDATE_TAGS, RowFile, RunLogger, tf_record, whole_rows


def scalars(run_dir):
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def age_event_files(run_dir: Path, seconds: int = 100) -> None:
    """Move the event files' timestamps back. TensorBoard reads a run's files in name order; two files written by
    one process in the same second are ordered by a per-process counter, as text (10 before 9)."""
    for path in run_dir.glob("events.out.tfevents.*"):
        stamp, rest = path.name.removeprefix("events.out.tfevents.").split(".", 1)
        path.rename(path.with_name(f"events.out.tfevents.{int(stamp) - seconds:010d}.{rest}"))


def update_scalars(**values):
    return {name: values.get(name, 0.5) for name in UPDATE_TAGS}


def test_events_hold_every_scalar_and_episode(tmp_path):
    logger = RunLogger(tmp_path, 0, 1000, quiet=True)
    # two episodes end at step 100: each tag gets both points, in order (a tag appears once per event)
    logger.episodes([(100, 21.5, 20), (100, 9.25, 12), (204, 3.0, 4)])
    logger.update(256, 1, update_scalars(value_loss=1.5, learn_seconds=0.125))
    logger.episodes([(300, -2.5, 7)])
    logger.update(512, 2, update_scalars(value_loss=0.75, learn_seconds=0.25))
    logger.close()
    read = scalars(tmp_path)
    assert set(read) == {"charts/episodic_return", "charts/episodic_length", *UPDATE_TAGS.values()}
    assert read["charts/episodic_return"] == [(100, 21.5), (100, 9.25), (204, 3.0), (300, -2.5)]
    assert read["charts/episodic_length"] == [(100, 20), (100, 12), (204, 4), (300, 7)]
    assert read["losses/value_loss"] == [(256, 1.5), (512, 0.75)]
    assert read["perf/learn_seconds"] == [(256, 0.125), (512, 0.25)]
    assert read["charts/SPS"] == [(256, 0.5), (512, 0.5)]


def test_events_are_written_once_per_update_in_this_process(tmp_path):
    """Episodes' events wait for the update's; nothing hands them to a writer thread."""
    logger = RunLogger(tmp_path, 0, 1000, quiet=True)
    (path,) = tmp_path.glob("events.out.tfevents.*")
    before = path.stat().st_size
    logger.episodes([(100, 21.5, 20), (200, 9.0, 9)])
    assert path.stat().st_size == before
    logger.update(256, 1, update_scalars())
    assert path.stat().st_size > before
    assert scalars(tmp_path)["charts/episodic_return"] == [(100, 21.5), (200, 9.0)]
    assert not any("AsyncWriter" in type(t).__name__ for t in threading.enumerate())
    logger.close()


def test_a_full_disk_under_the_events_leaves_them_whole_and_names_their_file(tmp_path, monkeypatch):
    """A flush that fails part way leaves the file as it was and the events pending: the next flush writes each
    of them once."""
    logger = RunLogger(tmp_path, 0, 1000, quiet=True)
    path = logger.tb.path
    before = path.stat().st_size
    logger.episodes([(100, 21.5, 20)])
    real = os.write

    def half_then_full(fd, data):
        real(fd, bytes(data)[:5])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError) as err:
        logger.update(256, 1, update_scalars())
    monkeypatch.undo()
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
    assert path.stat().st_size == before
    logger.close()
    read = scalars(tmp_path)
    assert read["charts/episodic_return"] == [(100, 21.5)] and read["losses/value_loss"] == [(256, 0.5)]


@pytest.mark.parametrize("size", [0, 1, 8, 76, 5000])
def test_tf_records_are_tensorboards_byte_for_byte(size):
    """The event files' framing and checksums, written without tensorboard's writer (whose imports take a
    noticeable part of a second), are the bytes tensorboard's RecordWriter writes."""
    import io
    import random

    from tensorboard.summary.writer.record_writer import RecordWriter

    data = random.Random(size).randbytes(size)
    written = io.BytesIO()
    RecordWriter(written).write(data)
    assert tf_record(data) == written.getvalue()


def test_progress_bar_shows_the_time_breakdown(tmp_path):
    logger = RunLogger(tmp_path, 0, 1000, quiet=True)
    logger.episodes([(10, 30.0, 30), (20, 10.0, 10)])
    logger.update(256, 1, update_scalars(SPS=1234.4, env_seconds=0.5, inference_seconds=0.25,
                                         learn_seconds=0.2, other_seconds=0.05))
    assert logger.bar.postfix == "SPS 1234 | return 20.0 | env 50% inf 25% learn 20% other 5%"
    logger.close()


@pytest.mark.parametrize("start_step", [0, 512])
def test_a_new_file_starts_a_session_after_its_start_step(tmp_path, start_step):
    """Events of an earlier file after start_step are dropped (a resumed run writes them again); the ones at
    start_step, the checkpoint's own, stay."""
    first = RunLogger(tmp_path, 0, 1000, quiet=True)
    for update in (1, 2, 3):
        first.update(256 * update, update, update_scalars(value_loss=float(update)))
    first.close()
    age_event_files(tmp_path)
    second = RunLogger(tmp_path, start_step, 1000, quiet=True)
    second.update(start_step + 256, start_step // 256 + 1, update_scalars(value_loss=10.0))
    second.close()
    expected = [(s, float(s // 256)) for s in (256, 512) if s <= start_step] + [(start_step + 256, 10.0)]
    assert scalars(tmp_path)["losses/value_loss"] == expected


def test_a_failed_append_leaves_no_part_of_its_rows(tmp_path, monkeypatch):
    path = tmp_path / "rows.csv"
    path.write_text("a,b\n1,2\n")
    rows = RowFile(path)
    real = os.write

    def half_then_full(fd, data):  # a disk that fills after taking part of the bytes
        real(fd, bytes(data)[:3])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError) as err:
        rows.append([(3, 4), (5, 6)])
    monkeypatch.undo()
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
    assert path.read_text() == "a,b\n1,2\n"
    rows.append([(7, 8)])  # the file goes on from where the last whole row ended
    rows.close()
    assert path.read_text() == "a,b\n1,2\n7,8\n"


def test_whole_rows_drops_torn_and_malformed_rows(tmp_path):
    path = tmp_path / "episodes.csv"
    # a whole row; an empty step; empty fields; a step that is not a number; a missing field; an extra field;
    # a last line without its newline (a write cut short, though its fields look complete)
    path.write_text("global_step,episodic_return,episodic_length\n8,1.5,3\n,2.0,4\n103,,\nx,1,1\n9,1\n"
                    "10,1,1,1\n16,2.5,4\n24,3.0,5")
    rows, dropped = whole_rows(path)
    assert rows == [{"global_step": "8", "episodic_return": "1.5", "episodic_length": "3"},
                    {"global_step": "16", "episodic_return": "2.5", "episodic_length": "4"}]
    assert dropped == 6
    # an older file's missing column is filled, not left empty (which would read as torn next time)
    assert whole_rows(path, ("global_step", "new"))[0] == [{"global_step": "8", "new": "nan"},
                                                         {"global_step": "16", "new": "nan"}]


def test_an_append_on_a_file_system_gone_read_only_reports_the_write_naming_the_file(tmp_path, monkeypatch):
    # there the cut back to the old size fails too: its bare error (no file name) must not hide the write's
    import proximal.logs as logs

    path = tmp_path / "updates.csv"
    path.write_text("global_step\n")
    rows = RowFile(path)

    def read_only(*args):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(logs.os, "write", read_only)
    monkeypatch.setattr(logs.os, "ftruncate", read_only)
    with pytest.raises(OSError) as err:
        rows.append([[1]])
    assert err.value.errno == errno.EROFS and err.value.filename == str(path)


def test_the_logs_reach_the_disk_before_each_checkpoint(cfg, tmp_path, monkeypatch):
    # checkpoints are flushed to the disk; logs that were not could end before them after a crash of the machine
    # (or a file system gone read-only), and a resumed run would go on with rows missing
    from proximal.trainer import train
    from test_trainer import tiny

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")).name)
                        or real_fsync(fd))
    cfg = tiny(cfg, updates=2)
    cfg.checkpoint_every = 1
    train(cfg, tmp_path / "run", quiet=True)
    files = [name for name in synced if not name.startswith(("config", "run.json", "run"))]
    # per checkpoint: both CSVs and the events file, then the checkpoint's temporary, then its directory
    for update in (1, 2):
        at = next(i for i, name in enumerate(files) if name.endswith(f"update_{update:07d}.pt"))
        before = files[at - 3:at]
        assert before[:2] == ["episodes.csv", "updates.csv"] and before[2].startswith("events.out.tfevents")
