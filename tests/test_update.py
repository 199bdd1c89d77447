"""The PPO update: schedules, optimizer, minibatches, the loss terms, gradient clipping, debug statistics."""

import inspect
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

import proximal.update as update_mod
from proximal.config import validate
from proximal.fast_paths import make_update
from proximal.numpy_update import NumpyMLPUpdate
from proximal.policy import make_policy
from proximal.update import (clip_gradients, clip_range, explained_variance, learning_rate, make_optimizer,
                             minibatch_indices, ppo_loss, ppo_update)

T = torch.tensor


class SpyPolicy(nn.Module):
    """log pi(a|obs) = w * obs[:, 1]; value = w. Records obs[:, 0] (the sample index) of every minibatch."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.seen: list[list[int]] = []

    def evaluate(self, batch):
        obs = batch["obs"]
        self.seen.append(obs[:, 0].long().tolist())
        logprob = self.w * obs[:, 1]
        return logprob, torch.zeros_like(logprob), self.w.expand(obs.shape[0])


def spy_batch(size, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(size, generator=g)
    return {
        "obs": torch.stack([torch.arange(size, dtype=torch.float32), x], 1),
        "actions": torch.zeros(size, dtype=torch.long),
        "logprobs": torch.zeros(size),
        "values": torch.zeros(size),
        "advantages": torch.randn(size, generator=g),
        "returns": torch.randn(size, generator=g),
    }


def spy_update(cfg, size) -> tuple[SpyPolicy, dict[str, float]]:
    """One torch update of a fresh SpyPolicy on ``spy_batch(size)``, clip 0.2, minibatches drawn from seed 0."""
    policy = SpyPolicy()
    return policy, ppo_update(policy, make_optimizer(policy, cfg), spy_batch(size), cfg, 0.2,
                              torch.Generator().manual_seed(0))


def record_losses(monkeypatch) -> list[tuple[dict, dict]]:
    """Make ``update.ppo_loss`` record every call: its arguments by name and its statistics as floats."""
    calls = []
    real_loss = update_mod.ppo_loss

    def recording_loss(*args, **kwargs):
        loss, stats = real_loss(*args, **kwargs)
        arguments = inspect.signature(real_loss).bind(*args, **kwargs).arguments
        calls.append((arguments, {k: v.item() for k, v in stats.items()}))
        return loss, stats

    monkeypatch.setattr(update_mod, "ppo_loss", recording_loss)
    return calls


def loss_inputs(ratio, advantages, new_value=None, old_value=None, returns=None, entropy=None):
    n = len(ratio)
    z = torch.zeros(n)
    return dict(new_logprob=torch.log(T(ratio)), old_logprob=z, entropy=z if entropy is None else T(entropy),
                new_value=z if new_value is None else T(new_value), old_value=z if old_value is None else T(old_value),
                advantages=T(advantages), returns=z if returns is None else T(returns))


BOTH_PATHS = pytest.mark.parametrize("fast", [False, True], ids=["torch", "numpy"])


def frozen_update(cfg, fast, logratio, advantages, seed=0, value_error=0.0):
    """One update of a classic MLP policy on CartPole-like spaces by the torch or the numpy path, with learning rate
    0 so that the policy never moves: every minibatch sees the log-ratios ``logratio`` (new minus stored log-prob,
    per sample), the given advantages, and returns ``value_error`` above the values. Minibatches are drawn from a
    generator seeded with ``seed``. Returns the update's statistics and the optimizer (Adam still updates its
    moments at learning rate 0)."""
    torch.manual_seed(0)
    policy = make_policy(gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(2), cfg)
    optimizer = make_optimizer(policy, cfg)
    optimizer.param_groups[0]["lr"] = 0.0
    update = make_update(policy, optimizer, torch.device("cpu"), fast)
    assert isinstance(update, NumpyMLPUpdate) if fast else update is ppo_update
    n = len(advantages)
    obs = torch.from_numpy(np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32))
    actions = torch.arange(n) % 2
    with torch.no_grad():
        logprob, _, value = policy.evaluate({"obs": obs, "actions": actions})
    batch = {"obs": obs, "actions": actions, "logprobs": logprob - torch.as_tensor(logratio, dtype=torch.float32),
             "values": value, "advantages": torch.as_tensor(advantages, dtype=torch.float32),
             "returns": value + value_error}
    return update(policy, optimizer, batch, cfg, 0.2, torch.Generator().manual_seed(seed)), optimizer


# --- schedules and optimizer ---------------------------------------------------------------------------------
def check_adam_eps(cfg):
    opt = make_optimizer(nn.Linear(2, 2), cfg)
    assert isinstance(opt, torch.optim.Adam)
    assert opt.param_groups[0]["eps"] == 1e-5


def test_core_adam_eps(cfg):
    check_adam_eps(cfg)


def check_lr_annealing(cfg):
    cfg.total_steps = 10 * cfg.batch_size  # U = 10
    lr0 = cfg.learning_rate
    assert learning_rate(cfg, 1) == lr0
    assert learning_rate(cfg, 2) == pytest.approx(lr0 * 0.9)
    assert learning_rate(cfg, 10) == pytest.approx(lr0 / 10)


def test_core_lr_annealing_schedule(cfg):
    check_lr_annealing(cfg)


def check_clip_annealing(cfg):
    cfg.total_steps = 4 * cfg.batch_size
    assert clip_range(cfg, 1) == cfg.clip_coef
    assert clip_range(cfg, 2) == pytest.approx(cfg.clip_coef * 0.75)
    assert clip_range(cfg, 4) == pytest.approx(cfg.clip_coef / 4)


def test_aux_clip_annealing_schedule(cfg):
    cfg.details["aux.clip_annealing"] = True
    check_clip_annealing(cfg)
    cfg.details["aux.clip_annealing"] = False  # the reference's default: constant
    assert clip_range(cfg, 4) == cfg.clip_coef


# --- minibatches -----------------------------------------------------------------------------------------------
def check_minibatches(cfg):
    cfg.num_envs, cfg.num_steps, cfg.num_minibatches, cfg.update_epochs = 2, 8, 4, 3
    validate(cfg)
    policy, _ = spy_update(cfg, 16)
    assert len(policy.seen) == 4 * 3, "num_minibatches per epoch, update_epochs epochs"
    epochs = [sum(policy.seen[e * 4:(e + 1) * 4], []) for e in range(3)]
    for mb in policy.seen:
        assert len(mb) == 4
    for order in epochs:
        assert sorted(order) == list(range(16)), "each epoch covers every sample exactly once"
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2], "a fresh permutation each epoch"
    assert epochs[0] != list(range(16)), "shuffled, not in storage order"


def test_core_minibatches_cover_batch_once_per_epoch(cfg):
    check_minibatches(cfg)


def test_core_minibatches_off_is_one_full_batch_step_per_epoch(cfg):
    cfg.details["core.minibatches"] = False
    cfg.num_envs, cfg.num_steps, cfg.update_epochs = 2, 8, 3
    policy, _ = spy_update(cfg, 16)
    assert [sorted(mb) for mb in policy.seen] == [list(range(16))] * 3


# --- the loss --------------------------------------------------------------------------------------------------
def check_adv_norm(cfg):
    advantages = [1.0, 2.0, 6.0]  # 3 samples: a ddof-1 std or a batch-wide normalization gives other numbers
    ratio = [1.0, 1.1, 0.95]
    _, stats = ppo_loss(**loss_inputs(ratio, advantages), clip=0.2, cfg=cfg)
    a = np.array(advantages)
    normalized = (a - a.mean()) / (a.std(ddof=0) + 1e-8)
    assert stats["policy_loss"].item() == pytest.approx(-(normalized * ratio).mean(), rel=1e-5)


def test_core_adv_norm_per_minibatch_population_std(cfg):
    check_adv_norm(cfg)


@BOTH_PATHS
def test_core_adv_norm_adds_the_epsilon_to_the_std_not_the_variance(cfg, fast):
    """Advantages 3e-4, 1e-4, 3e-4, 1e-4: mean 2e-4, population std 1e-4, so they normalize to +-a with
    a = 1e-4 / (1e-4 + 1e-8) = 0.9999 (1e-4 / sqrt(1e-8 + 1e-8) = 0.7071 with the epsilon under the root, and
    0.8660 with the sample std). Ratios 1.1, 1, 1.1, 1 (inside the clip range): policy loss -(1.1 a - a) / 2."""
    cfg.num_minibatches, cfg.update_epochs = 1, 1
    a = 1e-4 / (1e-4 + 1e-8)
    result, _ = frozen_update(cfg, fast, [math.log(1.1), 0.0, math.log(1.1), 0.0], [3e-4, 1e-4, 3e-4, 1e-4])
    assert result["policy_loss"] == pytest.approx(-0.05 * a, rel=2e-5)


def check_clipped_objective(cfg):
    cfg.details["core.adv_norm"] = False
    # A = 1, r = 1.5: max(-1.5, -1.2) = -1.2     A = -1, r = 1.5: max(1.5, 1.2) = 1.5
    # A = 1, r = 0.5: max(-0.5, -0.8) = -0.5     A = -1, r = 0.5: max(0.5, 0.8) = 0.8      mean = 0.15
    _, stats = ppo_loss(**loss_inputs([1.5, 1.5, 0.5, 0.5], [1.0, -1.0, 1.0, -1.0]), clip=0.2, cfg=cfg)
    assert stats["policy_loss"].item() == pytest.approx(0.15, rel=1e-6)


def test_core_clipped_objective_hand_numbers(cfg):
    check_clipped_objective(cfg)
    cfg.details["core.clipped_objective"] = False  # unclipped surrogate: mean(-A r) = 0 here
    _, stats = ppo_loss(**loss_inputs([1.5, 1.5, 0.5, 0.5], [1.0, -1.0, 1.0, -1.0]), clip=0.2, cfg=cfg)
    assert stats["policy_loss"].item() == pytest.approx(0.0, abs=1e-7)


def check_value_clipping(cfg):
    # the update's clip range (annealed by aux.clip_annealing), not the config's initial one: 0.1 here
    assert cfg.clip_coef != 0.1
    # V_old 0, eps 0.1: V 0.5 -> clipped 0.1: max(.25, .81) = .81;  V -0.05 (inside): 1.1025;  V 0.3 -> 0.1:
    # max(1.69, 1.21)
    inputs = loss_inputs([1.0] * 3, [0.0] * 3, new_value=[0.5, -0.05, 0.3], returns=[1.0, 1.0, -1.0])
    _, stats = ppo_loss(**inputs, clip=0.1, cfg=cfg)
    assert stats["value_loss"].item() == pytest.approx(0.5 * (0.81 + 1.1025 + 1.69) / 3, rel=1e-6)


def test_core_value_clipping_hand_numbers(cfg):
    check_value_clipping(cfg)
    cfg.details["core.value_clipping"] = False
    inputs = loss_inputs([1.0] * 3, [0.0] * 3, new_value=[0.5, -0.05, 0.3], returns=[1.0, 1.0, -1.0])
    _, stats = ppo_loss(**inputs, clip=0.1, cfg=cfg)
    assert stats["value_loss"].item() == pytest.approx(0.5 * (0.25 + 1.1025 + 1.69) / 3, rel=1e-6)


def check_entropy_bonus(cfg):
    cfg.details["core.adv_norm"] = False
    inputs = loss_inputs([1.2, 0.9], [1.0, -2.0], new_value=[0.3, 0.1], returns=[1.0, 0.0], entropy=[0.6, 0.4])
    loss, stats = ppo_loss(**inputs, clip=0.2, cfg=cfg)
    expected = stats["policy_loss"] - 0.01 * 0.5 + 0.5 * stats["value_loss"]
    assert stats["entropy"].item() == pytest.approx(0.5)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_core_entropy_bonus_loss_composition(cfg):
    check_entropy_bonus(cfg)


# --- gradient clipping -----------------------------------------------------------------------------------------
def check_grad_clip(cfg):
    a, b = torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)
    a.grad, b.grad = T([3.0, 0.0, 4.0]), T([0.0, 0.0])  # global norm 5 -> scaled by 0.5 / 5
    clip_gradients([a, b], cfg)
    np.testing.assert_allclose(a.grad.numpy(), [0.3, 0.0, 0.4], rtol=1e-5)
    assert b.grad.tolist() == [0.0, 0.0]
    a.grad, b.grad = T([0.1, 0.2, 0.0]), T([0.2, 0.0])  # norm 0.3: unchanged
    clip_gradients([a, b], cfg)
    assert a.grad.tolist() == pytest.approx([0.1, 0.2, 0.0]) and b.grad.tolist() == pytest.approx([0.2, 0.0])
    total = math.sqrt(sum(float((p.grad**2).sum()) for p in (a, b)))
    assert total <= 0.5
    # ... and both training loops apply it: one minibatch step from a fresh Adam, whose first moment is then
    # (1 - beta1) times the gradient it was given, on a value error whose gradient is far above the limit
    cfg.update_epochs, cfg.num_minibatches = 1, 1
    for fast in (False, True):
        stats, optimizer = frozen_update(cfg, fast, [0.0] * 8, [1.0, -1.0] * 4, value_error=100.0)
        assert stats["grad_norm"] > 10 * cfg.max_grad_norm  # the norm before clipping
        beta1 = optimizer.param_groups[0]["betas"][0]
        applied = math.sqrt(sum(float((s["exp_avg"] ** 2).sum()) for s in optimizer.state.values())) / (1 - beta1)
        assert applied == pytest.approx(cfg.max_grad_norm, rel=1e-4), "numpy" if fast else "torch"


def test_core_grad_clip_global_norm(cfg):
    check_grad_clip(cfg)


# --- debug statistics and early stopping -----------------------------------------------------------------------
def test_core_debug_stats_known_ratios(cfg):
    r = np.array([0.5, 1.0, 1.5, 1.25])
    _, stats = ppo_loss(**loss_inputs(r.tolist(), [1.0, 0.0, -1.0, 2.0]), clip=0.2, cfg=cfg)
    log_r = np.log(r)
    assert stats["clipfrac"].item() == pytest.approx(0.75)
    assert stats["approx_kl"].item() == pytest.approx(((r - 1) - log_r).mean(), rel=1e-5)
    assert stats["old_approx_kl"].item() == pytest.approx((-log_r).mean(), rel=1e-5)
    assert stats["approxkl_ppo2"].item() == pytest.approx(0.5 * (log_r**2).mean(), rel=1e-5)
    # clipped means strictly outside the range, as the reference's |r - 1| > clip: none at r = 1 with clip 0
    _, stats = ppo_loss(**loss_inputs([1.0, 1.0], [1.0, -1.0]), clip=0.0, cfg=cfg)
    assert stats["clipfrac"].item() == 0.0


def test_core_debug_stats_explained_variance_hand_numbers():
    # R = 1, 2, 3, 4 (population variance 1.25); V = 1, 2, 3, 5: R - V = 0, 0, 0, -1 (variance 0.1875)
    def A(x):
        return np.array(x, np.float32)
    assert explained_variance(A([1.0, 2.0, 3.0, 5.0]), A([1.0, 2.0, 3.0, 4.0])) == pytest.approx(1 - 0.1875 / 1.25)
    assert np.isnan(explained_variance(A([1.0, 2.0]), A([3.0, 3.0])))


def test_core_debug_stats_averaged_over_all_minibatches(cfg, monkeypatch):
    calls = record_losses(monkeypatch)
    cfg.num_envs, cfg.num_steps, cfg.learning_rate = 2, 8, 0.1
    _, result = spy_update(cfg, 16)
    seen = [stats for _, stats in calls]
    assert len(seen) == 16
    assert seen[0]["approx_kl"] == 0.0 and seen[-1]["approx_kl"] > 0.0
    for name in update_mod.STAT_NAMES:
        assert result[name] == pytest.approx(np.mean([s[name] for s in seen]), rel=1e-5, abs=1e-9), name


def check_target_kl(cfg):
    cfg.num_envs, cfg.num_steps, cfg.learning_rate, cfg.target_kl = 2, 32, 1.0, 0.015
    # lr 1 moves w by about 1 per step: the KL after the first minibatch is far above 0.015
    policy, result = spy_update(cfg, 64)
    assert result["epochs"] == 1
    assert len(policy.seen) == cfg.num_minibatches


def test_aux_target_kl_stops_after_epoch(cfg):
    cfg.details["aux.target_kl"] = True
    check_target_kl(cfg)
    cfg.details["aux.target_kl"] = False  # off by default: every epoch runs
    _, result = spy_update(cfg, 64)
    assert result["epochs"] == cfg.update_epochs


@BOTH_PATHS
def test_aux_target_kl_stops_on_the_epochs_mean_kl_not_the_last_minibatchs(cfg, fast):
    """The policy is frozen (frozen_update): a sample of log-ratio 0.3 has approx_kl e^0.3 - 1.3 = 0.0499, one of
    log-ratio 0 has 0, and every epoch's mean is the batch's mean. Raising the log-ratio of whole minibatches of
    the first epoch makes the epoch's mean and its last minibatch disagree about the target 0.015."""
    cfg.details["aux.target_kl"] = True
    cfg.num_envs, cfg.num_steps, cfg.target_kl = 2, 32, 0.015  # 4 minibatches of 16, 4 epochs
    first_epoch = minibatch_indices(64, 4, torch.Generator().manual_seed(0))
    kl = math.exp(0.3) - 1.3
    advantages = np.random.default_rng(1).normal(size=64)

    def moved(minibatches):
        logratio = torch.zeros(64)
        for k in minibatches:
            logratio[first_epoch[k]] = 0.3
        return frozen_update(cfg, fast, logratio, advantages)[0]

    # the last minibatch at 0.0499, above the target; the epoch's mean 0.0125, below: no stop, every epoch runs
    result = moved([3])
    assert result["approx_kl"] == pytest.approx(kl / 4, rel=1e-4) and result["epochs"] == 4
    # the first three above: the mean 0.0374 is above the target, the last minibatch's 0 below: one epoch
    result = moved([0, 1, 2])
    assert result["approx_kl"] == pytest.approx(3 * kl / 4, rel=1e-4) and result["epochs"] == 1


def test_rows_of_a_channels_last_batch_are_the_same_rows_in_the_same_layout():
    frames = torch.arange(10 * 4 * 6 * 6, dtype=torch.int32).reshape(10, 4, 6, 6).to(torch.uint8)
    laid_out = frames.contiguous(memory_format=torch.channels_last)
    mb = torch.tensor([7, 2, 2, 9])
    rows = update_mod.rows_of(laid_out, mb)
    assert torch.equal(rows, frames[mb]) and rows.shape == (4, 4, 6, 6)
    assert rows.is_contiguous(memory_format=torch.channels_last) and not rows.is_contiguous()
    plain = update_mod.rows_of(frames, mb)  # any other tensor: index_select's plain layout
    assert torch.equal(plain, frames[mb]) and plain.is_contiguous()


def test_atari_frames_are_laid_out_channels_last_once_per_update_with_the_same_numbers(monkeypatch):
    """The Nature CNN convolves channels-last; the update lays the batch's frames out so once, and every minibatch
    reaches the trunk in that layout (its own layout call then copies nothing). Parameters and statistics after
    the update are bitwise those of laying out each minibatch anew, in both precisions."""
    from proximal.config import preset
    cfg = preset("atari")
    cfg.num_envs, cfg.num_steps, cfg.num_minibatches, cfg.update_epochs = 2, 16, 2, 2
    space, actions_space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8), gym.spaces.Discrete(4)
    rng = np.random.default_rng(0)
    frames = torch.from_numpy(rng.integers(0, 256, (32, 4, 84, 84), dtype=np.uint8))
    actions = torch.from_numpy(rng.integers(0, 4, 32))
    layouts = []

    def updated(precision, once):
        torch.manual_seed(0)
        policy = make_policy(space, actions_space, cfg)
        forward = policy.trunk.forward
        policy.trunk.forward = lambda obs: layouts.append(obs.is_contiguous(memory_format=torch.channels_last)) \
            or forward(obs)
        with torch.no_grad():
            logprobs, _, values = policy.evaluate({"obs": frames, "actions": actions})
        batch = {"obs": frames, "actions": actions, "logprobs": logprobs, "values": values,
                 "advantages": torch.linspace(-1, 1, 32), "returns": torch.linspace(0, 1, 32)}
        policy.trunk.channels_last = once
        layouts.clear()
        stats = ppo_update(policy, make_optimizer(policy, cfg), batch, cfg, 0.1, torch.Generator().manual_seed(0),
                           precision)
        return stats, [p.detach().clone() for p in policy.parameters()], list(layouts)

    for precision in ("fp32", "bf16"):
        stats, params, seen = updated(precision, True)
        assert seen == [True] * 4  # 2 epochs of 2 minibatches, each already channels-last
        stats_each, params_each, seen_each = updated(precision, False)
        assert seen_each == [False] * 4
        assert stats == stats_each
        assert all(torch.equal(a, b) for a, b in zip(params, params_each))
