"""The Python API (issue 12): env ids as module:EnvId, env factories, proximal.train's overrides and callbacks,
proximal.load's agent and make_env."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import proximal
from proximal import checkpoint, cli
from proximal.config import preset
from proximal.envs import make_envs
from proximal.trainer import train as trainer_train
from resume_check import Runs, assert_runs_agree

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(total_steps=64, num_envs=2, num_steps=16, num_minibatches=2, update_epochs=1, device="cpu")


class Corridor(gym.Env):
    """Walk right (action 1) from cell 0 to cell 4: reward 1 at the end, -0.01 a step; 20-step time limit."""

    observation_space = gym.spaces.Box(0.0, 4.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = 0, 0
        return np.array([self.x], np.float32), {}

    def step(self, action):
        self.x = max(0, self.x + (1 if action == 1 else -1))
        self.t += 1
        done = self.x == 4
        return np.array([self.x], np.float32), 1.0 if done else -0.01, done, self.t >= 20, {}


def make_corridor() -> gym.Env:
    return Corridor()


def make_other() -> gym.Env:
    return Corridor()


def make_cartpole() -> gym.Env:
    return gym.make("CartPole-v1")


class DictObs(Corridor):
    """An observation space the policies do not take: a Dict without an action mask."""

    observation_space = gym.spaces.Dict({"x": Corridor.observation_space})

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed)
        return {"x": obs}, info

    def step(self, action):
        obs, *rest = super().step(action)
        return {"x": obs}, *rest


class ShiftedDiscrete(gym.Env):
    """Actions of a space whose values do not start at 0 (gymnasium's ``start``). Each env records the actions it
    receives in ``received`` (in this process: run it with env_workers=1). Episodes of 5 steps."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(3, start=-1)
    received: list = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), {}

    def step(self, action):
        type(self).received.append(np.array(action))
        self.t += 1
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), 0.0, False, self.t >= 5, {}


class ShiftedMultiDiscrete(ShiftedDiscrete):
    action_space = gym.spaces.MultiDiscrete([2, 3], start=[5, -1])
    received: list = []


def make_shifted_discrete() -> gym.Env:
    return ShiftedDiscrete()


def make_shifted_multidiscrete() -> gym.Env:
    return ShiftedMultiDiscrete()


def write_module(tmp_path: Path, name: str, body: str) -> None:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))


# ---- 1. env ids ------------------------------------------------------------------------------------------------

CORRIDOR_MODULE = """
    import gymnasium as gym
    import sys
    sys.path.insert(0, {tests!r})
    import test_api
    gym.register("{name}/Corridor-v0", entry_point=test_api.Corridor)
"""


def test_module_env_id_imports_its_module_from_the_current_directory(tmp_path, monkeypatch):
    write_module(tmp_path, "corridor_mod_a", CORRIDOR_MODULE.format(tests=str(ROOT / "tests"), name="modA"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    envs = make_envs("corridor_mod_a:modA/Corridor-v0", 2)
    try:
        assert envs.reset(seed=0).tolist() == [[0.0], [0.0]]
        assert envs.step(np.array([1, 0])).obs.tolist() == [[1.0], [0.0]]
    finally:
        envs.close()


def test_module_env_id_trains_from_the_command_line(tmp_path):
    """As the issue tried it: `python -m proximal train --env module:EnvId` in the module's directory."""
    write_module(tmp_path, "corridor_mod_b", CORRIDOR_MODULE.format(tests=str(ROOT / "tests"), name="modB"))
    run = subprocess.run([sys.executable, "-m", "proximal", "train", "--env", "corridor_mod_b:modB/Corridor-v0",
                          "--total-steps", "64", "--num-envs", "2", "--num-steps", "16", "--device", "cpu",
                          "--run-dir", "run", "--quiet"], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "run" / "config.json").read_text())["env_id"] == "corridor_mod_b:modB/Corridor-v0"


def test_an_import_error_in_the_users_module_names_module_exception_and_line(tmp_path, monkeypatch):
    write_module(tmp_path, "broken_env_mod", """
        import gymnasium
        raise ValueError("width must be positive")
    """)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(proximal.UserError) as e:
        make_envs("broken_env_mod:Broken-v0", 1)
    message = str(e.value)
    assert "broken_env_mod" in message and "ValueError: width must be positive" in message
    assert "broken_env_mod.py:3" in message and "\n" not in message
    with pytest.raises(proximal.UserError, match="no module 'missing_env_mod'"):
        make_envs("missing_env_mod:Nothing-v0", 1)


# ---- 2. factories ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("workers", [1, 2])
def test_a_factorys_envs_step_as_the_ids_envs(workers):
    """Same wrappers, same-step autoreset, time limit truncation and episode statistics, in workers too."""
    options = preset("classic")
    options.env_workers = workers
    by_id = make_envs("CartPole-v1", 2, cfg=options)
    by_factory = make_envs("callable:test_api.make_cartpole", 2, cfg=options, factory=make_cartpole)
    try:
        assert by_factory.env_id == "callable:test_api.make_cartpole"
        assert np.array_equal(by_id.reset(seed=3), by_factory.reset(seed=3))
        rng = np.random.default_rng(0)
        ended = 0
        for _ in range(120):
            actions = rng.integers(0, 2, 2)
            a, b = by_id.step(actions), by_factory.step(actions)
            for field in ("obs", "reward", "terminated", "truncated", "final_obs"):
                assert np.array_equal(getattr(a, field), getattr(b, field))
            assert a.episodes == b.episodes
            ended += len(a.episodes)
        assert ended > 0
    finally:
        by_id.close()
        by_factory.close()


def test_a_factory_run_records_its_name_and_resume_asks_for_it(tmp_path, capsys):
    run = proximal.train(env=make_corridor, run_dir=tmp_path / "run", quiet=True, **TINY)
    assert run.update == 2 and run.global_step == 64 and not run.stopped
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["env_id"]
    assert recorded == "callable:test_api.make_corridor"
    with pytest.raises(proximal.UserError, match=r"test_api\.make_corridor, which a run directory cannot hold"):
        proximal.train(run_dir=tmp_path / "run", resume=True, quiet=True)
    with pytest.raises(proximal.UserError, match=r"came from test_api\.make_corridor, not test_api\.make_other"):
        proximal.train(env=make_other, run_dir=tmp_path / "run", resume=True, quiet=True)
    # the same factory is accepted (the run is complete: nothing to do)
    assert proximal.train(env=make_corridor, run_dir=tmp_path / "run", resume=True, quiet=True).update == 2
    # the command line cannot give a function: it says how to resume from Python, in one line
    assert cli.main(["train", "--resume", str(tmp_path / "run"), "--quiet"]) == 2
    message = capsys.readouterr().err
    assert message.startswith("proximal train: error: this run's envs came from the function "
                              "test_api.make_corridor") and "proximal.train(env=make_corridor" in message


def test_a_run_trained_from_a_script_takes_its_factory_from_the_scripts_module():
    # a script's functions are __main__.name while it trains, and module.name where another script imports them
    from proximal.envs.make import check_same_factory

    check_same_factory("callable:__main__.make_corridor", make_corridor)
    with pytest.raises(proximal.UserError, match=r"came from __main__\.make_corridor, not test_api\.make_other"):
        check_same_factory("callable:__main__.make_corridor", make_other)


def test_bad_factories_fail_with_one_message_before_anything_is_written(tmp_path):
    def raises():
        raise RuntimeError("no map file")

    def not_an_env():
        return "CartPole-v1"

    cases = [(raises, r"factory test_api\..*raises raised RuntimeError: no map file \(.*test_api\.py:\d+\)"),
             (not_an_env, r"returned a str, not a gymnasium.Env"),
             (lambda: DictObs(), r"observation space Dict.* is not supported: .*FlattenObservation"),
             (lambda: Corridor(), r"cannot be sent to env worker processes .*env_workers=1")]
    for i, (factory, message) in enumerate(cases):
        workers = 2 if i == 3 else 1
        with pytest.raises(proximal.UserError, match=message):
            proximal.train(env=factory, run_dir=tmp_path / str(i), quiet=True, env_workers=workers, **TINY)
        assert not (tmp_path / str(i)).exists()


# ---- 2. overrides ----------------------------------------------------------------------------------------------

def test_overrides_are_checked_as_the_command_line_checks_flags(tmp_path):
    cases = [(dict(num_env=2), r"unknown option 'num_env'; did you mean 'num_envs'\?"),
             (dict(num_envs="4"), r"num_envs expects an int, got '4' \(str\)"),
             (dict(learning_rate=True), r"learning_rate expects a number, got True \(bool\)"),
             (dict(hidden_sizes=64), r"hidden_sizes expects a list or tuple of ints, got 64 \(int\)"),
             (dict(num_envs=0), r"^num_envs must be positive, got 0$"),
             (dict(off=["core.nothing"]), r"'core.nothing' is not a detail ID"),
             (dict(details={}), r"switch details with on=\[...\] and off=\[...\]")]
    for overrides, message in cases:
        with pytest.raises(proximal.UserError, match=message):
            proximal.train(env=make_corridor, run_dir=tmp_path / "run", quiet=True, **overrides)
    with pytest.raises(proximal.UserError, match="unknown preset"):
        proximal.train("nope", run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_overrides_and_details_reach_the_config(tmp_path):
    run = proximal.train(env=make_corridor, run_dir=tmp_path / "run", quiet=True, hidden_sizes=[8], gamma=1,
                         off="core.gae", target_kl=0.5, **TINY)
    assert run.cfg.hidden_sizes == (8,) and run.cfg.gamma == 1.0 and isinstance(run.cfg.gamma, float)
    assert not run.cfg.on("core.gae") and run.cfg.on("aux.target_kl")  # as --target-kl does
    assert run.load().policy.trunk.state_dict()["actor.0.weight"].shape == (8, 1)


# ---- 2. callbacks ----------------------------------------------------------------------------------------------

def test_callbacks_see_every_update_and_false_stops_with_a_checkpoint(tmp_path):
    seen = []

    def record(info):
        seen.append((info.update, info.num_updates, info.global_step, "policy_loss" in info.stats,
                     info.policy is not None))

    def stop_at_2(info):
        return info.update < 2

    run = proximal.train(env=make_corridor, run_dir=tmp_path / "run", quiet=True, callbacks=[record, stop_at_2],
                         **{**TINY, "total_steps": 128})
    assert seen == [(1, 4, 32, True, True), (2, 4, 64, True, True)]
    assert run.stopped and run.update == 2
    assert checkpoint.latest(tmp_path / "run").name == "update_0000002.pt"


def test_a_run_stopped_by_a_callback_resumes_exactly(tmp_path):
    """With a factory whose envs' state a checkpoint captures (gymnasium's classic control: envs/state.py)."""
    cfg = preset("classic")
    for name, value in {**TINY, "total_steps": 128, "env_id": "callable:test_api.make_cartpole"}.items():
        setattr(cfg, name, value)
    full = trainer_train(cfg, tmp_path / "full", quiet=True, env_fn=make_cartpole)
    stopped = trainer_train(cfg, tmp_path / "resumed", quiet=True, env_fn=make_cartpole,
                            callbacks=[lambda info: info.update != 2])
    resumed = trainer_train(None, tmp_path / "resumed", resume=True, quiet=True, env_fn=make_cartpole)
    assert_runs_agree(Runs(tmp_path, 2, full, stopped, resumed))


# ---- 3. the agent ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def box_run(tmp_path_factory):
    """A Box-action run with observation normalization (its statistics are not the identity)."""
    root = tmp_path_factory.mktemp("box")
    return proximal.train(env="Pendulum-v1", run_dir=root / "run", quiet=True, on=["cont.obs_norm", "cont.obs_clip"],
                          **TINY)


def test_the_agent_normalizes_frozen_and_clips_as_in_training(box_run):
    agent = proximal.load(box_run.run_dir)
    rms = agent.normalizer.obs_rms
    assert rms.count > 1  # statistics that normalization changes
    obs = np.array([[1.0, 0.0, 2.0], [0.5, -0.5, -8.0]], np.float32)
    normalized = np.clip((obs - rms.mean) / np.sqrt(rms.var + 1e-8), -10, 10).astype(np.float32)
    with torch.no_grad():
        mean = agent.policy.policy_head(agent.policy.trunk(torch.from_numpy(normalized))[0])[0].numpy()
    action, state = agent.act(obs, deterministic=True)
    assert state is None and action.shape == (2, 1)
    assert np.allclose(action, np.clip(mean, -2, 2), atol=1e-6)
    assert agent.act(obs[0], deterministic=True)[0].shape == (1,)  # one observation, no batch axis
    assert np.allclose(agent.value(obs), [agent.value(o) for o in obs], atol=1e-6)
    assert rms.count == proximal.load(box_run.run_dir).normalizer.obs_rms.count  # frozen: act changed nothing
    # a mean far outside the bounds: the env gets the bound, as with cont.action_clip in training
    with torch.no_grad():
        agent.policy.policy_head.mean.bias.fill_(100.0)
    assert np.array_equal(agent.act(obs, deterministic=True)[0], [[2.0], [2.0]])


def test_the_agents_samples_follow_its_seed(box_run):
    obs = np.zeros((50, 3), np.float32)
    first, again, other = (proximal.load(box_run.run_dir, seed=s).act(obs)[0] for s in (0, 0, 1))
    greedy = proximal.load(box_run.run_dir).act(obs, deterministic=True)[0]
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert np.allclose(greedy, greedy[0]) and first.std() > 0.1  # log std 0 at the start: unit noise, clipped


def test_the_agent_names_expected_and_got_for_a_wrong_observation(box_run):
    agent = proximal.load(box_run.run_dir)
    with pytest.raises(proximal.UserError, match=r"shape \(4,\): this agent takes \(3,\) .* or \(N, 3\)"):
        agent.act(np.zeros(4, np.float32))
    with pytest.raises(proximal.UserError, match=r"dtype <U1: this agent takes float32"):
        agent.act(np.array(["a", "b", "c"]))
    with pytest.raises(proximal.UserError, match="trained without action masks"):
        agent.act(np.zeros(3, np.float32), mask=[True])


def test_the_agent_takes_masks_and_gives_multidiscrete_shapes(tmp_path):
    run = proximal.train(env="proximal/MaskedMultiDiscrete-v0", run_dir=tmp_path / "run", quiet=True, **TINY)
    agent = proximal.load(run.run_dir)
    envs = proximal.make_env(agent, 3)
    try:
        obs = envs.reset(seed=0)
        masks = envs.action_masks()
        action, _ = agent.act(obs, mask=masks)
        assert action.shape == (3, *agent.action_space.shape)
        # every chosen action is valid under its mask (the mask rows: the components' values, in order)
        # (a component without any valid action is inactive: its action is ignored)
        offsets = np.concatenate([[0], np.cumsum(agent.action_space.nvec.reshape(-1))[:-1]])
        chosen = offsets + action.reshape(3, -1)
        active = np.add.reduceat(masks.astype(int), offsets, axis=1) > 0
        assert active.any() and np.take_along_axis(masks, chosen, 1)[active].all()
        with pytest.raises(proximal.UserError, match="trained with action masks: pass mask="):
            agent.act(obs)
        with pytest.raises(proximal.UserError, match=r"mask of shape \(5,\): this agent takes 21 entries per "
                                                     r"observation .*\(3, 21\) for 3 observation"):
            agent.act(obs, mask=np.ones(5, bool))
        with pytest.raises(proximal.UserError, match=r"mask of shape \(21,\): .* \(2, 21\) for 2 observation"):
            agent.act(obs[:2], mask=masks[0])  # one row for a batch of two
        assert agent.act(obs[0], mask=masks[0])[0].shape == agent.action_space.shape  # one observation, one row
        with pytest.raises(proximal.UserError, match=r"start of shape \(2,\): .* one flag per observation, \(3,\)"):
            agent.act(obs, mask=masks, start=[1, 0])
    finally:
        envs.close()


def component_values(actions) -> list[set]:
    """The values each component of a batch of actions took (one component for Discrete)."""
    columns = np.asarray(actions).reshape(len(actions), -1)
    return [set(column.tolist()) for column in columns.T]


@pytest.mark.parametrize("make", [make_shifted_discrete, make_shifted_multidiscrete])
def test_training_and_the_agent_give_a_shifted_space_its_own_actions(make, tmp_path):
    """A space's start is added once, on the way to the env: training sends it every value of the space and no
    other, the agent gives the same values, and they reach the env unchanged through proximal.make_env."""
    env_class = type(make())
    space = env_class.action_space
    sizes = np.ravel(space.nvec if isinstance(space, gym.spaces.MultiDiscrete) else space.n)
    every_value = [set(range(start, start + n)) for start, n in zip(np.ravel(space.start), sizes)]
    env_class.received.clear()
    run = proximal.train(env=make, run_dir=tmp_path / "run", quiet=True, env_workers=1, **TINY)
    assert len(env_class.received) == TINY["total_steps"]
    assert component_values(env_class.received) == every_value  # near-uniform at the start: all of them
    agent = proximal.load(run.run_dir)
    obs = np.random.default_rng(0).uniform(-1, 1, (300, 2)).astype(np.float32)
    assert component_values(agent.act(obs)[0]) == every_value
    greedy = agent.act(obs, deterministic=True)[0]
    assert all(space.contains(action) for action in greedy)
    envs = proximal.make_env(agent, env=make)
    try:
        env_class.received.clear()
        action = agent.act(envs.reset(seed=0), deterministic=True)[0]
        envs.step(action)
        assert np.array_equal(env_class.received, action)
    finally:
        envs.close()


def test_a_recurrent_agent_carries_its_state_and_resets_where_an_episode_starts(tmp_path):
    run = proximal.train(env=make_corridor, run_dir=tmp_path / "run", quiet=True, lstm_size=8,
                         **{**TINY, "num_minibatches": 1})
    agent = proximal.load(run.run_dir)
    obs = np.array([[0.0], [3.0]], np.float32)
    _, state = agent.act(obs, deterministic=True)
    assert state.shape == (2, 2, 8) and np.abs(state).sum() > 0
    _, again = agent.act(obs, state, deterministic=True)
    assert not np.allclose(again, state)  # the state went on
    _, fresh = agent.act(obs, state, start=[1.0, 0.0], deterministic=True)
    assert np.allclose(fresh[:, 0], state[:, 0]) and np.allclose(fresh[:, 1], again[:, 1])
    with pytest.raises(proximal.UserError, match=r"state of shape \(2, 1, 8\): .* has shape \(2, 2, 8\)"):
        agent.act(obs, state[:, :1])


def test_load_on_a_device_torch_does_not_know_or_have_is_one_message(box_run):
    # unknown to torch, or known to it but not a device this build runs (a traceback from torch before)
    for name in ("tpu", "xpu", "mps", "meta", "hpu"):
        with pytest.raises(proximal.UserError, match=f"device '{name}' is not one proximal runs on: use cpu, cuda"):
            proximal.load(box_run.run_dir, device=name)
    count = torch.cuda.device_count()
    with pytest.raises(proximal.UserError, match=rf"device 'cuda:{count}': torch sees {count} CUDA device"):
        proximal.load(box_run.run_dir, device=f"cuda:{count}")


def test_load_of_a_missing_or_corrupt_path_is_one_message(tmp_path):
    with pytest.raises(proximal.UserError, match="neither a run directory nor a checkpoint file"):
        proximal.load(tmp_path / "nothing")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(proximal.UserError, match="cannot be read"):
        proximal.load(tmp_path / "bad.pt")


def test_make_env_builds_an_atari_runs_preprocessing(tmp_path):
    run = proximal.train("atari", env="BreakoutNoFrameskip-v4", run_dir=tmp_path / "run", quiet=True,
                         total_steps=32, num_envs=2, num_steps=16, env_workers=1, torch_threads=1, device="cpu")
    agent = proximal.load(run.run_dir)
    envs = proximal.make_env(run.run_dir)
    try:
        obs = envs.reset(seed=0)
        assert obs.shape == (1, 4, 84, 84) and obs.dtype == np.uint8  # the chain's 84x84 grey frames, stacked
        assert agent.observation_space.shape == (4, 84, 84)
        action, _ = agent.act(obs, deterministic=True)
        step = envs.step(action)
        assert step.obs.shape == (1, 4, 84, 84)
    finally:
        envs.close()
