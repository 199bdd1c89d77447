"""--track: the run logged to Weights & Biases, read back from what an offline run wrote; a missing package or
login is one message before training starts."""

import csv
import json
import os
import struct
import subprocess
import sys

import pytest

from proximal.errors import UserError
from proximal.trainer import train

wandb = pytest.importorskip("wandb", reason="the wandb extra is not installed: pip install -e '.[wandb]'")


def offline_runs(run_dir):
    """The .wandb files of the offline W&B runs written under ``run_dir``, oldest first. W&B's service process
    writes them and may still hold the end of one after ``finish``: stopping the service flushes them."""
    wandb.teardown()
    return sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))


def read_offline_run(path):
    """The records of an offline run's .wandb file: a LevelDB-style log (a 7-byte file header, then 32 KiB blocks
    of chunks, each with a 7-byte header: CRC, length, kind) of W&B's Record protos."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, chunk, records = 7, 32 * 1024, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def history(records):
    """Every logged row as {key: value}, a nested key's parts joined by "." (a video's "videos._type")."""
    return [{".".join(item.nested_key) or item.key: json.loads(item.value_json) for item in r.history.item}
            for r in records if r.WhichOneof("record_type") == "history"]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_track_logs_config_name_scalars_and_videos_as_cleanrl(cfg, tmp_path, offline):
    cfg.env_id, cfg.num_envs, cfg.num_steps, cfg.total_steps = "CartPole-v1", 1, 64, 192
    cfg.track, cfg.capture_video, cfg.wandb_project = True, True, "proximal-test"
    run_dir = tmp_path / "cartpole-run"
    train(cfg, run_dir, quiet=True)

    [path] = offline_runs(run_dir)
    records = read_offline_run(path)
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.display_name == "cartpole-run" and run.project == "proximal-test"
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["env_id"] == "CartPole-v1" and config["total_steps"] == 192 and config["track"] is True
    rows = history(records)
    # the updates' scalars under their TensorBoard names, at the steps of updates.csv, with the same values
    with open(run_dir / "updates.csv", newline="") as f:
        updates = list(csv.DictReader(f))
    logged = [row for row in rows if "losses/value_loss" in row]
    assert [row["global_step"] for row in logged] == [int(u["global_step"]) for u in updates] == [64, 128, 192]
    for row, update in zip(logged, updates):
        assert row["losses/value_loss"] == pytest.approx(float(update["value_loss"]))
        assert row["charts/learning_rate"] == pytest.approx(float(update["learning_rate"]))
    with open(run_dir / "episodes.csv", newline="") as f:
        episodes = list(csv.DictReader(f))
    returns = [row["charts/episodic_return"] for row in rows if "charts/episodic_return" in row]
    assert returns == [pytest.approx(float(e["episodic_return"])) for e in episodes] and returns
    # each captured video once: episodes 0, 1 and 8 (CleanRL's schedule) where the run reached them
    videos = sorted(p.name for p in (run_dir / "videos").glob("*.mp4"))
    assert videos[:2] == ["rl-video-episode-0.mp4", "rl-video-episode-1.mp4"]
    logged_videos = [row for row in rows if "videos._type" in row]
    assert all(row["videos._type"] == "video-file" for row in logged_videos)
    assert sorted(row["videos.size"] for row in logged_videos) == sorted(
        (run_dir / "videos" / name).stat().st_size for name in videos)


def test_track_resume_continues_the_same_wandb_run(cfg, tmp_path, offline):
    cfg.env_id, cfg.num_envs, cfg.num_steps, cfg.total_steps, cfg.track = "CartPole-v1", 1, 32, 96, True
    run_dir = tmp_path / "run"
    train(cfg, run_dir, quiet=True, max_updates=1)
    first = (run_dir / "wandb_id").read_text().strip()
    train(None, run_dir, resume=True, quiet=True)
    assert (run_dir / "wandb_id").read_text().strip() == first
    paths = offline_runs(run_dir)
    runs = [r.run for path in paths for r in read_offline_run(path) if r.WhichOneof("record_type") == "run"]
    assert len(paths) == 2 and [run.run_id for run in runs] == [first, first]
    # the resumed part logs the updates after the checkpoint: 2 and 3
    steps = [row["global_step"] for row in history(read_offline_run(paths[1])) if "losses/value_loss" in row]
    assert steps == [64, 96]


def wandb_history(run_dir):
    """The W&B run's history as W&B holds it after its offline segments are synced in order: a segment that
    rewinds the run (its run record's branch point) drops the rows after that ``_step``, then adds its own."""
    rows = []
    for path in offline_runs(run_dir):
        records = read_offline_run(path)
        [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        if run.HasField("branch_point"):
            assert run.branch_point.run == run.run_id and run.branch_point.metric == "_step"
            rows = [row for row in rows if row["_step"] <= run.branch_point.value]
        rows += history(records)
    return rows


class Killed(Exception):
    pass


def test_track_resume_after_a_kill_logs_each_update_and_video_once(cfg, tmp_path, offline):
    """Stopped after an update logged past its checkpoint (as a kill would), then resumed: the W&B history is an
    uninterrupted run's, with the resumed run's values for the updates after the checkpoint."""
    cfg.env_id, cfg.num_envs, cfg.num_steps, cfg.total_steps = "CartPole-v1", 1, 32, 320
    cfg.track, cfg.capture_video, cfg.wandb_project = True, True, "proximal-test"
    # where an uninterrupted run logs its videos (episodes 0, 1 and 8): the run is killed after the update that
    # logs episode 8's, two updates after the last checkpoint, which follows episode 0's and 1's
    whole = tmp_path / "whole"
    train(cfg, whole, quiet=True)
    expected = wandb_history(whole)
    video_steps = [row["global_step"] for row in expected if "videos._type" in row]
    assert len(video_steps) == 3
    killed_at = video_steps[2] // 32
    cfg.checkpoint_every = killed_at - 2
    assert video_steps[1] <= cfg.checkpoint_every * 32

    def kill(info):
        if info.update == killed_at:
            raise Killed

    run_dir = tmp_path / "run"
    with pytest.raises(Killed):
        train(cfg, run_dir, quiet=True, callbacks=[kill])
    before = wandb_history(run_dir)
    assert max(row["global_step"] for row in before if "losses/value_loss" in row) == killed_at * 32
    train(None, run_dir, resume=True, quiet=True)
    rows = wandb_history(run_dir)
    assert len(offline_runs(run_dir)) == 2

    updates = [row for row in rows if "losses/value_loss" in row]
    with open(run_dir / "updates.csv", newline="") as f:
        csv_updates = list(csv.DictReader(f))
    assert [row["global_step"] for row in updates] == [int(u["global_step"]) for u in csv_updates] == [
        32 * u for u in range(1, 11)]
    for row, update in zip(updates, csv_updates):  # the resumed run's values, where it logged them
        assert row["losses/value_loss"] == pytest.approx(float(update["value_loss"]))
        assert row["losses/approx_kl"] == pytest.approx(float(update["approx_kl"]))
    with open(run_dir / "episodes.csv", newline="") as f:
        episodes = list(csv.DictReader(f))
    assert [(row["global_step"], row["charts/episodic_return"]) for row in rows
            if "charts/episodic_return" in row] == [
        (int(e["global_step"]), pytest.approx(float(e["episodic_return"]))) for e in episodes]
    # each video once, at the update where the uninterrupted run logged it, and the file now in videos/
    videos = [row for row in rows if "videos._type" in row]
    assert [row["global_step"] for row in videos] == video_steps
    files = sorted((run_dir / "videos").glob("*.mp4"))
    assert sorted(row["videos.size"] for row in videos) == sorted(p.stat().st_size for p in files)
    # and the steps are the uninterrupted run's, row for row
    assert [row["global_step"] for row in rows] == [row["global_step"] for row in expected]


def test_track_resume_where_wandb_refuses_the_rewind_skips_what_it_holds(cfg, tmp_path, offline, monkeypatch):
    """Rewinding is a preview feature of the W&B server: where it is refused, the resumed run continues the W&B run
    and does not log again the updates it already holds (they keep their first values), with a warning."""
    cfg.env_id, cfg.num_envs, cfg.num_steps, cfg.total_steps, cfg.checkpoint_every = "CartPole-v1", 1, 32, 192, 2
    cfg.track = True

    def kill(info):
        if info.update == 3:
            raise Killed

    run_dir = tmp_path / "run"
    with pytest.raises(Killed):
        train(cfg, run_dir, quiet=True, callbacks=[kill])
    init = wandb.init

    def refuse_rewind(**kwargs):
        if "resume_from" in kwargs:
            raise wandb.errors.CommError("failed to rewind run: not enabled")
        return init(**kwargs)

    monkeypatch.setattr(wandb, "init", refuse_rewind)
    with pytest.warns(UserWarning, match=r"did not rewind .* updates up to step 96 keep the values first logged"):
        train(None, run_dir, resume=True, quiet=True)
    rows = wandb_history(run_dir)
    assert [row["global_step"] for row in rows if "losses/value_loss" in row] == [32, 64, 96, 128, 160, 192]
    steps = [row["global_step"] for row in rows]
    assert steps == sorted(steps)


def test_track_fresh_start_in_a_reused_run_directory_is_a_new_wandb_run(cfg, tmp_path, offline):
    """A run killed before its first checkpoint leaves nothing to resume, and its directory is reused by a fresh
    run: that one is a new W&B run, not appended to the killed one's rows."""
    cfg.env_id, cfg.num_envs, cfg.num_steps, cfg.total_steps, cfg.checkpoint_every = "CartPole-v1", 1, 32, 64, 0
    cfg.track = True

    def kill(info):
        raise Killed

    run_dir = tmp_path / "run"
    with pytest.raises(Killed):
        train(cfg, run_dir, quiet=True, callbacks=[kill])
    first = (run_dir / "wandb_id").read_text().strip()
    train(cfg, run_dir, quiet=True)
    second = (run_dir / "wandb_id").read_text().strip()
    assert second != first
    [path] = [p for p in offline_runs(run_dir) if p.name == f"run-{second}.wandb"]
    assert [row["global_step"] for row in history(read_offline_run(path)) if "losses/value_loss" in row] == [32, 64]


@pytest.mark.parametrize("fails", ["after the first update", "at the start"])
def test_track_on_a_disk_that_fills_up_is_the_run_failure_message(cfg, tmp_path, offline, monkeypatch, fails):
    """The tracker's own writes (wandb_steps.jsonl) failing too must not hide the run's one-line RunFailure, and
    W&B is finished either way."""
    import errno

    import proximal.logs as logs
    from proximal.errors import RunFailure

    cfg.env_id, cfg.num_envs, cfg.num_steps, cfg.total_steps, cfg.track = "CartPole-v1", 1, 64, 256, True
    full = [fails == "at the start"]
    real_append, real_replace = logs.append_whole, os.replace

    def append_whole(fd, data, size, path):
        if full[0]:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_append(fd, data, size, path)

    def replace(src, dst):  # the record's first write, at the start
        if full[0] and str(dst).endswith(logs.WANDB_STEPS):
            raise OSError(errno.ENOSPC, "No space left on device", str(src))
        return real_replace(src, dst)

    monkeypatch.setattr(logs, "append_whole", append_whole)
    monkeypatch.setattr(logs.os, "replace", replace)
    with pytest.raises(RunFailure, match="No space left on device"):
        train(cfg, tmp_path / "run", quiet=True, callbacks=[lambda info: full.__setitem__(0, True)])
    assert wandb.run is None  # finished


def test_track_without_the_package_is_one_message_before_training(cfg, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb then raises ImportError
    cfg.track = True
    with pytest.raises(UserError, match=r"pip install -e '\.\[wandb\]'"):
        train(cfg, tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_track_without_a_login_is_one_line_from_the_cli(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path), WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"))  # no netrc, no settings
    result = subprocess.run([sys.executable, "-m", "proximal", "train", "--track", "--total-steps", "512",
                             "--run-dir", str(tmp_path / "run")], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert "wandb login" in line and "WANDB_MODE=offline" in line
    assert not (tmp_path / "run").exists()


def test_a_w_and_b_run_that_cannot_finish_is_one_line_and_says_the_training_is_whole(cfg, tmp_path, offline,
                                                                                      monkeypatch):
    # wandb's writer on a full disk: training goes on, then finish raises (thousands of lines of traceback before)
    import errno

    from proximal.errors import RunFailure

    cfg.env_id, cfg.num_envs, cfg.num_steps, cfg.total_steps, cfg.track = "CartPole-v1", 1, 64, 128, True
    real_finish = wandb.Run.finish

    def finish(self, *args, **kwargs):
        real_finish(self, *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(wandb.Run, "finish", finish)
    run_dir = tmp_path / "run"
    with pytest.raises(RunFailure) as err:
        train(cfg, run_dir, quiet=True)
    assert str(err.value) == (f"W&B could not finish its record of the run (OSError: [Errno 28] No space left on "
                              f"device); the training's own files in {run_dir} are whole; what W&B kept is in "
                              f"{run_dir / 'wandb'} (wandb sync uploads it once the cause, a full disk mostly, is "
                              "fixed)")
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["update_0000002.pt"]
