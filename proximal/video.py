"""Videos of training (``capture_video``): env 0's episodes on CleanRL's schedule, one mp4 file each.

The recorder only calls ``render()`` after the env has stepped or reset: rendering reads the simulator's state and
draws no random number, so a run's transitions, and so its parameters, are the same with and without videos. A
file is written under a hidden name and renamed when its episode ends, so that whoever watches the directory (the
W&B writer) sees finished videos only."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np

from .errors import UserError
from .outputs import error_reason

VIDEO_DIR = "videos"


def capped_cubic(episode: int) -> bool:
    """Whether episode ``episode`` (0-based) is recorded: the perfect cubes below 1000 (0, 1, 8, ..., 729), then
    every 1000th, as CleanRL's runs (gymnasium's ``RecordVideo`` default): early episodes often, later ones rarely."""
    if episode < 1000:
        return round(episode ** (1 / 3)) ** 3 == episode
    return episode % 1000 == 0


def video_name(episode: int) -> str:
    return f"rl-video-episode-{episode}.mp4"  # gymnasium's RecordVideo names, which CleanRL users know


def whole_mp4(path: Path) -> bool:
    """Whether ``path`` is a sequence of whole MP4 boxes (each a 4-byte size, a 4-byte type, its contents), the
    index (``moov``) among them: what a file cut short, or whose index could not be written, is not."""
    size, at, indexed = path.stat().st_size, 0, False
    with open(path, "rb") as f:
        while at < size:
            f.seek(at)
            header = f.read(16)
            length, kind = int.from_bytes(header[:4], "big"), header[4:8]
            if length == 1:  # a 64-bit size follows the type
                length = int.from_bytes(header[8:16], "big") if len(header) == 16 else 0
            elif length == 0:  # the box runs to the end of the file
                length = size - at
            if len(header) < 8 or length < 8:
                return False
            indexed |= kind == b"moov"
            at += length
    return at == size and indexed


class RecordEpisodes(gym.Wrapper):
    """Writes the scheduled episodes of ``env`` (made with ``render_mode="rgb_array"``) to ``video_dir``.

    ``episode`` is a plain attribute, so a checkpoint of the env (``envs.state``) keeps the schedule's place and a
    resumed run does not record episode 0 again. The recording under way is no state (``envs.state`` skips it): an
    episode being recorded when the run stopped is cut short, and a recording begun before a checkpoint was
    restored is dropped."""

    def __init__(self, env: gym.Env, video_dir: str):
        super().__init__(env)
        if env.render_mode != "rgb_array":
            raise UserError(f"capture_video records frames rendered as rgb_array, but this env renders as "
                            f"{env.render_mode!r}: make it with render_mode='rgb_array' (a factory's env too)")
        # a Path, which envs.state neither captures nor restores: a resumed run records into its own directory
        # where it is now (moved, copied, or named relative to another working directory), never the old one's
        self.video_dir = Path(video_dir)
        self.episode = -1  # the episode under way; the first reset starts episode 0
        # [episode, imageio writer, reset frame] while an episode is recorded, else empty: a list, which envs.state
        # neither captures nor restores. The file is opened at the episode's first step, so that envs reset and
        # closed without a step (a run that fails to start, or resumes a finished run) write nothing.
        self._recording = []

    def reset(self, **kwargs):
        result = self.env.reset(**kwargs)
        self._stop()
        self.episode += 1
        if capped_cubic(self.episode):
            self._recording = [self.episode, None, self._render()]
        return result

    def step(self, action):
        result = self.env.step(action)
        if self._recording:
            episode, writer, first = self._recording
            if episode != self.episode:  # a checkpoint was restored into this env: not the episode under way
                self._stop()
            else:
                try:
                    if writer is None:
                        writer = self._recording[1] = self._open(episode)
                        writer.append_data(first)
                    writer.append_data(self._render())
                except OSError as e:  # ffmpeg's pipe closed under a full disk, mostly: no errno, no file name
                    raise self._failed(episode, e) from None
        return result

    def _failed(self, episode: int, error: OSError) -> OSError:
        """The error of a video that could not be written, naming its file (the trainer reports it in one line);
        its partial file is removed."""
        self._recording = []
        self._path(episode, part=True).unlink(missing_ok=True)
        return OSError(error.errno, f"{error_reason(error)}; the disk may be full",
                       str(self._path(episode, part=False)))

    def _path(self, episode: int, part: bool) -> Path:
        return self.video_dir / ("." * part + video_name(episode))

    def _open(self, episode: int):
        import imageio.v2 as imageio  # from the mujoco extra; check_video_support says so where missing

        self.video_dir.mkdir(parents=True, exist_ok=True)
        fps = self.env.metadata.get("render_fps") or 30
        # macro_block_size 1: frames of any size, not rescaled to multiples of 16
        # ffmpeg's own log stays quiet: a failure is one error naming the video (_failed)
        return imageio.get_writer(self._path(episode, part=True), format="FFMPEG", fps=fps, macro_block_size=1,
                                  ffmpeg_log_level="quiet")

    def _render(self) -> np.ndarray:
        frame = self.env.render()
        if frame is None or np.ndim(frame) != 3:
            raise UserError("capture_video: the env's render() returned no rgb_array frame")
        return np.asarray(frame)

    def _stop(self) -> None:
        """End the recording: its file is kept where it is the episode under way's, else deleted."""
        if not self._recording:
            return
        episode, writer, _ = self._recording
        self._recording = []
        if writer is None:
            return
        writer.close()
        part = self._path(episode, part=True)
        if episode != self.episode:
            part.unlink()
            return
        # ffmpeg writes the mp4's index last, and tells its caller nothing where it cannot (a full disk): a file
        # cut short there is no video, and is not published as one
        if not whole_mp4(part):
            raise self._failed(episode, OSError(None, "ffmpeg could not finish the file"))
        part.replace(self._path(episode, part=False))

    def close(self) -> None:
        try:
            self._stop()
        except OSError as e:  # the episode under way as the run ends, which a full disk cut short: said, not raised
            warnings.warn(f"the video {e.filename} is left out: {e.strerror}", stacklevel=2)
        super().close()


def render_headless() -> None:
    """Without a display, point the renderers at headless backends before they are first imported (each picks its
    backend then): MuJoCo at EGL (its default, GLFW, needs a display), pygame's SDL (classic control) at its
    dummy driver (it otherwise probes for a display and prints an error while rendering fine). A backend the user
    chose stays."""
    if "DISPLAY" not in os.environ:
        os.environ.setdefault("MUJOCO_GL", "egl")
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


def check_video_support() -> None:
    """Before training: a missing imageio or ffmpeg would otherwise fail at the first recorded episode."""
    render_headless()
    try:
        import imageio.v2  # noqa: F401
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        raise UserError("capture_video needs imageio and imageio-ffmpeg: pip install -e '.[mujoco]'") from None
