"""The reference's Atari preprocessing (atari.*): each wrapper on a scripted ALE-like emulator (tests/fake_ale.py:
known frames, rewards and lives), the frame stack on arrays, each switch off, and one real-ALE run on Breakout.

``check_<detail>(details)`` asserts a detail's behaviour and fails with the detail off; the last parametrized
test runs each with the detail on and off, as tests/test_details_meta.py does for the wired-in details."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from gymnasium.utils import seeding

from fake_ale import REWARDS, FakeALE
from ratio_check import assert_ratio_is_one
from proximal.envs import atari
from proximal.envs.atari import FrameStack, make_atari_env, make_frame_stack, warp, wrap_atari

ON = {detail_id: True for detail_id in atari.SWITCHES}


def details(base=ON, **switches) -> dict[str, bool]:
    """``base`` with ``atari.<name>`` set as given: details(noop_reset=False)."""
    return {**base, **{f"atari.{name}": value for name, value in switches.items()}}


def chain(d, **fake):
    env = FakeALE(**fake)
    return wrap_atari(env, d), env


def pooled(fake: FakeALE, frame_id: int) -> np.ndarray:
    """The warped max of raw frames frame_id - 1 and frame_id."""
    return warp(np.maximum(fake.frame(frame_id - 1), fake.frame(frame_id)))


def expected_noops(seed: int) -> int:
    """The count the env's RNG gives right after reset(seed=seed) (gymnasium seeds np_random so)."""
    return int(seeding.np_random(seed)[0].integers(1, 31))


# ---------------------------------------------------------------- atari.noop_reset

def check_noop_reset(d):
    env, fake = chain(details(d, fire_reset=False), game_over_at=10**6)
    counts = []
    for seed in range(600):
        env.reset(seed=seed)
        actions = fake.actions_since_reset()
        assert set(actions) <= {0}, "no-ops only"
        counts.append(len(actions))
        assert len(actions) == expected_noops(seed), "the count comes from the env's seeded RNG"
    assert min(counts) == 1 and max(counts) == 30, "both ends of 1..30 are reached"
    assert fake.resets == 600, "one emulator reset each"
    env.reset(seed=11)
    again = fake.actions_since_reset()
    env.reset(seed=11)
    assert fake.actions_since_reset() == again, "reproducible with the seed"
    unseeded = set()
    for _ in range(20):
        env.reset()
        unseeded.add(len(fake.actions_since_reset()))
    assert len(unseeded) > 1, "an unseeded reset draws on from the RNG"


def test_atari_noop_reset_count_in_1_to_30_from_the_seeded_rng():
    check_noop_reset(ON)


def test_atari_noop_reset_resets_the_game_again_when_it_ends_during_the_noops():
    seed = next(s for s in range(100) if expected_noops(s) >= 10)
    n = expected_noops(seed)
    env, fake = chain(details(fire_reset=False), game_over_at=4)
    obs, _ = env.reset(seed=seed)
    assert sum(kind == "step" for kind, _, _ in fake.log) == n, "the count is not redrawn after the game ends"
    assert fake.resets == 1 + n // 4, "the emulator is reset again each time the game ends"
    np.testing.assert_array_equal(obs, warp(fake.frame(fake.frame_id)))  # the raw frame of the last call


# ---------------------------------------------------------------- atari.frame_skip

def check_frame_skip(d):
    env, fake = chain(details(d, noop_reset=False, fire_reset=False, clip_reward=False),
                      life_loss_at=(), game_over_at=6)
    env.reset(seed=0)
    obs1, r1, terminated, truncated, _ = env.step(2)
    assert fake.actions_since_reset() == [2, 2, 2, 2], "the action is repeated for 4 raw frames"
    np.testing.assert_array_equal(obs1, pooled(fake, fake.frame_id))  # max of the last two raw frames
    assert not np.array_equal(obs1, warp(fake.frame(fake.frame_id)))
    assert r1 == sum(REWARDS[t] for t in (1, 2, 3, 4)) and not (terminated or truncated)
    obs2, r2, terminated, _, _ = env.step(3)
    assert fake.actions_since_reset() == [2, 2, 2, 2, 3, 3], "stops early when the game ends"
    assert r2 == REWARDS[5] + REWARDS[6] and terminated
    # The reference's MaxAndSkipEnv (and gymnasium's copy) keeps its buffer across steps: after an early stop
    # before raw frame 3 it still holds the previous step's two frames.
    np.testing.assert_array_equal(obs2, obs1)


def test_atari_frame_skip_max_of_last_two_frames_rewards_summed_early_stop():
    check_frame_skip(ON)


def test_atari_frame_skip_reset_returns_the_last_noop_frame():
    env, fake = chain(details(fire_reset=False))
    obs, _ = env.reset(seed=4)
    assert len(fake.actions_since_reset()) == expected_noops(4)
    np.testing.assert_array_equal(obs, warp(fake.frame(fake.frame_id)))


# ---------------------------------------------------------------- atari.episodic_life

def check_episodic_life(d):
    env, fake = chain(details(d, noop_reset=False, fire_reset=False, clip_reward=False),
                      life_loss_at=(10, 20), game_over_at=30, lives=3)
    env.reset(seed=0)
    for _ in range(2):
        assert env.step(3)[2] is False
    _, _, terminated, truncated, info = env.step(3)  # raw frames 9..12: the life lost at frame 10
    assert terminated and not truncated and "episode" not in info, "a life loss is terminal for learning"
    assert fake.lives == 2 and fake.resets == 1, "the emulator goes on"
    obs, _ = env.reset()
    assert fake.resets == 1, "the reset after a life loss is no emulator reset"
    assert fake.actions_since_reset() == [3] * 12 + [0] * 4, "it is one no-op agent step"
    np.testing.assert_array_equal(obs, pooled(fake, fake.frame_id))
    _, _, terminated, _, _ = env.step(3)  # frames 17..20: the second life
    assert terminated and fake.lives == 1 and fake.resets == 1
    env.reset()
    assert not env.step(3)[2]  # frames 25..28
    _, _, terminated, _, info = env.step(3)  # frames 29, 30: game over
    assert terminated and "episode" in info
    env.reset()
    assert fake.resets == 2, "the emulator is reset at game over"


def test_atari_episodic_life_loss_is_terminal_without_emulator_reset():
    check_episodic_life(ON)


def test_atari_episodic_life_truncation_is_a_game_over():
    env, fake = chain(details(noop_reset=False, fire_reset=False), life_loss_at=(), max_frames=14)
    env.reset(seed=0)
    for _ in range(3):
        assert not any(env.step(2)[2:4])
    _, _, terminated, truncated, info = env.step(2)  # frames 13, 14: the frame limit
    assert truncated and not terminated and "episode" in info
    calls = len(fake.log)
    env.reset()
    assert [kind for kind, _, _ in fake.log[calls:]] == ["reset"], "a real reset, no pseudo-reset step first"
    assert fake.resets == 2


def test_atari_episodic_life_lives_reaching_zero_mid_game_is_no_life_loss():
    """The reference signals a life loss only while lives stay above 0: a game whose counter reaches 0 before
    the game ends (the last life lost at frame 20, game over at 30) plays that life to the real game over."""
    env, fake = chain(details(noop_reset=False, fire_reset=False), life_loss_at=(10, 20), game_over_at=30, lives=2)
    env.reset(seed=0)
    dones = [env.step(3)[2] for _ in range(3)]  # raw frames 1..12: lives 2 -> 1 at frame 10
    assert dones == [False, False, True] and fake.lives == 1
    env.reset()  # the pseudo-reset's no-op: frames 13..16
    _, _, terminated, truncated, info = env.step(3)  # frames 17..20: lives 1 -> 0 with the game going on
    assert fake.lives == 0 and fake.t == 20
    assert not terminated and not truncated and "episode" not in info, "lives 0 is no life loss"
    assert [env.step(3)[2] for _ in range(2)] == [False, False]  # frames 21..28
    _, _, terminated, _, info = env.step(3)  # frames 29, 30: game over
    assert terminated and "episode" in info
    env.reset()
    assert fake.resets == 2, "the real game over resets the emulator"


# ---------------------------------------------------------------- atari.fire_reset

def check_fire_reset(d):
    env, fake = chain(details(d, noop_reset=False), life_loss_at=(10,), game_over_at=50)
    env.reset(seed=0)
    assert fake.actions_since_reset() == [1] * 4 + [2] * 4, "FIRE, then action 2, after the real reset"
    assert env.step(3)[2], "frames 9..12: the life lost at frame 10"
    env.reset()
    assert fake.actions_since_reset() == [1] * 4 + [2] * 4 + [3] * 4 + [0] * 4 + [1] * 4 + [2] * 4, \
        "no-op, FIRE, 2 after the pseudo-reset of a life loss"


def test_atari_fire_reset_after_every_reset_real_and_pseudo():
    check_fire_reset(ON)


@pytest.mark.parametrize("meanings", [("NOOP", "UP", "RIGHT", "FIRE"), ("NOOP", "FIRE"), ("NOOP", "RIGHT", "LEFT")])
def test_atari_fire_reset_never_where_action_1_is_not_fire_or_fewer_than_3_actions(meanings):
    env, fake = chain(details(noop_reset=False), meanings=meanings)
    env.reset(seed=0)
    assert fake.actions_since_reset() == []
    assert not atari.has_fire_reset(fake)


def test_atari_fire_reset_resets_again_when_a_step_ends_the_game():
    # the FIRE step ends the game: reset, then action 2 on the new game
    env, fake = chain(details(noop_reset=False, frame_skip=False, episodic_life=False), game_over_at=1)
    env.reset(seed=0)
    assert [(kind, action) for kind, action, _ in fake.log] == \
        [("reset", None), ("step", 1), ("reset", None), ("step", 2), ("reset", None)]
    # action 2 loses a life: done at that level, so the inner reset is the pseudo-reset's no-op; the reference
    # returns the action-2 step's observation all the same
    env, fake = chain(details(noop_reset=False, frame_skip=False), life_loss_at=(2,))
    obs, _ = env.reset(seed=0)
    assert fake.actions_since_reset() == [1, 2, 0] and fake.resets == 1
    np.testing.assert_array_equal(obs, warp(fake.frame(fake.frame_id - 1)))


# ---------------------------------------------------------------- atari.warp_frame (structural)

def test_atari_warp_frame_gray_area_resize_equals_opencv():
    fake = FakeALE()
    frame = fake.frame(5)  # ALE's 210 x 160 RGB
    out = warp(frame)
    assert out.dtype == np.uint8 and out.shape == (84, 84)
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    np.testing.assert_array_equal(out, cv2.resize(gray, (84, 84), interpolation=cv2.INTER_AREA))
    assert (out != cv2.resize(gray, (84, 84), interpolation=cv2.INTER_LINEAR)).mean() > 0.5
    # independently of OpenCV, on a 168 x 168 frame: luma weights of R, G, B (not B, G, R), 2 x 2 area means
    square = np.random.default_rng(0).integers(0, 256, (168, 168, 3), dtype=np.uint8)
    r, g, b = (square[..., i].astype(np.float64) for i in range(3))
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    gray = cv2.cvtColor(square, cv2.COLOR_RGB2GRAY)
    assert np.abs(gray - luma).max() < 0.51  # OpenCV rounds fixed-point weights
    blocks = gray.astype(np.int64).reshape(84, 2, 84, 2).sum(axis=(1, 3))
    np.testing.assert_array_equal(warp(square), (blocks + 2) >> 2)
    # the chain's observations are warped frames
    env, fake = chain(details(noop_reset=False, fire_reset=False, frame_skip=False))
    obs, _ = env.reset(seed=0)
    assert env.observation_space.shape == (84, 84) and env.observation_space.dtype == np.uint8
    np.testing.assert_array_equal(obs, warp(fake.frame(fake.frame_id)))


# ---------------------------------------------------------------- atari.clip_reward

def check_clip_reward(d):
    env, _ = chain(details(d, noop_reset=False, frame_skip=False, fire_reset=False), life_loss_at=())
    env.reset(seed=0)
    rewards = [env.step(2)[1] for _ in range(8)]
    assert rewards == [np.sign(REWARDS[t % 8]) for t in range(1, 9)] == [1, -1, 1, 1, 1, -1, 1, 0]


def test_atari_clip_reward_sign():
    check_clip_reward(ON)


# ---------------------------------------------------------------- episode statistics

def test_atari_episode_statistics_are_full_game_raw_in_agent_steps():
    env, fake = chain(ON, life_loss_at=(50, 80), game_over_at=110, lives=3)  # no life lost in the reset steps
    env.reset(seed=3)
    steps, life_losses, learner = 0, 0, []
    for _ in range(100):
        _, reward, terminated, truncated, info = env.step(steps % 4)
        steps += 1
        learner.append(reward)
        if "episode" in info:
            break
        if terminated:
            assert "episode" not in info
            life_losses += 1
            env.reset()
    episode = info["episode"]
    assert life_losses == 2 and fake.resets == 1
    # every agent step of the game: the learner's, FIRE and 2 after the reset, no-op, FIRE, 2 after each life loss
    assert episode["l"] == steps + 2 + 3 * life_losses
    # every raw frame of the game across its lives, except the no-ops: the statistics sit above the no-op reset
    raw = sum(fake.step_rewards[expected_noops(3):])
    assert sum(fake.step_rewards[:expected_noops(3)]) != 0
    assert episode["r"] == pytest.approx(raw)
    assert episode["r"] != pytest.approx(sum(learner)), "the learner's rewards are clipped, the statistics not"


# ---------------------------------------------------------------- atari.frame_stack

def frames(value: int, num_envs: int = 2) -> np.ndarray:
    """One 84 x 84 frame per env, env i filled with value + 100 i."""
    return np.stack([np.full((84, 84), value + 100 * i, np.uint8) for i in range(num_envs)])


def stack_values(obs: np.ndarray) -> list[list[int]]:
    """Each env's stack as the values its frames are filled with (asserting they are uniform)."""
    assert (obs == obs[..., :1, :1]).all()
    return obs[:, :, 0, 0].tolist()


def check_frame_stack(d):
    stack = make_frame_stack(2, d)
    obs = stack.reset(frames(1))
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    assert stack_values(obs) == [[0, 0, 0, 1], [0, 0, 0, 101]]
    obs, _ = stack.step(frames(2), np.array([False, False]))
    obs, _ = stack.step(frames(3), np.array([False, False]))
    assert stack_values(obs) == [[0, 1, 2, 3], [0, 101, 102, 103]], "the newest frame last"
    obs, _ = stack.step(frames(4), np.array([False, False]))
    obs, _ = stack.step(frames(5), np.array([False, True]))
    assert stack_values(obs) == [[2, 3, 4, 5], [0, 0, 0, 105]], "zeroed on done, then the new frame"


def test_atari_frame_stack_zeroed_on_done_newest_last():
    check_frame_stack(ON)


def test_atari_frame_stack_repeat_first_option_and_final_stacks():
    stack = FrameStack(3, repeat_first=True)
    assert stack_values(stack.reset(frames(1, 3))) == [[1] * 4, [101] * 4, [201] * 4]
    obs, final = stack.step(frames(2, 3), np.array([False, False, False]), final_frames=frames(50, 3))
    assert final is obs, "nothing ended: no copy"
    buffer = obs
    obs, final = stack.step(frames(3, 3), np.array([True, False, True]), final_frames=frames(30, 3))
    assert obs is buffer, "updated in place"
    assert stack_values(obs) == [[3] * 4, [101, 101, 102, 103], [203] * 4], "a new episode repeats its first frame"
    assert stack_values(final[[0, 2]]) == [[1, 1, 2, 30], [201, 201, 202, 230]], \
        "each done env's last stack: the episode's frames, its final frame newest"
    zeroing = FrameStack(1)
    zeroing.reset(frames(1, 1))
    _, final = zeroing.step(frames(2, 1), np.array([True]), final_frames=frames(9, 1))
    assert stack_values(final) == [[0, 0, 1, 9]]


# ---------------------------------------------------------------- switches

def test_atari_switches_off_give_the_off_means_behaviour():
    off = {detail_id: False for detail_id in atari.SWITCHES}
    env, fake = chain(off, life_loss_at=(2,), game_over_at=5)
    obs, _ = env.reset(seed=0)
    assert fake.actions_since_reset() == [], "no no-ops, no FIRE"
    np.testing.assert_array_equal(obs, warp(fake.frame(fake.frame_id)))
    rewards = []
    for t in range(1, 6):
        obs, reward, terminated, truncated, info = env.step(3)
        assert len(fake.actions_since_reset()) == t, "frameskip 1"
        np.testing.assert_array_equal(obs, warp(fake.frame(fake.frame_id)))  # the raw frame, no max
        assert terminated == (t == 5), "the life lost at frame 2 is not terminal"
        rewards.append(reward)
    assert rewards == [REWARDS[t] for t in range(1, 6)], "raw rewards"
    assert info["episode"]["l"] == 5
    stack = make_frame_stack(2, off)
    assert stack.reset(frames(1)).shape == (2, 1, 84, 84), "a stack of 1"
    obs, _ = stack.step(frames(2), np.array([True, False]))
    assert stack_values(obs) == [[2], [102]]
    with pytest.raises(ValueError, match="unknown Atari detail"):
        atari.is_on({"atari.noop_rest": False}, "atari.noop_reset")


CHECKS = {
    "atari.noop_reset": check_noop_reset,
    "atari.frame_skip": check_frame_skip,
    "atari.episodic_life": check_episodic_life,
    "atari.fire_reset": check_fire_reset,
    "atari.clip_reward": check_clip_reward,
    "atari.frame_stack": check_frame_stack,
}


def test_atari_every_switch_has_a_check():
    assert sorted(CHECKS) == sorted(atari.SWITCHES)


@pytest.mark.parametrize("detail_id", sorted(CHECKS))
def test_atari_check_passes_on_and_fails_off(detail_id):
    CHECKS[detail_id](details(ON, **{detail_id.split(".")[1]: True}))
    with pytest.raises(AssertionError):
        CHECKS[detail_id](details(ON, **{detail_id.split(".")[1]: False}))


# ---------------------------------------------------------------- the real emulator

def test_atari_breakout_life_losses_are_dones_while_the_game_goes_on():
    env = make_atari_env("BreakoutNoFrameskip-v4")
    ale = env.unwrapped.ale
    obs, _ = env.reset(seed=1)
    assert obs.dtype == np.uint8 and obs.shape == (84, 84)
    assert 1 + 8 <= ale.getEpisodeFrameNumber() <= 30 + 8, "1..30 no-op frames, then FIRE and 2 (4 frames each)"
    rng = np.random.default_rng(0)
    steps, life_losses, clipped, lives = 0, 0, 0.0, [ale.lives()]
    for _ in range(3000):
        obs, reward, terminated, truncated, info = env.step(int(rng.integers(4)))
        steps += 1
        clipped += reward
        assert obs.dtype == np.uint8 and obs.shape == (84, 84) and reward in (-1.0, 0.0, 1.0)
        if "episode" in info:
            break
        if terminated or truncated:
            assert terminated and not truncated
            life_losses += 1
            assert 0 < ale.lives() < lives[-1], "a life-loss done, with lives left"
            lives.append(ale.lives())
            frame = ale.getEpisodeFrameNumber()
            env.reset()
            assert ale.getEpisodeFrameNumber() == frame + 12, "no-op, FIRE, 2 in the same game: no emulator reset"
    assert life_losses == 4 and lives == [5, 4, 3, 2, 1], "Breakout: 5 lives, the last loss ends the game"
    assert terminated and ale.lives() == 0
    episode = info["episode"]
    assert episode["l"] == steps + 2 + 3 * life_losses, "full-game length in agent steps"
    assert episode["r"] >= clipped >= 0, "raw, full-game return"
    env.reset()
    assert ale.getEpisodeFrameNumber() <= 38, "game over resets the emulator"


def test_atari_make_atari_env_settings_and_frame_limit():
    env = make_atari_env("ALE/Breakout-v5")
    raw = env.unwrapped
    assert raw._frameskip == 1 and raw.ale.getFloat("repeat_action_probability") == 0.0
    assert raw.ale.getInt("max_num_frames_per_episode") == 400_000  # ale-py's own cap is 108k
    assert make_atari_env("ALE/Breakout-v5", repeat_action_probability=0.25).unwrapped.ale.getFloat(
        "repeat_action_probability") == 0.25
    assert make_atari_env("SpaceInvadersNoFrameskip-v4").unwrapped.ale.getInt("max_num_frames_per_episode") == 300_000
    # no no-ops: FIRE and 2 take frames 1..8, then NOOPs; the first life is lost at frame 100
    env = make_atari_env("BreakoutNoFrameskip-v4", {"atari.noop_reset": False}, max_frames=90)
    env.reset(seed=0)
    for _ in range(30):
        _, _, terminated, truncated, info = env.step(0)
        if terminated or truncated:
            break
    assert truncated and not terminated and "episode" in info and env.unwrapped.ale.getEpisodeFrameNumber() == 90
    env.reset()
    assert env.unwrapped.ale.getEpisodeFrameNumber() == 8, "a truncation is a game over: the emulator is reset"


# ---------------------------------------------------------------- training on the Atari vector env

def atari_cfg(preset: str = "atari", **changes):
    from proximal.config import preset as make_preset

    cfg = make_preset(preset)
    cfg.num_envs, cfg.num_steps, cfg.num_minibatches, cfg.total_steps = 2, 32, 2, 128
    for name, value in changes.items():
        setattr(cfg, name, value)
    return cfg


def test_atari_vector_env_stacks_frames_zeroes_on_done_and_reports_full_games():
    from proximal.envs import make_envs
    from proximal.envs.atari_vector import AtariVectorEnv

    envs = make_envs("BreakoutNoFrameskip-v4", 2, cfg=atari_cfg())
    assert isinstance(envs, AtariVectorEnv) and len(envs.groups.groups) == 2, "the preset steps envs in workers"
    assert envs.single_observation_space.shape == (4, 84, 84) and envs.single_observation_space.dtype == np.uint8
    obs = envs.reset(seed=3)
    assert obs.dtype == np.uint8 and (obs[:, :3] == 0).all() and obs[:, 3].any(), "zeroed stack, newest last"
    rng = np.random.default_rng(0)
    dones, episodes = 0, []
    for _ in range(1500):
        prev = obs.copy()
        step = envs.step(rng.integers(4, size=2))
        obs = step.obs
        done = step.terminated | step.truncated
        for i in range(2):
            if done[i]:
                dones += 1
                assert (obs[i, :3] == 0).all(), "zeroed on every done, life losses included"
                np.testing.assert_array_equal(step.final_obs[i, :3], prev[i, 1:])
            else:
                np.testing.assert_array_equal(obs[i, :3], prev[i, 1:])
        episodes += step.episodes
        if len(episodes) >= 2:
            break
    assert dones >= 5 * len(episodes), "5 lives: a done per life, an episode per game"
    assert all(length > 100 for _, _, length in episodes), "full-game lengths in agent steps"
    envs.close()
    assert make_envs("ALE/Breakout-v5", 1, cfg=atari_cfg()).single_observation_space.shape == (4, 84, 84)
    off = atari_cfg()
    off.details["atari.frame_stack"] = False
    assert make_envs("BreakoutNoFrameskip-v4", 1, cfg=off).single_observation_space.shape == (1, 84, 84)


@pytest.mark.parametrize("preset_name", ["atari", "atari-lstm"])
def test_atari_ratio_is_one_over_a_collected_breakout_batch(preset_name, monkeypatch):
    """The Nature CNN and the CNN-LSTM (the reference's cnn and cnn_lstm), fp32: two rollouts, so that the LSTM's
    second starts from a state that is not zero, each with life losses that reset it on the way."""
    from proximal.fast_paths import make_actor
    from proximal.envs import make_envs
    from proximal.rollout import collect_rollout
    from proximal.trainer import new_state

    cfg = atari_cfg(preset=preset_name)
    envs = make_envs(cfg.env_id, cfg.num_envs, cfg=cfg)
    state = new_state(cfg, envs, torch.device("cpu"))
    assert (state.policy.core is not None) == (preset_name == "atari-lstm")
    actor = make_actor(state.policy, torch.device("cpu"))
    for _ in range(2):
        state.obs, state.carry, _, _ = collect_rollout(envs, actor, state.rollout, state.obs, state.carry, state.rng,
                                                       0, cfg)
    envs.close()
    if preset_name == "atari-lstm":
        assert state.rollout.start_state.abs().sum() > 0
    batch = assert_ratio_is_one(state, cfg, monkeypatch, atol=1e-5)
    assert batch["obs"].dtype == torch.uint8 and batch["obs"].shape == (64, 4, 84, 84)


def test_atari_preset_trains_on_breakout_with_uint8_storage(tmp_path):
    import torch

    from proximal.nets import NatureCNN
    from proximal.trainer import train

    cfg = atari_cfg()
    state = train(cfg, tmp_path / "run", quiet=True)
    assert state.update == 2 and state.global_step == 128
    assert isinstance(state.policy.trunk, NatureCNN) and state.rollout.obs.dtype == np.uint8
    assert state.rollout.obs.max() > 0
    assert all(torch.isfinite(p).all() for p in state.policy.parameters())
    assert (tmp_path / "run" / "updates.csv").is_file()


def test_atari_cli_trains_the_atari_preset(tmp_path):
    from proximal.cli import main

    run_dir = tmp_path / "cli"
    code = main(["train", "--preset", "atari", "--total-steps", "256", "--num-envs", "2", "--num-steps", "32",
                 "--num-minibatches", "2", "--quiet", "--run-dir", str(run_dir)])
    assert code in (0, None)
    assert any((run_dir / "checkpoints").glob("*.pt"))


def test_atari_resume_continues_exactly(tmp_path):
    """The emulators (ALE cloneState with its RNG), the chain's wrappers and the frame stacks are checkpointed:
    a run stopped and resumed ends with the parameters and episodes of the uninterrupted run, bit for bit."""
    from proximal import checkpoint
    from resume_check import assert_resume_is_exact

    assert_resume_is_exact(atari_cfg(total_steps=320, checkpoint_every=0), tmp_path, stop_at=2)
    a = checkpoint.load(checkpoint.latest(tmp_path / "full"))
    b = checkpoint.load(checkpoint.latest(tmp_path / "resumed"))
    assert a["update"] == b["update"] == 5
    assert a["env"]["stack"].any() and torch.equal(a["env"]["stack"], b["env"]["stack"])


def restored_against_stepped_on(rng, num_envs: int, options, fresh_options, warmup: int, compared: int):
    """Breakout envs (``options``) reset with seed 7 and stepped ``warmup`` random steps, their state captured, then
    ``compared`` more steps: (those transitions, the same actions' transitions from fresh envs (``fresh_options``)
    reset with another seed and given the captured state). Each transition: obs, reward, terminated, truncated,
    episodes."""
    from proximal.envs.atari_vector import AtariVectorEnv

    def run(envs, actions):
        return [(s.obs.copy(), s.reward.copy(), s.terminated.copy(), s.truncated.copy(), s.episodes)
                for s in map(envs.step, actions)]

    envs = AtariVectorEnv("BreakoutNoFrameskip-v4", num_envs, options=options)
    envs.reset(seed=7)
    run(envs, rng.integers(4, size=(warmup, num_envs)))
    state = envs.get_state()
    later = rng.integers(4, size=(compared, num_envs))
    expected = run(envs, later)
    envs.close()
    fresh = AtariVectorEnv("BreakoutNoFrameskip-v4", num_envs, options=fresh_options)
    fresh.reset(seed=99)  # another seed: only the restored state makes the envs repeat the first ones
    fresh.set_state(state)
    got = run(fresh, later)
    fresh.close()
    return expected, got


def assert_same_transitions(expected, got) -> None:
    assert len(expected) == len(got)
    for a, b in zip(expected, got):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


def test_atari_env_state_round_trip_continues_every_game_exactly():
    """Capture mid-game (a life lost, no-op RNG drawn, the frame-skip buffer filled), step on, restore into fresh
    envs: the restored envs repeat the same observations, rewards, dones and episodes."""
    from proximal.envs.contract import EnvOptions

    expected, got = restored_against_stepped_on(np.random.default_rng(1), 2, EnvOptions(workers=2), EnvOptions(),
                                                warmup=300, compared=400)
    assert any(t.any() for _, _, t, _, _ in expected), "the compared stretch holds life losses"
    assert_same_transitions(expected, got)


def test_atari_workers_give_the_same_transitions_as_one_process():
    from proximal.envs.atari_vector import AtariVectorEnv
    from proximal.envs.contract import EnvOptions

    actions = np.random.default_rng(2).integers(4, size=(200, 3))
    runs = []
    for workers in (1, 2):
        envs = AtariVectorEnv("BreakoutNoFrameskip-v4", 3, options=EnvOptions(workers=workers))
        first = envs.reset(seed=5).copy()
        steps = [envs.step(a) for a in actions]
        runs.append((first, [(s.obs.copy(), s.final_obs.copy(), s.reward, s.terminated, s.episodes) for s in steps]))
        envs.close()
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    for a, b in zip(runs[0][1], runs[1][1]):
        for x, y in zip(a[:4], b[:4]):
            np.testing.assert_array_equal(x, y)
        assert a[4] == b[4]


def test_atari_ale_options_reach_the_emulator_and_bad_ones_are_refused():
    from proximal.config import validate
    from proximal.envs import make_envs
    from proximal.errors import UserError

    cfg = atari_cfg(ale_options="repeat_action_probability=0.25")
    envs = make_envs("ALE/Breakout-v5", 1, cfg=cfg)
    assert envs.groups.call(_sticky)[0] == 0.25
    envs.close()
    default = make_envs("ALE/Breakout-v5", 1, cfg=atari_cfg())
    assert default.groups.call(_sticky)[0] == 0.0, "v5 ids run without sticky actions by default"
    default.close()
    with pytest.raises(UserError, match="does not take these emulator settings"):
        make_envs("ALE/Breakout-v5", 1, cfg=atari_cfg(ale_options="no_such_setting=1"))
    with pytest.raises(UserError, match="--off atari.frame_skip"):
        validate(atari_cfg(ale_options="frameskip=4"))
    with pytest.raises(UserError, match="key=value"):
        validate(atari_cfg(ale_options="frameskip"))
    with pytest.raises(UserError, match="--backend python"):
        validate(atari_cfg(ale_options="repeat_action_probability=0.25", backend="ale"))


def _sticky(envs) -> list:
    return [envs[0].unwrapped.ale.getFloat("repeat_action_probability")]


def test_atari_repeat_first_option_fills_new_stacks_with_the_first_frame():
    from proximal.envs import make_envs

    envs = make_envs("BreakoutNoFrameskip-v4", 2, cfg=atari_cfg(atari_repeat_first=True))
    obs = envs.reset(seed=3)
    for k in range(3):
        np.testing.assert_array_equal(obs[:, k], obs[:, 3])
    envs.close()


def test_atari_env_state_round_trip_keeps_the_sticky_action_stream():
    from proximal.envs.contract import EnvOptions

    # the emulator's RNG drives sticky actions alone, which the reference's settings switch off: with them on, a
    # restored run repeats the same ones only if the state carries that RNG (cloneState(include_rng=True))
    options = EnvOptions(ale_options={"repeat_action_probability": 0.25})
    assert_same_transitions(*restored_against_stepped_on(np.random.default_rng(2), 1, options, options,
                                                         warmup=100, compared=200))
