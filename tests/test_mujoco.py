"""End to end on MuJoCo: the mujoco preset learns InvertedPendulum-v5 on a fixed seed within the CI budget."""

import csv

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
