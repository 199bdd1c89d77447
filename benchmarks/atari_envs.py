"""Env-only stepping speed of the Atari backends (--backend python, envpool, ale) on one game, through the VecEnv
contract the rollout sees (frame stack, sign rewards, statistics and same-step autoreset included), with the
atari preset's details and seeded random actions; no policy, no training.

The backends alternate in one process (their order rotated every round) so that a change of machine load hits
all alike; each round times ``--steps`` vector steps of each after a reset. Reported: the median steps/s (env
steps, summed over the envs) and each backend's ratio to the Python chain.

    python benchmarks/atari_envs.py --rounds 5 --steps 500 [--json docs/benchmarks/results/atari_envs.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from proximal.config import BACKENDS, preset
from proximal.envs import make_envs


def steps_per_second(envs, actions: np.ndarray, seed: int) -> float:
    envs.reset(seed=seed)
    start = time.perf_counter()
    for row in actions:
        envs.step(row)
    return actions.size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="BreakoutNoFrameskip-v4", help="Atari id (default: BreakoutNoFrameskip-v4)")
    parser.add_argument("--num-envs", type=int, default=8, help="envs per vector env (default: 8)")
    parser.add_argument("--steps", type=int, default=500, help="vector steps per timing (default: 500)")
    parser.add_argument("--rounds", type=int, default=5, help="timings of each backend (default: 5)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma separated (default: all)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the results to this JSON file")
    args = parser.parse_args()

    backends = args.backends.split(",")
    details = preset("atari").details
    envs = {b: make_envs(args.env, args.num_envs, details=details, backend=b) for b in backends}
    n_actions = envs[backends[0]].single_action_space.n
    actions = np.random.default_rng(0).integers(n_actions, size=(args.steps, args.num_envs))
    sps = {b: [] for b in backends}
    for r in range(args.rounds):
        for b in backends[r % len(backends):] + backends[:r % len(backends)]:
            sps[b].append(steps_per_second(envs[b], actions, seed=r))
    for e in envs.values():
        e.close()

    median = {b: statistics.median(v) for b, v in sps.items()}
    base = median.get("python")
    print(f"{args.env}, {args.num_envs} envs, {args.rounds} rounds of {args.steps} vector steps, "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()})")
    for b in backends:
        ratio = f"  {median[b] / base:.2f}x python" if base else ""
        print(f"  {b:8s} {median[b]:8.0f} steps/s  (rounds: {', '.join(f'{v:.0f}' for v in sps[b])}){ratio}")
    if args.json:
        result = {"env": args.env, "num_envs": args.num_envs, "steps": args.steps, "rounds": args.rounds,
                  "cpus": os.cpu_count(), "steps_per_second": sps, "median": median,
                  "ratio_to_python": {b: median[b] / base for b in backends} if base else None}
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
