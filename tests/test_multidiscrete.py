"""MultiDiscrete actions (multidiscrete.independent_categoricals) and invalid action masking (aux.action_masking):
the distributions against per-component torch Categoricals and hand numbers, masks from the env through the
rollout into the update, the fast paths refused, the shipped env learned, and a resumed masked run."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from proximal.actors import TorchActor
from proximal.carry import Carry
from proximal.config import preset
from proximal.distributions import Categorical, MultiCategorical, make_distribution, masked_logits
from proximal.envs import make_envs
from proximal.errors import UserError
from proximal.evaluate import evaluate, load_policy
from proximal.fast_paths import make_actor, make_update
from proximal.policy import make_policy
from proximal.rollout import collect_rollout
from proximal.trainer import new_state, train
from proximal.update import make_optimizer, ppo_update
from ratio_check import assert_ratio_is_one
from resume_check import assert_resume_is_exact

SHIPPED = "proximal/MaskedMultiDiscrete-v0"
# one grid-like 2-D nvec (rows equal: read as rows of a pattern) and one with every run kind of a single row
NVECS = [np.array([[3, 2, 2, 4]] * 5), np.array([4, 3, 3, 5, 3, 2])]


def torch_reference(nvec, logits, mask=None):
    """One torch.distributions.Categorical per component, masked with torch.where, as CleanRL's gridnet."""
    sizes = np.asarray(nvec).reshape(-1).tolist()
    chunks = logits.split(sizes, -1)
    if mask is not None:
        chunks = [torch.where(m, c, torch.tensor(-1e8)) for c, m in zip(chunks, mask.split(sizes, -1))]
    return [torch.distributions.Categorical(logits=c) for c in chunks]


def random_logits_and_mask(nvec, batch, seed, all_masked=0.0):
    g = torch.Generator().manual_seed(seed)
    sizes = np.asarray(nvec).reshape(-1)
    logits = torch.randn(batch, int(sizes.sum()), generator=g) * 2
    mask = torch.rand(batch, int(sizes.sum()), generator=g) < 0.5
    # every component keeps one valid action, except those drawn as all-masked
    for k, (start, n) in enumerate(zip(np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)):
        keep = torch.randint(0, int(n), (batch,), generator=g)
        mask[torch.arange(batch), start + keep] = True
        empty = torch.rand(batch, generator=g) < all_masked
        mask[empty, start:start + n] = False
    return logits, mask


@pytest.mark.parametrize("nvec", NVECS, ids=["grid", "row"])
def test_multidiscrete_independent_categoricals_sums_of_torch_categoricals(nvec):
    dist = MultiCategorical(nvec)
    logits, _ = random_logits_and_mask(nvec, 64, seed=0)
    reference = torch_reference(nvec, logits)
    noise = torch.from_numpy(dist.noise(np.random.default_rng(0), dist.noise_shape(logits)))
    actions = dist.sample(logits, noise)
    assert actions.shape == (64, nvec.size)
    expected_logprob = sum(r.log_prob(actions[:, k]) for k, r in enumerate(reference))
    torch.testing.assert_close(dist.log_prob(logits, actions), expected_logprob)
    torch.testing.assert_close(dist.entropy(logits), sum(r.entropy() for r in reference))
    torch.testing.assert_close(dist.log_prob_and_entropy(logits, actions)[1], sum(r.entropy() for r in reference))
    # Gumbel-max per component on that component's slice of the noise; the mode is each component's argmax
    sizes = nvec.reshape(-1).tolist()
    per_component = [(lg + nz).argmax(-1) for lg, nz in zip(logits.split(sizes, -1), noise.split(sizes, -1))]
    assert torch.equal(actions, torch.stack(per_component, -1))
    assert torch.equal(dist.mode(logits), torch.stack([lg.argmax(-1) for lg in logits.split(sizes, -1)], -1))


def test_multidiscrete_one_head_of_sum_nvec_logits_gain_001(cfg):
    space = gym.spaces.MultiDiscrete(NVECS[1])
    policy = make_policy(gym.spaces.Box(-1, 1, (4,), np.float32), space, cfg)
    head = policy.policy_head.linear
    assert head.out_features == NVECS[1].sum()
    np.testing.assert_allclose(torch.linalg.svdvals(head.weight.detach()).numpy(), 0.01, rtol=1e-4)
    # the grid policy: one Linear of sum(nvec of a cell) logits applied to every cell's features (a 1x1
    # convolution), i.e. sum(nvec) logits over the grid
    grid = gym.spaces.MultiDiscrete(np.tile([6, 4, 49], (12, 1)))
    policy = make_policy(gym.spaces.Box(0, 1, (3, 4, 5), np.uint8), grid, cfg)
    head = policy.policy_head.linear
    assert head.out_features == 59
    np.testing.assert_allclose(torch.linalg.svdvals(head.weight.detach()).numpy(), 0.01, rtol=1e-4)
    obs = torch.randint(0, 2, (2, 3, 4, 5), dtype=torch.uint8)
    with torch.no_grad():
        logits = policy.act(obs, Carry(None), None)[0]  # the mode: one action per component
        cells, _ = policy.trunk(obs)
        cell_logits = head(cells)
    assert logits.shape == (2, 12 * 3) and cell_logits.shape == (2, 12, 59)
    # cell-major: cell (row 1, column 2) is cell index 1 * 4 + 2, its features those of grid position (1, 2)
    modes = torch.stack([part.argmax(-1) for part in cell_logits[:, 6].split([6, 4, 49], -1)], -1)
    assert torch.equal(logits.view(2, 12, 3)[:, 6], modes)
    x = obs.permute(0, 3, 1, 2).float()
    local = policy.trunk.local(x)[:, :, 1, 2]
    torch.testing.assert_close(cells[:, 6, :32], local)


@pytest.mark.parametrize("nvec", NVECS, ids=["grid", "row"])
def test_masked_log_prob_and_entropy_equal_torch_where_masking(nvec):
    dist = MultiCategorical(nvec)
    logits, mask = random_logits_and_mask(nvec, 64, seed=1)
    reference = torch_reference(nvec, logits, mask)
    actions = dist.sample((logits, mask), torch.from_numpy(dist.noise(np.random.default_rng(1),
                                                                       dist.noise_shape((logits, mask)))))
    torch.testing.assert_close(dist.log_prob((logits, mask), actions),
                               sum(r.log_prob(actions[:, k]) for k, r in enumerate(reference)))
    torch.testing.assert_close(dist.entropy((logits, mask)), sum(r.entropy() for r in reference))


class DiscreteMasked(Categorical):
    """A masked policy's Discrete distribution: Categorical of the masked logits (``Categorical.masked``)."""

    def sample(self, params, noise):
        return super().sample(self.masked(*params), noise)


def check_masks_respected(dist, logits, mask, nvec, samples):
    """Draws ``samples`` batches; every sampled action of a component with a valid action is valid, and the
    frequencies of the valid ones follow the softmax of the valid logits."""
    rng = np.random.default_rng(2)
    sizes = np.asarray(nvec).reshape(-1)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    counts = torch.zeros(mask.shape)
    shape = dist.noise_shape(dist.masked(logits, mask))  # MultiCategorical: only the rows with a valid action
    for _ in range(samples):
        actions = dist.sample((logits, mask), torch.from_numpy(dist.noise(rng, shape)))
        actions = actions.reshape(len(actions), -1)  # Discrete: (B,)
        counts.scatter_add_(1, actions + torch.from_numpy(starts), torch.ones(actions.shape))
    has_valid = torch.stack([mask[:, s:s + n].any(1) for s, n in zip(starts, sizes)], 1)
    has_valid_flat = has_valid.repeat_interleave(torch.from_numpy(sizes), 1)
    assert counts[has_valid_flat & ~mask].sum() == 0, "an invalid action was sampled"
    for s, n in zip(starts, sizes):
        probs = torch.softmax(torch.where(mask[:, s:s + n], logits[:, s:s + n], -torch.inf), 1)
        rows = mask[:, s:s + n].any(1)
        torch.testing.assert_close(counts[rows, s:s + n] / samples, probs[rows], atol=0.03, rtol=0)


def test_aux_action_masking_never_samples_invalid_actions():
    nvec = NVECS[1]
    logits, mask = random_logits_and_mask(nvec, 8, seed=3, all_masked=0.2)
    mask[:, :4] = torch.tensor([True, False, True, False])  # component 0's invalid actions carry the largest logits
    logits[:, :4] = torch.tensor([0.0, 9.0, -1.0, 9.0])
    check_masks_respected(MultiCategorical(nvec), logits, mask, nvec, samples=3000)
    # Discrete: the same with one component, through Categorical of the masked logits
    check_masks_respected(DiscreteMasked(4), logits[:, :4], mask[:, :4], [4], samples=3000)


def test_masked_noise_covers_only_the_rows_with_a_valid_action():
    """A masked sample draws Gumbel noise for the rows it samples alone, and is Gumbel-max on those rows: each
    component's argmax of logit + noise among its valid actions; a row without any valid action samples 0."""
    nvec = NVECS[0]  # 5 rows of the pattern 3 2 2 4
    dist = MultiCategorical(nvec)
    logits, mask = random_logits_and_mask(nvec, 6, seed=5)
    mask.view(6, 5, 11)[:, 1] = False  # row 1 of every sample: no valid action
    mask.view(6, 5, 11)[2] = False  # sample 2: none at all
    valid_rows = mask.view(30, 11).any(1)
    assert dist.noise_shape((logits, mask)) == (int(valid_rows.sum()), 11) == (20, 11)
    assert dist.noise_shape(logits) == tuple(logits.shape)  # unmasked: every row
    noise = torch.from_numpy(dist.noise(np.random.default_rng(6), (20, 11)))
    actions = dist.sample((logits, mask), noise).view(30, 4)
    assert (actions[~valid_rows] == 0).all()
    scored = torch.where(mask.view(30, 11), logits.view(30, 11), -torch.inf)[valid_rows] + noise
    expected = torch.stack([part.argmax(-1) for part in scored.split([3, 2, 2, 4], -1)], 1)
    assert torch.equal(actions[valid_rows], expected)


def test_masked_logits_get_exactly_zero_gradients():
    nvec = NVECS[0]
    logits, mask = random_logits_and_mask(nvec, 16, seed=4, all_masked=0.2)
    logits.requires_grad_(True)
    dist = MultiCategorical(nvec)
    actions = dist.sample((logits, mask), torch.from_numpy(dist.noise(np.random.default_rng(4),
                                                                       dist.noise_shape((logits, mask)))))
    logprob, entropy = dist.log_prob_and_entropy((logits, mask), actions)
    (logprob.sum() + 0.3 * entropy.sum()).backward()
    assert (logits.grad[~mask] == 0).all(), "exactly 0, not merely small"
    # valid actions of components with a choice (two valid actions or more) do learn
    sizes = torch.from_numpy(nvec.reshape(-1))
    choices = torch.stack([m.sum(1) for m in mask.split(sizes.tolist(), 1)], 1).repeat_interleave(sizes, 1)
    assert (logits.grad[mask & (choices > 1)] != 0).all()
    discrete_logits = logits.detach()[:, :3].clone().requires_grad_(True)
    discrete_mask = mask[:, :3] | (torch.arange(3) == 0)
    masked = masked_logits(discrete_logits, discrete_mask)
    categorical = Categorical(3)
    (categorical.log_prob(masked, torch.zeros(16, dtype=torch.long)).sum() + categorical.entropy(masked).sum()).backward()
    assert (discrete_logits.grad[~discrete_mask] == 0).all()


def test_masked_entropy_and_all_masked_component_hand_numbers():
    # components of 3 and 2 actions: logits (0, ln 2, 5) with the 5 masked, and (1, 2) fully masked
    dist = MultiCategorical([3, 2])
    logits = torch.tensor([[0.0, math.log(2.0), 5.0, 1.0, 2.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False, False, False]])
    # the valid actions have probabilities 1/3 and 2/3; the masked ones are ignored, the empty component adds 0
    expected_entropy = -(1 / 3 * math.log(1 / 3) + 2 / 3 * math.log(2 / 3))
    torch.testing.assert_close(dist.entropy((logits, mask)), torch.tensor([expected_entropy]))
    logprob = dist.log_prob((logits, mask), torch.tensor([[1, 0]]))
    torch.testing.assert_close(logprob, torch.tensor([math.log(2 / 3)]))
    logprob.backward()
    assert (logits.grad[0, 2:] == 0).all()
    # whatever the fully masked component's stored action, log-prob and entropy are the first component's alone
    for action in (0, 1):
        torch.testing.assert_close(dist.log_prob((logits, mask), torch.tensor([[1, action]])), logprob.detach())


class MaskRecorder:
    """A vector env that records the masks of every observation it returns (after reset and each step) and the
    actions it receives, whether or not the rollout reads the masks."""

    def __init__(self, envs):
        self.envs, self.masks, self.actions = envs, [], []

    def reset(self, seed):
        obs = self.envs.reset(seed=seed)
        self.masks.append(self.envs.action_masks())
        return obs

    def step(self, actions):
        self.actions.append(np.array(actions, copy=True))
        step = self.envs.step(actions)
        self.masks.append(self.envs.action_masks())
        return step

    def action_masks(self):
        return self.envs.action_masks()

    def __getattr__(self, name):
        return getattr(self.envs, name)


def valid(masks, actions, nvec):
    """Per (env, component): the action is valid, or the component has no valid action (the env ignores it)."""
    sizes = np.asarray(nvec).reshape(-1)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    actions = actions.reshape(len(actions), -1)
    chosen = np.take_along_axis(masks, actions + starts, 1)
    empty = ~np.stack([masks[:, s:s + n].any(1) for s, n in zip(starts, sizes)], 1)
    return chosen | empty


def masked_rollout(cfg, env_id=SHIPPED, num_envs=4, num_steps=32):
    cfg.env_id, cfg.num_envs, cfg.num_steps = env_id, num_envs, num_steps
    envs = MaskRecorder(make_envs(env_id, num_envs))
    state = new_state(cfg, envs, torch.device("cpu"))
    state.obs, state.carry, _, _ = collect_rollout(envs, make_actor(state.policy, torch.device("cpu")), state.rollout, state.obs, state.carry, state.rng, 0, cfg)
    return state, envs


def check_action_masking(cfg):
    """The env's masks reach the policy: no invalid action is taken (a random policy takes many without)."""
    _, envs = masked_rollout(cfg)
    nvec = envs.single_action_space.nvec
    assert all(valid(m, a, nvec).all() for m, a in zip(envs.masks, envs.actions))


def test_rollout_stores_the_mask_of_each_observation_and_masking_off_ignores_them(cfg):
    check_action_masking(cfg)
    state, envs = masked_rollout(preset("classic"))
    buf = state.rollout
    assert state.policy.masked and buf.masks.dtype == bool and buf.masks.shape == (32, 4, 21)
    # stored with step t: the mask returned with obs_t (the new episode's first mask after an autoreset)
    np.testing.assert_array_equal(buf.masks, np.stack(envs.masks[:32]))
    np.testing.assert_array_equal(state.carry.mask, envs.masks[32])
    assert buf.starts[1:].sum() > 0, "the rollout crosses episode ends"
    cfg = preset("classic")
    cfg.details["aux.action_masking"] = False
    state, envs = masked_rollout(cfg)
    assert not state.policy.masked and state.rollout.masks is None
    assert not all(valid(m, a, envs.single_action_space.nvec).all() for m, a in zip(envs.masks, envs.actions))


@pytest.mark.parametrize("env_id", ["proximal-test/MaskedDiscrete-v0", "proximal-test/MaskedDict-v0"])
def test_discrete_masks_from_info_or_dict_observation_follow_the_autoreset(cfg, env_id):
    state, envs = masked_rollout(cfg, env_id, num_envs=2, num_steps=12)
    buf = state.rollout
    assert envs.single_observation_space.shape == (2,)
    first = buf.obs[:, :, 1] == 0  # t == 0: an episode's first observation, only action 3 allowed
    assert np.array_equal(first, buf.starts.astype(bool) | (np.arange(12) == 0)[:, None])
    assert (buf.masks[first] == [False, False, False, True]).all()
    assert (buf.actions[first] == 3).all() and (buf.rewards[first] == 3).all()
    t = buf.obs[:, :, 1].astype(int)
    allowed = (buf.actions == t % 3) | (buf.actions == (t + 1) % 3)
    assert allowed[~first].all()


def test_a_discrete_env_with_no_valid_action_is_a_user_error(cfg):
    with pytest.raises(UserError, match="no valid action"):
        masked_rollout(cfg, "proximal-test/AllMasked-v0", num_envs=2, num_steps=12)


def test_masked_ratio_is_one_with_the_stored_masks(cfg, monkeypatch):
    state, _ = masked_rollout(cfg, num_envs=4, num_steps=32)
    batch = assert_ratio_is_one(state, cfg, monkeypatch, atol=1e-5)
    # the masks matter: the same actions without them have other log-probs
    with torch.no_grad():
        state.policy.masked = False
        unmasked, _, _ = state.policy.evaluate({"obs": batch["obs"], "actions": batch["actions"]})
    assert (unmasked - batch["logprobs"]).abs().max() > 0.1


def test_fast_paths_are_not_picked_for_multidiscrete_or_masked_policies(cfg):
    device = torch.device("cpu")
    obs = gym.spaces.Box(-1, 1, (4,), np.float32)
    for space, masked in ((gym.spaces.MultiDiscrete([3, 2]), False), (gym.spaces.Discrete(3), True)):
        policy = make_policy(obs, space, cfg, masked=masked)
        assert isinstance(make_actor(policy, device), TorchActor)
        assert make_update(policy, make_optimizer(policy, cfg), device) is ppo_update
    policy = make_policy(obs, gym.spaces.Discrete(3), cfg)
    assert not isinstance(make_actor(policy, device), TorchActor), "the fast path stays for plain Discrete"


def test_box_actions_with_masks_are_a_user_error(cfg):
    with pytest.raises(UserError, match="--off aux.action_masking"):
        make_policy(gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Box(-1, 1, (2,), np.float32), cfg, True)


def test_multidiscrete_start_offsets_reach_the_env(cfg):
    # the policy's indices 0..n-1, through the distribution's to_env (the one place that adds the space's start)
    gym.register("proximal-test/MultiStart-v0", entry_point=OffsetEnv)
    envs = make_envs("proximal-test/MultiStart-v0", 2)
    envs.reset(seed=0)
    envs.step(make_distribution(envs.single_action_space, cfg).to_env(np.array([[0, 1], [1, 0]])))
    assert envs.groups.call(list)[0].unwrapped.received.tolist() == [5, 11]


class OffsetEnv(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (1,), np.float32)
    action_space = gym.spaces.MultiDiscrete([2, 2], start=[5, 10])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.received = np.asarray(action)
        return np.zeros(1, np.float32), 0.0, False, False, {}


def test_shipped_masked_multidiscrete_env_is_learned(cfg, tmp_path):
    # random valid actions earn about 9.5 per episode (the best policy 24 on average). At 20,480 steps seeds 1-8
    # ended at 17.5-18.3 on one CPU model, too near the bar for another CPU's rounding; at 30,720, 18.6-19.6
    cfg.env_id, cfg.learning_rate, cfg.total_steps, cfg.checkpoint_every = SHIPPED, 3e-3, 30720, 0
    train(cfg, tmp_path, quiet=True)
    returns = np.loadtxt(tmp_path / "episodes.csv", delimiter=",", skiprows=1)[-100:, 1]
    assert returns.mean() >= 17.0


def test_masked_run_resumes_exactly_and_evaluates_with_masks(cfg, tmp_path, monkeypatch):
    cfg.env_id, cfg.num_envs, cfg.num_steps, cfg.total_steps, cfg.checkpoint_every = SHIPPED, 2, 32, 256, 0
    assert_resume_is_exact(cfg, tmp_path, stop_at=2)
    policy, run_cfg, _ = load_policy(tmp_path / "full")
    assert policy.masked
    recorders = []

    def recording_envs(*args, **kwargs):
        recorders.append(MaskRecorder(make_envs(*args, **kwargs)))
        return recorders[-1]

    monkeypatch.setattr("proximal.evaluate.make_envs", recording_envs)
    evaluate(policy, SHIPPED, episodes=3, seed=5)
    envs = recorders[0]
    assert len(envs.actions) == 24
    assert all(valid(m, a, envs.single_action_space.nvec).all() for m, a in zip(envs.masks, envs.actions))


def test_masked_policy_bootstraps_truncated_episodes_without_a_mask(cfg):
    """The value of a truncated episode's final observation needs no action mask: a masked policy values it."""
    from proximal.envs.masked_multidiscrete import MaskedMultiDiscreteEnv

    env_id = "proximal-test/MaskedTimeLimit-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=MaskedMultiDiscreteEnv, max_episode_steps=5)
    state, _ = masked_rollout(cfg, env_id, num_envs=2, num_steps=12)
    assert state.policy.masked
    final = state.rollout.final_values
    assert np.count_nonzero(final) == 4, "steps 5 and 10 of both envs were truncated and bootstrapped"


def test_a_2d_nvec_whose_rows_differ_is_read_as_one_row_of_its_components():
    nvec = np.array([[3, 2], [2, 3]])  # rows differ: the components are 3, 2, 2, 3 in this order
    dist = MultiCategorical(nvec)
    sizes = nvec.reshape(-1).tolist()
    for masked in (False, True):
        logits, mask = random_logits_and_mask(nvec, 64, seed=8)
        params = (logits, mask) if masked else logits
        reference = torch_reference(nvec, logits, mask if masked else None)
        noise = torch.from_numpy(dist.noise(np.random.default_rng(8), dist.noise_shape(params)))
        actions = dist.sample(params, noise)
        assert actions.shape == (64, 4)
        assert all((actions[:, k] < n).all() for k, n in enumerate(sizes)), "each component within its own size"
        torch.testing.assert_close(dist.log_prob(params, actions),
                                   sum(r.log_prob(actions[:, k]) for k, r in enumerate(reference)))
        torch.testing.assert_close(dist.entropy(params), sum(r.entropy() for r in reference))
    assert torch.equal(dist.mode(logits), torch.stack([part.argmax(-1) for part in logits.split(sizes, -1)], -1))
