"""Trainings side by side (``proximal.jobs``): a resumed run's speed from the call that trained it; a Ctrl-C, a
failing run, a dead parent or a dead worker stops the others and starts no queued run; Ray tasks ask for what a
run needs, train as a local run does, and a bad or unreachable address is one message."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from proximal import checkpoint, rundir
from proximal.bench import bench, bench_runs, result_row, run_config
from proximal.errors import UserError
from proximal.jobs import WALL_FILE, execute, run_all
from proximal.trainer import train

# two updates of the classic preset's 512-step batch: the shortest run that still ends episodes on CartPole
STEPS = 1024
# runs that train for minutes: still training when a test stops them
LONG = 2_000_000
ROOT = Path(__file__).resolve().parents[1]


def test_ray_tasks_ask_one_cpu_and_a_gpu_for_cuda_runs(tmp_path, monkeypatch):
    asked, started = [], []

    def remote(**resources):
        asked.append(resources)
        return lambda fn: SimpleNamespace(remote=lambda cfg, run_dir, threads: started.append((run_dir, threads)))

    fake = SimpleNamespace(is_initialized=lambda: True, remote=remote, get=lambda ref: None)
    monkeypatch.setitem(sys.modules, "ray", fake)
    runs = (bench_runs(tmp_path, ["CartPole-v1"], None, [1], STEPS, True, device="cuda")
            + bench_runs(tmp_path, ["CartPole-v1"], None, [2], STEPS, True))
    run_all(runs, jobs=2, ray_address="auto", report=lambda _: None)
    assert asked == [{"num_cpus": 1, "num_gpus": 1}, {"num_cpus": 1, "num_gpus": 0}]
    assert started == [(str(r.run_dir), 1) for r in runs]


class FakeRayTaskError(Exception):
    """As Ray's: the task's error as ``cause``, and for text the task's whole traceback."""

    def __init__(self, cause):
        super().__init__(f"ray::execute() (pid=1)\n  File \"trainer.py\", line 1, in train\n{type(cause).__name__}: "
                         f"{cause}")
        self.cause = cause


@pytest.mark.parametrize("cause", [UserError("unknown environment 'X'"), ValueError("a bug in the env")])
def test_a_failing_ray_task_is_one_message_or_its_traceback_and_cancels_the_others(tmp_path, monkeypatch, cause):
    cancelled = []

    def get(ref):
        if ref == 0:
            raise FakeRayTaskError(cause)

    refs = iter(range(10))
    fake = SimpleNamespace(is_initialized=lambda: True, get=get, cancel=cancelled.append,
                           exceptions=SimpleNamespace(RayTaskError=FakeRayTaskError),
                           remote=lambda **_: lambda fn: SimpleNamespace(remote=lambda *args: next(refs)))
    monkeypatch.setitem(sys.modules, "ray", fake)
    runs = bench_runs(tmp_path, ["CartPole-v1"], None, [1, 2, 3], STEPS, True)
    with pytest.raises(Exception) as err:
        run_all(runs, ray_address="auto", report=lambda _: None)
    assert cancelled == [0, 1, 2]
    if isinstance(cause, UserError):  # the one line, as a local run gives it: not Ray's traceback
        assert type(err.value) is UserError and str(err.value) == "unknown environment 'X'"
    else:
        assert type(err.value) is RuntimeError and str(err.value) == "ValueError: a bug in the env"
        assert err.value.__notes__ == [f"in the Ray task training {runs[0].run_dir}:\n{FakeRayTaskError(cause)}"]


@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason="Ray is not installed: pip install 'proximal[ray]' (CI installs it)")
def test_bench_on_a_local_ray_instance(tmp_path):
    import ray

    # local: a new instance, never a cluster that RAY_ADDRESS or a stale /tmp/ray/ray_current_cluster names
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        rows = bench(tmp_path, ["CartPole-v1"], None, [1, 2], STEPS, ray_address="auto", report=lambda _: None)
    finally:
        ray.shutdown()
    assert [r["seed"] for r in rows] == [1, 2]
    local = tmp_path / "local"
    train(run_config("CartPole-v1", "classic", 1, STEPS), local, quiet=True)
    # a Ray task trains exactly what a local run does
    assert (local / "episodes.csv").read_text() == Path(rows[0]["run_dir"], "episodes.csv").read_text()


def test_a_resumed_runs_sps_counts_the_steps_and_seconds_of_the_call_that_finished_it(tmp_path):
    cfg = run_config("CartPole-v1", "classic", 1, STEPS)
    (run,) = bench_runs(tmp_path, ["CartPole-v1"], None, [1], STEPS, True)
    # the first update trained by a call that is not timed, as a killed one is not; with another thread count,
    # as under another --jobs
    cfg.torch_threads = 2
    train(cfg, run.run_dir, quiet=True, max_updates=1)
    execute(run_config("CartPole-v1", "classic", 1, STEPS), run.run_dir, 1)
    # the resumed run trained on this call's share of the cores, not on the first call's
    final = checkpoint.load(checkpoint.checkpoint_path(run.run_dir, cfg.num_updates))
    assert final["config"]["torch_threads"] == 1
    timed = json.loads((run.run_dir / WALL_FILE).read_text())
    assert timed["steps"] == STEPS - cfg.batch_size
    row = result_row(run)
    assert (row["steps"], row["wall_s"]) == (STEPS, timed["seconds"])
    assert row["sps"] == (STEPS - cfg.batch_size) / timed["seconds"]


def test_a_failing_run_stops_the_others_at_once(tmp_path):
    runs = bench_runs(tmp_path, ["CartPole-v1"], None, [1, 2, 3], LONG, True)
    start = time.monotonic()
    reports = []
    with rundir.owned(runs[0].run_dir), pytest.raises(UserError, match="is in use by another training"):
        run_all(runs, jobs=2, report=reports.append)
    assert reports == [f"  stopped {runs[1].run_dir.name}"]
    # seed 2 was stopped part way and seed 3 never started: minutes of training otherwise
    assert time.monotonic() - start < 120
    assert not checkpoint.checkpoint_path(runs[1].run_dir, runs[1].cfg.num_updates).exists()
    assert not runs[2].run_dir.exists()


def start_bench(out: Path, wait_for_locks: bool = True) -> tuple[subprocess.Popen, list[int]]:
    """A bench of 3 long runs, 2 at a time, in its own process group with Ctrl-C on as in a terminal, once both
    workers hold their runs' locks: the process and the workers' pids (without ``wait_for_locks``: at once, and
    no pids)."""
    process = subprocess.Popen([sys.executable, "-m", "proximal", "bench", "CartPole-v1", "--seeds", "3", "--steps",
                                str(LONG), "--jobs", "2", "--out", str(out)], cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    if not wait_for_locks:
        return process, []
    locks = [out / "runs" / f"CartPole-v1__classic__classic__seed{seed}" / rundir.LOCK for seed in (1, 2)]
    deadline = time.monotonic() + 120  # the machine may be busy with other tests
    while not all(lock.exists() and lock.read_text().strip() for lock in locks):
        if time.monotonic() > deadline or process.poll() is not None:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"the workers did not start: {process.communicate()[1]}")
        time.sleep(0.1)
    return process, [int(lock.read_text()) for lock in locks]


def gone(pids: list[int], within: float) -> bool:
    """Whether every process of ``pids`` has exited (a zombie that its new parent has not reaped counts) in time."""
    def running(pid):
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + within
    while any(running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(running(pid) for pid in pids)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the workers' state in /proc")
@pytest.mark.parametrize("stop", ["ctrl-c", "kill the parent", "kill a worker"])
def test_a_stopped_bench_stops_its_workers_and_starts_no_queued_run(tmp_path, stop):
    process, workers = start_bench(tmp_path)
    try:
        if stop == "ctrl-c":
            os.killpg(process.pid, signal.SIGINT)
        elif stop == "kill the parent":
            os.kill(process.pid, signal.SIGKILL)
        else:
            os.kill(workers[0], signal.SIGKILL)
        _, err = process.communicate(timeout=60)
        assert gone(workers, within=30), "a worker trains on"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
    if stop == "ctrl-c":
        assert process.returncode == 130
        assert err.strip().endswith("interrupted; run the same proximal bench command again to continue (finished "
                                    "runs are skipped, stopped ones resumed)")
    elif stop == "kill a worker":
        assert process.returncode == 1
        assert (f"error: the process training {tmp_path}/runs/CartPole-v1__classic__classic__seed1 was killed by "
                "SIGKILL (by hand, or by the out-of-memory killer); run the same command again to resume it") in err
        assert "Traceback" not in err
    assert not (tmp_path / "runs" / "CartPole-v1__classic__classic__seed3").exists()


def workers_of(pid: int) -> list[int]:
    """The run workers a process has started (not multiprocessing's resource tracker)."""
    children = [c for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]
    return [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the workers' state in /proc")
def test_a_ctrl_c_while_the_workers_start_stops_them_without_a_traceback(tmp_path):
    process, _ = start_bench(tmp_path, wait_for_locks=False)
    try:
        deadline = time.monotonic() + 120
        while len(workers := workers_of(process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        # each worker is still importing (seconds): Ctrl-C is held there until its handlers are in place
        for pid in workers:
            blocked = int(next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                               if line.startswith("SigBlk:")).split()[1], 16)
            assert blocked & (1 << (signal.SIGINT - 1)), "a Ctrl-C would interrupt the worker's imports"
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=60)
        assert gone(workers, within=30), "a worker trains on"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130 and "Traceback" not in err, err


@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason="Ray is not installed: pip install 'proximal[ray]' (CI installs it)")
def test_a_bad_or_unreachable_ray_address_is_one_message(tmp_path, monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        unused = probe.getsockname()[1]
    runs = bench_runs(tmp_path, ["CartPole-v1"], None, [1], STEPS, True)
    with pytest.raises(UserError, match=r"cannot connect to a Ray cluster at 'nonsense' \(.*nonsense\); check --ray"):
        run_all(runs, ray_address="nonsense", report=lambda _: None)
    start = time.monotonic()
    with pytest.raises(UserError, match=rf"cannot reach the Ray cluster at .*:{unused}.*; check --ray ADDRESS"):
        run_all(runs, ray_address=f"127.0.0.1:{unused}", report=lambda _: None)
    # auto: the address Ray would find, here in RAY_ADDRESS
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{unused}")
    with pytest.raises(UserError, match=rf"cannot reach the Ray cluster at .*:{unused} \(from --ray auto\)"):
        run_all(runs, ray_address="auto", report=lambda _: None)
    assert time.monotonic() - start < 30  # Ray itself retries for minutes
    assert not runs[0].run_dir.exists()


def test_a_full_disk_at_a_runs_timing_is_one_line_naming_it(tmp_path, monkeypatch):
    import errno

    import proximal.jobs as jobs
    from proximal.errors import RunFailure

    (run,) = bench_runs(tmp_path, ["CartPole-v1"], None, [1], STEPS, True)

    def disk_full(path, data, durable=False):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(jobs, "write_whole", disk_full)
    with pytest.raises(RunFailure) as err:
        execute(run.cfg, run.run_dir, 1)
    assert str(err.value).startswith(f"cannot write '{run.run_dir / WALL_FILE}' (No space left on device): "
                                     f"{run.run_dir.name} is trained but its training time is lost")
