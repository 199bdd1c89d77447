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
