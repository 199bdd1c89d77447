"""Evaluation of a trained policy on fresh episodes."""

from __future__ import annotations

from contextlib import ExitStack, nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import checkpoint
from .carry import Carry
from .config import Config
from .envs import action_masks, make_envs
from .envs.normalize import NormalizedVecEnv, Normalizer
from .errors import UserError
from .fast_paths import make_actor
from .outputs import cannot_write, output_file
from .policy import make_policy
from .spaces import space_from_dict
from .trainer import resolve_device
from .video import whole_mp4


def load_policy(path: Path, device: str = "cpu"):
    """(policy, config, normalizer) from a run directory (its newest checkpoint) or a checkpoint file. The
    normalizer holds the run's observation statistics at that checkpoint (None where the run did not normalize):
    the policy was trained on observations normalized with them, so evaluate with them."""
    path = checkpoint.latest(path)
    return policy_from_checkpoint(checkpoint.load(path), device, f"checkpoint '{path}'")


def policy_from_checkpoint(payload: dict, device: str = "cpu", name: str = "the checkpoint"):
    """``load_policy`` for a checkpoint already loaded (``checkpoint.load``); ``name`` says which in messages."""
    cfg = Config.from_dict(payload["config"])
    observation_space = space_from_dict(payload["spaces"]["observation"])
    action_space = space_from_dict(payload["spaces"]["action"])
    # aux.action_masking: the run's policy took masks if its carry holds them
    policy = make_policy(observation_space, action_space, cfg, masked=payload["carry"]["mask"] is not None)
    normalizer = Normalizer.from_config(cfg, observation_space.shape, cfg.num_envs)
    nonfinite = [name for name, t in payload["policy"].items() if t.is_floating_point() and not t.isfinite().all()]
    if nonfinite:
        raise UserError(f"{name} holds non-finite weights ({nonfinite[0]}); evaluate an earlier "
                        "checkpoint of the run")
    try:
        policy.load_state_dict(payload["policy"])
    except RuntimeError as e:  # names the mismatched tensors over several lines
        first = str(e).splitlines()[1].strip().rstrip(".") if len(str(e).splitlines()) > 1 else str(e)
        raise UserError(f"{name} holds weights that do not fit the network its config describes "
                        f"({first}); it was altered after it was written") from None
    if normalizer is not None:
        normalizer.load_state_dict(payload["normalizer"])
    return policy.to(resolve_device(device)).eval(), cfg, normalizer


def evaluate(policy, env_id: str, episodes: int, seed: int = 0, deterministic: bool = False,
             normalizer: Normalizer | None = None, video: Path | None = None,
             cfg: Config | None = None) -> np.ndarray:
    """Returns of ``episodes`` full episodes, one env, seeded with ``seed``. With ``normalizer``, the policy sees
    observations normalized with its statistics, frozen (cont.obs_norm); returns are raw either way. With
    ``video``, every frame (rgb_array rendering) is written to that file (.mp4, .gif, ...). ``cfg`` (the run's config)
    sets up the Atari preprocessing as in training; on Atari the returns are full-game and raw
    (the episode statistics sit inside episodic life and reward clipping), with the reference's frame limit."""
    actor = make_actor(policy, next(policy.parameters()).device)
    rng = None if deterministic else np.random.default_rng(seed)
    if cfg is not None and cfg.backend != "python":
        cfg = replace(cfg, backend="python")  # evaluations play the reference's chain, whichever backend trained
    envs = make_envs(env_id, 1, render_mode="rgb_array" if video else None, cfg=cfg)
    if normalizer is not None:
        envs = NormalizedVecEnv(envs, normalizer, frozen=True)
    returns = []
    try:
        with VideoWriter(video, envs) if video else nullcontext() as writer:
            obs = envs.reset(seed=seed)
            # as in training: the recurrent state zero at first and reset at every episode start, the masks
            # (aux.action_masking) read from the env
            carry = Carry(start=np.ones(1, np.float32), mask=action_masks(envs) if policy.masked else None,
                          state=policy.initial_state(1))
            while len(returns) < episodes:
                if writer:
                    writer.add(envs.render())
                action, carry = actor.sample(obs, carry, rng)
                step = envs.step(actor.env_action(action))  # clipped (or squashed) as in training: cont.action_clip
                returns += [ret for _, ret, _ in step.episodes]
                obs, carry = step.obs, carry.after_step(step.terminated | step.truncated, envs)
    finally:
        envs.close()
    return np.asarray(returns[:episodes])


# what imageio writes as a video: ffmpeg's formats, and GIF through Pillow
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".gif")


class VideoWriter:
    """Frames to a video file through imageio (ffmpeg for .mp4, from the mujoco extra), streamed: long
    evaluations do not hold every frame in memory. The file appears when the block ends without an error
    (``outputs.output_file``); one that cannot be written is a UserError and leaves no file."""

    def __init__(self, path: Path, envs):
        try:
            import imageio.v2 as imageio
        except ImportError:
            raise UserError("--video needs imageio and imageio-ffmpeg: pip install -e '.[mujoco]'") from None
        self.path, self.frames = Path(path), 0
        # checked before any episode: imageio takes other names (an image's, none) and fails only at the frames;
        # a directory gets output_file's message
        if self.path.suffix.lower() not in VIDEO_SUFFIXES and not self.path.is_dir():
            raise UserError(f"--video '{path}' is not a video file name: end it in {', '.join(VIDEO_SUFFIXES)}, "
                            "e.g. eval.mp4")
        fps = envs.metadata.get("render_fps") or 30
        with ExitStack() as stack:
            tmp = self._tmp = stack.enter_context(output_file(self.path, "eval.mp4"))
            try:
                self._writer = imageio.get_writer(tmp, fps=fps)
            except (ValueError, RuntimeError, ImportError) as e:  # imageio's message names the temporary file
                raise UserError(f"cannot write the video '{path}': {str(e).replace(str(tmp), str(path))}") from None
            except OSError as e:
                raise cannot_write(self.path, e) from None
            # the writer closes (ffmpeg ends its file) before the file is renamed or removed
            stack.push(self._close)
            self._output = stack.pop_all()

    def add(self, frame) -> None:
        if frame is None or np.ndim(frame) != 3:
            raise UserError("the env returned no rgb_array frame; it cannot be recorded with --video")
        try:
            self._writer.append_data(np.asarray(frame))
        except OSError as e:  # ffmpeg's pipe broken: mostly a full disk
            raise cannot_write(self.path, e) from None
        self.frames += 1

    def _close(self, exc_type, exc, tb) -> None:
        try:
            self._writer.close()
            # ffmpeg tells its caller nothing where it cannot write an mp4's index (a full disk): no video then
            if exc_type is None and self.path.suffix.lower() in (".mp4", ".mov") and not whole_mp4(self._tmp):
                raise OSError(None, "ffmpeg could not finish the file")
        except OSError as e:
            if exc_type is None:  # else the error under way says what went wrong; the file goes either way
                raise cannot_write(self.path, e) from None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._output.__exit__(*exc)
