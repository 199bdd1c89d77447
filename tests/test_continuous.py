"""Continuous (Box) actions: the Gaussian policy (cont.gaussian, cont.state_independent_logstd,
cont.independent_dims, cont.separate_networks), what the env receives and what the rollout stores
(cont.action_clip), the tanh-squashing option, the numpy fast path, the ratio-is-one check, and a short learning
run."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import proximal.evaluate as evaluate_mod
from proximal.actors import TorchActor
from proximal.fast_paths import make_actor
from proximal.numpy_actor import NumpyMLPActor
from proximal.distributions import DiagGaussian, TanhDiagGaussian
from proximal.envs import make_envs
from proximal.errors import UserError
from proximal.carry import Carry
from proximal.distributions import make_distribution
from proximal.policy import make_policy
from proximal.rollout import collect_rollout
from proximal.trainer import new_state, train
from ratio_check import assert_ratio_is_one
from resume_check import assert_resume_is_exact
from test_distributions import normal, random_params
from test_policy import assert_separate_parameter_sets, assert_shared_trunk

from envs import BoxRecorderEnv

OBS = gym.spaces.Box(-np.inf, np.inf, (3, 2), np.float32)
ACT = gym.spaces.Box(np.array([-1.0, -2.0, 0.0, -0.5], np.float32), np.array([1.0, 3.0, 0.5, 2.5], np.float32))
RECORDER = "proximal-test/BoxRecorder-v0"  # bounds [-0.1, 0.3], [-0.2, 0.1], [0, 0.5]
RECORDER_BOUNDS = (BoxRecorderEnv.action_space.low, BoxRecorderEnv.action_space.high)
UNBOUNDED = "proximal-test/BoxUnbounded-v0"


def received(envs) -> np.ndarray:
    """(T, N, *action shape): the actions each recording env received, in order."""
    return np.stack([np.stack(env.unwrapped.received) for env in envs.groups.call(list)], axis=1)


def rollout_on(cfg, env_id, num_steps=16, num_envs=3, fast=True):
    """A fresh state's first rollout on ``env_id``: (state, what the envs received)."""
    cfg.env_id, cfg.num_envs, cfg.num_steps = env_id, num_envs, num_steps
    envs = make_envs(env_id, num_envs)
    state = new_state(cfg, envs, torch.device("cpu"))
    state.obs, state.carry, _, _ = collect_rollout(envs, make_actor(state.policy, torch.device("cpu"), fast=fast), state.rollout, state.obs, state.carry, state.rng, 0, cfg)
    got = received(envs)
    envs.close()
    return state, got


# --- the tanh-squashing option ---------------------------------------------------------------------------------

LOW, HIGH = np.array([-1.0, 0.0, -3.0]), np.array([2.0, 0.5, -1.0])


def squash_cfg(cfg, clip=False):
    cfg.squash_actions = True
    cfg.details["cont.action_clip"] = clip
    return cfg


def test_tanh_squash_log_prob_is_the_density_of_the_env_action(cfg):
    """Change of variables checked numerically: log p(a) = log N(u) - log |da/du| with da/du by central finite
    differences of the transform the env's action goes through (the distribution's ``to_env``)."""
    space = gym.spaces.Box(LOW, HIGH, dtype=np.float64)
    dist = TanhDiagGaussian(space, squash_cfg(cfg))
    to_env = dist.to_env
    mean, log_std = (t.double() for t in random_params(batch=200, dims=3, seed=1))
    # tanh(6) = 1 - 1.2e-5: the finite differences still resolve the slope
    u = torch.rand(200, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 12.0 - 6.0
    h = 1e-6
    u_np = u.numpy()
    slope = np.stack([(to_env(np.where(np.arange(3) == d, u_np + h, u_np))[:, d]
                       - to_env(np.where(np.arange(3) == d, u_np - h, u_np))[:, d]) / (2 * h) for d in range(3)], -1)
    expected = normal((mean, log_std)).log_prob(u).sum(-1) - torch.from_numpy(np.log(slope)).sum(-1)
    torch.testing.assert_close(dist.log_prob((mean, log_std), u), expected, rtol=0, atol=1e-5)
    # the correction stays finite where tanh saturates in float32 (the direct log(1 - tanh^2) gives -inf)
    far = torch.tensor([[12.0, -15.0, 30.0]])
    logp = dist.log_prob((torch.zeros(1, 3), torch.zeros(1, 3)), far)
    assert torch.isfinite(logp).all()


def test_tanh_squash_env_receives_the_squashed_stored_sample(cfg):
    state, got = rollout_on(squash_cfg(cfg), RECORDER)
    stored = state.rollout.actions
    low, high = RECORDER_BOUNDS
    np.testing.assert_allclose(got, low + (np.tanh(stored) + 1) / 2 * (high - low), rtol=0, atol=1e-6)
    assert (got >= low).all() and (got <= high).all()
    # the stored log-prob is the squashed density of the stored u
    with torch.no_grad():
        logprob, _, _ = state.policy.evaluate({"obs": torch.from_numpy(state.rollout.obs.reshape(-1, 2, 2)),
                                               "actions": torch.from_numpy(stored.reshape(-1, 3))})
    gaussian = DiagGaussian.log_prob(state.policy.dist, (torch.zeros(1, 3), torch.zeros(1, 3)),
                                     torch.from_numpy(stored.reshape(-1, 3)))
    torch.testing.assert_close(torch.from_numpy(state.rollout.logprobs.reshape(-1)), logprob, rtol=0, atol=1e-5)
    assert (logprob - gaussian).abs().min() > 0.5, "the log-det correction is in the stored log-prob"


def test_tanh_squash_needs_finite_bounds(cfg):
    cfg.squash_actions = True
    with pytest.raises(UserError, match="finite"):
        make_policy(OBS, gym.spaces.Box(-np.inf, 1.0, (2,), np.float32), cfg)
    with pytest.raises(UserError, match=r"this env's actions are Discrete\(2\): train without --squash-actions"):
        make_policy(OBS, gym.spaces.Discrete(2), cfg)
    # a dimension without a range: its density is infinite, every log-prob inf and the ratio NaN
    with pytest.raises(UserError, match=r"low < high in every action dimension.*dimension\(s\) \[1\]"):
        make_policy(OBS, gym.spaces.Box(np.array([-1.0, 0.5]), np.array([1.0, 0.5]), dtype=np.float32), cfg)


# --- policy structure ------------------------------------------------------------------------------------------


def test_cont_gaussian_head_outputs_the_mean_with_gain_001(cfg):
    torch.manual_seed(0)
    policy = make_policy(OBS, ACT, cfg)
    weight = policy.policy_head.mean.weight.detach()
    assert weight.shape == (4, 64)
    np.testing.assert_allclose(torch.linalg.svdvals(weight).numpy(), 0.01, rtol=1e-4)
    assert torch.count_nonzero(policy.policy_head.mean.bias) == 0
    obs = torch.randn(5, 3, 2)
    with torch.no_grad():
        mean = policy.policy_head.mean(policy.trunk.actor(obs.flatten(1)))
        action, logprob, _, _ = policy.act(obs, Carry(None), None)  # deterministic: the mean
        torch.testing.assert_close(action, mean)
        torch.testing.assert_close(logprob, normal((mean, torch.zeros_like(mean))).log_prob(mean).sum(-1))
        sample, _, _, _ = policy.act(obs, Carry(None), np.random.default_rng(0))
    noise = torch.from_numpy(np.random.default_rng(0).standard_normal((5, 4), dtype=np.float32))
    torch.testing.assert_close(sample, mean + noise)  # std exp(0) = 1 at init


def check_state_independent_logstd(cfg):
    torch.manual_seed(0)
    policy = make_policy(OBS, ACT, cfg)
    params = dict(policy.named_parameters())
    assert "policy_head.log_std" in params and params["policy_head.log_std"].shape == (4,)
    assert torch.equal(params["policy_head.log_std"].detach(), torch.zeros(4))
    # the log std the training path uses does not depend on the observation, and it is that parameter
    obs = torch.randn(16, 3, 2) * 3
    with torch.no_grad():
        params["policy_head.log_std"].copy_(torch.tensor([0.1, -0.2, 0.3, -0.4]))
    _, entropy, _ = policy.evaluate({"obs": obs, "actions": torch.zeros(16, 4)})
    torch.testing.assert_close(entropy, torch.full((16,), 4 * (0.5 + 0.5 * math.log(2 * math.pi)) - 0.2))
    policy.zero_grad()
    entropy.sum().backward()
    assert torch.equal(params["policy_head.log_std"].grad, torch.full((4,), 16.0))


def test_cont_state_independent_logstd_parameter(cfg):
    check_state_independent_logstd(cfg)


def test_cont_state_independent_logstd_off_gives_a_state_dependent_head(cfg):
    cfg.details["cont.state_independent_logstd"] = False
    torch.manual_seed(0)
    policy = make_policy(OBS, ACT, cfg)
    assert policy.policy_head.log_std is None and "policy_head.log_std" not in dict(policy.named_parameters())
    head = policy.policy_head.log_std_head.weight.detach()
    np.testing.assert_allclose(torch.linalg.svdvals(head).numpy(), 0.01, rtol=1e-4)  # documented init: gain 0.01
    assert torch.count_nonzero(policy.policy_head.log_std_head.bias) == 0
    obs = torch.randn(16, 3, 2) * 3
    with torch.no_grad():
        _, entropy, _ = policy.evaluate({"obs": obs, "actions": torch.zeros(16, 4)})
        log_std = policy.policy_head.log_std_head(policy.trunk.actor(obs.flatten(1)))
    assert entropy.std() > 1e-4, "the log std depends on the observation"
    assert log_std.abs().max() < 0.1, "and starts near 0, as the reference's"
    torch.testing.assert_close(entropy, policy.dist.entropy((log_std, log_std)))


def test_cont_independent_dims_log_prob_and_entropy_are_sums(cfg):
    cfg.details["cont.state_independent_logstd"] = False  # a different std per row and dimension
    torch.manual_seed(0)
    policy = make_policy(OBS, ACT, cfg)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    obs, actions = torch.randn(32, 3, 2), torch.randn(32, 4) * 2
    logprob, entropy, _ = policy.evaluate({"obs": obs, "actions": actions})
    with torch.no_grad():
        reference = normal(policy.policy_head(policy.trunk.actor(obs.flatten(1))))
    per_dim = reference.log_prob(actions)
    assert per_dim.shape == (32, 4)
    torch.testing.assert_close(logprob, per_dim.sum(-1))
    torch.testing.assert_close(entropy, reference.entropy().sum(-1))


def check_cont_separate_networks(cfg):
    assert_separate_parameter_sets(make_policy(OBS, ACT, cfg), torch.randn(8, 3, 2), torch.randn(8, 4))


def test_cont_separate_networks_parameter_sets(cfg):
    check_cont_separate_networks(cfg)


def test_cont_separate_networks_off_shares_the_trunk(cfg):
    cfg.details["cont.separate_networks"] = False
    assert_shared_trunk(make_policy(OBS, ACT, cfg), torch.randn(8, 3, 2), torch.randn(8, 4))


def test_each_action_kind_reads_its_own_separate_networks_detail(cfg):
    discrete = gym.spaces.Discrete(3)
    cfg.details["cont.separate_networks"] = False
    assert make_policy(OBS, discrete, cfg).trunk.critic is not None
    assert make_policy(OBS, ACT, cfg).trunk.critic is None
    cfg.details["cont.separate_networks"], cfg.details["core.separate_networks"] = True, False
    assert make_policy(OBS, discrete, cfg).trunk.critic is None
    assert make_policy(OBS, ACT, cfg).trunk.critic is not None


# --- spaces ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("space", [
    gym.spaces.Box(-np.inf, np.inf, (2,), np.float32),
    gym.spaces.Box(np.array([-3.0, 0.0]), np.array([-1.0, np.inf]), dtype=np.float64),  # mixed bounds
    gym.spaces.Box(-1.0, 1.0, (2, 3), np.float32),
])
def test_make_policy_accepts_box_actions_with_any_bounds_and_observations_of_any_shape(cfg, space):
    obs_space = gym.spaces.Box(0, 255, (4, 3, 2), np.uint8)
    policy = make_policy(obs_space, space, cfg)
    obs = torch.randint(0, 255, (5, 4, 3, 2)).float()
    action, logprob, value, _ = policy.act(obs, Carry(None), np.random.default_rng(0))
    act_dim = math.prod(space.shape)
    assert action.shape == (5, act_dim) and logprob.shape == (5,) and value.shape == (5,)
    to_env = policy.dist.to_env(action.numpy())
    assert to_env.shape == (5, *space.shape) and to_env.dtype == space.dtype
    assert space.contains(to_env[0])


@pytest.mark.parametrize("obs_space, act_space, words", [
    (OBS, gym.spaces.MultiBinary(3), "MultiBinary.*supported: Discrete, MultiDiscrete, Box"),
    (OBS, gym.spaces.Dict({"a": gym.spaces.Discrete(2)}), "Dict.*supported"),
    (OBS, gym.spaces.Box(0, 3, (2,), np.int64), "int64.*supported.*float dtype"),
    (gym.spaces.Discrete(4), ACT, "observation space .*supported: observations: Box"),
])
def test_make_policy_refuses_unsupported_spaces_naming_the_supported_ones(cfg, obs_space, act_space, words):
    with pytest.raises(UserError, match=words):
        make_policy(obs_space, act_space, cfg)


# --- what the env receives, what the rollout stores (cont.action_clip) ------------------------------------------


def check_action_clip(cfg):
    state, got = rollout_on(cfg, RECORDER)
    buf, (low, high) = state.rollout, RECORDER_BOUNDS
    assert buf.actions.dtype == np.float32 and buf.actions.shape == (16, 3, 3)
    outside = (buf.actions < low) | (buf.actions > high)
    assert outside.mean() > 0.5, "the samples (std 1) mostly fall outside the narrow bounds"
    # the env received the stored sample clipped to the bounds; the stored reward is the one it produced
    assert got.dtype == np.float32
    assert (got >= low).all() and (got <= high).all()
    np.testing.assert_array_equal(got, np.clip(buf.actions, low, high))
    np.testing.assert_allclose(buf.rewards, got @ np.array([1.0, 10.0, 100.0]), rtol=1e-5, atol=1e-5)
    # the rollout stores the UNCLIPPED sample and ITS log-prob: the training path reproduces it exactly
    obs, stored = torch.from_numpy(buf.obs.reshape(-1, 2, 2)), torch.from_numpy(buf.actions.reshape(-1, 3))
    with torch.no_grad():
        logprob, _, _ = state.policy.evaluate({"obs": obs, "actions": stored})
        clipped_logprob, _, _ = state.policy.evaluate({"obs": obs, "actions": torch.from_numpy(got.reshape(-1, 3))})
    torch.testing.assert_close(torch.from_numpy(buf.logprobs.reshape(-1)), logprob, rtol=0, atol=1e-5)
    assert (logprob - clipped_logprob).abs().max() > 0.1


def test_cont_action_clip_env_gets_clipped_rollout_stores_unclipped(cfg):
    check_action_clip(cfg)


def test_cont_action_clip_off_the_env_receives_the_raw_sample(cfg):
    cfg.details["cont.action_clip"] = False
    state, got = rollout_on(cfg, RECORDER)
    np.testing.assert_array_equal(got, state.rollout.actions)
    assert ((got < RECORDER_BOUNDS[0]) | (got > RECORDER_BOUNDS[1])).any()


@pytest.mark.parametrize("fast", [True, False])
def test_cont_action_clip_infinite_bounds_clip_nothing(cfg, fast):
    state, got = rollout_on(cfg, UNBOUNDED, fast=fast)
    assert np.abs(got).max() > 1.5
    np.testing.assert_array_equal(got, state.rollout.actions)


def test_cont_action_clip_zeroes_nans_on_the_way_to_the_env(cfg):
    space = gym.spaces.Box(np.array([-1.0, 0.5, -np.inf], np.float32), np.array([1.0, 2.0, np.inf], np.float32))
    actions = np.array([[np.nan, 5.0, np.nan], [-7.0, np.nan, -1e30], [0.25, 1.0, np.inf]], np.float32)
    np.testing.assert_array_equal(make_distribution(space, cfg).to_env(actions), np.array(
        [[0.0, 2.0, 0.0], [-1.0, 0.5, -1e30], [0.25, 1.0, np.finfo(np.float32).max]], np.float32))
    assert np.isnan(actions).sum() == 3, "the policy's own action is left alone"
    cfg.details["cont.action_clip"] = False
    raw = make_distribution(space, cfg).to_env(actions)
    assert np.isnan(raw).sum() == 3 and raw[1, 0] == -7.0


def test_cont_action_clip_of_finite_actions_is_np_clip(cfg):
    """The finite path (no np.nan_to_num) gives np.clip's numbers, also where a sum of finite actions overflows."""
    space = gym.spaces.Box(np.array([-1.0, 0.5, -np.inf], np.float32), np.array([1.0, 2.0, np.inf], np.float32))
    to_env = make_distribution(space, cfg).to_env
    actions = (np.random.default_rng(0).standard_normal((64, 3)) * 2).astype(np.float32)
    np.testing.assert_array_equal(to_env(actions), np.clip(actions, space.low, space.high))
    huge = np.array([[3e38, 3e38, 3e38], [-0.5, 1.5, 3e38]], np.float32)  # each finite, their sum is not
    np.testing.assert_array_equal(to_env(huge), np.clip(huge, space.low, space.high))


def test_discrete_actions_pass_through_to_the_env(cfg):
    actions = np.array([0, 2, 1])
    assert make_distribution(gym.spaces.Discrete(3), cfg).to_env(actions) is actions


def test_deterministic_evaluation_sends_the_clipped_mean(cfg, monkeypatch):
    cfg.env_id = RECORDER
    envs = make_envs(RECORDER, 1)
    policy = new_state(cfg, envs, torch.device("cpu")).policy
    envs.close()
    with torch.no_grad():  # a mean outside the bounds in some dimensions
        policy.policy_head.mean.bias.copy_(torch.tensor([1.0, -1.0, 0.2]))
    made = []
    monkeypatch.setattr(evaluate_mod, "make_envs", lambda *a, **k: made.append(make_envs(*a, **k)) or made[-1])
    evaluate_mod.evaluate(policy, RECORDER, 2, seed=0, deterministic=True)
    got = np.stack(made[0].groups.call(list)[0].unwrapped.received)
    assert len(got) == 8
    obs = torch.from_numpy(np.stack([np.array([[t % 4, t // 4], [np.sin(t % 4), np.cos(t // 4)]], np.float32)
                                     for t in range(8)]))
    with torch.no_grad():
        mean = policy.act(obs, Carry(None), None)[0].numpy()
    np.testing.assert_allclose(got, np.clip(mean, *RECORDER_BOUNDS), rtol=0, atol=1e-6)
    assert (got[:, 0] == 0.3).all() and (got[:, 1] == -0.2).all()


# --- the numpy fast path, the update, the ratio-is-one check -----------------------------------------------------

VARIANTS = {
    "reference": {},
    "state-dependent log std": {"cont.state_independent_logstd": False},
    "shared trunk": {"cont.separate_networks": False},
    "squash": {"squash_actions": True},
}


def configure(cfg, variant):
    for key, value in VARIANTS[variant].items():
        if key == "squash_actions":
            cfg.squash_actions = value
        else:
            cfg.details[key] = value
    return cfg


@pytest.mark.parametrize("variant", VARIANTS)
def test_fast_numpy_actor_takes_the_torch_actors_actions(cfg, variant):
    configure(cfg, variant)
    torch.manual_seed(0)
    policy = make_policy(OBS, ACT, cfg)
    with torch.no_grad():  # move away from the init so that every parameter matters
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    fast, plain = make_actor(policy, torch.device("cpu")), make_actor(policy, torch.device("cpu"), fast=False)
    assert isinstance(fast, NumpyMLPActor) and isinstance(plain, TorchActor)
    obs = np.random.default_rng(1).normal(size=(6, 3, 2)).astype(np.float32)
    carry = Carry(np.zeros(6, np.float32))
    for rng_seed in (5, None):
        # the rollout's calls: sample draws the torch actor's action from the same noise, score gives its log-prob
        # and value; sample's carry passes through
        action, after = fast.sample(obs, carry, None if rng_seed is None else np.random.default_rng(rng_seed))
        b = plain.act(obs, carry, None if rng_seed is None else np.random.default_rng(rng_seed))
        assert after is carry and b[3] == carry
        for x, y in zip((action, *fast.score(obs, action)), b[:3]):
            assert x.dtype == y.dtype == np.float32 and x.shape[0] == 6
            np.testing.assert_allclose(x, y, rtol=0, atol=2e-6)
        # the torch actor's sample is its act's action
        np.testing.assert_array_equal(
            plain.sample(obs, carry, None if rng_seed is None else np.random.default_rng(rng_seed))[0], b[0])
    np.testing.assert_allclose(fast.value(obs, carry), plain.value(obs, carry), rtol=0, atol=2e-6)
    # the fast actor sees parameter updates through its views
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05)
    np.testing.assert_allclose(fast.sample(obs, carry, None)[0], plain.act(obs, carry, None)[0], rtol=0, atol=2e-6)

@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("fast", [True, False])
def test_ratio_is_one_over_the_whole_batch(cfg, variant, fast, monkeypatch):
    configure(cfg, variant)
    state, _ = rollout_on(cfg, RECORDER, num_steps=32, num_envs=4, fast=fast)
    batch = assert_ratio_is_one(state, cfg, monkeypatch, atol=2e-6)
    assert batch["actions"].shape == (128, 3) and batch["actions"].dtype == torch.float32


# --- end to end -------------------------------------------------------------------------------------------------


def test_gaussian_policy_learns_to_hit_a_target(cfg, tmp_path):
    """One-step episodes with reward -|a - target|^2, the target in the observation: PPO puts the mean on the
    target and shrinks the std within a few seconds."""
    cfg.env_id = "proximal-test/Target-v0"
    cfg.num_envs, cfg.num_steps, cfg.total_steps = 8, 64, 8 * 64 * 40
    cfg.learning_rate, cfg.ent_coef, cfg.update_epochs = 3e-3, 0.0, 4
    state = train(cfg, tmp_path / "run", quiet=True)
    policy = state.policy
    targets = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (256, 2)).astype(np.float32))
    with torch.no_grad():
        mean, _, _, _ = policy.act(targets, Carry(None), None)
    error = (mean - targets).abs().mean().item()
    std = policy.policy_head.log_std.exp().detach()
    returns = np.loadtxt(tmp_path / "run" / "episodes.csv", delimiter=",", skiprows=1)[:, 1]
    assert returns[:500].mean() < -2.0, "a random policy"
    assert error < 0.1 and (std < 0.5).all(), (error, std)
    assert returns[-500:].mean() > -0.5


def test_resumed_pendulum_run_equals_uninterrupted_run(cfg, tmp_path):
    """A Box-action run (log std in the checkpoint, float actions, noise from the numpy RNG) resumes exactly."""
    cfg.env_id, cfg.num_envs, cfg.num_steps, cfg.total_steps = "Pendulum-v1", 2, 32, 2 * 32 * 6
    runs = assert_resume_is_exact(cfg, tmp_path, stop_at=3)
    assert not torch.equal(runs.full.policy.policy_head.log_std, torch.zeros(1)), "the log std was trained"
    np.testing.assert_array_equal(runs.full.rollout.actions, runs.resumed.rollout.actions)
