"""Policy structure (core.separate_networks) and the ratio-is-one check: the rollout's act path and the training
path agree on every stored action before the first gradient step."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import proximal.update as update_mod
from proximal.actors import make_actor
from proximal.envs import make_envs
from proximal.policy import make_policy
from proximal.rollout import collect_rollout
from proximal.trainer import new_state
from proximal.update import ppo_update

OBS = gym.spaces.Box(-1, 1, (4,), np.float32)
ACT = gym.spaces.Discrete(2)


def grads_of(policy, output):
    policy.zero_grad(set_to_none=True)
    output.sum().backward()
    return {name for name, p in policy.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def check_separate_networks(cfg):
    policy = make_policy(OBS, ACT, cfg)
    obs = torch.randn(8, 4)
    value_params = grads_of(policy, policy.value(obs))
    logprob, _, _ = policy.evaluate(obs, torch.zeros(8, dtype=torch.long))
    policy_params = grads_of(policy, logprob)
    assert value_params and policy_params
    assert not value_params & policy_params, "the critic shares no parameter with the actor"
    assert all(n.startswith(("critic_trunk", "value_head")) for n in value_params)


def test_core_separate_networks_parameter_sets(cfg):
    check_separate_networks(cfg)


def test_core_separate_networks_off_shares_the_trunk(cfg):
    cfg.details["core.separate_networks"] = False
    policy = make_policy(OBS, ACT, cfg)
    obs = torch.randn(8, 4)
    value_params = grads_of(policy, policy.value(obs))
    assert any(n.startswith("actor_trunk") for n in value_params), "the value loss trains the shared trunk"
    assert not any("critic" in n for n, _ in policy.named_parameters())
    # the training path and the value path give the same value
    _, _, value = policy.evaluate(obs, torch.zeros(8, dtype=torch.long))
    torch.testing.assert_close(value, policy.value(obs))


@pytest.mark.parametrize("separate", [True, False])
def test_ratio_is_one_over_the_whole_batch(cfg, separate, monkeypatch):
    cfg.details["core.separate_networks"] = separate
    envs = make_envs(cfg.env_id, cfg.num_envs)
    state = new_state(cfg, envs, torch.device("cpu"))
    buf = state.rollout
    # the rollout's act path as training uses it (the numpy fast path on the CPU)
    collect_rollout(envs, make_actor(state.policy, torch.device("cpu")), buf, state.rng, 0, cfg)
    envs.close()
    assert buf.starts.sum() > 0, "the batch holds episode ends"

    batch = buf.training_batch(buf.values, buf.values, torch.device("cpu"))
    obs, actions = batch["obs"], batch["actions"]
    with torch.no_grad():
        logprob, _, value = state.policy.evaluate(obs, actions)
    ratio = (logprob - batch["logprobs"]).exp()
    torch.testing.assert_close(ratio, torch.ones_like(ratio), rtol=0, atol=1e-6)
    torch.testing.assert_close(value, batch["values"], rtol=0, atol=1e-6)

    # and inside the update: the first minibatch of the first epoch sees ratio 1, approx_kl 0, clipfrac 0
    seen = []
    real_loss = update_mod.ppo_loss

    def recording_loss(*args, **kwargs):
        loss, stats = real_loss(*args, **kwargs)
        seen.append(stats)
        return loss, stats

    monkeypatch.setattr(update_mod, "ppo_loss", recording_loss)
    batch["advantages"], batch["returns"] = torch.randn(obs.shape[0]), torch.randn(obs.shape[0])
    ppo_update(state.policy, state.optimizer, batch, cfg, 0.2, state.generator)
    assert abs(seen[0]["approx_kl"].item()) < 1e-7 and abs(seen[0]["old_approx_kl"].item()) < 1e-6
    assert seen[0]["clipfrac"].item() == 0.0
