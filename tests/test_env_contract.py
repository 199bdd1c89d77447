"""The env layer's seams: every adapter implements the whole ``contract.VecEnv``, the modules import in layers
(contract below the adapters, ``make`` above them, the config read by ``make`` alone), and ``make_envs`` hands
the run's settings to the adapters as ``EnvOptions``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from proximal.envs.contract import EnvOptions, VecEnv
from proximal.errors import UserError

ENVS = Path(__file__).parent.parent / "proximal" / "envs"
MEMBERS = set(VecEnv.__annotations__) | {name for name, value in vars(VecEnv).items()
                                          if callable(value) and not name.startswith("_")}


def relative_imports(path: Path) -> set[str]:
    """The proximal modules ``path`` imports: ``config`` for ``..config``, ``envs.atari`` for ``.atari``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            names = [node.module] if node.module else [alias.name for alias in node.names]
            found |= {("envs." if node.level == 1 else "") + name.split(".")[0] for name in names}
    return found


def test_env_modules_import_in_layers_without_a_circle():
    imports = {path.stem: relative_imports(path) for path in ENVS.glob("*.py")}
    assert MEMBERS == {"num_envs", "single_observation_space", "single_action_space", "metadata", "reset", "step",
                       "action_masks", "render", "get_state", "set_state", "close"}
    assert imports["contract"] <= {"errors", "spaces"}, "the contract imports no adapter, policy or config"
    # normalize wraps the made envs and reads its own settings from the config
    assert {name for name, found in imports.items() if "config" in found} == {"make", "normalize"}
    assert {name for name, found in imports.items() if "envs.make" in found} == {"__init__"}

    def reaches(start, target, seen=()):
        return any(dep == target or (dep not in seen and reaches(dep, target, (*seen, dep)))
                   for dep in (d[len("envs."):] for d in imports.get(start, ()) if d.startswith("envs.")))
    assert not [name for name in imports if reaches(name, name)]


def assert_whole_protocol(envs) -> None:
    assert all(hasattr(envs, name) for name in MEMBERS), sorted(n for n in MEMBERS if not hasattr(envs, n))


def test_gymnasium_and_atari_adapters_implement_the_whole_protocol():
    from proximal.envs import make_envs

    cartpole = make_envs("CartPole-v1", 2, render_mode="rgb_array")
    atari = make_envs("BreakoutNoFrameskip-v4", 1, render_mode="rgb_array")
    for envs, fps, frame in ((cartpole, 50, (400, 600, 3)), (atari, 30, (210, 160, 3))):
        assert_whole_protocol(envs)
        envs.reset(seed=0)
        assert envs.action_masks() is None
        assert envs.metadata["render_fps"] == fps and envs.render().shape == frame
        envs.close()


@pytest.mark.parametrize("backend", ["envpool", "ale"])
def test_cpp_backends_implement_the_whole_protocol_and_refuse_to_render(backend):
    from proximal.envs.atari_backends import make_backend_envs

    envs = make_backend_envs("BreakoutNoFrameskip-v4", 1, EnvOptions(backend=backend))
    assert_whole_protocol(envs)
    envs.reset(seed=0)
    assert envs.action_masks() is None and envs.metadata == {}
    with pytest.raises(UserError, match=f"--backend {backend} does not render.*--backend python"):
        envs.render()
    envs.close()


def test_microrts_adapter_has_every_method_of_the_protocol():
    from proximal.envs.microrts import MicroRTSVectorEnv

    methods = {name for name in MEMBERS if callable(getattr(VecEnv, name, None))}
    assert all(callable(getattr(MicroRTSVectorEnv, name, None)) for name in methods)


def test_env_options_carry_the_runs_env_settings_to_the_atari_chain():
    from proximal.config import preset
    from proximal.envs import make_envs
    from proximal.envs.atari_vector import AtariVectorEnv
    from proximal.envs.make import env_options

    cfg = preset("atari")
    cfg.num_envs, cfg.env_workers, cfg.atari_repeat_first = 2, 3, True
    cfg.ale_options = "repeat_action_probability=0.25"
    options = env_options(cfg)
    assert options == EnvOptions(workers=2, details=cfg.details, repeat_first=True,
                                 ale_options={"repeat_action_probability": 0.25}, backend="python")
    envs = make_envs("BreakoutNoFrameskip-v4", 2, cfg=cfg)
    assert isinstance(envs, AtariVectorEnv) and len(envs.groups.groups) == 2, "2 workers: at most one per env"
    obs = envs.reset(seed=0)
    assert obs[:, 3].any() and all(np.array_equal(obs[:, j], obs[:, 3]) for j in range(3)), "repeat_first"
    sticky = envs.groups.call(sticky_action_probability)
    assert sticky == [0.25, 0.25], "the ale options reach every worker's emulator"
    envs.close()


def sticky_action_probability(envs) -> list:
    return [env.unwrapped.ale.getFloat("repeat_action_probability") for env in envs]


def test_capture_video_of_a_registered_env_without_render_mode_is_one_message(tmp_path):
    import proximal

    # proximal's own MaskedMultiDiscrete env has no render API: gymnasium's make passes render_mode to a class
    # without __init__ arguments
    with pytest.raises(UserError, match="env 'proximal/MaskedMultiDiscrete-v0' cannot render as 'rgb_array': its "
                                        "constructor takes no render_mode argument; add one .* or train without "
                                        "capture_video"):
        proximal.train(env="proximal/MaskedMultiDiscrete-v0", capture_video=True, run_dir=tmp_path / "run",
                       quiet=True)
    assert not (tmp_path / "run").exists()
    # a TypeError raised inside an env's own constructor is the env's, with its traceback
    gym.register("proximal-test/BrokenInit-v0", entry_point=BrokenInit)
    with pytest.raises(TypeError, match=r"Helper\(\) takes no arguments"):
        proximal.train(env="proximal-test/BrokenInit-v0", capture_video=True, run_dir=tmp_path / "broken",
                       quiet=True)


class BrokenInit(gym.Env):
    """Its constructor takes render_mode, and fails in its own code, when given one, with the words of a missing
    keyword."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, render_mode=None):
        class Helper:
            pass

        if render_mode is not None:
            Helper(render_mode)


class MisfitObservations(gym.Env):
    """Observations that do not fit the declared space: ``misfit`` "shape" one value too many, "dtype" floats
    in a uint8 space."""

    action_space = gym.spaces.Discrete(2)

    def __init__(self, misfit: str):
        self.misfit = misfit
        self.observation_space = (gym.spaces.Box(-1.0, 1.0, (3,), np.float32) if misfit == "shape"
                                  else gym.spaces.Box(0, 255, (3,), np.uint8))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(), {}

    def step(self, action):
        return self._obs(), 1.0, False, False, {}

    def _obs(self):
        return np.zeros(4, np.float32) if self.misfit == "shape" else np.full(3, 0.5)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("misfit, said", [("shape", "Output array is the wrong shape"),
                                          ("dtype", "Cannot cast array data from dtype('float64') to dtype('uint8')")])
def test_observations_that_do_not_fit_their_space_are_one_message(misfit, said, workers, tmp_path):
    import proximal

    env_id = f"proximal-test/Misfit-{misfit}-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=MisfitObservations, kwargs={"misfit": misfit})
    with pytest.raises(UserError, match=r"the env returned an observation that does not fit its observation_space "
                                        rf"Box\(.*\) \({re.escape(said)}.*\); return observations of that shape"):
        proximal.train(env=env_id, num_envs=2, env_workers=workers, total_steps=256, num_steps=64,
                       run_dir=tmp_path / "run", quiet=True)


class ScriptedMicroRTS:
    """Gym-muRTS's grid-mode vector env as the adapter calls it: ``step`` returns (obs, shaped reward, done,
    infos with the raw rewards of the six reward functions, win/loss first), here from a script of
    (reward, done, raw_rewards) per step."""

    def __init__(self, script):
        self.script = list(script)

    def reset(self):
        return np.zeros((2, 4, 4, 27), np.int64)

    def step(self, actions):
        reward, done, raw = self.script.pop(0)
        obs = np.full((2, 4, 4, 27), len(self.script), np.int64)
        return obs, np.array(reward, np.float64), np.array(done), [{"raw_rewards": np.array(r)} for r in raw]


def test_microrts_adapter_counts_games_and_records_results_from_the_clients_steps(monkeypatch):
    from proximal.envs.microrts import MicroRTSVectorEnv

    zero = [0.0] * 6
    script = [
        ([1.0, 0.5], [False, False], [zero, zero]),
        ([2.0, 0.5], [True, False], [[1.0, 0.0, 2.0, 0, 0, 0], zero]),  # env 0 wins after 2 steps
        ([5.0, 0.5], [False, True], [zero, [-1.0, 1.0, 0, 0, 0, 0]]),  # env 1 loses after 3
        ([1.0, 2.0], [True, True], [[0.0, 1.0, 0, 0, 0, 0], [0.0, -1.0, 0, 0, 0, 0]]),  # draws (the step limit)
    ]
    envs = object.__new__(MicroRTSVectorEnv)  # the adapter without its Java client
    envs.num_envs, envs.results = 2, []
    envs._returns, envs._lengths = np.full(2, 7.0), np.full(2, 3, np.int64)  # an earlier game's: reset clears them
    envs.env = ScriptedMicroRTS(script)
    monkeypatch.setattr(envs, "_java_actions", lambda actions: actions)
    assert envs.reset(seed=0).dtype == np.uint8
    steps = [envs.step(np.zeros((2, 16, 7), np.int64)) for _ in script]
    assert [s.episodes for s in steps] == [[], [(0, 3.0, 2)], [(1, 1.5, 3)], [(0, 6.0, 2), (1, 2.0, 1)]]
    assert envs.results == [1, -1, 0, 0]
    for s, (reward, done, _) in zip(steps, script):
        assert s.terminated.tolist() == done and not s.truncated.any(), "every end is a termination"
        assert s.reward.dtype == np.float32 and s.reward.tolist() == reward
        assert s.obs.dtype == np.uint8 and s.final_obs is s.obs  # the client's next game's first observation
