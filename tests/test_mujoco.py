"""End to end on MuJoCo: the mujoco preset learns InvertedPendulum-v5 on a fixed seed within the CI budget."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import torch

from proximal.config import preset
from proximal.trainer import train


def test_mujoco_preset_learns_inverted_pendulum(tmp_path):
    cfg = preset("mujoco")
    cfg.env_id, cfg.seed, cfg.device = "InvertedPendulum-v5", 1, "cpu"
    cfg.total_steps = 20 * cfg.batch_size  # 40,960 steps, about 10 s here
    threads = torch.get_num_threads()
    try:
        train(cfg, tmp_path, quiet=True)
    finally:
        torch.set_num_threads(threads)
    with open(tmp_path / "episodes.csv", newline="") as f:
        returns = [float(r["episodic_return"]) for r in csv.DictReader(f)]
    # a random policy balances for about 5 steps (return 5); the cap is 1000
    assert sum(returns[:20]) / 20 < 50
    assert sum(returns[-20:]) / 20 >= 500


def identical(a, b) -> bool:
    """Equality of nested checkpoint values, tensors compared bitwise."""
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(identical(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b))
    return a == b


def test_mujoco_run_with_normalization_resumes_exactly(tmp_path):
    """Hopper (contacts, terminations), the mujoco preset's normalization on: a run stopped and resumed ends with
    the parameters, Adam state and normalization statistics of the uninterrupted run, bit for bit."""
    from proximal import checkpoint

    cfg = preset("mujoco")
    cfg.env_id, cfg.device, cfg.num_envs, cfg.num_steps, cfg.num_minibatches = "Hopper-v5", "cpu", 2, 64, 4
    cfg.total_steps, cfg.checkpoint_every = 6 * cfg.batch_size, 0
    threads = torch.get_num_threads()
    try:
        full = train(cfg, tmp_path / "full", quiet=True)
        train(cfg, tmp_path / "resumed", quiet=True, max_updates=3)
        resumed = train(None, tmp_path / "resumed", resume=True, quiet=True)
    finally:
        torch.set_num_threads(threads)
    a = checkpoint.load(checkpoint.latest(tmp_path / "full"))
    b = checkpoint.load(checkpoint.latest(tmp_path / "resumed"))
    assert resumed.update == full.update == 6
    for key in a["policy"]:
        assert torch.equal(a["policy"][key], b["policy"][key]), key
    assert a["normalizer"] and identical(a["normalizer"], b["normalizer"])
    with open(tmp_path / "full" / "episodes.csv") as f, open(tmp_path / "resumed" / "episodes.csv") as g:
        assert f.read() == g.read()


def test_a_gl_backend_mujoco_cannot_load_is_one_message():
    # MuJoCo reads MUJOCO_GL at its import, in gym.make: a backend it does not know (or whose library is missing,
    # osmesa without libOSMesa) raised from PyOpenGL or mujoco with a long traceback
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "proximal", "train", "--preset", "mujoco", "--env", "Hopper-v5",
                           "--total-steps", "2048", "--quiet", "--run-dir", "never"], capture_output=True, text=True,
                          timeout=300, cwd=root, env={**os.environ, "MUJOCO_GL": "nonsense", "PYTHONPATH": str(root)})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("proximal train: error: environment 'Hopper-v5': MuJoCo could not load its GL "
                                  "backend MUJOCO_GL=nonsense")
    assert not (root / "never").exists()
