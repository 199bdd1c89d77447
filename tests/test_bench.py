"""``proximal bench``: a tiny suite writes its files, a rerun skips finished runs and continues a killed one, the
table and figure come from results.csv, the published numbers ship as package data, and bad suites and counts are
one message. How the runs are run side by side: ``tests/test_jobs.py``."""

from __future__ import annotations

import csv
import errno
import os
from pathlib import Path

import pytest

from proximal import bench as bench_module
from proximal import checkpoint
from proximal.bench import bench, bench_runs, published, read_results, results_markdown, run_config
from proximal.cli import build_parser, main
from proximal.errors import UserError
from proximal.trainer import train

# two updates of the classic preset's 512-step batch: the shortest run that still ends episodes on CartPole
STEPS = 1024


def test_published_numbers_ship_as_package_data():
    table = published()
    assert table["CartPole-v1"] == {"preset": "classic", "steps": 500_000, "mean": 490.0, "std": 6.0,
                                    "source": table["CartPole-v1"]["source"]}
    assert table["Hopper-v4"]["mean"] == 2383.0 and table["PongNoFrameskip-v4"]["std"] == 0.2
    assert all("Huang" in row["source"] for row in table.values())


def test_bench_defaults_to_the_published_preset_steps_and_truncation_mode(tmp_path):
    (run,) = bench_runs(tmp_path, ["HalfCheetah-v4"], None, [1], None, reference_truncation=True)
    assert (run.cfg.preset, run.cfg.total_steps, run.cfg.device) == ("mujoco", 1_000_000, "cpu")
    assert not run.cfg.on("opt.truncation_bootstrap")
    (kept,) = bench_runs(tmp_path, ["CartPole-v1"], None, [2], 2048, reference_truncation=False)
    assert kept.cfg.on("opt.truncation_bootstrap") and kept.cfg.seed == 2 and kept.cfg.total_steps == 2048
    with pytest.raises(UserError, match="--preset"):
        bench_runs(tmp_path, ["Acrobot-v1"], None, [1], None, reference_truncation=True)


def test_bench_precisions_are_variants_side_by_side(tmp_path):
    runs = bench_runs(tmp_path, ["CartPole-v1"], None, [1, 2], 2048, True, precisions=("fp32", "bf16"))
    assert [(r.variant, r.cfg.precision, r.cfg.seed) for r in runs] == [
        ("classic", "fp32", 1), ("classic", "fp32", 2), ("classic bf16", "bf16", 1), ("classic bf16", "bf16", 2)]
    assert len({r.run_dir for r in runs}) == 4
    args = build_parser().parse_args(["bench", "CartPole-v1", "--precision", "fp32", "--precision", "bf16"])
    assert args.precision == ["fp32", "bf16"]


def test_tiny_bench_writes_its_files_skips_finished_runs_and_resumes_a_killed_one(tmp_path, monkeypatch):
    # seed 2 killed after its first update: the bench must continue it, not start it again
    killed = run_config("CartPole-v1", "classic", 2, STEPS)
    (killed_dir,) = [r.run_dir for r in bench_runs(tmp_path, ["CartPole-v1"], None, [2], STEPS, True)]
    train(killed, killed_dir, quiet=True, max_updates=1)
    first_episodes = (killed_dir / "episodes.csv").read_text()

    rows = bench(tmp_path, ["CartPole-v1"], None, [1, 2], STEPS, report=lambda _: None)
    assert [(r["seed"], r["steps"]) for r in rows] == [(1, STEPS), (2, STEPS)]
    for name in ("results.csv", "results.md", "CartPole-v1.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "CartPole-v1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (killed_dir / "episodes.csv").read_text().startswith(first_episodes)
    assert checkpoint.checkpoint_path(killed_dir, 2).exists()
    # the continued run equals one trained without a stop (exact resume)
    whole = tmp_path / "whole"
    train(run_config("CartPole-v1", "classic", 2, STEPS), whole, quiet=True)
    assert (whole / "episodes.csv").read_text() == (killed_dir / "episodes.csv").read_text()
    assert read_results(tmp_path / "results.csv") == rows

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("proximal.trainer.train", refuse)
    again = bench(tmp_path, ["CartPole-v1"], None, [1, 2], STEPS, report=lambda _: None)
    assert [r["final_return"] for r in again] == [r["final_return"] for r in rows]


def test_a_full_disk_at_the_summary_is_one_message_and_keeps_the_runs(tmp_path, monkeypatch, capsys):
    bench(tmp_path, ["CartPole-v1"], None, [1], STEPS, report=lambda _: None)
    before = {name: (tmp_path / name).read_bytes() for name in ("results.csv", "results.md", "CartPole-v1.png")}

    def full_disk(self, fname, **kwargs):  # the disk fills up half way through the figure
        Path(fname).write_bytes(b"\x89PNG")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(fname))

    monkeypatch.setattr("matplotlib.figure.Figure.savefig", full_disk)
    code = main(["bench", "CartPole-v1", "--seeds", "1", "--steps", str(STEPS), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert f"cannot write '{tmp_path / 'CartPole-v1.png'}' (No space left on device" in err
    assert "the runs are trained and kept" in err and "run the same command again" in err
    assert (tmp_path / "CartPole-v1.png").read_bytes() == before["CartPole-v1.png"], "the old figure stays whole"
    assert not list(tmp_path.glob(".tmp_*")), "no temporary file left"


def test_bench_refuses_a_run_directory_of_another_config(tmp_path):
    (run,) = bench_runs(tmp_path, ["CartPole-v1"], None, [1], STEPS, True)
    other = run_config("CartPole-v1", "classic", 1, STEPS)
    other.learning_rate = 1e-3
    train(other, run.run_dir, quiet=True, max_updates=1)
    with pytest.raises(UserError, match="another config"):
        bench(tmp_path, ["CartPole-v1"], None, [1], STEPS, report=lambda _: None)


def fixed_rows(tmp_path: Path) -> list[dict]:
    path = tmp_path / "results.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, bench_module.FIELDS)
        writer.writeheader()
        for seed, final, wall in ((1, 480.0, 100.0), (2, 500.0, 300.0)):
            writer.writerow({"env_id": "CartPole-v1", "preset": "classic", "variant": "classic", "seed": seed,
                             "steps": 500_000, "final_return": final, "auc": 300.0, "wall_s": wall,
                             "sps": 500_000 / wall, "run_dir": ""})
    return read_results(path)


def test_results_table_from_a_fixed_csv(tmp_path):
    text = results_markdown(fixed_rows(tmp_path), "Test CPU, 2 cores")
    # 480 and 500: mean 490, population std 10; wall mean 200 s; SPS mean of 5000 and 1666.7
    assert ("| CartPole-v1 | classic | 500,000 | 1, 2 | 490.0 ± 10.0 | 200 | 3333 | 490 ± 6 at 500,000 steps | "
            "Huang et al.") in text
    assert "Machine: Test CPU, 2 cores" in text


def test_cli_bench_rejects_bad_counts(capsys, tmp_path):
    assert main(["bench", "classic", "--seeds", "0", "--out", str(tmp_path)]) == 2
    assert "--seeds must be positive" in capsys.readouterr().err
    assert main(["bench", "CartPole-v1", "--jobs", "0", "--steps", str(STEPS), "--out", str(tmp_path)]) == 2
    assert "--jobs must be positive" in capsys.readouterr().err
    # 0 is not "no --steps": it must not fall back to the published count (10M steps for an Atari game)
    for command in (["bench", "classic"], ["ablate", "--env", "CartPole-v1"]):
        assert main([*command, "--steps", "0", "--out", str(tmp_path)]) == 2
        assert "--steps must be positive, got 0" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_an_interrupted_bench_or_ablate_says_to_run_the_same_command_again():
    from proximal.cli import build_parser, interrupted_hint

    for argv in (["bench", "classic"], ["ablate"]):
        hint = interrupted_hint(build_parser().parse_args(argv))
        assert f"run the same proximal {argv[0]} command again" in hint and "--resume" not in hint


def test_a_misspelled_suite_is_neither_a_suite_nor_an_env_id(tmp_path):
    with pytest.raises(UserError, match=r"'clasic' is neither a suite \(classic, mujoco, atari\) nor an env id "
                                        r"gymnasium knows; did you mean classic\?"):
        bench_runs(tmp_path, ["clasic"], None, [1], None, reference_truncation=True)
    with pytest.raises(UserError, match="did you mean CartPole-v1"):
        bench_runs(tmp_path, ["Cartpole-v1"], ["classic"], [1], STEPS, reference_truncation=True)
    # registered ids, proximal's own and module:EnvId ones are env ids: only preset and steps are missing
    for env_id in ("Acrobot-v1", "proximal/CartPoleNoVelocity-v1", "mymodule:Corridor-v0"):
        with pytest.raises(UserError, match="give --preset and --steps"):
            bench_runs(tmp_path, [env_id], None, [1], None, reference_truncation=True)
