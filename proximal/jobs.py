"""Trainings run side by side, for ``proximal bench`` and ``proximal ablate``: one after another, in worker
processes (``--jobs``), or as tasks on a Ray cluster (``--ray``). Each run continues where an earlier call left
it, and records the seconds and steps of the call that trained it.

A Ctrl-C, a run that fails or a worker that dies stops the runs in training (each keeps its checkpoints, and the
same command resumes them) and starts no other; workers whose parent was killed stop by themselves.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing import resource_tracker
from pathlib import Path

from . import import_heavy
from .config import Config
from .errors import RunFailure, UserError
from .outputs import write_whole

# the seconds and env steps of the calls of execute that returned (in practice the one that trained the run to its
# end), summed. A killed call counts for neither: SPS is their ratio, where total steps / seconds would credit the
# killed call's checkpointed steps to the last call's time
WALL_FILE = "bench_wall.json"
# how long a stopped worker may take to unwind (close its envs) before it is killed
STOP_GRACE_S = 10.0
# a Ray address that does not answer in this time is reported, not retried for minutes
CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Run:
    variant: str
    cfg: Config
    run_dir: Path


def check_reusable(run: Run) -> None:
    """Refuse a run directory that holds another config: continuing it would mix two experiments."""
    config = run.run_dir / "config.json"
    if not config.exists():
        return
    saved = Config.from_dict(json.loads(config.read_text()))
    # the thread count follows --jobs, which a rerun may change; it does not change what is learned
    saved.torch_threads = run.cfg.torch_threads
    if saved != run.cfg:
        raise UserError(f"'{run.run_dir}' holds a run of another config; remove it or choose another --out")


def execute(cfg: Config, run_dir: Path, threads: int) -> None:
    """Train one run to its end, continuing it if an earlier call started it; a finished run is left as is."""
    from threadpoolctl import threadpool_limits

    from .trainer import train

    run_dir = Path(run_dir)
    if complete(cfg, run_dir):
        return
    cfg.torch_threads = threads
    resume = any((run_dir / "checkpoints").glob("update_*.pt"))
    first_update = []  # this call's first: the ones before it were trained by an earlier call

    def note_first_update(info) -> None:
        if not first_update:
            first_update.append(info.update)

    start = time.perf_counter()
    with threadpool_limits(threads):
        state = train(None if resume else cfg, run_dir, resume=resume, quiet=True, torch_threads=threads,
                      callbacks=(note_first_update,))
    seconds = time.perf_counter() - start
    steps = (state.update - first_update[0] + 1) * state.cfg.batch_size if first_update else 0
    wall = run_dir / WALL_FILE
    before = json.loads(wall.read_text()) if wall.exists() else {"seconds": 0.0, "steps": 0}
    # whole or not at all: a stop signal may land anywhere, and an empty file would stop every later summary
    try:
        write_whole(wall, json.dumps({"seconds": before["seconds"] + seconds, "steps": before["steps"] + steps}))
    except OSError as e:
        raise RunFailure(f"cannot write '{wall}' ({e.strerror}): {run_dir.name} is trained but its training time "
                         "is lost (its wall_s and sps read nan); free space and run the same command again for "
                         "the other runs and the summary") from None


def complete(cfg: Config, run_dir: Path) -> bool:
    from . import checkpoint

    return checkpoint.checkpoint_path(run_dir, cfg.num_updates).exists()


def threads_per_job(jobs: int) -> int:
    # runs side by side must not share a core between their threads: a thread waiting on a descheduled peer
    # slows the whole update
    return max(1, (os.cpu_count() or 1) // jobs)


def run_all(runs: list[Run], jobs: int = 1, ray_address: str | None = None, report=print) -> None:
    """Train every run not yet finished: ``jobs`` at once in worker processes, or as Ray tasks. A Ctrl-C, or a run
    that fails, stops the runs in training (each keeps its checkpoints) and starts no other."""
    if jobs <= 0:
        raise UserError(f"--jobs must be positive, got {jobs}")
    for run in runs:
        check_reusable(run)
    todo = []
    for run in runs:
        if complete(run.cfg, run.run_dir):
            report(f"  done {run.run_dir.name} (finished before)")
        else:
            todo.append(run)
    if ray_address is not None:
        # --jobs splits this machine's cores; a cluster's tasks each ask Ray for what one run needs
        _run_on_ray(todo, ray_address, 1, report)
        return
    threads = threads_per_job(jobs)
    if jobs == 1:
        for run in todo:
            execute(run.cfg, run.run_dir, threads)
            report(f"  done {run.run_dir.name}")
    else:
        _run_in_processes(todo, jobs, threads, report)


def _run_in_processes(runs: list[Run], jobs: int, threads: int, report) -> None:
    # A process per run, not a ProcessPoolExecutor: its workers take the next queued run after a Ctrl-C has
    # stopped theirs, its shutdown waits for every queued run, and a dead worker is a BrokenProcessPool naming no
    # run. spawn: a fresh interpreter, no torch state inherited through fork
    context = multiprocessing.get_context("spawn")
    # started now, not by the first worker's start: starting it unblocks Ctrl-C, which must stay held there (below)
    resource_tracker.ensure_running()
    queued = list(runs)
    live = {}  # the parent's end of each worker's pipe -> (its process, its run)
    try:
        while queued or live:
            while queued and len(live) < jobs:
                run = queued.pop(0)
                receiver, sender = context.Pipe(duplex=False)
                process = context.Process(target=_worker, args=(run.cfg, run.run_dir, threads, sender, os.getpid()),
                                          name=f"proximal bench {run.run_dir.name}")
                # The worker starts with Ctrl-C held (the mask is inherited) until its handlers are in place: a
                # Ctrl-C during its imports would print their traceback. The parent's own waits until the worker
                # is one of those it stops
                held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
                try:
                    process.start()
                    live[receiver] = (process, run)
                finally:
                    signal.pthread_sigmask(signal.SIG_SETMASK, held)
                sender.close()  # the worker's end: the parent reads an end of file once the worker is gone
            # every worker that ended is read before an error is raised: a run that finished is done, not stopped
            error = None
            for receiver in multiprocessing.connection.wait(list(live)):
                process, run = live.pop(receiver)
                try:
                    _outcome(receiver, process, run)
                    report(f"  done {run.run_dir.name}")
                except BaseException as e:  # noqa: BLE001 - raised below, once the others are read
                    error = error or e
            if error is not None:
                raise error
    finally:
        _stop(live, report)


def _worker(cfg: Config, run_dir: Path, threads: int, results, parent: int) -> None:
    """One run in a worker process; its outcome goes to the parent through ``results``."""
    # The trainer's imports (torch's) first, while Ctrl-C is held and a SIGTERM ends the process as it is: an
    # exception raised inside torch's C++ initialization aborts it with a C++ error instead
    import_heavy("proximal.trainer")
    try:  # from the first handler on: a stop signal lands as KeyboardInterrupt, from here or from the watcher
        signal.signal(signal.SIGTERM, _stop_once)
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # a background job's Ctrl-C stays ignored
            signal.signal(signal.SIGINT, _stop_once)
        threading.Thread(target=_stop_when_orphaned, args=(parent,), daemon=True).start()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a Ctrl-C held since the start lands here
        execute(cfg, run_dir, threads)
        outcome = ("done",)
    except KeyboardInterrupt:
        outcome = ("interrupted",)
    except BaseException as e:  # noqa: BLE001 - whatever stopped the run is the parent's to report
        # plain text, not the exception: its class may not be importable in the parent (a user's env module)
        outcome = ("failed", *_failure_text(e), traceback.format_exc())
    with contextlib.suppress(OSError):  # a parent that has died has nobody to tell
        results.send(outcome)


def _stop_once(signum, frame) -> None:
    # A terminal's Ctrl-C reaches the worker and the parent, which then stops its workers with SIGTERM: the run
    # stops at the first signal, and the second does not cut its unwinding (closing its envs and files) short. A
    # handler that does nothing, not SIG_IGN: Python reports a signal already pending when SIG_IGN is set
    signal.signal(signal.SIGINT, _already_stopping)
    signal.signal(signal.SIGTERM, _already_stopping)
    raise KeyboardInterrupt


def _already_stopping(signum, frame) -> None:
    pass


def _stop_when_orphaned(parent: int) -> None:
    # A parent killed outright (kill -9, the OOM killer) cannot stop its workers: they would train on, queued
    # for a parent that never reads, and hold their runs' locks against a rerun. Polled, unlike Linux's
    # PR_SET_PDEATHSIG, so it works on every platform and for a parent that died before the worker started
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def _outcome(receiver, process, run: Run) -> None:
    """Raise what stopped a finished worker's run, if anything did."""
    try:
        outcome = receiver.recv()
    except (EOFError, OSError, pickle.UnpicklingError):
        outcome = None  # the worker died without a word, or in the middle of one: killed, or os._exit in the run
    finally:
        receiver.close()
    process.join(STOP_GRACE_S)
    if process.exitcode is None:  # it sent a word, then hung on its way out
        process.kill()
        process.join()
    if outcome is None:
        code = process.exitcode
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
        if code == -signal.SIGKILL:
            how += " (by hand, or by the out-of-memory killer)"
        raise RunFailure(f"the process training {run.run_dir} {how}; run the same command again to resume it "
                         "from its last checkpoint")
    if outcome[0] == "interrupted":
        raise KeyboardInterrupt
    if outcome[0] == "failed":
        _, kind, message, remote = outcome
        raise _failure(kind, message, f"in the worker process training {run.run_dir}:\n{remote}")


def _failure_text(error: BaseException) -> tuple[str | None, str]:
    """(the name of its proximal error class, or None; its message) of what stopped a run elsewhere."""
    kind = next((k for k in (UserError, RunFailure) if isinstance(error, k)), None)
    return (kind.__name__, str(error)) if kind else (None, f"{type(error).__name__}: {error}")


def _failure(kind: str | None, message: str, where: str) -> Exception:
    """The driver's error for a run that failed in a worker process or a Ray task: a UserError or RunFailure as
    the one line it is (no traceback), anything else with the remote traceback (``where``) as a note."""
    if kind is not None:
        return {"UserError": UserError, "RunFailure": RunFailure}[kind](message)
    error = RuntimeError(message)
    error.add_note(where)
    return error


def _stop(live: dict, report) -> None:
    """Stop the runs still training (``live``: the parent's end of each one's pipe -> its process and run), as a
    Ctrl-C would: each keeps its checkpoints and a rerun resumes it."""
    for process, _ in live.values():
        process.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for receiver, (process, run) in live.items():
        receiver.close()
        process.join(max(0.0, deadline - time.monotonic()))
        if process.exitcode is None:
            process.kill()
            process.join()
        report(f"  stopped {run.run_dir.name}")


def _run_on_ray(runs: list[Run], address: str, threads: int, report) -> None:
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs Ray: pip install 'proximal[ray]'") from None
    if not ray.is_initialized():
        try:
            _check_reachable(_bootstrap_address(address), address)
            ray.init(address=address)
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - Ray's errors for a bad address have no common base
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"cannot connect to a Ray cluster at '{address}' ({reason}); check --ray ADDRESS: "
                            "auto for a cluster started on this machine (ray start --head), else the head "
                            "node's host:port") from None
    tasks = {}
    for run in runs:
        gpus = 1 if run.cfg.device == "cuda" else 0
        task = ray.remote(num_cpus=threads, num_gpus=gpus)(execute)
        # absolute: a Ray worker's working directory is not the driver's
        tasks[task.remote(run.cfg, str(run.run_dir.absolute()), threads)] = run
    try:
        for ref, run in tasks.items():
            try:
                ray.get(ref)
            except ray.exceptions.RayTaskError as e:  # its text is the task's traceback, whatever the error
                raise _failure(*_failure_text(e.cause), f"in the Ray task training {run.run_dir}:\n{e}") from None
            report(f"  done {run.run_dir.name}")
    except BaseException:
        # as the local workers: a failed run or a Ctrl-C stops the others (each keeps its checkpoints)
        for ref in tasks:
            with contextlib.suppress(Exception):
                ray.cancel(ref)
        raise


def _bootstrap_address(address: str) -> str | None:
    """The host:port that ``ray.init(address)`` connects to (for auto: RAY_ADDRESS, else the cluster last started
    on this machine), None where it starts a local instance. Ray's errors for a malformed address or no cluster
    found are raised here."""
    if address.startswith("ray://"):
        return address.removeprefix("ray://")
    try:
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:  # a Ray that moved it: a host:port given as such is still checked
        return address
    return canonicalize_bootstrap_address(address)


def _check_reachable(target: str | None, address: str) -> None:
    """The cluster at ``target`` (host:port) must accept a TCP connection: Ray retries an unreachable one for
    minutes, deaf to Ctrl-C."""
    host, sep, port = (target or "").rpartition(":")
    if not sep or not host or not port.isdigit():
        return  # a new local instance, or a form Ray judges itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, OverflowError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        source = "" if target == address else f" (from --ray {address})"
        raise UserError(f"cannot reach the Ray cluster at {target}{source}: {reason}; check --ray ADDRESS (the "
                        "head node's host:port) and that the cluster is running") from None
