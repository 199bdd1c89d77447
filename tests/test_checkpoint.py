"""Checkpoints: atomic writes, weights-only loads, plain contents, the newest file of a run, what they hold."""

from __future__ import annotations

import errno
import hashlib
import io
import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from proximal import checkpoint
from proximal.config import preset
from proximal.envs import make_envs
from proximal.errors import UserError
from proximal.spaces import space_from_dict, space_to_dict
from proximal.trainer import train

# 8 updates of 4 envs x 64 steps; a checkpoint every 3 updates gives files at updates 3, 6 and the final 8
UPDATES, BATCH = 8, 256


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = preset("classic")
    cfg.total_steps, cfg.num_envs, cfg.num_steps, cfg.checkpoint_every = UPDATES * BATCH, 4, 64, 3
    cfg.device = "cpu"
    run_dir = tmp_path_factory.mktemp("ckpt_run")
    threads = torch.get_num_threads()  # the trainer sets torch's global thread count; other tests keep theirs
    try:
        state = train(cfg, run_dir, quiet=True)
    finally:
        torch.set_num_threads(threads)
    return cfg, run_dir, state


def test_checkpoint_every_n_updates_and_final(run):
    _, run_dir, _ = run
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["update_0000003.pt", "update_0000006.pt", "update_0000008.pt"]
    for update in (3, 6, 8):
        payload = checkpoint.load(checkpoint.checkpoint_path(run_dir, update))
        assert payload["update"] == update
        assert payload["global_step"] == update * BATCH


def test_checkpoint_holds_the_trainer_state(run):
    cfg, run_dir, state = run
    payload = checkpoint.load(checkpoint.latest(run_dir))
    assert set(checkpoint.KEYS) <= set(payload)
    assert payload["format"] == checkpoint.FORMAT
    assert payload["config"] == cfg.to_dict()
    assert payload["update"] == UPDATES and payload["global_step"] == UPDATES * BATCH

    weights = state.policy.state_dict()
    assert payload["policy"].keys() == weights.keys()
    for name, tensor in weights.items():
        assert torch.equal(payload["policy"][name], tensor), name

    # Adam's moments for every parameter, and the annealed learning rate of the last update (lr / U)
    optimizer = payload["optimizer"]
    assert len(optimizer["state"]) == len(weights)
    assert all({"exp_avg", "exp_avg_sq", "step"} <= set(s) for s in optimizer["state"].values())
    assert optimizer["param_groups"][0]["lr"] == pytest.approx(cfg.learning_rate / UPDATES)

    assert torch.equal(payload["generator"], state.generator.get_state())
    assert payload["rng"] == state.rng.bit_generator.state
    assert torch.equal(payload["obs"], torch.as_tensor(state.obs))
    assert torch.equal(payload["carry"]["start"], torch.as_tensor(state.carry.start))
    assert payload["obs"].shape == (cfg.num_envs, 4)
    assert payload["carry"]["mask"] is None and payload["carry"]["state"] is None, "nothing else to carry"


def test_env_state_is_captured_at_the_same_moment_as_the_carried_obs(run):
    cfg, run_dir, _ = run
    payload = checkpoint.load(checkpoint.latest(run_dir))
    assert payload["env"] is not None, "CartPole's state is plain Python; a resumed run must continue it exactly"
    assert len(payload["env"]["envs"]) == cfg.num_envs
    # CartPole's physical state is the observation the next step starts from: restoring both must agree
    for i, env in enumerate(payload["env"]["envs"]):
        kind, physical = env["layers"][-1]["state"]
        assert kind == "array"
        torch.testing.assert_close(physical.float(), payload["obs"][i])

    envs = make_envs(cfg.env_id, cfg.num_envs)
    try:
        envs.reset(seed=123)
        envs.set_state(payload["env"])
        restored = [torch.as_tensor(e.unwrapped.state, dtype=torch.float32) for e in envs.groups.call(list)]
    finally:
        envs.close()
    torch.testing.assert_close(torch.stack(restored), payload["obs"])


def _non_plain(value, where="checkpoint"):
    """Paths inside ``value`` to anything that is not a tensor or a plain Python value."""
    if isinstance(value, torch.Tensor) or value is None or type(value) in (bool, int, float, str):
        return []
    if isinstance(value, dict):
        bad = [f"{where} key {k!r}" for k in value if type(k) not in (str, int)]
        return bad + [p for k, v in value.items() for p in _non_plain(v, f"{where}[{k!r}]")]
    if type(value) in (list, tuple):
        return [p for i, v in enumerate(value) for p in _non_plain(v, f"{where}[{i}]")]
    return [f"{where}: {type(value).__module__}.{type(value).__name__}"]


def write_record(payload, path) -> None:
    """A format-3 file around ``payload`` as it is, with a correct hash: what ``checkpoint.save`` writes, for
    payloads that it would not be given."""
    body = io.BytesIO()
    torch.save(payload, body)
    data = body.getvalue()
    torch.save({"format": checkpoint.FORMAT, "sha256": hashlib.sha256(data).hexdigest(),
                "payload": torch.frombuffer(bytearray(data), dtype=torch.uint8)}, path)


def test_written_files_get_the_permissions_of_an_ordinary_new_file(tmp_path):
    # written through a temporary file renamed over the real one, which must not be owner-only as mkstemp's are
    umask = os.umask(0o022)
    try:
        checkpoint.save({"x": torch.zeros(1)}, tmp_path / "a.pt")
        os.umask(0o002)
        checkpoint.save({"x": torch.zeros(1)}, tmp_path / "b.pt")
    finally:
        os.umask(umask)
    assert (tmp_path / "a.pt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.pt").stat().st_mode & 0o777 == 0o664


def test_checkpoint_holds_only_tensors_and_plain_values(run):
    _, run_dir, _ = run
    record = torch.load(checkpoint.latest(run_dir), weights_only=True)
    assert set(record) == {"format", "sha256", "payload"}
    # unrestricted load, so a numpy value would show up here by name instead of as a refused file
    payload = torch.load(io.BytesIO(record["payload"].numpy().tobytes()), weights_only=False)
    assert _non_plain(payload) == []


def test_non_plain_walk_finds_numpy_values():
    import numpy as np

    assert _non_plain({"a": [1, {"b": np.float32(1.0)}], "c": torch.zeros(2)}) == ["checkpoint['a'][1]['b']: "
                                                                                    "numpy.float32"]


def test_latest_picks_highest_update_number(tmp_path):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    # "update_9" sorts after "update_10" as text; a stray temporary file and other files are no checkpoints
    for name, update in (("update_9.pt", 9), ("update_10.pt", 10), ("update_0000002.pt", 2)):
        checkpoint.save({k: 0 for k in checkpoint.KEYS} | {"update": update}, ckpts / name)
    for name in (".tmp_abc.pt", "update_99.pt.bak", "notes.txt"):
        (ckpts / name).write_bytes(b"")
    assert checkpoint.latest(tmp_path) == ckpts / "update_10.pt"


def test_latest_refuses_a_checkpoint_whose_name_and_update_disagree(tmp_path):
    # a renamed file must not decide where a run continues
    checkpoint.save({k: 0 for k in checkpoint.KEYS} | {"update": 3}, checkpoint.checkpoint_path(tmp_path, 40))
    with pytest.raises(UserError, match="holds update 3, not the 40 of its name"):
        checkpoint.latest(tmp_path)


def test_latest_of_a_file_is_the_file_and_errors_name_the_path(tmp_path):
    f = tmp_path / "some.pt"
    f.write_bytes(b"")
    assert checkpoint.latest(f) == f
    with pytest.raises(UserError, match="is not a run directory"):  # a folder that holds a file, not a run
        checkpoint.latest(tmp_path)
    (tmp_path / "run.json").write_text("{}")  # a run killed before its first checkpoint
    with pytest.raises(UserError, match="no finished checkpoint"):
        checkpoint.latest(tmp_path)
    with pytest.raises(UserError, match="missing"):
        checkpoint.latest(tmp_path / "missing")


def test_save_then_load_round_trip(tmp_path):
    payload = {k: i for i, k in enumerate(checkpoint.KEYS)} | {"policy": {"w": torch.arange(3.0)}}
    path = tmp_path / "deep" / "er" / "update_0000001.pt"
    checkpoint.save(payload, path)
    loaded = checkpoint.load(path)
    assert torch.equal(loaded.pop("policy")["w"], torch.arange(3.0))
    assert loaded == {"format": checkpoint.FORMAT, **{k: v for k, v in payload.items() if k != "policy"}}
    assert os.listdir(path.parent) == [path.name]


def test_failed_save_leaves_previous_checkpoint_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "update_0000001.pt"
    old = {k: 0 for k in checkpoint.KEYS} | {"policy": {"w": torch.ones(4)}}
    checkpoint.save(old, path)
    before = path.read_bytes()

    def disk_full(fd):  # the temporary file is written, then the disk turns out to be full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError) as err:
        checkpoint.save({k: 1 for k in checkpoint.KEYS}, path)
    monkeypatch.undo()
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)  # the trainer names the path

    assert path.read_bytes() == before
    assert torch.equal(checkpoint.load(path)["policy"]["w"], torch.ones(4))
    assert os.listdir(tmp_path) == [path.name]


LOADED_UNSAFELY = []


def _record_unsafe_load():
    LOADED_UNSAFELY.append(True)
    return "pwned"


class CodeOnLoad:
    """Unpickling this calls a function: what an untrusted checkpoint could do with a full pickle load."""

    def __reduce__(self):
        return (_record_unsafe_load, ())


def test_load_refuses_pickled_objects_without_running_them(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, **{k: 0 for k in checkpoint.KEYS}, "extra": CodeOnLoad()}, path)
    LOADED_UNSAFELY.clear()
    with pytest.raises(UserError, match="refused: the file holds pickled code") as err:
        checkpoint.load(path)
    assert "_record_unsafe_load" in str(err.value)  # the refused object is named
    assert LOADED_UNSAFELY == []
    # inside a well-formed record, the payload gets the same refusal
    write_record({"format": checkpoint.FORMAT, **{k: 0 for k in checkpoint.KEYS}, "extra": CodeOnLoad()}, path)
    with pytest.raises(UserError, match="refused: the file holds pickled code, which proximal never loads"):
        checkpoint.load(path)
    assert LOADED_UNSAFELY == []


def test_load_refuses_numpy_values(tmp_path):
    import numpy as np

    path = tmp_path / "numpy.pt"
    torch.save({"format": checkpoint.FORMAT, **{k: 0 for k in checkpoint.KEYS}, "update": np.int64(3)}, path)
    with pytest.raises(UserError, match="numpy"):
        checkpoint.load(path)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_load_of_damaged_file_is_a_user_error(run, tmp_path, damage):
    _, run_dir, _ = run
    good = checkpoint.latest(run_dir).read_bytes()
    content = {"garbage": bytes(range(256)) * 20, "truncated": good[: len(good) // 2], "empty": b""}[damage]
    path = tmp_path / "update_0000001.pt"
    path.write_bytes(content)
    with pytest.raises(UserError, match="corrupt") as err:
        checkpoint.load(path)
    assert str(path) in str(err.value)


def test_load_refuses_files_that_are_not_proximal_checkpoints(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(UserError, match="does not exist"):
        checkpoint.load(missing)

    other = tmp_path / "list.pt"
    torch.save([1, 2, 3], other)
    with pytest.raises(UserError, match="not a proximal checkpoint"):
        checkpoint.load(other)

    for version in (1, checkpoint.FORMAT + 1):
        other_format = tmp_path / f"format{version}.pt"
        torch.save({"format": version, **{k: 0 for k in checkpoint.KEYS}}, other_format)
        with pytest.raises(UserError, match=f"has format {version}, and this version of proximal reads formats 2 "
                                            f"and {checkpoint.FORMAT}"):
            checkpoint.load(other_format)

    unwrapped = tmp_path / "unwrapped.pt"
    torch.save({"format": checkpoint.FORMAT, **{k: 0 for k in checkpoint.KEYS}}, unwrapped)
    with pytest.raises(UserError, match="not a proximal checkpoint"):
        checkpoint.load(unwrapped)

    incomplete = tmp_path / "incomplete.pt"
    write_record({"format": checkpoint.FORMAT, "config": {}}, incomplete)
    with pytest.raises(UserError, match="lacks .*policy"):
        checkpoint.load(incomplete)


FIXTURE = Path(__file__).parent / "fixtures" / "format2_cartpole.pt"


def test_a_format_2_checkpoint_is_migrated_and_evaluates():
    # written by proximal at format 2 (CartPole, hidden sizes 8,8, seed 3, 2 updates): every later version must
    # keep reading it
    payload = checkpoint.load(FIXTURE)
    assert payload["format"] == checkpoint.FORMAT and payload["run_id"] is None
    assert payload["update"] == 2 and payload["config"]["hidden_sizes"] == [8, 8]
    from proximal.evaluate import evaluate, load_policy

    policy, cfg, _ = load_policy(FIXTURE)
    # the mean return of 3 deterministic episodes (seed 0) that proximal printed for it at format 2
    assert evaluate(policy, cfg.env_id, 3, deterministic=True).mean() == pytest.approx(40.67, abs=0.01)


def test_a_flipped_byte_is_refused_by_the_hash(run, tmp_path):
    _, run_dir, _ = run
    data = bytearray(checkpoint.latest(run_dir).read_bytes())
    body = torch.load(checkpoint.latest(run_dir), weights_only=True)["payload"].numpy().tobytes()
    at = data.find(body) + len(body) // 2  # a byte inside the payload, as a disk or a copy could flip
    data[at] ^= 0x01
    path = tmp_path / "update_0000008.pt"
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="is damaged: its contents do not match the SHA-256"):
        checkpoint.load(path)


@pytest.mark.parametrize("bit", [0x01, 0x04])
def test_every_flipped_bit_is_read_alike_or_one_message(tmp_path, bit, recwarn):
    """A disk or a copy flips a bit anywhere in the file: reading it gives the same payload (the bit lies where
    nothing is read: zip padding, a header field) or one UserError, never another exception or another payload
    (the format field of today's record flipped to 2 once passed for a format-2 payload)."""
    payload = {"policy": {"w": torch.arange(6, dtype=torch.float32)}, "config": {"seed": 1}, "update": 3}
    path, damaged = tmp_path / "update_0000003.pt", tmp_path / "damaged.pt"
    checkpoint.save(payload, path)
    data = path.read_bytes()
    outcomes = set()
    for at in range(len(data)):
        flipped = bytearray(data)
        flipped[at] ^= bit
        damaged.write_bytes(bytes(flipped))
        try:
            read = checkpoint.read(damaged)
        except UserError:
            outcomes.add("refused")
            continue
        assert read["update"] == 3 and torch.equal(read["policy"]["w"], payload["policy"]["w"]), at
        outcomes.add("read alike")
    assert outcomes == {"refused", "read alike"}
    assert not [str(w.message) for w in recwarn], "nothing printed beside the one message"


@pytest.mark.parametrize("space", [
    gym.spaces.Box(np.array([-1.0, -np.inf], np.float32), np.array([2.0, np.inf], np.float32)),
    gym.spaces.Box(0, 255, (4, 84, 84), np.uint8),
    gym.spaces.Discrete(5, start=-2),
    gym.spaces.MultiDiscrete(np.array([[3, 4], [2, 2]]), start=np.array([[0, 1], [1, 0]])),
])
def test_spaces_round_trip_through_a_weights_only_checkpoint(tmp_path, space):
    path = tmp_path / "spaces.pt"
    torch.save({"space": space_to_dict(space)}, path)
    restored = space_from_dict(torch.load(path, weights_only=True)["space"])
    assert restored == space and restored.dtype == space.dtype


def test_eval_rebuilds_the_policy_from_the_checkpoints_spaces_without_an_env(run, monkeypatch):
    _, run_dir, state = run
    import proximal.evaluate as evaluate_mod

    monkeypatch.setattr(evaluate_mod, "make_envs", None)  # loading must not need the env
    policy, _, _ = evaluate_mod.load_policy(run_dir)
    for name, tensor in state.policy.state_dict().items():
        assert torch.equal(policy.state_dict()[name], tensor), name
