"""The exact-resume check shared by every policy kind's tests: a run stopped after some updates and resumed from its
checkpoint ends bit for bit where the uninterrupted run ends, and its logs continue without gaps or duplicates."""

import csv
from pathlib import Path
from typing import NamedTuple

import torch

from proximal import checkpoint
from proximal.config import Config
from proximal.trainer import TrainerState, train

# wall-clock columns and checkpoint entries: they differ between two runs of the same seed
TIMINGS = ("SPS", "env_seconds", "inference_seconds", "learn_seconds", "other_seconds")
WALL_CLOCK_STATE = ("episode_start_time",)  # gymnasium's RecordEpisodeStatistics
PER_RUN = ("run_id",)  # each run directory's own id


def rows(path, drop=TIMINGS) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(f)]


def params(state: TrainerState) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in state.policy.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Runs(NamedTuple):
    root: Path  # root / "full" and root / "resumed" are the run directories
    stop_at: int
    full: TrainerState
    stopped: TrainerState  # the resumed run's state when it stopped
    resumed: TrainerState


def train_stopped_and_resumed(cfg: Config, root: Path, stop_at: int, *, lose_last_checkpoint: bool = False) -> Runs:
    """``cfg`` trained uninterrupted in root/full, and in root/resumed stopped after ``stop_at`` updates and
    resumed. ``lose_last_checkpoint``: the checkpoint written at the stop is deleted, as if the run had been killed
    just before writing it; the resume then starts from an earlier periodic checkpoint while the logs ran ahead."""
    full = train(cfg, root / "full", quiet=True)
    stopped = train(cfg, root / "resumed", quiet=True, max_updates=stop_at)
    if lose_last_checkpoint:
        checkpoint.checkpoint_path(root / "resumed", stop_at).unlink()
    resumed = train(None, root / "resumed", resume=True, quiet=True)
    return Runs(root, stop_at, full, stopped, resumed)


def assert_equal_payloads(a, b, where: str = "checkpoint") -> None:
    """Two checkpoint payloads (tensors and plain values, nested in dicts and lists) hold the same values."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in (k for k in a if k not in WALL_CLOCK_STATE + PER_RUN):
            assert_equal_payloads(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal_payloads(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b, where


def assert_runs_agree(runs: Runs) -> None:
    """The resumed run equals the uninterrupted one: the update count and step, the parameters and optimizer
    state, the final checkpoint as a whole (envs, RNGs, statistics, whatever the trainer state holds), and the
    logged episodes and updates (the learning rate and clip range continue on their schedules)."""
    full, resumed = runs.full, runs.resumed
    assert runs.stopped.update == runs.stop_at
    assert resumed.update == full.update == full.cfg.num_updates and resumed.global_step == full.global_step
    assert same(params(full), params(resumed)), "bitwise the parameters of the uninterrupted run"
    assert_equal_payloads(full.optimizer.state_dict(), resumed.optimizer.state_dict(), "optimizer")
    assert_equal_payloads(checkpoint.load(checkpoint.latest(runs.root / "full")),
                          checkpoint.load(checkpoint.latest(runs.root / "resumed")))
    for log in ("episodes.csv", "updates.csv"):
        assert rows(runs.root / "full" / log) == rows(runs.root / "resumed" / log), log


def assert_resume_is_exact(cfg: Config, root: Path, stop_at: int, *, lose_last_checkpoint: bool = False) -> Runs:
    """``train_stopped_and_resumed`` then ``assert_runs_agree``; returns the runs for a policy kind's own checks."""
    runs = train_stopped_and_resumed(cfg, root, stop_at, lose_last_checkpoint=lose_last_checkpoint)
    assert_runs_agree(runs)
    return runs
