"""What a hostile or unlucky user does to a run (issue 11): every case ends in one line on stderr and a non-zero
exit, and nothing already written is lost. In-process through ``cli.main`` where the process may live on; a
subprocess ``python -m proximal`` where one must run alongside, be interrupted, or die."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from proximal import checkpoint, config, rundir
from proximal.cli import main
from proximal.errors import UserError
from proximal.policy import make_policy
from resume_check import rows

ROOT = Path(__file__).parent.parent
# 4 updates of 2 envs x 64 steps, a checkpoint after each
TINY = ["--total-steps", "512", "--num-envs", "2", "--num-steps", "64", "--checkpoint-every", "1",
        "--hidden-sizes", "8,8", "--quiet"]


class FaultyEnv(gym.Env):
    """Returns a fault at the 40th step of env 1 (the env reset with an even seed; env i gets seed + i) and plain
    values elsewhere: ``fault`` "obs" a NaN observation, "reward" an infinite reward, "huge" a finite reward of
    1e38, whose return (summed in float32) overflows in the update's value loss, "final" a NaN observation that
    truncates the episode (the final one, which opt.truncation_bootstrap takes a value of), "raise" an exception."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, fault: str):
        self.fault, self.steps, self.faulty = fault, 0, False

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.faulty = seed % 2 == 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.steps += 1
        hit = self.faulty and self.steps == 40
        if hit and self.fault == "raise":
            raise RuntimeError("the env broke")
        obs = np.array([np.nan if hit and self.fault in ("obs", "final") else self.steps % 7, action], np.float32)
        reward = {"reward": np.inf, "huge": 1e38}.get(self.fault, 1.0) if hit else 1.0
        return obs, reward, False, hit and self.fault == "final", {}


for _fault in ("obs", "reward", "huge", "final", "raise"):
    if f"proximal-test/Faulty-{_fault}-v0" not in gym.registry:
        gym.register(f"proximal-test/Faulty-{_fault}-v0", entry_point=FaultyEnv, kwargs={"fault": _fault})


@pytest.fixture(autouse=True)
def keep_torch_threads():
    threads = torch.get_num_threads()  # the trainer sets torch's global thread count; other tests keep theirs
    yield
    torch.set_num_threads(threads)


def run_cli(capsys, *argv) -> tuple[int, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    err = capsys.readouterr().err.strip()
    return code, err


def one_line(err: str) -> str:
    assert err and "\n" not in err, err
    return err


def tiny_run(path: Path, *extra) -> Path:
    assert main(["train", *TINY, "--run-dir", str(path), *extra]) == 0
    return path


def foreign_checkpoint(tmp_path) -> tuple[list, str]:
    run = tiny_run(tmp_path / "cartpole")
    other = tiny_run(tmp_path / "acrobot", "--env", "Acrobot-v1")
    (run / "checkpoints" / "update_0000009.pt").write_bytes(checkpoint.latest(other).read_bytes())
    return ["train", "--resume", run], "belongs to another run"


def foreign_checkpoint_eval(tmp_path):
    argv, message = foreign_checkpoint(tmp_path)
    return ["eval", tmp_path / "cartpole", "--episodes", "1"], message


def flipped_byte(tmp_path):
    run = tiny_run(tmp_path / "run")
    path = checkpoint.latest(run)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10  # the payload fills most of the file
    path.write_bytes(bytes(data))
    return ["train", "--resume", run], "is damaged: its contents do not match the SHA-256"


def pickled_checkpoint(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, "config": os.system}, path)
    return ["eval", path], "refused: the file holds pickled code, which proximal never loads"


def weights_not_of_config(tmp_path):
    run = tiny_run(tmp_path / "run")
    payload = checkpoint.load(checkpoint.latest(run))
    payload["config"]["hidden_sizes"] = [16, 16]
    path = tmp_path / "altered.pt"
    checkpoint.save(payload, path)
    return ["eval", path], "do not fit the network its config describes"


def nonfinite_weights(tmp_path):
    run = tiny_run(tmp_path / "run")
    payload = checkpoint.load(checkpoint.latest(run))
    next(iter(payload["policy"].values()))[0] = float("nan")
    path = tmp_path / "nan.pt"
    checkpoint.save(payload, path)
    return ["eval", path], "holds non-finite weights"


def run_dir_is_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    return ["train", *TINY, "--run-dir", tmp_path / "file"], "is a file, not a directory"


def plot_without_preset(tmp_path):
    run = tiny_run(tmp_path / "run")
    cfg = json.loads((run / "config.json").read_text())
    del cfg["preset"]
    (run / "config.json").write_text(json.dumps(cfg))
    return ["plot", run, "-o", tmp_path / "c.png"], "lacks preset"


def older_format(tmp_path):
    path = tmp_path / "v1.pt"
    torch.save({"format": 1, "config": {}}, path)
    return ["eval", path], f"has format 1, and this version of proximal reads formats 2 and {checkpoint.FORMAT}"


def not_a_run_dir(tmp_path):
    user_files(tmp_path / "mydata")
    return ["train", *TINY, "--run-dir", tmp_path / "mydata"], "holds files but is not a run directory"


def eval_not_a_run_dir(tmp_path):
    user_files(tmp_path / "mydata")
    return ["eval", tmp_path / "mydata"], "is not a run directory (no run.json and no checkpoints)"


def user_files(folder: Path) -> dict[str, bytes]:
    """A user's folder, with the names a run writes (config.json, updates.csv) and removes (temporaries)."""
    folder.mkdir()
    for name, text in {"config.json": "{}", "updates.csv": "my,own\n", "results.tmp": "x", ".tmp_notes": "y"}.items():
        (folder / name).write_text(text)
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def eval_seed(tmp_path):
    return ["eval", tiny_run(tmp_path / "run"), "--seed", "-1"], "seed must lie in"


def flags(*argv, message):
    return lambda tmp_path: (list(argv), message)


CASES = {
    "lr-inf": flags("train", *TINY, "--learning-rate", "inf", message="learning_rate must be a finite number"),
    "ent-coef-inf": flags("train", *TINY, "--ent-coef", "inf", message="ent_coef must be a finite number"),
    "vf-coef-nan": flags("train", *TINY, "--vf-coef", "nan", message="vf_coef must be a finite number"),
    "threads": flags("train", *TINY, "--torch-threads", "100000", message="torch_threads 100000 is more than 256"),
    "seed-negative": flags("train", *TINY, "--seed", "-1", message="seed must lie in"),
    "seed-huge": flags("train", *TINY, "--seed", str(10**20), message="seed must lie in"),
    "seed-float": flags("train", *TINY, "--seed", "1e20", message="invalid int value"),
    "num-envs-memory": flags("train", *TINY, "--num-envs", "10000000", "--total-steps", str(10**9),
                             message="the rollout (num_envs 10000000 x num_steps 64"),
    "hidden-memory": flags("train", *TINY, "--hidden-sizes", "100000,100000", message="hidden_sizes 100000,100000"),
    "off-and-on": flags("train", *TINY, "--off", "core.gae", "--on", "core.gae",
                        message="'core.gae' is given to both --off and --on"),
    "run-dir-empty": flags("train", *TINY, "--run-dir", "", message="the run directory is empty"),
    "resume-empty": flags("train", "--resume", "", message="the run directory is empty"),
    "run-dir-file": run_dir_is_a_file,
    "foreign-checkpoint-resume": foreign_checkpoint,
    "foreign-checkpoint-eval": foreign_checkpoint_eval,
    "flipped-byte": flipped_byte,
    "pickled-checkpoint": pickled_checkpoint,
    "older-format": older_format,
    "weights-not-of-config": weights_not_of_config,
    "nonfinite-weights": nonfinite_weights,
    "plot-without-preset": plot_without_preset,
    "run-dir-not-a-run": not_a_run_dir,
    "eval-not-a-run": eval_not_a_run_dir,
    "eval-seed-negative": eval_seed,
    "atari-preset-on-cartpole": flags("train", *TINY, "--preset", "atari", "--env", "CartPole-v1",
                                      message="the atari preset is for Atari games (or image observations)"),
    "env-workers-envpool": flags("train", *TINY, "--preset", "atari", "--env", "BreakoutNoFrameskip-v4", "--backend",
                                 "envpool", "--env-workers", "2", message="the envpool backend steps its envs in its"),
}


def test_a_folder_that_is_not_a_run_is_left_as_it_was(tmp_path, capsys):
    before = user_files(tmp_path / "mydata")
    assert run_cli(capsys, "train", *TINY, "--run-dir", tmp_path / "mydata")[0] == 2
    assert {p.name: p.read_bytes() for p in (tmp_path / "mydata").iterdir()} == before
    # an empty folder, or a run's own directory killed before its first checkpoint (its lock), is used
    (tmp_path / "empty").mkdir()
    assert run_cli(capsys, "train", *TINY, "--run-dir", tmp_path / "empty")[0] == 0
    (tmp_path / "killed").mkdir()
    (tmp_path / "killed" / "lock").write_text("")
    (tmp_path / "killed" / "updates.csv").write_text("torn")
    assert run_cli(capsys, "train", *TINY, "--run-dir", tmp_path / "killed")[0] == 0


def test_a_resumed_run_whose_id_file_was_lost_keeps_its_id(tmp_path, capsys):
    from proximal.cli import build_parser, config_from_args
    from proximal.trainer import train

    run = tmp_path / "run"
    train(config_from_args(build_parser().parse_args(["train", *TINY])), run, quiet=True, max_updates=2)
    first = json.loads((run / "run.json").read_text())["run_id"]
    (run / "run.json").unlink()
    assert run_cli(capsys, "train", "--resume", run, "--quiet")[0] == 0
    assert json.loads((run / "run.json").read_text())["run_id"] == first
    # every checkpoint, from before the loss and after, is still the run's own
    assert [checkpoint.load(path)["run_id"] for _, path in checkpoint.finished(run)] == [first] * 4



@pytest.mark.parametrize("case", CASES)
def test_bad_input_ends_in_one_line_and_exit_2(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written to the current directory by mistake
    monkeypatch.setattr(config, "_free_memory", lambda: 16 * 2**30)  # the same machine for every test run
    argv, message = CASES[case](tmp_path)
    capsys.readouterr()
    code, err = run_cli(capsys, *argv)
    assert code == 2 and message in one_line(err), err
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "runs").exists()


def test_a_foreign_checkpoint_leaves_the_run_untouched(tmp_path, capsys):
    argv, _ = foreign_checkpoint(tmp_path)
    run = tmp_path / "cartpole"
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "lock"}
    assert run_cli(capsys, *argv)[0] == 2
    after = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "lock"}
    assert after == before  # config, CSVs and checkpoints as they were


@pytest.mark.parametrize("fault, message, extra", [
    ("obs", "env 1 returned a non-finite observation (nan) at step 80 (step 8 of the rollout)", []),
    ("reward", "env 1 returned a non-finite reward (inf) at step 80 (step 8 of the rollout)", []),
    # the env's value, not the scaled one (nan), and no numpy warnings before the message
    ("reward", "env 1 returned a non-finite reward (inf) at step 80 (step 8 of the rollout)",
     ["--on", "cont.reward_scaling"]),
    ("final", "env 1 returned a non-finite final observation of a truncated episode (value nan) at step 80 (step 8 of "
              "the rollout)", []),
    # the advantages overflow in their normalization (core.adv_norm) first
    ("huge", "the policy loss became nan", []),
])
def test_a_nonfinite_value_stops_the_run_before_any_checkpoint_holds_it(fault, message, extra, tmp_path, capsys):
    # 16 steps per env and update: the 40th step of env 1 falls in update 3, after checkpoints 1 and 2
    run = tmp_path / "run"
    argv = ["train", "--env", f"proximal-test/Faulty-{fault}-v0", "--total-steps", "256", "--num-envs", "2",
            "--num-steps", "16", "--num-minibatches", "2", "--checkpoint-every", "1", "--quiet", "--run-dir", run,
            *extra]
    code, err = run_cli(capsys, *argv)
    last_good = checkpoint.checkpoint_path(run, 2)
    assert code == 1
    assert one_line(err) == (f"proximal train: error: training stopped at update 3: {message}; the last good "
                             f"checkpoint is {last_good} (nothing non-finite was saved)")
    assert [u for u, _ in checkpoint.finished(run)] == [1, 2]
    payload = checkpoint.load(checkpoint.latest(run))
    assert all(t.isfinite().all() for t in payload["policy"].values())
    # resumable (this env's state is not captured: its envs are reset, and the fault comes 40 steps later)
    code, err = run_cli(capsys, "train", "--resume", run, "--quiet")
    assert code == 1 and one_line(err).startswith("proximal train: error: training stopped at update 5: ")
    for _, path in checkpoint.finished(run):
        assert all(t.isfinite().all() for t in checkpoint.load(path)["policy"].values())


def test_an_exception_of_the_env_keeps_its_traceback_and_says_how_to_continue(tmp_path):
    run = tmp_path / "run"
    argv = ["train", "--env", "proximal-test/Faulty-raise-v0", "--total-steps", "256", "--num-envs", "2",
            "--num-steps", "16", "--num-minibatches", "2", "--checkpoint-every", "1", "--quiet", "--run-dir", run]
    with pytest.raises(RuntimeError, match="the env broke") as raised:
        main([str(a) for a in argv])
    assert raised.value.__notes__ == [f"proximal train: stopped by this error; continue with: proximal train "
                                      f"--resume {run}"]
    assert [u for u, _ in checkpoint.finished(run)] == [1, 2]


def test_a_nonfinite_parameter_is_named_when_the_statistics_are_finite():
    # the check sums every parameter at once and searches for the culprit only when that sum is not finite
    from proximal.trainer import _GUARDED_STATS, _nonfinite_update

    cfg = config.preset("classic")
    env = gym.make("CartPole-v1")
    policy = make_policy(env.observation_space, env.action_space, cfg)
    stats = dict.fromkeys(_GUARDED_STATS, 0.5)
    named = list(policy.named_parameters())
    assert _nonfinite_update(stats, named) is None
    with torch.no_grad():
        policy.value_head.bias[0] = -np.inf
        policy.trunk.actor[0].weight[3, 1] = np.inf  # with the -inf above, a sum of +inf and -inf: NaN
    assert _nonfinite_update(stats, named) == "the parameter trunk.actor.0.weight became non-finite"
    with torch.no_grad():
        policy.trunk.actor[0].weight[3, 1] = 0.0
    assert _nonfinite_update(stats, named) == "the parameter value_head.bias became non-finite"
    assert _nonfinite_update({**stats, "grad_norm": np.nan}, named) == "the gradient norm became nan"


def training_in_background(run: Path, *options: str) -> subprocess.Popen:
    """A real ``proximal train`` process on ``run``, long enough to be stopped, writing a checkpoint every update;
    its stderr piped."""
    return subprocess.Popen([sys.executable, "-m", "proximal", "train", "--total-steps", "200000", "--num-envs", "2",
                             "--num-steps", "64", "--checkpoint-every", "1", "--quiet", "--run-dir", str(run),
                             *options],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def wait_for_checkpoints(training: subprocess.Popen, run: Path, count: int = 2) -> None:
    deadline = time.monotonic() + 120  # the machine may be busy with other tests
    while len(checkpoint.finished(run)) < count and time.monotonic() < deadline and training.poll() is None:
        time.sleep(0.1)
    assert len(checkpoint.finished(run)) >= count, (training.poll(), "the training wrote no checkpoints")


def test_two_trainings_on_one_directory(tmp_path, capsys):
    run = tmp_path / "run"
    first = training_in_background(run, "--seed", "1")
    try:
        wait_for_checkpoints(first, run)
        run_id = rundir.run_id(run)
        for argv in (["train", *TINY, "--seed", "2", "--run-dir", run], ["train", "--resume", run, "--quiet"]):
            code, err = run_cli(capsys, *argv)
            assert code == 2 and f"is in use by another training (pid {first.pid})" in one_line(err)
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 130, stderr
    assert one_line(stderr.strip()) == f"interrupted; continue with: proximal train --resume {run}"
    # the first run's files are its own: one run id, its seed, updates logged once each and in order
    assert rundir.run_id(run) == run_id
    for _, path in checkpoint.finished(run):
        payload = checkpoint.load(path)
        assert payload["run_id"] == run_id and payload["config"]["seed"] == 1
    updates = [int(r["update"]) for r in rows(run / "updates.csv")]
    assert updates == list(range(1, len(updates) + 1))
    assert json.loads((run / "config.json").read_text())["seed"] == 1


def process_commands() -> list[tuple[str, bytes]]:
    """(pid, command line) of every process (Linux's /proc), leaving out those that end while being read."""
    found = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            found.append((path.parent.name, path.read_bytes()))
    return found


def test_a_sigterm_stops_a_training_as_a_ctrl_c_does(tmp_path):
    """kill (a job scheduler's stop): the run's files closed, its checkpoints kept, how to continue printed, exit
    143 (a shell's code for a SIGTERM). With envs in worker processes, which end with it."""
    run = tmp_path / "run"
    training = training_in_background(run, "--env-workers", "2")
    try:
        wait_for_checkpoints(training, run)
        training.send_signal(signal.SIGTERM)
        _, stderr = training.communicate(timeout=120)
    finally:
        training.kill()
    assert training.returncode == 143, stderr
    assert one_line(stderr.strip()) == f"terminated (SIGTERM); continue with: proximal train --resume {run}"
    last, path = checkpoint.finished(run)[-1]
    assert checkpoint.load(path)["update"] == last
    updates = [int(r["update"]) for r in rows(run / "updates.csv")]
    assert updates[:last] == list(range(1, last + 1)), "every update up to the last checkpoint logged, in order"
    # the env workers (forks of the training, the same command line) are gone with it
    assert not [pid for pid, command in process_commands() if str(run).encode() in command]


def test_killed_between_temp_write_and_rename_of_the_first_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    # the process dies where the first checkpoint's temporary file is complete but not yet renamed
    script = ("import os, sys\n"
              "real = os.replace\n"
              "os.replace = lambda a, b: os._exit(9) if '/checkpoints/' in str(b) else real(a, b)\n"
              "from proximal.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    done = subprocess.run([sys.executable, "-c", script, "train", *TINY, "--run-dir", str(run)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=120)
    assert done.returncode == 9
    assert [p.name.startswith(".tmp_") for p in (run / "checkpoints").iterdir()] == [True]
    code, err = run_cli(capsys, "train", "--resume", run, "--quiet")
    assert code == 2 and "has no finished checkpoint" in one_line(err) and "the command that started it" in err
    tiny_run(run)  # a fresh train takes the directory over
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [f"update_000000{u}.pt" for u in range(1, 5)]


def _disk_full_at(monkeypatch, target: str, nth: int):
    """The ``nth`` write of ``target`` ("csv": an os.write, which RowFile appends rows with; "checkpoint": the
    fsync of a checkpoint's temporary file) fails with ENOSPC after writing half its bytes."""
    calls = {"n": 0}
    real = os.write if target == "csv" else os.fsync

    def fail(fd, *data):
        if target == "checkpoint" and not os.readlink(f"/proc/self/fd/{fd}").endswith(".pt"):
            return real(fd, *data)  # the logs' and the config's fsyncs, and the directories'
        calls["n"] += 1
        if calls["n"] == nth:
            if data:
                real(fd, bytes(data[0])[: len(data[0]) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, *data)

    monkeypatch.setattr(os, "write" if target == "csv" else "fsync", fail)


@pytest.mark.parametrize("target, nth", [("csv", 5), ("checkpoint", 3)])
def test_disk_full_then_resume_equals_the_uninterrupted_run(target, nth, tmp_path, capsys, monkeypatch):
    full = tiny_run(tmp_path / "full")
    run = tmp_path / "run"
    _disk_full_at(monkeypatch, target, nth)
    code, err = run_cli(capsys, "train", *TINY, "--run-dir", run)
    monkeypatch.undo()
    found = checkpoint.finished(run)
    assert code == 1 and found and found[-1][0] < 4
    assert one_line(err).startswith("proximal train: error: cannot write '")
    assert f"(No space left on device); the last good checkpoint is {found[-1][1]}" in err
    assert err.endswith(f"when it can be written again, continue with: proximal train --resume {run}")
    assert not list((run / "checkpoints").glob(".tmp_*"))
    # space is back
    assert run_cli(capsys, "train", "--resume", run, "--quiet")[0] == 0
    cfg_a, cfg_b = (checkpoint.load(checkpoint.latest(d)) for d in (full, run))
    assert all(torch.equal(cfg_a["policy"][k], cfg_b["policy"][k]) for k in cfg_a["policy"])
    for log in ("episodes.csv", "updates.csv"):
        assert rows(full / log) == rows(run / log), log
        assert (run / log).read_text().endswith("\n")


def test_torn_rows_are_dropped_on_resume(tmp_path, capsys):
    full = tiny_run(tmp_path / "full")
    run = tmp_path / "run"
    tiny_run(run)
    # what faults left behind in an older version: a row with an empty step, one cut short, a tail without newline
    checkpoint.checkpoint_path(run, 4).unlink()
    checkpoint.checkpoint_path(run, 3).unlink()
    with open(run / "episodes.csv", "a") as f:
        f.write(",3.0,4\n103,,\n103")
    with open(run / "updates.csv", "a") as f:
        f.write("10")
    assert run_cli(capsys, "train", "--resume", run, "--quiet")[0] == 0
    for log in ("episodes.csv", "updates.csv"):
        assert rows(full / log) == rows(run / log), log


def test_plot_skips_malformed_rows_with_a_warning(tmp_path, capsys):
    run = tiny_run(tmp_path / "run")
    good = len(rows(run / "episodes.csv"))
    with open(run / "episodes.csv", "a") as f:
        f.write("103,,\nabc,1.0,2\n103")
    code, err = run_cli(capsys, "plot", run, "-o", tmp_path / "c.png")
    assert code == 0 and (tmp_path / "c.png").exists()
    assert one_line(err) == f"proximal plot: warning: {run / 'episodes.csv'}: skipped 3 malformed rows"
    assert good > 0


def test_read_only_file_system_is_one_line(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    real = os.open

    def read_only(path, *args, **kwargs):
        if str(path).startswith(str(run)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    code, err = run_cli(capsys, "train", *TINY, "--run-dir", run)
    assert code == 2
    assert one_line(err) == (f"proximal train: error: cannot write to the run directory '{run}' (Read-only file "
                             "system); make it writable, or use another directory (a stopped run can be copied to one and "
                             "resumed there)")


def test_a_full_disk_at_the_start_is_one_line(tmp_path, capsys, monkeypatch):
    # the lock file's pid is the first byte a run writes
    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", full)
    code, err = run_cli(capsys, "train", *TINY, "--run-dir", tmp_path / "run")
    assert code == 1, "a fault of the machine, as a full disk later in the run, not bad input"
    assert one_line(err) == (f"proximal train: error: cannot write to the run directory '{tmp_path / 'run'}' (No "
                             "space left on device); free space on its disk, or use another directory (a stopped run can be "
                             "copied to one and resumed there)")


def test_memory_estimate_counts_the_rollout_and_the_networks():
    from proximal.config import memory_estimate

    cfg = config.preset("classic")
    cfg.num_envs, cfg.num_steps, cfg.hidden_sizes = 2, 3, (5,)
    rollout, networks = memory_estimate(cfg, obs_size=4, obs_itemsize=4)
    # 6 env steps x (16 bytes of observation + 32) x 2, and 2 KiB per env
    assert rollout == 6 * 48 * 2 + 2 * 2048
    # one 4->5 layer per network, two networks (core.separate_networks), four copies of 4 bytes each
    assert networks == (4 + 1) * 5 * 2 * 16


@pytest.mark.skipif(not os.environ.get("PROXIMAL_TEST_TMPFS"),
                    reason="needs a small tmpfs mounted by hand, named by PROXIMAL_TEST_TMPFS (e.g. mount -t tmpfs "
                           "-o size=2m tmpfs /mnt/tiny): the suite does not mount file systems")
def test_a_really_full_disk_then_resume_equals_the_uninterrupted_run(tmp_path, capsys):
    full = tiny_run(tmp_path / "full")
    sizes = {p: p.stat().st_size for p in full.rglob("*") if p.is_file()}
    largest = max(size for p, size in sizes.items() if p.suffix == ".pt")
    # room for everything but the checkpoints, and for two and a half of those: the third cannot be written
    room = sum(size for p, size in sizes.items() if p.suffix != ".pt") + 5 * largest // 2
    base = Path(os.environ["PROXIMAL_TEST_TMPFS"]) / f"proximal-test-{os.getpid()}"
    base.mkdir()
    try:
        filler = base / "filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(bytes(1 << 16))
                    f.flush()
            except OSError as e:
                assert e.errno == errno.ENOSPC
            f.truncate(max(f.tell() - room, 0))
        run = base / "run"
        code, err = run_cli(capsys, "train", *TINY, "--run-dir", run)
        assert code == 1 and "(No space left on device)" in one_line(err), err
        found = checkpoint.finished(run)
        assert 0 < len(found) < 4 and f"the last good checkpoint is {found[-1][1]}" in err
        filler.unlink()
        assert run_cli(capsys, "train", "--resume", run, "--quiet")[0] == 0
        a, b = (checkpoint.load(checkpoint.latest(d))["policy"] for d in (full, run))
        assert all(torch.equal(a[k], b[k]) for k in a)
        for log in ("episodes.csv", "updates.csv"):
            assert rows(full / log) == rows(run / log), log
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_the_reliability_page_names_tests_that_exist():
    import re

    page = (ROOT / "docs" / "reliability.md").read_text()
    named = set(re.findall(r"`(test_\w+)`", page))
    defined = {name for path in (ROOT / "tests").glob("test_*.py")
               for name in re.findall(r"^def (test_\w+)", path.read_text(), re.M)}
    assert named and named <= defined, named - defined


def test_stale_temporaries_are_removed_once_the_lock_is_held_and_only_then(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    temporaries = [run / ".tmp_123_0a1b2c3d_updates.csv", run / ".tmp_123_0a1b2c3d_config.json",
                   run / "checkpoints" / ".tmp_123_0a1b2c3d_update_0000003.pt"]
    kept = [run / "updates.csv", run / "config.json", run / "checkpoints" / "update_0000002.pt"]
    for path in temporaries + kept:
        path.write_text("x")
    # a training that holds the lock writes its temporaries: another one is refused and leaves them alone
    held = os.open(run / rundir.LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with pytest.raises(UserError, match="is in use by another training"):
            with rundir.owned(run):
                pass
        assert all(path.exists() for path in temporaries + kept)
    finally:
        os.close(held)  # the training ends (or is killed): its temporaries are stale now
    with rundir.owned(run):
        assert [path for path in temporaries if path.exists()] == []
        assert all(path.exists() for path in kept)
