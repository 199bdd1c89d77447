"""proximal eval --video's file: written whole or not at all, and one error naming the path where it cannot be."""

import errno

import gymnasium as gym
import imageio.v2 as imageio
import pytest
import torch

import proximal.evaluate as evaluate_mod
from proximal.errors import UserError
from proximal.evaluate import evaluate
from proximal.policy import make_policy

ENV = "CartPole-v1"


@pytest.fixture
def policy(cfg):
    env = gym.make(ENV)
    return make_policy(env.observation_space, env.action_space, cfg).eval()


def test_the_video_is_written_whole_under_new_directories(policy, tmp_path):
    output = tmp_path / "new" / "dirs" / "v.mp4"
    returns = evaluate(policy, ENV, 1, seed=0, video=output)
    assert [p.name for p in output.parent.iterdir()] == ["v.mp4"], "no temporary file left"
    with imageio.get_reader(output) as reader:
        assert reader.count_frames() == returns[0]  # CartPole pays 1 a step: a frame before each step


def test_a_full_disk_is_one_error_and_leaves_the_old_video(policy, tmp_path, monkeypatch):
    output = tmp_path / "v.mp4"
    output.write_bytes(b"the previous video")
    real_get_writer = imageio.get_writer

    def filling_writer(path, **kwargs):
        """ffmpeg's writer on a disk that fills up after a few frames: imageio reports the broken pipe."""
        writer = real_get_writer(path, **kwargs)
        real_append, frames = writer.append_data, []

        def append_data(frame):
            frames.append(frame)
            if len(frames) > 3:
                raise OSError("[Errno 32] Broken pipe\n\nFFMPEG COMMAND:\nffmpeg ...\n\nFFMPEG STDERR OUTPUT:\n")
            real_append(frame)
        writer.append_data = append_data
        return writer

    monkeypatch.setattr(imageio, "get_writer", filling_writer)
    with pytest.raises(UserError) as caught:
        evaluate(policy, ENV, 1, seed=0, video=output)
    message = str(caught.value)
    assert message == f"cannot write '{output}' ([Errno 32] Broken pipe); free space on its disk or choose another path"
    assert output.read_bytes() == b"the previous video"
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"], "no partial file left"


def test_a_failure_when_ffmpeg_ends_the_file_is_one_error(policy, tmp_path, monkeypatch):
    real_get_writer = imageio.get_writer

    def failing_close(path, **kwargs):
        writer = real_get_writer(path, **kwargs)
        real_close = writer.close

        def close():
            real_close()
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        writer.close = close
        return writer

    monkeypatch.setattr(imageio, "get_writer", failing_close)
    with pytest.raises(UserError, match=r"\(No space left on device\); free space on its disk"):
        evaluate(policy, ENV, 1, seed=0, video=tmp_path / "new" / "v.mp4")
    assert list(tmp_path.iterdir()) == [], "no partial file, nor the directory made for it"


def test_a_parent_that_is_a_file_is_one_error(policy, tmp_path):
    (tmp_path / "afile").write_text("")
    output = tmp_path / "afile" / "v.mp4"
    with pytest.raises(UserError, match="is a file, not a directory") as caught:
        evaluate(policy, ENV, 1, seed=0, video=output)
    assert str(output) in str(caught.value)


def test_a_directory_as_the_video_is_one_error(policy, tmp_path):
    with pytest.raises(UserError, match="is a directory"):
        evaluate(policy, ENV, 1, seed=0, video=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_error_of_the_env_is_not_called_a_write_error(policy, tmp_path, monkeypatch):
    """Only the video's own writes are reported as the video's: the block also steps the env."""
    def broken_step(self, action):
        raise OSError(errno.EIO, "the env's own device failed")

    monkeypatch.setattr(gym.envs.classic_control.CartPoleEnv, "step", broken_step)
    with pytest.raises(OSError, match="the env's own device failed"):
        evaluate(policy, ENV, 1, seed=0, video=tmp_path / "v.mp4")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["noext", "frame.jpg", "frames.png"])
def test_a_video_name_that_is_not_a_video_is_one_error_before_any_episode(policy, tmp_path, monkeypatch, name):
    import proximal.evaluate as evaluate_module

    played = []  # the carry is made when the first episode starts
    monkeypatch.setattr(evaluate_module, "Carry", lambda **kwargs: played.append(1))
    with pytest.raises(UserError, match=rf"--video '.*{name}' is not a video file name: end it in \.mp4"):
        evaluate(policy, "CartPole-v1", 1, video=tmp_path / name)
    assert not played and not any(tmp_path.iterdir())


def test_evaluation_resets_the_recurrent_state_after_a_truncated_episode(cfg, monkeypatch):
    # Forever-v0: reward 1 a step, never terminated, truncated by its time limit at step 10
    env = gym.make("proximal-test/Forever-v0")
    cfg.lstm_size = 8
    torch.manual_seed(0)
    policy = make_policy(env.observation_space, env.action_space, cfg).eval()
    seen = []  # (the carry's start, the state after the step) of every step
    real_make_actor = evaluate_mod.make_actor

    def recording_actor(*args, **kwargs):
        actor = real_make_actor(*args, **kwargs)
        sample = actor.sample

        def recorded(obs, carry, rng):
            action, after = sample(obs, carry, rng)
            seen.append((float(carry.start[0]), after.state.clone()))
            return action, after

        actor.sample = recorded
        return actor

    monkeypatch.setattr(evaluate_mod, "make_actor", recording_actor)
    returns = evaluate(policy, "proximal-test/Forever-v0", 3, seed=0)
    assert returns.tolist() == [10.0, 10.0, 10.0]
    assert [start for start, _ in seen] == ([1.0] + [0.0] * 9) * 3, "an episode's first observation starts it"
    # the observations are all alike: from a reset state, every episode's first step gives the first one's state
    assert torch.equal(seen[10][1], seen[0][1]) and torch.equal(seen[20][1], seen[0][1])
    assert not torch.equal(seen[1][1], seen[0][1]), "the state moves on within an episode"
