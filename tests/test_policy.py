"""Policy structure (core.separate_networks) and the ratio-is-one check: the rollout's act path and the training
path agree on every stored action before the first gradient step."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from proximal.fast_paths import make_actor
from proximal.envs import make_envs
from proximal.policy import make_policy
from proximal.rollout import collect_rollout
from proximal.trainer import new_state
from ratio_check import assert_ratio_is_one

OBS = gym.spaces.Box(-1, 1, (4,), np.float32)
ACT = gym.spaces.Discrete(2)


def grads_of(policy, output):
    policy.zero_grad(set_to_none=True)
    output.sum().backward()
    return {name for name, p in policy.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def assert_separate_parameter_sets(policy, obs, actions):
    """The value and the log-prob are trained through disjoint parameter sets, the critic's own."""
    value_params = grads_of(policy, policy.value(obs))
    logprob, _, _ = policy.evaluate({"obs": obs, "actions": actions})
    policy_params = grads_of(policy, logprob)
    assert value_params and policy_params
    assert not value_params & policy_params, "the critic shares no parameter with the actor"
    assert all(n.startswith(("trunk.critic", "value_head")) for n in value_params)


def assert_shared_trunk(policy, obs, actions):
    """The value loss trains the actor's trunk, there is no critic trunk, and both paths give the same value."""
    value_params = grads_of(policy, policy.value(obs))
    assert any(n.startswith("trunk.actor") for n in value_params), "the value loss trains the shared trunk"
    assert not any("critic" in n for n, _ in policy.named_parameters())
    _, _, value = policy.evaluate({"obs": obs, "actions": actions})
    torch.testing.assert_close(value, policy.value(obs))


def check_separate_networks(cfg):
    assert_separate_parameter_sets(make_policy(OBS, ACT, cfg), torch.randn(8, 4), torch.zeros(8, dtype=torch.long))


def test_core_separate_networks_parameter_sets(cfg):
    check_separate_networks(cfg)


def test_core_separate_networks_off_shares_the_trunk(cfg):
    cfg.details["core.separate_networks"] = False
    assert_shared_trunk(make_policy(OBS, ACT, cfg), torch.randn(8, 4), torch.zeros(8, dtype=torch.long))


@pytest.mark.parametrize("separate", [True, False])
def test_ratio_is_one_over_the_whole_batch(cfg, separate, monkeypatch):
    cfg.details["core.separate_networks"] = separate
    envs = make_envs(cfg.env_id, cfg.num_envs)
    state = new_state(cfg, envs, torch.device("cpu"))
    buf = state.rollout
    # the rollout's act path as training uses it (the numpy fast path on the CPU)
    state.obs, state.carry, _, _ = collect_rollout(envs, make_actor(state.policy, torch.device("cpu")), buf, state.obs, state.carry, state.rng, 0, cfg)
    envs.close()
    assert_ratio_is_one(state, cfg, monkeypatch)
