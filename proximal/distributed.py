"""Data-parallel training on ``torch.distributed`` (aux.parallel_gradients), one PPO learner per process.

``torchrun`` starts the processes and sets RANK, WORLD_SIZE and LOCAL_RANK; ``start`` joins them in a process
group (gloo on the CPU, nccl on CUDA, each rank on its local GPU). Each rank steps its own envs (seeded
``seed + 10000 * rank``, as the reference's ``make_vec_env``), collects its own rollout, computes its own
advantages and minibatches; every minibatch's gradients are averaged across ranks before the clipping and the
Adam step, so the parameters stay identical on every rank (``check_parameters`` verifies it). Rank 0 alone writes
the run directory, with the episodes of every rank and a checkpoint holding each rank's own part.

Without torchrun (no WORLD_SIZE, or 1) every function here returns at once and nothing is communicated: a
single process trains exactly as before. Every collective call runs under ``dist_timeout``: a rank that dies or
hangs makes the others stop with an error instead of waiting for ever, naming the ranks that are behind and where
they last were (``progress``).
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from .config import Config
from .errors import RunFailure, UserError

# the reference's make_vec_env: rank r's envs are seeded seed + 10000 * r
SEED_STRIDE = 10_000
# what each rank keeps of its own in a checkpoint; the rest (config, counters, and the policy and optimizer that
# averaged gradients keep identical) is rank 0's
RANK_KEYS = ("generator", "rng", "obs", "carry", "normalizer", "env")
LEARNER_KEYS = ("policy", "optimizer")

# a gloo group for the barrier that names missing ranks and for Python objects (the default group when it is
# gloo already; a second one beside nccl)
_cpu_group = None

# Each rank's progress lives in torch.distributed's own key-value store, under this prefix and the rank's number.
PROGRESS_PREFIX = "proximal/progress"
# How often a thread copies this rank's progress to the store: a hang lasts dist_timeout, far longer, so the record
# a failing rank reads is where the hung rank stopped, while the training thread itself never waits for the store.
PUBLISH_SECONDS = 0.5
# How long a rank waits for the store once the run is failing or ending (the store may have gone with the
# torchrun or the rank 0 that held it).
READ_SECONDS = 2.0


@dataclass
class _Progress:
    """This rank's progress and the thread that publishes it. ``record`` is (collectives entered, where): every
    rank enters the same collectives in the same order, so a rank that has entered fewer than another is behind
    it. The training thread replaces the tuple whole; the publishing thread reads it."""

    store: dist.Store | None = None
    phase: str = "starting"
    gradients: int = 0  # gradient all-reduces entered in this phase: the minibatch being averaged
    record: tuple[int, str] = (0, "starting")
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


_progress = _Progress()


@dataclass(frozen=True)
class Context:
    """This process's place among the ranks; the defaults are a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def root(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world_size > 1

    def seed(self, seed: int) -> int:
        return seed + SEED_STRIDE * self.rank


def context() -> Context:
    """The ranks of the process group this process belongs to (a single process when there is none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Context()
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def launched() -> Context:
    """The ranks of the process group the caller made (the Python API), else those torchrun (or another launcher
    setting its variables) started, known before any group exists."""
    if dist.is_available() and dist.is_initialized():
        return context()
    env = os.environ
    return Context(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def resume_command(run_dir) -> str:
    """The command that continues a stopped run: under torchrun, with the same ranks (a resume refuses others)."""
    ctx = launched()
    if not ctx.parallel:
        return f"proximal train --resume {run_dir}"
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size))
    if per_node == ctx.world_size:
        return f"torchrun --nproc_per_node={per_node} -m proximal train --resume {run_dir}"
    return (f"torchrun --nnodes={ctx.world_size // per_node} --nproc_per_node={per_node} (and this launch's "
            f"rendezvous options) -m proximal train --resume {run_dir}")


def start(cfg: Config, device: torch.device) -> tuple[Context, torch.device, bool]:
    """Join the ranks torchrun started: (context, this rank's device, whether this call created the group and
    must ``stop`` it). A group the caller made beforehand (the Python API) is used as it is."""
    global _cpu_group
    ctx = launched()
    if not ctx.parallel:
        return ctx, device, False
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    created = not dist.is_initialized()
    timeout = timedelta(seconds=cfg.dist_timeout)
    if created:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    _cpu_group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo", timeout=timeout)
    _start_progress()
    return context(), device, created


def stop(created: bool) -> None:
    global _cpu_group
    _cpu_group = None
    _stop_progress()
    if created and dist.is_initialized():
        dist.destroy_process_group()


def _start_progress() -> None:
    """Publish this rank's progress from now on. The first record is written at once, so a rank without one has
    not joined; the thread has a store connection of its own (a clone), as a store is not shared between
    threads."""
    global _progress
    store = dist.PrefixStore(PROGRESS_PREFIX, dist.distributed_c10d._get_default_store())
    _progress = _Progress(store=store)
    key = str(dist.get_rank())
    store.set(key, _encode(_progress.record))
    _progress.thread = threading.Thread(target=_publish, args=(store.clone(), key, _progress), daemon=True,
                                        name="proximal-progress")
    _progress.thread.start()


def _stop_progress() -> None:
    global _progress
    if _progress.thread is not None:
        _progress.stop.set()
        _progress.thread.join(timeout=READ_SECONDS)
    _progress = _Progress()


def _publish(store: dist.Store, key: str, progress: _Progress) -> None:
    sent = progress.record
    while not progress.stop.wait(PUBLISH_SECONDS):
        record = progress.record
        if record != sent:
            try:
                store.set(key, _encode(record))
            except RuntimeError:  # the store has gone: the run is ending
                return
            sent = record


def _encode(record: tuple[int, str]) -> str:
    return f"{record[0]} {record[1]}"


def progress(update: int, phase: str) -> None:
    """Record that this rank begins ``phase`` of ``update``: what a failing collective on another rank reports
    of it. Costs a string; the store hears of it within PUBLISH_SECONDS."""
    _progress.phase, _progress.gradients = f"update {update}, {phase}", 0
    _progress.record = (_progress.record[0], _progress.phase)


def _behind(entered: int) -> str:
    """The ranks whose last record is behind ``entered`` collectives (this rank's own count), each with where it
    was, read from the store; or why none can be named."""
    if _progress.store is None:
        return "no rank's progress was recorded"
    try:
        store = _progress.store.clone()
        store.set_timeout(timedelta(seconds=READ_SECONDS))
        behind = []
        for rank in range(dist.get_world_size()):
            if rank == dist.get_rank():
                continue
            if not store.check([str(rank)]):
                behind.append(f"{rank} (never joined)")
                continue
            count, where = store.get(str(rank)).decode().split(" ", 1)
            if int(count) < entered:
                behind.append(f"{rank} (at {where})")
    except RuntimeError:
        return "the ranks' progress could not be read (its store has gone, with the torchrun or rank 0 holding it)"
    return (f"rank(s) behind it: {', '.join(behind)}" if behind
            else "every rank had come as far (one may have stopped inside this collective)")


@contextmanager
def _collective(what: str, cfg: Config):
    """A failed or timed-out collective as one line: which rank saw it, what it waited for, the ranks that had not
    come as far and where they were, and what the backend said (gloo's barrier names the ranks that did not
    arrive)."""
    entered = _progress.record[0] + 1
    _progress.record = (entered, f"{_progress.phase}, in {what}")
    try:
        yield
    except RuntimeError as e:
        said = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        # a fault of the run (a rank that died or hung), not of its input: exit 1, as RunFailure says
        raise RunFailure(f"rank {dist.get_rank()}: {what} failed ({_progress.phase}); {_behind(entered)}; a rank "
                        f"stopped, or did not answer within dist_timeout ({cfg.dist_timeout:g} s); the backend says: "
                        f"{said}. A rank that died is named in torchrun's failure summary; raise --dist-timeout if a "
                        "rank is merely slow") from None
    _progress.record = (entered, f"{_progress.phase}, after {what}")


def summary(cfg: Config, ctx: Context) -> str:
    """The derived sizes over all ranks, printed after the per-rank ones."""
    averaged = ("gradients averaged every minibatch (aux.parallel_gradients)" if cfg.on("aux.parallel_gradients")
                else "independent learners (aux.parallel_gradients off)")
    return (f"{ctx.world_size} ranks ({dist.get_backend()}): global batch {ctx.world_size * cfg.batch_size} "
            f"({ctx.world_size} x {cfg.batch_size}), global minibatch {ctx.world_size * cfg.minibatch_size}; "
            f"{cfg.num_updates} updates = {cfg.num_updates * cfg.batch_size * ctx.world_size} steps in all; "
            f"{averaged}")


def _averaging(cfg: Config) -> bool:
    # the detail is read first, whatever the process count: the numpy update must declare every read
    return cfg.on("aux.parallel_gradients") and dist.is_available() and dist.is_initialized() \
        and dist.get_world_size() > 1


def _mean_in_place(flat: torch.Tensor, cfg: Config, what: str) -> None:
    # the reference's order: sum over the ranks, then divide by their number
    with _collective(what, cfg):
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(dist.get_world_size())


def _mean_gradient(flat: torch.Tensor, cfg: Config) -> None:
    # numbered within the update (every epoch's minibatches in turn), so that a hang names the minibatch
    _progress.gradients += 1
    _mean_in_place(flat, cfg, f"the gradient all-reduce of minibatch {_progress.gradients}")


def average_gradients(params: list[torch.Tensor], cfg: Config) -> None:
    """aux.parallel_gradients for the torch update: every parameter's gradient becomes its mean over the ranks,
    in one all-reduce of all of them flattened together."""
    if not _averaging(cfg):
        return
    for p in params:
        if p.grad is None:  # every rank must send the same layout
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    _mean_gradient(flat, cfg)
    offset = 0
    for p in params:
        p.grad.copy_(flat[offset:offset + p.numel()].view_as(p.grad))
        offset += p.numel()


def average_flat_gradient(grad: np.ndarray, cfg: Config) -> None:
    """aux.parallel_gradients for the numpy update: its flat float32 gradient, all-reduced in place through a
    tensor sharing its memory."""
    if _averaging(cfg):
        _mean_gradient(torch.from_numpy(grad), cfg)


def average_scalar(value: float, cfg: Config) -> float:
    """A per-rank number (aux.target_kl's epoch approx_kl) as its mean over the ranks that average gradients, so
    that a decision taken on it is the same on every rank."""
    if not _averaging(cfg):
        return value
    flat = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        flat = flat.cuda()
    _mean_in_place(flat, cfg, "averaging approx_kl (aux.target_kl)")
    return flat.item()


def any_rank(flag: bool, cfg: Config) -> bool:
    """Whether ``flag`` is set on any rank (a callback's request to stop): every rank gets the same answer."""
    if not context().parallel:
        return flag
    value = torch.tensor([int(flag)])
    with _collective("agreeing whether to stop", cfg):
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=_cpu_group)
    return bool(value.item())


def broadcast_parameters(policy: torch.nn.Module, cfg: Config) -> None:
    """Every rank starts from rank 0's parameters, as the reference syncs from the root."""
    if not context().parallel:
        return
    with _collective("the parameter broadcast", cfg):
        for tensor in policy.state_dict().values():
            dist.broadcast(tensor, src=0)


def check_parameters(policy: torch.nn.Module, cfg: Config) -> None:
    """Averaged gradients keep the parameters identical on every rank; compare a checksum of them (each
    tensor's sum and sum of squares, in float64) with rank 0's and stop on any difference."""
    ctx = context()
    if not (ctx.parallel and cfg.on("aux.parallel_gradients")):
        return
    sums = torch.stack([s for p in policy.parameters() for s in (p.detach().double().sum(),
                                                                   p.detach().double().square().sum())])
    gathered = [torch.empty_like(sums) for _ in range(ctx.world_size)]
    with _collective("the parameter check", cfg):
        dist.all_gather(gathered, sums)
    differ = [r for r, other in enumerate(gathered) if not torch.equal(other, gathered[0])]
    if differ:
        raise RunFailure(f"rank {ctx.rank}: the parameters of rank(s) {', '.join(map(str, differ))} differ from "
                        "rank 0's although gradients are averaged: a rank changed them outside the update (a "
                        "nondeterministic op, a different proximal version?); rerun with the same code on every "
                        "rank")


def wait_for_all(cfg: Config, what: str) -> None:
    """A barrier (before the update's collectives, and at the end so that no rank tears the group down while
    another still sends to it): on gloo, rank 0 learns which ranks did not arrive within dist_timeout and names
    them."""
    if not context().parallel:
        return
    with _collective(f"waiting for every rank to finish {what}", cfg):
        dist.monitored_barrier(group=_cpu_group, timeout=timedelta(seconds=cfg.dist_timeout), wait_all_ranks=True)


def gather_rollout(start_step: int, local_step: int, episodes: list, cfg: Config) -> tuple[int, list]:
    """(global step, episodes for the logs) after a rollout that advanced this rank from ``start_step`` to
    ``local_step``. The global step counts every rank's steps; rank 0 gets every rank's episodes, stamped with
    the global step they ended near (each rank's offset into its rollout times the number of ranks), others an
    empty list."""
    ctx = context()
    if not ctx.parallel:
        return local_step, episodes
    wait_for_all(cfg, "its rollout")
    stamped = [(start_step + (step - start_step) * ctx.world_size, ret, length) for step, ret, length in episodes]
    gathered = [None] * ctx.world_size if ctx.root else None
    with _collective("gathering the episodes", cfg):
        dist.gather_object(stamped, gathered, dst=0, group=_cpu_group)
    merged = sorted(e for part in gathered for e in part) if ctx.root else []
    return start_step + (local_step - start_step) * ctx.world_size, merged


def gather_checkpoint(payload: dict, cfg: Config) -> dict | None:
    """The checkpoint rank 0 saves: its own payload with ``ranks``, every rank's own part in rank order (with
    the policy and optimizer too when independent learners differ); None on the other ranks. A single process's
    payload is returned as it is."""
    ctx = context()
    if not ctx.parallel:
        return payload
    keys = RANK_KEYS if cfg.on("aux.parallel_gradients") else RANK_KEYS + LEARNER_KEYS
    part = {k: payload[k] for k in keys}
    gathered = [None] * ctx.world_size if ctx.root else None
    with _collective("gathering the checkpoint", cfg):
        dist.gather_object(part, gathered, dst=0, group=_cpu_group)
    return {**payload, "ranks": gathered} if ctx.root else None


def rank_payload(payload: dict, ctx: Context) -> dict:
    """This rank's view of a checkpoint: rank 0's payload with this rank's own part in place of rank 0's.
    Refuses a checkpoint written by another number of ranks: each rank's envs, generators and statistics are
    its own and cannot be split or merged."""
    saved = len(payload.get("ranks", ())) or 1
    if saved != ctx.world_size:
        launch = "without torchrun" if saved == 1 else f"under torchrun with {saved} processes in all"
        raise UserError(f"the checkpoint was written by {saved} rank(s) and this run has {ctx.world_size}: "
                        f"resume it {launch} (--nproc_per_node x --nnodes = {saved}), or start a new run")
    return {**payload, **payload["ranks"][ctx.rank]} if ctx.parallel else payload


class Silent:
    """The logger of ranks other than 0: rank 0 alone writes the run directory."""

    def write(self, message: str) -> None:
        pass

    def episodes(self, episodes: list) -> None:
        pass

    def update(self, global_step: int, update: int, scalars: dict) -> None:
        pass

    def sync(self) -> None:
        pass

    def close(self) -> None:
        pass
