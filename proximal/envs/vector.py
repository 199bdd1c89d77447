"""gymnasium's envs behind the ``contract.VecEnv`` contract, in gymnasium's same-step autoreset mode.

gymnasium >= 1.0 defaults to next-step autoreset, where the step after a done returns the reset observation with
reward 0 and ignores the action; that step is not a transition, so the envs run in the same-step mode
(``workers.EnvGroups``), which the contract's autoreset is.

Episode statistics come from each env's ``RecordEpisodeStatistics``: raw rewards, lengths in env steps.

Action masks: gymnasium envs give them the gymnasium way, as ``info["action_mask"]`` or as the ``action_mask``
key of a Dict observation (``MaskInInfo`` moves the latter to the former).

An env is named by a registered id, by gymnasium's ``module:EnvId`` (the module, importable from the current
directory, registers the id when imported), or given as a zero-argument factory returning a ``gymnasium.Env``;
all three get the same wrappers and vector env.
"""

from __future__ import annotations

import importlib
import os
import pickle
import sys
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path

import gymnasium as gym
import numpy as np

from ..errors import UserError
from ..video import RecordEpisodes
from .contract import EnvOptions, Step, read_masks
from .workers import EnvGroups


class MaskInInfo(gym.Wrapper):
    """A Dict observation with an ``action_mask`` key and one other key becomes that other observation, the mask
    moving to ``info["action_mask"]``: one way for the vector env to read masks."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        keys = [k for k in env.observation_space.spaces if k != "action_mask"]
        if len(keys) != 1:
            raise UserError(f"a Dict observation with an action_mask needs exactly one other key, got {keys}; "
                            "flatten the other keys into one Box")
        self.key = keys[0]
        self.observation_space = env.observation_space[self.key]

    def _split(self, obs, info):
        return obs[self.key], {**info, "action_mask": obs["action_mask"]}

    def reset(self, **kwargs):
        return self._split(*self.env.reset(**kwargs))

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        obs, info = self._split(obs, info)
        return obs, reward, terminated, truncated, info


EnvSource = str | Callable[[], gym.Env]
# how a run records a factory in its config's env_id: a name that a registered id cannot be (gymnasium would try to
# import a module called "callable") and that tells the user which factory to pass again on resume
FACTORY_PREFIX = "callable:"


def factory_id(factory: Callable[[], gym.Env]) -> str:
    """``callable:module.qualname`` of a factory (of its class for callables without a name, e.g. partials)."""
    named = factory if hasattr(factory, "__qualname__") else type(factory)
    return f"{FACTORY_PREFIX}{named.__module__}.{named.__qualname__}"


def _where(e: BaseException) -> str:
    """"Type: message (file:line)" of an exception, at the innermost frame: the user's own line."""
    if isinstance(e, SyntaxError):
        return f"{type(e).__name__}: {e.msg} ({e.filename}:{e.lineno})"
    frame = traceback.extract_tb(e.__traceback__)[-1]
    return f"{type(e).__name__}: {e} ({frame.filename}:{frame.lineno})"


def import_env_module(env_id: str) -> str:
    """For ``module:EnvId``, import the module (whose import registers the id), the current directory importable
    as under ``python -m``; the id to look up. Other ids are returned as they are."""
    module, sep, name = env_id.partition(":")
    if not sep:
        return env_id
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module.split(".")[0] and e.name != module:
            raise UserError(f"importing '{module}' for env '{env_id}' failed: {_where(e)}") from None
        raise UserError(f"env '{env_id}': no module '{module}' in the current directory ({os.getcwd()}) or on "
                        "sys.path; run from the directory that holds it or install it") from None
    except Exception as e:  # noqa: BLE001 - the user's module may raise anything; its own message says what
        raise UserError(f"importing '{module}' for env '{env_id}' failed: {_where(e)}") from None
    return name


def make_gym_env(env: EnvSource, render_mode: str | None = None, video_dir: str | None = None) -> gym.Env:
    """One env with the vector env's wrappers; with ``video_dir``, its episodes are recorded there (``video``),
    under the episode statistics, which then see the env as without it."""
    if callable(env):
        raw = env()  # a factory takes no arguments, so it renders as it chose to
    else:
        kwargs = {"render_mode": render_mode} if render_mode else {}
        try:
            raw = gym.make(env, disable_env_checker=True, **kwargs)
        except TypeError as e:
            # Python's words for a constructor without a render_mode keyword (a class without __init__ "takes no
            # arguments"), raised where gymnasium calls it (gymnasium raises it again with the kwargs named): a
            # TypeError from inside the env's own code is its own to report, with its traceback
            raised = e.__cause__ or e.__context__ or e
            at_the_call = "gymnasium" in Path(traceback.extract_tb(raised.__traceback__)[-1].filename).parts
            if not kwargs or not at_the_call or ("unexpected keyword argument 'render_mode'" not in str(e)
                                                 and "takes no arguments" not in str(e)):
                raise
            recording = ", or train without capture_video (--capture-video)" if video_dir is not None else ""
            raise UserError(f"env '{env}' cannot render as {render_mode!r}: its constructor takes no render_mode "
                            f"argument; add one (gymnasium's render API){recording}") from None
    return wrap_env(raw if video_dir is None else RecordEpisodes(raw, video_dir))


def _gl_backend_failure(error: Exception) -> str | None:
    """The MUJOCO_GL value where ``error`` is mujoco's import failing on that GL backend (PyOpenGL without the
    library, or a value mujoco does not know); None otherwise."""
    backend = os.environ.get("MUJOCO_GL")
    files = [Path(frame.filename).parts for frame in traceback.extract_tb(error.__traceback__)]
    in_gl = any("OpenGL" in parts or "mujoco" in parts for parts in files)
    return backend if backend and (in_gl or "MUJOCO_GL" in str(error)) else None


def wrap_env(env: gym.Env) -> gym.Env:
    space = env.observation_space
    if isinstance(space, gym.spaces.Dict) and "action_mask" in space.spaces:
        env = MaskInInfo(env)
    if not isinstance(env.observation_space, gym.spaces.Box):
        # the vector env could not even stack such observations: say so before it tries
        raise UserError(f"observation space {env.observation_space} is not supported: the policies take Box "
                        "observations (vectors, images, grids); flatten a Dict or Tuple observation with "
                        "gymnasium.wrappers.FlattenObservation")
    return gym.wrappers.RecordEpisodeStatistics(env)


def check_factory(factory: Callable[[], gym.Env], workers: int) -> None:
    """Call the factory once here, so that one that raises or returns something else fails with a message
    instead of in a worker, and check that worker processes can receive it."""
    name = factory_id(factory).removeprefix(FACTORY_PREFIX)
    try:
        env = factory()
    except Exception as e:  # noqa: BLE001 - the user's factory may raise anything; its own message says what
        raise UserError(f"the env factory {name} raised {_where(e)}") from None
    if not isinstance(env, gym.Env):
        raise UserError(f"the env factory {name} returned a {type(env).__name__}, not a gymnasium.Env; return the "
                        "env itself (e.g. gymnasium.make(...) or an instance of your gymnasium.Env subclass)")
    try:
        wrap_env(env)
    finally:
        env.close()
    if workers > 1:
        try:
            pickle.dumps(factory)
        except Exception as e:  # noqa: BLE001 - pickling fails with several types (PicklingError, AttributeError)
            raise UserError(f"the env factory {name} cannot be sent to env worker processes ({type(e).__name__}: "
                            f"{e}); define it at module level (not a lambda or a local function) or set "
                            "env_workers=1") from None


class GymVectorEnv:
    """gymnasium envs with same-step autoreset, stepped in this process or split over ``options.workers``
    processes (``workers.EnvGroups``: the same transitions either way). With ``video_dir``, env 0 renders as
    rgb_array and its episodes are recorded there on CleanRL's schedule (``video.RecordEpisodes``)."""

    def __init__(self, env: EnvSource, num_envs: int, render_mode: str | None = None,
                 options: EnvOptions = EnvOptions(), video_dir: str | None = None):
        if callable(env):
            self.env_id = factory_id(env)
            check_factory(env, options.workers)
        else:
            self.env_id = env
            self._check_id(env)
        first_env_fn = None
        if video_dir is not None:
            first_env_fn = partial(make_gym_env, env, "rgb_array", str(video_dir))
            first_env_fn().close()  # a factory's env that cannot be recorded fails here, not in a worker
        self.groups = EnvGroups(partial(make_gym_env, env, render_mode), num_envs, options.workers, first_env_fn)
        self.num_envs = num_envs
        self.single_observation_space, self.single_action_space, self.metadata = self.groups.spaces()
        self._masks = None

    @staticmethod
    def _check_id(env_id: str) -> None:
        try:
            gym.spec(import_env_module(env_id))
        except gym.error.Error as e:
            raise UserError(f"unknown environment '{env_id}' ({e}); list the registered ids with "
                            "python -c \"import gymnasium; gymnasium.pprint_registry()\"") from None
        try:
            make_gym_env(env_id).close()  # a missing dependency fails here, in this process, with its message
        except gym.error.DependencyNotInstalled as e:
            raise UserError(f"environment '{env_id}' needs a package that is not installed: {e}") from None
        except Exception as e:  # noqa: BLE001 - re-raised unless it is MuJoCo's GL backend failing to load
            if (backend := _gl_backend_failure(e)) is None:
                raise
            raise UserError(f"environment '{env_id}': MuJoCo could not load its GL backend MUJOCO_GL={backend} "
                            f"({type(e).__name__}: {e}); install that backend's library (osmesa: libosmesa6, egl: "
                            "libegl1) or choose another, e.g. MUJOCO_GL=egl") from None

    def reset(self, seed: int) -> np.ndarray:
        obs, self._masks = self.groups.reset(seed)
        return obs

    def step(self, actions: np.ndarray) -> Step:
        """``actions`` as the env takes them, a Discrete or MultiDiscrete space's ``start`` included: the
        distribution's ``to_env`` adds it, so that the agent and the ONNX export give the same actions."""
        # same-step autoreset: an env that was reset reports its reset info, so this is the new episode's mask
        step, self._masks = self.groups.step(actions)
        return step

    def action_masks(self) -> np.ndarray | None:
        if self._masks is None:
            return None
        return read_masks(self._masks, self.single_action_space, self.num_envs)

    def get_state(self) -> dict | None:
        return self.groups.get_state()

    def set_state(self, state: dict) -> None:
        self.groups.set_state(state)

    def render(self):
        """The first env's rgb_array frame (make the envs with render_mode="rgb_array")."""
        try:
            return self.groups.render()
        except Exception as e:  # noqa: BLE001 - GL and display errors come in many types; the message says which
            raise UserError(f"rendering {self.env_id} failed ({type(e).__name__}: {e}); on a machine without a "
                            "display, run with MUJOCO_GL=egl (or osmesa)") from None

    def close(self) -> None:
        self.groups.close()
