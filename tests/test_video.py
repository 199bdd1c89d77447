"""Videos: proximal eval --video (every evaluated step becomes a frame of the file; bad requests are one-line
errors) and capture_video during training (env 0's episodes on CleanRL's schedule, the run unchanged)."""

import os
import subprocess
import sys

import csv

import gymnasium as gym
import numpy as np
import pytest
import torch

from proximal import checkpoint
from proximal.config import preset
from proximal.envs import make_envs
from proximal.envs.contract import EnvOptions
from proximal.envs.vector import GymVectorEnv
from proximal.errors import UserError
from proximal.trainer import train
from proximal.video import capped_cubic

RENDER_CHECK = ("import gymnasium as gym; e = gym.make('InvertedPendulum-v5', render_mode='rgb_array'); "
                "e.reset(seed=0); assert e.render().shape[2] == 3")


def proximal(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "DISPLAY")}  # as on a headless machine
    return subprocess.run([sys.executable, "-m", "proximal", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    check = subprocess.run([sys.executable, "-c", RENDER_CHECK], env=dict(os.environ, MUJOCO_GL="egl"),
                           capture_output=True, text=True)
    if check.returncode != 0:
        pytest.skip(f"no headless OpenGL (EGL) on this machine: {check.stderr.strip().splitlines()[-1]}")
    run_dir = tmp_path_factory.mktemp("video") / "run"
    cfg = preset("mujoco")
    cfg.env_id, cfg.total_steps, cfg.device = "InvertedPendulum-v5", cfg.batch_size, "cpu"
    threads = torch.get_num_threads()
    try:
        train(cfg, run_dir, quiet=True)
    finally:
        torch.set_num_threads(threads)
    return run_dir


def test_video_holds_one_frame_per_evaluated_step(run):
    import imageio.v2 as imageio

    out = run / "eval.mp4"
    result = proximal("eval", run, "--episodes", "3", "--deterministic", "--video", out, cwd=run)
    assert result.returncode == 0, result.stderr
    # InvertedPendulum-v5 pays 1 per step except 0 on the step that ends the episode (a fall, at this early stage
    # of training), so an episode's length is its return + 1
    mean = float(result.stdout.split(": ")[1].split(" ± ")[0])
    assert f"wrote {out}" in result.stdout
    with imageio.get_reader(out) as reader:
        frames = reader.count_frames()
        first = reader.get_data(0)
    assert frames == round(3 * mean) + 3
    assert first.ndim == 3 and first.shape[2] == 3 and first.std() > 0  # a picture, not a blank frame


def test_video_with_an_unknown_format_is_one_line_error(run):
    result = proximal("eval", run, "--episodes", "1", "--video", run / "eval.xyz", cwd=run)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "eval.xyz" in result.stderr and "Traceback" not in result.stderr


FULL_DISK = """
import resource, signal, sys
import numpy as np
from proximal.errors import UserError
from proximal.evaluate import VideoWriter

class Envs:
    metadata = {"render_fps": 30}

# a file size limit stands in for a full disk: the real ffmpeg fails to write, as there
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
try:
    rng = np.random.default_rng(0)
    with VideoWriter(sys.argv[1], Envs()) as writer:
        for i in range(int(sys.argv[3])):
            # noise, which ffmpeg cannot compress below the limit: its pipe breaks while the frames go in; or
            # flat frames, which fit until ffmpeg writes the file's index last, which it then cannot
            writer.add(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) if sys.argv[4] == "noise"
                       else np.full((64, 64, 3), i, np.uint8))
except UserError as e:
    print(e)
"""


@pytest.mark.parametrize("limit, frames, kind, reason", [(4096, 300, "noise", ""),
                                                         (1024, 30, "flat", "ffmpeg could not finish the file")])
def test_video_that_ffmpeg_cannot_finish_is_one_error_and_no_file(tmp_path, limit, frames, kind, reason):
    out = tmp_path / "v.mp4"
    result = subprocess.run([sys.executable, "-c", FULL_DISK, str(out), str(limit), str(frames), kind],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"cannot write '{out}' ({reason}") and len(result.stdout.splitlines()) == 1
    assert list(tmp_path.iterdir()) == [], "no partial video left"


RECORD_FULL_DISK = """
import resource, signal, sys
from pathlib import Path
import gymnasium as gym
from proximal.video import RecordEpisodes

# a file size limit stands in for a full disk: ffmpeg, which inherits it, cannot finish the file
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))
env = RecordEpisodes(gym.make("CartPole-v1", render_mode="rgb_array"), sys.argv[1])
env.reset(seed=0)
done = False
while not done:
    _, _, terminated, truncated, _ = env.step(0)
    done = terminated or truncated
try:
    env.reset(seed=1)  # the episode's video is finished here
except OSError as e:
    print(e.filename, e.strerror, sep="|")
"""


def test_a_recorded_video_ffmpeg_cannot_finish_is_an_error_naming_it_and_no_file(tmp_path):
    # ffmpeg tells its caller nothing when it cannot write the mp4's index: a file cut short was published as a
    # video, and the error of a broken pipe named neither the file nor the cause
    result = subprocess.run([sys.executable, "-c", RECORD_FULL_DISK, str(tmp_path / "videos")], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "SDL_VIDEODRIVER": "dummy"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f"{tmp_path / 'videos' / 'rl-video-episode-0.mp4'}|ffmpeg could not finish the "
                                     "file; the disk may be full")
    assert list((tmp_path / "videos").iterdir()) == [], "no partial video left"
    assert result.stderr == "", "ffmpeg's own log stays quiet"


def test_whole_mp4_tells_a_finished_video_from_one_cut_short(tmp_path):
    import imageio.v2 as imageio
    import numpy as np

    from proximal.video import whole_mp4

    path = tmp_path / "v.mp4"
    with imageio.get_writer(path, format="FFMPEG", fps=30, macro_block_size=1) as writer:
        for i in range(20):
            writer.append_data(np.full((32, 32, 3), 10 * i, np.uint8))
    data = path.read_bytes()
    assert whole_mp4(path)
    for cut in (len(data) - 1, len(data) // 2, 8):
        (tmp_path / "cut.mp4").write_bytes(data[:cut])
        assert not whole_mp4(tmp_path / "cut.mp4"), cut


# ------------------------------------------------------------------ capture_video during training

def frame_counts(video_dir):
    """{episode: frames} of the finished videos in ``video_dir``."""
    import imageio.v2 as imageio

    counts = {}
    for path in video_dir.glob("rl-video-episode-*.mp4"):
        with imageio.get_reader(path) as reader:
            counts[int(path.stem.rpartition("-")[2])] = reader.count_frames()
    return counts


def test_capped_cubic_schedule_is_cleanrls():
    assert [e for e in range(3001) if capped_cubic(e)] == [0, 1, 8, 27, 64, 125, 216, 343, 512, 729, 1000, 2000, 3000]


def test_capture_video_records_scheduled_episodes_one_frame_per_step(cfg, tmp_path):
    # one env: episodes.csv lists env 0's episodes in order
    cfg.num_envs, cfg.num_steps, cfg.total_steps, cfg.capture_video = 1, 128, 256, True
    train(cfg, tmp_path / "run", quiet=True)
    with open(tmp_path / "run" / "episodes.csv", newline="") as f:
        lengths = [int(row["episodic_length"]) for row in csv.DictReader(f)]
    assert len(lengths) > 9  # episodes 0, 1 and 8 ended during the run
    counts = frame_counts(tmp_path / "run" / "videos")
    # a frame after the reset and after every step; episodes 2-7 not recorded; the one under way at the end (a
    # recorded one only if it is scheduled) is closed with the envs
    assert {e: counts[e] for e in (0, 1, 8)} == {e: lengths[e] + 1 for e in (0, 1, 8)}
    assert set(counts) == {0, 1, 8}
    assert not list((tmp_path / "run" / "videos").glob(".*"))  # no unfinished file left


def test_capture_video_leaves_the_run_unchanged(cfg, tmp_path):
    """Env 0 lives in the first of 2 worker processes; the recorded run trains the same parameters."""
    cfg.num_envs, cfg.num_steps, cfg.total_steps, cfg.env_workers = 3, 32, 192, 2
    states, episodes = {}, {}
    for capture in (False, True):
        cfg.capture_video = capture
        run_dir = tmp_path / f"capture-{capture}"
        states[capture] = train(cfg, run_dir, quiet=True).policy.state_dict()
        episodes[capture] = (run_dir / "episodes.csv").read_text()
    assert all(torch.equal(states[False][k], states[True][k]) for k in states[False])
    assert episodes[False] == episodes[True] and episodes[True].count("\n") > 5
    assert not (tmp_path / "capture-False" / "videos").exists()
    assert 0 in frame_counts(tmp_path / "capture-True" / "videos")


def test_capture_video_resumed_continues_the_schedule(cfg, tmp_path):
    """The checkpoint keeps env 0's episode count: the resumed run records episode 8, not episode 0 again, and
    the recording its fresh envs began before the checkpoint was restored is dropped."""
    cfg.num_envs, cfg.num_steps, cfg.total_steps, cfg.capture_video = 1, 64, 256, True
    run_dir = tmp_path / "run"
    train(cfg, run_dir, quiet=True, max_updates=1)
    before = frame_counts(run_dir / "videos")
    train(None, run_dir, resume=True, quiet=True)
    with open(run_dir / "episodes.csv", newline="") as f:
        lengths = [int(row["episodic_length"]) for row in csv.DictReader(f)]
    after = frame_counts(run_dir / "videos")
    assert set(after) == {0, 1, 8} and after[8] == lengths[8] + 1
    assert after[0] == before[0] == lengths[0] + 1  # episode 0 ended before the checkpoint and is kept as it was
    assert not list((run_dir / "videos").glob(".*"))
    train(None, run_dir, resume=True, quiet=True)  # already complete: its envs are reset, never stepped
    assert frame_counts(run_dir / "videos") == after


def test_capture_video_of_a_moved_run_records_into_its_new_directory(cfg, tmp_path):
    # the env state in the checkpoint must not carry the old directory: the resumed run writes only where it is
    cfg.num_envs, cfg.num_steps, cfg.total_steps, cfg.capture_video = 1, 64, 256, True
    train(cfg, tmp_path / "old", quiet=True, max_updates=1)
    (tmp_path / "old").rename(tmp_path / "new")
    train(None, tmp_path / "new", resume=True, quiet=True)
    assert not (tmp_path / "old").exists()
    assert 8 in frame_counts(tmp_path / "new" / "videos")


def test_capture_video_of_mujoco_leaves_the_run_unchanged(run, tmp_path):
    """From the command line, without MUJOCO_GL (as on a headless machine): the same parameters as without
    videos. ``run`` is here for its skip where there is no EGL."""
    params = {}
    for flags in ((), ("--capture-video",)):
        run_dir = tmp_path / f"run{len(flags)}"
        result = proximal("train", "--preset", "mujoco", "--env", "InvertedPendulum-v5", "--total-steps", "512",
                          "--num-steps", "256", "--device", "cpu", "--quiet", "--run-dir", run_dir, *flags,
                          cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        [path] = (run_dir / "checkpoints").glob("*.pt")
        params[flags] = checkpoint.load(path)["policy"]
    assert all(torch.equal(params[()][k], params[("--capture-video",)][k]) for k in params[()])
    counts = frame_counts(tmp_path / "run1" / "videos")
    assert {0, 1, 8} <= set(counts) and all(n > 1 for n in counts.values())


def make_unrendered_cartpole():
    return gym.make("CartPole-v1")  # render_mode None


def test_capture_video_of_a_factory_without_rgb_array_is_one_message(tmp_path):
    import proximal

    with pytest.raises(UserError, match="render_mode='rgb_array'"):
        proximal.train(env=make_unrendered_cartpole, capture_video=True, run_dir=tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_capture_video_on_a_backend_that_does_not_render_is_one_message(tmp_path):
    cfg = preset("atari")
    cfg.backend = "envpool"
    with pytest.raises(UserError, match="--backend python"):
        make_envs(cfg.env_id, 1, cfg=cfg, video_dir=str(tmp_path))


def test_capture_video_of_atari_holds_the_raw_emulator_frames(tmp_path):
    import imageio.v2 as imageio

    cfg = preset("atari")
    cfg.num_envs, cfg.num_steps, cfg.total_steps, cfg.env_workers, cfg.torch_threads = 2, 16, 32, 2, 1
    cfg.capture_video, cfg.device = True, "cpu"
    train(cfg, tmp_path / "run", quiet=True)
    with imageio.get_reader(tmp_path / "run" / "videos" / "rl-video-episode-0.mp4") as reader:
        frames, first = reader.count_frames(), reader.get_data(0)
    assert first.shape == (210, 160, 3)  # the emulator's screen, not the 84x84 gray observation
    # a frame per emulator step of env 0's 16 agent steps, 4 each (atari.frame_skip), plus the reset's, its 1-30
    # no-ops (atari.noop_reset) and FIRE's (atari.fire_reset: 2 steps); no game ends this early
    assert 4 * 16 + 1 + 1 + 2 <= frames <= 4 * 16 + 1 + 30 + 2


def test_capture_video_records_env_0_of_several_in_one_process(tmp_path):
    envs = GymVectorEnv("CartPole-v1", 3, options=EnvOptions(workers=1), video_dir=str(tmp_path))
    first_lengths = {}
    rng = np.random.default_rng(0)
    try:
        envs.reset(seed=3)
        while len(first_lengths) < 3:
            for i, _, length in envs.step(rng.integers(0, 2, 3)).episodes:
                first_lengths.setdefault(i, length)
    finally:
        envs.close()
    assert first_lengths[0] != first_lengths[2], "the envs' first episodes differ: the recording tells which env"
    assert frame_counts(tmp_path)[0] == first_lengths[0] + 1  # a frame after the reset and after every step


def test_without_a_display_the_renderers_are_pointed_at_headless_backends(monkeypatch):
    from proximal.video import render_headless

    for name in ("DISPLAY", "MUJOCO_GL", "SDL_VIDEODRIVER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MUJOCO_GL", "osmesa")  # the user's choice stays
    render_headless()
    assert (os.environ["MUJOCO_GL"], os.environ["SDL_VIDEODRIVER"]) == ("osmesa", "dummy")
    monkeypatch.delenv("SDL_VIDEODRIVER")
    monkeypatch.setenv("DISPLAY", ":0")  # with a display, nothing is chosen for the user
    render_headless()
    assert "SDL_VIDEODRIVER" not in os.environ
