"""The categorical distribution's plain-tensor functions agree with torch.distributions."""

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
    samples = Categorical.sample(logits, torch.Generator().manual_seed(1))
    freq = torch.bincount(samples, minlength=4).float() / len(samples)
    torch.testing.assert_close(freq, torch.softmax(logits[0], 0), atol=4e-3, rtol=0)


def test_categorical_sampling_is_seeded():
    logits = torch.zeros(1000, 3)
    a = Categorical.sample(logits, torch.Generator().manual_seed(7))
    b = Categorical.sample(logits, torch.Generator().manual_seed(7))
    c = Categorical.sample(logits, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
