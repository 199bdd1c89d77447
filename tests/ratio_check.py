"""The ratio-is-one check, shared by every policy kind's tests."""

import torch

import proximal.update as update_mod
from proximal.precision import autocast
from proximal.update import minibatch, ppo_update

CPU = torch.device("cpu")


def assert_ratio_is_one(state, cfg, monkeypatch, atol: float = 1e-6, precision: str = "fp32",
                        episode_ends: bool = True) -> dict:
    """``state.rollout`` holds a batch collected by the rollout's act path. Before any gradient step, the training
    path must give every stored action the stored log-prob (ratio 1) and value; inside the torch update, the first
    minibatch of the first epoch must see approx_kl 0 and clipfrac 0, and later minibatches a moved policy.
    ``precision``: the one the rollout ran in, which the training path uses too; in bf16 ``atol`` (a bf16 rounding
    step) also bounds the values and the first minibatch's KL, which fp32 holds to 1e-6. Returns the training
    batch."""
    tight = atol if precision == "bf16" else 1e-6
    buf = state.rollout
    assert buf.starts.sum() > 0 or not episode_ends, "the batch holds episode ends"
    batch = buf.training_batch(buf.values, buf.values, CPU)
    with torch.no_grad(), autocast(precision, CPU):
        logprob, _, value = state.policy.evaluate(minibatch(batch, torch.arange(len(batch["obs"])), cfg))
    ratio = (logprob - batch["logprobs"]).exp()
    torch.testing.assert_close(ratio, torch.ones_like(ratio), rtol=0, atol=atol)
    torch.testing.assert_close(value, batch["values"], rtol=0, atol=tight)

    seen = []
    real_loss = update_mod.ppo_loss

    def recording_loss(*args, **kwargs):
        loss, stats = real_loss(*args, **kwargs)
        seen.append(stats)
        return loss, stats

    monkeypatch.setattr(update_mod, "ppo_loss", recording_loss)
    n = batch["obs"].shape[0]
    batch["advantages"], batch["returns"] = torch.randn(n), torch.randn(n)
    ppo_update(state.policy, state.optimizer, batch, cfg, 0.2, state.generator, precision)
    assert abs(seen[0]["approx_kl"].item()) < tight and abs(seen[0]["old_approx_kl"].item()) < tight
    assert seen[0]["clipfrac"].item() == 0.0
    assert max(abs(s["old_approx_kl"].item()) for s in seen[1:]) > 1e-5, "later minibatches see a moved policy"
    return batch
