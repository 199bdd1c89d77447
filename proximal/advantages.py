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
    # Everything but the recursion at once, in the loop's order of operations (the same float32 roundings); the
    # loop is then two operations a step.
    nonterminal = 1.0 - np.concatenate([starts[1:], next_start[None]])
    following_value = np.concatenate([values[1:], next_value[None]])
    reward = rewards + gamma * final_values
    delta = reward + gamma * nonterminal * following_value - values
    decay = gamma * lam * nonterminal
    advantages = np.empty_like(rewards)  # every step is written below
    last = np.zeros_like(next_value)
    for t in reversed(range(rewards.shape[0])):
        last = delta[t] + decay[t] * last
        advantages[t] = last
    return advantages, advantages + values


def compute_advantages(rollout, cfg) -> tuple[np.ndarray, np.ndarray]:
    """GAE of a filled rollout with the config's gamma and lambda; core.gae off gives lambda 1 (bootstrapped
    Monte-Carlo returns)."""
    lam = cfg.gae_lambda if cfg.on("core.gae") else 1.0
    return gae(rollout.rewards, rollout.values, rollout.starts, rollout.final_values, rollout.next_value,
               rollout.next_start, cfg.gamma, lam)
