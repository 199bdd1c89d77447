"""A scripted ALE-like emulator at frameskip 1 for the Atari wrapper tests: known frames, rewards, lives."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

REWARDS = (0.0, 2.0, -3.0, 7.0, 1.0, 5.0, -1.0, 0.5)  # reward of episode frame t is REWARDS[t % 8]


class _Lives:
    def __init__(self, env):
        self.env = env

    def lives(self) -> int:
        return self.env.lives


class FakeALE(gym.Env):
    """One raw frame per step. Every frame the env produces (reset or step) gets the next ``frame_id``; its RGB
    content is ``frame(frame_id)`` (seeded noise, so the max of two frames equals neither). Episode frame t
    (1-based, counted from the emulator reset) pays ``REWARDS[t % 8]``; a life is lost at each frame in
    ``life_loss_at``; the game ends (terminated, lives 0) at ``game_over_at`` and is truncated at ``max_frames``
    (0: never). ``log`` records every call: ("reset", None, frame_id) or ("step", action, frame_id), and
    ``step_rewards`` every raw step's reward."""

    metadata = {"render_modes": []}

    def __init__(self, meanings=("NOOP", "FIRE", "RIGHT", "LEFT"), lives=3, life_loss_at=(40, 80),
                 game_over_at=120, max_frames=0, shape=(210, 160, 3)):
        self.meanings = list(meanings)
        self.initial_lives = lives
        self.life_loss_at = tuple(life_loss_at)
        self.game_over_at = game_over_at
        self.max_frames = max_frames
        self.shape = shape
        self.observation_space = gym.spaces.Box(0, 255, shape, np.uint8)
        self.action_space = gym.spaces.Discrete(len(meanings))
        self.ale = _Lives(self)
        self.frame_id = -1
        self.t = 0
        self.lives = lives
        self.log: list[tuple[str, int | None, int]] = []
        self.step_rewards: list[float] = []

    def get_action_meanings(self) -> list[str]:
        return list(self.meanings)

    def frame(self, frame_id: int) -> np.ndarray:
        return np.random.default_rng(frame_id).integers(0, 256, self.shape, dtype=np.uint8)

    @property
    def resets(self) -> int:
        return sum(kind == "reset" for kind, _, _ in self.log)

    def actions_since_reset(self) -> list[int]:
        """Actions of the raw steps since the last emulator reset."""
        last = max(i for i, (kind, _, _) in enumerate(self.log) if kind == "reset")
        return [a for _, a, _ in self.log[last + 1:]]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.lives = self.initial_lives
        self.frame_id += 1
        self.log.append(("reset", None, self.frame_id))
        return self.frame(self.frame_id), {"lives": self.lives}

    def step(self, action):
        self.t += 1
        self.frame_id += 1
        self.log.append(("step", int(action), self.frame_id))
        reward = REWARDS[self.t % len(REWARDS)]
        self.step_rewards.append(reward)
        self.lives = self.initial_lives - sum(x <= self.t for x in self.life_loss_at)
        terminated = self.t >= self.game_over_at
        if terminated:
            self.lives = 0
        truncated = bool(self.max_frames) and self.t >= self.max_frames
        return self.frame(self.frame_id), reward, terminated, truncated, {"lives": self.lives}
