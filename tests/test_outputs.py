"""outputs.write_whole: the one way the run's own files (checkpoints, config.json, run.json, rewritten CSVs, the
W&B record, bench timings) replace their earlier versions."""

import errno
import os

import pytest

from proximal.outputs import write_whole


def test_write_whole_replaces_the_file_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("old")
    write_whole(path, "new text")
    write_whole(tmp_path / "b.bin", b"\x00\x01")
    assert path.read_text() == "new text" and (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "config.json"]


def test_new_files_get_the_umask_permissions_not_owner_only(tmp_path):
    umask = os.umask(0o002)
    try:
        write_whole(tmp_path / "a", "x")
    finally:
        os.umask(umask)
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o664


@pytest.mark.parametrize("failing", ["write", "replace"])
def test_a_failed_write_keeps_the_old_file_removes_the_temporary_and_names_the_path(tmp_path, monkeypatch, failing):
    path = tmp_path / "updates.csv"
    path.write_text("global_step\n1\n")

    def disk_full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/somewhere/.tmp_x")

    if failing == "write":  # a full disk shows at the buffered write's flush, when the file is closed
        real_open = open

        class Full:
            def __init__(self, fd):
                self.f = real_open(fd, "wb")

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

            def write(self, data):
                self.f.write(data[:3])
                disk_full()

        monkeypatch.setattr("builtins.open", lambda fd, mode: Full(fd))
    else:
        monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError) as err:
        write_whole(path, "global_step\n1\n2\n")
    monkeypatch.undo()
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
    assert path.read_text() == "global_step\n1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["updates.csv"]


def test_durable_writes_reach_the_disk_with_their_directory_entry(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd))
    write_whole(tmp_path / "plain", "x")
    assert synced == []
    write_whole(tmp_path / "update_0000001.pt", b"x", durable=True)
    assert len(synced) == 2 and synced[0].startswith(str(tmp_path / ".tmp_")) and synced[1] == str(tmp_path)


def test_on_a_read_only_file_system_the_error_is_the_writes_naming_the_file(tmp_path, monkeypatch):
    # the kernel refuses there even to remove a file that is not there: that refusal must not replace the error
    from pathlib import Path

    from proximal.errors import UserError
    from proximal.outputs import cannot_write, output_file

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(os, "open", read_only)
    monkeypatch.setattr(Path, "unlink", read_only)
    with pytest.raises(OSError) as err:
        write_whole(tmp_path / "config.json", "{}")
    assert err.value.errno == errno.EROFS and err.value.filename == str(tmp_path / "config.json")
    with pytest.raises(UserError, match=r"cannot write '.*policy.onnx' \(Read-only file system\)"):
        with output_file(tmp_path / "policy.onnx", "policy.onnx") as tmp:
            try:  # the exporter's write, reported by its caller as export_onnx does
                read_only(tmp)
            except OSError as e:
                raise cannot_write(tmp_path / "policy.onnx", e) from None
