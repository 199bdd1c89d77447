"""Learning benchmark: one env's preset over several seeds, with truncated episodes bootstrapped (proximal's
default) and treated as terminations (--off opt.truncation_bootstrap, as the reference), next to the published
result of ppo2-faithful PPO.

    python benchmarks/learning.py [--env CartPole-v1] [--seeds 1 2 3] [--steps N] [--jobs 2]
    python benchmarks/learning.py --env HalfCheetah-v4 --jobs 2
    python benchmarks/learning.py --env Hopper-v4 --jobs 2
    python benchmarks/learning.py --env BreakoutNoFrameskip-v4 --modes default --seeds 1 --steps 500000

Writes one run directory per mode and seed under --out (benchmarks/runs/, not committed), the curves of both
modes in one figure (--plot) and a markdown summary (--summary) under docs/benchmarks/results/, where the
documentation's benchmark page shows them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import date
from pathlib import Path

import numpy as np

from proximal.config import Config, preset, set_detail, validate
from proximal.errors import UserError
from proximal.plot import plot_runs, read_run
from proximal.trainer import train

LAST_EPISODES = 100
# mode name -> opt.truncation_bootstrap; the name is also the directory the mode's runs go to
MODES = {"default": True, "off-truncation_bootstrap": False}
# env -> (preset, steps, published mean, published std): ppo2-faithful PPO's final return, mean ± std over seeds
# (CartPole-v1 at 500k steps; MuJoCo v4 envs at 1M steps; Atari at 10M steps, 40M frames). It treats truncation
# as termination, so it is to be compared with the off mode (on Atari a truncation takes 400k frames of one game:
# the two modes coincide until an agent plays that long).
BENCHMARKS = {
    "CartPole-v1": ("classic", 500_000, 490.0, 6.0),
    "HalfCheetah-v4": ("mujoco", 1_000_000, 1442.0, 46.0),
    "Hopper-v4": ("mujoco", 1_000_000, 2383.0, 272.0),
    "BreakoutNoFrameskip-v4": ("atari", 10_000_000, 415.0, 28.0),
    "PongNoFrameskip-v4": ("atari", 10_000_000, 20.4, 0.2),
}
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "benchmarks" / "results"
RUNS = ROOT / "benchmarks" / "runs"


def run_config(env_id: str, seed: int, steps: int, truncation_bootstrap: bool, threads: int) -> Config:
    cfg = preset(BENCHMARKS[env_id][0])
    cfg.env_id, cfg.seed, cfg.total_steps = env_id, seed, steps
    # torch threads per run: runs side by side must not share a core between their threads, whose synchronization
    # then waits for descheduled threads (a 2-thread CNN update ran 10x slower so)
    cfg.torch_threads = threads
    # the preset's "auto" would pick a GPU where there is one: a 64-64 MLP trains no faster there, and results
    # that depend on which machine ran them would not be comparable run to run
    cfg.device = "cpu"
    set_detail(cfg, "opt.truncation_bootstrap", truncation_bootstrap)
    return cfg


def train_run(cfg: Config, run_dir: Path) -> float:
    """Train one run (in a worker process), or continue it from its checkpoints where an earlier benchmark
    started it (a finished run is only read); returns the seconds it took."""
    from proximal import checkpoint

    start = time.perf_counter()
    if checkpoint.checkpoint_path(run_dir, cfg.num_updates).exists():
        return 0.0  # finished: its episodes.csv is all the benchmark reads (even from an older proximal)
    resume = any((run_dir / "checkpoints").glob("*.pt"))
    train(None if resume else cfg, run_dir, resume=resume, quiet=True)
    return time.perf_counter() - start


def check_reusable(cfg: Config, run_dir: Path) -> str | None:
    """Why ``run_dir`` cannot be continued as this benchmark's run (None if it can, or does not exist)."""
    if not run_dir.exists():
        return None
    if not any((run_dir / "checkpoints").glob("*.pt")):
        return f"{run_dir} exists without checkpoints"
    if Config.from_dict(json.loads((run_dir / "config.json").read_text())) != cfg:
        return f"{run_dir} holds a run of another config"
    return None


def final_return(run_dir: Path, last: int = LAST_EPISODES) -> float:
    """The statistic compared: mean episodic return of the run's last ``last`` training episodes."""
    _, _, returns = read_run(run_dir)
    return float(np.mean(returns[-last:]))


def mean_std(values: list[float]) -> str:
    # population std (ddof 0): with 3 seeds the choice matters, and the summary names it
    return f"{statistics.fmean(values):.1f} ± {statistics.pstdev(values):.1f}"


def write_summary(path: Path, cfg: Config, seeds: list[int], finals: dict[str, dict[int, float]],
                  plot: Path, published: list[float], published_steps: int) -> None:
    seed_cols = " | ".join(f"seed {s}" for s in seeds)
    rows = [f"| {mode} | " + " | ".join(f"{finals[mode][s]:.1f}" for s in seeds)
            + f" | {mean_std(list(finals[mode].values()))} |" for mode in finals]
    steps = cfg.num_updates * cfg.batch_size
    blank = " | ".join("" for _ in seeds)
    lines = [
        f"# {cfg.env_id} learning benchmark",
        "",
        f"- env: {cfg.env_id}, preset {cfg.preset}, {steps} env steps per run "
        f"({cfg.num_updates} updates of {cfg.batch_size} steps), device {cfg.device}",
        f"- seeds: {' '.join(map(str, seeds))}",
        f"- statistic: mean episodic return of the last {LAST_EPISODES} training episodes of each run "
        "(episodes.csv); across seeds mean ± population std (ddof 0)",
        "- modes: `default` bootstraps truncated episodes from V(final observation) (opt.truncation_bootstrap on); "
        "`off-truncation_bootstrap` treats truncation as termination, as the reference does",
        f"- published: ppo2-faithful PPO at {published_steps:,} steps, truncation as termination: compare with "
        "`off-truncation_bootstrap`" + ("" if steps >= published_steps else
                                        f"; these runs are {published_steps // steps}x shorter, so their returns "
                                        "are not comparable to it, only a point on the way"),
        f"- curves: {os.path.relpath(plot, path.parent)}",
        f"- generated {date.today().isoformat()} by `python benchmarks/learning.py {' '.join(sys.argv[1:])}`",
        "",
        f"| mode | {seed_cols} | mean ± std |",
        "|---" * (len(seeds) + 2) + "|",
        *rows,
        f"| published ppo2-faithful PPO | {blank} | {published[0]:g} ± {published[1]:g} |",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="seeds (default: 1 2 3)")
    parser.add_argument("--env", default="CartPole-v1", choices=BENCHMARKS, help="(default: CartPole-v1)")
    parser.add_argument("--steps", type=int, help="env steps per run (default: the published results' count)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                        help="truncation modes to run (default: both)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once, one process each (default: 1)")
    parser.add_argument("--threads", type=int,
                        help="torch threads of each run (default: CPU cores / jobs, at least 1)")
    parser.add_argument("--out", type=Path,
                        help="directory of the run directories (default: benchmarks/runs/<env>)")
    parser.add_argument("--plot", type=Path,
                        help="curve figure (default: docs/benchmarks/results/<env>_curves.png)")
    parser.add_argument("--summary", type=Path,
                        help="markdown summary (default: docs/benchmarks/results/<env>_learning.md)")
    args = parser.parse_args()
    if args.jobs <= 0 or len(set(args.seeds)) != len(args.seeds):
        parser.error("--jobs must be positive and --seeds distinct")

    preset_name, default_steps, *published = BENCHMARKS[args.env]
    slug = args.env.split("NoFrameskip")[0].split("-")[0].lower()
    steps = args.steps or default_steps
    args.out = args.out or RUNS / slug
    args.plot = args.plot or RESULTS / f"{slug}_curves.png"
    args.summary = args.summary or RESULTS / f"{slug}_learning.md"
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    runs = {(mode, seed): (run_config(args.env, seed, steps, bootstrap, threads), args.out / mode / f"seed{seed}")
            for seed in args.seeds for mode, bootstrap in MODES.items() if mode in args.modes}
    cfg = next(iter(runs.values()))[0]
    try:
        validate(cfg)
    except UserError as e:
        parser.error(str(e))
    # train() would write into an old run's directory and leave its checkpoints and events mixed with the new run's
    # a run directory of the same config is continued (or, finished, read): a killed benchmark, or one given more
    # seeds, resumes where it stopped
    taken = [why for c, d in runs.values() if (why := check_reusable(c, d))]
    if taken:
        parser.error(f"{'; '.join(taken)}: remove them or choose another --out")

    print(f"{args.env}, {preset_name} preset, {cfg.num_updates * cfg.batch_size} steps per run, "
          f"seeds {' '.join(map(str, args.seeds))}, {len(runs)} runs, {args.jobs} at a time; runs under {args.out}",
          flush=True)
    finals: dict[str, dict[int, float]] = {mode: {} for mode in MODES if mode in args.modes}
    # spawn: a fresh interpreter per worker, so no torch state is inherited through fork
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(train_run, c, d): key for key, (c, d) in runs.items()}
        for future in as_completed(futures):
            mode, seed = futures[future]
            seconds = future.result()
            finals[mode][seed] = final_return(runs[mode, seed][1])
            print(f"  {mode:<24} seed {seed}: {finals[mode][seed]:6.1f}  ({seconds:.0f} s)", flush=True)

    print(f"\nmean return of the last {LAST_EPISODES} episodes")
    print(f"{'seed':>6}  " + "  ".join(f"{mode:>24}" for mode in finals))
    for seed in args.seeds:
        print(f"{seed:>6}  " + "  ".join(f"{finals[mode][seed]:>24.1f}" for mode in finals))
    print(f"{'mean':>6}  " + "  ".join(f"{mean_std(list(finals[mode].values())):>24}" for mode in finals))
    print(f"published ppo2-faithful PPO at {default_steps:,} steps (truncation as termination, compare with "
          f"off-truncation_bootstrap): {published[0]:g} ± {published[1]:g}")

    groups = plot_runs([d for _, d in runs.values()], args.plot)
    print(f"\nwrote {args.plot}: " + "; ".join(f"{label} ({n} seed{'s' if n > 1 else ''})"
                                              for label, n in groups.items()))
    write_summary(args.summary, cfg, args.seeds, finals, args.plot, published, default_steps)
    print(f"wrote {args.summary}")


if __name__ == "__main__":
    main()
