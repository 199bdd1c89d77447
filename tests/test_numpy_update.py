"""The numpy update (the CPU fast path) against the torch update it stands in for: same parameters, Adam state,
statistics and epochs, for every switch of the details the update implements; the ratio-is-one check on it."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from proximal.carry import Carry
from proximal.cli import build_parser, config_from_args
from proximal.config import preset
from proximal.details import switchable_ids
from proximal.distributions import DiagGaussian
from proximal.fast_paths import make_update
from proximal.numpy_actor import NumpyMLPActor
from proximal.numpy_update import HANDLED, NumpyMLPUpdate, _categorical_forward, _gaussian_forward
from proximal.policy import make_policy
from proximal.update import STAT_NAMES, make_optimizer, ppo_update

OBS, ACTIONS, BATCH = 5, 3, 256
OBS_SPACE = gym.spaces.Box(-np.inf, np.inf, (OBS,), np.float32)
DISCRETE = gym.spaces.Discrete(ACTIONS)
BOX = gym.spaces.Box(-1.0, 1.0, (ACTIONS,), np.float32)


def batches(policy, seed, count):
    """Rollout-like batches: stored log-probs and values are the policy's own at the time of the batch."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        obs = torch.from_numpy(rng.normal(size=(BATCH, OBS)).astype(np.float32))
        if isinstance(policy.dist, DiagGaussian):  # samples of the policy's own Gaussian: ratios start at 1, move
            noise = torch.from_numpy(rng.normal(size=(BATCH, ACTIONS)).astype(np.float32))
            with torch.no_grad():
                mean, log_std = policy.policy_head(policy.trunk.actor(obs))
                actions = mean + log_std.exp() * noise
        else:
            actions = torch.from_numpy(rng.integers(0, ACTIONS, BATCH))
        with torch.no_grad():
            logprobs, _, values = policy.evaluate({"obs": obs, "actions": actions})
        yield {"obs": obs, "actions": actions, "logprobs": logprobs, "values": values,
               "advantages": torch.from_numpy(rng.normal(1.0, 2.0, BATCH).astype(np.float32)),
               "returns": torch.from_numpy(rng.normal(0.0, 3.0, BATCH).astype(np.float32))}


def train(cfg, updates: list, lr: float = 3e-3, space=DISCRETE):
    """Run the given update functions in turn (a factory per update) on fresh batches; the same seeds for all."""
    torch.manual_seed(0)
    policy = make_policy(OBS_SPACE, space, cfg)
    optimizer = make_optimizer(policy, cfg)
    generator = torch.Generator().manual_seed(1)
    stats = []
    for make, batch in zip(updates, batches(policy, 2, len(updates))):
        for group in optimizer.param_groups:
            group["lr"] = lr  # large enough that ratios leave the clip range within an update
        # each batch is drawn after the previous update, from the policy as it is then; the clip range is the
        # update's (annealed), not the config's initial one
        assert cfg.clip_coef != 0.15
        stats.append(make(policy, optimizer)(policy, optimizer, batch, cfg, 0.15, generator))
    return policy, optimizer, stats


def torch_path(policy, optimizer):
    return ppo_update


def numpy_path(policy, optimizer):
    return NumpyMLPUpdate(policy, optimizer)


def assert_same_training(a, b):
    (policy_a, opt_a, stats_a), (policy_b, opt_b, stats_b) = a, b
    for (name, pa), pb in zip(policy_a.named_parameters(), policy_b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=2e-5, msg=name)
    state_a, state_b = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
    assert state_a.keys() == state_b.keys()
    for i in state_a:
        assert {k: (v.dtype, v.shape) for k, v in state_a[i].items()} == \
               {k: (v.dtype, v.shape) for k, v in state_b[i].items()}
        assert state_a[i]["step"].item() == state_b[i]["step"].item()
        torch.testing.assert_close(state_a[i]["exp_avg"], state_b[i]["exp_avg"], rtol=1e-3, atol=1e-6)
        torch.testing.assert_close(state_a[i]["exp_avg_sq"], state_b[i]["exp_avg_sq"], rtol=1e-3, atol=1e-9)
    for sa, sb in zip(stats_a, stats_b):
        assert sa["epochs"] == sb["epochs"]
        for k in sa:
            assert sa[k] == pytest.approx(sb[k], rel=1e-3, abs=1e-6), k


class ReadRecorder:
    """A config that records which fields and details are read."""

    def __init__(self, cfg):
        self._cfg, self.read = cfg, set()

    def on(self, detail_id):
        self.read.add(detail_id)
        return self._cfg.on(detail_id)

    def __getattr__(self, name):
        self.read.add(name)
        return getattr(self._cfg, name)


def test_numpy_update_handles_everything_the_torch_update_reads(monkeypatch):
    """A switch added to ``update.ppo_loss`` or ``ppo_update`` without its numpy counterpart fails here: write it
    out in ``numpy_update`` (and add it to ``HANDLED``), or refuse the numpy path for it in ``fast_paths``."""
    for name, space, changes in (("classic", DISCRETE, {}), ("mujoco", BOX, {}),
                                 ("classic", DISCRETE, {"aux.target_kl": True, "aux.clip_annealing": True})):
        cfg = preset(name)
        cfg.details.update(changes)
        policy = make_policy(OBS_SPACE, space, cfg)
        recorder = ReadRecorder(cfg)
        ppo_update(policy, make_optimizer(policy, cfg), next(batches(policy, 0, 1)), recorder, 0.2,
                   torch.Generator().manual_seed(0))
        assert recorder.read, "the recorder sees the reads"
        assert recorder.read <= HANDLED, f"the numpy update ignores {sorted(recorder.read - HANDLED)}"


# every switch the update could see: the loss, the optimizer, the network structure, the minibatching
UPDATE_SWITCHES = [i for i in switchable_ids() if i.startswith(("core.", "cont.", "aux.target_kl"))]


@pytest.mark.parametrize("flip", [None, *UPDATE_SWITCHES])
def test_numpy_update_equals_torch_update(flip):
    """Each switch flipped from the preset (discrete actions on classic, Gaussian ones on mujoco with an entropy
    bonus): the same parameters, Adam state and statistics."""
    for name, space in (("classic", DISCRETE), ("mujoco", BOX)):
        cfg = preset(name)
        cfg.num_minibatches = 4
        if name == "mujoco":
            cfg.ent_coef = 0.01  # the mujoco preset has none; the entropy gradient must be checked too
        if flip:
            cfg.details[flip] = not cfg.details[flip]
            cfg.target_kl = 0.002  # aux.target_kl on: stop some updates early
        policy = make_policy(OBS_SPACE, space, cfg)
        if not isinstance(make_update(policy, make_optimizer(policy, cfg), torch.device("cpu")), NumpyMLPUpdate):
            continue  # a switch that sends the update to torch (a state-dependent log std)
        reference = train(cfg, [torch_path] * 3, space=space)
        assert_same_training(reference, train(cfg, [numpy_path] * 3, space=space))
        if flip is None:
            # the comparison means something only if clipping and the gradient bound were active
            assert max(s["clipfrac"] for s in reference[2]) > 0.05
            assert reference[2][0]["approx_kl"] > 1e-4
            if name == "mujoco":
                assert reference[0].policy_head.log_std.detach().abs().max() > 1e-3, "the log std must have moved"


def test_numpy_update_equals_torch_update_with_early_stop():
    cfg = preset("classic")
    cfg.details["aux.target_kl"] = True
    cfg.target_kl = 0.002
    reference = train(cfg, [torch_path] * 3)
    assert min(s["epochs"] for s in reference[2]) < cfg.update_epochs, "the target must stop some update early"
    assert_same_training(reference, train(cfg, [numpy_path] * 3))


def test_numpy_update_equals_torch_update_with_deeper_trunks():
    cfg = preset("classic")
    cfg.hidden_sizes = (16, 8, 12)
    assert_same_training(train(cfg, [torch_path] * 2), train(cfg, [numpy_path] * 2))


def test_paths_can_take_turns():
    """The numpy update leaves torch's Adam state in torch's layout: the torch update continues from it."""
    cfg = preset("classic")
    assert_same_training(train(cfg, [torch_path] * 3), train(cfg, [numpy_path, torch_path, numpy_path]))


def classic_policy(space, separate: bool):
    """(config, policy, optimizer) of the classic preset for ``space``, with separate networks or a shared trunk."""
    cfg = preset("classic")
    cfg.details["core.separate_networks"] = cfg.details["cont.separate_networks"] = separate
    torch.manual_seed(0)
    policy = make_policy(OBS_SPACE, space, cfg)
    return cfg, policy, make_optimizer(policy, cfg)


def minibatch_stats(update, policy, optimizer, batch, cfg) -> list[dict]:
    """The statistics of every minibatch of one numpy update on ``batch``, in order."""
    update(policy, optimizer, batch, cfg, 0.2, torch.Generator().manual_seed(0))
    return update.minibatch_statistics()


@pytest.mark.parametrize("separate", [True, False])
@pytest.mark.parametrize("space", [DISCRETE, BOX], ids=["discrete", "box"])
def test_ratio_is_one_on_the_first_minibatch(separate, space):
    cfg, policy, optimizer = classic_policy(space, separate)
    seen = minibatch_stats(NumpyMLPUpdate(policy, optimizer), policy, optimizer, next(batches(policy, 3, 1)), cfg)
    first = seen[0]
    assert set(first) == set(STAT_NAMES)
    assert abs(first["approx_kl"]) < 1e-7 and abs(first["old_approx_kl"]) < 1e-6
    assert first["clipfrac"] == 0.0
    # and the policy moved afterwards, so later minibatches are not trivially 1
    assert max(abs(s["old_approx_kl"]) for s in seen[1:]) > 1e-5


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("separate", [True, False])
@pytest.mark.parametrize("space", [DISCRETE, BOX], ids=["discrete", "box"])
def test_ratio_is_one_between_the_numpy_actor_and_the_numpy_update(space, separate, bf16):
    """Both fast paths, as training runs them: the numpy actor samples and scores a batch (256 rows at once), the
    numpy update's first minibatch (128 of them, gathered) recomputes the log-probs with the same formulas. In bf16
    bit for bit; in fp32 up to the BLAS, whose float32 products round a row differently with the number of rows."""
    cfg, policy, optimizer = classic_policy(space, separate)
    actor = NumpyMLPActor(policy, bf16)
    rng = np.random.default_rng(4)
    obs = rng.normal(size=(BATCH, OBS)).astype(np.float32)
    actions, _ = actor.sample(obs, Carry(np.zeros(BATCH, np.float32)), rng)
    logprobs, values = actor.score(obs, actions)
    batch = {"obs": obs, "actions": actions, "logprobs": logprobs, "values": values,
             "advantages": rng.normal(size=BATCH).astype(np.float32), "returns": rng.normal(size=BATCH).astype(np.float32)}
    seen = minibatch_stats(NumpyMLPUpdate(policy, optimizer, bf16), policy, optimizer,
                           {k: torch.from_numpy(v) for k, v in batch.items()}, cfg)
    first = seen[0]
    if bf16:
        assert first["approx_kl"] == 0.0 and first["old_approx_kl"] == 0.0
    else:
        assert abs(first["approx_kl"]) < 1e-8 and abs(first["old_approx_kl"]) < 1e-7
    # the same formulas: on the same logits, the actor's scores and the update's log-probs are bit for bit equal
    head = actor._head(obs)
    recomputed = _gaussian_forward(*head, actions)[0] if space is BOX else _categorical_forward(head, actions)[0]
    assert np.array_equal(actor._log_prob(head, actions), recomputed)
    assert first["clipfrac"] == 0.0
    assert max(abs(s["old_approx_kl"]) for s in seen[1:]) > 1e-5


def test_numpy_update_clipfrac_counts_strictly_outside_the_range():
    # as the torch update's (test_core_debug_stats_known_ratios): |r - 1| > clip, so none at r = 1 with clip 0.
    # One minibatch of the 8 rows the actor scored: the same rows, the same products, a ratio of exactly 1
    cfg, policy, optimizer = classic_policy(DISCRETE, True)
    cfg.num_minibatches = cfg.update_epochs = 1
    actor = NumpyMLPActor(policy)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(8, OBS)).astype(np.float32)
    actions = np.arange(8) % ACTIONS
    logprobs, values = actor.score(obs, actions)
    batch = {"obs": obs, "actions": actions, "logprobs": logprobs, "values": values,
             "advantages": rng.normal(size=8).astype(np.float32), "returns": values}
    update = NumpyMLPUpdate(policy, optimizer)
    update(policy, optimizer, {k: torch.from_numpy(v) for k, v in batch.items()}, cfg, 0.0, torch.Generator())
    first = update.minibatch_statistics()[0]
    assert first["approx_kl"] == 0.0 and first["clipfrac"] == 0.0


def test_make_update_picks_the_path():
    cfg = preset("classic")
    for space in (DISCRETE, BOX):
        policy = make_policy(OBS_SPACE, space, cfg)
        optimizer = make_optimizer(policy, cfg)
        assert isinstance(make_update(policy, optimizer, torch.device("cpu")), NumpyMLPUpdate)
        assert make_update(policy, optimizer, torch.device("cpu"), fast=False) is ppo_update
        assert make_update(policy, optimizer, torch.device("cuda")) is ppo_update
    # the torch update where the numpy one has no gradient written out
    for change in ("squash", "state_dependent_logstd"):
        cfg = preset("mujoco")
        if change == "squash":
            cfg.squash_actions = True
        else:
            cfg.details["cont.state_independent_logstd"] = False
        policy = make_policy(OBS_SPACE, BOX, cfg)
        assert make_update(policy, make_optimizer(policy, cfg), torch.device("cpu")) is ppo_update


def test_fast_paths_switch_on_the_command_line():
    parse = build_parser().parse_args
    assert config_from_args(parse(["train"])).fast_paths is True
    assert config_from_args(parse(["train", "--fast-paths", "false"])).fast_paths is False
    with pytest.raises(SystemExit):
        parse(["train", "--fast-paths", "maybe"])
