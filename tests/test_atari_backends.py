"""The C++ Atari backends (--backend envpool / ale, proximal/envs/atari_backends.py) against the Python chain.

Per-step preprocessing: the backend and the Python chain play the same game side by side with the same actions,
with the no-ops, FIRE and episodic life switched off (where the RNG streams and reset sequences differ), and their
frames, rewards, dones and episode statistics are compared step by step. The comparison is valid because with no
sticky actions an Atari game is a deterministic function of its actions: the ALE seed only drives sticky actions
and the no-op draws, both off here. The backend's reset is matched on the chain's side (envpool always steps one
raw frame after a reset: the chain gets ``NoopReset(noop_max=1)``, exactly one no-op frame). Equal frames at every
step across several games (the max-pool over the last two raw frames, the gray conversion and the 84x84 area
resize all change the frame) and equal rewards prove the per-step preprocessing equal, and equal frames right
after each game over prove the same-step autoreset neither drops nor adds a step.

The contract tests run each backend with every Atari detail on: life-loss dones reach the learner while the game
goes on, episode statistics are full-game and raw, stacks are uint8 and zeroed on every done."""

from __future__ import annotations

import sys
from dataclasses import replace

import cv2
import gymnasium as gym
import numpy as np
import pytest

from proximal.envs import atari, atari_backends
from proximal.envs.atari import NoopReset, make_frame_stack, warp, wrap_atari
from proximal.envs.atari_backends import BackendAtariEnv, atari_game, make_backend_envs
from proximal.envs.contract import EnvOptions
from proximal.errors import UserError

try:
    import envpool  # noqa: F401

    HAS_ENVPOOL = True
except ImportError:
    HAS_ENVPOOL = False

BACKENDS = [pytest.param("envpool", marks=pytest.mark.skipif(not HAS_ENVPOOL, reason="envpool is not installed "
                                                             "(pip install -e '.[envpool]')")), "ale"]
ALL_ON = {detail_id: True for detail_id in atari.SWITCHES}
NO_RESET_SEQUENCES = {**ALL_ON, "atari.noop_reset": False, "atari.fire_reset": False, "atari.episodic_life": False}


class RawFrames(gym.Wrapper):
    """Records the raw RGB frames of every emulator step since the last reset."""

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.frames = [obs]
        return obs, info

    def step(self, action):
        out = self.env.step(action)
        self.frames.append(out[0])
        return out


def side_by_side(backend: str, env_id: str):
    """The backend (1 env) and the Python chain with the backend's reset (no-ops, FIRE and episodic life off)."""
    limit = atari.reference_max_frames(atari_game(env_id))  # atari_game registers ale-py's ids
    raw = RawFrames(gym.make(env_id, repeat_action_probability=0.0, frameskip=1, max_num_frames_per_episode=limit))
    inner = NoopReset(raw, noop_max=1) if backend == "envpool" else raw  # envpool's least: one no-op frame
    chain = wrap_atari(inner, NO_RESET_SEQUENCES)
    envs = make_backend_envs(env_id, 1, EnvOptions(backend=backend, details=NO_RESET_SEQUENCES))
    return chain, raw, envs


@pytest.mark.parametrize("backend", BACKENDS)
def test_atari_backend_per_step_preprocessing_equals_the_python_chain(backend):
    chain, raw, envs = side_by_side(backend, "BreakoutNoFrameskip-v4")
    expected, _ = chain.reset(seed=0)
    obs = envs.reset(seed=5)  # another seed: the game does not depend on it
    np.testing.assert_array_equal(obs[0, -1], expected)
    actions = np.random.default_rng(0).integers(4, size=1200)
    games, pooled, finals = 0, 0, 0
    for t, action in enumerate(actions):
        frames_before = len(raw.frames)
        expected, reward, terminated, truncated, info = chain.step(int(action))
        raw_steps = len(raw.frames) - frames_before
        pooled += not np.array_equal(expected, warp(raw.frames[-1]))
        step = envs.step(np.array([action]))
        assert step.obs.dtype == np.uint8 and step.obs.shape == (1, 4, 84, 84)
        assert step.reward.dtype == np.float32 and step.reward[0] == reward, t
        assert (step.terminated[0], step.truncated[0]) == (terminated, truncated), t
        if terminated or truncated:
            games += 1
            assert step.episodes == [(0, info["episode"]["r"], info["episode"]["l"])], "the game's raw statistics"
            # A game that ends in the 1st or 2nd raw frame of a step leaves every max-pool buffer with the
            # previous step's last two frames: the final frames agree. Where it ends in the 3rd or 4th, each
            # pools its own stale pair (the reference's buffer quirk; ale-py skips the game's last frame): that
            # final frame differs, and being a game over it bootstraps nothing.
            if raw_steps <= 2:
                finals += 1
                np.testing.assert_array_equal(step.final_obs[0, -1], expected)
            expected, _ = chain.reset()
        else:
            assert step.episodes == []
        np.testing.assert_array_equal(step.obs[0, -1], expected, err_msg=f"step {t}")
    assert games >= 4 and finals >= 1, "several games: resets within the comparison"
    assert pooled > len(actions) // 2, "the max over two raw frames changed most frames"


@pytest.mark.parametrize("backend", BACKENDS)
def test_atari_backend_max_pools_gray_frames_unlike_the_reference(backend):
    # The one per-step difference: the backends gray each raw frame and max-pool the gray frames; the reference
    # max-pools the RGB frames and grays the result. Where a moving object crosses a coloured background the two
    # differ (not in Breakout, whose objects move over black).
    chain, raw, envs = side_by_side(backend, "MsPacmanNoFrameskip-v4")
    chain.reset(seed=0)
    envs.reset(seed=0)
    actions = np.random.default_rng(0).integers(envs.single_action_space.n, size=150)
    differ = 0
    for action in actions:
        expected, _, terminated, truncated, _ = chain.step(int(action))
        step = envs.step(np.array([action]))
        assert not (terminated or truncated)
        gray = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in raw.frames[-2:]]
        pooled_gray = cv2.resize(np.maximum(*gray), (84, 84), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(step.obs[0, -1], pooled_gray)
        differ += not np.array_equal(step.obs[0, -1], expected)
    assert differ > len(actions) // 2


def play(backend: str, env_id: str, details: dict, steps: int, num_envs: int = 2):
    """Steps the backend with seeded random actions; returns the steps, each after the stacks it started from."""
    envs = make_backend_envs(env_id, num_envs, EnvOptions(backend=backend, details=details))
    obs = envs.reset(seed=1)
    assert obs.dtype == np.uint8 and obs.shape == (num_envs, 4, 84, 84)
    assert (obs[:, :3] == 0).all() and obs[:, 3].any(), "a zeroed stack, the first frame last"
    rng = np.random.default_rng(0)
    played = []
    for _ in range(steps):
        prev = obs.copy()
        step = envs.step(rng.integers(envs.single_action_space.n, size=num_envs))
        obs = step.obs
        # the stacks are the env's buffers, updated in place: keep copies
        played.append((prev, replace(step, obs=obs.copy(), final_obs=step.final_obs.copy())))
    envs.close()
    return played


@pytest.mark.parametrize("backend", BACKENDS)
def test_atari_backend_life_losses_are_dones_and_statistics_are_full_raw_games(backend):
    # SpaceInvaders: 3 lives, FIRE, rewards of 5 to 30 points. The same seed and actions with the learner's
    # rewards clipped and raw play the same games.
    clipped = play(backend, "SpaceInvadersNoFrameskip-v4", ALL_ON, 1500)
    raw = play(backend, "SpaceInvadersNoFrameskip-v4", {**ALL_ON, "atari.clip_reward": False}, 1500)
    games = 0
    for i in range(2):
        dones, steps, raw_sum, clipped_sum = 0, 0, 0.0, 0.0
        for (prev, step), (_, unclipped) in zip(clipped, raw):
            assert step.obs.dtype == np.uint8 and step.obs.shape == (2, 4, 84, 84)
            assert step.reward[i] == np.sign(unclipped.reward[i]), "the learner's reward is the sign"
            steps += 1
            raw_sum += unclipped.reward[i]
            clipped_sum += step.reward[i]
            if step.terminated[i] or step.truncated[i]:
                dones += 1
                assert (step.obs[i, :3] == 0).all(), "the stack is zeroed on every done, life losses included"
                np.testing.assert_array_equal(step.final_obs[i, :3], prev[i, 1:])
            else:
                np.testing.assert_array_equal(step.obs[i, :3], prev[i, 1:])
            ended = [e for e in step.episodes if e[0] == i]
            if ended:
                _, ret, length = ended[0]
                games += 1
                assert dones == 3, "a done for each of the 3 lives, one episode for the game: the game goes on"
                assert length == steps, "every agent step of the game, across its lives"
                assert ret == raw_sum, "the raw return of the whole game"
                assert ret > clipped_sum
                dones, steps, raw_sum, clipped_sum = 0, 0, 0.0, 0.0
            assert [e for e in unclipped.episodes if e[0] == i] == ended
    assert games >= 2


def test_atari_backend_learner_reward_is_the_sign_not_a_clip():
    # the games' rewards are whole points, where sign and clip agree: a fraction tells them apart
    env = BackendAtariEnv(1, ALL_ON, False)
    frames, no = np.zeros((1, 84, 84), np.uint8), np.zeros(1, bool)
    env._first(frames)
    step = env._finish(frames, frames, np.array([0.5]), no, no, no)
    assert step.reward.tolist() == [1.0] and step.reward.dtype == np.float32


@pytest.mark.parametrize("backend", BACKENDS)
def test_atari_backend_frame_limit_ends_the_game_with_its_statistics(backend, monkeypatch):
    # the reference's frame limit (TimeLimit at max_episode_steps) at 400 frames, 100 agent steps: a truncation
    # that ends the game, so its episode is reported whole and the next game's return starts at 0
    monkeypatch.setattr(atari_backends, "reference_max_frames", lambda game: 400)
    envs = make_backend_envs("BreakoutNoFrameskip-v4", 1, EnvOptions(backend=backend, details=ALL_ON))
    envs.reset(seed=1)
    rng = np.random.default_rng(0)
    try:
        for t in range(1, 131):
            step = envs.step(rng.integers(envs.single_action_space.n, size=1))
            if step.truncated[0]:
                break
    finally:
        envs.close()
    assert step.truncated[0] and t <= 100
    assert [length for _, _, length in step.episodes] == [t], "one episode of every step of the game"


@pytest.mark.parametrize("backend", BACKENDS)
def test_atari_backend_episodic_life_off_gives_one_done_per_game(backend):
    played = play(backend, "BreakoutNoFrameskip-v4", {**ALL_ON, "atari.episodic_life": False}, 600, num_envs=1)
    dones = [step.terminated[0] or step.truncated[0] for _, step in played]
    episodes = [e for _, step in played for e in step.episodes]
    assert sum(dones) == len(episodes) >= 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_atari_backend_refuses_what_it_cannot_honour(backend):
    with pytest.raises(UserError, match="atari.frame_skip.*--backend python"):
        make_backend_envs("BreakoutNoFrameskip-v4", 1,
                          EnvOptions(backend=backend, details={**ALL_ON, "atari.frame_skip": False}))
    with pytest.raises(UserError, match="not an Atari.*--backend python"):
        make_backend_envs("CartPole-v1", 1, EnvOptions(backend=backend, details=ALL_ON))
    off = make_backend_envs("BreakoutNoFrameskip-v4", 1,
                            EnvOptions(backend=backend, details={**ALL_ON, "atari.frame_stack": False}))
    assert off.single_observation_space.shape == (1, 84, 84)
    assert make_frame_stack(1, ALL_ON).observation_space == make_backend_envs(
        "ALE/Breakout-v5", 1, EnvOptions(backend=backend, details=ALL_ON)).single_observation_space


def test_atari_backend_envpool_missing_or_unknown_backend_is_one_clear_message(monkeypatch):
    from proximal.config import preset, validate

    monkeypatch.setitem(sys.modules, "envpool", None)  # import envpool now raises ImportError
    with pytest.raises(UserError, match=r"pip install -e '\.\[envpool\]'"):
        make_backend_envs("BreakoutNoFrameskip-v4", 1, EnvOptions(backend="envpool"))
    cfg = preset("atari")
    cfg.backend = "cuda"
    with pytest.raises(UserError, match="backend must be one of python, envpool, ale"):
        validate(cfg)


@pytest.mark.parametrize("backend", BACKENDS)
def test_atari_backend_trains_the_atari_preset_from_the_cli(backend, tmp_path, monkeypatch):
    import json

    from proximal.cli import main
    from proximal.envs import make

    made = []
    monkeypatch.setattr(make, "make_backend_envs",
                        lambda *a, **k: made.append(make_backend_envs(*a, **k)) or made[-1])
    run_dir = tmp_path / "run"
    code = main(["train", "--preset", "atari", "--backend", backend, "--total-steps", "256", "--num-envs", "2",
                 "--num-steps", "32", "--num-minibatches", "2", "--quiet", "--run-dir", str(run_dir)])
    assert code in (0, None)
    assert len(made) == 1 and made[0].num_envs == 2, "the run stepped the backend's envs"
    assert json.loads((run_dir / "config.json").read_text())["backend"] == backend
    assert any((run_dir / "checkpoints").glob("*.pt"))
