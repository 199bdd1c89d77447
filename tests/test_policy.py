"""Policy structure (core.separate_networks) and the ratio-is-one check: the rollout's act path and the training
path agree on every stored action before the first gradient step."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import proximal
from proximal.carry import Carry
from proximal.envs import make_envs
from proximal.envs.vector import factory_id
from proximal.fast_paths import make_actor, make_update
from proximal.numpy_actor import NumpyMLPActor
from proximal.numpy_update import NumpyMLPUpdate
from proximal.policy import make_policy
from proximal.rollout import collect_rollout
from proximal.trainer import new_state
from proximal.update import make_optimizer
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


class ObservationSpaceEnv(gym.Env):
    """Random observations of ``observation_space``, reward 1 for the first action (or for a positive first
    component of a Box action), 10-step episodes: a stand-in for any env of such a space."""

    observation_space = gym.spaces.Box(0, 255, (5,), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def _obs(self):
        return self.observation_space.sample()

    def step(self, action):
        self.t += 1
        good = np.asarray(action).ravel()[0] > 0 if isinstance(self.action_space, gym.spaces.Box) else action == 0
        return self._obs(), float(good), False, self.t >= 10, {}


def space_env(observation_space, action_space=ACT):
    """A factory of ``ObservationSpaceEnv`` with these spaces, named for run directories and make_envs."""
    def make():
        env = ObservationSpaceEnv()
        env.observation_space, env.action_space = observation_space, action_space
        return env
    return make


U8_VECTOR = gym.spaces.Box(0, 255, (5,), np.uint8)
# uint8 observations that are not (C, H, W) images for the Nature CNN: the MLP (or the LSTM's flat input) takes them
FLAT_SPACES = {
    "hwc_image": (gym.spaces.Box(0, 255, (64, 64, 3), np.uint8), ACT, {}),
    "uint8_vector": (U8_VECTOR, ACT, {}),
    "uint8_vector_lstm": (U8_VECTOR, ACT, {"lstm_size": 16}),
    "minigrid_like": (gym.spaces.Box(0, 255, (7, 7, 3), np.uint8), gym.spaces.Discrete(3), {}),
    "chw_image_box_actions": (gym.spaces.Box(0, 255, (3, 64, 64), np.uint8),
                              gym.spaces.Box(-1.0, 1.0, (2,), np.float32), {}),
    "scalar": (gym.spaces.Box(-1.0, 1.0, (), np.float32), ACT, {}),
    "scalar_lstm": (gym.spaces.Box(-1.0, 1.0, (), np.float32), ACT, {"lstm_size": 16}),
}


@pytest.mark.parametrize("kind", list(FLAT_SPACES))
def test_flat_trunks_train_on_integer_images_vectors_grids_and_scalars(kind, tmp_path):
    observation_space, action_space, extra = FLAT_SPACES[kind]
    make = space_env(observation_space, action_space)
    run = proximal.train(env=make, run_dir=tmp_path / "run", quiet=True, total_steps=256, num_envs=2, num_steps=32,
                         num_minibatches=2, update_epochs=2, device="cpu", **extra)
    assert run.global_step == 256
    agent = proximal.load(run.run_dir)
    obs = np.stack([observation_space.sample() for _ in range(3)])
    actions, _ = agent.act(obs)
    assert len(actions) == 3 and all(action_space.contains(np.asarray(a, action_space.dtype)) for a in actions)
    assert np.isfinite(agent.value(obs)).all()


def uint8_and_float32(n: int, seed: int = 0):
    """The same observation values of U8_VECTOR, as uint8 and as float32: all of 0..255, not only small ones."""
    obs = np.random.default_rng(seed).integers(0, 256, (n, *U8_VECTOR.shape), dtype=np.uint8)
    obs[0] = 255
    return obs, obs.astype(np.float32)


@pytest.mark.parametrize("lstm", [0, 16])
def test_uint8_observations_give_the_outputs_of_the_same_values_as_float32(cfg, lstm):
    """Unscaled, as the reference's encode_observation (tf.to_float): the policy, the value and the numpy actor's
    scores are those of the float32 observation with the same values."""
    cfg.lstm_size = lstm
    torch.manual_seed(0)
    policy = make_policy(U8_VECTOR, ACT, cfg)
    obs8, obs32 = uint8_and_float32(16)
    carry = Carry(torch.zeros(16), None, policy.initial_state(16))
    with torch.no_grad():
        logits8, value8, _ = policy.distribution(torch.from_numpy(obs8), carry)
        logits32, value32, _ = policy.distribution(torch.from_numpy(obs32), carry)
    assert torch.equal(logits8, logits32) and torch.equal(value8, value32)
    assert logits8.std(0).min() > 1e-4, "the observations move the logits"
    if not lstm:
        actor = NumpyMLPActor(policy)
        actions = np.arange(16) % 2
        for got, want in zip(actor.score(obs8, actions), actor.score(obs32, actions)):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(actor.score(obs8, actions)[1], value32.numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("fast", [True, False], ids=["numpy_actor", "torch_actor"])
def test_ratio_is_one_on_a_uint8_rollout(cfg, fast, monkeypatch):
    """The rollout stores uint8 observations as uint8; the update reads them from there."""
    cfg.num_envs, cfg.num_steps = 2, 64
    make = space_env(U8_VECTOR)
    envs = make_envs(factory_id(make), cfg.num_envs, factory=make)
    state = new_state(cfg, envs, torch.device("cpu"))
    buf = state.rollout
    actor = make_actor(state.policy, torch.device("cpu"), fast)
    assert isinstance(actor, NumpyMLPActor) == fast
    state.obs, state.carry, _, _ = collect_rollout(envs, actor, buf, state.obs, state.carry, state.rng, 0, cfg)
    envs.close()
    assert buf.obs.dtype == np.uint8 and buf.obs.max() > 1
    assert_ratio_is_one(state, cfg, monkeypatch)


def test_numpy_update_on_uint8_observations_equals_float32(cfg):
    """The numpy update (training's on the CPU) reads the rollout's uint8 observations as their float32 values."""
    obs8, obs32 = uint8_and_float32(64)
    rng = np.random.default_rng(1)
    rest = {"actions": torch.from_numpy(rng.integers(0, 2, 64)),
            **{k: torch.from_numpy(rng.normal(size=64).astype(np.float32))
               for k in ("logprobs", "values", "advantages", "returns")}}
    params = []
    for obs in (obs8, obs32):
        torch.manual_seed(0)
        policy = make_policy(U8_VECTOR, ACT, cfg)
        optimizer = make_optimizer(policy, cfg)
        update = make_update(policy, optimizer, torch.device("cpu"))
        assert isinstance(update, NumpyMLPUpdate)
        update(policy, optimizer, {"obs": torch.from_numpy(obs), **rest}, cfg, 0.2, torch.Generator().manual_seed(0))
        params.append(torch.cat([p.detach().flatten() for p in policy.parameters()]))
    torch.manual_seed(0)
    assert not torch.equal(params[0], torch.cat([p.flatten() for p in make_policy(U8_VECTOR, ACT, cfg).parameters()]))
    assert torch.equal(params[0], params[1])
