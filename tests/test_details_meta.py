"""The meta-test: each switchable detail's behavioural check passes with the detail on and fails with it off,
and the registry's claims (where, test) point at things that exist."""

import ast
import re
from pathlib import Path

import pytest

import test_advantages
import test_atari
import test_continuous
import test_distributed
import test_lstm
import test_multidiscrete
import test_nets
import test_normalize
import test_policy
import test_rollout
import test_update
from proximal.config import preset
from proximal.details import DETAILS, switchable_ids

CHECKS = {
    "core.orthogonal_init": test_nets.check_orthogonal_init,
    "core.adam_eps": test_update.check_adam_eps,
    "core.lr_annealing": test_update.check_lr_annealing,
    "core.gae": test_advantages.check_gae_uses_lambda,
    "core.minibatches": test_update.check_minibatches,
    "core.adv_norm": test_update.check_adv_norm,
    "core.clipped_objective": test_update.check_clipped_objective,
    "core.value_clipping": test_update.check_value_clipping,
    "core.entropy_bonus": test_update.check_entropy_bonus,
    "core.grad_clip": test_update.check_grad_clip,
    "core.separate_networks": test_policy.check_separate_networks,
    "cont.state_independent_logstd": test_continuous.check_state_independent_logstd,
    "cont.separate_networks": test_continuous.check_cont_separate_networks,
    "cont.action_clip": test_continuous.check_action_clip,
    "cont.obs_norm": test_normalize.check_obs_norm,
    "cont.obs_clip": test_normalize.check_obs_clip,
    "cont.reward_scaling": test_normalize.check_reward_scaling,
    "cont.reward_clip": test_normalize.check_reward_clip,
    **{i: (lambda cfg, i=i: test_atari.CHECKS[i]({**test_atari.ON, i: cfg.details[i]})) for i in test_atari.CHECKS},
    "atari.scale_obs": test_nets.check_scale_obs,
    "lstm.init": test_lstm.check_lstm_init,
    "lstm.reset_on_done": test_lstm.check_reset_on_done,
    "lstm.reconstruct_states": test_lstm.check_reconstruct_states,
    "aux.clip_annealing": test_update.check_clip_annealing,
    "aux.target_kl": test_update.check_target_kl,
    "aux.action_masking": test_multidiscrete.check_action_masking,
    "aux.parallel_gradients": test_distributed.check_parallel_gradients,
    "opt.truncation_bootstrap": test_rollout.check_truncation_bootstrap,
}

ROOT = Path(__file__).resolve().parents[1]


def test_every_switchable_detail_has_a_check():
    assert sorted(CHECKS) == sorted(switchable_ids())


@pytest.mark.parametrize("detail_id", sorted(CHECKS))
def test_check_passes_on_and_fails_off(detail_id):
    on = preset("classic")
    on.details[detail_id] = True
    CHECKS[detail_id](on)
    off = preset("classic")
    off.details[detail_id] = False
    with pytest.raises(AssertionError):
        CHECKS[detail_id](off)


def _functions(path: Path) -> set[str]:
    return {n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)}


@pytest.mark.parametrize("detail", [d for d in DETAILS if d.implemented], ids=lambda d: d.id)
def test_registry_where_and_test_exist(detail):
    file, function = detail.where.split(":")
    source = (ROOT / file).read_text()
    assert function in _functions(ROOT / file) or re.search(rf"^class {function}\b", source, re.M)
    assert detail.id in source, f"the detail ID is named where it is implemented ({file})"
    test_file, test_name = detail.test.split("::")
    assert test_name in _functions(ROOT / test_file)
    assert detail.id.split(".")[1] in test_name, "the test's name carries the detail's name"
