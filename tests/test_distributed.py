"""Data-parallel training (aux.parallel_gradients): 2 ranks, gloo on localhost.

The update's arithmetic is checked in 2 processes started by ``torch.multiprocessing`` against one process on the
concatenated data; the training runs start ``python -m torch.distributed.run -m proximal train``, as a user would.
"""

import contextlib
import csv
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from proximal import checkpoint, distributed
from proximal.config import preset
from proximal.errors import RunFailure, UserError
from proximal.fast_paths import make_update
from proximal.numpy_update import NumpyMLPUpdate
from proximal.policy import make_policy
from proximal.trainer import train
from proximal.update import make_optimizer, normalize_advantages, ppo_update

ROOT = Path(__file__).resolve().parents[1]
OBS_SPACE = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
ACTIONS = gym.spaces.Discrete(3)
ROWS = 64  # per rank


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_batch(policy, rank: int) -> dict[str, torch.Tensor]:
    """A rollout-like batch of one rank: the stored log-probs and values are the policy's own."""
    rng = np.random.default_rng(rank)
    obs = torch.from_numpy(rng.normal(size=(ROWS, 4)).astype(np.float32))
    actions = torch.from_numpy(rng.integers(0, 3, ROWS))
    with torch.no_grad():
        logprobs, _, values = policy.evaluate({"obs": obs, "actions": actions})
    # advantages far from mean 0, std 1: normalizing them changes the gradient
    return {"obs": obs, "actions": actions, "logprobs": logprobs, "values": values,
            "advantages": torch.from_numpy(rng.normal(3.0, 5.0, ROWS).astype(np.float32)),
            "returns": torch.from_numpy(rng.normal(0.0, 3.0, ROWS).astype(np.float32))}


def one_step_cfg(adv_norm: bool, fast: bool, clip: bool):
    cfg = preset("classic")
    cfg.update_epochs, cfg.num_minibatches, cfg.fast_paths = 1, 1, fast  # one gradient step on the whole batch
    cfg.details["core.adv_norm"], cfg.details["core.grad_clip"] = adv_norm, clip
    return cfg


def one_step(cfg, batch_of) -> dict[str, torch.Tensor]:
    """Parameters and Adam's first moments after one update of a fresh policy (seed 0) on ``batch_of(policy)``.
    The moments hold the (clipped) gradient itself: Adam's first step alone hardly depends on its scale."""
    torch.manual_seed(0)
    policy = make_policy(OBS_SPACE, ACTIONS, cfg)
    optimizer = make_optimizer(policy, cfg)
    update = make_update(policy, optimizer, torch.device("cpu"), cfg.fast_paths)
    assert isinstance(update, NumpyMLPUpdate) == cfg.fast_paths
    update(policy, optimizer, batch_of(policy), cfg, 0.2, torch.Generator().manual_seed(0))
    moments = {f"exp_avg.{i}": optimizer.state[p]["exp_avg"].clone() for i, p in enumerate(policy.parameters())}
    return {**{k: v.clone() for k, v in policy.state_dict().items()}, **moments}


# with clipping on, the averaged gradient's norm is what gets clipped (each rank's gradient here is longer than
# max_grad_norm); off, the moments show that the gradients are averaged, not summed
CASES = [(adv_norm, fast, clip) for adv_norm in (False, True) for fast in (False, True) for clip in (True, False)]


def target_kl_epochs(rank: int, fast: bool) -> int:
    """aux.target_kl with a target between the two ranks' own first-epoch approx_kl: the ranks decide on the
    mean over both, so both stop after the first epoch (deciding alone, one would run on and its next
    all-reduce would meet no partner)."""
    cfg = one_step_cfg(False, fast, True)
    # 4 minibatches: the first sees the rollout's own policy (approx_kl 0), the others the steps taken since
    cfg.details["aux.target_kl"], cfg.num_minibatches = True, 4

    def update(epochs: int, target: float) -> dict:
        cfg.update_epochs, cfg.target_kl = epochs, target
        torch.manual_seed(0)
        policy = make_policy(OBS_SPACE, ACTIONS, cfg)
        optimizer = make_optimizer(policy, cfg)
        for group in optimizer.param_groups:
            group["lr"] = 3e-3
        return make_update(policy, optimizer, torch.device("cpu"), fast)(
            policy, optimizer, rank_batch(policy, rank), cfg, 0.2, torch.Generator().manual_seed(0))

    kls = [None, None]
    dist.all_gather_object(kls, update(1, 1e9)["approx_kl"])
    assert kls[0] != kls[1]
    return update(4, min(kls) + 0.25 * abs(kls[0] - kls[1]))["epochs"]


def _rank_worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))
    results = {"one_step": [one_step(one_step_cfg(*case), lambda p: rank_batch(p, rank)) for case in CASES]}
    # several updates on different data: the parameters stay identical, and the checksum agrees
    cfg = preset("classic")
    torch.manual_seed(rank)  # different starts on purpose: the broadcast makes them rank 0's
    policy = make_policy(OBS_SPACE, ACTIONS, cfg)
    distributed.broadcast_parameters(policy, cfg)
    optimizer = make_optimizer(policy, cfg)
    generator = torch.Generator().manual_seed(rank)
    for update in range(3):
        ppo_update(policy, optimizer, rank_batch(policy, 10 * update + rank), cfg, 0.2, generator)
    distributed.check_parameters(policy, cfg)
    results["several"] = {k: v.clone() for k, v in policy.state_dict().items()}
    results["target_kl"] = [target_kl_epochs(rank, fast) for fast in (False, True)]
    # a rank whose parameters drifted is caught
    if rank == 1:
        with torch.no_grad():
            next(policy.parameters())[0, 0] += 1e-3
    try:
        distributed.check_parameters(policy, cfg)
        results["drift"] = ""
    except RunFailure as e:
        results["drift"] = str(e)
    # the Python API inside a group the caller made: train joins it; rank 1's callback stops the run after the
    # first of its 2 updates, on both ranks
    api = preset("classic")
    api.total_steps, api.num_envs, api.num_steps = 256, 2, 64
    results["api_global_step"] = train(api, f"{out}/api_run", quiet=True,
                                       callbacks=[lambda info: rank == 0]).global_step
    results["api_run"] = f"{out}/api_run"
    torch.save(results, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def spawn_two_ranks(worker, out: Path, *args) -> list:
    """Run ``worker(rank, port, out, *args)`` in 2 processes; what each saved as out/rank{r}.pt."""
    mp.spawn(worker, args=(free_port(), str(out), *args), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    return spawn_two_ranks(_rank_worker, tmp_path_factory.mktemp("ranks"))


def _step_worker(rank: int, port: int, out: str, details: dict) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))
    cfg = preset("classic")
    cfg.details.update(details)
    torch.manual_seed(0)
    policy = make_policy(OBS_SPACE, ACTIONS, cfg)
    optimizer = make_optimizer(policy, cfg)
    make_update(policy, optimizer, torch.device("cpu"))(policy, optimizer, rank_batch(policy, rank), cfg, 0.2,
                                                         torch.Generator().manual_seed(0))
    torch.save(policy.state_dict(), f"{out}/rank{rank}.pt")
    dist.barrier()  # with aux.parallel_gradients off nothing else syncs the ranks: none may leave the group early
    dist.destroy_process_group()


def check_parallel_gradients(cfg) -> None:
    """aux.parallel_gradients: 2 ranks that start alike and step on different data end with the same
    parameters (off: each follows its own data)."""
    with tempfile.TemporaryDirectory() as out:
        a, b = spawn_two_ranks(_step_worker, Path(out), cfg.details)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"adv_norm={a}-numpy={f}-clip={c}" for a, f, c in CASES])
def test_aux_parallel_gradients_average_equals_the_concatenated_minibatch(two_ranks, case):
    """adv_norm off: one averaged step equals one process's step on both ranks' rows (the loss is a mean, so its
    gradient is the mean of the halves'). adv_norm on: each rank normalizes its own minibatch, so the step equals
    one process's on the rows with each half normalized apart. Clipping and Adam come after the averaging: the
    averaged gradient's norm is what gets clipped. Both the torch and the numpy update."""
    adv_norm, fast, clip = CASES[case]

    def both(policy):
        halves = [rank_batch(policy, r) for r in range(2)]
        if adv_norm:
            for half in halves:
                half["advantages"] = normalize_advantages(half["advantages"])
        return {k: torch.cat([h[k] for h in halves]) for k in halves[0]}

    expected = one_step(one_step_cfg(False, fast, clip), both)
    for rank in range(2):
        got = two_ranks[rank]["one_step"][case]
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)
    # each rank alone would have stepped elsewhere: the comparison has teeth
    alone = one_step(one_step_cfg(adv_norm, fast, clip), lambda p: rank_batch(p, 0))
    assert any((alone[k] - expected[k]).abs().max() > 1e-4 for k in expected)


def test_parameters_stay_identical_and_drift_is_caught(two_ranks):
    a, b = two_ranks[0]["several"], two_ranks[1]["several"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert two_ranks[0]["drift"] and "rank(s) 1 differ" in two_ranks[0]["drift"]
    assert "rank(s) 1 differ" in two_ranks[1]["drift"]


def test_aux_target_kl_stops_every_rank_after_the_same_epoch(two_ranks):
    assert two_ranks[0]["target_kl"] == two_ranks[1]["target_kl"] == [1, 1]


def test_train_from_python_joins_the_callers_group_and_stops_where_one_rank_asks(two_ranks):
    assert two_ranks[0]["api_global_step"] == two_ranks[1]["api_global_step"] == 2 * 128
    run = Path(two_ranks[0]["api_run"])
    assert len(checkpoint.load(checkpoint.latest(run))["ranks"]) == 2


def test_a_checkpoint_of_another_rank_count_is_refused():
    payload = {"update": 3, "ranks": [{"rng": 0}, {"rng": 1}]}
    assert distributed.rank_payload(payload, distributed.Context(1, 2))["rng"] == 1
    with pytest.raises(UserError, match="written by 2 rank.*has 1.*torchrun with 2"):
        distributed.rank_payload(payload, distributed.Context())
    with pytest.raises(UserError, match="written by 1 rank.*has 2.*without torchrun"):
        distributed.rank_payload({"update": 3}, distributed.Context(0, 2))


def test_a_failing_rank_names_the_ranks_that_entered_fewer_collectives(monkeypatch):
    """Rank 0 of 4 fails in its 7th collective: rank 1 has entered 5 and rank 3 none (no record), so both are
    behind; rank 2 had entered the 7th too. A store that cannot be read is said so."""
    store = dist.PrefixStore(distributed.PROGRESS_PREFIX, dist.HashStore())
    store.set("1", "5 update 3, rollout")
    store.set("2", "7 update 3, learning, in the gradient all-reduce of minibatch 2")
    monkeypatch.setattr(dist, "get_world_size", lambda: 4)
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    monkeypatch.setattr(distributed, "_progress", distributed._Progress(store=store))
    assert distributed._behind(7) == "rank(s) behind it: 1 (at update 3, rollout), 3 (never joined)"
    store.set("3", "7 update 3, learning, in the gradient all-reduce of minibatch 2")
    assert distributed._behind(6) == "rank(s) behind it: 1 (at update 3, rollout)"
    assert distributed._behind(5).startswith("every rank had come as far")

    class Gone:
        def clone(self):
            raise dist.DistStoreError("connection reset")

    monkeypatch.setattr(distributed, "_progress", distributed._Progress(store=Gone()))
    assert distributed._behind(7).startswith("the ranks' progress could not be read")


# --- training runs under torchrun -------------------------------------------------------------------------------
SMALL = ["--num-envs", "4", "--num-steps", "64", "--num-minibatches", "2", "--update-epochs", "2"]


TRAIN = ("-m", "proximal", "train")


def launch(*args: str, launcher: tuple[str, ...] = (), program: tuple[str, ...] = TRAIN) -> subprocess.Popen:
    """One torchrun (2 ranks on this machine unless ``launcher`` says otherwise) running ``program`` with
    ``args``; its output is stdout and stderr together."""
    launcher = launcher or ("--nproc_per_node=2", f"--master_port={free_port()}")
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *launcher, *program, *args],
                            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    """(exit code, output) of a launched torchrun, which must end within ``timeout`` seconds."""
    try:
        out = proc.communicate(timeout=timeout)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, out


def torchrun(*args: str, wait: bool = True, timeout: float = 120):
    proc = launch(*args)
    if not wait:
        return proc
    code, out = finish(proc, timeout)
    assert code == 0, out
    return out


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_rank_zero_writes_every_ranks_episodes_and_counts_every_ranks_steps(tmp_path):
    run = tmp_path / "run"
    out = torchrun(*SMALL, "--total-steps", "512", "--run-dir", str(run))
    assert out.count("run directory:") == 1, "rank 1 prints nothing"
    assert "global batch 512 (2 x 256)" in out
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith("events")) == [
        "checkpoints", "config.json", "episodes.csv", "lock", "run.json", "updates.csv"]
    assert len(list(run.glob("events*"))) == 1
    assert [int(r["global_step"]) for r in csv_rows(run / "updates.csv")] == [512, 1024]
    # rank 0's own completed episodes span at most its 512 steps: more steps than that came from rank 1
    lengths = [int(r["episodic_length"]) for r in csv_rows(run / "episodes.csv")]
    assert 512 < sum(lengths) <= 1024
    payload = checkpoint.load(checkpoint.latest(run))
    assert len(payload["ranks"]) == 2 and payload["global_step"] == 1024
    assert not torch.equal(payload["ranks"][0]["obs"], payload["ranks"][1]["obs"]), "seeds differ per rank"


def test_two_rank_lstm_run_resumed_equals_the_uninterrupted_run(tmp_path):
    """A recurrent policy with the parameter check every update (any difference between the ranks stops the run);
    the run resumed from its update-2 checkpoint ends bit for bit as the uninterrupted one, every rank's part
    included; a single process refuses the 2-rank checkpoint."""
    lstm = ["--env", "proximal/CartPoleNoVelocity-v1", "--lstm-size", "16", "--dist-check-every", "1",
            "--checkpoint-every", "2", "--total-steps", "1024", "--quiet"]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    torchrun(*SMALL, *lstm, "--run-dir", str(full))
    resumed.mkdir()
    (resumed / "checkpoints").mkdir()
    os.link(checkpoint.checkpoint_path(full, 2), checkpoint.checkpoint_path(resumed, 2))
    torchrun("--resume", str(resumed), "--quiet")
    a, b = (checkpoint.load(checkpoint.checkpoint_path(run, 4)) for run in (full, resumed))
    assert all(torch.equal(a["policy"][k], b["policy"][k]) for k in a["policy"])
    for rank in range(2):
        for key in ("obs", "rng", "generator"):
            assert str(a["ranks"][rank][key]) == str(b["ranks"][rank][key]), (rank, key)
    assert a["ranks"][0]["carry"].keys() == b["ranks"][0]["carry"].keys()
    assert all(torch.equal(x, y) for x, y in zip(a["ranks"][1]["carry"].values(), b["ranks"][1]["carry"].values())
               if isinstance(x, torch.Tensor))
    alone = subprocess.run([sys.executable, "-m", "proximal", "train", "--resume", str(full)], capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert alone.returncode == 2 and "written by 2 rank(s)" in alone.stderr


def _rank_pid(launcher: int, rank: int) -> int | None:
    for task in Path(f"/proc/{launcher}/task").iterdir():
        for child in (task / "children").read_text().split():
            environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            if f"RANK={rank}".encode() in environ:
                return int(child)
    return None


def _alive(pid: int) -> bool:
    try:  # a zombie has ended: it waits only for its parent to collect its exit code
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGSTOP, signal.SIGKILL], ids=["hangs", "dies"])
def test_a_rank_that_hangs_or_dies_stops_the_other_within_the_timeout(tmp_path, sig):
    """Rank 1 stopped (SIGSTOP: alive, never answering): rank 0 ends with the one-line error within
    dist_timeout plus slack, instead of waiting for ever. Rank 1 killed: torchrun ends rank 0 and names rank 1."""
    run = tmp_path / "run"
    proc = torchrun(*SMALL, "--total-steps", "10000000", "--dist-timeout", "4", "--quiet", "--run-dir", str(run),
                    wait=False)
    try:
        deadline = time.monotonic() + 60
        while not (run / "updates.csv").exists() or len(csv_rows(run / "updates.csv")) < 2:
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[0]
            time.sleep(0.2)
        rank0, rank1 = _rank_pid(proc.pid, 0), _rank_pid(proc.pid, 1)
        os.kill(rank1, sig)
        signalled = time.monotonic()
        while _alive(rank0):
            assert time.monotonic() - signalled < 30, "rank 0 still waits"
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):  # the stopped rank: torchrun would wait for it
            os.kill(rank1, signal.SIGKILL)
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    if sig == signal.SIGSTOP:
        assert "rank 0:" in out and "dist_timeout (4 s)" in out, out[-3000:]
    else:
        assert re.search(r"rank\s*: 1 \(local_rank: 1\)\s+exitcode\s*: -9", out), out[-3000:]


# rank 0's line when rank 1 stalls in update 2 (tests/stall_rank.py): at the start of its rollout, where the barrier
# after the rollouts also names it, or between two minibatches, where only the progress records can
STALLS = {
    "rollout": "rank 0: waiting for every rank to finish its rollout failed (update 2, rollout); rank(s) behind it: "
               "1 (at update 2, rollout); a rank stopped, or did not answer within dist_timeout (5 s)",
    "learning": "rank 0: the gradient all-reduce of minibatch 2 failed (update 2, learning); rank(s) behind it: 1 (at "
                "update 2, learning, after the gradient all-reduce of minibatch 1); a rank stopped, or did not answer "
                "within dist_timeout (5 s)",
}


@pytest.mark.parametrize("where", STALLS)
def test_a_rank_that_hangs_is_named_with_where_it_stopped(tmp_path, where):
    """Rank 1 sleeps far longer than dist_timeout: rank 0 stops within the timeout plus the start-up, and its line
    names rank 1 and the phase it last reported."""
    started = time.monotonic()
    code, out = finish(launch(where, *SMALL, "--total-steps", "100000", "--dist-timeout", "5", "--quiet",
                              "--run-dir", str(tmp_path / "run"), program=(str(ROOT / "tests" / "stall_rank.py"),)),
                       timeout=90)
    assert code != 0
    assert STALLS[where] in out, out[-3000:]
    assert time.monotonic() - started < 60


@pytest.fixture(scope="module")
def one_machine_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("one_machine") / "run"
    torchrun(*SMALL, "--total-steps", "768", "--quiet", "--run-dir", str(run))
    return run


def rendezvous(kind: str, node: int, port: int) -> tuple[str, ...]:
    """torchrun's options for node ``node`` of 2, one rank each, meeting at 127.0.0.1:``port``."""
    if kind == "c10d":  # the nodes are numbered by the rendezvous itself
        return ("--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
                f"--rdzv-id=two-machines-{port}")
    return ("--nnodes=2", "--nproc_per_node=1", f"--node_rank={node}", "--master_addr=127.0.0.1",
            f"--master_port={port}")


@pytest.mark.parametrize("kind", ["c10d", "static"])
def test_two_machines_of_one_rank_train_as_one_machine_of_two(tmp_path, one_machine_run, kind):
    """Two torchruns of one rank each (--nnodes=2), as on two machines, both on localhost here: the run ends
    with the parameters, and each rank's own state, of the 2-rank run on one machine, and one process alone wrote
    the run directory and printed."""
    run, port = tmp_path / "run", free_port()
    nodes = [launch(*SMALL, "--total-steps", "768", "--run-dir", str(run), launcher=rendezvous(kind, node, port))
             for node in range(2)]
    (code0, out0), (code1, out1) = (finish(proc) for proc in nodes)
    assert code0 == code1 == 0, out0 + out1
    assert (out0 + out1).count("run directory:") == 1
    assert "2 ranks (gloo): global batch 512 (2 x 256)" in out0 + out1
    assert len(list(run.glob("events*"))) == 1
    assert [int(r["global_step"]) for r in csv_rows(run / "updates.csv")] == [512, 1024, 1536]
    got, expected = (checkpoint.load(checkpoint.checkpoint_path(r, 3)) for r in (run, one_machine_run))
    assert all(torch.equal(got["policy"][k], expected["policy"][k]) for k in expected["policy"])
    for rank in range(2):
        for key in ("obs", "rng", "generator"):
            assert str(got["ranks"][rank][key]) == str(expected["ranks"][rank][key]), (rank, key)


def test_the_resume_hint_under_torchrun_names_the_same_ranks(monkeypatch):
    # a resume with another number of ranks is refused, so the command the messages give must keep them
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert distributed.resume_command("runs/x") == "torchrun --nproc_per_node=2 -m proximal train --resume runs/x"
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert distributed.resume_command("runs/x").startswith("torchrun --nnodes=4 --nproc_per_node=2 (and this")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name)
    assert distributed.resume_command("runs/x") == "proximal train --resume runs/x"


def _gather_worker(rank: int, port: int, out: str) -> None:
    import torch

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))
    cfg = preset("classic")
    # each rank stepped from global step 100 to its own step 110; its episodes ended at these own steps
    episodes = [(108, 1.0, 8)] if rank == 0 else [(102, 2.0, 2), (110, 3.0, 10)]
    results = {"rollout": distributed.gather_rollout(100, 110, episodes, cfg)}
    payload = {k: f"{k}{rank}" for k in (*distributed.RANK_KEYS, *distributed.LEARNER_KEYS)} | {"update": 5}
    results["averaged"] = distributed.gather_checkpoint(payload, cfg)
    cfg.details["aux.parallel_gradients"] = False
    results["independent"] = distributed.gather_checkpoint(payload, cfg)
    torch.save(results, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_rank_zero_gathers_episodes_at_global_steps_in_order_and_each_ranks_checkpoint_part():
    with tempfile.TemporaryDirectory() as out:
        zero, one = spawn_two_ranks(_gather_worker, Path(out))
    # own step s of a rollout that began at global step 100 is global step 100 + (s - 100) * 2 ranks
    assert zero["rollout"] == (120, [(104, 2.0, 2), (116, 1.0, 8), (120, 3.0, 10)])
    assert one["rollout"] == (120, [])
    assert one["averaged"] is None and one["independent"] is None  # rank 0 alone writes
    averaged, independent = zero["averaged"], zero["independent"]
    # averaged gradients keep one policy: rank 0's; independent learners keep each rank's own
    assert [part["rng"] for part in averaged["ranks"]] == ["rng0", "rng1"] and "policy" not in averaged["ranks"][1]
    assert distributed.rank_payload(averaged, distributed.Context(1, 2))["policy"] == "policy0"
    assert [part["policy"] for part in independent["ranks"]] == ["policy0", "policy1"]
    resumed = distributed.rank_payload(independent, distributed.Context(1, 2))
    assert (resumed["policy"], resumed["optimizer"], resumed["rng"], resumed["update"]) == \
        ("policy1", "optimizer1", "rng1", 5)
