"""The training loop and the trainer state: everything that must survive a restart lives in ``TrainerState``."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from threadpoolctl import threadpool_limits

from . import checkpoint, distributed, rundir
from .advantages import compute_advantages
from .config import Config, check_memory, validate
from .envs import VecEnv, action_masks, envs_step_elsewhere, is_atari_id, make_envs
from .envs.normalize import Normalizer, normalize_envs, observation_dtype
from .errors import RunFailure, UserError
from .carry import Carry
from .fast_paths import make_actor, make_update, resolve_precision
from .logs import RunLogger, WandbRun, check_tracking
from .outputs import write_whole
from .policy import ActorCritic, make_policy
from .rollout import Rollout, RolloutTimes, collect_rollout
from .spaces import is_image_space, space_to_dict
from .update import clip_range, explained_variance, learning_rate, make_optimizer
from .video import VIDEO_DIR, check_video_support


def resolve_device(name: str) -> torch.device:
    """The device of cpu, cuda, cuda:N or auto (cuda where torch sees a GPU). Anything else is a UserError, checked
    before anything is read: a name torch does not know, a kind it names but proximal does not run on (xpu, mps,
    meta), a GPU index it does not have; torch's own errors for these are tracebacks."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise UserError(f"device '{name}' is not one proximal runs on: use cpu, cuda, cuda:N or auto")
    count = torch.cuda.device_count()
    if device.type == "cuda" and device.index is not None and device.index >= count:
        fix = "use a lower index, cuda or auto" if count else "use cpu or auto"
        raise UserError(f"device '{name}': torch sees {count} CUDA device(s); {fix}")
    if device.type == "cuda" and not count:
        raise UserError("--device cuda was asked for but torch sees no CUDA device; use --device cpu or auto")
    return device


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
    run_id: str | None = None  # of the run directory (rundir): a checkpoint names the run it belongs to
    # the networks' arithmetic, resolved from cfg.precision for this machine at the start (fast_paths): not saved,
    # the checkpoints are the same in every precision
    precision: str = "fp32"

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
            "run_id": self.run_id,
        }


def new_state(cfg: Config, envs: VecEnv, device: torch.device, normalizer: Normalizer | None = None,
              seed: int | None = None) -> TrainerState:
    """A fresh trainer state; the envs are reset with ``seed`` (default: the run's seed; under torchrun each rank
    has its own, ``distributed.Context.seed``), which also seeds the generators. ``normalizer`` is the one ``envs``
    normalize with (``envs.normalize.normalize_envs``): its statistics become part of the state. The policy is
    masked (aux.action_masking) where the detail is on and the envs provide action masks."""
    seed = cfg.seed if seed is None else seed
    obs = envs.reset(seed=seed)
    masks = action_masks(envs) if cfg.on("aux.action_masking") else None
    torch.manual_seed(seed)
    policy = make_policy(envs.single_observation_space, envs.single_action_space, cfg,
                         masked=masks is not None).to(device)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    rollout = Rollout.allocate(cfg.num_steps, cfg.num_envs, envs.single_observation_space.shape,
                               policy.dist.action_shape, policy.dist.action_dtype, observation_dtype(envs),
                               mask_size=None if masks is None else masks.shape[1])
    # no episode start flagged at the first observation, as the reference's runner (the LSTM state is zero anyway)
    carry = Carry(start=np.zeros(cfg.num_envs, np.float32), mask=masks, state=policy.initial_state(cfg.num_envs))
    return TrainerState(cfg, policy, make_optimizer(policy, cfg), generator, np.random.default_rng(seed), rollout,
                        obs, carry, normalizer=normalizer)


def restore_state(state: TrainerState, payload: dict, envs: VecEnv, seed: int | None = None) -> bool:
    """Load a checkpoint into a freshly built state. Returns whether the envs continue exactly (their state
    was captured); if not they have been reset (from ``seed``, default the run's, plus the update count) and every
    env starts a new episode."""
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
    state.obs = envs.reset(seed=(state.cfg.seed if seed is None else seed) + state.update)
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
          max_updates: int | None = None, device: str | None = None, torch_threads: int | None = None,
          env_fn: Callable | None = None, callbacks: Sequence[Callback] = ()) -> TrainerState:
    """Train, writing everything to ``run_dir``. With ``resume``, continue the run in ``run_dir`` from its newest
    checkpoint with the run's own config, on ``device`` and with ``torch_threads`` where given (where it runs, not
    what it learns: bench gives each run its share of this call's cores). ``max_updates`` stops (with a
    checkpoint) after that many updates of this call, as if the run were killed there. ``env_fn``: the zero-argument function that makes the envs, where
    ``cfg.env_id`` records one (``envs.make.make_envs``). ``callbacks`` are called after every update (on every
    rank under torchrun); one returning False stops the run there, with a checkpoint. Under torchrun every rank
    calls it: see ``distributed``."""
    payload = None
    if resume:
        payload = checkpoint.load(checkpoint.latest(run_dir))
        cfg = Config.from_dict(payload["config"])
        if device is not None:
            cfg.device = device
        if torch_threads is not None:
            cfg.torch_threads = torch_threads
    validate(cfg)
    if is_atari_id(cfg.env_id) and not cfg.preset.startswith("atari"):
        # other presets switch every Atari detail off: raw 210x160 RGB frames, raw rewards, no frame skip
        raise UserError(f"'{cfg.env_id}' is an Atari game: train it with --preset atari (or atari-2017, atari-lstm, "
                        "atari-lstm-1frame), which apply the reference's preprocessing; the "
                        f"'{cfg.preset}' preset has none of it")
    ctx = distributed.launched()
    if payload is not None:
        payload = distributed.rank_payload(payload, ctx)
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
    rundir.check_location(run_dir, fresh=not resume)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    check_extras(cfg)
    ctx, dev, created = distributed.start(cfg, resolve_device(cfg.device))
    try:
        state = _train(cfg, run_dir, payload, resume, ctx, dev, quiet, max_updates, env_fn, callbacks)
        distributed.wait_for_all(cfg, "training")
        return state
    finally:
        distributed.stop(created)


def _train(cfg: Config, run_dir: Path, payload: dict | None, resume: bool, ctx: distributed.Context,
           dev: torch.device, quiet: bool, max_updates: int | None, env_fn: Callable | None,
           callbacks: Sequence[Callback]) -> TrainerState:
    # envs and policy first: an unknown env or unsupported space must fail before anything is written. Videos are
    # of rank 0's env 0
    video_dir = str(run_dir / VIDEO_DIR) if cfg.capture_video and ctx.root else None
    envs, normalizer = normalize_envs(make_envs(cfg.env_id, cfg.num_envs, cfg=cfg, factory=env_fn,
                                                video_dir=video_dir), cfg)
    tracker = None
    try:
        space = envs.single_observation_space
        if cfg.preset.startswith("atari") and not is_image_space(space):
            # the Atari preprocessing (atari.*) applies to Atari games only, and its settings are a CNN's
            raise UserError(f"the {cfg.preset} preset is for Atari games (or image observations): '{cfg.env_id}' "
                            f"gives observations of shape {space.shape} ({space.dtype}); train it with --preset "
                            "classic or mujoco")
        check_memory(cfg, int(np.prod(space.shape)), observation_dtype(envs).itemsize)
        state = new_state(cfg, envs, dev, normalizer, seed=ctx.seed(cfg.seed))
        exact = restore_state(state, payload, envs, ctx.seed(cfg.seed)) if payload is not None else True
        state.precision, precision_line = resolve_precision(state.policy, dev, cfg.fast_paths, cfg.precision)
        if payload is None:
            distributed.broadcast_parameters(state.policy, cfg)
        if state.update >= cfg.num_updates:
            if not quiet and ctx.root:
                print(f"the run in '{run_dir}' is already complete (update {state.update} of {cfg.num_updates}); "
                      "nothing to do")
            return state
        # rank 0 alone holds the run directory's lock and writes in it; every rank refuses a finished run, so that
        # none waits for a rank 0 that stopped
        with rundir.owned(run_dir) if ctx.root else nullcontext():
            if not resume and checkpoint.finished(run_dir):
                # a directory whose run was killed before its first checkpoint holds nothing to resume: reused
                raise UserError(f"run directory '{run_dir}' already holds a run; continue it with --resume "
                                f"{run_dir} or choose another --run-dir")
            try:
                if ctx.root:
                    # a resumed run whose id file was lost keeps the id its checkpoints carry
                    state.run_id = ((rundir.run_id(run_dir) if resume else None)
                                    or rundir.new_run_id(run_dir, payload["run_id"] if resume else None))
                    if cfg.track:
                        tracker = WandbRun(run_dir, cfg.to_dict(), cfg.wandb_project, cfg.wandb_entity)
                _run(state, envs, run_dir, payload, exact, dev, quiet, max_updates, callbacks, ctx, tracker,
                     precision_line)
            except OSError as e:  # a full disk, a file system gone read-only, an I/O error
                then = (f"when it can be written again, continue with: {distributed.resume_command(run_dir)}"
                        if checkpoint.finished(run_dir) else "start the run again when it can be written")
                raise RunFailure(f"cannot write '{e.filename or run_dir}' ({e.strerror}); {_last_good(run_dir)}; "
                                 f"{then}") from None
    finally:
        envs.close()
        if tracker is not None:
            # the tracker's last writes (a video, on a disk that filled up) must not hide the error under way
            with suppress(Exception) if sys.exc_info()[0] is not None else nullcontext():
                tracker.close()
    return state


def _last_good(run_dir: Path) -> str:
    found = checkpoint.finished(run_dir)
    return f"the last good checkpoint is {found[-1][1]}" if found else "no checkpoint was written"


def _run(state: TrainerState, envs: VecEnv, run_dir: Path, payload: dict | None, exact: bool, dev: torch.device,
         quiet: bool, max_updates: int | None, callbacks: Sequence[Callback], ctx: distributed.Context,
         tracker: WandbRun | None, precision_line: str) -> None:
    cfg = state.cfg
    if ctx.root:
        write_whole(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n", durable=True)
        logger = RunLogger(run_dir, state.global_step, cfg.num_updates * cfg.batch_size * ctx.world_size, quiet,
                           tracker)
    else:
        logger = distributed.Silent()
    if not quiet:
        logger.write(summary(cfg, dev))
        logger.write(f"precision: {precision_line}")
        if ctx.parallel:
            logger.write(distributed.summary(cfg, ctx))
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


def _nonfinite_rollout(buf: Rollout, start_step: int, next_obs: np.ndarray | None = None) -> str | None:
    """What the envs returned that is not finite (observations before rewards, each first by step then env); None
    if all is. One sum per array (in float64, which float32 values cannot overflow): the search for the culprit
    runs only when a sum is not finite."""
    num_envs = buf.rewards.shape[1]
    # opt.truncation_bootstrap: a truncated episode's final observation shows only through the value computed from
    # it (the policy's parameters were checked finite after the previous update)
    arrays = [("observation", buf.obs, 0, ""), ("reward", buf.rewards[..., None], 1, ""),
              ("final observation of a truncated episode", buf.final_values[..., None], 1, "value ")]
    if next_obs is not None:
        arrays.append(("observation", next_obs[None], len(buf.obs), ""))
    for what, array, first, shown in arrays:
        if array.dtype.kind != "f" or np.isfinite(array.sum(dtype=np.float64)):
            continue
        rows = array.reshape(array.shape[0], num_envs, -1)
        bad = np.argwhere(~np.isfinite(rows))
        if len(bad):
            t, env, i = bad[0]
            return (f"env {env} returned a non-finite {what} ({shown}{rows[t, env, i]}) at step "
                    f"{start_step + (t + first) * num_envs} (step {t + first} of the rollout)")
    return None


# the update's statistics that a non-finite loss or gradient makes non-finite, and what they are
_GUARDED_STATS = {"policy_loss": "the policy loss", "value_loss": "the value loss", "entropy": "the entropy",
                  "grad_norm": "the gradient norm"}


def _nonfinite_update(stats: dict, named_parameters: list[tuple[str, torch.Tensor]]) -> str | None:
    """What the update made non-finite, of its statistics and of the policy's ``named_parameters`` (a list made
    once: walking the modules for them costs more than the check)."""
    for name, what in _GUARDED_STATS.items():
        if not np.isfinite(stats[name]):
            return f"{what} became {stats[name]}"
    # one sum of every parameter (in float64, which float32 values cannot overflow), a third of the cost of two
    # ops a parameter; the culprit is searched only when the sum is not finite
    with torch.no_grad():
        if math.isfinite(torch.cat([p.reshape(-1) for _, p in named_parameters]).sum(dtype=torch.float64).item()):
            return None
    for name, param in named_parameters:
        if not torch.isfinite(param.sum(dtype=torch.float64)):
            return f"the parameter {name} became non-finite"
    return None


def _stop_if_nonfinite(problem: str | None, update: int, run_dir: Path) -> None:
    """Stop before the values reach a checkpoint: the last one written stays the newest, and finite."""
    if problem is not None:
        raise RunFailure(f"training stopped at update {update}: {problem}; {_last_good(run_dir)} (nothing "
                         "non-finite was saved)")


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
    actor = make_actor(state.policy, device, cfg.fast_paths, state.precision)
    ppo_update = make_update(state.policy, state.optimizer, device, cfg.fast_paths, state.precision)
    clock = time.perf_counter
    start_step, start_time = state.global_step, clock()
    # the time accounted for by the updates so far: each update's seconds (env, inference, learn, other) add up
    # to the wall time since the previous update's mark, so its "other" holds the logging and checkpoint before it
    mark = start_time
    first = state.update + 1
    # While something else steps the envs (worker processes; Gym-muRTS's games, Java threads in this process),
    # inference runs on one thread: more would contend with it for the cores (torch's idle threads spin), and a
    # batch of num_envs observations gains little from them. muRTS's rollout on a 2-core machine: inference 7-8 ms
    # a step on one thread, 11-16 ms on two.
    rollout_threads = TorchThreads(1) if envs_step_elsewhere(cfg) else nullcontext()
    named_parameters = list(state.policy.named_parameters())
    for update in range(first, cfg.num_updates + 1):
        lr = learning_rate(cfg, update)
        for group in state.optimizer.param_groups:
            group["lr"] = lr
        clip = clip_range(cfg, update)

        times = RolloutTimes()
        rollout_start = state.global_step
        distributed.progress(update, "rollout")
        try:
            with rollout_threads:
                state.obs, state.carry, local_step, episodes = collect_rollout(
                    envs, actor, buf, state.obs, state.carry, state.rng, state.global_step, cfg, times)
        except Exception:
            # a non-finite observation can make the policy's action, and then the env, fail: name the cause
            _stop_if_nonfinite(_nonfinite_rollout(buf, rollout_start), update, run_dir)
            raise
        _stop_if_nonfinite(_nonfinite_rollout(buf, rollout_start, state.obs), update, run_dir)
        # under torchrun: every rank's steps counted, every rank's episodes for rank 0's logs
        state.global_step, episodes = distributed.gather_rollout(rollout_start, local_step, episodes, cfg)
        distributed.progress(update, "learning")
        learn_start = clock()
        advantages, returns = compute_advantages(buf, cfg)
        batch = buf.training_batch(advantages, returns, device)
        stats = ppo_update(state.policy, state.optimizer, batch, cfg, clip, state.generator)
        distributed.progress(update, "logs, callbacks and checkpoint")
        _stop_if_nonfinite(_nonfinite_update(stats, named_parameters), update, run_dir)
        ev = explained_variance(buf.values, returns)
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
        # under torchrun the ranks leave the loop together: where any rank's callback asked to stop
        last = (distributed.any_rank(stop, cfg) or update == cfg.num_updates
                or (max_updates is not None and update - first + 1 >= max_updates))
        if last or update % cfg.dist_check_every == 0:
            distributed.check_parameters(state.policy, cfg)
        if last or (cfg.checkpoint_every and update % cfg.checkpoint_every == 0):
            payload = distributed.gather_checkpoint(state.checkpoint(envs), cfg)
            if payload is not None:  # rank 0 alone writes
                logger.sync()
                checkpoint.save(payload, checkpoint.checkpoint_path(run_dir, update))
        if last:
            break
