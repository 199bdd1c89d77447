"""The training loop and the trainer state: everything that must survive a restart lives in ``TrainerState``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from threadpoolctl import threadpool_limits

from . import checkpoint
from .advantages import compute_advantages
from .config import Config, env_worker_count, validate
from .envs import VecEnv, action_masks, is_atari_id, make_envs
from .envs.normalize import Normalizer, normalize_envs
from .errors import UserError
from .carry import Carry
from .fast_paths import make_actor, make_update
from .logs import RunLogger, WandbRun, check_tracking
from .policy import ActorCritic, make_policy
from .rollout import Rollout, RolloutTimes, collect_rollout
from .spaces import space_to_dict
from .update import clip_range, explained_variance, learning_rate, make_optimizer
from .video import VIDEO_DIR, check_video_support


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(name)


@dataclass
class TrainerState:
    """Everything that must survive a restart, and what a checkpoint saves: the config, the networks and their
    optimizer, the random generators, the counters, the carry (the observation the next rollout starts from and
    what the policy carries with it) and the normalization statistics. ``rollout`` is preallocated storage,
    refilled by every rollout and not saved."""

    cfg: Config
    policy: ActorCritic
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # minibatch shuffling
    rng: np.random.Generator  # sampling noise of the rollout
    rollout: Rollout
    obs: np.ndarray  # (N, *obs_shape): the observation the next rollout starts from
    carry: Carry  # its episode starts, action masks and recurrent state
    update: int = 0  # updates completed
    global_step: int = 0
    # observation/reward normalization statistics (cont.obs_norm, cont.reward_scaling), which the envs' wrapper
    # reads and updates as it normalizes; None where both are off
    normalizer: Normalizer | None = None

    def checkpoint(self, envs: VecEnv) -> dict:
        return {
            "config": self.cfg.to_dict(),
            "update": self.update,
            "global_step": self.global_step,
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "rng": self.rng.bit_generator.state,
            "obs": torch.from_numpy(np.array(self.obs)),
            "carry": self.carry.to_checkpoint(),
            "normalizer": self.normalizer.state_dict() if self.normalizer is not None else {},
            # the spaces the policy was built for: evaluation and inference rebuild it without the env
            "spaces": {"observation": space_to_dict(envs.single_observation_space),
                       "action": space_to_dict(envs.single_action_space)},
            "env": envs.get_state(),
        }


def new_state(cfg: Config, envs: VecEnv, device: torch.device, normalizer: Normalizer | None = None) -> TrainerState:
    """A fresh trainer state; the envs are reset with the run's seed. ``normalizer`` is the one ``envs`` normalize
    with (``envs.normalize.normalize_envs``): its statistics become part of the state. The policy is masked
    (aux.action_masking) where the detail is on and the envs provide action masks."""
    obs = envs.reset(seed=cfg.seed)
    masks = action_masks(envs) if cfg.on("aux.action_masking") else None
    torch.manual_seed(cfg.seed)
    policy = make_policy(envs.single_observation_space, envs.single_action_space, cfg,
                         masked=masks is not None).to(device)
    generator = torch.Generator(device=device)
    generator.manual_seed(cfg.seed)
    rollout = Rollout.allocate(cfg.num_steps, cfg.num_envs, envs.single_observation_space.shape,
                               policy.dist.action_shape, policy.dist.action_dtype, envs.single_observation_space.dtype,
                               mask_size=None if masks is None else masks.shape[1])
    # no episode start flagged at the first observation, as the reference's runner (the LSTM state is zero anyway)
    carry = Carry(start=np.zeros(cfg.num_envs, np.float32), mask=masks, state=policy.initial_state(cfg.num_envs))
    return TrainerState(cfg, policy, make_optimizer(policy, cfg), generator, np.random.default_rng(cfg.seed), rollout,
                        obs, carry, normalizer=normalizer)


def restore_state(state: TrainerState, payload: dict, envs: VecEnv) -> bool:
    """Load a checkpoint into a freshly built state. Returns whether the envs continue exactly (their state
    was captured); if not they have been reset and every env starts a new episode."""
    state.policy.load_state_dict(payload["policy"])
    state.optimizer.load_state_dict(payload["optimizer"])
    state.generator.set_state(payload["generator"])
    state.rng.bit_generator.state = payload["rng"]
    state.update, state.global_step = payload["update"], payload["global_step"]
    if state.normalizer is not None:  # in place: the envs' wrapper holds this object
        state.normalizer.load_state_dict(payload["normalizer"])
    device = next(state.policy.parameters()).device
    carry = Carry.from_checkpoint(payload["carry"], device)
    if payload["env"] is not None:
        envs.set_state(payload["env"])
        state.obs, state.carry = payload["obs"].numpy().copy(), carry
        return True
    state.obs = envs.reset(seed=state.cfg.seed + state.update)
    state.carry = Carry(start=np.ones(state.cfg.num_envs, np.float32),
                        mask=None if carry.mask is None else action_masks(envs), state=state.carry.state)
    return False


def default_run_dir(cfg: Config) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.env_id.replace('/', '-')}__{cfg.preset}__{cfg.seed}__{stamp}"


def summary(cfg: Config, device: torch.device) -> str:
    return (f"{cfg.env_id} | preset {cfg.preset} | seed {cfg.seed} | device {device} | batch {cfg.batch_size} "
            f"({cfg.num_envs} envs x {cfg.num_steps} steps) | minibatch {cfg.minibatch_size} "
            f"({cfg.minibatches_per_epoch} per epoch, {cfg.update_epochs} epochs) | {cfg.num_updates} updates "
            f"= {cfg.num_updates * cfg.batch_size} steps")


@dataclass
class UpdateInfo:
    """What a callback of ``train`` receives after every update: the update's statistics (the scalars the logs
    write: losses, approx_kl, SPS, ...), the update number (1-based) of ``num_updates``, the env steps so far, the
    episodes that ended during its rollout as (global step, return, length), the live policy, the run's
    normalizer (None where the run does not normalize), config and spaces (``agent.Agent.from_update`` makes an
    agent of them). Read the policy, do not train it."""

    stats: dict[str, float]
    update: int
    num_updates: int
    global_step: int
    episodes: list[tuple[int, float, int]]
    policy: ActorCritic
    normalizer: Normalizer | None
    cfg: Config
    observation_space: gym.Space
    action_space: gym.Space


# a callback returning False stops the run after this update, with a checkpoint (None or True: go on)
Callback = Callable[[UpdateInfo], bool | None]


def train(cfg: Config | None, run_dir: Path | None = None, *, resume: bool = False, quiet: bool = False,
          max_updates: int | None = None, device: str | None = None, env_fn: Callable | None = None,
          callbacks: Sequence[Callback] = ()) -> TrainerState:
    """Train, writing everything to ``run_dir``. With ``resume``, continue the run in ``run_dir`` from its newest
    checkpoint with the run's own config. ``max_updates`` stops (with a checkpoint) after that many updates of
    this call, as if the run were killed there. ``env_fn``: the zero-argument function that makes the envs, where
    ``cfg.env_id`` records one (``envs.make.make_envs``). ``callbacks`` are called after every update; one
    returning False stops the run there, with a checkpoint."""
    payload = None
    if resume:
        payload = checkpoint.load(checkpoint.latest(run_dir))
        cfg = Config.from_dict(payload["config"])
        if device is not None:
            cfg.device = device
    validate(cfg)
    if is_atari_id(cfg.env_id) and not cfg.preset.startswith("atari"):
        # other presets switch every Atari detail off: raw 210x160 RGB frames, raw rewards, no frame skip
        raise UserError(f"'{cfg.env_id}' is an Atari game: train it with --preset atari (or atari-2017), which "
                        f"applies the reference's preprocessing; the '{cfg.preset}' preset has none of it")
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
    if not resume and any((run_dir / "checkpoints").glob("*.pt")):
        raise UserError(f"run directory '{run_dir}' already holds a run; continue it with --resume {run_dir} "
                        "or choose another --run-dir")
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    dev = resolve_device(cfg.device)
    check_extras(cfg)
    video_dir = str(run_dir / VIDEO_DIR) if cfg.capture_video else None
    # envs and policy first: an unknown env or unsupported space must fail before anything is written
    envs, normalizer = normalize_envs(make_envs(cfg.env_id, cfg.num_envs, cfg=cfg, factory=env_fn,
                                                video_dir=video_dir), cfg)
    tracker = None
    try:
        state = new_state(cfg, envs, dev, normalizer)
        exact = restore_state(state, payload, envs) if payload is not None else True
        if state.update >= cfg.num_updates:
            if not quiet:
                print(f"the run in '{run_dir}' is already complete (update {state.update} of {cfg.num_updates}); "
                      "nothing to do")
            return state
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        if cfg.track:
            tracker = WandbRun(run_dir, cfg.to_dict(), cfg.wandb_project, cfg.wandb_entity)
        logger = RunLogger(run_dir, state.global_step, cfg.num_updates * cfg.batch_size, quiet, tracker)
        if not quiet:
            logger.write(summary(cfg, dev))
            logger.write(f"run directory: {run_dir}")
            if payload is not None:
                logger.write(f"resumed at update {state.update} (step {state.global_step})"
                             + ("" if exact else "; the envs' state could not be captured, so every env starts a "
                                                 "new episode and the run will differ from an uninterrupted one"))
        # numpy's BLAS (the fast paths) would otherwise start a thread per core and spin between calls: two runs
        # side by side on 2 cores then train at a quarter of their speed
        blas_threads = threadpool_limits(cfg.torch_threads, user_api="blas") if cfg.torch_threads else nullcontext()
        try:
            with blas_threads:
                _loop(state, envs, logger, run_dir, max_updates, callbacks)
        finally:
            logger.close()
    finally:
        envs.close()
        if tracker is not None:
            tracker.close()
    return state


def check_extras(cfg: Config) -> None:
    """The optional packages a run's options need, before anything is built (one message each)."""
    if cfg.track:
        check_tracking()
    if cfg.capture_video:
        check_video_support()


class TorchThreads:
    """Run a block with ``n`` torch threads, then restore the previous count (reusable)."""

    def __init__(self, n: int):
        self.n, self.saved = n, None

    def __enter__(self):
        self.saved = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.saved)


def _loop(state: TrainerState, envs: VecEnv, logger: RunLogger, run_dir: Path, max_updates: int | None,
          callbacks: Sequence[Callback] = ()) -> None:
    cfg, buf = state.cfg, state.rollout
    device = next(state.policy.parameters()).device
    actor = make_actor(state.policy, device, cfg.fast_paths)
    ppo_update = make_update(state.policy, state.optimizer, device, cfg.fast_paths)
    clock = time.perf_counter
    start_step, start_time = state.global_step, clock()
    # the time accounted for by the updates so far: each update's seconds (env, inference, learn, other) add up
    # to the wall time since the previous update's mark, so its "other" holds the logging and checkpoint before it
    mark = start_time
    first = state.update + 1
    # While worker processes step the envs, inference runs on one thread: more would contend with the workers for
    # the cores (torch's idle threads spin), and a batch of num_envs observations gains little from them.
    rollout_threads = TorchThreads(1) if env_worker_count(cfg) > 1 else nullcontext()
    for update in range(first, cfg.num_updates + 1):
        lr = learning_rate(cfg, update)
        for group in state.optimizer.param_groups:
            group["lr"] = lr
        clip = clip_range(cfg, update)

        times = RolloutTimes()
        with rollout_threads:
            state.obs, state.carry, state.global_step, episodes = collect_rollout(
                envs, actor, buf, state.obs, state.carry, state.rng, state.global_step, cfg, times)
        learn_start = clock()
        advantages, returns = compute_advantages(buf, cfg)
        batch = buf.training_batch(advantages, returns, device)
        stats = ppo_update(state.policy, state.optimizer, batch, cfg, clip, state.generator)
        ev = explained_variance(batch["values"], batch["returns"])
        now = clock()
        learn = now - learn_start
        state.update = update

        sps = (state.global_step - start_step) / (now - start_time)
        logger.episodes(episodes)
        scalars = {
            "learning_rate": lr, "clip_range": clip, "SPS": sps, **stats, "explained_variance": ev,
            "env_seconds": times.env, "inference_seconds": times.inference, "learn_seconds": learn,
            "other_seconds": (now - mark) - times.env - times.inference - learn,
        }
        logger.update(state.global_step, update, scalars)
        info = UpdateInfo(scalars, update, cfg.num_updates, state.global_step, episodes, state.policy,
                          state.normalizer, cfg, envs.single_observation_space, envs.single_action_space)
        # every callback sees every update, even after one has asked to stop
        stop = any(answer is False for answer in [callback(info) for callback in callbacks])
        mark = now
        last = (stop or update == cfg.num_updates
                or (max_updates is not None and update - first + 1 >= max_updates))
        if last or (cfg.checkpoint_every and update % cfg.checkpoint_every == 0):
            checkpoint.save(state.checkpoint(envs), checkpoint.checkpoint_path(run_dir, update))
        if last:
            break
