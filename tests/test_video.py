"""proximal eval --video: every evaluated step becomes a frame of the file; bad requests are one-line errors."""

import os
import subprocess
import sys

import pytest
import torch

from proximal.config import preset
from proximal.trainer import train

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
