"""Opt-in C++ vectorized Atari backends (``--backend envpool`` or ``--backend ale``) behind the
``contract.VecEnv`` contract, for speed. The Python chain (``atari_vector``) stays the default and defines the
semantics.

Each backend runs the emulators, the frame skip with its max-pool, the gray 84x84 INTER_AREA warp, the no-op and
FIRE resets and the life-loss signal in C++ threads, with the reference's emulator settings (no sticky actions,
frameskip 4, noop max 30, the reference's frame limit). The adapter here asks it for single frames (stack 1) and
raw rewards, and does the rest in Python exactly as the Python chain does: the frame stack (``atari.FrameStack``,
zeroed on every done, a life loss included), the sign of the reward (atari.clip_reward), full-game raw episode
statistics (one episode per real game over, lengths in agent steps), and same-step autoreset. What differs from
the Python chain is listed in docs/backends.md: mostly what happens between episodes (no-op counts from
other RNG streams, one FIRE frame instead of the FIRE and action-2 steps, the backends' own pseudo-reset after a
life loss) and what the episode statistics count.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..errors import UserError
from .atari import (FRAME_SIZE, FRAME_SKIP, NOOP_MAX, atari_spec, is_atari_id, is_on, make_frame_stack,
                    reference_max_frames)
from .contract import EnvOptions, Step


def atari_game(env_id: str) -> str:
    """The ALE game (``breakout``, ``space_invaders``) of an ale-py id."""
    if not is_atari_id(env_id):
        raise UserError(f"'{env_id}' is not an Atari (ale-py) id; --backend envpool and ale run Atari games only: "
                        "use an Atari id or --backend python")
    return atari_spec(env_id).kwargs["game"]


class BackendAtariEnv:
    """What both backends share: the frame stack, the learner's reward, the game statistics, the contract.

    A backend subclass names itself (``name``: its --backend value), sets ``single_action_space`` and implements
    ``reset``, ``step`` and ``close`` with ``_first`` and ``_finish``."""

    name: str
    metadata: dict = {}  # nothing is rendered

    def __init__(self, num_envs: int, details: Mapping[str, bool] | None, repeat_first: bool):
        self.num_envs = num_envs
        self.stack = make_frame_stack(num_envs, details, repeat_first=repeat_first)
        self.single_observation_space = self.stack.observation_space
        self.clip_reward = is_on(details, "atari.clip_reward")
        self.game_return = np.zeros(num_envs)
        self.game_length = np.zeros(num_envs, np.int64)

    def _first(self, frames: np.ndarray) -> np.ndarray:
        self.game_return[:] = 0
        self.game_length[:] = 0
        return self.stack.reset(frames)

    def _finish(self, frames: np.ndarray, final_frames: np.ndarray, reward: np.ndarray, terminated: np.ndarray,
                truncated: np.ndarray, game_over: np.ndarray) -> Step:
        """``frames``: (N, 84, 84), each env's next frame (a done env's: its next episode's first);
        ``final_frames``: rows valid where done, the frame each episode ended with; ``reward``: raw;
        ``terminated``: game over or (atari.episodic_life) a life loss; ``game_over``: the game really ended."""
        self.game_return += reward
        self.game_length += 1
        episodes = [(int(i), float(self.game_return[i]), int(self.game_length[i])) for i in np.flatnonzero(game_over)]
        self.game_return[game_over] = 0
        self.game_length[game_over] = 0
        obs, final = self.stack.step(frames, terminated | truncated, final_frames)
        learner_reward = np.sign(reward) if self.clip_reward else reward
        return Step(obs, learner_reward.astype(np.float32), terminated, truncated, final, episodes)

    def action_masks(self) -> None:
        return None  # every Atari action is always valid

    def render(self):
        raise UserError(f"--backend {self.name} does not render its games; record videos with --backend python")

    def get_state(self) -> dict | None:
        return None  # the emulators' state is not captured: a resumed run starts fresh episodes

    def set_state(self, state: dict) -> None:
        raise NotImplementedError("the Atari envs' state is not captured")


def _refuse_frame_skip_off(details: Mapping[str, bool] | None, backend: str) -> None:
    if not is_on(details, "atari.frame_skip"):
        raise UserError(f"--backend {backend} cannot switch atari.frame_skip off (its max-pool would mix in an "
                        "older frame); use --backend python")


class EnvpoolAtariEnv(BackendAtariEnv):
    """envpool's Atari envs (``envpool.make_gymnasium``), converted from next-step to same-step autoreset.

    envpool resets a done env on the step AFTER the done (that step ignores its action and returns the reset
    frame with reward 0): here the done envs alone take that step at once, so the reset frame comes with the
    done and no step is lost or made up. atari.episodic_life maps onto envpool's ``episodic_life``
    (a life loss is done, the game goes on; its reset is envpool's: no-ops and one FIRE frame, no game reset),
    atari.noop_reset onto ``noop_max`` 30 or 1 (envpool's least: one no-op frame, none where it presses FIRE),
    atari.fire_reset onto ``use_fire_reset``; atari.frame_skip off is refused. The time limit is in agent steps:
    the reference's frame limit / 4.
    """

    name = "envpool"

    def __init__(self, env_id: str, num_envs: int, details: Mapping[str, bool] | None = None,
                 repeat_first: bool = False):
        try:
            import envpool
        except ImportError:
            raise UserError("--backend envpool needs envpool: pip install -e '.[envpool]' (or use --backend "
                            "python)") from None
        game = atari_game(env_id)
        _refuse_frame_skip_off(details, self.name)
        self.task = "".join(part.capitalize() for part in game.split("_")) + "-v5"
        if self.task not in envpool.list_all_envs():
            raise UserError(f"envpool has no Atari game '{game}'; use --backend python or ale")
        self.options = dict(
            stack_num=1, frame_skip=FRAME_SKIP, img_height=FRAME_SIZE, img_width=FRAME_SIZE, gray_scale=True,
            use_inter_area_resize=True, repeat_action_probability=0.0, reward_clip=False,
            noop_max=NOOP_MAX if is_on(details, "atari.noop_reset") else 1,
            episodic_life=is_on(details, "atari.episodic_life"),
            use_fire_reset=is_on(details, "atari.fire_reset"),
            max_episode_steps=reference_max_frames(game) // FRAME_SKIP)
        super().__init__(num_envs, details, repeat_first)
        self.single_action_space = envpool.make_spec(self.task, num_envs=num_envs, **self.options).action_space
        self.envs = None  # made by reset: envpool takes its seed when the pool is made

    def reset(self, seed: int) -> np.ndarray:
        import envpool

        self.close()
        # env i is seeded with seed + i
        self.envs = envpool.make_gymnasium(self.task, num_envs=self.num_envs, seed=seed, **self.options)
        frames, _ = self.envs.reset()
        return self._first(frames[:, 0])

    def step(self, actions: np.ndarray) -> Step:
        frames, reward, terminated, truncated, info = self.envs.step(np.asarray(actions, np.int32))
        frames = frames[:, 0]
        dones = terminated | truncated
        final_frames = frames
        if dones.any():
            # envpool's own autoreset: a done env's next step is its reset (the action is ignored). Its reset()
            # would reset the whole game, also after a life loss.
            done_ids = np.flatnonzero(dones).astype(np.int32)
            frames = frames.copy()
            frames[done_ids] = self.envs.step(np.zeros(len(done_ids), np.int32), done_ids)[0][:, 0]
        # info["terminated"] is the game over; a truncation (the time limit) resets the game too
        game_over = dones & (info["terminated"].astype(bool) | truncated)
        return self._finish(frames, final_frames, reward.astype(np.float64), terminated, truncated, game_over)

    def close(self) -> None:
        if self.envs is not None:
            self.envs.close()
            self.envs = None


class ALEVectorAtariEnv(BackendAtariEnv):
    """ale-py's C++ vector env (``ale_py.vector_env.AtariVectorEnv``) in its same-step autoreset mode.

    atari.episodic_life maps onto its ``life_loss_info`` (terminated on a life loss while the game goes on, with
    no reset of any kind: the next step plays on from the frame the life was lost in; its ``episodic_life``
    would reset the whole game), atari.noop_reset onto ``noop_max`` 30 or 0, atari.fire_reset onto
    ``use_fire_reset``; atari.frame_skip off is refused. A game over is told from a life loss by the lives:
    after a game over they are the new game's.
    """

    name = "ale"

    def __init__(self, env_id: str, num_envs: int, details: Mapping[str, bool] | None = None,
                 repeat_first: bool = False):
        from gymnasium.vector import AutoresetMode

        game = atari_game(env_id)
        _refuse_frame_skip_off(details, self.name)
        try:
            from ale_py.vector_env import AtariVectorEnv
        except ImportError:
            raise UserError("--backend ale needs ale-py's vector env (tested with ale-py 0.12): pip install -U "
                            "ale-py, or use --backend python") from None
        super().__init__(num_envs, details, repeat_first)
        self.envs = AtariVectorEnv(
            game, num_envs, stack_num=1, frameskip=FRAME_SKIP, maxpool=True, img_height=FRAME_SIZE,
            img_width=FRAME_SIZE, grayscale=True, repeat_action_probability=0.0, reward_clipping=False,
            noop_max=NOOP_MAX if is_on(details, "atari.noop_reset") else 0,
            episodic_life=False, life_loss_info=is_on(details, "atari.episodic_life"),
            use_fire_reset=is_on(details, "atari.fire_reset"),
            max_num_frames_per_episode=reference_max_frames(game), autoreset_mode=AutoresetMode.SAME_STEP)
        self.single_action_space = self.envs.single_action_space
        self.lives = np.zeros(num_envs, np.int64)

    def reset(self, seed: int) -> np.ndarray:
        frames, info = self.envs.reset(seed=seed)  # env i is seeded with seed + i
        self.lives = info["lives"]
        return self._first(frames[:, 0])

    def step(self, actions: np.ndarray) -> Step:
        frames, reward, terminated, truncated, info = self.envs.step(np.asarray(actions, np.int64))
        frames = frames[:, 0]
        life_lost = terminated & (info["lives"] > 0) & (info["lives"] < self.lives)
        self.lives = info["lives"]
        game_over = (terminated | truncated) & ~life_lost
        final_frames = frames
        if game_over.any():
            final_frames = frames.copy()
            final_frames[game_over] = info["final_obs"][game_over, 0]
        return self._finish(frames, final_frames, reward.astype(np.float64), terminated, truncated, game_over)

    def close(self) -> None:
        self.envs.close()


def make_backend_envs(env_id: str, num_envs: int, options: EnvOptions) -> BackendAtariEnv:
    """The vector env of the C++ backend ``options.backend`` (``envpool`` or ``ale``) for an ale-py id."""
    makers = {maker.name: maker for maker in (EnvpoolAtariEnv, ALEVectorAtariEnv)}
    if options.backend not in makers:
        raise UserError(f"unknown backend '{options.backend}'; choose one of: {', '.join(['python', *makers])}")
    details = dict(options.details) if options.details is not None else None
    return makers[options.backend](env_id, num_envs, details, options.repeat_first)
