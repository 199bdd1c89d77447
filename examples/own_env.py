"""Train PPO on your own gymnasium environment, then load the policy and act with it.

    python examples/own_env.py            # 50,000 steps
    python examples/own_env.py --quick    # 1,024 steps, to check that everything runs
"""

import argparse

import gymnasium as gym
import numpy as np

import proximal


class Corridor(gym.Env):
    """Start in cell 0 of a corridor of 8 cells and walk to the last one: action 1 steps right, 0 steps left.
    Reward 1 on arrival and -0.01 per step, so the best return is 0.94; episodes end after 50 steps."""

    observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)
    length = 8

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.cell, self.steps = 0, 0
        return self._obs(), {}

    def _obs(self):
        return np.array([self.cell / (self.length - 1)], np.float32)

    def step(self, action):
        self.cell = int(np.clip(self.cell + (1 if action == 1 else -1), 0, self.length - 1))
        self.steps += 1
        arrived = self.cell == self.length - 1
        return self._obs(), 1.0 if arrived else -0.01, arrived, self.steps >= 50, {}


def make_corridor() -> gym.Env:
    """The factory proximal calls for every env (zero arguments, a gymnasium.Env back). At module level, so that
    env worker processes (env_workers > 1) can receive it."""
    return Corridor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny budget, to check that everything runs")
    parser.add_argument("--run-dir", default="runs/corridor")
    args = parser.parse_args()

    run = proximal.train("classic", env=make_corridor, run_dir=args.run_dir, seed=1, quiet=args.quick,
                         total_steps=1_024 if args.quick else 50_000, device="cpu")
    print(f"trained {run.global_step} steps into {run.run_dir}")

    agent = proximal.load(run.run_dir)  # from the checkpoint alone: no env needed
    env = make_corridor()
    obs, _ = env.reset(seed=0)
    episode_return, done = 0.0, False
    while not done:
        action, _ = agent.act(obs, deterministic=True)  # one observation in, one action out
        obs, reward, terminated, truncated, _ = env.step(action)
        episode_return += reward
        done = terminated or truncated
    print(f"greedy episode return: {episode_return:.2f} (best possible 0.94)")


if __name__ == "__main__":
    main()
