"""The distributions' plain-tensor functions agree with torch.distributions; the tanh-squashed Gaussian's
log-prob is a density (it integrates to one) and its entropy matches a Monte-Carlo estimate."""

import gymnasium as gym
import numpy as np
import torch

from proximal.config import preset
from proximal.distributions import Categorical, DiagGaussian, TanhDiagGaussian, make_distribution

CFG = preset("mujoco")


def gaussian(dims: int) -> DiagGaussian:
    return DiagGaussian(gym.spaces.Box(-1.0, 1.0, (dims,), np.float32), CFG)


def squashed(low, high) -> TanhDiagGaussian:
    return TanhDiagGaussian(gym.spaces.Box(np.asarray(low), np.asarray(high), dtype=np.float64), CFG)


def test_categorical_log_prob_and_entropy_match_torch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 5, generator=g) * 3
    actions = torch.randint(0, 5, (64,), generator=g)
    reference = torch.distributions.Categorical(logits=logits)
    dist = Categorical(5)
    torch.testing.assert_close(dist.log_prob(logits, actions), reference.log_prob(actions))
    torch.testing.assert_close(dist.entropy(logits), reference.entropy())


def test_categorical_sample_frequencies_follow_softmax():
    logits = torch.tensor([[0.0, 1.0, -1.0, 2.0]]).expand(200_000, 4)
    dist = Categorical(4)
    noise = torch.from_numpy(dist.noise(np.random.default_rng(1), tuple(logits.shape)))
    samples = dist.sample(logits, noise)
    freq = torch.bincount(samples, minlength=4).float() / len(samples)
    torch.testing.assert_close(freq, torch.softmax(logits[0], 0), atol=4e-3, rtol=0)


def test_categorical_sampling_is_seeded():
    logits = torch.zeros(1000, 3)

    dist = Categorical(3)

    def sample(seed):
        return dist.sample(logits, torch.from_numpy(dist.noise(np.random.default_rng(seed), (1000, 3))))

    assert torch.equal(sample(7), sample(7)) and not torch.equal(sample(7), sample(8))


def test_a_spaces_start_is_added_on_the_way_to_the_env_and_only_there():
    """The policy's side (sample, mode, log-prob: what the rollout stores) is the index 0..n-1; ``to_env`` gives
    the env ``start + index``, in the space's shape."""
    discrete = make_distribution(gym.spaces.Discrete(3, start=-1), CFG)
    logits = torch.tensor([[0.0, 0.0, 9.0], [9.0, 0.0, 0.0]])
    index = discrete.mode(logits)
    assert index.tolist() == [2, 0] and discrete.log_prob(logits, index)[0] > -1e-3
    assert discrete.to_env(index.numpy()).tolist() == [1, -1]
    multi = make_distribution(gym.spaces.MultiDiscrete([[2, 3]], start=[[5, -1]]), CFG)
    logits = torch.tensor([[9.0, 0.0, 0.0, 0.0, 9.0], [0.0, 9.0, 9.0, 0.0, 0.0]])
    index = multi.mode(logits)
    assert index.tolist() == [[0, 2], [1, 0]] and (multi.log_prob(logits, index) > -1e-3).all()
    assert multi.to_env(index.numpy()).tolist() == [[[5, 1]], [[6, -1]]]
    unshifted = np.array([0, 2])
    assert make_distribution(gym.spaces.Discrete(3), CFG).to_env(unshifted) is unshifted


def normal(params):
    mean, log_std = params
    return torch.distributions.Normal(mean, log_std.exp())


def random_params(batch=64, dims=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, dims, generator=g) * 2, torch.randn(batch, dims, generator=g) * 0.7


def test_diag_gaussian_log_prob_and_entropy_match_torch_normal():
    params = random_params()
    actions = torch.randn(64, 3) * 3
    dist = gaussian(3)
    torch.testing.assert_close(dist.log_prob(params, actions), normal(params).log_prob(actions).sum(-1))
    torch.testing.assert_close(dist.entropy(params), normal(params).entropy().sum(-1))


def test_diag_gaussian_sample_is_mean_plus_std_times_standard_normal_noise():
    params = random_params(batch=100_000, dims=2)
    mean, log_std = params
    dist = gaussian(2)
    noise = dist.noise(np.random.default_rng(3), dist.noise_shape(params))
    assert noise.dtype == np.float32 and noise.shape == (100_000, 2)
    assert abs(noise.mean()) < 0.01 and abs(noise.std() - 1.0) < 0.01
    sample = dist.sample(params, torch.from_numpy(noise))
    torch.testing.assert_close(sample, mean + log_std.exp() * torch.from_numpy(noise))
    torch.testing.assert_close(dist.mode(params), mean)
    again = dist.noise(np.random.default_rng(3), (100_000, 2))
    assert np.array_equal(noise, again) and not np.array_equal(noise, dist.noise(np.random.default_rng(4), (100_000, 2)))


LOW, HIGH = np.array([-1.0, 0.0, -3.0]), np.array([2.0, 0.5, -1.0])


def test_tanh_squash_density_integrates_to_one():
    dist = squashed([-1.0], [3.0])
    params = (torch.tensor([[0.7]], dtype=torch.float64), torch.tensor([[0.4]], dtype=torch.float64))
    # integrate p(a) over a in (-1, 3), through u = atanh((a - low) / half_range - 1)
    a = torch.linspace(-1.0, 3.0, 400_001, dtype=torch.float64)[1:-1]
    u = torch.atanh((a + 1.0) / 2.0 - 1.0)
    density = dist.log_prob(params, u[:, None]).exp()
    assert abs(torch.trapezoid(density, a).item() - 1.0) < 1e-4


def test_tanh_squash_entropy_matches_monte_carlo():
    dist = squashed(LOW, HIGH)
    mean = torch.tensor([[0.0, 1.5, -0.5], [2.0, -3.0, 0.2]], dtype=torch.float64)
    log_std = torch.tensor([[0.0, -1.0, 1.2], [0.5, 0.3, -2.0]], dtype=torch.float64)
    noise = torch.randn(400_000, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    u = mean + log_std.exp() * noise
    monte_carlo = -dist.log_prob((mean.expand_as(u), log_std.expand_as(u)), u).mean(0)
    torch.testing.assert_close(dist.entropy((mean, log_std)), monte_carlo, rtol=0, atol=0.01)
    # and it differs from the Gaussian's entropy by the expected log-det
    assert (dist.entropy((mean, log_std)) - DiagGaussian.entropy(dist, (mean, log_std))).abs().min() > 0.1


def test_a_start_that_is_zero_in_some_components_is_still_added_to_the_others():
    multi = make_distribution(gym.spaces.MultiDiscrete([2, 4], start=[0, 3]), CFG)
    assert multi.to_env(np.array([[1, 0], [0, 3]])).tolist() == [[1, 3], [0, 6]]
    grid = make_distribution(gym.spaces.MultiDiscrete([[2, 3], [2, 3]], start=[[0, 0], [0, -1]]), CFG)
    assert grid.to_env(np.array([[1, 2, 1, 2]])).tolist() == [[[1, 2], [1, 1]]]
