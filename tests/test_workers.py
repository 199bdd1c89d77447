"""Envs stepped in worker processes (proximal.envs.workers) give exactly the transitions of one process."""

from __future__ import annotations

import numpy as np
import pytest

from proximal.envs.contract import EnvOptions
from proximal.envs.vector import GymVectorEnv


def _rollout(workers: int, steps: int = 300):
    envs = GymVectorEnv("CartPole-v1", 5, options=EnvOptions(workers=workers))
    actions = np.random.default_rng(0).integers(2, size=(steps, 5))
    try:
        out = [envs.reset(seed=11).copy()]
        for a in actions:
            s = envs.step(a)
            out.append((s.obs.copy(), s.final_obs.copy(), s.reward, s.terminated, s.truncated, s.episodes))
        return out, envs.get_state()
    finally:
        envs.close()


def test_worker_processes_give_the_transitions_of_one_process():
    one, state_one = _rollout(1)
    split, state_split = _rollout(2)  # groups of 3 and 2 envs: seeds, episodes' env indices and final obs must map
    np.testing.assert_array_equal(one[0], split[0])
    episodes = 0
    for a, b in zip(one[1:], split[1:]):
        for x, y in zip(a[:5], b[:5]):
            np.testing.assert_array_equal(x, y)
        assert a[5] == b[5]
        episodes += len(a[5])
    assert episodes > 10 and {i for s in one[1:] for i, _, _ in s[5]} == set(range(5))
    assert len(state_split["envs"]) == 5
    for x, y in zip(state_one["envs"], state_split["envs"]):
        assert x["layers"][-1]["state"][1].tolist() == y["layers"][-1]["state"][1].tolist()


def test_env_states_cross_the_pipe_by_value_without_a_helper_thread():
    # multiprocessing's pickler would hand the state's tensors over as file descriptors, served by a helper
    # thread in the parent, from which every later worker would be forked
    import threading

    import torch

    envs = GymVectorEnv("CartPole-v1", 4, options=EnvOptions(workers=2))
    try:
        envs.reset(seed=3)
        state = envs.get_state()
        assert isinstance(state["envs"][0]["layers"][-1]["state"][1], torch.Tensor)  # CartPole's state
        envs.set_state(state)
        assert envs.get_state()["envs"][0]["layers"][-1]["state"][1].tolist() == \
            state["envs"][0]["layers"][-1]["state"][1].tolist()
    finally:
        envs.close()
    assert not [t for t in threading.enumerate() if "_serve" in t.name], "no resource-sharer thread"


def _torch_threads(envs):
    import torch

    return [torch.get_num_threads()]


def _gc_callbacks(envs):
    import gc

    return [len(gc.callbacks)]


def _asked_of_two_workers(fn) -> list:
    envs = GymVectorEnv("CartPole-v1", 4, options=EnvOptions(workers=2))
    try:
        return envs.groups.call(fn)
    finally:
        envs.close()


def test_workers_collect_garbage_without_the_parents_callbacks():
    # JPype's callback (a Gym-muRTS env's JVM in the parent) calls into a JVM the forked worker does not have
    import gc

    def callback(phase, info):
        pass

    gc.callbacks.append(callback)
    try:
        assert _asked_of_two_workers(_gc_callbacks) == [0, 0]
    finally:
        gc.callbacks.remove(callback)


def test_workers_run_torch_on_one_thread_whatever_the_parents_count():
    # OpenMP's thread pool does not survive a fork: a worker running a parallel torch op after its parent ran one
    # waits for ever, so workers keep to one thread
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        (torch.randn(512, 512) @ torch.randn(512, 512)).sum()  # the parent's pool has run
        assert _asked_of_two_workers(_torch_threads) == [1, 1]
    finally:
        torch.set_num_threads(saved)


def _fail(envs):
    raise ValueError("raised in a worker")


def test_an_error_in_a_worker_is_raised_in_the_parent_and_close_ends_the_workers():
    envs = GymVectorEnv("CartPole-v1", 2, options=EnvOptions(workers=2))
    processes = [g.process for g in envs.groups.groups]
    assert all(p.is_alive() for p in processes)
    with pytest.raises(ValueError, match="raised in a worker"):
        envs.groups.call(_fail)
    envs.reset(seed=0)  # the workers serve on after an error
    envs.close()
    assert not any(p.is_alive() for p in processes)


def test_rollout_inference_runs_on_one_thread_while_workers_step_and_the_update_on_all(tmp_path, monkeypatch):
    import torch

    from proximal import trainer
    from proximal.config import preset

    seen = {}
    real_collect, real_update = trainer.collect_rollout, trainer.make_update

    def collect(*args, **kwargs):
        seen.setdefault("rollout", set()).add(torch.get_num_threads())
        return real_collect(*args, **kwargs)

    def make_update(*args, **kwargs):
        update = real_update(*args, **kwargs)

        def run(*a, **k):
            seen.setdefault("update", set()).add(torch.get_num_threads())
            return update(*a, **k)
        return run

    monkeypatch.setattr(trainer, "collect_rollout", collect)
    monkeypatch.setattr(trainer, "make_update", make_update)
    threads = torch.get_num_threads()
    try:
        cfg = preset("classic")
        cfg.total_steps, cfg.env_workers, cfg.torch_threads = 2 * cfg.batch_size, 2, 3
        trainer.train(cfg, tmp_path / "run", quiet=True)
    finally:
        torch.set_num_threads(threads)
    assert seen == {"rollout": {1}, "update": {3}}


def test_workers_stop_when_their_parent_is_killed():
    """A trainer killed with SIGKILL runs no clean-up: its env workers must notice and exit on their own."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = ("from proximal.envs.contract import EnvOptions\n"
              "from proximal.envs.vector import GymVectorEnv\n"
              "import os, time\n"
              "envs = GymVectorEnv('CartPole-v1', 3, options=EnvOptions(workers=3))\n"
              "print(' '.join(str(g.process.pid) for g in envs.groups.groups), flush=True)\n"
              "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in parent.stdout.readline().split()]
    assert len(pids) == 3
    parent.send_signal(signal.SIGKILL)
    parent.wait()

    def alive(pid):
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(p) for p in pids)


def test_action_masks_come_back_from_the_workers_in_env_order():
    """aux.action_masking: the masks read from each env's info reach the learner as from one process."""
    runs = []
    for workers in (1, 2):
        envs = GymVectorEnv("proximal/MaskedMultiDiscrete-v0", 3, options=EnvOptions(workers=workers))
        envs.reset(seed=4)
        masks = [envs.action_masks()]
        rng = np.random.default_rng(0)
        for _ in range(40):
            envs.step(rng.integers(0, 2, size=(3, *envs.single_action_space.shape)))
            masks.append(envs.action_masks())
        envs.close()
        runs.append(np.stack(masks))
    assert runs[0].shape[1] == 3 and runs[0].any() and not runs[0].all()
    np.testing.assert_array_equal(runs[0], runs[1])


def test_same_step_info_gives_final_observations_and_episodes():
    from proximal.envs.workers import unpack_same_step_info

    obs = np.array([[0.0], [1.0], [2.0]])
    assert unpack_same_step_info(obs, {})[0] is obs, "no episode ended: obs itself, carried once by a pipe"
    last = np.empty(3, dtype=object)  # gymnasium's: the last observation where an episode ended, else None
    last[1] = np.array([9.0])
    info = {"_final_obs": np.array([False, True, False]), "final_obs": last,
            "final_info": {"episode": {"_r": np.array([False, True, False]), "r": np.array([0.0, 7.5, 0.0]),
                                       "l": np.array([0, 12, 0])}}}
    final_obs, episodes = unpack_same_step_info(obs, info)
    assert final_obs.tolist() == [[0.0], [9.0], [2.0]] and obs.tolist() == [[0.0], [1.0], [2.0]]
    assert episodes == [(1, 7.5, 12)]
