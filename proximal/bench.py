"""``proximal bench``: presets × envs × seeds trained side by side (``jobs``: worker processes or a Ray cluster), each
in its own run directory, summarized next to the published ppo2-faithful numbers (``published.csv``).

Everything is resumable: a finished run is only read, a killed one continues from its newest checkpoint. The
summary files are written from ``results.csv``, one row per run, so tables and figures can be redone without
training."""

from __future__ import annotations

import contextlib
import csv
import difflib
import io
import json
import os
import statistics
from importlib import resources
from pathlib import Path

import numpy as np

from .config import Config, preset, set_detail, validate
from .errors import RunFailure, UserError
from .jobs import WALL_FILE, Run, run_all
from .outputs import error_reason, save_figure, write_whole
from .plot import read_run, smoothed_curve

LAST_EPISODES = 100
SUITES = {"classic": ("CartPole-v1",), "mujoco": ("HalfCheetah-v4", "Hopper-v4"),
          "atari": ("BreakoutNoFrameskip-v4", "PongNoFrameskip-v4")}
FIELDS = ("env_id", "preset", "variant", "seed", "steps", "final_return", "auc", "wall_s", "sps", "run_dir")


def published() -> dict[str, dict]:
    """env id -> the published ppo2-faithful result: preset, steps, mean, std, source."""
    text = resources.files("proximal").joinpath("published.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    return {r["env_id"]: {"preset": r["preset"], "steps": int(r["steps"]), "mean": float(r["mean"]),
                          "std": float(r["std"]), "source": r["source"]} for r in rows}


def run_config(env_id: str, preset_name: str, seed: int, steps: int, off: tuple[str, ...] = (),
               reference_truncation: bool = True, device: str = "cpu", precision: str = "fp32") -> Config:
    cfg = preset(preset_name)
    # a fixed device, not the presets' "auto": results would depend on which machine a run landed on
    cfg.env_id, cfg.seed, cfg.total_steps, cfg.device, cfg.precision = env_id, seed, steps, device, precision
    if reference_truncation:
        set_detail(cfg, "opt.truncation_bootstrap", False)
    for detail_id in off:
        set_detail(cfg, detail_id, False)
    validate(cfg)
    return cfg


def run_dir_for(root: Path, cfg: Config, variant: str) -> Path:
    # one directory per (env, preset, variant, seed): two runs never share one, so they never lock each other out
    env = cfg.env_id.replace("/", "_")
    return Path(root) / "runs" / f"{env}__{cfg.preset}__{variant.replace(' ', '-')}__seed{cfg.seed}"


def bench_runs(root: Path, envs: list[str], presets: list[str] | None, seeds: list[int], steps: int | None,
               reference_truncation: bool, device: str = "cpu",
               precisions: tuple[str, ...] = ("fp32",)) -> list[Run]:
    """The runs of ``proximal bench``: without presets, each env's published preset; without steps, the published
    count (an env without a published number then needs both). Each precision but fp32 is a variant of its own
    ("atari bf16"), side by side with the preset's."""
    table = published()
    runs = []
    for env_id in envs:
        known = table.get(env_id)
        if known is None and not known_env_id(env_id):
            import gymnasium as gym

            close = difflib.get_close_matches(env_id, [*SUITES, *gym.registry], n=1)
            raise UserError(f"'{env_id}' is neither a suite ({', '.join(SUITES)}) nor an env id gymnasium knows"
                            + (f"; did you mean {close[0]}?" if close else "; check its spelling"))
        if known is None and (presets is None or steps is None):
            raise UserError(f"'{env_id}' has no published result to take its preset and steps from; give --preset "
                            "and --steps")
        for preset_name in presets or [known["preset"]]:
            for precision in precisions:
                variant = preset_name if precision == "fp32" else f"{preset_name} {precision}"
                for seed in seeds:
                    cfg = run_config(env_id, preset_name, seed, known["steps"] if steps is None else steps,
                                     reference_truncation=reference_truncation, device=device, precision=precision)
                    runs.append(Run(variant, cfg, run_dir_for(root, cfg, variant)))
    return runs


def known_env_id(env_id: str) -> bool:
    """Whether gymnasium (with proximal's own ids), ale-py or Gym-muRTS has ``env_id``; a ``module:EnvId`` id
    counts, its module being imported only by the run."""
    import gymnasium as gym

    from .envs import is_atari_id  # registers proximal's own ids
    from .envs.microrts import is_microrts_id

    return ":" in env_id or env_id in gym.registry or is_atari_id(env_id) or is_microrts_id(env_id)


def auc(steps: np.ndarray, returns: np.ndarray, total_steps: int, points: int = 100) -> float:
    """Area under the learning curve divided by the steps: the mean over the run of the last-20-episode return,
    read at ``points`` even steps (0 before the first episode ends)."""
    grid = np.linspace(0, total_steps, points)
    return float(np.nan_to_num(smoothed_curve(steps, returns, grid)).mean())


def result_row(run: Run) -> dict:
    cfg, steps, returns = read_run(run.run_dir)
    trained = Config.from_dict(cfg)
    total = trained.num_updates * trained.batch_size
    wall_file = run.run_dir / WALL_FILE
    timed = json.loads(wall_file.read_text()) if wall_file.exists() else {"seconds": float("nan")}
    # a file from before steps were recorded: its runs' SPS as it was computed then
    wall, timed_steps = timed["seconds"], timed.get("steps", total)
    return {"env_id": cfg["env_id"], "preset": cfg["preset"], "variant": run.variant, "seed": cfg["seed"],
            "steps": total, "final_return": float(np.mean(returns[-LAST_EPISODES:])) if len(returns) else float("nan"),
            "auc": auc(steps, returns, total), "wall_s": wall, "sps": timed_steps / wall, "run_dir": str(run.run_dir)}


def write_results(rows: list[dict], path: Path) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_whole(path, text.getvalue())


@contextlib.contextmanager
def summary_writes():
    """Around the files written once every run is done (results, tables, plots): a failed write, such as a full
    disk, is one message that says the runs are kept and how to get the files."""
    try:
        yield
    except (OSError, UserError) as e:
        what = str(e) if isinstance(e, UserError) else f"cannot write '{e.filename}' ({error_reason(e)})"
        raise RunFailure(f"{what}; the runs are trained and kept: once it can be written, run the same command "
                         "again to write the results (finished runs are read, not trained again)") from None


def read_results(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    numbers = ("final_return", "auc", "wall_s", "sps")
    return [{**r, "seed": int(r["seed"]), "steps": int(r["steps"]), **{k: float(r[k]) for k in numbers}} for r in rows]


def groups(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """(env, variant) -> its seeds' rows, in the order first seen."""
    out: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        out.setdefault((r["env_id"], r["variant"]), []).append(r)
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    # population std (ddof 0), as the published numbers' tables state theirs
    return statistics.fmean(values), statistics.pstdev(values)


def results_markdown(rows: list[dict], machine: str) -> str:
    table = published()
    lines = [
        f"Machine: {machine}. Statistic: mean episodic return of each run's last {LAST_EPISODES} training episodes; "
        "across seeds mean ± population std. Wall time and SPS: mean over seeds.",
        "",
        "| env | preset | steps | seeds | return | wall (s) | SPS | published | source |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (env_id, variant), runs in groups(rows).items():
        mean, std = mean_std([r["final_return"] for r in runs])
        ref = table.get(env_id)
        shown = f"{ref['mean']:g} ± {ref['std']:g} at {ref['steps']:,} steps" if ref else "—"
        lines.append(f"| {env_id} | {variant} | {runs[0]['steps']:,} | {', '.join(str(r['seed']) for r in runs)} | "
                     f"{mean:.1f} ± {std:.1f} | {statistics.fmean(r['wall_s'] for r in runs):.0f} | "
                     f"{statistics.fmean(r['sps'] for r in runs):.0f} | {shown} | {ref['source'] if ref else '—'} |")
    return "\n".join(lines) + "\n"


def plot_env(rows: list[dict], output: Path, reference: dict | None, points: int = 200) -> None:
    """One env's learning curves: per variant the seeds' mean ± std, the published final value as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (env_id, variant), runs in groups(rows).items():
        grid = np.linspace(0, runs[0]["steps"], points)
        curves = np.stack([smoothed_curve(*read_run(Path(r["run_dir"]))[1:], grid) for r in runs])
        mean, std = np.nan_to_num(curves).mean(0), np.nan_to_num(curves).std(0)
        (line,) = ax.plot(grid, mean, label=f"{variant}, {len(runs)} seed{'s' if len(runs) > 1 else ''}")
        ax.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    if reference:
        ax.axhline(reference["mean"], color="black", linestyle="--",
                   label=f"published {reference['mean']:g} ± {reference['std']:g} at {reference['steps']:,} steps")
    ax.set_title(rows[0]["env_id"])
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episodic return (mean of last 20 episodes)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        save_figure(fig, output, 110, "curves.png")
    finally:
        plt.close(fig)


def machine() -> str:
    """The CPU model (lscpu's) and core count: what a result's wall time and SPS depend on."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"




def bench(root: Path, envs: list[str], presets: list[str] | None, seeds: list[int], steps: int | None, jobs: int = 1,
          ray_address: str | None = None, reference_truncation: bool = True, device: str = "cpu",
          precisions: tuple[str, ...] = ("fp32",), report=print) -> list[dict]:
    """Train (or finish) every run, then write results.csv, results.md and one <env>.png per env under ``root``."""
    root = Path(root)
    runs = bench_runs(root, envs, presets, seeds, steps, reference_truncation, device, precisions)
    report(f"{len(runs)} runs under {root / 'runs'}, {jobs} at a time" if ray_address is None
           else f"{len(runs)} runs as Ray tasks on {ray_address}")
    run_all(runs, jobs, ray_address, report=report)
    rows = [result_row(run) for run in runs]
    with summary_writes():
        write_results(rows, root / "results.csv")
        write_whole(root / "results.md", results_markdown(rows, machine()))
        table = published()
        for env_id in dict.fromkeys(r["env_id"] for r in rows):
            plot_env([r for r in rows if r["env_id"] == env_id], root / f"{env_id.replace('/', '_')}.png",
                     table.get(env_id))
    return rows
