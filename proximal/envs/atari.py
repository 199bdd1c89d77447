"""The reference's Atari preprocessing: its per-env wrapper chain and its frame stack on the vector env.

The chain for each env, innermost first, as baselines' ``make_atari`` + ``Monitor`` + ``wrap_deepmind``::

    raw emulator (frameskip 1, no sticky actions, the reference's frame limit)
    -> NoopReset            atari.noop_reset
    -> MaxAndSkipObservation atari.frame_skip       (gymnasium's: exactly the reference's MaxAndSkipEnv)
    -> RecordEpisodeStatistics                      (gymnasium's: the reference's Monitor, see below)
    -> EpisodicLife         atari.episodic_life
    -> FireReset            atari.fire_reset
    -> WarpFrame            atari.warp_frame        (structural)
    -> ClipRewardSign       atari.clip_reward

and ``FrameStack`` (atari.frame_stack) on the vector env. ``make_atari_env`` builds it for an ale-py id,
``wrap_atari`` around any ALE-like env (``unwrapped.ale.lives()``, ``unwrapped.get_action_meanings()``,
``unwrapped.np_random``). Each switchable detail is read from the ``details`` mapping (``cfg.details``); an ID
that is absent is on, as in the reference. Off gives what docs/details.md says under "off means": no no-ops, frameskip
1 (the raw frame, no max), a life loss that is not terminal, no FIRE, raw rewards, a stack of 1.

Semantics, where the reference is subtle:

- atari.noop_reset: after the real reset, ``unwrapped.np_random.integers(1, 31)`` (1..30) no-op RAW frames (the
  wrapper sits inside the frame skip); if the game ends during them the emulator is reset again and the
  remaining no-ops continue (the count is not redrawn). The reference passes its reset kwargs to that second
  reset too; gymnasium's kwargs hold the seed, so only the first reset gets the seed and options.
- atari.frame_skip: each agent step repeats the action for 4 raw frames, sums the rewards and stops early when
  the game ends (terminated or truncated); the observation is the pixel-wise max of the buffer that holds the
  frames of raw steps 3 and 4. gymnasium's ``MaxAndSkipObservation`` is the reference's ``MaxAndSkipEnv`` line by
  line, including its quirk: the buffer persists across steps, so after an early stop it still holds frames
  of an earlier agent step (this only touches the observation of an episode's last step). It is reused as is.
  The observation after a reset is the last no-op's raw frame, not a max.
- Episode statistics: gymnasium's ``RecordEpisodeStatistics`` where the reference's Monitor sits: it sees every
  agent step the frame skip makes (the pseudo-reset no-op and the FIRE steps included) and the raw rewards, and
  records one episode per real game over (``info["episode"]``: r, l in agent steps), never per life.
- atari.episodic_life: a step where the lives drop and stay above 0 returns terminated=True while the emulator
  goes on. The reset that follows is one no-op agent step (4 frames), not an emulator reset; the emulator is
  reset only when the last step really ended the game (terminated or truncated: a truncation is a game over).
  One deviation: if that no-op step itself ends the game, the reference's Monitor raises on the next step
  ("needs reset"); here the game is reset for real (that game's statistics are lost; it takes a life loss and
  a game over, or the frame limit, within the same 4 frames).
- atari.fire_reset: applied where action 1 means FIRE and there are >= 3 actions (the reference asserts both
  wherever FIRE exists; a game with FIRE elsewhere would crash it, here it gets no fire reset). It sits outside
  episodic life, so after every reset (the real one and the pseudo-reset after a life loss) it steps FIRE, then
  action 2; if either step is done (a life loss counts, as it is done at that level) it resets the inner env
  again, and returns the observation of the action-2 step, as the reference does. These steps' rewards reach
  the episode statistics, never the learner.
- atari.warp_frame: RGB -> gray (OpenCV COLOR_RGB2GRAY), 84x84 with INTER_AREA, uint8, shape (84, 84) (the
  frame stack adds the channel axis in front).
- atari.clip_reward: np.sign of the reward.

The time limit: the reference's gym registered ``<Game>NoFrameskip-v4`` with a TimeLimit of frameskip x 100000
raw steps (frameskip 4, or 3 for SpaceInvaders): 400k frames, 300k for SpaceInvaders. ale-py 0.12 registers its
v4 ids without a TimeLimit but with the ALE's own ``max_num_frames_per_episode=108000``, reported as truncated.
The ALE counts an episode's frames from 0 at its reset, one per raw step at frameskip 1, so setting that option
to the reference's limit truncates at the same frame as the reference's TimeLimit did; ``make_atari_env`` does
so (``max_frames=0`` removes the limit).

Library wrappers that are NOT the reference and are not used: gymnasium's ``AtariPreprocessing`` (its grayscale
is the ALE palette's, max-pooled after graying; its ``terminal_on_life_loss`` resets the whole game; its reset
returns the reset frame max-pooled with zeros; it re-seeds on the reset inside the no-ops; no fire reset),
``ClipReward`` (clips to bounds, not the sign), ``FrameStackObservation`` (per env; it pads with the reset
frame or zeros at reset only, and copies the stack every step); gymnasium has no reference-style episodic life
or fire reset. The C++ vector envs differ too (docs/backends.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from ..details import BY_ID
from ..errors import UserError

NOOP_MAX = 30
FRAME_SKIP = 4
FRAME_SIZE = 84
STACK = 4
REFERENCE_MAX_FRAMES = 400_000

SWITCHES = ("atari.noop_reset", "atari.frame_skip", "atari.episodic_life", "atari.fire_reset",
            "atari.clip_reward", "atari.frame_stack")


def is_on(details: Mapping[str, bool] | None, detail_id: str) -> bool:
    """Whether an Atari detail is on in ``details`` (absent: on, as in the reference)."""
    assert detail_id in SWITCHES, detail_id
    if details is None:
        return True
    unknown = [k for k in details if k.startswith("atari.") and k not in BY_ID]
    if unknown:
        raise ValueError(f"unknown Atari detail IDs: {', '.join(unknown)}")
    return bool(details.get(detail_id, True))


def reference_max_frames(game: str) -> int:
    """The reference's frame limit: gym registered NoFrameskip-v4 ids with frameskip x 100000 raw steps."""
    return 300_000 if game == "space_invaders" else REFERENCE_MAX_FRAMES


class NoopReset(gym.Wrapper):
    """atari.noop_reset: 1..noop_max no-op raw frames after every real reset, from the env's seeded RNG."""

    def __init__(self, env: gym.Env, noop_max: int = NOOP_MAX):
        super().__init__(env)
        if env.unwrapped.get_action_meanings()[0] != "NOOP":
            raise ValueError("atari.noop_reset needs action 0 to be NOOP")
        self.noop_max = noop_max

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        noops = int(self.unwrapped.np_random.integers(1, self.noop_max + 1))
        for _ in range(noops):
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset()
        return obs, info


class EpisodicLife(gym.Wrapper):
    """atari.episodic_life: a life loss is terminal for learning; the emulator resets only at game over."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lives = 0
        self.was_real_done = True

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.was_real_done = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if self.was_real_done:
            obs, info = self.env.reset(seed=seed, options=options)
        else:
            # the pseudo-reset: one no-op agent step from the state the life was lost in
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:  # the reference's Monitor would raise here: reset the game for real
                obs, info = self.env.reset()
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info


def has_fire_reset(env: gym.Env) -> bool:
    meanings = env.unwrapped.get_action_meanings()
    return len(meanings) >= 3 and meanings[1] == "FIRE"


class FireReset(gym.Wrapper):
    """atari.fire_reset: after every reset (real and pseudo), step FIRE then action 2."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        if not has_fire_reset(env):
            raise ValueError("atari.fire_reset needs action 1 to be FIRE and at least 3 actions")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self.env.reset(seed=seed, options=options)
        _, _, terminated, truncated, _ = self.env.step(1)
        if terminated or truncated:
            self.env.reset()
        obs, _, terminated, truncated, info = self.env.step(2)
        if terminated or truncated:
            self.env.reset()  # the reference returns the action-2 step's observation all the same
        return obs, info


def warp(frame: np.ndarray) -> np.ndarray:
    """atari.warp_frame: an (H, W, 3) RGB uint8 frame to (84, 84) uint8 gray, OpenCV RGB2GRAY and INTER_AREA."""
    import cv2

    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, (FRAME_SIZE, FRAME_SIZE), interpolation=cv2.INTER_AREA)


class WarpFrame(gym.ObservationWrapper):
    """atari.warp_frame (structural): observations become (84, 84) uint8 gray frames."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        try:
            import cv2  # noqa: F401
        except ImportError:
            raise UserError("Atari needs OpenCV: pip install -e '.[atari]'") from None
        self.observation_space = gym.spaces.Box(0, 255, (FRAME_SIZE, FRAME_SIZE), np.uint8)

    def observation(self, observation):
        return warp(observation)


class ClipRewardSign(gym.RewardWrapper):
    """atari.clip_reward: the learner's reward is sign(reward)."""

    def reward(self, reward):
        return float(np.sign(reward))


def wrap_atari(env: gym.Env, details: Mapping[str, bool] | None = None) -> gym.Env:
    """The reference's chain around a raw (frameskip 1) ALE-like env, each detail switched by ``details``."""
    if is_on(details, "atari.noop_reset"):
        env = NoopReset(env)
    if is_on(details, "atari.frame_skip"):
        env = gym.wrappers.MaxAndSkipObservation(env, skip=FRAME_SKIP)
    env = gym.wrappers.RecordEpisodeStatistics(env)
    if is_on(details, "atari.episodic_life"):
        env = EpisodicLife(env)
    if is_on(details, "atari.fire_reset") and has_fire_reset(env):
        env = FireReset(env)
    env = WarpFrame(env)
    if is_on(details, "atari.clip_reward"):
        env = ClipRewardSign(env)
    return env


def is_atari_id(env_id: str) -> bool:
    """Whether ``env_id`` is an ale-py id (False where ale-py is not installed)."""
    # a registered id (CartPole-v1) is answered without importing ale-py, which registers its own ids on import
    try:
        return "ale_py" in str(gym.spec(env_id).entry_point)
    except gym.error.Error:
        pass
    try:
        _import_ale()
        return "ale_py" in str(gym.spec(env_id).entry_point)
    except (ImportError, gym.error.Error):
        return False


def _import_ale() -> None:
    """ale-py, its ids registered with gymnasium, and its log at warnings: its banner (an info line at every
    emulator's creation, --quiet or not) is left out."""
    import ale_py

    gym.register_envs(ale_py)
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Warning)


def atari_spec(env_id: str) -> gym.envs.registration.EnvSpec:
    """The registration of an ale-py id (its ``kwargs["game"]``: ``breakout``); a UserError for any other id."""
    try:
        _import_ale()
    except ImportError:
        raise UserError("Atari needs ale-py and OpenCV: pip install -e '.[atari]'") from None
    try:
        spec = gym.spec(env_id)
    except gym.error.Error as e:
        raise UserError(f"unknown environment '{env_id}' ({e})") from None
    if "ale_py" not in str(spec.entry_point):
        raise UserError(f"'{env_id}' is not an Atari (ale-py) environment")
    return spec


def make_atari_env(env_id: str, details: Mapping[str, bool] | None = None, *, max_frames: int | None = None,
                   render_mode: str | None = None, wrap_raw: Callable[[gym.Env], gym.Env] | None = None,
                   **ale_kwargs) -> gym.Env:
    """One env of the reference's chain for an ale-py id (``BreakoutNoFrameskip-v4``, ``ALE/Breakout-v5``).

    The emulator runs at frameskip 1 without sticky actions (the NoFrameskip-v4 settings, also for v5 ids)
    unless ``ale_kwargs`` say otherwise; ``max_frames`` is the episode's frame limit (default: the reference's,
    ``reference_max_frames``; 0: none); ``wrap_raw`` wraps the ale-py env under the chain (the video recorder).
    Seed it as any gymnasium env, with its first ``reset(seed=...)``.
    """
    spec = atari_spec(env_id)
    if "max_num_frames_per_episode" in ale_kwargs:
        raise TypeError("set the frame limit with max_frames")
    if max_frames is None:
        max_frames = reference_max_frames(spec.kwargs.get("game", ""))
    kwargs = {"frameskip": 1, "repeat_action_probability": 0.0, **ale_kwargs,
              "max_num_frames_per_episode": max_frames}
    if render_mode:
        kwargs["render_mode"] = render_mode
    try:
        env = gym.make(env_id, disable_env_checker=True, **kwargs)
    except TypeError as e:  # an emulator setting ale-py does not know (ale_options)
        raise UserError(f"'{env_id}' does not take these emulator settings ({e}); check --ale-options") from None
    return wrap_atari(env if wrap_raw is None else wrap_raw(env), details)


class FrameStack:
    """atari.frame_stack on the vector env: (N, k, 84, 84) uint8 stacks, the newest frame last.

    As the reference's VecFrameStack, an env's stack is ZEROED on every done (a life loss under episodic life
    included) before its first frame is written; ``repeat_first=True`` fills it with that frame instead
    (gymnasium's FrameStackObservation, CleanRL). ``step`` and ``reset`` return the stack's own buffer,
    updated in place (no frame is copied more than once): it holds until the next call, so copy it to keep
    it (the rollout copies it into its storage).
    """

    def __init__(self, num_envs: int, num_stack: int = STACK, frame_shape: tuple[int, ...] = (FRAME_SIZE, FRAME_SIZE),
                 dtype=np.uint8, repeat_first: bool = False):
        self.num_stack = num_stack
        self.repeat_first = repeat_first
        self.obs = np.zeros((num_envs, num_stack, *frame_shape), dtype)
        self.observation_space = gym.spaces.Box(0, 255, self.obs.shape[1:], dtype)

    def _start(self, rows, frames: np.ndarray) -> None:
        if self.repeat_first:
            self.obs[rows] = frames[:, None]
        else:
            self.obs[rows, :-1] = 0
            self.obs[rows, -1] = frames

    def reset(self, frames: np.ndarray) -> np.ndarray:
        """``frames``: (N, *frame_shape), the first frame of every env."""
        self._start(slice(None), frames)
        return self.obs

    def step(self, frames: np.ndarray, dones: np.ndarray,
             final_frames: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """``frames``: (N, *frame_shape), each env's newest frame (a done env's: the first of its next episode);
        ``dones``: (N,) bool, terminated | truncated. Returns the stacks and, where ``final_frames`` (a done env's
        last frame) is given, the stacks each done env's episode ended with: rows valid where done (the stack
        itself when nothing is done), else None."""
        done_rows = np.flatnonzero(dones)
        for j in range(self.num_stack - 1):  # shift left one slice at a time: no temporary copy of the stack
            self.obs[:, j] = self.obs[:, j + 1]
        final = None
        if final_frames is not None:
            if len(done_rows) == 0:
                final = self.obs
            else:
                final = np.zeros_like(self.obs)
                final[done_rows, :-1] = self.obs[done_rows, :-1]
                final[done_rows, -1] = final_frames[done_rows]
        self.obs[:, -1] = frames
        if len(done_rows):
            self._start(done_rows, frames[done_rows])
        return self.obs, final


def make_frame_stack(num_envs: int, details: Mapping[str, bool] | None = None,
                     repeat_first: bool = False) -> FrameStack:
    """The frame stack atari.frame_stack asks for: 4 frames, or 1 where it is off."""
    return FrameStack(num_envs, STACK if is_on(details, "atari.frame_stack") else 1, repeat_first=repeat_first)
