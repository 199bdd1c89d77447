"""Rollout collection: carry-over between iterations (core.vector_envs), the autoreset contract, and the
truncation bootstrap (opt.truncation_bootstrap)."""

import time

import numpy as np
import pytest
import torch

from proximal.fast_paths import make_actor
from proximal.envs import make_envs
from proximal.rollout import Rollout, RolloutTimes, collect_rollout
from proximal.trainer import new_state


def collected(cfg, env_id, iterations=1, num_steps=24, fast=True):
    """Rollout snapshots as torch tensors, collected through the numpy fast path or the plain torch path."""
    cfg.env_id, cfg.num_envs, cfg.num_steps = env_id, 3, num_steps
    envs = make_envs(env_id, cfg.num_envs)
    state = new_state(cfg, envs, torch.device("cpu"))
    actor = make_actor(state.policy, torch.device("cpu"), fast=fast)
    snapshots, step = [], 0
    for _ in range(iterations):
        state.obs, state.carry, step, episodes = collect_rollout(envs, actor, state.rollout, state.obs, state.carry,
                                                                 state.rng, step, cfg)
        arrays = {k: torch.from_numpy(v.copy()) for k, v in vars(state.rollout).items() if v is not None}
        arrays["next_obs"] = torch.from_numpy(state.obs.copy())
        snapshots.append(arrays | {"episodes": episodes, "step": step})
    envs.close()
    return state.policy, snapshots


def test_core_vector_envs_carry_over_between_iterations(cfg):
    _, (first, second) = collected(cfg, "proximal-test/Counter-v0", iterations=2)
    assert first["step"] == 3 * 24 and second["step"] == 2 * 3 * 24
    # the second rollout starts where the first stopped: same observation, same done flags, no reset
    assert torch.equal(second["obs"][0], first["next_obs"])
    assert torch.equal(second["starts"][0], first["next_start"])
    assert (second["obs"][0, :, 0] > 0).all(), "episode counters continue: the envs were not reset"


@pytest.mark.parametrize("fast", [True, False])
def test_autoreset_no_stored_transition_crosses_an_episode_boundary(cfg, fast):
    _, (buf,) = collected(cfg, "proximal-test/Counter-v0", num_steps=40, fast=fast)
    obs, starts = buf["obs"], buf["starts"]
    next_obs = torch.cat([obs[1:], buf["next_obs"][None]])
    next_start = torch.cat([starts[1:], buf["next_start"][None]])
    # every stored step is a real transition: its reward is the one its action produced (next-step autoreset
    # would store a reset step with reward 0 that ignored the action)
    torch.testing.assert_close(buf["rewards"], 1.0 + buf["actions"].float())
    within = next_start == 0
    assert within.any() and (~within).any()
    # within an episode the next stored observation is the successor; after a done it is a fresh episode's first
    assert torch.equal(next_obs[within][:, 0], obs[within][:, 0])
    assert torch.equal(next_obs[within][:, 1], obs[within][:, 1] + 1)
    assert torch.equal(next_obs[~within][:, 0], obs[~within][:, 0] + 1)
    assert (next_obs[~within][:, 1] == 0).all()
    assert len(buf["episodes"]) == int((~within).sum())
    for _, ret, length in buf["episodes"]:
        assert 3 <= length <= 5 and length <= ret <= 2 * length


def test_next_value_and_next_start_are_of_the_observation_after_the_rollout(cfg):
    """GAE bootstraps the last step from them: V(next obs), not V(last stored obs), and whether that observation
    starts an episode (an episode that ended at the last step)."""
    ended_at_the_last_step = 0
    for num_steps in range(5, 11):
        policy, (buf,) = collected(cfg, "proximal-test/Counter-v0", num_steps=num_steps)
        assert not torch.equal(buf["next_obs"], buf["obs"][-1])
        with torch.no_grad():
            torch.testing.assert_close(buf["next_value"], policy.value(buf["next_obs"]), rtol=0, atol=1e-6)
        # Counter's observation (episode, step): step 0 is an episode's first
        assert torch.equal(buf["next_start"], (buf["next_obs"][:, 1] == 0).float())
        ended_at_the_last_step += int(buf["next_start"].sum())
    assert ended_at_the_last_step > 0


def check_truncation_bootstrap(cfg):
    # every 10th step of ForeverEnv is truncated, never terminated: V(final obs) is stored there, 0 elsewhere
    policy, (buf,) = collected(cfg, "proximal-test/Forever-v0", num_steps=30)
    truncated = torch.zeros(30, 3, dtype=torch.bool)
    truncated[9::10] = True
    with torch.no_grad():
        final_value = policy.value(torch.ones(1, 1)).item()
    assert final_value != 0.0
    torch.testing.assert_close(buf["final_values"][truncated], torch.full((9,), final_value), rtol=0, atol=1e-6)
    assert (buf["final_values"][~truncated] == 0).all()


def test_opt_truncation_bootstrap_stores_final_value(cfg):
    check_truncation_bootstrap(cfg)


def test_opt_truncation_bootstrap_uses_the_final_not_the_reset_observation(cfg):
    policy, (buf,) = collected(cfg, "proximal-test/Counter-v0", num_steps=60)
    obs, final_values = buf["obs"], buf["final_values"]
    next_start = torch.cat([buf["starts"][1:], buf["next_start"][None]])
    # Counter's time limit is 5: only a step from (episode, 4) can be truncated, to the final obs (episode, 5);
    # episodes of length 3 or 4 terminate and are never bootstrapped
    terminated_early = (next_start == 1) & (obs[..., 1] < 4)
    assert terminated_early.any() and (final_values[terminated_early] == 0).all()
    at_limit = (next_start == 1) & (obs[..., 1] == 4)
    bootstrapped = 0
    for t, e in at_limit.nonzero().tolist():
        final = torch.tensor([[obs[t, e, 0], 5.0]])
        with torch.no_grad():
            expected = policy.value(final).item()
        stored = final_values[t, e].item()
        # 0 where the step was terminated and truncated at once
        assert stored == 0.0 or abs(stored - expected) < 1e-6, (stored, expected)
        bootstrapped += stored != 0.0
    assert bootstrapped > 0


def test_opt_truncation_bootstrap_final_values_are_of_this_rollout_only(cfg):
    # Forever truncates every 10 steps: in rollouts of 12, at t = 9 in the first and at step 19 (t = 7) in the
    # second, whose storage must not keep the first's value at t = 9
    _, (first, second) = collected(cfg, "proximal-test/Forever-v0", iterations=2, num_steps=12)
    assert first["final_values"][:, 0].nonzero().flatten().tolist() == [9]
    assert second["final_values"][:, 0].nonzero().flatten().tolist() == [7]


def test_opt_truncation_bootstrap_not_where_the_episode_also_terminated(cfg):
    # every episode of EndsAtTen ends terminated and truncated at its 10th step: a terminal state, worth 0
    _, (buf,) = collected(cfg, "proximal-test/EndsAtTen-v0", num_steps=30)
    assert (buf["starts"][10::10] == 1).all() and buf["next_start"].eq(1).all()
    assert (buf["final_values"] == 0).all()


def test_opt_truncation_bootstrap_off_stores_nothing(cfg):
    cfg.details["opt.truncation_bootstrap"] = False
    _, (buf,) = collected(cfg, "proximal-test/Forever-v0", num_steps=30)
    assert (buf["final_values"] == 0).all()


@pytest.mark.parametrize("env_id", ["proximal-test/Counter-v0", "Pendulum-v1"])
def test_fast_numpy_actor_matches_the_torch_path(cfg, env_id):
    """The numpy fast path and the plain torch path, from the same seeds, collect the same rollouts, one after the
    other: the numpy actor draws a rollout's sampling noise at once (Gumbel for Discrete actions, Gaussian for
    Box ones), the torch actor a step at a time, from the same generator in the same order."""
    _, fast = collected(cfg, env_id, iterations=2, num_steps=40, fast=True)
    _, plain = collected(cfg, env_id, iterations=2, num_steps=40, fast=False)
    for a, b in zip(fast, plain):
        torch.testing.assert_close(a["actions"], b["actions"], rtol=0, atol=1e-5)
        for key in ("obs", "logprobs", "values", "final_values", "next_value"):
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-5)


class Delayed:
    """``inner`` whose given methods sleep a given number of seconds first; ``calls`` counts them by name."""

    def __init__(self, inner, **delays):
        self.inner, self.calls = inner, dict.fromkeys(delays, 0)
        for name, seconds in delays.items():
            setattr(self, name, self._delayed(name, getattr(inner, name), seconds))

    def _delayed(self, name, method, seconds):
        def call(*args, **kwargs):
            self.calls[name] += 1
            time.sleep(seconds)
            return method(*args, **kwargs)
        return call

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.parametrize("fast", [True, False], ids=["numpy-actor", "torch-actor"])
def test_collect_rollout_times_env_steps_and_inference(cfg, fast):
    """envs.step goes to env, the actor's calls (V of truncated final observations included) to inference, each
    rollout adds to the counters, and both together fit in the rollout's own time. The numpy actor samples every
    step and scores the whole rollout once; the torch actor acts every step."""
    cfg.env_id, cfg.num_envs, cfg.num_steps = "proximal-test/Forever-v0", 3, 20
    envs = make_envs(cfg.env_id, cfg.num_envs)
    state = new_state(cfg, envs, torch.device("cpu"))
    slow_envs = Delayed(envs, step=0.003)
    actor = make_actor(state.policy, torch.device("cpu"), fast=fast)
    per_step = "sample" if fast else "act"
    delays = {per_step: 0.001, "value": 0.004, **({"score": 0.002} if fast else {})}
    slow_actor = Delayed(actor, **delays)
    times = RolloutTimes()
    elapsed = 0.0
    for rollouts in (1, 2):
        started = time.perf_counter()
        state.obs, state.carry, _, _ = collect_rollout(slow_envs, slow_actor, state.rollout, state.obs, state.carry,
                                                       state.rng, 0, cfg, times)
        elapsed += time.perf_counter() - started
        # a call per step; a value at the two truncations (steps 10 and 20) and for the next observation
        assert slow_envs.calls == {"step": 20 * rollouts}
        assert slow_actor.calls == {per_step: 20 * rollouts, "value": 3 * rollouts,
                                    **({"score": rollouts} if fast else {})}
        assert times.env >= 20 * rollouts * 0.003
        assert times.inference >= rollouts * (20 * 0.001 + 3 * 0.004 + (0.002 if fast else 0.0))
        assert times.env + times.inference <= elapsed
    envs.close()


def test_uint8_observations_are_stored_as_uint8():
    buf = Rollout.allocate(3, 2, (4, 84, 84), obs_dtype=np.uint8)
    assert buf.obs.dtype == np.uint8 and buf.obs.shape == (3, 2, 4, 84, 84)
    buf.obs[...] = 200
    zeros = np.zeros((3, 2), np.float32)
    batch = buf.training_batch(zeros, zeros, torch.device("cpu"))
    assert batch["obs"].dtype == torch.uint8 and batch["obs"].shape == (6, 4, 84, 84)
    assert int(batch["obs"].max()) == 200
    assert Rollout.allocate(3, 2, (4,)).obs.dtype == np.float32
    assert Rollout.allocate(3, 2, (4,), obs_dtype=np.float64).obs.dtype == np.float32
