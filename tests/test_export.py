"""ONNX export (issue 12, item 4): the file, run in onnxruntime, agrees with the torch agent."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import proximal
from proximal.export import PolicyGraph
from test_api import make_shifted_discrete, make_shifted_multidiscrete

ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(total_steps=64, num_envs=2, num_steps=16, num_minibatches=2, update_epochs=1, device="cpu")
RUNS = {
    "discrete": ("classic", "CartPole-v1", {}),
    # normalization inside the graph, a mean far outside the bounds below: the clip inside the graph
    "box": ("classic", "Pendulum-v1", dict(on=["cont.obs_norm", "cont.obs_clip"])),
    "squashed": ("classic", "Pendulum-v1", dict(squash_actions=True)),
    "image": ("atari", "BreakoutNoFrameskip-v4", dict(total_steps=32, env_workers=1, torch_threads=1)),
    "multidiscrete": ("classic", "proximal/MaskedMultiDiscrete-v0", dict(off=["aux.action_masking"])),
    # spaces whose values start at 1, -1 or 5: the graph adds the start as the agent does
    "shifted-discrete": ("classic", make_shifted_discrete, dict(env_workers=1)),
    "shifted-multidiscrete": ("classic", make_shifted_multidiscrete, dict(env_workers=1)),
}


def observations(agent, n=100) -> np.ndarray:
    space, rng = agent.observation_space, np.random.default_rng(0)
    if space.dtype == np.uint8:
        return rng.integers(0, 256, (n, *space.shape), dtype=np.uint8)
    return (rng.normal(size=(n, *space.shape)) * 3).astype(np.float32)


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("kind", list(RUNS))
def test_the_onnx_graph_gives_the_agents_action_value_and_parameters(kind, tmp_path):
    name, env, extra = RUNS[kind]
    run = proximal.train(name, env=env, run_dir=tmp_path / "run", quiet=True, **{**TINY, **extra})
    agent = proximal.load(run.run_dir)
    if kind == "box":
        with torch.no_grad():
            agent.policy.policy_head.mean.bias[0] = 2.0  # at the bound: beyond it for some observations
    path = proximal.export_onnx(agent, tmp_path / "policy.onnx")
    obs = observations(agent)
    outputs = session(path).run(None, {"obs": obs})
    action, _ = agent.act(obs, deterministic=True)
    assert outputs[0].shape == action.shape and outputs[0].dtype == action.dtype
    assert np.abs(outputs[0] - action).max() <= 1e-5
    assert all(agent.action_space.contains(a) for a in outputs[0])
    assert np.abs(outputs[1] - agent.value(obs)).max() <= 1e-5
    with torch.no_grad():
        expected = PolicyGraph(agent)(torch.from_numpy(obs))
    for got, want in zip(outputs[2:], expected[2:]):
        assert np.abs(got - want.detach().numpy()).max() <= 1e-5
    if kind == "box":
        assert (action == 2.0).any() and (action < 2.0).any()  # some clipped, some not
        assert agent.normalizer.obs_rms.count > 1


def test_a_recurrent_graph_carries_the_state_as_input_and_output(tmp_path):
    run = proximal.train(env="CartPole-v1", run_dir=tmp_path / "run", quiet=True, lstm_size=8,
                         **{**TINY, "num_minibatches": 1})
    agent = proximal.load(run.run_dir)
    path = proximal.export_onnx(agent, tmp_path / "policy.onnx")
    graph = session(path)
    rng = np.random.default_rng(1)
    state = agent_state = np.zeros((2, 100, 8), np.float32)
    for t in range(4):
        obs = observations(agent)
        start = (rng.random(100) < 0.3).astype(np.float32)
        action, value, logits, state = graph.run(None, {"obs": obs, "state": state, "start": start})
        assert np.abs(value - agent.value(obs, agent_state, start=start)).max() <= 1e-5
        expected, agent_state = agent.act(obs, agent_state, start=start, deterministic=True)
        assert np.array_equal(action, expected)
        assert np.abs(state - agent_state).max() <= 1e-5


def test_export_refuses_a_masked_policy_and_writes_nothing(tmp_path):
    run = proximal.train(env="proximal/MaskedMultiDiscrete-v0", run_dir=tmp_path / "run", quiet=True, **TINY)
    with pytest.raises(proximal.UserError, match="trained with action masks, which the ONNX export does not"):
        proximal.export_onnx(run.run_dir, tmp_path / "policy.onnx")
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".tmp_*"))


def test_an_output_path_that_cannot_hold_the_file_is_one_message_and_writes_nothing(tmp_path, monkeypatch):
    agent = proximal.load(proximal.train(env="CartPole-v1", run_dir=tmp_path / "run", quiet=True, **TINY).run_dir)
    (tmp_path / "notes").write_text("a file")
    with pytest.raises(proximal.UserError, match=r"cannot write '.*notes/sub/policy.onnx': '.*notes' is a file, not "
                                                 "a directory"):
        proximal.export_onnx(agent, tmp_path / "notes" / "sub" / "policy.onnx")
    (tmp_path / "out").mkdir()
    # an existing directory, and one named with a trailing slash, which Path would drop
    for directory in (tmp_path / "out", f"{tmp_path / 'new'}/"):
        with pytest.raises(proximal.UserError, match=r"is a directory: give the file to write, e.g. .*/policy.onnx"):
            proximal.export_onnx(agent, directory)
    assert not (tmp_path / "new").exists() and not list((tmp_path / "out").iterdir())

    def refuse(graph, inputs, path, **kwargs):  # as in a directory without write permission (tests may run as root)
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(torch.onnx, "export", refuse)
    with pytest.raises(proximal.UserError, match=r"cannot write '.*locked/policy.onnx' \(Permission denied\); choose "
                                                 "a path you can write"):
        proximal.export_onnx(agent, tmp_path / "locked" / "policy.onnx")
    assert not (tmp_path / "locked").exists()  # the directory made for it is gone too


def test_the_export_command(tmp_path):
    proximal.train(env="CartPole-v1", run_dir=tmp_path / "run", quiet=True, **TINY)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "proximal", "export", "run", "-o", "out/policy.onnx"],
                          cwd=tmp_path, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "wrote out/policy.onnx: inputs obs; outputs action, value, logits"
    assert session(tmp_path / "out" / "policy.onnx").run(None, {"obs": np.zeros((3, 4), np.float32)})[0].shape == (3,)
    into_directory = subprocess.run([sys.executable, "-m", "proximal", "export", "run", "-o", "out"],
                                    cwd=tmp_path, capture_output=True, text=True, env=env)
    assert into_directory.returncode == 2 and into_directory.stderr == (
        "proximal export: error: 'out' is a directory: give the file to write, e.g. out/policy.onnx\n")
    missing = subprocess.run([sys.executable, "-m", "proximal", "export", "nothing", "-o", "x.onnx"],
                             cwd=tmp_path, capture_output=True, text=True, env=env)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.startswith("proximal export: error: 'nothing' is neither a run directory")
    assert not (tmp_path / "x.onnx").exists()
