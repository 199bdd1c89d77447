"""Recurrent policies (lstm.*): the LSTM core's init and zero state, the resets at episode starts in the rollout and
in training, whole-sequence minibatches, the replay from the stored state, the ratio-is-one check, exact resume,
the memory task, and the atari-lstm presets."""

from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
import torch

from proximal.actors import TorchActor
from proximal.carry import Carry
from proximal.config import preset, validate
from proximal.envs import make_envs
from proximal.errors import UserError
from proximal.nets import LSTMCore, replay_plan
from proximal.fast_paths import make_actor, make_update
from proximal.policy import ActorCritic, make_policy
from proximal.rollout import collect_rollout
from proximal.trainer import new_state
from proximal.update import make_optimizer, minibatch, ppo_update, sequence_minibatch_indices
from ratio_check import assert_ratio_is_one
from resume_check import assert_resume_is_exact
from test_trainer import final_return

OBS = gym.spaces.Box(-1, 1, (3,), np.float32)
ACT = gym.spaces.Discrete(2)
CPU = torch.device("cpu")


def recurrent(cfg, env_id="CartPole-v1", num_envs=4, num_steps=32):
    """``cfg`` (the meta-test's classic preset, its details switched) with the reference's LSTM(128)."""
    cfg.lstm_size, cfg.env_id, cfg.num_envs, cfg.num_steps = 128, env_id, num_envs, num_steps
    return cfg


def collected(cfg, rollouts=1):
    """A trainer state after ``rollouts`` rollouts of the recurrent policy through the rollout's act path."""
    envs = make_envs(cfg.env_id, cfg.num_envs)
    state = new_state(cfg, envs, CPU)
    actor = make_actor(state.policy, CPU)
    for _ in range(rollouts):
        state.obs, state.carry, _, _ = collect_rollout(envs, actor, state.rollout, state.obs, state.carry, state.rng, 0, cfg)
    envs.close()
    return state


# ------------------------------------------------------------------------------------------------ lstm.init

def check_lstm_init(cfg):
    core = make_policy(OBS, ACT, recurrent(cfg)).core.lstm
    # the reference's ortho_init on wx (nin x 4nh) and wh (nh x 4nh) makes their rows orthonormal; PyTorch's
    # weights are the transposes, (4H, in) and (4H, H): orthonormal columns over all four gates, gain 1
    for weight, size in ((core.weight_ih_l0, 3), (core.weight_hh_l0, 128)):
        assert weight.shape == (4 * 128, size)
        torch.testing.assert_close(weight.T @ weight, torch.eye(size), rtol=0, atol=1e-5)
    assert not core.bias_ih_l0.any() and not core.bias_hh_l0.any(), "zero biases, no forget-gate offset"


def test_lstm_init_orthogonal_gain_1_zero_biases(cfg):
    check_lstm_init(cfg)


def test_lstm_init_off_is_pytorch_default(cfg):
    cfg.details["lstm.init"] = False
    core = make_policy(OBS, ACT, recurrent(cfg)).core.lstm
    bound = 1 / 128**0.5  # PyTorch's LSTM init: U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias
    assert all(p.abs().max() <= bound for p in core.parameters())
    assert core.bias_ih_l0.abs().min() > 0


def test_lstm_heads_keep_their_gains(cfg):
    policy = make_policy(OBS, ACT, recurrent(cfg))
    # core.orthogonal_init on the heads over the LSTM's 128 outputs: orthonormal rows scaled by the gain
    for head, gain in ((policy.policy_head.linear, 0.01), (policy.value_head, 1.0)):
        w = head.weight
        torch.testing.assert_close(w @ w.T, gain**2 * torch.eye(len(w)), rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------ lstm.zero_state

def test_lstm_zero_state_at_the_start_of_training(cfg):
    recurrent(cfg)
    envs = make_envs(cfg.env_id, cfg.num_envs)
    state = new_state(cfg, envs, CPU)
    assert state.carry.state.shape == (2, cfg.num_envs, 128) and not state.carry.state.any()
    state.obs, state.carry, _, _ = collect_rollout(envs, make_actor(state.policy, CPU), state.rollout, state.obs, state.carry, state.rng, 0, cfg)
    envs.close()
    assert not state.rollout.start_state.any(), "the first rollout starts from zeros"
    assert state.carry.state.abs().sum() > 0, "and carries a state on"


# -------------------------------------------------------------------------------------- lstm.reset_on_done

def scripted(policy, num_envs=2, steps=7):
    """Random observations and actions of ``num_envs`` envs; env 0 starts an episode at t = 3, env 1 at t = 5;
    and a nonzero state before the first step, as carried over from a previous rollout."""
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(steps, num_envs, 3, generator=gen)
    actions = torch.randint(0, 2, (steps, num_envs), generator=gen)
    starts = torch.zeros(steps, num_envs)
    starts[3, 0] = starts[5, 1] = 1.0
    state = 0.5 * torch.randn(2, num_envs, policy.core.hidden_size, generator=gen)
    return obs, actions, starts, state


def sequences(obs, actions, starts, state):
    """The training path's batch of whole sequences: (T, k, ...) steps flattened t-major, the state before them."""
    return {"obs": obs.flatten(0, 1), "actions": actions.flatten(0, 1), "starts": starts.flatten(0, 1), "state": state}


def check_reset_on_done(cfg):
    policy = make_policy(OBS, ACT, recurrent(cfg))
    obs, actions, starts, state = scripted(policy)
    actor = make_actor(policy, CPU)
    # the rollout path, one step at a time with the carried state
    rollout_values, carry = [], Carry(None, state=state)
    for t in range(len(obs)):
        _, _, value, carry = actor.act(obs[t].numpy(), replace(carry, start=starts[t].numpy()), None)
        rollout_values.append(value)
    rollout_values = np.stack(rollout_values)
    # the training path over the whole sequences
    with torch.no_grad():
        _, _, train_values = policy.evaluate(sequences(obs, actions, starts, state))
    train_values = train_values.view(len(obs), 2).numpy()
    # right after an episode end, the output is the one from a fresh (zero) state
    for t, env in ((3, 0), (5, 1)):
        fresh = actor.value(obs[t, env:env + 1].numpy(), Carry(np.zeros(1, np.float32), state=policy.initial_state(1)))
        np.testing.assert_allclose(rollout_values[t, env], fresh[0], rtol=0, atol=1e-6)
        np.testing.assert_allclose(train_values[t, env], fresh[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(train_values, rollout_values, rtol=0, atol=1e-6)


def test_lstm_reset_on_done_output_after_an_end_is_a_fresh_start(cfg):
    check_reset_on_done(cfg)


def test_lstm_reset_on_done_off_carries_the_state_across_episodes(cfg):
    cfg.details["lstm.reset_on_done"] = False
    policy = make_policy(OBS, ACT, recurrent(cfg))
    obs, actions, starts, state = scripted(policy)
    with torch.no_grad():
        _, _, carried = policy.evaluate(sequences(obs, actions, starts, state))
        _, _, ignored = policy.evaluate(sequences(obs, actions, torch.zeros_like(starts), state))
    torch.testing.assert_close(carried, ignored, rtol=0, atol=0)


# ------------------------------------------------------------------------------- the replay's fused calls

@pytest.mark.parametrize("steps,envs,p_start", [(64, 4, 0.08), (9, 3, 0.4), (32, 8, 0.2), (5, 2, 1.0), (40, 2, 0.0)])
@pytest.mark.parametrize("reset", [True, False])
def test_lstm_chunked_replay_equals_a_step_by_step_replay(steps, envs, p_start, reset):
    torch.manual_seed(0)
    core = LSTMCore(3, 16, reset_on_done=reset)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(steps, envs, 3, generator=gen, requires_grad=True)
    starts = (torch.rand(steps, envs, generator=gen) < p_start).float()
    state = torch.randn(2, envs, 16, generator=gen)

    def grads(out):
        core.zero_grad()
        x.grad = None
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return [x.grad.clone()] + [p.grad.clone() for p in core.parameters()]

    s, outs = state, []
    for t in range(steps):  # the reference: one step at a time, reset before the step
        out, s = core.step(x[t], s, starts[t])
        outs.append(out)
    looped = torch.stack(outs)
    looped_grads = grads(looped)
    replayed = core.replay(x, starts, state)
    torch.testing.assert_close(replayed, looped, rtol=0, atol=1e-6)
    for a, b in zip(grads(replayed), looped_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_lstm_replay_plan_splits_only_at_episode_starts_and_covers_every_row_once():
    starts = np.zeros((6, 3), bool)
    starts[2, 0] = starts[4, 0] = starts[0, 1] = True  # env 0: segments 0-1, 2-3, 4-5; env 1 and 2: 0-5
    plan = replay_plan(starts, CPU)
    segments = sorted(
        tuple(int(r) for r in inputs[:, j] if r < 18) for inputs, _ in plan.calls for j in range(inputs.shape[1]))
    # t-major rows t * 3 + env, each segment in time order
    assert segments == [(0, 3), (1, 4, 7, 10, 13, 16), (2, 5, 8, 11, 14, 17), (6, 9), (12, 15)]
    # every row's output is read from the call position that ran that row's input
    ran = torch.cat([inputs.reshape(-1) for inputs, _ in plan.calls])
    assert torch.equal(ran[plan.outputs], torch.arange(18))
    # the segments that begin at t = 0 start from their env's state; the others from the zero column (3)
    starts_from = {tuple(int(r) for r in inputs[:, j] if r < 18)[0]: int(initial[j])
                   for inputs, initial in plan.calls for j in range(inputs.shape[1])}
    assert starts_from == {0: 0, 1: 1, 2: 2, 6: 3, 12: 3}


# --------------------------------------------------------------------------- lstm.sequential_minibatches

def test_lstm_sequential_minibatches_are_whole_env_sequences_in_time_order():
    steps, num_envs, minibatches = 5, 8, 4
    gen = torch.Generator().manual_seed(0)
    epochs = [sequence_minibatch_indices(steps, num_envs, minibatches, gen) for _ in range(3)]
    for indices in epochs:
        assert len(indices) == minibatches
        groups = []
        for mb in indices:
            grid = mb.view(steps, -1)  # t-major: row t holds step t of the minibatch's envs
            envs = grid[0]
            assert torch.equal(grid, torch.arange(steps)[:, None] * num_envs + envs), "every step, in time order"
            groups.append(sorted(envs.tolist()))
        assert sorted(e for g in groups for e in g) == list(range(num_envs)), "each env in exactly one minibatch"
    firsts = [tuple(indices[0][:2].tolist()) for indices in epochs]
    assert len(set(firsts)) > 1, "the envs are shuffled every epoch"


def test_lstm_update_gives_the_policy_whole_sequences(cfg, monkeypatch):
    state = collected(recurrent(cfg))
    seen = []
    real = ActorCritic.evaluate

    def spy(self, batch):
        seen.append((batch["obs"].clone(), batch["starts"].clone(), batch["state"].clone()))
        return real(self, batch)

    monkeypatch.setattr(ActorCritic, "evaluate", spy)
    buf = state.rollout
    batch = buf.training_batch(buf.values, buf.values, CPU)
    ppo_update(state.policy, state.optimizer, batch, cfg, 0.2, state.generator)
    assert len(seen) == cfg.update_epochs * cfg.num_minibatches
    for obs, starts, _ in seen:
        obs = obs.view(cfg.num_steps, 1, 4)  # 4 envs, 4 minibatches: one env's whole sequence each
        env = [e for e in range(4) if torch.equal(obs[:, 0], torch.from_numpy(buf.obs[:, e]))]
        assert len(env) == 1 and torch.equal(starts, torch.from_numpy(buf.starts[:, env[0]]))


def test_lstm_num_envs_must_divide_by_the_minibatch_count(cfg):
    recurrent(cfg, num_envs=6)
    with pytest.raises(UserError, match="num_envs 6 is not divisible by num_minibatches 4"):
        validate(cfg)
    cfg.lstm_size = 0
    validate(cfg)  # a feedforward policy only needs the batch to divide


# ---------------------------------------------------------------------------- lstm.reconstruct_states

def check_reconstruct_states(cfg):
    # the second rollout starts from the state the first one left: training must replay from it
    state = collected(recurrent(cfg), rollouts=2)
    buf = state.rollout
    assert buf.start_state.abs().sum() > 0 and (buf.starts[0] == 0).any()
    batch = buf.training_batch(buf.values, buf.values, CPU)
    with torch.no_grad():
        logprob, _, value = state.policy.evaluate(minibatch(batch, torch.arange(len(batch["obs"])), cfg))
    torch.testing.assert_close(logprob, batch["logprobs"], rtol=0, atol=1e-5)
    torch.testing.assert_close(value, batch["values"], rtol=0, atol=1e-5)


def test_lstm_reconstruct_states_training_replays_from_the_stored_state(cfg):
    check_reconstruct_states(cfg)


def test_lstm_minibatch_of_envs_in_drawn_order_replays_each_from_its_own_state(cfg):
    # sequence_minibatch_indices draws envs in any order, and a minibatch may hold several: each sequence
    # must start from its own env's stored state (every other LSTM test has one env per minibatch)
    state = collected(recurrent(cfg), rollouts=2)
    buf = state.rollout
    batch = buf.training_batch(buf.values, buf.values, CPU)
    envs = torch.tensor([2, 0])
    mb = (torch.arange(cfg.num_steps)[:, None] * cfg.num_envs + envs).reshape(-1)
    rows = minibatch(batch, mb, cfg)
    assert torch.equal(rows["state"], buf.start_state[:, envs]) and not torch.equal(*rows["state"][0])
    with torch.no_grad():
        logprob, _, value = state.policy.evaluate(rows)
    torch.testing.assert_close(logprob, batch["logprobs"][mb], rtol=0, atol=1e-5)
    torch.testing.assert_close(value, batch["values"][mb], rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------- ratio is one, paths

@pytest.mark.parametrize("env_id", ["CartPole-v1", "proximal-test/BoxRecorder-v0"])
def test_lstm_ratio_is_one_over_the_whole_batch(cfg, env_id, monkeypatch):
    # two rollouts: the batch starts from a carried state and holds several episode ends per env
    state = collected(recurrent(cfg, env_id, num_steps=64), rollouts=2)
    assert (state.rollout.starts.sum(0) >= 2).all(), "several episode ends inside each env's sequence"
    assert_ratio_is_one(state, cfg, monkeypatch, atol=1e-5)


def test_lstm_truncation_bootstrap_values_the_final_observation_after_the_episode_state(cfg):
    # Forever-v0 truncates every 10 steps; its final observation is [1]. V(final) must come from the state after
    # the episode's last step, not from a reset state nor the next episode's
    state = collected(recurrent(cfg, "proximal-test/Forever-v0", num_envs=2, num_steps=24))
    buf, policy = state.rollout, state.policy
    s, checked = buf.start_state, 0
    for t in range(24):
        _, _, _, after = policy.act(torch.from_numpy(buf.obs[t]), Carry(torch.from_numpy(buf.starts[t]), state=s), None)
        s = after.state
        for env in np.flatnonzero(buf.final_values[t]):
            with torch.no_grad():
                expected = policy.value(torch.ones(1, 1), Carry(torch.zeros(1), state=s[:, env:env + 1])).item()
            assert buf.final_values[t, env] == pytest.approx(expected, abs=1e-6)
            checked += 1
    assert checked == 4  # steps 9 and 19 of both envs


def test_lstm_fast_paths_are_not_picked(cfg):
    policy = make_policy(OBS, ACT, recurrent(cfg))
    assert type(make_actor(policy, CPU)) is TorchActor
    assert make_update(policy, make_optimizer(policy, cfg), CPU) is ppo_update


def test_lstm_mlp_trunk_option(cfg):
    cfg.lstm_mlp = True
    policy = make_policy(OBS, ACT, recurrent(cfg))
    assert policy.core.lstm.input_size == 64 and isinstance(policy.trunk.mlp[0], torch.nn.Linear)
    assert make_policy(OBS, ACT, recurrent(preset("classic"))).core.lstm.input_size == 3


# -------------------------------------------------------------------------------------- resume, memory task

def tiny(cfg, updates=6):
    recurrent(cfg, "proximal/CartPoleNoVelocity-v1", num_envs=4, num_steps=32)
    cfg.total_steps, cfg.checkpoint_every = updates * cfg.batch_size, 0
    return cfg


def test_lstm_resumed_run_equals_uninterrupted_run(cfg, tmp_path):
    from proximal import checkpoint

    runs = assert_resume_is_exact(tiny(cfg), tmp_path, stop_at=3)
    stopped = runs.stopped
    assert stopped.carry.state.abs().sum() > 0
    payload = checkpoint.load(checkpoint.checkpoint_path(tmp_path / "resumed", 3))
    assert torch.equal(payload["carry"]["state"], stopped.carry.state)
    assert torch.equal(runs.full.carry.state, runs.resumed.carry.state)


def test_cartpole_no_velocity_hides_the_velocities_and_its_state_is_captured():
    from gymnasium.envs.classic_control.cartpole import CartPoleEnv

    env = gym.make("proximal/CartPoleNoVelocity-v1")
    assert env.observation_space.shape == (2,) and env.spec.max_episode_steps == 500
    obs, _ = env.reset(seed=3)
    full = CartPoleEnv()
    full_obs, _ = full.reset(seed=3)
    np.testing.assert_array_equal(obs, full_obs[[0, 2]])
    for _ in range(5):
        obs, reward, *_ = env.step(1)
        full_obs, *_ = full.step(1)
        np.testing.assert_array_equal(obs, full_obs[[0, 2]])
    # checkpoints capture it like any classic-control env: a restored copy continues exactly
    envs, copy = make_envs("proximal/CartPoleNoVelocity-v1", 2), make_envs("proximal/CartPoleNoVelocity-v1", 2)
    envs.reset(seed=0)
    for _ in range(30):
        envs.step(np.array([0, 1]))
    copy.reset(seed=99)
    copy.set_state(envs.get_state())
    for t in range(40):
        a, b = envs.step(np.array([t % 2, 1])), copy.step(np.array([t % 2, 1]))
        np.testing.assert_array_equal(a.obs, b.obs)
        np.testing.assert_array_equal(a.terminated, b.terminated)
    envs.close()
    copy.close()


def test_cartpole_no_velocity_trains_from_the_cli(tmp_path):
    from proximal.cli import main

    code = main(["train", "--preset", "classic-lstm", "--env", "proximal/CartPoleNoVelocity-v1", "--total-steps",
                 "4096", "--num-envs", "8", "--quiet", "--run-dir", str(tmp_path / "run")])
    assert code in (0, None)
    assert (tmp_path / "run" / "checkpoints" / "update_0000004.pt").is_file()
    code = main(["eval", str(tmp_path / "run"), "--episodes", "2"])
    assert code in (0, None)


def memory_task_return(name, tmp_path, steps):
    cfg = preset(name)
    cfg.env_id = "proximal/CartPoleNoVelocity-v1"
    return final_return(cfg, tmp_path / name, steps)


# ------------------------------------------------------------------------------------------------- atari-lstm

def test_atari_lstm_preset_trains_a_few_hundred_steps_from_the_cli(tmp_path):
    from proximal import checkpoint
    from proximal.cli import main
    from proximal.evaluate import load_policy
    from proximal.nets import NatureCNN

    run_dir = tmp_path / "atari-lstm"
    code = main(["train", "--preset", "atari-lstm", "--total-steps", "256", "--num-envs", "2", "--num-steps", "64",
                 "--num-minibatches", "2", "--quiet", "--run-dir", str(run_dir)])
    assert code in (0, None)
    payload = checkpoint.load(checkpoint.latest(run_dir))
    assert payload["update"] == 2 and payload["carry"]["state"].shape == (2, 2, 128)
    assert payload["carry"]["state"].abs().sum() > 0
    policy, cfg, _ = load_policy(run_dir)
    # the reference's cnn_lstm: the 4-frame stack of every reference Atari env, Nature CNN -> LSTM(512 -> 128) ->
    # both heads
    assert cfg.on("atari.frame_stack") and cfg.on("atari.episodic_life") and cfg.clip_coef == 0.1
    assert isinstance(policy.trunk, NatureCNN) and policy.trunk.convs[0].in_channels == 4
    assert (policy.core.lstm.input_size, policy.core.lstm.hidden_size) == (512, 128)
    assert policy.policy_head.linear.in_features == policy.value_head.in_features == 128


def test_atari_lstm_1frame_preset_is_atari_lstm_without_the_frame_stack():
    from proximal.nets import NatureCNN

    stacked, single = preset("atari-lstm"), preset("atari-lstm-1frame")
    assert [i for i in single.details if single.on(i) != stacked.on(i)] == ["atari.frame_stack"]
    assert stacked.on("atari.frame_stack") and not single.on("atari.frame_stack")
    assert {k: v for k, v in vars(single).items() if k not in ("details", "preset")} == \
        {k: v for k, v in vars(stacked).items() if k not in ("details", "preset")}
    single.env_workers = 1
    envs = make_envs(single.env_id, 2, cfg=single)
    assert envs.single_observation_space.shape == (1, 84, 84)
    policy = make_policy(envs.single_observation_space, envs.single_action_space, single)
    envs.close()
    assert isinstance(policy.trunk, NatureCNN) and policy.trunk.convs[0].in_channels == 1
    assert (policy.core.lstm.input_size, policy.core.lstm.hidden_size) == (512, 128)


def test_lstm_learns_the_memory_task_the_mlp_cannot(tmp_path):
    # the classic-lstm preset's first 180k steps (its schedule is for 500k) against the classic MLP's, seed 1:
    # without the velocities a feedforward policy balances the pole for ~50 steps
    lstm, mlp = memory_task_return("classic-lstm", tmp_path, 180_000), memory_task_return("classic", tmp_path, 180_000)
    assert lstm >= 250 and mlp <= 100, (lstm, mlp)
