"""How close an MLP preset's training can get to its env-only ceiling with proximal's numerics: the time of the
networks' matrix products measured inside a real training, next to the ceiling and the training itself.

A training on the numpy fast paths (``numpy_actor``, ``numpy_update``) spends its time in four kinds of work:
stepping the envs, the matrix products of the networks (every Linear layer's forward, and in the update its
backward), the other numpy operations (activations, the loss and its gradient, Adam) and Python around them. The
first two cannot shrink without changing the envs or the numbers: the products run in numpy's BLAS, at close to the
core's peak for these shapes. Their sum is the floor of any implementation with the same numerics, compiled or not,
and ``ceiling / (ceiling + products)`` the largest fraction of the ceiling such a training could reach.

Each round trains the preset (``benchmarks/speed.py``'s workload: one torch and BLAS thread, no periodic
checkpoint) with every float32 product of ``numpy_ops`` timed (its ``_product``, which every layer's forward and
backward calls, and the bias gradients and softmax sums), then times the env-only ceiling as ``speed.py`` does.
Medians over the rounds are printed; run it on an idle machine.

    python benchmarks/mlp_floor.py --rounds 3 [--preset classic --env CartPole-v1 --steps 100000] [--json out.json]
    python benchmarks/mlp_floor.py --preset mujoco --env HalfCheetah-v4 --steps 40960
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import gymnasium as gym
import torch
import torch._dynamo  # noqa: F401 - the first Adam imports it (~1 s): outside every clock, as in speed.py

import proximal.numpy_ops
from proximal.trainer import train
from speed import run_script, time_ceiling, workload


def timed_training(cfg) -> dict:
    """Seconds of the whole training and of its matrix products."""
    plain = proximal.numpy_ops._product
    spent = [0.0]
    clock = time.perf_counter

    def product(*args, **kwargs):
        start = clock()
        result = plain(*args, **kwargs)
        spent[0] += clock() - start
        return result

    proximal.numpy_ops._product = product
    try:
        with tempfile.TemporaryDirectory(prefix="proximal-floor-") as run_dir:
            start = clock()
            train(cfg, run_dir, quiet=True)
            seconds = clock() - start
    finally:
        proximal.numpy_ops._product = plain
    return {"training": seconds, "products": spent[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="classic", help="an MLP preset on the numpy fast paths (default: classic)")
    parser.add_argument("--env", default="CartPole-v1", help="gymnasium env id (default: CartPole-v1)")
    parser.add_argument("--steps", type=int, default=100_000, help="env steps per training (default: 100000)")
    parser.add_argument("--rounds", type=int, default=3, help="trainings and ceilings (default: 3)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", metavar="OUT", help="also write the rounds and medians to this file")
    args = parser.parse_args()

    torch.set_num_threads(1)
    gym.make(args.env).close()  # the env's module imported outside the clocks
    cfg = workload(args.preset, args.env, args.steps, args.seed, 1)
    rounds = []
    for _ in range(args.rounds):
        measured = timed_training(cfg)
        measured["ceiling"] = time_ceiling(cfg)[0]
        rounds.append(measured)
    if not all(r["products"] for r in rounds):
        sys.exit(f"the {args.preset} preset on {args.env} does not train on the numpy fast paths (an MLP policy on the "
                 "CPU, fast_paths on): there are no products of theirs to time")
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    steps = cfg.num_updates * cfg.batch_size
    fraction = median["ceiling"] / median["training"]
    best = median["ceiling"] / (median["ceiling"] + median["products"])
    print(f"{args.env}, {args.preset} preset, {steps} steps, {args.rounds} round(s), one thread; medians:")
    print(f"  training            {median['training']:6.2f} s  ({steps / median['training']:,.0f} SPS)")
    print(f"  env-only ceiling    {median['ceiling']:6.2f} s  ({steps / median['ceiling']:,.0f} SPS)")
    print(f"  matrix products     {median['products']:6.2f} s  (inside the training)")
    print(f"  everything else     {median['training'] - median['ceiling'] - median['products']:6.2f} s  (the other "
          "numpy operations, Python, and what the envs take beyond the ceiling inside the training)")
    print(f"fraction of the ceiling: {fraction:.2f} now; at most {best:.2f} with the same numerics (ceiling plus "
          "products)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": args.env, "preset": args.preset, "steps": steps, "rounds": rounds, "median": median,
                       "fraction_of_ceiling": fraction, "largest_fraction": best}, f, indent=2)
            f.write("\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    run_script(main, "mlp_floor.py")
