"""Where an Atari run's time goes: the emulators, the rest of the vector env (worker processes, transfers,
frame stack) and the policy's inference, in fp32 and bf16; and one minibatch step of the update in each.

Each part is timed on its own over the same number of agent steps of the preset's envs (random actions where no
policy is involved):

- ``emulators``: the reference's per-env chain (ale-py and the wrappers) stepped in this process, one env after
  another, divided by the number of worker processes the preset uses: the time the vector env would take if
  splitting the envs over processes cost nothing. This is the floor for the env side;
- ``vector env``: proximal's Atari vector env as training builds it (workers, transfers, the frame stack);
- ``frame stack``: the stack's step alone, on frames already in memory;
- ``inference fp32`` / ``inference bf16``: the policy's ``act`` on a batch of stacked observations;
- ``rollout fp32`` / ``rollout bf16``: ``collect_rollout`` with the policy, what training runs;
- ``minibatch step``: ``update.ppo_update`` for one minibatch of the preset's size (forward, backward, clipping,
  Adam), on one thread, in milliseconds.

    python benchmarks/atari_rollout.py --env BreakoutNoFrameskip-v4 --steps 4096 [--json out.json]

Seconds per 1000 agent steps are printed for each part. Run it on an idle machine: it times in this process.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace

import numpy as np
import torch

from proximal.config import preset
from proximal.envs import make_envs
from proximal.envs.atari import make_atari_env, make_frame_stack
from proximal.envs.make import env_options
from proximal.fast_paths import make_actor
from proximal.rollout import Rollout, collect_rollout
from proximal.trainer import TorchThreads, new_state
from proximal.update import ppo_update
from speed import random_actions  # the speed benchmark's, beside this file


def per_thousand(seconds: float, steps: int) -> float:
    return 1000.0 * seconds / steps


def time_emulators(cfg, steps: int, workers: int) -> float:
    envs = [make_atari_env(cfg.env_id, dict(cfg.details)) for _ in range(cfg.num_envs)]
    actions = random_actions(envs[0].action_space, (steps // cfg.num_envs, cfg.num_envs), np.random.default_rng(0))
    for i, env in enumerate(envs):
        env.reset(seed=i)
    start = time.perf_counter()
    for step_actions in actions:
        for env, action in zip(envs, step_actions):
            _, _, terminated, truncated, _ = env.step(int(action))
            if terminated or truncated:
                env.reset()
    elapsed = time.perf_counter() - start
    for env in envs:
        env.close()
    return elapsed / workers


def time_vector_env(cfg, steps: int) -> tuple[float, np.ndarray]:
    envs = make_envs(cfg.env_id, cfg.num_envs, cfg=cfg)
    envs.reset(seed=0)
    actions = random_actions(envs.single_action_space, (steps // cfg.num_envs, cfg.num_envs),
                             np.random.default_rng(0))
    start = time.perf_counter()
    for a in actions:
        step = envs.step(a)
    elapsed = time.perf_counter() - start
    envs.close()
    return elapsed, step.obs


def time_stack(cfg, steps: int) -> float:
    stack = make_frame_stack(cfg.num_envs, dict(cfg.details))
    frames = np.random.default_rng(0).integers(0, 255, (cfg.num_envs, 84, 84), dtype=np.uint8)
    stack.reset(frames)
    done = np.zeros(cfg.num_envs, bool)
    start = time.perf_counter()
    for _ in range(steps // cfg.num_envs):
        stack.step(frames, done, frames)
    return time.perf_counter() - start


def time_inference(state, obs: np.ndarray, steps: int, precision: str) -> float:
    actor = make_actor(state.policy, torch.device("cpu"), precision=precision)
    rng = np.random.default_rng(0)
    actor.act(obs, state.carry, rng)  # oneDNN's first call builds its kernels
    # inside the rollout's context, as collect_rollout calls the actor: bf16 casts the weights once there
    with actor.rollout():
        start = time.perf_counter()
        for _ in range(steps // len(obs)):
            actor.act(obs, state.carry, rng)
        return time.perf_counter() - start


def time_minibatch_step(cfg, state, obs: np.ndarray, precision: str, repeats: int = 5) -> float:
    """Seconds of one minibatch step of the update (the median of ``repeats`` after one warm-up)."""
    n = cfg.minibatch_size
    frames = torch.from_numpy(np.resize(obs, (n, *obs.shape[1:])))
    with torch.no_grad():
        logprobs, _, values = state.policy.evaluate({"obs": frames, "actions": torch.zeros(n, dtype=torch.long)})
    batch = {"obs": frames, "actions": torch.zeros(n, dtype=torch.long), "logprobs": logprobs, "values": values,
             "advantages": torch.randn(n), "returns": torch.randn(n)}
    one = replace(cfg, update_epochs=1, num_minibatches=1, num_envs=1, num_steps=n)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        ppo_update(state.policy, state.optimizer, batch, one, 0.1, state.generator, precision)
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def time_rollout(cfg, steps: int, precision: str) -> float:
    envs = make_envs(cfg.env_id, cfg.num_envs, cfg=cfg)
    state = new_state(cfg, envs, torch.device("cpu"))
    actor = make_actor(state.policy, torch.device("cpu"), precision=precision)
    space = envs.single_observation_space
    buf = Rollout.allocate(steps // cfg.num_envs, cfg.num_envs, space.shape, obs_dtype=space.dtype)
    collect_rollout(envs, actor, Rollout.allocate(4, cfg.num_envs, space.shape, obs_dtype=space.dtype),
                    state.obs, state.carry, state.rng, 0, cfg)  # warm-up
    start = time.perf_counter()
    collect_rollout(envs, actor, buf, state.obs, state.carry, state.rng, 0, cfg)
    elapsed = time.perf_counter() - start
    envs.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="BreakoutNoFrameskip-v4")
    parser.add_argument("--preset", default="atari")
    parser.add_argument("--steps", type=int, default=4096, help="agent steps per part (all envs together)")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()

    cfg = preset(args.preset)
    cfg.env_id, cfg.device = args.env, "cpu"
    workers = max(1, min(env_options(cfg).workers, cfg.num_envs))
    seconds = {"emulators": time_emulators(cfg, args.steps, workers)}
    seconds["vector env"], obs = time_vector_env(cfg, args.steps)
    seconds["frame stack"] = time_stack(cfg, args.steps)
    envs = make_envs(cfg.env_id, cfg.num_envs, cfg=cfg)
    state = new_state(cfg, envs, torch.device("cpu"))
    envs.close()
    # inference runs on one thread while the workers step the emulators, as in training (trainer._loop)
    with TorchThreads(1) if workers > 1 else TorchThreads(torch.get_num_threads()):
        for precision in ("fp32", "bf16"):
            seconds[f"inference {precision}"] = time_inference(state, obs, args.steps, precision)
        for precision in ("fp32", "bf16"):
            seconds[f"rollout {precision}"] = time_rollout(cfg, args.steps, precision)
    with TorchThreads(1):
        step_ms = {p: 1000.0 * time_minibatch_step(cfg, state, obs, p) for p in ("fp32", "bf16")}

    print(f"{cfg.env_id}, preset {args.preset}: {cfg.num_envs} envs, {workers} worker process(es), "
          f"{args.steps} agent steps per part, {os.cpu_count()} CPUs")
    print(f"{'part':<18} {'s / 1000 steps':>15}")
    for part, s in seconds.items():
        print(f"{part:<18} {per_thousand(s, args.steps):>15.3f}")
    overhead = seconds["vector env"] - seconds["emulators"]
    print(f"vector env beyond the emulators: {per_thousand(overhead, args.steps):.3f} s / 1000 steps "
          f"({overhead / seconds['vector env']:.0%} of the vector env)")
    print(f"one minibatch step of the update ({cfg.minibatch_size} frames, one thread): "
          f"fp32 {step_ms['fp32']:.1f} ms, bf16 {step_ms['bf16']:.1f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": cfg.env_id, "preset": args.preset, "num_envs": cfg.num_envs, "workers": workers,
                       "steps": args.steps, "cpus": os.cpu_count(),
                       "seconds_per_1000_steps": {k: per_thousand(v, args.steps) for k, v in seconds.items()},
                       "minibatch_step_ms": step_ms},
                      f, indent=2)


if __name__ == "__main__":
    main()
