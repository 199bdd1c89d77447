"""The PPO update of an MLP policy on the CPU three ways, on one preset's batch shapes: the numpy update (proximal's
fast path), the torch update as written (eager), and the torch update with ``torch.compile`` on its minibatch
step (the policy's training path and the loss compiled, so AOTAutograd compiles their backward too, and the fused
Adam step compiled).

All three run the same update on the same kind of batch (random observations; actions, log-probs and values the
policy's own, so ratios start at 1). They alternate update by update, so a change of machine load hits each alike,
after warm-up updates that leave compilation out of the clock. The median seconds per update and the ratios to the
numpy update are printed.

    python benchmarks/compile_update.py --preset classic --rounds 20
    python benchmarks/compile_update.py --preset mujoco --rounds 10
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np
import torch
from threadpoolctl import threadpool_limits

import proximal.update as update_mod
from proximal.carry import Carry
from proximal.config import preset
from proximal.fast_paths import make_update
from proximal.policy import make_policy
from proximal.update import make_optimizer

# the spaces of each preset's default env: CartPole-v1 and HalfCheetah-v5
SPACES = {
    "classic": (gym.spaces.Box(-np.inf, np.inf, (4,), np.float32), gym.spaces.Discrete(2)),
    "mujoco": (gym.spaces.Box(-np.inf, np.inf, (17,), np.float64), gym.spaces.Box(-1.0, 1.0, (6,), np.float32)),
}


def make_batch(policy, obs_size: int, batch_size: int, rng: np.random.Generator) -> dict:
    obs = torch.from_numpy(rng.normal(size=(batch_size, obs_size)).astype(np.float32))
    with torch.no_grad():
        actions, logprobs, values, _ = policy.act(obs, Carry(None), rng)
    return {"obs": obs, "actions": actions, "logprobs": logprobs, "values": values,
            "advantages": torch.from_numpy(rng.normal(size=batch_size).astype(np.float32)),
            "returns": torch.from_numpy(rng.normal(size=batch_size).astype(np.float32))}


def variants(name: str):
    """(label, policy, optimizer, update function) for the three ways, from the same initial parameters."""
    cfg = preset(name)
    observation_space, action_space = SPACES[name]
    out = []
    for label in ("numpy", "eager", "compiled"):
        torch.manual_seed(0)
        policy = make_policy(observation_space, action_space, cfg)
        optimizer = make_optimizer(policy, cfg)
        update = make_update(policy, optimizer, torch.device("cpu"), fast=label == "numpy")
        if label == "compiled":
            policy.evaluate = torch.compile(policy.evaluate)
            optimizer.step = torch.compile(optimizer.step)
        out.append((label, policy, optimizer, update))
    return cfg, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=SPACES, default="classic")
    parser.add_argument("--rounds", type=int, default=20, help="timed updates of each way (default: 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed updates of each way first (default: 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads (default: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg, ways = variants(args.preset)
    compiled_loss = torch.compile(update_mod.ppo_loss)
    eager_loss = update_mod.ppo_loss
    rng = np.random.default_rng(0)
    generator = torch.Generator().manual_seed(0)
    obs_size = SPACES[args.preset][0].shape[0]
    times: dict[str, list[float]] = {label: [] for label, *_ in ways}
    with threadpool_limits(args.threads, user_api="blas"):
        for round_ in range(args.warmup + args.rounds):
            for label, policy, optimizer, update in ways:
                batch = make_batch(policy, obs_size, cfg.batch_size, rng)
                update_mod.ppo_loss = compiled_loss if label == "compiled" else eager_loss
                start = time.perf_counter()
                update(policy, optimizer, batch, cfg, cfg.clip_coef, generator)
                if round_ >= args.warmup:
                    times[label].append(time.perf_counter() - start)
    update_mod.ppo_loss = eager_loss
    numpy_median = statistics.median(times["numpy"])
    print(f"preset {args.preset}: batch {cfg.batch_size}, {cfg.minibatches_per_epoch} minibatches x "
          f"{cfg.update_epochs} epochs, {args.threads} thread(s), {args.rounds} updates each")
    for label, seconds in times.items():
        median = statistics.median(seconds)
        print(f"  {label:9s} {median * 1000:8.2f} ms per update   {median / numpy_median:5.2f}x the numpy update")


if __name__ == "__main__":
    main()
