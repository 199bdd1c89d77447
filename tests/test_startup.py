"""Start-up and the speed benchmark's pieces: a plain CartPole run imports none of the heavy optional packages and
leaves the collector as it found it; the env-only ceiling steps the trainer's own envs as many steps as the
training, with actions of the env's space; CleanRL is given the preset's hyperparameters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import speed  # noqa: E402

# optional packages a CartPole training never needs; each costs a noticeable part of a second to import
HEAVY = ("matplotlib", "onnx", "onnxruntime", "onnxscript", "wandb", "ray", "ale_py", "mujoco", "cv2", "envpool",
         "gym_microrts", "stable_baselines3", "moviepy", "pandas", "torch._dynamo", "sympy")


def run_python(code: str) -> dict:
    """Run ``code`` in a fresh interpreter on this checkout's proximal; its last stdout line, parsed as JSON."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_plain_cartpole_run_imports_no_heavy_optional_package(tmp_path):
    found = run_python(f"""
import gc, json, sys
from proximal.cli import main
code = main(["train", "--env", "CartPole-v1", "--total-steps", "512", "--quiet",
             "--run-dir", {str(tmp_path / "run")!r}])
print(json.dumps({{"code": code, "heavy": [m for m in {HEAVY!r} if m in sys.modules],
                   "collecting": gc.isenabled(), "frozen": gc.get_freeze_count()}}))
""")
    assert found["code"] == 0
    assert found["heavy"] == [], f"a plain CartPole run imported {found['heavy']}: import them where they are used"
    # the import turned the collector off for a moment: it must be back on, with the imports' objects frozen
    assert found["collecting"] and found["frozen"] > 0


def test_command_trains_the_same_numbers_as_the_api(tmp_path):
    """The command skips torch._dynamo's import (Adam.step's wrapper among others) and freezes the collector's old
    objects: a CartPole run on the torch update path (the optimizer's every method), in a fresh process, imports
    no torch._dynamo and ends with the same parameters and Adam state, bit for bit, as the API's run in another
    fresh process, where torch is as it comes."""
    settings = '"--env", "CartPole-v1", "--total-steps", "1024", "--fast-paths", "false", "--torch-threads", "1"'
    command = run_python(f"""
import json, sys
from proximal.cli import main
code = main(["train", {settings}, "--quiet", "--run-dir", {str(tmp_path / "cli")!r}])
print(json.dumps([code, "torch._dynamo" in sys.modules]))
""")
    assert command == [0, False]
    same = run_python(f"""
import json, torch
from proximal import checkpoint
from proximal.config import preset
from proximal.trainer import train
cfg = preset("classic")
cfg.total_steps, cfg.fast_paths, cfg.torch_threads = 1024, False, 1
train(cfg, {str(tmp_path / "api")!r}, quiet=True)
api, cli = (checkpoint.load(checkpoint.latest({str(tmp_path)!r} + "/" + d)) for d in ("api", "cli"))
def flat(tree):
    return [t for t in torch.utils._pytree.tree_leaves(tree) if isinstance(t, torch.Tensor)]
def same(a, b):
    return len(a) == len(b) > 0 and all(torch.equal(x, y) for x, y in zip(a, b))
print(json.dumps([same(flat(api[k]), flat(cli[k])) for k in ("policy", "optimizer")]))
""")
    assert same == [True, True]


def test_import_leaves_a_disabled_collector_disabled():
    assert run_python("import gc, json; gc.disable(); import proximal; proximal.train; "
                      "print(json.dumps(gc.isenabled()))") is False


def test_import_help_usage_errors_and_details_cost_no_torch_import():
    """``import proximal`` imports each public name at its first use: the command's help, a usage error and
    ``proximal details`` answer in a fraction of a second, without torch's ~2 s."""
    found = run_python("""
import contextlib, io, json, sys
import proximal
from proximal.cli import main
codes = []
for argv in (["--help"], ["train", "--num-envs", "x"], ["details"]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            codes.append(main(argv))
        except SystemExit as e:
            codes.append(e.code)
before = "torch" in sys.modules
from proximal import Config, train
print(json.dumps({"codes": codes, "before": before, "after": "torch" in sys.modules,
                  "dir": "train" in dir(proximal), "same": proximal.train is train}))
""")
    assert found == {"codes": [0, 2, 0], "before": False, "after": True, "dir": True, "same": True}


def test_proximals_own_ids_are_registered_by_importing_proximal():
    """As gymnasium's "module:id" form imports the package for its ids: both ids from a fresh interpreter."""
    found = run_python("""
import json
import gymnasium as gym
env = gym.make("proximal:proximal/CartPoleNoVelocity-v1")
masked = gym.make("proximal/MaskedMultiDiscrete-v0")
print(json.dumps([env.spec.max_episode_steps, list(env.observation_space.shape), type(masked.unwrapped).__name__]))
""")
    assert found == [500, [2], "MaskedMultiDiscreteEnv"]


def test_a_ctrl_c_in_torchs_import_is_held_until_it_is_done():
    """Raised inside torch's C++ initialization, a KeyboardInterrupt aborts the process (pybind11's terminate) or
    is lost: the command holds it until the import is done."""
    from proximal.cli import _ctrl_c_held

    with pytest.raises(KeyboardInterrupt):
        with _ctrl_c_held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)  # not raised here: the import would go on
            reached = True
    assert reached and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_interrupt_before_the_command_starts_is_one_line_and_status_130():
    done = subprocess.run([sys.executable, "-c", "import proximal.cli as c\n"
                           "def interrupted(): raise KeyboardInterrupt\n"
                           "c.main = interrupted\nc.run()"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert (done.returncode, done.stderr) == (130, "interrupted\n")


def test_random_actions_cover_each_space_in_one_draw():
    rng = np.random.default_rng(0)
    discrete = speed.random_actions(gym.spaces.Discrete(3, start=1), (50, 4), rng)
    assert discrete.shape == (50, 4) and set(np.unique(discrete)) == {1, 2, 3}
    multi = speed.random_actions(gym.spaces.MultiDiscrete([2, 5]), (50, 4), rng)
    assert multi.shape == (50, 4, 2)
    assert set(np.unique(multi[..., 0])) == {0, 1} and set(np.unique(multi[..., 1])) == {0, 1, 2, 3, 4}
    box = speed.random_actions(gym.spaces.Box(-0.5, 0.5, (2,), np.float32), (50, 4), rng)
    assert box.shape == (50, 4, 2) and box.dtype == np.float32
    # a standard normal passes 0.5 about 62% of the time: clipped to the bounds, and reaching them
    assert box.min() == -0.5 and box.max() == 0.5
    assert 0.4 < np.mean(np.abs(box) == 0.5) < 0.8


def test_summary_divides_the_sides_the_targets_name():
    stats = {"proximal": {"sps": 600.0, "seconds": 2.0}, "ceiling": {"sps": 1000.0, "seconds": 1.0},
             "sb3": {"sps": 150.0, "seconds": 9.0}}
    assert speed.summary(stats, "sb3") == (0.6, 4.0)  # SPS over SPS against SB3
    stats |= {"proximal-cli": {"sps": 0.0, "seconds": 3.0}, "cleanrl": {"sps": 0.0, "seconds": 12.0}}
    assert speed.summary(stats, "cleanrl") == (0.6, 4.0)  # whole-process seconds, the peer's over proximal's
    assert speed.summary(stats, "none") == (0.6, None)  # --no-peer: the ceiling alone
    assert speed.row("1", stats, "none", "env 50%").split() == ["1", "600", "1000", "0.60", "env", "50%"]


def test_ceiling_steps_the_trainers_envs_as_many_steps_as_training(monkeypatch):
    import proximal.envs

    made, stepped = [], []
    make_envs = proximal.envs.make_envs

    def counting_make_envs(env_id, num_envs, **kwargs):
        envs = make_envs(env_id, num_envs, **kwargs)
        step = envs.step

        def counted(actions):
            stepped.append(np.array(actions))
            return step(actions)

        envs.step = counted
        made.append((env_id, num_envs, kwargs["cfg"]))
        return envs

    monkeypatch.setattr(proximal.envs, "make_envs", counting_make_envs)
    cfg = speed.workload("classic", "CartPole-v1", 3 * 512 + 100, 1, 1)  # 3 whole batches of 4 x 128
    seconds, steps, parts = speed.time_ceiling(cfg)
    assert made == [("CartPole-v1", 4, cfg)]
    assert steps == 3 * 512 and len(stepped) == 3 * 128
    assert all(a.shape == (4,) and set(a) <= {0, 1} for a in stepped)
    assert seconds > 0 and parts == {}


def test_paired_ceiling_steps_a_twin_env_one_rollout_between_updates(monkeypatch):
    import proximal.envs

    steps_of = []  # the step count of each vector env made here: the twin's (the trainer makes its own)
    make_envs = proximal.envs.make_envs

    def counting_make_envs(env_id, num_envs, **kwargs):
        envs = make_envs(env_id, num_envs, **kwargs)
        count, step = len(steps_of), envs.step
        steps_of.append(0)

        def counted(actions):
            steps_of[count] += 1
            return step(actions)

        envs.step = counted
        return envs

    monkeypatch.setattr(proximal.envs, "make_envs", counting_make_envs)
    cfg = speed.workload("classic", "CartPole-v1", 3 * 512, 1, 1)
    start = time.perf_counter()
    seconds, steps, parts = speed.time_paired(cfg)
    wall = time.perf_counter() - start
    # the training's two intervals after its first update against the twin's first two rollouts
    assert steps_of == [2 * 128] and steps == 3 * 512
    assert parts["training"] > 0 and parts["ceiling"] > 0
    # the training's own seconds: the twin's are taken out of them, and the intervals are part of them
    assert parts["training"] < seconds <= wall - parts["ceiling"]


def test_a_benchmark_ends_bad_input_with_one_line():
    def unknown_env():
        gym.make("NoSuchEnv-v0")

    for bad in (lambda: speed.workload("nope", "CartPole-v1", 1024, 1, 1), unknown_env):
        with pytest.raises(SystemExit) as exit_:
            speed.run_script(bad, "speed.py")
        assert str(exit_.value.code).startswith("speed.py: ") and "\n" not in str(exit_.value.code)
    with pytest.raises(ZeroDivisionError):  # a bug is not bad input: its traceback stays
        speed.run_script(lambda: 1 / 0, "speed.py")


def test_cleanrl_is_given_the_presets_settings():
    cfg = speed.workload("mujoco", "HalfCheetah-v4", 4096, 3, 1)
    command = speed.cleanrl_command(Path("/src/cleanrl"), cfg)
    assert command[0] == "/src/cleanrl/cleanrl/ppo_continuous_action.py"
    flags = dict(zip(command[1::2], command[2::2]))
    assert flags == {"--env-id": "HalfCheetah-v4", "--total-timesteps": "4096", "--seed": "3", "--num-envs": "1",
                     "--num-steps": "2048", "--num-minibatches": "32", "--update-epochs": "10",
                     "--learning-rate": "0.0003", "--gamma": "0.99", "--gae-lambda": "0.95", "--clip-coef": "0.2",
                     "--ent-coef": "0.0", "--vf-coef": "0.5", "--max-grad-norm": "0.5"}
    assert command[-1] == "--no-cuda"
    atari = speed.cleanrl_command(Path("/src/cleanrl"), speed.workload("atari", "PongNoFrameskip-v4", 1024, 1, 2))
    assert atari[0].endswith("/ppo_atari.py") and atari[atari.index("--clip-coef") + 1] == "0.1"


def test_shares_split_the_time_by_part():
    assert speed.shares({"env": 3.0, "inference": 1.0, "learn": 4.0, "other": 0.0}) == {
        "env": 0.375, "inference": 0.125, "learn": 0.5, "other": 0.0}
    assert speed.result_shares({"env": 1.0, "inference": 1.0, "learn": 2.0, "other": 0.0}) == \
        "env 25% inference 25% learn 50% other 0%"


def test_a_preset_spec_sets_proximals_precision_and_not_the_peers_settings():
    assert speed.split_spec("atari") == ("atari", "fp32") and speed.split_spec("atari:bf16") == ("atari", "bf16")
    bf16 = speed.workload("atari:bf16", "PongNoFrameskip-v4", 1024, 1, 2)
    assert (bf16.preset, bf16.precision) == ("atari", "bf16")
    fp32 = speed.workload("atari", "PongNoFrameskip-v4", 1024, 1, 2)
    assert speed.cleanrl_command(Path("/src/cleanrl"), bf16) == speed.cleanrl_command(Path("/src/cleanrl"), fp32)


def test_a_recurrent_preset_runs_against_recurrent_ppo_with_one_lstm_under_both_heads(monkeypatch):
    """A feedforward PPO is not the same work as an LSTM policy's: the recurrent presets' SB3 peer is sb3-contrib's
    RecurrentPPO, shaped as the reference's lstm and cnn_lstm networks (a fake module stands in for the package)."""
    import types
    monkeypatch.setitem(sys.modules, "sb3_contrib", types.SimpleNamespace(RecurrentPPO="RecurrentPPO"))
    for name, atari, policy in (("classic-lstm", False, "MlpLstmPolicy"), ("atari-lstm", True, "CnnLstmPolicy")):
        cfg = speed.workload(name, "CartPole-v1", 1024, 1, 1)
        assert speed.sb3_peer(cfg) == "sb3-contrib RecurrentPPO"
        algorithm, name_given, kwargs = speed.sb3_policy(cfg, atari)
        assert (algorithm, name_given) == ("RecurrentPPO", policy)
        assert kwargs["lstm_hidden_size"] == cfg.lstm_size == 128 and kwargs["n_lstm_layers"] == 1
        assert kwargs["shared_lstm"] and not kwargs["enable_critic_lstm"] and kwargs["net_arch"] == []
    cfg = speed.workload("classic-lstm", "CartPole-v1", 1024, 1, 1)
    cfg.lstm_mlp = True  # no counterpart in RecurrentPPO: one line, not a different network
    with pytest.raises(SystemExit, match="lstm_mlp"):
        speed.sb3_policy(cfg, False)
    monkeypatch.setitem(sys.modules, "sb3_contrib", None)  # not installed
    with pytest.raises(SystemExit, match="pip install sb3-contrib"):
        speed.sb3_policy(speed.workload("classic-lstm", "CartPole-v1", 1024, 1, 1), False)
    assert speed.sb3_peer(speed.workload("classic", "CartPole-v1", 1024, 1, 1)) == "SB3 PPO"


def test_command_ends_without_teardown_but_runs_exit_handlers_and_flushes(tmp_path):
    """``proximal`` (``cli.run``) skips Python's teardown of its modules: the exit code is main's, what it printed
    arrives whole, and exit handlers (here one registered by the user's env module) still run."""
    (tmp_path / "exit_env.py").write_text(
        "import atexit, pathlib, gymnasium\n"
        "gymnasium.register('Exit/CartPole-v0', entry_point='gymnasium.envs.classic_control:CartPoleEnv', "
        "max_episode_steps=500)\n"
        "atexit.register(lambda: pathlib.Path('handler_ran').write_text('yes'))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "proximal", "train", "--env", "exit_env:Exit/CartPole-v0",
                           "--total-steps", "512", "--run-dir", "run"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "handler_ran").read_text() == "yes"
    assert "run directory: run" in done.stdout + done.stderr
    failed = subprocess.run([sys.executable, "-m", "proximal", "train", "--env", "exit_env:Exit/CartPole-v0",
                             "--total-steps", "512", "--run-dir", "run"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert failed.returncode == 2 and "already holds a run" in failed.stderr
