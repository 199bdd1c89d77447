"""Observation normalization and reward scaling (cont.obs_norm, cont.obs_clip, cont.reward_scaling,
cont.reward_clip): the running statistics against numpy with the reference's prior, fed the exact sequence a
vector env produces; the clips; reward scaling against hand numbers; the normalized final observation of the
truncation bootstrap; statistics in checkpoints, restored on resume and frozen in evaluation; ratio-is-one.
tests/test_details_meta.py runs each ``check_*`` with its detail off too, and expects it to fail."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import proximal.evaluate as evaluate_mod
from proximal import checkpoint
from proximal.fast_paths import make_actor
from proximal.cli import main
from proximal.config import MUJOCO_NORMALIZATION, preset
from proximal.envs import Step, make_envs
from proximal.envs.normalize import NormalizedVecEnv, RunningMeanStd, normalize_envs
from proximal.evaluate import evaluate, load_policy
from proximal.rollout import collect_rollout
from proximal.trainer import new_state
from ratio_check import assert_ratio_is_one
from resume_check import assert_runs_agree, rows, train_stopped_and_resumed
from test_trainer import tiny

PRIOR_COUNT = 1e-4


def with_prior(data: np.ndarray):
    """numpy's mean and population variance of ``data`` (first axis) together with the reference's prior, a
    pseudo-sample of weight 1e-4 with mean 0 and variance 1; and the total count."""
    data = np.asarray(data, np.float64)
    total = len(data) + PRIOR_COUNT
    mean = data.sum(0) / total
    var = (PRIOR_COUNT * (1.0 + mean ** 2) + ((data - mean) ** 2).sum(0)) / total
    return mean, var, total


def normalized(obs, mean, var, clip: bool):
    z = (np.asarray(obs, np.float64) - mean) / np.sqrt(var + 1e-8)
    return np.clip(z, -10, 10) if clip else z


class Recorder:
    """A vector env that records (copies of) what ``inner`` returns."""

    def __init__(self, inner):
        self.inner, self.resets, self.steps = inner, [], []
        self.num_envs = inner.num_envs
        self.single_observation_space = inner.single_observation_space
        self.single_action_space = inner.single_action_space

    def reset(self, seed):
        obs = self.inner.reset(seed=seed)
        self.resets.append(obs.copy())
        return obs

    def step(self, actions):
        s = self.inner.step(actions)
        self.steps.append(Step(s.obs.copy(), s.reward.copy(), s.terminated.copy(), s.truncated.copy(),
                               s.final_obs.copy(), list(s.episodes)))
        return s

    def get_state(self):
        return self.inner.get_state()

    def set_state(self, state):
        self.inner.set_state(state)

    def close(self):
        self.inner.close()


class ScriptedVecEnv:
    """A vector env that plays a script: ``reset`` returns ``reset_obs``, step k returns ``steps[k]`` whatever
    the actions (1-d observations, N = len(reset_obs))."""

    single_observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float64)
    single_action_space = gym.spaces.Discrete(2)

    def __init__(self, reset_obs, steps):
        self.reset_obs, self.script = np.asarray(reset_obs, np.float64), list(steps)
        self.num_envs = len(self.reset_obs)

    def reset(self, seed):
        return self.reset_obs.copy()

    def step(self, actions):
        obs, reward, terminated, truncated = (np.asarray(x) for x in self.script.pop(0))
        obs = np.asarray(obs, np.float64)
        return Step(obs, np.asarray(reward, np.float64), terminated.astype(bool), truncated.astype(bool),
                    obs.copy(), [])

    def get_state(self):
        return None

    def set_state(self, state):
        pass

    def close(self):
        pass


def all_on(cfg):
    for detail_id in MUJOCO_NORMALIZATION:
        cfg.details[detail_id] = True
    return cfg


# --- running statistics ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(), (3,)])
def test_running_mean_std_equals_numpy_with_the_prior(shape):
    rng = np.random.default_rng(0)
    rms = RunningMeanStd(shape)
    seen = []
    for size in (1, 3, 7, 1, 2, 50, 4):
        batch = rng.normal(5.0, 3.0, (size, *shape))
        rms.update(batch)
        seen.append(batch)
        mean, var, count = with_prior(np.concatenate(seen))
        assert rms.mean.dtype == rms.var.dtype == np.float64
        np.testing.assert_allclose(rms.mean, mean, rtol=1e-12)
        np.testing.assert_allclose(rms.var, var, rtol=1e-12)
        assert rms.count == pytest.approx(count, rel=1e-15)


def test_running_mean_std_starts_from_the_prior():
    rms = RunningMeanStd((2,))
    assert (rms.mean == 0).all() and (rms.var == 1).all() and rms.count == 1e-4
    rms.update(np.array([[4.0, -2.0]]))  # one sample: the prior's weight is still visible
    mean, var, _ = with_prior(np.array([[4.0, -2.0]]))
    np.testing.assert_allclose(rms.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(rms.var, var, rtol=1e-12)
    assert (rms.var > 0).all()


# --- cont.obs_norm -----------------------------------------------------------------------------------------------

def check_obs_norm(cfg):
    """Fed what a vector env of Counter envs produces (obs = (episode, step), episodes of 3-6 steps under a time
    limit of 5): the statistics count the reset batch and every returned batch, whose rows after an episode end
    are the new episode's first observation, and never the final observations; each returned observation is
    normalized with the statistics of that moment."""
    cfg.env_id, cfg.num_envs = "proximal-test/Counter-v0", 3
    raw = Recorder(make_envs(cfg.env_id, cfg.num_envs))
    envs, normalizer = normalize_envs(raw, cfg)
    returned = [envs.reset(seed=1)]
    finals = []
    for _ in range(40):
        step = envs.step(np.zeros(cfg.num_envs, dtype=np.int64))
        returned.append(step.obs)
        finals.append(step.final_obs)
    envs.close()
    assert normalizer is not None, "observations are normalized"
    dones = [s.terminated | s.truncated for s in raw.steps]
    assert sum(d.sum() for d in dones) >= 10 and any(s.truncated.any() for s in raw.steps)

    seen = [raw.resets[0]] + [s.obs for s in raw.steps]  # what the statistics must see
    clip = cfg.on("cont.obs_clip")
    for t, obs in enumerate(seen):
        mean, var, _ = with_prior(np.concatenate(seen[:t + 1]))
        assert returned[t].dtype == np.float32
        np.testing.assert_allclose(returned[t], normalized(obs, mean, var, clip), rtol=1e-6, atol=1e-6)
        if t:  # the final observations of the episodes that ended: normalized with the same statistics
            done = dones[t - 1]
            np.testing.assert_allclose(finals[t - 1][done], normalized(raw.steps[t - 1].final_obs[done], mean, var,
                                                                       clip), rtol=1e-6, atol=1e-6)
    mean, var, count = with_prior(np.concatenate(seen))
    assert normalizer.obs_rms.count == pytest.approx(count, rel=1e-15) and count == 41 * 3 + PRIOR_COUNT
    np.testing.assert_allclose(normalizer.obs_rms.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(normalizer.obs_rms.var, var, rtol=1e-12)
    # the test tells the two apart: counting the final observations too would give other statistics
    with_finals, _, _ = with_prior(np.concatenate(seen + [s.final_obs[d] for s, d in zip(raw.steps, dones)]))
    assert not np.allclose(with_finals, mean, rtol=1e-3)


def test_cont_obs_norm_counts_reset_observations_never_final_ones(cfg):
    cfg.details["cont.obs_norm"] = True
    check_obs_norm(cfg)


def test_cont_obs_norm_with_clip_counts_the_same_sequence(cfg):
    all_on(cfg)
    check_obs_norm(cfg)


@pytest.mark.parametrize("env_id", ["proximal-test/Counter-v0", "proximal-test/CounterU8-v0"])
def test_cont_obs_norm_rollout_stores_the_observations_of_collection_time(cfg, env_id):
    """Stored observations are the ones the actor saw, normalized with the statistics of their step, not
    renormalized later with newer statistics; float32 whatever the env's dtype (uint8 storage would wrap them)."""
    all_on(cfg)
    cfg.env_id, cfg.num_envs, cfg.num_steps = env_id, 3, 30
    raw = Recorder(make_envs(cfg.env_id, cfg.num_envs))
    envs, normalizer = normalize_envs(raw, cfg)
    state = new_state(cfg, envs, torch.device("cpu"), normalizer)
    state.obs, state.carry, _, _ = collect_rollout(envs, make_actor(state.policy, torch.device("cpu")), state.rollout, state.obs, state.carry, state.rng, 0, cfg)
    envs.close()
    seen = [raw.resets[0]] + [s.obs for s in raw.steps]
    buf = state.rollout
    for t in range(cfg.num_steps + 1):
        mean, var, _ = with_prior(np.concatenate(seen[:t + 1]))
        stored = buf.obs[t] if t < cfg.num_steps else state.obs
        np.testing.assert_allclose(stored, normalized(seen[t], mean, var, True), rtol=1e-6, atol=1e-6)
    final_mean, final_var, _ = with_prior(np.concatenate(seen))
    assert not np.allclose(buf.obs[5], normalized(seen[5], final_mean, final_var, True), rtol=1e-3)
    assert buf.obs.dtype == np.float32


# --- cont.obs_clip ----------------------------------------------------------------------------------------------

def tight_statistics(rms: RunningMeanStd) -> None:
    """Statistics of a million samples with mean 0 and std 0.01: one more batch barely moves them."""
    rms.mean, rms.var, rms.count = np.zeros_like(rms.mean), np.full_like(rms.var, 1e-4), 1e6


def check_obs_clip(cfg):
    cfg.details["cont.obs_norm"] = True  # the clip acts on normalized observations
    obs = [[1.0], [-1.0], [0.0005]]
    envs, normalizer = normalize_envs(ScriptedVecEnv([[0.0]] * 3, [(obs, [0, 0, 0], [0, 1, 0], [0, 0, 0])]), cfg)
    envs.reset(seed=0)
    tight_statistics(normalizer.obs_rms)
    step = envs.step(np.zeros(3, dtype=np.int64))
    assert step.obs[0, 0] == 10.0 and step.obs[1, 0] == -10.0, "normalized ~±100, clipped to ±10"
    assert step.obs[2, 0] == pytest.approx(0.05, rel=0.02), "inside the bounds: unchanged"
    assert step.final_obs[1, 0] == -10.0, "the final observation is clipped too"


def test_cont_obs_clip_at_ten(cfg):
    cfg.details["cont.obs_clip"] = True
    check_obs_clip(cfg)


# --- cont.reward_scaling ------------------------------------------------------------------------------------------

# two envs, four steps: env 0 terminates at step 2, env 1 is truncated at step 3
REWARDS = [[1.0, 2.0], [3.0, -1.0], [2.0, 1.0], [-2.0, 4.0]]
TERMINATED = [[0, 0], [1, 0], [0, 0], [0, 0]]
TRUNCATED = [[0, 0], [0, 0], [0, 1], [0, 0]]


def scripted_rewards(cfg):
    script = [([[0.0], [0.0]], r, te, tr) for r, te, tr in zip(REWARDS, TERMINATED, TRUNCATED)]
    envs, normalizer = normalize_envs(ScriptedVecEnv([[0.0], [0.0]], script), cfg)
    envs.reset(seed=0)
    return [envs.step(np.zeros(2, dtype=np.int64)).reward for _ in REWARDS], normalizer


def check_reward_scaling(cfg):
    scaled, _ = scripted_rewards(cfg)
    g = cfg.reward_scaling_gamma
    # ret <- ret * g + r, then the N rets join the statistics, then ret <- 0 where the episode ended
    rets = [
        [1.0, 2.0],
        [1.0 * g + 3.0, 2.0 * g - 1.0],  # env 0 terminated: its ret is 0 afterwards
        [0.0 * g + 2.0, (2.0 * g - 1.0) * g + 1.0],  # env 1 truncated: also 0 afterwards
        [2.0 * g - 2.0, 0.0 * g + 4.0],
    ]
    for k in range(4):
        _, var, _ = with_prior(np.concatenate(rets[:k + 1]))
        expected = np.asarray(REWARDS[k]) / np.sqrt(var + 1e-8)  # no mean subtracted
        if cfg.on("cont.reward_clip"):
            expected = np.clip(expected, -10, 10)
        np.testing.assert_allclose(scaled[k], expected, rtol=1e-12)


def test_cont_reward_scaling_hand_numbers(cfg):
    cfg.details["cont.reward_scaling"] = True
    check_reward_scaling(cfg)


def test_cont_reward_scaling_is_not_gymnasiums_normalize_reward(cfg):
    """gymnasium's NormalizeReward zeroes ret before adding the reward and on termination only: on the same
    script (a truncation at step 3), its rewards differ from the reference's at step 4."""
    cfg.details["cont.reward_scaling"] = True
    scaled, _ = scripted_rewards(cfg)
    g, ret, seen, gymnasium_style = cfg.reward_scaling_gamma, np.zeros(2), [], []
    for r, te in zip(REWARDS, TERMINATED):
        ret = ret * g * (1 - np.asarray(te)) + np.asarray(r)
        seen.append(ret.copy())
        _, var, _ = with_prior(np.concatenate(seen))
        gymnasium_style.append(np.asarray(r) / np.sqrt(var + 1e-8))
    np.testing.assert_allclose(scaled[0], gymnasium_style[0], rtol=1e-12)  # no episode end yet: the same
    assert not np.allclose(scaled[2], gymnasium_style[2], rtol=1e-6)
    assert not np.allclose(scaled[3], gymnasium_style[3], rtol=1e-6)


def test_cont_reward_scaling_discounts_with_reward_scaling_gamma_not_gamma(cfg):
    """The reference's VecNormalize keeps its own 0.99 whatever PPO's gamma. One env, reward 1 twice: the second
    return is 1.99 (gamma 0.5 would give 1.5); the two returns' population std is 0.495 (0.25), so the second
    reward scales to 1 / 0.495 = 2.0202 (4.0), up to the prior's weight of 1e-4."""
    cfg.details["cont.reward_scaling"] = True
    cfg.gamma = 0.5
    one_env = [([[0.0]], [1.0], [0], [0])] * 2

    def second_reward():
        envs, _ = normalize_envs(ScriptedVecEnv([[0.0]], one_env), cfg)
        envs.reset(seed=0)
        return [envs.step(np.zeros(1, dtype=np.int64)).reward[0] for _ in one_env][1]

    assert cfg.reward_scaling_gamma == 0.99
    assert second_reward() == pytest.approx(1 / 0.495, rel=1e-3)
    _, var, _ = with_prior(np.array([1.0, 1.99]))
    assert second_reward() == pytest.approx(1 / np.sqrt(var + 1e-8), rel=1e-12)
    cfg.reward_scaling_gamma = 0.5
    assert second_reward() == pytest.approx(4.0, rel=1e-3)


def test_cont_reward_scaling_returns_start_again_at_a_reset(cfg):
    """A reset starts every env's episode, so every discounted return starts at 0 again (a resume whose envs could
    not be captured resets them after the checkpoint's returns were loaded). One env, reward 1, reset between the
    two steps: both returns are 1, and the second reward scales to 1 / sqrt(var(1, 1) with the prior) ~ 100, where
    a return carried over (1.99) would give ~2.02."""
    cfg.details["cont.reward_scaling"] = True
    envs, _ = normalize_envs(ScriptedVecEnv([[0.0]], [([[0.0]], [1.0], [0], [0])] * 2), cfg)
    envs.reset(seed=0)
    envs.step(np.zeros(1, np.int64))
    envs.reset(seed=0)
    reward = envs.step(np.zeros(1, np.int64)).reward[0]
    _, var, _ = with_prior(np.array([1.0, 1.0]))
    assert reward == pytest.approx(1 / np.sqrt(var + 1e-8), rel=1e-12)


# --- cont.reward_clip ---------------------------------------------------------------------------------------------

def check_reward_clip(cfg):
    cfg.details["cont.reward_scaling"] = True  # the clip acts on scaled rewards
    envs, normalizer = normalize_envs(ScriptedVecEnv([[0.0]] * 3, [([[0.0]] * 3, [1.0, -1.0, 0.001], [0] * 3,
                                                                    [0] * 3)]), cfg)
    envs.reset(seed=0)
    tight_statistics(normalizer.ret_rms)
    reward = envs.step(np.zeros(3, dtype=np.int64)).reward
    assert reward[0] == 10.0 and reward[1] == -10.0, "scaled ~±99, clipped to ±10"
    assert reward[2] == pytest.approx(0.099, rel=0.02), "inside the bounds: unchanged"


def test_cont_reward_clip_at_ten(cfg):
    cfg.details["cont.reward_clip"] = True
    check_reward_clip(cfg)


# --- the truncation bootstrap sees the normalized final observation -----------------------------------------------

def test_opt_truncation_bootstrap_values_the_normalized_final_observation(cfg):
    all_on(cfg)
    cfg.env_id, cfg.num_envs, cfg.num_steps = "proximal-test/Counter-v0", 3, 60
    raw = Recorder(make_envs(cfg.env_id, cfg.num_envs))
    envs, normalizer = normalize_envs(raw, cfg)
    state = new_state(cfg, envs, torch.device("cpu"), normalizer)
    state.obs, state.carry, _, _ = collect_rollout(envs, make_actor(state.policy, torch.device("cpu")), state.rollout, state.obs, state.carry, state.rng, 0, cfg)
    envs.close()
    seen = [raw.resets[0]] + [s.obs for s in raw.steps]
    bootstrapped = 0
    for t, s in enumerate(raw.steps):
        mean, var, _ = with_prior(np.concatenate(seen[:t + 2]))  # the statistics after step t
        for e in np.flatnonzero(s.truncated & ~s.terminated):
            final = torch.tensor(normalized(s.final_obs[e:e + 1], mean, var, True), dtype=torch.float32)
            raw_final = torch.tensor(s.final_obs[e:e + 1], dtype=torch.float32)
            with torch.no_grad():
                expected, unnormalized = state.policy.value(final).item(), state.policy.value(raw_final).item()
            stored = state.rollout.final_values[t, e]
            assert stored == pytest.approx(expected, abs=1e-5)
            assert abs(stored - unnormalized) > 1e-4
            bootstrapped += 1
    assert bootstrapped >= 3
    # valuing the final observations did not update the statistics
    assert normalizer.obs_rms.count == len(seen) * cfg.num_envs + PRIOR_COUNT


# --- trainer, checkpoints, resume, evaluation ---------------------------------------------------------------------

def test_classic_envs_are_not_wrapped(cfg):
    envs = make_envs(cfg.env_id, 2)
    assert normalize_envs(envs, cfg) == (envs, None)
    envs.close()
    mujoco = preset("mujoco")
    assert all(mujoco.on(i) for i in MUJOCO_NORMALIZATION) and not any(cfg.on(i) for i in MUJOCO_NORMALIZATION)


@pytest.fixture(scope="module")
def normalized_runs(tmp_path_factory):
    """CartPole with all four switches on: an uninterrupted run of 6 updates, and one stopped after 3 and
    resumed."""
    threads = torch.get_num_threads()
    try:
        return train_stopped_and_resumed(tiny(all_on(preset("classic"))), tmp_path_factory.mktemp("normalized"),
                                         stop_at=3)
    finally:
        torch.set_num_threads(threads)


def test_statistics_saved_as_float64_tensors_and_plain_values(normalized_runs):
    root = normalized_runs.root
    payload = checkpoint.load(checkpoint.checkpoint_path(root / "resumed", 3))  # weights-only load
    saved = payload["normalizer"]
    for key in ("mean", "var"):
        assert saved["obs"][key].dtype == saved["ret"][key].dtype == torch.float64
    assert saved["obs"]["mean"].shape == (4,) and saved["returns"].dtype == torch.float64
    assert isinstance(saved["obs"]["count"], float) and isinstance(saved["ret"]["count"], float)
    # 2 envs: the reset batch and 3 updates x 32 steps of observations; 96 batches of returns
    assert saved["obs"]["count"] == pytest.approx(2 * (1 + 96) + PRIOR_COUNT, rel=1e-15)
    assert saved["ret"]["count"] == pytest.approx(2 * 96 + PRIOR_COUNT, rel=1e-15)


def test_resumed_run_with_normalization_equals_uninterrupted_run(normalized_runs):
    assert_runs_agree(normalized_runs)
    a, b = normalized_runs.full.normalizer.state_dict(), normalized_runs.resumed.normalizer.state_dict()
    for part in ("obs", "ret"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in ("mean", "var")) and a[part]["count"] == b[part]["count"]
    assert torch.equal(a["returns"], b["returns"])


def test_episode_statistics_stay_raw(normalized_runs):
    root = normalized_runs.root
    episodes = rows(root / "full" / "episodes.csv")
    assert episodes, "episodes ended"
    # CartPole pays 1 per step: raw returns equal lengths, where scaled rewards would not
    assert all(float(r["episodic_return"]) == float(r["episodic_length"]) for r in episodes)


def test_eval_normalizes_with_the_frozen_statistics(normalized_runs, monkeypatch):
    root = normalized_runs.root
    policy, cfg, normalizer = load_policy(root / "full")
    saved = checkpoint.load(checkpoint.latest(root / "full"))["normalizer"]
    mean, var = saved["obs"]["mean"].numpy(), saved["obs"]["var"].numpy()
    np.testing.assert_array_equal(normalizer.obs_rms.mean, mean)
    np.testing.assert_array_equal(normalizer.obs_rms.var, var)

    raws, seen = [], []
    monkeypatch.setattr(evaluate_mod, "make_envs", lambda *a, **k: raws.append(Recorder(make_envs(*a, **k))) or raws[-1])
    real_make_actor = evaluate_mod.make_actor

    def recording_actor(*args, **kwargs):
        actor = real_make_actor(*args, **kwargs)
        sample = actor.sample
        actor.sample = lambda obs, carry, rng: (seen.append(obs.copy()), sample(obs, carry, rng))[1]
        return actor

    monkeypatch.setattr(evaluate_mod, "make_actor", recording_actor)
    returns = evaluate(policy, cfg.env_id, 3, seed=0, normalizer=normalizer)
    raw = raws[0]
    np.testing.assert_array_equal(normalizer.obs_rms.mean, mean)  # frozen: never updated
    np.testing.assert_array_equal(normalizer.obs_rms.var, var)
    assert normalizer.obs_rms.count == saved["obs"]["count"]
    raw_obs = [raw.resets[0]] + [s.obs for s in raw.steps]
    assert len(seen) == len(raw.steps)
    for obs, raw_batch in zip(seen, raw_obs):
        np.testing.assert_allclose(obs, normalized(raw_batch, mean, var, True), rtol=1e-6, atol=1e-6)
    assert list(returns) == [ret for s in raw.steps for _, ret, _ in s.episodes][:3], "raw returns"


def test_cli_eval_uses_the_checkpoints_statistics_frozen(normalized_runs, monkeypatch, capsys):
    root = normalized_runs.root
    saved = checkpoint.load(checkpoint.latest(root / "full"))["normalizer"]
    made = []

    class Recording(NormalizedVecEnv):
        def __init__(self, inner, normalizer, *, frozen=False):
            made.append((normalizer.obs_rms.mean.copy(), frozen))
            super().__init__(inner, normalizer, frozen=frozen)

    monkeypatch.setattr(evaluate_mod, "NormalizedVecEnv", Recording)
    assert main(["eval", str(root / "full"), "--episodes", "1"]) == 0
    assert "over 1 episodes" in capsys.readouterr().out
    assert len(made) == 1 and made[0][1] is True
    np.testing.assert_array_equal(made[0][0], saved["obs"]["mean"].numpy())


def test_ratio_is_one_over_the_whole_batch_with_normalization(cfg, monkeypatch):
    all_on(cfg)
    envs, normalizer = normalize_envs(make_envs(cfg.env_id, cfg.num_envs), cfg)
    state = new_state(cfg, envs, torch.device("cpu"), normalizer)
    buf = state.rollout
    state.obs, state.carry, _, _ = collect_rollout(envs, make_actor(state.policy, torch.device("cpu")), buf, state.obs, state.carry, state.rng, 0, cfg)
    envs.close()
    assert buf.starts.sum() > 0, "the batch holds episode ends"
    assert normalizer.obs_rms.count > cfg.batch_size, "the statistics saw the rollout's observations"

    assert_ratio_is_one(state, cfg, monkeypatch)
