"""The categorical distribution's plain-tensor functions agree with torch.distributions."""

import numpy as np
import torch

from proximal.distributions import Categorical


def test_categorical_log_prob_and_entropy_match_torch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 5, generator=g) * 3
    actions = torch.randint(0, 5, (64,), generator=g)
    reference = torch.distributions.Categorical(logits=logits)
    torch.testing.assert_close(Categorical.log_prob(logits, actions), reference.log_prob(actions))
    torch.testing.assert_close(Categorical.entropy(logits), reference.entropy())


def test_categorical_sample_frequencies_follow_softmax():
    logits = torch.tensor([[0.0, 1.0, -1.0, 2.0]]).expand(200_000, 4)
    noise = torch.from_numpy(Categorical.noise(np.random.default_rng(1), tuple(logits.shape)))
    samples = Categorical.sample(logits, noise)
    freq = torch.bincount(samples, minlength=4).float() / len(samples)
    torch.testing.assert_close(freq, torch.softmax(logits[0], 0), atol=4e-3, rtol=0)


def test_categorical_sampling_is_seeded():
    logits = torch.zeros(1000, 3)

    def sample(seed):
        return Categorical.sample(logits, torch.from_numpy(Categorical.noise(np.random.default_rng(seed), (1000, 3))))

    assert torch.equal(sample(7), sample(7)) and not torch.equal(sample(7), sample(8))
