"""The gymnasium envs of the Python adapters (``vector.GymVectorEnv``, ``atari_vector.AtariVectorEnv``), stepped
in this process or in worker processes, so that the emulators of a rollout use every core.

The envs are split into contiguous groups; each group is a gymnasium ``SyncVectorEnv`` with same-step autoreset,
in the parent process (``EnvGroup``) or in a worker process of its own (``WorkerGroup``). Both answer the same
calls, ``send`` then ``recv``, so the parent starts every group's step before it waits for any: the groups step
at the same time while the learner waits. Its torch threads are idle then, so the cores are not oversubscribed.

A group is seeded as its envs would be in one ``SyncVectorEnv`` (env i gets seed + i), so the split changes no
result: any number of workers gives the same transitions.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import pickle
import signal
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from ..errors import UserError
from . import state as env_state
from .contract import Step


class EnvGroup:
    """``count`` envs from ``env_fn`` stepped in this process; the first from ``first_env_fn`` where given."""

    def __init__(self, env_fn: Callable[[], gym.Env], count: int, first_index: int = 0,
                 first_env_fn: Callable[[], gym.Env] | None = None):
        env_fns = [first_env_fn or env_fn] + [env_fn] * (count - 1)
        self.envs = gym.vector.SyncVectorEnv(env_fns, autoreset_mode=AutoresetMode.SAME_STEP)
        self.first_index = first_index
        self._result = None

    def reset(self, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The first observations and their action masks (None where the envs give none)."""
        try:
            obs, info = self.envs.reset(seed=seed + self.first_index)
        except (ValueError, TypeError) as e:
            _raise_if_misfit(e, self.envs.single_observation_space)
            raise
        return obs, info.get("action_mask")

    def step(self, actions: np.ndarray) -> tuple[Step, np.ndarray | None]:
        """The step (episodes' env indices within the group) and the action masks of its observations."""
        try:
            obs, reward, terminated, truncated, info = self.envs.step(actions)
        except (ValueError, TypeError) as e:
            _raise_if_misfit(e, self.envs.single_observation_space)
            raise
        final_obs, episodes = unpack_same_step_info(obs, info)
        return Step(obs, reward, terminated, truncated, final_obs, episodes), info.get("action_mask")

    def call(self, fn: Callable, *args):
        """``fn(list of this group's envs, *args)``: how a worker's envs are inspected (spaces, state)."""
        return fn(self.envs.envs, *args)

    def send(self, method: str, *args) -> None:
        self._result = getattr(self, method)(*args)

    def recv(self):
        result, self._result = self._result, None
        return result

    def close(self) -> None:
        self.envs.close()


def _raise_if_misfit(error: Exception, space: gym.Space) -> None:
    """A UserError where ``error`` is gymnasium's, putting an env's observation into the vector env's array of its
    declared space ("Output array is the wrong shape", "Cannot cast array data"): an env whose observations do not
    fit its observation_space, which numpy's message does not name."""
    if any(Path(frame.filename).match("gymnasium/vector/utils/space_utils.py")
           for frame in traceback.extract_tb(error.__traceback__)):
        raise UserError(f"the env returned an observation that does not fit its observation_space {space} "
                        f"({error}); return observations of that shape, with values of its dtype") from None


def _send(conn, message) -> None:
    """Plain pickle over the pipe, not multiprocessing's pickler: with torch imported, that one hands tensors (env
    states) over as shared-memory file descriptors served by a helper thread, started in the worker and in the
    parent, and every later worker is forked from a parent with that thread's locks. Tensors are pickled by value
    instead: env states are small."""
    conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def _receive(conn):
    return pickle.loads(conn.recv_bytes())


def _serve(conn, env_fn, count: int, first_index: int, parent: int, first_env_fn=None) -> None:
    # The worker is a fork of the trainer, without the trainer's threads; two runtimes hang on their absence (both
    # seen). OpenMP: after torch's parallel ops in the trainer, the worker's first one would wait for the pool's
    # threads for ever; one thread runs no parallel region. The JVM of a Gym-muRTS env made earlier in the trainer:
    # JPype's callback on Python's garbage collections calls into it; the worker's collections skip the
    # callbacks, which are the trainer's.
    import torch

    torch.set_num_threads(1)
    gc.callbacks.clear()
    # nor the command's SIGTERM handler (cli): a SIGTERM, such as multiprocessing's stop of a daemon worker at
    # exit, ends a worker at once
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    group = EnvGroup(env_fn, count, first_index, first_env_fn)
    try:
        while True:
            # A killed parent does not always close this pipe (a worker forked after this one holds its end too),
            # so a worker also stops when it sees that its parent is gone.
            while not conn.poll(1.0):
                if os.getppid() != parent:
                    return
            method, args = _receive(conn)
            if method == "close":
                break
            try:
                _send(conn, (True, getattr(group, method)(*args)))
            except Exception as e:  # noqa: BLE001 - handed to the parent, which raises it
                _send(conn, (False, e))
    except (EOFError, KeyboardInterrupt):  # the parent is gone or interrupted: just stop
        pass
    finally:
        group.close()


@dataclass
class _Failed:
    error: Exception


class WorkerGroup:
    """``count`` envs from ``env_fn`` stepped in a worker process (``env_fn`` and ``call``'s functions must be
    picklable: module-level functions or ``functools.partial`` of them)."""

    def __init__(self, env_fn: Callable[[], gym.Env], count: int, first_index: int,
                 first_env_fn: Callable[[], gym.Env] | None = None):
        self.conn, child = mp.Pipe()
        self.process = mp.Process(target=_serve, args=(child, env_fn, count, first_index, os.getpid(), first_env_fn),
                                  daemon=True)
        self.process.start()
        child.close()

    def send(self, method: str, *args) -> None:
        _send(self.conn, (method, args))

    def recv(self):
        """The result, or the exception the worker raised (returned, not raised: ``EnvGroups`` reads every
        group's answer before it raises one, so no answer is left in a pipe)."""
        ok, result = _receive(self.conn)
        return result if ok else _Failed(result)

    def close(self) -> None:
        if self.process.is_alive():
            try:
                _send(self.conn, ("close", ()))
            except (BrokenPipeError, OSError):
                pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
        self.conn.close()


class EnvGroups:
    """``num_envs`` envs from ``env_fn`` in ``workers`` groups: in this process for ``workers`` <= 1, else one
    worker process per group. ``reset``, ``step`` and ``call`` look like one ``SyncVectorEnv``'s. ``first_env_fn``
    makes env 0 instead (e.g. the one that records videos)."""

    def __init__(self, env_fn: Callable[[], gym.Env], num_envs: int, workers: int,
                 first_env_fn: Callable[[], gym.Env] | None = None):
        workers = max(1, min(workers, num_envs))
        sizes = [len(part) for part in np.array_split(np.arange(num_envs), workers)]
        self.starts = np.cumsum([0] + sizes)[:-1].tolist()
        if workers == 1:
            self.groups = [EnvGroup(env_fn, num_envs, 0, first_env_fn)]
        else:
            self.groups = [WorkerGroup(env_fn, size, start, first_env_fn if start == 0 else None)
                           for size, start in zip(sizes, self.starts)]
        self.bounds = list(zip(self.starts, self.starts[1:] + [num_envs]))

    def _all(self, method: str, args_per_group: list[tuple]) -> list:
        for group, args in zip(self.groups, args_per_group, strict=True):
            group.send(method, *args)
        results = [group.recv() for group in self.groups]
        for result in results:
            if isinstance(result, _Failed):
                raise result.error
        return results

    def reset(self, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
        parts = self._all("reset", [(seed,)] * len(self.groups))
        return np.concatenate([obs for obs, _ in parts]), _concatenate_masks([m for _, m in parts])

    def step(self, actions: np.ndarray) -> tuple[Step, np.ndarray | None]:
        """The step of all envs and the action masks of its observations (None where the envs give none)."""
        parts = self._all("step", [(actions[a:b],) for a, b in self.bounds])
        if len(parts) == 1:
            return parts[0]
        steps = [step for step, _ in parts]
        episodes = [(start + i, r, n) for step, start in zip(steps, self.starts) for i, r, n in step.episodes]
        arrays = (np.concatenate([getattr(step, name) for step in steps])
                  for name in ("obs", "reward", "terminated", "truncated", "final_obs"))
        return Step(*arrays, episodes), _concatenate_masks([masks for _, masks in parts])

    def call(self, fn: Callable, per_env: list | None = None) -> list:
        """``fn(envs of a group)``, or ``fn(envs of a group, that group's slice of per_env)``, for every group;
        the list results concatenated in env order."""
        args = [() if per_env is None else (per_env[a:b],) for a, b in self.bounds]
        return [item for part in self._all("call", [(fn, *a) for a in args]) for item in part]

    def spaces(self) -> tuple[gym.Space, gym.Space, dict]:
        """The first env's observation space, action space and metadata."""
        return self.call(_spaces)[0]

    def render(self):
        """The first env's frame (its render_mode's)."""
        return self.call(_render)[0]

    def get_state(self) -> dict | None:
        """Every env's state (``state.capture``), or None where one cannot be captured."""
        states = self.call(env_state.capture_all)
        return None if any(s is None for s in states) else {"envs": states}

    def set_state(self, state: dict) -> None:
        self.call(env_state.restore_all, state["envs"])

    def close(self) -> None:
        for group in self.groups:
            group.close()


# functions of a group's envs for ``EnvGroups.call``, at module level so that a worker can unpickle them
def _spaces(envs) -> list:
    return [(envs[0].observation_space, envs[0].action_space, envs[0].metadata)]


def _render(envs) -> list:
    return [envs[0].render()]


def _concatenate_masks(masks: list) -> np.ndarray | None:
    return None if any(m is None for m in masks) else np.concatenate(masks)


def unpack_same_step_info(obs: np.ndarray, info: dict) -> tuple[np.ndarray, list[tuple[int, float, int]]]:
    """From a step of gymnasium's same-step-autoreset vector env: the final observations (a copy of ``obs`` with
    the rows of the envs whose episode ended replaced by their last observation; ``obs`` itself when no episode
    ended, which a worker's pipe then carries once) and the ended episodes' (env index, return, length) from
    each env's RecordEpisodeStatistics."""
    if "_final_obs" not in info:
        return obs, []
    final_obs = obs.copy()
    for i in np.flatnonzero(info["_final_obs"]):
        final_obs[i] = info["final_obs"][i]
    episodes = []
    episode = info["final_info"].get("episode")
    if episode is not None:
        for i in np.flatnonzero(episode["_r"]):
            episodes.append((int(i), float(episode["r"][i]), int(episode["l"][i])))
    return final_obs, episodes
