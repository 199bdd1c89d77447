"""The numpy update (the CPU fast path) against the torch update it stands in for: same parameters, Adam state,
statistics and epochs, for every switch of the details the update implements; the ratio-is-one check on it."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from proximal.cli import build_parser, config_from_args
from proximal.config import preset
from proximal.numpy_update import NumpyMLPUpdate, make_update
from proximal.policy import ActorCritic
from proximal.update import make_optimizer, ppo_update

OBS, ACTIONS, BATCH = 5, 3, 256
DISCRETE = gym.spaces.Discrete(ACTIONS)
BOX = gym.spaces.Box(-1.0, 1.0, (ACTIONS,), np.float32)


def batches(policy, seed, count):
    """Rollout-like batches: stored log-probs and values are the policy's own at the time of the batch."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        obs = torch.from_numpy(rng.normal(size=(BATCH, OBS)).astype(np.float32))
        if policy.continuous:  # samples of the policy's own Gaussian, so that ratios start at 1 and move
            with torch.no_grad():
                mean = policy.actor_trunk(obs) @ policy.policy_head.weight.T + policy.policy_head.bias
            noise = rng.normal(size=mean.shape).astype(np.float32)
            actions = mean + policy.log_std.detach().exp() * torch.from_numpy(noise)
        else:
            actions = torch.from_numpy(rng.integers(0, ACTIONS, BATCH))
        with torch.no_grad():
            logprobs, _, values = policy.evaluate(obs, actions)
        yield {"obs": obs, "actions": actions, "logprobs": logprobs, "values": values,
               "advantages": torch.from_numpy(rng.normal(1.0, 2.0, BATCH).astype(np.float32)),
               "returns": torch.from_numpy(rng.normal(0.0, 3.0, BATCH).astype(np.float32))}


def train(cfg, updates: list, lr: float = 3e-3, space=DISCRETE):
    """Run the given update functions in turn (a factory per update) on fresh batches; the same seeds for all."""
    torch.manual_seed(0)
    policy = ActorCritic(OBS, space, cfg)
    optimizer = make_optimizer(policy, cfg)
    generator = torch.Generator().manual_seed(1)
    stats = []
    for make, batch in zip(updates, batches(policy, 2, len(updates))):
        for group in optimizer.param_groups:
            group["lr"] = lr  # large enough that ratios leave the clip range within an update
        # each batch is drawn after the previous update, from the policy as it is then
        stats.append(make(policy, optimizer)(policy, optimizer, batch, cfg, 0.2, generator))
    return policy, optimizer, stats


def torch_path(policy, optimizer):
    return ppo_update


def numpy_path(policy, optimizer):
    return NumpyMLPUpdate(policy, optimizer)


def assert_same_training(a, b):
    (policy_a, opt_a, stats_a), (policy_b, opt_b, stats_b) = a, b
    for (name, pa), pb in zip(policy_a.named_parameters(), policy_b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=2e-5, msg=name)
    state_a, state_b = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
    assert state_a.keys() == state_b.keys()
    for i in state_a:
        assert {k: (v.dtype, v.shape) for k, v in state_a[i].items()} == \
               {k: (v.dtype, v.shape) for k, v in state_b[i].items()}
        assert state_a[i]["step"].item() == state_b[i]["step"].item()
        torch.testing.assert_close(state_a[i]["exp_avg"], state_b[i]["exp_avg"], rtol=1e-3, atol=1e-6)
        torch.testing.assert_close(state_a[i]["exp_avg_sq"], state_b[i]["exp_avg_sq"], rtol=1e-3, atol=1e-9)
    for sa, sb in zip(stats_a, stats_b):
        assert sa["epochs"] == sb["epochs"]
        for k in sa:
            assert sa[k] == pytest.approx(sb[k], rel=1e-3, abs=1e-6), k


SWITCHES = [None, "core.adv_norm", "core.clipped_objective", "core.value_clipping", "core.entropy_bonus",
            "core.grad_clip", "core.separate_networks", "core.minibatches", "core.adam_eps"]


@pytest.mark.parametrize("off", SWITCHES)
def test_numpy_update_equals_torch_update(off):
    cfg = preset("classic")
    if off:
        cfg.details[off] = False
    reference = train(cfg, [torch_path] * 3)
    assert_same_training(reference, train(cfg, [numpy_path] * 3))
    if off is None:
        # the comparison means something only if clipping and the gradient bound were active
        assert max(s["clipfrac"] for s in reference[2]) > 0.05
        assert reference[2][0]["approx_kl"] > 1e-4


GAUSSIAN_SWITCHES = [None, "core.entropy_bonus", "cont.separate_networks", "core.clipped_objective"]


@pytest.mark.parametrize("off", GAUSSIAN_SWITCHES)
def test_numpy_update_equals_torch_update_for_gaussian_actions(off):
    cfg = preset("mujoco")
    cfg.ent_coef = 0.01  # the mujoco preset has none; the entropy gradient must be checked too
    cfg.num_minibatches = 4
    if off:
        cfg.details[off] = False
    reference = train(cfg, [torch_path] * 3, space=BOX)
    assert reference[0].log_std.detach().abs().max() > 1e-3, "the log std must have moved"
    assert_same_training(reference, train(cfg, [numpy_path] * 3, space=BOX))
    if off is None:
        assert max(s["clipfrac"] for s in reference[2]) > 0.05


def test_numpy_update_equals_torch_update_with_early_stop():
    cfg = preset("classic")
    cfg.details["aux.target_kl"] = True
    cfg.target_kl = 0.002
    reference = train(cfg, [torch_path] * 3)
    assert min(s["epochs"] for s in reference[2]) < cfg.update_epochs, "the target must stop some update early"
    assert_same_training(reference, train(cfg, [numpy_path] * 3))


def test_numpy_update_equals_torch_update_with_deeper_trunks():
    cfg = preset("classic")
    cfg.hidden_sizes = (16, 8, 12)
    assert_same_training(train(cfg, [torch_path] * 2), train(cfg, [numpy_path] * 2))


def test_paths_can_take_turns():
    """The numpy update leaves torch's Adam state in torch's layout: the torch update continues from it."""
    cfg = preset("classic")
    assert_same_training(train(cfg, [torch_path] * 3), train(cfg, [numpy_path, torch_path, numpy_path]))


@pytest.mark.parametrize("separate", [True, False])
@pytest.mark.parametrize("space", [DISCRETE, BOX], ids=["discrete", "box"])
def test_ratio_is_one_on_the_first_minibatch(separate, space, monkeypatch):
    cfg = preset("classic")
    cfg.details["core.separate_networks"] = cfg.details["cont.separate_networks"] = separate
    torch.manual_seed(0)
    policy = ActorCritic(OBS, space, cfg)
    optimizer = make_optimizer(policy, cfg)
    update = NumpyMLPUpdate(policy, optimizer)
    seen = []
    real = update._loss_and_grad
    monkeypatch.setattr(update, "_loss_and_grad", lambda *a: seen.append(real(*a)) or seen[-1])
    update(policy, optimizer, next(batches(policy, 3, 1)), cfg, 0.2, torch.Generator().manual_seed(0))
    first = dict(zip(("policy_loss", "value_loss", "entropy", "approx_kl", "old_approx_kl", "approxkl_ppo2",
                      "clipfrac"), seen[0]))
    assert abs(first["approx_kl"]) < 1e-7 and abs(first["old_approx_kl"]) < 1e-6
    assert first["clipfrac"] == 0.0
    # and the policy moved afterwards, so later minibatches are not trivially 1
    assert max(abs(s[4]) for s in seen[1:]) > 1e-5


def test_make_update_picks_the_path():
    cfg = preset("classic")
    for space in (DISCRETE, BOX):
        policy = ActorCritic(OBS, space, cfg)
        optimizer = make_optimizer(policy, cfg)
        assert isinstance(make_update(policy, optimizer, torch.device("cpu")), NumpyMLPUpdate)
        assert make_update(policy, optimizer, torch.device("cpu"), fast=False) is ppo_update
        assert make_update(policy, optimizer, torch.device("cuda")) is ppo_update
    # the torch update where the numpy one has no gradient written out
    for change in ("squash", "state_dependent_logstd"):
        cfg = preset("mujoco")
        if change == "squash":
            cfg.squash_actions = True
        else:
            cfg.details["cont.state_independent_logstd"] = False
        policy = ActorCritic(OBS, BOX, cfg)
        assert make_update(policy, make_optimizer(policy, cfg), torch.device("cpu")) is ppo_update


def test_fast_paths_switch_on_the_command_line():
    parse = build_parser().parse_args
    assert config_from_args(parse(["train"])).fast_paths is True
    assert config_from_args(parse(["train", "--fast-paths", "false"])).fast_paths is False
    with pytest.raises(SystemExit):
        parse(["train", "--fast-paths", "maybe"])
