"""precision: bf16 autocast in the torch paths and its emulation in the numpy fast paths, fp32 everywhere else;
the ratio-is-one check and exact resume in bf16; which precision auto picks and what bf16 refuses."""

import json
import subprocess
import sys
from contextlib import nullcontext
from dataclasses import replace
from functools import partial

import numpy as np
import pytest
import torch

import proximal.precision as precision_mod
from proximal import checkpoint
from proximal.actors import TorchActor
from proximal.config import preset
from proximal.envs import make_envs
from proximal.errors import UserError
from proximal.fast_paths import make_actor, make_update, resolve_precision
from proximal.numpy_actor import NumpyMLPActor
from proximal.numpy_ops import column_sum, matmul, round_bf16
from proximal.numpy_update import NumpyMLPUpdate
from proximal.precision import autocast, resolve
from proximal.rollout import collect_rollout
from proximal.trainer import new_state, train
from proximal.update import minibatch, ppo_update
from ratio_check import assert_ratio_is_one
from resume_check import assert_resume_is_exact
from test_numpy_update import BOX, DISCRETE
from test_numpy_update import train as train_updates

CPU = torch.device("cpu")


@pytest.fixture
def native(monkeypatch):
    """bf16 allowed on this CPU whatever it has: torch then runs bf16 on its emulated kernels where the CPU has
    no bf16 units (slower, the same arithmetic)."""
    monkeypatch.setattr(precision_mod, "native_bf16", lambda device: "a test CPU")


# ------------------------------------------------------------------------------------- the numpy emulation

def test_round_bf16_is_torchs_cast_to_bf16_and_back():
    rng = np.random.default_rng(0)
    values = (rng.normal(size=20000) * 10.0 ** rng.integers(-30, 30, 20000)).astype(np.float32)
    ties = (np.arange(1 << 16, dtype=np.uint32) | np.uint32(0x3F800000)).view(np.float32)  # every low half of 1.x
    special = np.array([0.0, -0.0, np.inf, -np.inf, 3.4e38, -3.4e38, 1e-40], np.float32)
    for x in (values, ties, special):
        expected = torch.from_numpy(x).bfloat16().float().numpy()
        assert np.array_equal(round_bf16(x).view(np.uint32), expected.view(np.uint32))
    assert np.isnan(round_bf16(np.array([np.nan], np.float32))).all()


def test_emulated_matmul_is_autocasts_linear():
    rng = np.random.default_rng(1)
    x, w, b = (rng.normal(size=s).astype(np.float32) for s in ((64, 17), (32, 17), (32,)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = torch.nn.functional.linear(*map(torch.from_numpy, (x, w, b))).float().numpy()
    emulated = matmul(x, w.T, b, bf16=True)
    assert np.array_equal(emulated, round_bf16(emulated)), "a bf16 result"
    # the same up to one bf16 rounding step where the CPU's kernel accumulates in another order
    np.testing.assert_allclose(emulated, expected, rtol=2.0**-7, atol=1e-6)
    assert np.abs(emulated - (x @ w.T + b)).max() > 1e-3, "not the fp32 result"
    assert np.array_equal(matmul(x, w.T, b), x @ w.T + b), "fp32 is plain numpy"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_nature_cnn_scales_frames_as_the_reference_formula(precision):
    """The CNN converts frames straight to bf16 under bf16 autocast and divides in place: the same features, bit
    for bit, as obs.float() / 255 handed to autocast, and with autocast off the float32 formula's."""
    from proximal.nets import NatureCNN

    torch.manual_seed(0)
    net = NatureCNN((4, 84, 84))
    obs = torch.randint(0, 256, (6, 4, 84, 84), dtype=torch.uint8)
    with torch.no_grad(), autocast(precision, torch.device("cpu")):
        reference = net.fc(net.convs(obs.contiguous(memory_format=torch.channels_last).float() / 255.0))
        features = net(obs)
    assert features.dtype == reference.dtype and torch.equal(features, reference)
    assert obs.dtype == torch.uint8  # the caller's frames are not touched


def test_emulated_matmul_does_not_depend_on_the_batch():
    # the rollout computes one row at a time what the update computes in a minibatch: the same numbers
    rng = np.random.default_rng(2)
    x, w = rng.normal(size=(256, 64)).astype(np.float32), rng.normal(size=(64, 64)).astype(np.float32)
    whole = matmul(x, w.T, bf16=True)
    rows = np.concatenate([matmul(x[i:i + 1], w.T, bf16=True) for i in range(len(x))])
    assert np.array_equal(whole, rows)


@pytest.mark.parametrize("space", [DISCRETE, BOX], ids=["discrete", "gaussian"])
def test_numpy_bf16_update_follows_torch_bf16_autocast(space):
    # the emulation rounds where autocast does: after two updates its parameters are much nearer to torch's bf16
    # ones than to its own fp32 ones
    def params(make):
        policy, _, _ = train_updates(preset("classic"), [make] * 2, space=space)
        return torch.cat([p.detach().flatten() for p in policy.parameters()])

    numpy_bf16 = params(lambda p, o: NumpyMLPUpdate(p, o, bf16=True))
    torch_bf16 = params(lambda p, o: partial(ppo_update, precision="bf16"))
    numpy_fp32 = params(lambda p, o: NumpyMLPUpdate(p, o))
    assert (numpy_bf16 - torch_bf16).abs().max() < 0.3 * (numpy_bf16 - numpy_fp32).abs().max()


# ------------------------------------------------------------------------------------- ratio is one in bf16

def collected(cfg, precision: str, rollouts: int = 2):
    envs = make_envs(cfg.env_id, cfg.num_envs, cfg=cfg)
    state = new_state(cfg, envs, CPU)
    actor = make_actor(state.policy, CPU, cfg.fast_paths, precision)
    for _ in range(rollouts):
        state.obs, state.carry, _, _ = collect_rollout(envs, actor, state.rollout, state.obs, state.carry, state.rng,
                                                       0, cfg)
    envs.close()
    return state, actor


def test_bf16_rollout_casts_the_weights_once_with_the_same_numbers(monkeypatch):
    """Every call of a bf16 rollout's torch actor runs inside one outer autocast context (whose weight cache then
    holds the bf16 weights for the whole rollout), and the rollout equals one collected with a context per call."""
    cfg = kind("cnn")
    inside = []
    real_act = TorchActor.act

    def act(self, *args):
        inside.append(torch.is_autocast_enabled("cpu"))
        return real_act(self, *args)

    monkeypatch.setattr(TorchActor, "act", act)
    cached, _ = collected(cfg, "bf16")
    assert len(inside) == 2 * cfg.num_steps and all(inside)
    monkeypatch.setattr(TorchActor, "rollout", lambda self, *args: nullcontext())
    per_call, _ = collected(cfg, "bf16")
    for name in ("obs", "actions", "logprobs", "values", "next_value"):
        assert np.array_equal(getattr(cached.rollout, name), getattr(per_call.rollout, name)), name


def kind(name: str):
    cfg = preset("atari" if name == "cnn" else "classic")
    if name == "mlp":
        cfg.fast_paths = False
    elif name == "lstm":
        cfg.lstm_size, cfg.num_envs, cfg.num_steps = 128, 4, 32
    elif name == "cnn":
        cfg.num_envs, cfg.num_steps, cfg.num_minibatches = 2, 32, 2
    elif name == "masked-multidiscrete":
        cfg.env_id, cfg.num_envs, cfg.num_steps = "proximal/MaskedMultiDiscrete-v0", 4, 32
    elif name == "squashed-gaussian":
        cfg = preset("mujoco")
        cfg.env_id, cfg.num_steps, cfg.squash_actions = "Pendulum-v1", 128, True
    return cfg


@pytest.mark.parametrize("name", ["mlp", "lstm", "cnn", "masked-multidiscrete", "squashed-gaussian"])
def test_bf16_ratio_is_one_in_the_torch_paths(name, monkeypatch):
    cfg = kind(name)
    state, actor = collected(cfg, "bf16")
    assert type(actor).__name__ == "TorchActor"
    # bf16 rounds the networks' numbers the same way in the rollout's batch of envs and in training's batch; on
    # CPUs whose kernels sum in another order for another batch size, they may differ by bf16 rounding
    batch = assert_ratio_is_one(state, cfg, monkeypatch, atol=1e-2 if name != "cnn" else 2e-2, precision="bf16")
    assert batch["logprobs"].dtype == torch.float32 and batch["values"].dtype == torch.float32
    with torch.no_grad():  # bf16 was really on: fp32 gives other log-probs for the same actions
        fp32, _, _ = state.policy.evaluate(minibatch(batch, torch.arange(len(batch["obs"])), cfg))
    assert (fp32 - batch["logprobs"]).abs().max() > 1e-4


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_bf16_ratio_is_exactly_one_in_the_numpy_paths(env_id):
    cfg = preset("classic" if env_id == "CartPole-v1" else "mujoco")
    cfg.env_id, cfg.num_steps = env_id, 64
    state, actor = collected(cfg, "bf16")
    assert isinstance(actor, NumpyMLPActor) and actor.bf16
    update = make_update(state.policy, state.optimizer, CPU, True, "bf16")
    assert isinstance(update, NumpyMLPUpdate) and update.bf16
    buf = state.rollout
    batch = buf.training_batch(buf.values, buf.values, CPU)
    n = len(batch["obs"])
    batch["advantages"], batch["returns"] = torch.randn(n), torch.randn(n)
    update(state.policy, state.optimizer, batch, cfg, 0.2, state.generator)
    seen = update.minibatch_statistics()
    assert seen[0]["approx_kl"] == 0.0 and seen[0]["old_approx_kl"] == 0.0 and seen[0]["clipfrac"] == 0.0
    assert max(abs(s["old_approx_kl"]) for s in seen[1:]) > 1e-5, "later minibatches see a moved policy"
    # the emulation computes what torch's bf16 autocast computes, to bf16 rounding
    obs = batch["obs"][:64]
    with torch.no_grad(), autocast("bf16", CPU):
        value = state.policy.value(obs)
    np.testing.assert_allclose(NumpyMLPActor(state.policy, bf16=True).value(obs.numpy(), state.carry), value.numpy(),
                               rtol=2e-2, atol=1e-2)


# ------------------------------------------------------------------------------------- exact resume in bf16

def test_bf16_cnn_run_resumed_equals_the_uninterrupted_run(native, tmp_path):
    cfg = kind("cnn")
    cfg.precision, cfg.total_steps, cfg.checkpoint_every = "bf16", 320, 0
    runs = assert_resume_is_exact(cfg, tmp_path, stop_at=2)
    assert runs.full.precision == "bf16"
    # the checkpoint is the fp32 one any run writes
    payload = checkpoint.load(checkpoint.latest(tmp_path / "full"))
    assert all(t.dtype == torch.float32 for t in payload["policy"].values())


def test_bf16_numpy_run_resumed_equals_the_uninterrupted_run(tmp_path):
    cfg = preset("classic")
    cfg.precision, cfg.total_steps = "bf16", 4 * 128 * 5
    runs = assert_resume_is_exact(cfg, tmp_path, stop_at=3)
    assert runs.full.precision == "bf16"
    fp32 = train(replace(cfg, precision="fp32"), tmp_path / "fp32", quiet=True)
    assert not torch.equal(fp32.policy.policy_head.linear.weight, runs.full.policy.policy_head.linear.weight)


# ------------------------------------------------------------------------------------- which precision runs

def test_resolve_fp32_auto_and_bf16(monkeypatch):
    assert resolve("fp32", CPU, False)[0] == "fp32" and resolve("fp32", CPU, True)[0] == "fp32"
    # the numpy fast paths: auto keeps fp32 (nothing to gain), bf16 is emulated and says so
    precision, why = resolve("auto", CPU, True)
    assert precision == "fp32" and "numpy fast path" in why
    precision, why = resolve("bf16", CPU, True)
    assert precision == "bf16" and "emulated" in why
    monkeypatch.setattr(precision_mod, "native_bf16", lambda device: None)
    assert resolve("auto", CPU, False) == ("fp32", "fp32 (auto: this CPU has no native bf16 matmul)")
    with pytest.raises(UserError, match="no native bf16 matmul.*use --precision fp32 or auto"):
        resolve("bf16", CPU, False)
    monkeypatch.setattr(precision_mod, "native_bf16", lambda device: "a CPU with AMX")
    precision, why = resolve("auto", CPU, False)
    assert precision == "bf16" and "auto: a CPU with AMX" in why


def test_native_bf16_on_cuda_asks_torch(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: not including_emulation)
    assert precision_mod.native_bf16(torch.device("cuda")) == "a CUDA GPU with bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert precision_mod.native_bf16(torch.device("cuda")) is None


def test_auto_picks_bf16_for_the_cnn_and_fp32_for_the_numpy_mlp(native):
    cnn, mlp = kind("cnn"), preset("classic")
    for cfg, expected in ((cnn, "bf16"), (mlp, "fp32")):
        envs = make_envs(cfg.env_id, cfg.num_envs, cfg=cfg)
        state = new_state(cfg, envs, CPU)
        envs.close()
        assert resolve_precision(state.policy, CPU, cfg.fast_paths, "auto")[0] == expected


def test_precision_flag_and_its_errors(tmp_path):
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "proximal", "train", "--precision", "bf16", "--total-steps", "1024",
                           "--run-dir", str(run)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "precision: bf16, emulated in the numpy fast path" in done.stdout + done.stderr
    assert json.loads((run / "config.json").read_text())["precision"] == "bf16"
    bad = subprocess.run([sys.executable, "-m", "proximal", "train", "--precision", "fp16", "--run-dir",
                          str(tmp_path / "bad")], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "precision must be one of fp32, bf16, auto" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_api_precision_keyword(tmp_path):
    import proximal

    run = proximal.train("classic", env="CartPole-v1", run_dir=tmp_path / "run", quiet=True, total_steps=1024,
                         precision="bf16")
    assert run.cfg.precision == "bf16"
    agent = proximal.load(tmp_path / "run")  # a bf16 run's checkpoint loads as any other
    action, _ = agent.act(np.zeros((1, 4), np.float32))
    assert action.shape == (1,)


def test_emulated_bias_gradient_is_autocasts():
    # autocast runs a Linear with a bf16 bias: its gradient is the batch sum of the output gradient, a bf16 value
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 17)).astype(np.float32)
    d_out = round_bf16(rng.normal(size=(64, 32)).astype(np.float32))  # the gradient of a bf16 output
    layer = torch.nn.Linear(17, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(torch.from_numpy(x))
    out.backward(torch.from_numpy(d_out).bfloat16())
    expected = layer.bias.grad.numpy()
    emulated = column_sum(d_out, bf16=True)
    assert np.array_equal(emulated, round_bf16(emulated)), "a bf16 result"
    # the same up to one bf16 rounding step where the CPU's kernel sums in another order
    np.testing.assert_allclose(emulated, expected, rtol=2.0**-7, atol=1e-6)
    assert not np.array_equal(emulated, d_out.sum(0)), "not the fp32 sum"
    assert np.array_equal(column_sum(d_out), d_out.sum(0)), "fp32 is plain numpy"
