"""Gym-muRTS benchmark: the microrts preset on a 16x16 map against a bot, with invalid action masking
(aux.action_masking, the preset's default) and without (--off aux.action_masking), trained side by side.

    python benchmarks/microrts.py [--steps 51200] [--bot randomBiasedAI] [--seed 1] [--games 8] [--jobs 2]

Needs Gym-muRTS (scripts/install_microrts.sh). For each mode: the shaped return of the last training episodes,
then the final policy (sampling, as in training) plays --games games against the bot, 8 at a time, for the win
rate. Writes the run directories under --out, and microrts.json, microrts.md and microrts_curves.png under
docs/benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

import numpy as np
import torch

from proximal.jobs import WALL_FILE, execute, threads_per_job
from proximal.carry import Carry
from proximal.fast_paths import make_actor
from proximal.config import Config, preset, set_detail
from proximal.envs import action_masks, make_envs
from proximal.evaluate import load_policy
from proximal.plot import plot_runs, read_run

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "benchmarks" / "results"
RUNS = ROOT / "benchmarks" / "runs"
MODES = {"masking": True, "off-action_masking": False}
LAST_EPISODES = 20
EVAL_ENVS = 8


def run_config(steps: int, bot: str, seed: int, masking: bool) -> Config:
    cfg = preset("microrts")
    cfg.env_id, cfg.total_steps, cfg.seed, cfg.device = f"MicroRTS-basesWorkers16x16-{bot}", steps, seed, "cpu"
    set_detail(cfg, "aux.action_masking", masking)
    return cfg


def play(run_dir: Path, games: int, seed: int) -> dict:
    """The run's final policy against its bot until ``games`` games ended: wins, losses, draws (the 2000-step
    limit) and the games' mean shaped return."""
    policy, cfg, _ = load_policy(run_dir)
    actor = make_actor(policy, torch.device("cpu"))
    rng = np.random.default_rng(seed)
    envs = make_envs(cfg.env_id, EVAL_ENVS)
    returns = []
    try:
        obs = envs.reset(seed=seed)
        # aux.action_masking: the masked policy gets its masks as in training
        carry = Carry(start=np.ones(EVAL_ENVS, np.float32), mask=action_masks(envs) if policy.masked else None)
        while len(envs.results) < games:
            action, carry = actor.sample(obs, carry, rng)
            step = envs.step(actor.env_action(action))
            returns += [ret for _, ret, _ in step.episodes]
            obs, carry = step.obs, carry.after_step(step.terminated | step.truncated, envs)
    finally:
        envs.close()
    results = envs.results[:games]
    return {"games": games, "wins": results.count(1), "losses": results.count(-1), "draws": results.count(0),
            "win_rate": results.count(1) / games, "mean_return": float(np.mean(returns[:games]))}


def train_and_play(cfg: Config, run_dir: Path, games: int, threads: int) -> dict:
    execute(cfg, run_dir, threads)  # proximal bench's: the run on its share of the cores, continued if started
    _, _, returns = read_run(run_dir)
    seconds = json.loads((run_dir / WALL_FILE).read_text())["seconds"]
    return {"train_seconds": round(seconds), "steps": cfg.num_updates * cfg.batch_size,
            "last_episodes_return": float(np.mean(returns[-LAST_EPISODES:])), **play(run_dir, games, cfg.seed + 1000)}


def write_summary(path: Path, cfg: Config, results: dict[str, dict], plot: Path) -> None:
    rows = [f"| {mode} | {r['steps']} | {r['last_episodes_return']:.1f} | {r['mean_return']:.1f} | "
            f"{r['wins']}/{r['games']} ({100 * r['win_rate']:.0f}%) | {r['losses']} | {r['draws']} | "
            f"{r['train_seconds']} |" for mode, r in results.items()]
    command = " ".join(["python benchmarks/microrts.py", *sys.argv[1:]])
    lines = [
        "# Gym-muRTS: invalid action masking on and off",
        "",
        f"- env: {cfg.env_id} (16x16 map, Gym-muRTS grid mode, 256 cells x 7 action components), preset "
        f"{cfg.preset}, seed {cfg.seed}, device {cfg.device}",
        f"- training return: mean shaped return of the last {LAST_EPISODES} training episodes (episodes.csv)",
        f"- games: the final policy, sampling as in training, against the bot ({EVAL_ENVS} games at a time); "
        "a draw is a game still running at the 2000-step limit",
        f"- curves: {plot.name}",
        f"- generated {date.today().isoformat()} by `{command}`",
        "",
        "| mode | steps | training return | return in games | wins | losses | draws | training seconds |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=51_200, help="env steps per run (default: 51200)")
    parser.add_argument("--bot", default="randomBiasedAI", help="gym_microrts.microrts_ai bot (default: randomBiasedAI)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--games", type=int, default=8, help="games played by each final policy (default: 8)")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at once, one process each (default: 2)")
    parser.add_argument("--out", type=Path, default=RUNS / "microrts",
                        help="directory of the run directories (default: benchmarks/runs/microrts)")
    args = parser.parse_args()
    runs = {mode: (run_config(args.steps, args.bot, args.seed, masking), args.out / mode)
            for mode, masking in MODES.items()}
    taken = [str(d) for _, d in runs.values() if d.exists()]
    if taken:
        parser.error(f"run directories already exist: {', '.join(taken)}; remove them or choose another --out")
    cfg = runs["masking"][0]
    print(f"{cfg.env_id}, microrts preset, {cfg.num_updates * cfg.batch_size} steps per run, seed {args.seed}, "
          f"masking on and off, {args.jobs} at a time", flush=True)
    # spawn: a fresh interpreter (and JVM) per worker
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {mode: pool.submit(train_and_play, c, d, args.games, threads_per_job(args.jobs))
                   for mode, (c, d) in runs.items()}
        results = {mode: future.result() for mode, future in futures.items()}
    for mode, r in results.items():
        print(f"  {mode:<20} {r}")
    plot = RESULTS / "microrts_curves.png"
    plot_runs([d for _, d in runs.values()], plot)
    (RESULTS / "microrts.json").write_text(json.dumps({"env": cfg.env_id, "seed": args.seed, "results": results},
                                                      indent=2) + "\n")
    write_summary(RESULTS / "microrts.md", cfg, results, plot)
    print(f"wrote {plot}, {RESULTS / 'microrts.json'}, {RESULTS / 'microrts.md'}")


if __name__ == "__main__":
    main()
