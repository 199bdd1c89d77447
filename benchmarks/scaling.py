"""Data-parallel scaling (aux.parallel_gradients): steps per second of one preset with 1, 2, ... ranks under
torchrun, side by side, in two ways of growing:

- same per-rank batch: each rank keeps the preset's num_envs x num_steps, so N ranks train on an N times larger
  global batch (the reference's way of scaling out: more data per update, the same update count);
- same global batch: each rank holds 1/N of the preset's batch (num_envs divided, or num_steps where the preset
  has one env), so N ranks compute exactly the preset's update, split.

Every run does the same number of updates (--updates) in a fresh process; SPS is the run's own (its last
updates.csv row: all ranks' steps over the training's wall time, env creation left out). A 1-rank run is the plain
``python -m proximal train``, without torchrun.

    python benchmarks/scaling.py --preset mujoco --updates 5
    python benchmarks/scaling.py --preset atari --updates 10 --threads 1 --env-workers 1
    # a machine with 8 GPUs: each rank on its own GPU (nccl)
    python benchmarks/scaling.py --preset atari --updates 50 --nproc 1 2 4 8 --device cuda \\
        --json docs/benchmarks/results/scaling_atari_cuda.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def split(preset_name: str, ranks: int) -> list[str]:
    """The flags that give each of ``ranks`` ranks 1/ranks of the preset's batch."""
    from proximal.config import preset

    cfg = preset(preset_name)
    if cfg.num_envs % ranks == 0:
        return ["--num-envs", str(cfg.num_envs // ranks)]
    if cfg.num_steps % ranks == 0:
        return ["--num-steps", str(cfg.num_steps // ranks)]
    raise SystemExit(f"the {preset_name} preset's batch cannot be split over {ranks} ranks")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(preset_name: str, env_id: str | None, ranks: int, flags: list[str], updates: int, args) -> dict:
    from proximal.config import preset

    cfg = preset(preset_name)
    given = dict(zip(flags[::2], flags[1::2]))
    per_rank_batch = int(given.get("--num-envs", cfg.num_envs)) * int(given.get("--num-steps", cfg.num_steps))
    launcher = ([sys.executable, "-m", "proximal"] if ranks == 1 else
                [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}",
                 f"--master_port={free_port()}", "-m", "proximal"])
    with tempfile.TemporaryDirectory() as tmp:
        command = [*launcher, "train", "--preset", preset_name, *(["--env", env_id] if env_id else []), *flags,
                   "--total-steps", str(updates * per_rank_batch), "--checkpoint-every", "0", "--quiet",
                   "--device", args.device, "--torch-threads", str(args.threads), "--run-dir", f"{tmp}/run"]
        if args.env_workers is not None:
            command += ["--env-workers", str(args.env_workers)]
        subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        with open(f"{tmp}/run/updates.csv", newline="") as f:
            last = list(csv.DictReader(f))[-1]
    return {"ranks": ranks, "per_rank_batch": per_rank_batch, "global_batch": ranks * per_rank_batch,
            "updates": updates, "global_steps": int(last["global_step"]), "SPS": float(last["SPS"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="mujoco")
    parser.add_argument("--env", default=None, help="env id (default: the preset's)")
    parser.add_argument("--updates", type=int, default=5, help="updates of every run")
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2], help="rank counts to run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each rank")
    parser.add_argument("--env-workers", type=int, default=None, help="env worker processes of each rank")
    parser.add_argument("--json", type=Path, default=None, help="write the results here too")
    args = parser.parse_args()

    results = []
    for ranks in args.nproc:
        shapes = [("same per-rank batch", [])] if ranks == 1 else [
            ("same per-rank batch", []), ("same global batch", split(args.preset, ranks))]
        for shape, flags in shapes:
            result = {"shape": shape, **run(args.preset, args.env, ranks, flags, args.updates, args)}
            results.append(result)
            print(f"{ranks} rank(s), {shape}: global batch {result['global_batch']}, "
                  f"{result['SPS']:.0f} steps/s", flush=True)
    print("\n| ranks | growth | per-rank batch | global batch | SPS |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['ranks']} | {r['shape']} | {r['per_rank_batch']} | {r['global_batch']} | {r['SPS']:.0f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"preset": args.preset, "env": args.env, "device": args.device,
                                         "threads_per_rank": args.threads, "cpus": os.cpu_count(),
                                         "machine": platform.platform(), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
