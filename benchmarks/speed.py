"""Training speed of proximal against a peer and against the machine's limit on one workload: a preset on one env
(the classic preset on CartPole-v1 by default; the mujoco preset on HalfCheetah-v5 with --preset mujoco --env
HalfCheetah-v5; the atari preset on Breakout with --preset atari --env BreakoutNoFrameskip-v4, where SB3 runs its own
Atari wrappers, ``make_atari_env`` with its default DummyVecEnv, and ``VecFrameStack``).

Every round runs, each in a fresh Python process, in an order that turns every round so that a change of machine
load hits all alike:
- proximal's training; its share of time in env stepping, inference, learning and the rest (its updates.csv);
- the env-only ceiling: the vector env the trainer builds for the preset (same maker, same wrappers, same worker
  processes), stepped the same number of steps with random actions drawn a rollout at a time, no policy;
- the peer: Stable-Baselines3's PPO by default (for the recurrent presets sb3-contrib's RecurrentPPO, one LSTM
  under both heads), or with --cleanrl DIR CleanRL's single-file script from that checkout (ppo.py for classic,
  ppo_continuous_action.py for mujoco, ppo_atari.py for atari) against ``python -m proximal train``, both timed as
  whole processes, imports and start-up included; or none with --no-peer (microrts, which no peer runs).
The in-process clocks (proximal, ceiling, SB3) cover env creation, model creation and training; process start and
imports are left out. The report gives each side's median and its best (fastest) round. With --paired, every round
also times the ceiling and a training on one clock in one process, alternating every update (``time_paired``): on
a host whose speed changes from second to second, the one fraction of the ceiling that holds still.

With --against PRESET, the other side is proximal too, with that preset on the same env (both warmed up by one
update outside the clock): the cost of a variant, such as the LSTM policy against the feedforward one.

    python benchmarks/speed.py --rounds 3 --steps 100000 [--json docs/benchmarks/results/speed_cartpole.json]
    python benchmarks/speed.py --preset mujoco --env HalfCheetah-v5 --rounds 3 --steps 40960
    python benchmarks/speed.py --preset atari --env BreakoutNoFrameskip-v4 --threads 2 --rounds 3 --steps 16384
    python benchmarks/speed.py --cleanrl ~/src/cleanrl --rounds 3 --steps 100000
    python benchmarks/speed.py --paired --preset mujoco --env HalfCheetah-v4 --rounds 4 --steps 40960
    python benchmarks/speed.py --preset classic-lstm --against classic --env CartPole-v1 --steps 98304
    python benchmarks/speed.py --preset classic-lstm --env proximal/CartPoleNoVelocity-v1 --steps 32768
    python benchmarks/speed.py --no-peer --preset microrts --env MicroRTS-basesWorkers16x16-randomBiasedAI --steps 2048
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

# Each side's worker imports only what it times. proximal, ceiling and sb3 are timed inside their process;
# cleanrl, and proximal-cli (``python -m proximal train``, its counterpart), as whole processes.
WORKERS = ("proximal", "ceiling", "paired", "sb3")
PARTS = ("env", "inference", "learn", "other")
# Per peer: the sides a round runs, the report's columns for it, and the JSON key of proximal's ratio against it
PEERS = {
    "none": (("proximal", "ceiling"), "", None),
    "sb3": (("proximal", "ceiling", "sb3"), f"{'SB3 SPS':>9}  {'proximal/SB3':>12}  ", "ratio_proximal_over_sb3"),
    # with CleanRL, proximal runs twice a round: timed inside (SPS, ceiling fraction, breakdown) and as a whole
    # process (the ratio against CleanRL's whole process)
    "cleanrl": (("proximal", "ceiling", "proximal-cli", "cleanrl"),
                f"{'proximal s':>10}  {'CleanRL s':>9}  {'CleanRL/proximal':>16}  ",
                "ratio_cleanrl_seconds_over_proximal_seconds"),
}
# CleanRL's single-file script for each preset it has a counterpart of
CLEANRL_SCRIPTS = {"classic": "ppo.py", "mujoco": "ppo_continuous_action.py", "atari": "ppo_atari.py"}


def split_spec(spec: str) -> tuple[str, str]:
    """A preset spec, NAME or NAME:PRECISION (``atari:bf16``), as (preset, precision); fp32 by default."""
    name, _, precision = spec.partition(":")
    return name, precision or "fp32"


def workload(preset_name: str, env_id: str, steps: int, seed: int, threads: int):
    """The preset (a spec, ``split_spec``) with the benchmark's env, length, seed and threads: the one source of the
    hyperparameters every side is given. Its precision applies to proximal; the peers train in fp32."""
    from proximal.config import preset

    name, precision = split_spec(preset_name)
    cfg = preset(name)
    cfg.precision = precision
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
    seconds = {part: sum(float(r[f"{part}_seconds"]) for r in rows) for part in PARTS}
    return elapsed, state.global_step, seconds


def random_actions(space, shape: tuple, rng):
    """``shape`` actions for ``space``, drawn in one call: uniform for Discrete and MultiDiscrete; for Box a
    standard normal clipped to the bounds, the actions of an untrained Gaussian policy (log std 0)."""
    import gymnasium as gym
    import numpy as np

    if isinstance(space, gym.spaces.Discrete):
        return space.start + rng.integers(0, space.n, size=shape)
    if isinstance(space, gym.spaces.MultiDiscrete):
        return space.start + rng.integers(0, space.nvec, size=(*shape, *space.nvec.shape))
    if isinstance(space, gym.spaces.Box):
        return np.clip(rng.standard_normal((*shape, *space.shape)), space.low, space.high).astype(space.dtype)
    sys.exit(f"the env-only ceiling draws Discrete, MultiDiscrete and Box actions, not {space}")


def time_ceiling(cfg) -> tuple[float, int, dict]:
    """The env-only ceiling: the vector env the trainer builds for ``cfg`` (``make_envs`` and ``normalize_envs``,
    as ``trainer._train`` calls them), reset with the run's seed and stepped ``cfg.num_updates`` rollouts of
    random actions, on the trainer's clock (creation to close)."""
    import time

    import numpy as np
    from threadpoolctl import threadpool_limits

    from proximal.envs import make_envs
    from proximal.envs.normalize import normalize_envs

    # the trainer steps its envs under the same BLAS-thread limit (the normalization's numpy)
    with threadpool_limits(cfg.torch_threads, user_api="blas"):
        start = time.perf_counter()
        envs, _ = normalize_envs(make_envs(cfg.env_id, cfg.num_envs, cfg=cfg), cfg)
        try:
            rng = np.random.default_rng(cfg.seed)
            envs.reset(seed=cfg.seed)
            for _ in range(cfg.num_updates):
                # a rollout's actions in one draw: per-step sampling would cost more than a CartPole step
                for actions in random_actions(envs.single_action_space, (cfg.num_steps, cfg.num_envs), rng):
                    envs.step(actions)
        finally:
            envs.close()
        elapsed = time.perf_counter() - start
    return elapsed, cfg.num_updates * cfg.batch_size, {}


def time_paired(cfg) -> tuple[float, int, dict]:
    """The ceiling and the training on one clock, alternating: after each update of a training, a second copy of
    the trainer's vector env (``time_ceiling``'s) steps one rollout of random actions. A machine whose speed
    changes from one second to the next (a busy neighbour on a shared host) then slows both alike. Steady state:
    the training's first update and its start-up are left out, and so is the twin's creation. Returns the
    training's seconds, its steps, and {"training", "ceiling"} seconds over the same number of rollouts."""
    import tempfile
    import time

    import numpy as np
    import torch.utils.tensorboard  # noqa: F401 - as time_proximal
    from proximal.envs import make_envs
    from proximal.envs.normalize import normalize_envs
    from proximal.trainer import train

    clock = time.perf_counter
    twin, _ = normalize_envs(make_envs(cfg.env_id, cfg.num_envs, cfg=cfg), cfg)
    twin.reset(seed=cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    seconds = {"training": 0.0, "ceiling": 0.0}
    last = 0.0

    def step_twin(info) -> None:
        # the training's n - 1 intervals between callbacks against the twin's first n - 1 rollouts
        nonlocal last
        now = clock()
        if info.update > 1:
            seconds["training"] += now - last
        if info.update < info.num_updates:  # inside the trainer's BLAS-thread limit, as its own envs
            for actions in random_actions(twin.single_action_space, (cfg.num_steps, cfg.num_envs), rng):
                twin.step(actions)
            seconds["ceiling"] += clock() - now
        last = clock()

    try:
        with tempfile.TemporaryDirectory(prefix="proximal-speed-") as run_dir:
            start = clock()
            state = train(cfg, run_dir, quiet=True, callbacks=[step_twin])
            elapsed = clock() - start - seconds["ceiling"]
    finally:
        twin.close()
    return elapsed, state.global_step, seconds


def sb3_peer(cfg) -> str:
    """The peer of a preset: SB3's PPO, or for a recurrent preset sb3-contrib's RecurrentPPO (the SB3 project's LSTM
    PPO): a feedforward PPO would not be the same work."""
    return "sb3-contrib RecurrentPPO" if cfg.lstm_size else "SB3 PPO"


def sb3_policy(cfg, atari: bool) -> tuple[type, str, dict]:
    """(algorithm class, policy name, policy kwargs) of the SB3 peer, shaped as the preset's network."""
    from torch import nn

    if not cfg.lstm_size:
        from stable_baselines3 import PPO

        # the Atari preset shares the Nature CNN between policy and value (SB3's CnnPolicy does the same)
        kwargs = {} if atari else dict(net_arch=dict(pi=list(cfg.hidden_sizes), vf=list(cfg.hidden_sizes)),
                                       activation_fn=nn.Tanh)
        return PPO, "CnnPolicy" if atari else "MlpPolicy", kwargs
    if cfg.lstm_mlp:
        sys.exit("RecurrentPPO feeds the observation (or the Nature CNN's features) straight into its LSTM: it has "
                 "no counterpart of lstm_mlp; run without it")
    try:
        from sb3_contrib import RecurrentPPO
    except ImportError:
        sys.exit(f"a recurrent preset ({cfg.preset}) runs against sb3-contrib's RecurrentPPO: pip install sb3-contrib "
                 "(or pip install -e '.[bench]')")
    # the reference's lstm and cnn_lstm networks: one LSTM under both heads, the heads straight on its output
    return RecurrentPPO, "CnnLstmPolicy" if atari else "MlpLstmPolicy", dict(
        lstm_hidden_size=cfg.lstm_size, n_lstm_layers=1, shared_lstm=True, enable_critic_lstm=False, net_arch=[],
        activation_fn=nn.Tanh)


def time_sb3(cfg) -> tuple[float, int, dict]:
    import time

    from stable_baselines3.common.env_util import make_atari_env, make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack, VecNormalize

    from proximal.envs import is_atari_id

    lr0 = cfg.learning_rate
    atari = is_atari_id(cfg.env_id)
    algorithm, policy, net_kwargs = sb3_policy(cfg, atari)
    start = time.perf_counter()
    if atari:
        # SB3's AtariWrapper: noop reset, max-and-skip, episodic life, fire reset, 84x84 gray, reward sign
        envs = make_atari_env(cfg.env_id, n_envs=cfg.num_envs, seed=cfg.seed)
        if cfg.on("atari.frame_stack"):
            envs = VecFrameStack(envs, n_stack=4)
    else:
        envs = make_vec_env(cfg.env_id, n_envs=cfg.num_envs, seed=cfg.seed, vec_env_cls=DummyVecEnv)
    if cfg.on("cont.obs_norm") or cfg.on("cont.reward_scaling"):
        # the reference's VecNormalize, which SB3 ships: running statistics, clipping at 10
        envs = VecNormalize(envs, norm_obs=cfg.on("cont.obs_norm"), norm_reward=cfg.on("cont.reward_scaling"),
                            clip_obs=10.0, clip_reward=10.0, gamma=cfg.gamma)
    model = algorithm(
        policy, envs, learning_rate=lambda progress_remaining: lr0 * progress_remaining,
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


def cleanrl_command(checkout: Path, cfg) -> list[str]:
    """The command line of CleanRL's script for ``cfg``'s preset, with its hyperparameters, env, steps and seed."""
    script = checkout / "cleanrl" / CLEANRL_SCRIPTS[cfg.preset]
    return [str(script), "--env-id", cfg.env_id, "--total-timesteps", str(cfg.total_steps), "--seed", str(cfg.seed),
            "--num-envs", str(cfg.num_envs), "--num-steps", str(cfg.num_steps),
            "--num-minibatches", str(cfg.minibatches_per_epoch), "--update-epochs", str(cfg.update_epochs),
            "--learning-rate", str(cfg.learning_rate), "--gamma", str(cfg.gamma), "--gae-lambda", str(cfg.gae_lambda),
            "--clip-coef", str(cfg.clip_coef), "--ent-coef", str(cfg.ent_coef), "--vf-coef", str(cfg.vf_coef),
            "--max-grad-norm", str(cfg.max_grad_norm), "--no-cuda"]


def run_cleanrl(command: list[str]) -> None:
    """CleanRL's script (``command``: its path and arguments) run as ``__main__`` in this process, on the installed
    gymnasium. Its scripts are written for gymnasium 0.29: the names gymnasium 1 renamed are given back, and
    ale-py's ids registered, so that the script runs unchanged (its own code, wrappers and defaults)."""
    import runpy

    import gymnasium as gym

    wrappers = gym.wrappers
    wrappers.GrayScaleObservation = getattr(wrappers, "GrayScaleObservation", wrappers.GrayscaleObservation)
    wrappers.FrameStack = getattr(wrappers, "FrameStack", wrappers.FrameStackObservation)
    transform = wrappers.TransformObservation

    def transform_observation(env, func, observation_space=None):
        # gymnasium 1 requires the space; the scripts' clip keeps the env's own
        return transform(env, func, observation_space)

    wrappers.TransformObservation = transform_observation
    if Path(command[0]).name == CLEANRL_SCRIPTS["atari"]:
        import ale_py

        gym.register_envs(ale_py)
    sys.argv = command
    sys.path.insert(0, str(Path(command[0]).parent.parent))  # the checkout's cleanrl_utils
    runpy.run_path(command[0], run_name="__main__")


def worker(side: str, preset_name: str, env_id: str, steps: int, seed: int, threads: int, warmup: bool) -> None:
    """One timed run in this process; prints its result as the last line of stdout."""
    import gymnasium as gym
    import torch

    import proximal.envs  # noqa: F401 - registers proximal's own env ids

    torch.set_num_threads(threads)
    # the first torch.optim.Adam imports torch._dynamo (about 1 s here); both libraries build one inside the
    # clock, so import it now, like every other import
    import torch._dynamo  # noqa: F401
    from proximal.envs import is_atari_id
    from proximal.envs.microrts import import_microrts, is_microrts_id

    # the first gym.make imports the env's module; pay that outside the clock, for every side
    if is_atari_id(env_id):
        import cv2  # noqa: F401
    if is_microrts_id(env_id):  # not a gymnasium id: its package, imported as the vector env will
        import_microrts()
    else:
        gym.make(env_id).close()
    cfg = workload(preset_name, env_id, steps, seed, threads)
    timed = {"proximal": lambda: time_proximal(cfg, warmup), "ceiling": lambda: time_ceiling(cfg),
             "paired": lambda: time_paired(cfg), "sb3": lambda: time_sb3(cfg)}[side]
    elapsed, done, seconds = timed()
    print(json.dumps({"seconds": elapsed, "steps": done, "sps": done / elapsed, "parts": seconds}))


def whole_process(cmd: list[str], steps: int, env: dict | None = None, cwd: str | None = None) -> dict:
    """Run ``cmd`` as a fresh process, timed from its start to its exit."""
    import time

    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
    return {"seconds": elapsed, "steps": steps, "sps": steps / elapsed, "parts": {}}


def run_side(side: str, preset_name: str, env_id: str, steps: int, seed: int, threads: int, warmup: bool,
             cleanrl: Path | None = None) -> dict:
    import tempfile

    if side == "proximal-cli":
        with tempfile.TemporaryDirectory(prefix="proximal-speed-") as run_dir:
            name, precision = split_spec(preset_name)
            return whole_process([sys.executable, "-m", "proximal", "train", "--preset", name, "--precision",
                                  precision, "--env", env_id,
                                  "--total-steps", str(steps), "--seed", str(seed), "--torch-threads", str(threads),
                                  "--device", "cpu", "--checkpoint-every", "0", "--quiet",
                                  "--run-dir", str(Path(run_dir) / "run")], steps)
    if side == "cleanrl":
        # this script runs CleanRL's without importing proximal first, which would add to CleanRL's time
        cmd = [sys.executable, str(Path(__file__).resolve()), "--cleanrl-script", "--",
               *cleanrl_command(cleanrl, workload(preset_name, env_id, steps, seed, threads))]
        # CleanRL sets no thread count: torch takes it from OMP_NUM_THREADS; it writes runs/ in its working dir
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        with tempfile.TemporaryDirectory(prefix="cleanrl-speed-") as cwd:
            return whole_process(cmd, steps, env, cwd)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", side, "--preset", preset_name,
           "--env", env_id, "--steps", str(steps), "--seed", str(seed), "--threads", str(threads)]
    cmd += ["--warmup"] if warmup else []
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{side} run failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def shares(parts: dict) -> dict:
    """proximal's time by part, as fractions of their sum."""
    total = sum(parts.values()) or 1.0
    return {p: parts.get(p, 0.0) / total for p in PARTS}


def result_shares(parts: dict) -> str:
    return " ".join(f"{p} {100 * share:.0f}%" for p, share in shares(parts).items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100_000,
                        help="env steps per training, rounded down to whole batches (default: 100000)")
    parser.add_argument("--rounds", type=int, default=3, help="trainings of each side (default: 3)")
    parser.add_argument("--preset", default="classic",
                        help="proximal preset every side runs, NAME or NAME:PRECISION for proximal's precision, "
                             "e.g. atari:bf16 (default: classic)")
    parser.add_argument("--env", default="CartPole-v1", help="gymnasium env id (default: CartPole-v1)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads on every side (default: 1)")
    parser.add_argument("--cleanrl", type=Path, metavar="DIR",
                        help="a CleanRL checkout: its script is the peer instead of SB3, timed as a whole process "
                             "against `python -m proximal train` (presets classic, mujoco, atari; needs its "
                             "dependency tyro)")
    parser.add_argument("--no-peer", action="store_true",
                        help="proximal and its ceiling only, for a preset no peer runs (microrts: neither SB3 nor "
                             "CleanRL's scripts take its masked grid actions)")
    parser.add_argument("--against", metavar="PRESET",
                        help="time proximal with this preset as the other side, instead of a peer")
    parser.add_argument("--paired", action="store_true",
                        help="also measure the fraction of the ceiling with both on one clock, alternating every "
                             "update in one process (a third run a round): for machines whose speed changes from "
                             "second to second")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the results to this JSON file")
    parser.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--cleanrl-script", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("command", nargs="*", help=argparse.SUPPRESS)  # after --: CleanRL's script and arguments
    args = parser.parse_args()

    if args.cleanrl_script:
        run_cleanrl(args.command)
        return
    if args.worker:
        worker(args.worker, args.preset, args.env, args.steps, args.seed, args.threads, args.warmup)
        return
    if args.against:
        compare_presets(args)
        return
    if args.no_peer and args.cleanrl is not None:
        sys.exit("--no-peer and --cleanrl exclude each other: leave one out")
    if args.cleanrl is not None:
        if split_spec(args.preset)[0] not in CLEANRL_SCRIPTS:
            sys.exit(f"--cleanrl compares the presets {', '.join(CLEANRL_SCRIPTS)} (CleanRL's "
                     f"{', '.join(CLEANRL_SCRIPTS.values())}); choose one of them with --preset")
        script = args.cleanrl / "cleanrl" / CLEANRL_SCRIPTS[split_spec(args.preset)[0]]
        if not script.is_file():
            sys.exit(f"{script} does not exist: give --cleanrl the root of a CleanRL checkout")
        args.cleanrl = args.cleanrl.resolve()
    # a paired run times the training between its updates: it needs two of them
    steps = whole_batches(args, args.preset, updates=2 if args.paired else 1)
    peer = "none" if args.no_peer else "sb3" if args.cleanrl is None else "cleanrl"
    sides, columns, ratio_key = PEERS[peer]
    sides += ("paired",) if args.paired else ()
    cfg = workload(args.preset, args.env, steps, args.seed, args.threads)
    if peer == "sb3":
        peer_version = f"{sb3_peer(cfg)}, stable-baselines3 {version('stable-baselines3')}"
        peer_version += f", sb3-contrib {version('sb3-contrib')}" if cfg.lstm_size else ""
    elif peer == "cleanrl":
        peer_version = f"CleanRL {CLEANRL_SCRIPTS[split_spec(args.preset)[0]]} from {args.cleanrl}"
    else:
        peer_version = "no peer"

    print("=" * 78)
    print("THE MACHINE MUST BE IDLE while this runs: no tests, no training, no other benchmark.")
    print("Any other load slows the sides unevenly and makes the numbers meaningless.")
    print("=" * 78)
    print(f"load average now: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (should be near 0)")
    print(f"{args.env}, {args.preset} preset, {steps} steps per training, {args.rounds} round(s), "
          f"{args.threads} torch thread(s); proximal {version('proximal')}, {peer_version}, torch {version('torch')}\n")

    runs = {side: [] for side in sides}
    parts = {}
    print(f"{'round':>6}  {'proximal SPS':>12}  {'ceiling SPS':>11}  {'of ceiling':>10}  {columns}proximal's time")
    for r in range(args.rounds):
        # no side always goes first (caches, drifting load); the seed changes per round, shared by all
        for side in sides[r % len(sides):] + sides[:r % len(sides)]:
            result = run_side(side, args.preset, args.env, steps, r + 1, args.threads, False, args.cleanrl)
            runs[side].append(result)
            if side == "proximal":
                for part, value in result["parts"].items():
                    parts[part] = parts.get(part, 0.0) + value
        share = result_shares(parts)
        if args.paired:
            share += f"  paired {paired_fraction(runs['paired'][-1]):.2f}"
        print(row(f"{r + 1}", {side: results[-1] for side, results in runs.items()}, peer, share), flush=True)
    medians = {side: {key: statistics.median(run[key] for run in results) for key in ("sps", "seconds")}
               for side, results in runs.items()}
    # a slowed-down machine only ever adds time: each side's fastest round is its speed without the interference
    bests = {side: {"sps": max(run["sps"] for run in results), "seconds": min(run["seconds"] for run in results)}
             for side, results in runs.items()}
    print(row("median", medians, peer, ""))
    print(row("best", bests, peer, ""))
    fraction, ratio = summary(medians, peer, "medians")
    best_fraction, best_ratio = summary(bests, peer, "best rounds")
    paired = [paired_fraction(run) for run in runs.get("paired", [])]
    if paired:
        print(f"\npaired, one clock (each round's ceiling seconds / training seconds over the same rollouts): "
              f"{' '.join(f'{f:.2f}' for f in paired)}; median {statistics.median(paired):.2f}")
    spread = max(run["seconds"] for run in runs["ceiling"]) / bests["ceiling"]["seconds"]
    if spread > 1.2:
        print(f"the ceiling's slowest round took {spread:.1f}x its fastest: the machine's speed changed during the "
              f"run; rerun when it is steadier, or with more rounds and read the best rounds")
    print(f"proximal's time, all rounds: {result_shares(parts)}")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "env": args.env, "preset": args.preset, "steps": steps, "rounds": args.rounds, "threads": args.threads,
            "peer": peer, "sps": {side: [run["sps"] for run in results] for side, results in runs.items()},
            "seconds": {side: [run["seconds"] for run in results] for side, results in runs.items()},
            "median_sps": {side: m["sps"] for side, m in medians.items()},
            "median_seconds": {side: m["seconds"] for side, m in medians.items()},
            "fraction_of_ceiling": fraction, **({ratio_key: ratio} if ratio_key else {}),
            "best_sps": {side: b["sps"] for side, b in bests.items()},
            "best_seconds": {side: b["seconds"] for side, b in bests.items()},
            "best_fraction_of_ceiling": best_fraction,
            **({"best_" + ratio_key: best_ratio} if ratio_key else {}),
            **({"paired_fractions": paired, "paired_fraction_of_ceiling": statistics.median(paired)} if paired
               else {}),
            "proximal_seconds_by_part": parts, "proximal_shares": shares(parts),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            "peer_name": sb3_peer(cfg) if peer == "sb3" else "CleanRL" if peer == "cleanrl" else None,
            "versions": {name: version(name) for name in ("proximal", "torch", "gymnasium")
                         + (("stable-baselines3",) if peer == "sb3" else ())
                         + (("sb3-contrib",) if peer == "sb3" and cfg.lstm_size else ())},
        }, indent=2) + "\n")
        print(f"wrote {args.json}")


def paired_fraction(run: dict) -> float:
    """A paired run's fraction of the ceiling: its twin's seconds over the training's, for the same rollouts."""
    return run["parts"]["ceiling"] / run["parts"]["training"]


def summary(stats: dict, peer: str, label: str | None = None) -> tuple[float, float | None]:
    """(proximal's fraction of the ceiling, its ratio against the peer, None without one) from one statistic of
    every side, printed under ``label`` where given."""
    fraction = stats["proximal"]["sps"] / stats["ceiling"]["sps"]
    if peer == "none":
        if label is not None:
            print(f"\n{label}: proximal's training SPS / env-only ceiling SPS {fraction:.2f}")
        return fraction, None
    if peer == "sb3":
        ratio, against = stats["proximal"]["sps"] / stats["sb3"]["sps"], "proximal / SB3 SPS"
    else:
        ratio = stats["cleanrl"]["seconds"] / stats["proximal-cli"]["seconds"]
        against = "CleanRL's whole-process time / proximal's"
    if label is not None:
        print(f"\n{label}: proximal's training SPS / env-only ceiling SPS {fraction:.2f}; {against} {ratio:.2f}")
    return fraction, ratio


def row(label: str, results: dict, peer: str, share: str) -> str:
    """One line of the table: proximal's SPS against the ceiling's, and the peer's ratio."""
    p, c = results["proximal"]["sps"], results["ceiling"]["sps"]
    head = f"{label:>6}  {p:>12.0f}  {c:>11.0f}  {p / c:>10.2f}"
    if peer == "none":
        return f"{head}  {share}"
    if peer == "sb3":
        s = results["sb3"]["sps"]
        return f"{head}  {s:>9.0f}  {p / s:>12.2f}  {share}"
    whole, cleanrl = results["proximal-cli"]["seconds"], results["cleanrl"]["seconds"]
    return f"{head}  {whole:>10.2f}  {cleanrl:>9.2f}  {cleanrl / whole:>16.2f}  {share}"


def whole_batches(args, *presets: str, updates: int = 1) -> int:
    """--steps rounded down to whole batches of every preset, so that each side runs whole updates (SB3 would
    finish the last batch, proximal drop it); at least ``updates`` of them."""
    import math

    batch = math.lcm(*(workload(p, args.env, args.steps, 1, args.threads).batch_size for p in presets))
    steps = args.steps - args.steps % batch
    if steps < updates * batch or args.rounds <= 0 or args.threads <= 0:
        sys.exit(f"--steps must be at least {updates} batch(es) ({updates * batch} steps) of every preset here; "
                 "--rounds and --threads must be positive")
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
            sps[side].append(run_side("proximal", side, args.env, steps, r + 1, args.threads, True)["sps"])
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


def run_script(main_function, name: str) -> None:
    """Run a benchmark's ``main_function``; bad input (an unknown preset or env id) ends it with that one line and
    a non-zero exit, not a traceback."""
    try:
        main_function()
    except Exception as e:
        import gymnasium as gym  # here, not at the top: every side imports only what it times

        from proximal.errors import UserError

        if isinstance(e, (UserError, gym.error.Error)):
            sys.exit(f"{name}: {e}")
        raise


if __name__ == "__main__":
    run_script(main, "speed.py")
