"""Training speed of proximal against Stable-Baselines3's PPO on one workload: a preset on one env (the classic
preset on CartPole-v1 by default; the mujoco preset on HalfCheetah-v5 with --preset mujoco --env HalfCheetah-v5;
the atari preset on Breakout with --preset atari --env BreakoutNoFrameskip-v4, where SB3 runs its own Atari
wrappers, ``make_atari_env`` with its default DummyVecEnv, and ``VecFrameStack``).

Each training runs in a fresh Python process, and the two libraries alternate (their order swapped every round)
so that a change of machine load hits both alike. The clock covers env creation, model creation and training,
on both sides; process start and imports are left out.

With --against PRESET, the other side is proximal too, with that preset on the same env (both warmed up by one
update outside the clock): the cost of a variant, such as the LSTM policy against the feedforward one.

    python benchmarks/speed.py --rounds 3 --steps 100000 [--json docs/benchmarks/results/speed_cartpole.json]
    python benchmarks/speed.py --preset mujoco --env HalfCheetah-v5 --rounds 3 --steps 40960
    python benchmarks/speed.py --preset atari --env BreakoutNoFrameskip-v4 --threads 2 --rounds 3 --steps 16384
    python benchmarks/speed.py --preset classic-lstm --against classic --env CartPole-v1 --steps 98304

proximal's share of time in env stepping, inference, learning and the rest (its updates.csv) is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

# The libraries timed are imported inside the functions that use them, so each worker loads only its own.
LIBRARIES = ("proximal", "sb3")


def workload(preset_name: str, env_id: str, steps: int, seed: int, threads: int):
    """The preset with the benchmark's env, length, seed and threads: the one source of the hyperparameters both
    libraries are given."""
    from proximal.config import preset

    cfg = preset(preset_name)
    cfg.env_id, cfg.total_steps, cfg.seed, cfg.torch_threads = env_id, steps, seed, threads
    cfg.device = "cpu"
    # only the final checkpoint: SB3 saves nothing during learn(), so the periodic ones would be extra work
    cfg.checkpoint_every = 0
    return cfg


def time_proximal(cfg, warmup: bool = False) -> tuple[float, int, dict]:
    import csv
    import dataclasses
    import tempfile
    import time

    # train() imports the TensorBoard writer lazily, while SB3 imports it with its own modules: import it now so
    # that neither clock holds an import
    import torch.utils.tensorboard  # noqa: F401
    from proximal.trainer import train

    if warmup:  # one update: the kernels' first-call costs (oneDNN's LSTM primitives) stay outside the clock
        with tempfile.TemporaryDirectory(prefix="proximal-warmup-") as run_dir:
            train(dataclasses.replace(cfg, total_steps=cfg.batch_size), run_dir, quiet=True)
    with tempfile.TemporaryDirectory(prefix="proximal-speed-") as run_dir:
        start = time.perf_counter()
        state = train(cfg, run_dir, quiet=True)
        elapsed = time.perf_counter() - start
        with open(Path(run_dir) / "updates.csv") as f:
            rows = list(csv.DictReader(f))
    seconds = {part: sum(float(r[f"{part}_seconds"]) for r in rows) for part in ("env", "inference", "learn", "other")}
    return elapsed, state.global_step, seconds


def time_sb3(cfg) -> tuple[float, int, dict]:
    import time

    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_atari_env, make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack, VecNormalize
    from torch import nn

    from proximal.envs import is_atari_id

    lr0 = cfg.learning_rate
    atari = is_atari_id(cfg.env_id)
    start = time.perf_counter()
    if atari:
        # SB3's AtariWrapper: noop reset, max-and-skip, episodic life, fire reset, 84x84 gray, reward sign
        envs = VecFrameStack(make_atari_env(cfg.env_id, n_envs=cfg.num_envs, seed=cfg.seed), n_stack=4)
    else:
        envs = make_vec_env(cfg.env_id, n_envs=cfg.num_envs, seed=cfg.seed, vec_env_cls=DummyVecEnv)
    if cfg.on("cont.obs_norm") or cfg.on("cont.reward_scaling"):
        # the reference's VecNormalize, which SB3 ships: running statistics, clipping at 10
        envs = VecNormalize(envs, norm_obs=cfg.on("cont.obs_norm"), norm_reward=cfg.on("cont.reward_scaling"),
                            clip_obs=10.0, clip_reward=10.0, gamma=cfg.gamma)
    # the Atari preset shares the Nature CNN between policy and value (SB3's CnnPolicy does the same)
    net_kwargs = {} if atari else dict(net_arch=dict(pi=list(cfg.hidden_sizes), vf=list(cfg.hidden_sizes)),
                                       activation_fn=nn.Tanh)
    model = PPO(
        "CnnPolicy" if atari else "MlpPolicy", envs, learning_rate=lambda progress_remaining: lr0 * progress_remaining,
        n_steps=cfg.num_steps, batch_size=cfg.minibatch_size, n_epochs=cfg.update_epochs, gamma=cfg.gamma,
        gae_lambda=cfg.gae_lambda, clip_range=cfg.clip_coef,
        # proximal clips the value loss too (core.value_clipping); SB3 does only when given a range
        clip_range_vf=cfg.clip_coef,
        ent_coef=cfg.ent_coef, vf_coef=cfg.vf_coef, max_grad_norm=cfg.max_grad_norm,
        policy_kwargs=dict(**net_kwargs, ortho_init=True),
        seed=cfg.seed, device="cpu", verbose=0,
    )
    model.learn(total_timesteps=cfg.total_steps)
    envs.close()
    return time.perf_counter() - start, model.num_timesteps, {}


def worker(library: str, preset_name: str, env_id: str, steps: int, seed: int, threads: int, warmup: bool) -> None:
    """One timed training in this process; prints its result as the last line of stdout."""
    import gymnasium as gym
    import torch

    import proximal.envs  # noqa: F401 - registers proximal's own env ids

    torch.set_num_threads(threads)
    # the first torch.optim.Adam imports torch._dynamo (about 1 s here); both libraries build one inside the
    # clock, so import it now, like every other import
    import torch._dynamo  # noqa: F401
    from proximal.envs import is_atari_id

    # the first gym.make imports the env's module; pay that outside the clock, for both libraries
    if is_atari_id(env_id):
        import cv2  # noqa: F401
    gym.make(env_id).close()
    cfg = workload(preset_name, env_id, steps, seed, threads)
    elapsed, done, seconds = time_proximal(cfg, warmup) if library == "proximal" else time_sb3(cfg)
    print(json.dumps({"seconds": elapsed, "steps": done, "sps": done / elapsed, "parts": seconds}))


def run_worker(library: str, preset_name: str, env_id: str, steps: int, seed: int, threads: int,
               warmup: bool) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", library, "--preset", preset_name,
           "--env", env_id, "--steps", str(steps), "--seed", str(seed), "--threads", str(threads)]
    cmd += ["--warmup"] if warmup else []
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{library} run failed (exit {result.returncode}):\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def result_shares(parts: dict) -> str:
    """proximal's time so far by part, as percentages of their sum."""
    total = sum(parts.values()) or 1.0
    return " ".join(f"{p} {100 * parts[p] / total:.0f}%" for p in ("env", "inference", "learn", "other"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100_000,
                        help="env steps per training, rounded down to whole batches (default: 100000)")
    parser.add_argument("--rounds", type=int, default=3, help="trainings of each library (default: 3)")
    parser.add_argument("--preset", default="classic", help="proximal preset both run (default: classic)")
    parser.add_argument("--env", default="CartPole-v1", help="gymnasium env id (default: CartPole-v1)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads in both (default: 1)")
    parser.add_argument("--against", metavar="PRESET",
                        help="time proximal with this preset as the other side, instead of SB3")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the results to this JSON file")
    parser.add_argument("--worker", choices=LIBRARIES, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        worker(args.worker, args.preset, args.env, args.steps, args.seed, args.threads, args.warmup)
        return
    if args.against:
        compare_presets(args)
        return

    steps = whole_batches(args, args.preset)

    print("=" * 78)
    print("THE MACHINE MUST BE IDLE while this runs: no tests, no training, no other benchmark.")
    print("Any other load slows both libraries unevenly and makes the numbers meaningless.")
    print("=" * 78)
    print(f"load average now: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (should be near 0)")
    print(f"{args.env}, {args.preset} preset, {steps} steps per training, {args.rounds} round(s), "
          f"{args.threads} torch thread(s); proximal {version('proximal')}, "
          f"stable-baselines3 {version('stable-baselines3')}, torch {version('torch')}\n")

    sps = {lib: [] for lib in LIBRARIES}
    parts = {}
    print(f"{'round':>6}  {'proximal SPS':>12}  {'SB3 SPS':>9}  {'ratio':>6}  proximal's time")
    for r in range(args.rounds):
        # neither library always goes first (caches, drifting load); the seed changes per round, shared by both
        order = LIBRARIES if r % 2 == 0 else LIBRARIES[::-1]
        for lib in order:
            result = run_worker(lib, args.preset, args.env, steps, r + 1, args.threads, False)
            sps[lib].append(result["sps"])
            if lib == "proximal":
                for part, value in result["parts"].items():
                    parts[part] = parts.get(part, 0.0) + value
        p, s = sps["proximal"][-1], sps["sb3"][-1]
        share = result_shares(parts)
        print(f"{r + 1:>6}  {p:>12.0f}  {s:>9.0f}  {p / s:>6.2f}  {share}", flush=True)
    medians = {lib: statistics.median(values) for lib, values in sps.items()}
    ratio = medians["proximal"] / medians["sb3"]
    print(f"{'median':>6}  {medians['proximal']:>12.0f}  {medians['sb3']:>9.0f}  {ratio:>6.2f}")
    print(f"\nproximal / SB3 (ratio of medians): {ratio:.2f}")
    print(f"proximal's time, all rounds: {result_shares(parts)}")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "env": args.env, "preset": args.preset, "steps": steps, "rounds": args.rounds, "threads": args.threads,
            "sps": sps, "median_sps": medians, "ratio_proximal_over_sb3": ratio,
            "proximal_seconds_by_part": parts,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            "versions": {name: version(name) for name in ("proximal", "stable-baselines3", "torch", "gymnasium")},
        }, indent=2) + "\n")
        print(f"wrote {args.json}")


def whole_batches(args, *presets: str) -> int:
    """--steps rounded down to whole batches of every preset, so that each side runs whole updates (SB3 would
    finish the last batch, proximal drop it)."""
    import math

    batch = math.lcm(*(workload(p, args.env, args.steps, 1, args.threads).batch_size for p in presets))
    steps = args.steps - args.steps % batch
    if steps <= 0 or args.rounds <= 0 or args.threads <= 0:
        sys.exit(f"--steps must be at least one batch ({batch}) of every preset; --rounds and --threads must be "
                 "positive")
    return steps


def compare_presets(args) -> None:
    """proximal with --preset against proximal with --against, alternating, on the same env and steps."""
    sides = (args.preset, args.against)
    steps = whole_batches(args, *sides)
    print(f"load average now: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; both sides alternate, so load "
          f"hits both alike, but an idle machine gives steadier numbers")
    print(f"{args.env}, {steps} steps per training, {args.rounds} round(s), {args.threads} torch thread(s), each "
          f"warmed up by one update\n")
    sps = {side: [] for side in sides}
    print(f"{'round':>6}  {sides[0] + ' SPS':>18}  {sides[1] + ' SPS':>18}  {'ratio':>6}")
    for r in range(args.rounds):
        for side in (sides if r % 2 == 0 else sides[::-1]):
            sps[side].append(run_worker("proximal", side, args.env, steps, r + 1, args.threads, True)["sps"])
        a, b = sps[sides[0]][-1], sps[sides[1]][-1]
        print(f"{r + 1:>6}  {a:>18.0f}  {b:>18.0f}  {a / b:>6.2f}", flush=True)
    medians = {side: statistics.median(values) for side, values in sps.items()}
    ratio = medians[sides[0]] / medians[sides[1]]
    print(f"{'median':>6}  {medians[sides[0]]:>18.0f}  {medians[sides[1]]:>18.0f}  {ratio:>6.2f}")
    print(f"\n{sides[0]} / {sides[1]} (ratio of medians): {ratio:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "env": args.env, "presets": list(sides), "steps": steps, "rounds": args.rounds, "threads": args.threads,
            "sps": sps, "median_sps": medians, "ratio": ratio,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            "versions": {name: version(name) for name in ("proximal", "torch", "gymnasium")},
        }, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
