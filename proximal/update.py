"""The PPO update: schedules, the loss, and the epoch/minibatch loop."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .config import Config
from .distributed import average_gradients, average_scalar
from .precision import autocast

STAT_NAMES = ("policy_loss", "value_loss", "entropy", "approx_kl", "old_approx_kl", "approxkl_ppo2", "clipfrac")


def learning_rate(cfg: Config, update: int) -> float:
    """core.lr_annealing: lr0 * (1 - (i - 1) / U) at update i (1-based); the last update uses lr0 / U."""
    if not cfg.on("core.lr_annealing"):
        return cfg.learning_rate
    return cfg.learning_rate * (1.0 - (update - 1.0) / cfg.num_updates)


def clip_range(cfg: Config, update: int) -> float:
    """aux.clip_annealing: eps0 * (1 - (i - 1) / U), else the constant clip_coef."""
    if not cfg.on("aux.clip_annealing"):
        return cfg.clip_coef
    return cfg.clip_coef * (1.0 - (update - 1.0) / cfg.num_updates)


def make_optimizer(policy: nn.Module, cfg: Config) -> torch.optim.Adam:
    """One Adam over all parameters; core.adam_eps: eps 1e-5 (PyTorch's default 1e-8 when off). The fused
    kernel computes the same update as the plain one in fewer ops: a fifth of a small MLP's update time."""
    eps = cfg.adam_eps if cfg.on("core.adam_eps") else 1e-8
    return torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate, eps=eps, fused=True)


def minibatch_permutation(batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """core.minibatches: a fresh random permutation of the batch, whose consecutive equal slices are the epoch's
    minibatches."""
    return torch.randperm(batch_size, generator=generator, device=generator.device)


def minibatch_indices(batch_size: int, num_minibatches: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """``minibatch_permutation`` split into ``num_minibatches`` equal minibatches."""
    return minibatch_permutation(batch_size, generator).split(batch_size // num_minibatches)


def sequence_minibatch_indices(num_steps: int, num_envs: int, num_minibatches: int,
                               generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """lstm.sequential_minibatches: a fresh random permutation of the ENVS split into equal groups; a minibatch is
    every step of its group's envs, t-major (row t * num_envs + env, time in order, envs in the drawn order)."""
    envs = torch.randperm(num_envs, generator=generator, device=generator.device)
    steps = torch.arange(num_steps, device=generator.device)[:, None] * num_envs
    return tuple((steps + group).reshape(-1) for group in envs.split(num_envs // num_minibatches))


def rows_of(v: torch.Tensor, mb: torch.Tensor) -> torch.Tensor:
    """Rows ``mb`` of ``v``, in ``v``'s memory layout. index_select, not v[mb]: the same rows, and on the CPU about
    a ninth of the time for a minibatch of Atari frames (256 x 4 x 84 x 84 bytes: ~0.6 ms against ~5 ms).
    index_select returns a (N, C, H, W) layout whatever its input's; a channels-last batch of frames (see
    ``channels_last_frames``) is gathered as the (N, H, W, C) array it is in memory, which keeps its layout and is
    as fast."""
    if v.dim() == 4 and not v.is_contiguous() and v.is_contiguous(memory_format=torch.channels_last):
        return v.permute(0, 2, 3, 1).index_select(0, mb).permute(0, 3, 1, 2)
    return v.index_select(0, mb)


def channels_last_frames(policy: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch with its frames laid out channels-last once, where the policy's trunk convolves in that layout
    (``nets.NatureCNN``): the trunk would otherwise lay out every minibatch anew, ``update_epochs`` times per frame
    (a quarter of the copies with the atari preset's 4 epochs; ~7 ms a minibatch of 256 frames on the CPU). The
    same values."""
    if not getattr(getattr(policy, "trunk", None), "channels_last", False):
        return batch
    return {**batch, "obs": batch["obs"].contiguous(memory_format=torch.channels_last)}


def minibatch(batch: dict[str, torch.Tensor], mb: torch.Tensor, cfg: Config) -> dict[str, torch.Tensor]:
    """Rows ``mb`` of the batch, what ``policy.evaluate`` reads. A recurrent policy's batch holds ``start_state``:
    ``mb`` is then every step of some envs, t-major, as ``sequence_minibatch_indices`` draws them (its first rows
    are those envs at t = 0), and the minibatch holds their ``state`` before their first step: the state stored at
    the start of the rollout (lstm.reconstruct_states; off: zeros)."""
    rows = {k: rows_of(v, mb) for k, v in batch.items() if k != "start_state"}
    if "start_state" in batch:
        num_envs = batch["start_state"].shape[1]
        envs = mb[: len(mb) * num_envs // len(batch["starts"])]
        state = batch["start_state"][:, envs]
        rows["state"] = state if cfg.on("lstm.reconstruct_states") else torch.zeros_like(state)
    return rows


def normalize_advantages(adv: torch.Tensor) -> torch.Tensor:
    """core.adv_norm: per minibatch, population std (ddof 0) as numpy's in the reference."""
    return (adv - adv.mean()) / (adv.std(unbiased=False) + 1e-8)


def clip_gradients(params: list[torch.Tensor], cfg: Config) -> torch.Tensor:
    """core.grad_clip: rescale all gradients together so that their global L2 norm is at most max_grad_norm.
    Returns the norm before clipping, clipped or not: a logged statistic, which the trainer's non-finite guard
    reads."""
    if cfg.on("core.grad_clip"):
        return nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
    return nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])


def ppo_loss(new_logprob, old_logprob, entropy, new_value, old_value, advantages, returns, clip: float,
             cfg: Config) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The total loss of one minibatch and its debug statistics (core.debug_stats)."""
    if cfg.on("core.adv_norm"):
        advantages = normalize_advantages(advantages)
    logratio = new_logprob - old_logprob
    ratio = logratio.exp()

    # core.clipped_objective
    pg_unclipped = -advantages * ratio
    if cfg.on("core.clipped_objective"):
        policy_loss = torch.max(pg_unclipped, -advantages * ratio.clamp(1.0 - clip, 1.0 + clip)).mean()
    else:
        policy_loss = pg_unclipped.mean()

    # core.value_clipping: the value may move at most `clip` from its rollout-time estimate
    v_loss_unclipped = (new_value - returns) ** 2
    if cfg.on("core.value_clipping"):
        v_clipped = old_value + (new_value - old_value).clamp(-clip, clip)
        value_loss = 0.5 * torch.max(v_loss_unclipped, (v_clipped - returns) ** 2).mean()
    else:
        value_loss = 0.5 * v_loss_unclipped.mean()

    # core.entropy_bonus: one loss, one optimizer
    entropy_mean = entropy.mean()
    ent_coef = cfg.ent_coef if cfg.on("core.entropy_bonus") else 0.0
    loss = policy_loss - ent_coef * entropy_mean + cfg.vf_coef * value_loss

    with torch.no_grad():
        stats = {
            "policy_loss": policy_loss.detach(),
            "value_loss": value_loss.detach(),
            "entropy": entropy_mean.detach(),
            "approx_kl": ((ratio - 1.0) - logratio).mean(),
            "old_approx_kl": (-logratio).mean(),
            "approxkl_ppo2": 0.5 * (logratio**2).mean(),
            "clipfrac": ((ratio - 1.0).abs() > clip).float().mean(),
        }
    return loss, stats


def ppo_update(policy: nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor], cfg: Config,
               clip: float, generator: torch.Generator, precision: str = "fp32") -> dict[str, float]:
    """``update_epochs`` passes over the flattened batch (whole env sequences for a recurrent policy); returns the
    debug statistics and the gradient norm before clipping averaged over every minibatch that ran, plus the number
    of epochs run (fewer with aux.target_kl). ``precision`` bf16: the policy's forward under bf16 autocast (its
    backward follows it); the loss and everything after it in fp32."""
    batch_size = batch["advantages"].shape[0]
    device = batch["advantages"].device
    totals = torch.zeros(len(STAT_NAMES), device=device)
    grad_norms = torch.zeros((), device=device)
    minibatches_run = 0
    epochs_run = 0
    params = [p for group in optimizer.param_groups for p in group["params"]]
    batch = channels_last_frames(policy, batch)
    for _ in range(cfg.update_epochs):
        epoch_kl = torch.zeros((), device=device)
        if "start_state" in batch:
            num_envs = batch["start_state"].shape[1]
            indices = sequence_minibatch_indices(batch_size // num_envs, num_envs, cfg.minibatches_per_epoch,
                                                 generator)
        else:
            indices = minibatch_indices(batch_size, cfg.minibatches_per_epoch, generator)
        for mb in indices:
            rows = minibatch(batch, mb, cfg)
            with autocast(precision, device):
                new_logprob, entropy, new_value = policy.evaluate(rows)
            loss, stats = ppo_loss(new_logprob, rows["logprobs"], entropy, new_value, rows["values"],
                                   rows["advantages"], rows["returns"], clip, cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            average_gradients(params, cfg)  # aux.parallel_gradients: before the clipping, as the reference
            grad_norms += clip_gradients(params, cfg)
            optimizer.step()
            totals += torch.stack([stats[name] for name in STAT_NAMES])
            epoch_kl += stats["approx_kl"]
            minibatches_run += 1
        epochs_run += 1
        # aux.target_kl: stop after the epoch whose mean approx_kl exceeds the target (the mean over the ranks
        # where they average gradients: they must all stop together)
        if cfg.on("aux.target_kl") and average_scalar(epoch_kl.item() / len(indices), cfg) > cfg.target_kl:
            break
    result = dict(zip(STAT_NAMES, (totals / minibatches_run).tolist()))
    result["grad_norm"] = grad_norms.item() / minibatches_run
    result["epochs"] = epochs_run
    return result


def explained_variance(values: np.ndarray, returns: np.ndarray) -> float:
    """1 - Var[R - V] / Var[R] of the rollout's values and returns (population variances); NaN when the returns
    do not vary."""
    var_returns = returns.var()
    if var_returns == 0:
        return float("nan")
    return float(1.0 - (returns - values).var() / var_returns)
