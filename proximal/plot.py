"""Learning curves from run directories: episodic return against steps, seeds aggregated."""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

from .config import preset as preset_config, PRESETS
from .errors import UserError
from .logs import whole_rows
from .outputs import save_figure


# what run_label and experiment_labels read of a run's config.json
_LABEL_KEYS = ("env_id", "preset", "details")


def read_run(run_dir: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    """A run's config and its episodes (global step, return); rows that a crash or a full disk left torn or
    malformed are skipped with a warning."""
    run_dir = Path(run_dir)
    try:
        cfg = json.loads((run_dir / "config.json").read_text())
        rows, dropped = whole_rows(run_dir / "episodes.csv")
    except (OSError, ValueError) as e:
        raise UserError(f"'{run_dir}' is not a readable run directory ({e})") from None
    missing = [k for k in _LABEL_KEYS if not isinstance(cfg, dict) or k not in cfg]
    if missing:
        raise UserError(f"'{run_dir / 'config.json'}' lacks {', '.join(missing)}; it is not a proximal run's config")
    steps, returns = [], []
    for row in rows:
        try:
            ret = float(row["episodic_return"])
        except (KeyError, TypeError, ValueError):
            dropped += 1
            continue
        steps.append(int(row["global_step"]))
        returns.append(ret)
    if dropped:
        warnings.warn(f"{run_dir / 'episodes.csv'}: skipped {dropped} malformed row{'s' if dropped > 1 else ''}",
                      stacklevel=2)
    return cfg, np.array(steps, dtype=np.int64), np.array(returns)


def run_label(cfg: dict) -> str:
    """Runs with the same label are seeds of one experiment: env, preset, and details switched from the preset."""
    label = f"{cfg['env_id']} ({cfg['preset']})"
    if cfg["preset"] in PRESETS:
        defaults = preset_config(cfg["preset"]).details
        changed = [f"{'on' if v else 'off'} {k}" for k, v in sorted(cfg["details"].items()) if defaults.get(k) != v]
        if changed:
            label += " " + ", ".join(changed)
    return label


# fields that do not change what is learned (where the run runs, how often it saves, what it records): runs that
# differ only in these are seeds of one experiment. env_workers gives the transitions of one process (tested)
_NOT_EXPERIMENT = ("seed", "device", "torch_threads", "env_workers", "checkpoint_every", "dist_timeout",
                   "dist_check_every", "capture_video", "track", "wandb_project", "wandb_entity")


def experiment_labels(cfgs: list[dict]) -> list[str]:
    """One label per run; runs share a label when their configs agree on everything but ``_NOT_EXPERIMENT``.
    Hyperparameters are named in the label only where the plotted runs disagree on them."""
    skip = set(_NOT_EXPERIMENT) | {"env_id", "preset", "details"}
    varying = sorted(k for k in cfgs[0] if k not in skip and len({json.dumps(c.get(k)) for c in cfgs}) > 1)
    labels = []
    for cfg in cfgs:
        label = run_label(cfg)
        if varying:
            label += " " + ", ".join(f"{k}={cfg.get(k)}" for k in varying)
        labels.append(label)
    return labels


def smoothed_curve(steps: np.ndarray, returns: np.ndarray, grid: np.ndarray, window: int = 20) -> np.ndarray:
    """Mean return of the last ``window`` episodes, read at each grid step (NaN before the first episode)."""
    kernel_sums = np.cumsum(np.insert(returns, 0, 0.0))
    ends = np.arange(1, len(returns) + 1)
    means = (kernel_sums[ends] - kernel_sums[np.maximum(ends - window, 0)]) / np.minimum(ends, window)
    idx = np.searchsorted(steps, grid, side="right") - 1
    return np.where(idx >= 0, means[np.maximum(idx, 0)], np.nan)


def figure_path(output: Path) -> Path:
    """The file ``plot_runs`` writes for ``output``: itself, or with ``.png`` added where it has no suffix
    (matplotlib's rule: its default format, named)."""
    output = Path(output)
    return output if output.suffix else output.with_name(output.name + ".png")


def distinct_runs(run_dirs: list[Path]) -> list[Path]:
    """``run_dirs`` without repeats (the same directory twice, or reached by overlapping globs or another path),
    which would count one run as several seeds; a warning names them."""
    first: dict[Path, Path] = {}
    repeats = []
    for run_dir in map(Path, run_dirs):
        key = run_dir.resolve()
        if key not in first:
            first[key] = run_dir
        else:
            repeats.append(f"'{run_dir}'" + ("" if run_dir == first[key] else f" (the run '{first[key]}')"))
    if repeats:
        warnings.warn(f"{', '.join(repeats)} given again: each run is plotted once", stacklevel=2)
    return list(first.values())


def plot_runs(run_dirs: list[Path], output: Path, points: int = 200) -> dict[str, int]:
    """Write the figure to ``figure_path(output)``; returns the number of seeds per curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dirs = distinct_runs(run_dirs)
    runs = [read_run(run_dir) for run_dir in run_dirs]
    groups: dict[str, list] = defaultdict(list)
    seeds: dict[str, dict] = defaultdict(dict)  # label -> seed -> the first run of it
    for run_dir, label, (cfg, steps, returns) in zip(run_dirs, experiment_labels([r[0] for r in runs]), runs):
        if len(steps) == 0:
            raise UserError(f"run '{run_dir}' has no finished episodes to plot")
        if (first := seeds[label].setdefault(cfg.get("seed"), run_dir)) != run_dir:
            # the same experiment and seed twice (a rerun): a spread over it is not a spread over seeds
            warnings.warn(f"'{run_dir}' has the seed {cfg.get('seed')} of '{first}', the same experiment: both are "
                          "plotted, and counted as two seeds", stacklevel=2)
        groups[label].append((steps, returns))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, runs in groups.items():
        grid = np.linspace(0, min(s[-1] for s, _ in runs), points)
        curves = np.stack([smoothed_curve(s, r, grid) for s, r in runs])
        with warnings.catch_warnings():
            # grid points before every seed's first episode are all-NaN on purpose (no line drawn there)
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, std = np.nanmean(curves, 0), np.nanstd(curves, 0)
        (line,) = ax.plot(grid, mean, label=f"{label}, {len(runs)} seed{'s' if len(runs) > 1 else ''}")
        if len(runs) > 1:
            ax.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episodic return (mean of last 20 episodes)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    output = figure_path(output)
    try:
        save_figure(fig, output, 120, "curves.png")
    finally:
        plt.close(fig)
    return {label: len(runs) for label, runs in groups.items()}
