"""core.gae: GAE exactly as the reference, against hand numbers, a loop written here, and an analytic case."""

import numpy as np
import pytest

from proximal.advantages import compute_advantages, gae
from proximal.rollout import Rollout

T = np.array


def explicit_gae(rewards, values, dones, final_values, next_value, gamma, lam):
    """A_t = sum_k (gamma*lam)^k delta_{t+k}, summed explicitly until the episode ends.

    ``dones[t]`` is "step t ended its episode" (terminated or truncated); ``final_values[t]`` the value of the
    final observation where step t was truncated. Written per env with Python floats, independently of the
    backward recursion in proximal.
    """
    num_steps = len(rewards)

    def delta(t):
        following = 0.0 if dones[t] else (values[t + 1] if t + 1 < num_steps else next_value)
        return rewards[t] + gamma * final_values[t] + gamma * following - values[t]

    advantages = []
    for t in range(num_steps):
        total, k = 0.0, 0
        while t + k < num_steps:
            total += (gamma * lam) ** k * delta(t + k)
            if dones[t + k]:
                break
            k += 1
        advantages.append(total)
    return advantages


def random_rollout(rng, num_steps=16, num_envs=3):
    rewards = rng.normal(size=(num_steps, num_envs))
    values = rng.normal(size=(num_steps, num_envs))
    terminated = rng.random((num_steps, num_envs)) < 0.15
    truncated = rng.random((num_steps, num_envs)) < 0.15
    # a step both terminated and truncated is terminated: no bootstrap
    final_values = np.where(truncated & ~terminated, rng.normal(size=(num_steps, num_envs)), 0.0)
    dones = terminated | truncated
    next_value = rng.normal(size=num_envs)
    return rewards, values, dones, final_values, next_value


def as_gae_inputs(rewards, values, dones, final_values, next_value):
    """proximal's storage convention: starts[t] = d_t = dones[t-1]; the first step of the rollout is not a start
    here; next_start = the last step's done."""
    starts = np.zeros_like(dones)
    starts[1:] = dones[:-1]
    f = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    return f(rewards), f(values), f(starts), f(final_values), f(next_value), f(dones[-1])


@pytest.mark.parametrize("lam", [0.95, 0.5, 1.0])
def test_core_gae_matches_loop(lam):
    rng = np.random.default_rng(0)
    rewards, values, dones, final_values, next_value = random_rollout(rng)
    assert dones.any() and (final_values != 0).any()
    advantages, returns = gae(*as_gae_inputs(rewards, values, dones, final_values, next_value), 0.99, lam)
    for env in range(rewards.shape[1]):
        expected = explicit_gae(rewards[:, env], values[:, env], dones[:, env], final_values[:, env],
                                next_value[env], 0.99, lam)
        np.testing.assert_allclose(advantages[:, env], expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(returns, advantages + values)


@pytest.mark.parametrize("bootstrap", [True, False])
def test_core_gae_hand_numbers_termination_and_truncation(bootstrap):
    # step 1 terminates, step 2 is truncated with V(final obs) = 2; gamma 0.9, lambda 0.5
    #   A3 = 1 + .9*.9 - .8                    = 1.01
    #   A2 = 1 + .9*2 - .7 (bootstrap) = 2.1,  or 1 - .7 = 0.3   (cut: obs_3 starts an episode)
    #   A1 = 1 - .6                            = 0.4              (cut: terminated)
    #   A0 = 1 + .9*.6 - .5 + .45*A1           = 1.22
    rewards = T([[1.0], [1.0], [1.0], [1.0]])
    values = T([[0.5], [0.6], [0.7], [0.8]])
    starts = T([[0.0], [0.0], [1.0], [1.0]])
    final_values = T([[0.0], [0.0], [2.0 if bootstrap else 0.0], [0.0]])
    advantages, returns = gae(rewards, values, starts, final_values, T([0.9]), T([0.0]), 0.9, 0.5)
    expected = [1.22, 0.4, 2.1 if bootstrap else 0.3, 1.01]
    np.testing.assert_allclose(advantages[:, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(returns[:, 0], np.array(expected) + [0.5, 0.6, 0.7, 0.8], rtol=1e-6)


def test_core_gae_constant_value_analytic():
    # no episode end, reward r, V = c everywhere: delta = r + (gamma - 1) c, A_t = delta * sum_{k < T-t} (gamma lam)^k
    num_steps, r, c, gamma, lam = 10, 1.0, 3.0, 0.99, 0.95
    ones = np.ones((num_steps, 2))
    advantages, _ = gae(r * ones, c * ones, 0 * ones, 0 * ones, c * np.ones(2), np.zeros(2), gamma, lam)
    delta = r + (gamma - 1) * c
    expected = [delta * (1 - (gamma * lam) ** (num_steps - t)) / (1 - gamma * lam) for t in range(num_steps)]
    np.testing.assert_allclose(advantages[:, 0], expected, rtol=1e-12)
    np.testing.assert_allclose(advantages[:, 1], expected, rtol=1e-12)


def advantages_against_the_loop(cfg, lam: float) -> None:
    """compute_advantages on a random 8-step rollout of 2 envs equals the loop's with ``lam``."""
    rng = np.random.default_rng(1)
    rewards, values, dones, final_values, next_value = random_rollout(rng, num_steps=8, num_envs=2)
    r, v, s, fv, nv, ns = as_gae_inputs(rewards, values, dones, final_values, next_value)
    buf = Rollout(obs=None, actions=None, logprobs=None, values=v, rewards=r, starts=s, final_values=fv,
                  next_value=nv, next_start=ns)
    advantages, _ = compute_advantages(buf, cfg)
    expected = [explicit_gae(rewards[:, e], values[:, e], dones[:, e], final_values[:, e], next_value[e],
                             cfg.gamma, lam) for e in range(2)]
    np.testing.assert_allclose(advantages.T, expected, rtol=1e-10)


def check_gae_uses_lambda(cfg):
    """compute_advantages uses the config's lambda (core.gae)."""
    advantages_against_the_loop(cfg, 0.95)


def test_core_gae_lambda_from_config(cfg):
    check_gae_uses_lambda(cfg)


def test_core_gae_off_is_lambda_one(cfg):
    """Off, the advantages are the discounted returns minus the values (lambda 1), not some other lambda."""
    cfg.details["core.gae"] = False
    advantages_against_the_loop(cfg, 1.0)
