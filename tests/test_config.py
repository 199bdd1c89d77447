"""Config: the classic preset's values, derived sizes, validation, detail switches, round trip."""

import pytest

from proximal import config
from proximal.config import PRESETS, Config, field_docs, preset, set_detail, validate
from proximal.details import Detail, switchable_ids
from proximal.errors import UserError


def test_classic_preset_matches_the_reference_settings(cfg):
    assert (cfg.env_id, cfg.num_envs, cfg.num_steps, cfg.num_minibatches, cfg.update_epochs) == ("CartPole-v1", 4, 128, 4, 4)
    assert (cfg.learning_rate, cfg.clip_coef, cfg.ent_coef, cfg.vf_coef, cfg.max_grad_norm) == (2.5e-4, 0.2, 0.01, 0.5, 0.5)
    assert (cfg.gamma, cfg.gae_lambda, cfg.total_steps, cfg.hidden_sizes, cfg.adam_eps) == (0.99, 0.95, 500_000, (64, 64), 1e-5)
    core = [i for i in switchable_ids() if i.startswith("core.")]
    assert len(core) == 11 and all(cfg.on(i) for i in core)
    assert cfg.on("opt.truncation_bootstrap")
    assert not cfg.on("aux.clip_annealing") and not cfg.on("aux.target_kl")


def test_derived_sizes(cfg):
    assert (cfg.batch_size, cfg.minibatch_size, cfg.num_updates) == (512, 128, 976)
    cfg.details["core.minibatches"] = False
    assert cfg.minibatch_size == 512


@pytest.mark.parametrize("change, words", [
    ({"num_envs": 3, "num_steps": 5}, "not divisible by num_minibatches"),
    ({"num_envs": 0}, "num_envs must be positive"),
    ({"clip_coef": -0.1}, "clip_coef"),
    ({"gamma": 1.5}, "gamma"),
    ({"reward_scaling_gamma": -0.1}, "reward_scaling_gamma must lie in"),
    ({"reward_scaling_gamma": 1.01}, "reward_scaling_gamma must lie in"),
    ({"total_steps": 100}, "less than one batch"),
    ({"device": "tpu"}, "device"),
])
def test_inconsistent_values_are_rejected(cfg, change, words):
    for name, value in change.items():
        setattr(cfg, name, value)
    with pytest.raises(UserError, match=words):
        validate(cfg)


def test_structural_unknown_and_unimplemented_ids_are_refused_with_the_valid_ones(cfg, monkeypatch):
    # every detail of the catalogue is implemented now: a registry entry without code stands in for a new one
    monkeypatch.setitem(config.BY_ID, "aux.future", Detail("aux.future", "a detail to come", True))
    for bad, why in (("core.vector_envs", "structural"), ("core.nonsense", "not a detail"),
                     ("aux.future", "not implemented")):
        with pytest.raises(UserError, match=why) as info:
            set_detail(cfg, bad, False)
        assert "core.gae" in str(info.value)
    set_detail(cfg, "core.gae", False)
    assert not cfg.on("core.gae")


def test_unknown_preset():
    with pytest.raises(UserError, match="unknown preset 'nope'.*classic"):
        preset("nope")


def test_round_trip_through_a_dict(cfg):
    cfg.hidden_sizes, cfg.details["core.adv_norm"] = (32,), False
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_every_field_has_a_docstring():
    docs = field_docs()
    assert set(docs) == {f for f in Config.__dataclass_fields__}
    assert "GAE lambda" in docs["gae_lambda"]
    assert "cont.reward_scaling" in docs["reward_scaling_gamma"]


def test_every_preset_scales_rewards_with_the_reference_discount():
    for name in PRESETS:
        cfg = preset(name)
        assert cfg.reward_scaling_gamma == cfg.gamma == 0.99, name
