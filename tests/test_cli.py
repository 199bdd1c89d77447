"""The ``proximal`` command: bad input gives one line and a non-zero exit, a run directory holds what scripts read,
eval, plot, details and --help say what they should."""

from __future__ import annotations

import ast
import csv
import json
import math
import re
import shutil
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from proximal import checkpoint
from proximal.cli import main
from proximal.config import Config, field_docs, preset
from proximal.details import switchable_ids
from proximal.evaluate import evaluate, load_policy
from proximal.trainer import train
from test_logs import age_event_files
from test_logs import scalars as tensorboard_scalars

REPO = Path(__file__).resolve().parents[1]
# 8 updates of 4 envs x 64 steps: the smallest run that still finishes episodes and writes every file
TINY = ["--total-steps", "2048", "--num-envs", "4", "--num-steps", "64", "--device", "cpu"]
UPDATES, BATCH = 8, 256
CORE_IDS = ["core.vector_envs", "core.orthogonal_init", "core.adam_eps", "core.lr_annealing", "core.gae",
            "core.minibatches", "core.adv_norm", "core.clipped_objective", "core.value_clipping",
            "core.entropy_bonus", "core.grad_clip", "core.debug_stats", "core.separate_networks"]
PERF_SECONDS = ["env_seconds", "inference_seconds", "learn_seconds", "other_seconds"]
UPDATE_SCALARS = ["learning_rate", "clip_range", "SPS", "policy_loss", "value_loss", "entropy", "approx_kl",
                  "old_approx_kl", "approxkl_ppo2", "clipfrac", "grad_norm", "explained_variance", "epochs", *PERF_SECONDS]
# CSV column -> TensorBoard tag, written out here so that a tag renamed or dropped in proximal/logs.py fails
UPDATE_TAGS = {"learning_rate": "charts/learning_rate", "clip_range": "charts/clip_range", "SPS": "charts/SPS",
               "policy_loss": "losses/policy_loss", "value_loss": "losses/value_loss", "entropy": "losses/entropy",
               "approx_kl": "losses/approx_kl", "old_approx_kl": "losses/old_approx_kl",
               "approxkl_ppo2": "losses/approxkl_ppo2", "clipfrac": "losses/clipfrac", "grad_norm": "losses/grad_norm",
               "explained_variance": "losses/explained_variance", "epochs": "losses/epochs",
               "env_seconds": "perf/env_seconds", "inference_seconds": "perf/inference_seconds",
               "learn_seconds": "perf/learn_seconds", "other_seconds": "perf/other_seconds"}


def proximal(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proximal", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def in_process(argv, capsys) -> tuple[int, str, str]:
    threads = torch.get_num_threads()  # train sets torch's global thread count; the other tests keep theirs
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's usage errors exit from inside parse_args
        code = e.code
    finally:
        torch.set_num_threads(threads)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three tiny runs: seeds 1 and 2 of the classic preset, and seed 1 with core.gae off. Seed 1 runs as a real
    subprocess (for --quiet) while the other two train in this process."""
    base = tmp_path_factory.mktemp("runs")
    seed1 = subprocess.Popen([sys.executable, "-m", "proximal", "train", *TINY, "--seed", "1", "--run-dir",
                              base / "seed1", "--quiet"], cwd=base, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    threads = torch.get_num_threads()
    try:
        started = time.perf_counter()
        assert main(["train", *TINY, "--seed", "2", "--run-dir", str(base / "seed2"), "--quiet"]) == 0
        seed2_seconds = time.perf_counter() - started
        assert main(["train", *TINY, "--seed", "1", "--off", "core.gae", "--run-dir", str(base / "gae_off"),
                     "--quiet"]) == 0
    finally:
        torch.set_num_threads(threads)
        out, err = seed1.communicate(timeout=300)
    return {"base": base, "seed1": base / "seed1", "seed2": base / "seed2", "gae_off": base / "gae_off",
            "seed1_result": (seed1.returncode, out, err), "seed2_seconds": seed2_seconds}


@pytest.fixture(scope="module")
def bad_files(runs):
    """Checkpoints that must be refused, and run directories whose newest checkpoint is one of them."""
    base = runs["base"] / "bad"
    base.mkdir()
    good = checkpoint.latest(runs["seed1"]).read_bytes()
    files = {"garbage": bytes(range(256)) * 40, "truncated": good[: len(good) // 2]}
    for name, content in files.items():
        (base / f"{name}.pt").write_bytes(content)
    # a pickled object of a class that only exists in this script: a full load would import and build it
    script = ("import torch\nclass Payload:\n    pass\n"
              f"torch.save({{'format': 1, 'config': {{}}, 'weights': Payload()}}, {str(base / 'object.pt')!r})\n")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    for name in ("garbage", "truncated", "object"):
        run_dir = base / f"run_{name}"
        shutil.copytree(runs["seed1"], run_dir)
        shutil.copyfile(base / f"{name}.pt", checkpoint.latest(run_dir))
    return base


def assert_one_line_error(code: int, out: str, err: str, *words: str) -> str:
    assert code != 0
    assert out == ""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


# --- bad input -------------------------------------------------------------------------------------------------

# (argv, words the one error line must contain); {bad} is the directory of bad_files, {run} a good run
SUBPROCESS_CASES = {
    "unknown_env": (["train", "--env", "NoSuchEnv-v7", "--run-dir", "{bad}/env_run"], ["NoSuchEnv-v7"]),
    "structural_detail": (["train", "--off", "core.vector_envs"], ["core.vector_envs", "structural"]),
    "eval_garbage": (["eval", "{bad}/garbage.pt"], ["garbage.pt", "corrupt"]),
    "resume_pickled_object": (["train", "--resume", "{bad}/run_object"], ["Payload", "refused: the file holds pickled code"]),
}

IN_PROCESS_CASES = {
    "unknown_preset": (["train", "--preset", "turbo"], ["turbo", "classic"]),
    "unknown_detail": (["train", "--off", "core.warp_drive"], ["core.warp_drive", "not a detail ID"]),
    "batch_not_divisible": (["train", "--num-envs", "3", "--num-steps", "5", "--num-minibatches", "4"],
                            ["15", "divisible", "num_minibatches"]),
    "zero_envs": (["train", "--num-envs", "0"], ["num_envs", "positive"]),
    "atari_without_atari_preset": (["train", "--env", "BreakoutNoFrameskip-v4"],
                                   ["BreakoutNoFrameskip-v4", "--preset atari"]),
    "negative_steps": (["train", "--num-steps", "-8"], ["num_steps", "positive", "-8"]),
    "zero_minibatches": (["train", "--num-minibatches", "0"], ["num_minibatches", "positive"]),
    "negative_clip": (["train", "--clip-coef", "-0.1"], ["clip_coef", ">= 0"]),
    "not_an_int": (["train", "--num-envs", "four"], ["--num-envs", "four", "--help"]),
    # reported by the command's parser, whose help lists its flags, with the closest one
    "unknown_flag": (["train", "--num-env", "4"], ["proximal train: error", "--num-env 4; did you mean --num-envs?",
                                                   "proximal train --help"]),
    "unknown_eval_flag": (["eval", "{run}", "--episode", "3"], ["proximal eval: error", "did you mean --episodes?"]),
    "unknown_command": (["fly"], ["fly", "train"]),
    "eval_missing": (["eval", "{bad}/no_such_run"], ["no_such_run"]),
    "eval_missing_file": (["eval", "{bad}/no_such.pt"], ["no_such.pt"]),
    "eval_truncated": (["eval", "{bad}/truncated.pt"], ["truncated.pt", "corrupt"]),
    "eval_pickled_object": (["eval", "{bad}/object.pt"], ["object.pt", "Payload", "refused: the file holds pickled code"]),
    "eval_zero_episodes": (["eval", "{run}", "--episodes", "0"], ["--episodes", "positive"]),
    "resume_garbage": (["train", "--resume", "{bad}/run_garbage"], ["run_garbage", "corrupt"]),
    "resume_truncated": (["train", "--resume", "{bad}/run_truncated"], ["run_truncated", "corrupt"]),
    "resume_missing": (["train", "--resume", "{bad}/no_such_run"], ["no_such_run"]),
    "resume_a_file": (["train", "--resume", "{bad}/garbage.pt"], ["garbage.pt", "run directory"]),
    "resume_with_options": (["train", "--resume", "{run}", "--seed", "3"], ["--resume", "own config"]),
    "plot_not_a_run": (["plot", "{bad}"], ["not a readable run directory"]),
    "plot_unknown_format": (["plot", "{run}", "-o", "{bad}/curves.xyz"], ["curves.xyz", "png"]),
}


def _fill(argv, bad_files, runs):
    return [a.format(bad=bad_files, run=runs["seed1"]) for a in argv]


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_bad_input_exits_with_one_line_subprocess(case, bad_files, runs):
    argv, words = SUBPROCESS_CASES[case]
    result = proximal(*_fill(argv, bad_files, runs), cwd=bad_files)
    assert result.returncode == 2
    assert_one_line_error(result.returncode, result.stdout, result.stderr, *words)
    assert not (bad_files / "env_run").exists() and not (bad_files / "runs").exists()


@pytest.mark.parametrize("case", IN_PROCESS_CASES)
def test_bad_input_exits_with_one_line(case, bad_files, runs, capsys, monkeypatch):
    monkeypatch.chdir(bad_files)  # a run that wrongly started would write runs/ here, not in the repository
    argv, words = IN_PROCESS_CASES[case]
    assert_one_line_error(*in_process(_fill(argv, bad_files, runs), capsys), *words)
    assert not (bad_files / "runs").exists()


@pytest.mark.parametrize("flag", ["--off", "--on"])
def test_bad_detail_id_lists_the_valid_ones(flag, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = assert_one_line_error(*in_process(["train", flag, "core.vector_envs"], capsys), "core.vector_envs")
    listed = line.split("switchable details:")[1]
    assert sorted(i.strip() for i in listed.split(",")) == sorted(switchable_ids())


def test_failed_resume_leaves_the_run_untouched(bad_files, runs, capsys):
    run_dir = bad_files / "run_garbage"
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    code, _, _ = in_process(["train", "--resume", run_dir, "--quiet"], capsys)
    assert code == 2
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before


# --- details ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def details_json(tmp_path_factory):
    result = proximal("details", "--json", cwd=tmp_path_factory.mktemp("details"))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_details_json_objects(details_json):
    assert isinstance(details_json, list) and details_json
    for row in details_json:
        assert set(row) == {"id", "implemented", "enabled", "where", "test"}, row
        assert isinstance(row["implemented"], bool) and isinstance(row["enabled"], bool)
        assert isinstance(row["where"], str) and isinstance(row["test"], str)
        assert row["implemented"] or not row["enabled"], f"{row['id']} is on without being implemented"
    by_id = {row["id"]: row for row in details_json}
    assert len(by_id) == len(details_json), "detail IDs must be unique"
    for detail_id in CORE_IDS:
        assert by_id[detail_id]["implemented"] and by_id[detail_id]["enabled"], detail_id
    assert by_id["opt.truncation_bootstrap"]["enabled"]
    assert not by_id["aux.target_kl"]["enabled"]
    assert not by_id["aux.clip_annealing"]["enabled"]
    # exactly the implemented switchable details are what --on/--off accept
    assert set(switchable_ids()) <= {i for i, row in by_id.items() if row["implemented"]}


def _test_functions(path: Path) -> set[str]:
    """``name`` and ``Class::name`` of the test functions defined in a test file."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names |= {f"{node.name}::{f.name}" for f in node.body if isinstance(f, ast.FunctionDef)}
    return {n for n in names if n.split("::")[-1].startswith("test_")}


def test_every_implemented_detail_names_an_existing_test(details_json):
    missing = []
    for row in details_json:
        if not row["implemented"]:
            continue
        file, sep, name = row["test"].partition("::")
        path = REPO / file
        if not (sep and file.startswith("tests/") and path.is_file() and name in _test_functions(path)):
            missing.append(f"{row['id']}: {row['test'] or '(no test named)'}")
    assert missing == []


def test_details_table_follows_the_preset(capsys):
    code, out, _ = in_process(["details"], capsys)
    assert code == 0
    # the indented lines under a detail name its test
    lines = {line.split()[0]: line.split() for line in out.splitlines()[1:] if not line.startswith(" ")}
    assert lines["aux.target_kl"][1:3] == ["yes", "off"]
    assert lines["core.gae"][1:3] == ["yes", "on"]
    assert lines["aux.parallel_gradients"][1:3] == ["yes", "on"], "on by default; acts only under torchrun"
    assert lines["lstm.init"][1:3] == ["yes", "on"]
    assert lines["atari.noop_reset"][1:3] == ["yes", "off"], "the Atari details are on only in the atari presets"


# --- help ------------------------------------------------------------------------------------------------------

def test_train_help_shows_field_docstrings(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    # argparse rewraps the text, so compare without whitespace
    text = "".join(capsys.readouterr().out.split())
    docs = field_docs()
    assert "".join(docs["gae_lambda"].split()) in text
    assert "GAElambda(core.gae;offgives1.0)" in text
    for f in fields(Config):
        if f.name not in ("details", "preset"):
            assert "".join(docs[f.name].split()) in text, f.name


# --- train: the run directory ----------------------------------------------------------------------------------

def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def test_quiet_train_prints_nothing(runs):
    code, out, err = runs["seed1_result"]
    assert code == 0, err
    assert out == "" and err == ""


def test_config_json_is_the_resolved_config(runs):
    expected = preset("classic")
    expected.total_steps, expected.num_envs, expected.num_steps, expected.device = UPDATES * BATCH, 4, 64, "cpu"
    expected.details["core.gae"] = False
    written = json.loads((runs["gae_off"] / "config.json").read_text())
    assert written["details"]["core.gae"] is False
    assert written == expected.to_dict()
    assert Config.from_dict(written) == expected
    assert json.loads((runs["seed2"] / "config.json").read_text())["seed"] == 2


def test_episodes_csv(runs):
    header, rows = read_csv(runs["seed1"] / "episodes.csv")
    assert header == ["global_step", "episodic_return", "episodic_length"]
    assert len(rows) >= 10  # CartPole's random-ish early episodes last ~20 steps
    steps = [int(r["global_step"]) for r in rows]
    assert steps == sorted(steps) and 0 < steps[0] and steps[-1] <= UPDATES * BATCH
    for r in rows:
        # CartPole pays 1 per step: the return is the length, so the two columns are not swapped or scaled
        assert float(r["episodic_return"]) == int(r["episodic_length"]) > 0


def test_updates_csv(runs):
    header, rows = read_csv(runs["seed1"] / "updates.csv")
    assert header == ["global_step", "update", *UPDATE_TAGS]
    assert set(UPDATE_SCALARS) <= set(header)
    assert [int(r["global_step"]) for r in rows] == [BATCH * u for u in range(1, UPDATES + 1)]
    for r in rows:
        assert all(math.isfinite(float(r[name])) for name in UPDATE_SCALARS), r
    # core.lr_annealing: the first update trains at the full rate, the last at lr / U
    assert float(rows[0]["learning_rate"]) == pytest.approx(2.5e-4)
    assert float(rows[-1]["learning_rate"]) == pytest.approx(2.5e-4 / UPDATES)
    assert all(float(r["clip_range"]) == pytest.approx(0.2) for r in rows)  # aux.clip_annealing off


def assert_events_match_csvs(run_dir: Path, updates: int) -> None:
    """Every scalar in TensorBoard equals its row in updates.csv / episodes.csv, step for step."""
    scalars = tensorboard_scalars(run_dir)
    assert set(scalars) == {"charts/episodic_return", "charts/episodic_length", *UPDATE_TAGS.values()}
    _, rows = read_csv(run_dir / "updates.csv")
    assert [int(r["global_step"]) for r in rows] == [BATCH * u for u in range(1, updates + 1)]
    for column, tag in UPDATE_TAGS.items():
        assert [s for s, _ in scalars[tag]] == [int(r["global_step"]) for r in rows], tag
        # TensorBoard stores float32
        assert [v for _, v in scalars[tag]] == pytest.approx([float(r[column]) for r in rows], rel=1e-6), tag
    _, episodes = read_csv(run_dir / "episodes.csv")
    assert len(episodes) >= 10
    for column in ("episodic_return", "episodic_length"):
        assert scalars[f"charts/{column}"] == [(int(r["global_step"]), float(r[column])) for r in episodes]


def test_tensorboard_events(runs):
    assert_events_match_csvs(runs["seed1"], UPDATES)


def test_perf_seconds_add_up_to_the_wall_time(runs):
    _, rows = read_csv(runs["seed2"] / "updates.csv")
    elapsed = 0.0
    for r in rows:
        seconds = {name: float(r[name]) for name in PERF_SECONDS}
        assert all(s > 0 for s in seconds.values()), seconds
        # the seconds of the updates so far are the wall time SPS is computed from (the trainer's one clock)
        elapsed += sum(seconds.values())
        assert elapsed == pytest.approx(int(r["global_step"]) / float(r["SPS"]), rel=1e-9)
    # and no more than the whole run took, by a clock of this test
    assert elapsed < runs["seed2_seconds"]


def test_final_checkpoint_written(runs):
    final = checkpoint.latest(runs["seed1"])
    assert final == checkpoint.checkpoint_path(runs["seed1"], UPDATES)
    payload = checkpoint.load(final)
    assert payload["global_step"] == UPDATES * BATCH
    assert payload["config"] == json.loads((runs["seed1"] / "config.json").read_text())


def test_resume_continues_an_interrupted_run(tmp_path, capsys):
    cfg = preset("classic")
    cfg.total_steps, cfg.num_envs, cfg.num_steps, cfg.device = UPDATES * BATCH, 4, 64, "cpu"
    threads = torch.get_num_threads()
    try:
        train(cfg, tmp_path, quiet=True, max_updates=3)  # as if killed after update 3
    finally:
        torch.set_num_threads(threads)
    assert checkpoint.latest(tmp_path) == checkpoint.checkpoint_path(tmp_path, 3)

    code, out, err = in_process(["train", "--resume", tmp_path, "--quiet"], capsys)
    assert (code, out, err) == (0, "", "")
    assert checkpoint.load(checkpoint.latest(tmp_path))["update"] == UPDATES
    _, rows = read_csv(tmp_path / "updates.csv")
    assert [int(r["update"]) for r in rows] == list(range(1, UPDATES + 1))

    files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code, out, err = in_process(["train", "--resume", tmp_path], capsys)
    assert code == 0 and "already complete" in out and err == ""
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files


def test_resume_rewrites_tensorboard_events_after_the_checkpoint(tmp_path):
    """Killed after logging update 3 but before its checkpoint: the resumed run writes update 3 again, and
    TensorBoard shows each update once, the checkpoint's own update (2) included, with the rewritten values."""
    cfg = preset("classic")
    cfg.total_steps, cfg.num_envs, cfg.num_steps, cfg.device = UPDATES * BATCH, 4, 64, "cpu"
    cfg.checkpoint_every = 2
    threads = torch.get_num_threads()
    try:
        train(cfg, tmp_path, quiet=True, max_updates=3)
        checkpoint.checkpoint_path(tmp_path, 3).unlink()
        assert checkpoint.latest(tmp_path) == checkpoint.checkpoint_path(tmp_path, 2)
        age_event_files(tmp_path)
        before = tensorboard_scalars(tmp_path)
        assert [s for s, _ in before["charts/SPS"]] == [BATCH, 2 * BATCH, 3 * BATCH]
        train(None, tmp_path, resume=True, quiet=True)
    finally:
        torch.set_num_threads(threads)
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2
    assert_events_match_csvs(tmp_path, UPDATES)
    after = tensorboard_scalars(tmp_path)
    assert after["charts/SPS"][:2] == before["charts/SPS"][:2]  # up to the checkpoint: kept, not rewritten


# --- eval ------------------------------------------------------------------------------------------------------

EVAL_LINE = re.compile(r"^CartPole-v1: (-?\d+\.\d\d) ± (\d+\.\d\d) over 3 episodes \((\w+)\)$")


def test_eval_prints_mean_and_std_of_the_episodes(runs, capsys):
    code, out, _ = in_process(["eval", runs["seed1"], "--episodes", "3", "--seed", "5"], capsys)
    assert code == 0
    match = EVAL_LINE.match(out.strip())
    assert match, out
    policy, cfg, _ = load_policy(runs["seed1"])
    returns = evaluate(policy, cfg.env_id, 3, seed=5)
    assert len(returns) == 3
    assert match.groups() == (f"{returns.mean():.2f}", f"{returns.std():.2f}", "stochastic")


def test_eval_deterministic_is_repeatable_and_greedy(runs, capsys):
    outputs = []
    for _ in range(2):
        code, out, _ = in_process(["eval", runs["seed1"], "--episodes", "3", "--deterministic"], capsys)
        assert code == 0
        outputs.append(out)
    assert outputs[0] == outputs[1]
    match = EVAL_LINE.match(outputs[0].strip())
    assert match and match.group(3) == "deterministic"
    # greedy episodes played here with gymnasium directly, so an ignored --deterministic cannot match them
    policy, _, _ = load_policy(checkpoint.latest(runs["seed1"]))
    returns = greedy_returns(policy, episodes=3, seed=0)
    assert match.groups()[:2] == (f"{np.mean(returns):.2f}", f"{np.std(returns):.2f}")


def greedy_returns(policy, episodes: int, seed: int) -> list[float]:
    env = gym.make("CartPole-v1")
    actions = torch.arange(env.action_space.n)
    returns = []
    obs, _ = env.reset(seed=seed)
    total = 0.0
    while len(returns) < episodes:
        obs_t = torch.as_tensor(obs, dtype=torch.float32).expand(len(actions), -1)
        with torch.no_grad():
            logprobs, _, _ = policy.evaluate({"obs": obs_t, "actions": actions})
        obs, reward, terminated, truncated, _ = env.step(int(logprobs.argmax()))
        total += float(reward)
        if terminated or truncated:
            returns.append(total)
            total = 0.0
            obs, _ = env.reset()
    env.close()
    return returns


# --- plot ------------------------------------------------------------------------------------------------------

def test_plot_groups_seeds_and_separates_ablations(runs, tmp_path, capsys):
    output = tmp_path / "figs" / "out.png"
    code, out, err = in_process(["plot", runs["seed1"], runs["seed2"], runs["gae_off"], "-o", output], capsys)
    assert code == 0 and err == ""
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = out.strip().split(": ", 1)[1].split("; ")
    assert sorted(summary) == ["CartPole-v1 (classic) (2 seeds)", "CartPole-v1 (classic) off core.gae (1 seed)"]


def test_plot_of_one_run_is_one_seed(runs, tmp_path, capsys):
    output = tmp_path / "one.png"
    code, out, _ = in_process(["plot", runs["gae_off"], "-o", output], capsys)
    assert code == 0 and output.is_file()
    assert out.strip() == f"wrote {output}: CartPole-v1 (classic) off core.gae (1 seed)"


def test_plot_names_the_hyperparameters_that_differ():
    from proximal.config import preset
    from proximal.plot import experiment_labels

    base = preset("classic").to_dict()
    # where and how a run runs, and what it records, do not make another experiment
    seed2 = dict(base, seed=2, device="cuda", env_workers=2, torch_threads=2, capture_video=True, track=True)
    other_lr = dict(base, learning_rate=1e-3)
    labels = experiment_labels([base, seed2, other_lr])
    assert labels[0] == labels[1] == "CartPole-v1 (classic) learning_rate=0.00025"
    assert labels[2] == "CartPole-v1 (classic) learning_rate=0.001"
