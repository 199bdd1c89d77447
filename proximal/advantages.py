"""core.gae: generalized advantage estimation, exactly as the reference (docs/details.md, core.gae)."""

from __future__ import annotations

import numpy as np


def gae(rewards: np.ndarray, values: np.ndarray, starts: np.ndarray, final_values: np.ndarray,
        next_value: np.ndarray, next_start: np.ndarray, gamma: float, lam: float):
    """Advantages and value targets for a (T, N) rollout.

    ``starts[t]`` is d_t (obs_t begins a new episode); ``next_start`` and ``next_value`` belong to the observation
    the next rollout starts from. ``final_values[t]`` is V(final observation) where step t was truncated (not
    terminated), else 0: it is bootstrapped into the reward, while the recursion is cut at every episode end.
    Returns (advantages, returns) with returns = advantages + values.
    """
    num_steps = rewards.shape[0]
    advantages = np.zeros_like(rewards)
    last = np.zeros_like(next_value)
    for t in reversed(range(num_steps)):
        if t == num_steps - 1:
            nonterminal, following_value = 1.0 - next_start, next_value
        else:
            nonterminal, following_value = 1.0 - starts[t + 1], values[t + 1]
        reward = rewards[t] + gamma * final_values[t]
        delta = reward + gamma * nonterminal * following_value - values[t]
        last = delta + gamma * lam * nonterminal * last
        advantages[t] = last
    return advantages, advantages + values


def compute_advantages(rollout, cfg) -> tuple[np.ndarray, np.ndarray]:
    """GAE of a filled rollout with the config's gamma and lambda; core.gae off gives lambda 1 (bootstrapped
    Monte-Carlo returns)."""
    lam = cfg.gae_lambda if cfg.on("core.gae") else 1.0
    return gae(rollout.rewards, rollout.values, rollout.starts, rollout.final_values, rollout.next_value,
               rollout.next_start, cfg.gamma, lam)
