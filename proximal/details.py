"""The registry of the reference's implementation details (../shared/DETAILS.md).

Every detail has a stable ID. A *switchable* detail has an entry in ``Config.details`` that the code reads
where the detail lives (``cfg.on("core.gae")``), so ``--off ID`` gives the "off means" behaviour of DETAILS.md.
A *structural* detail cannot be switched off; its test checks the structure. ``where`` names the code that
implements the detail and ``test`` the test that fails when it is off or broken (``tests/...::name``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Detail:
    id: str
    title: str
    switchable: bool
    where: str = ""
    test: str = ""

    @property
    def implemented(self) -> bool:
        return bool(self.where)


def _d(id, title, switchable, where="", test=""):
    return Detail(id, title, switchable, where, test)


DETAILS: tuple[Detail, ...] = (
    # Core (13)
    _d("core.vector_envs", "vectorized architecture", False,
       "proximal/rollout.py:collect_rollout", "tests/test_rollout.py::test_core_vector_envs_carry_over_between_iterations"),
    _d("core.orthogonal_init", "orthogonal weights, constant biases", True,
       "proximal/nets.py:layer_init", "tests/test_nets.py::test_core_orthogonal_init_gains"),
    _d("core.adam_eps", "Adam epsilon 1e-5", True,
       "proximal/update.py:make_optimizer", "tests/test_update.py::test_core_adam_eps"),
    _d("core.lr_annealing", "learning-rate annealing", True,
       "proximal/update.py:learning_rate", "tests/test_update.py::test_core_lr_annealing_schedule"),
    _d("core.gae", "generalized advantage estimation", True,
       "proximal/advantages.py:compute_advantages", "tests/test_advantages.py::test_core_gae_lambda_from_config"),
    _d("core.minibatches", "mini-batch updates", True,
       "proximal/update.py:minibatch_indices", "tests/test_update.py::test_core_minibatches_cover_batch_once_per_epoch"),
    _d("core.adv_norm", "advantage normalization per minibatch", True,
       "proximal/update.py:ppo_loss", "tests/test_update.py::test_core_adv_norm_per_minibatch_population_std"),
    _d("core.clipped_objective", "clipped surrogate objective", True,
       "proximal/update.py:ppo_loss", "tests/test_update.py::test_core_clipped_objective_hand_numbers"),
    _d("core.value_clipping", "value-function loss clipping", True,
       "proximal/update.py:ppo_loss", "tests/test_update.py::test_core_value_clipping_hand_numbers"),
    _d("core.entropy_bonus", "overall loss with entropy bonus", True,
       "proximal/update.py:ppo_loss", "tests/test_update.py::test_core_entropy_bonus_loss_composition"),
    _d("core.grad_clip", "global gradient clipping", True,
       "proximal/update.py:clip_gradients", "tests/test_update.py::test_core_grad_clip_global_norm"),
    _d("core.debug_stats", "debug variables", False,
       "proximal/update.py:ppo_update", "tests/test_update.py::test_core_debug_stats_known_ratios"),
    _d("core.separate_networks", "separate actor and critic networks (classic preset)", True,
       "proximal/policy.py:ActorCritic", "tests/test_policy.py::test_core_separate_networks_parameter_sets"),
    # Atari (9)
    _d("atari.noop_reset", "NoopResetEnv", True,
       "proximal/envs/atari.py:NoopReset", "tests/test_atari.py::test_atari_noop_reset_count_in_1_to_30_from_the_seeded_rng"),
    _d("atari.frame_skip", "MaxAndSkipEnv", True,
       "proximal/envs/atari.py:wrap_atari", "tests/test_atari.py::test_atari_frame_skip_max_of_last_two_frames_rewards_summed_early_stop"),
    _d("atari.episodic_life", "EpisodicLifeEnv", True,
       "proximal/envs/atari.py:EpisodicLife", "tests/test_atari.py::test_atari_episodic_life_loss_is_terminal_without_emulator_reset"),
    _d("atari.fire_reset", "FireResetEnv", True,
       "proximal/envs/atari.py:FireReset", "tests/test_atari.py::test_atari_fire_reset_after_every_reset_real_and_pseudo"),
    _d("atari.warp_frame", "WarpFrame", False,
       "proximal/envs/atari.py:WarpFrame", "tests/test_atari.py::test_atari_warp_frame_gray_area_resize_equals_opencv"),
    _d("atari.clip_reward", "ClipRewardEnv", True,
       "proximal/envs/atari.py:ClipRewardSign", "tests/test_atari.py::test_atari_clip_reward_sign"),
    _d("atari.frame_stack", "FrameStack", True,
       "proximal/envs/atari.py:FrameStack", "tests/test_atari.py::test_atari_frame_stack_zeroed_on_done_newest_last"),
    _d("atari.nature_cnn", "shared Nature CNN", False,
       "proximal/nets.py:NatureCNN", "tests/test_nets.py::test_atari_nature_cnn_layer_shapes_and_gains"),
    _d("atari.scale_obs", "scaling images to [0, 1]", True,
       "proximal/nets.py:NatureCNN", "tests/test_nets.py::test_atari_scale_obs_divides_uint8_by_255"),
    # Continuous actions (9)
    _d("cont.gaussian", "continuous actions via normal distributions", False,
       "proximal/distributions.py:DiagGaussian",
       "tests/test_continuous.py::test_cont_gaussian_head_outputs_the_mean_with_gain_001"),
    _d("cont.state_independent_logstd", "state-independent log std", True,
       "proximal/nets.py:GaussianHead", "tests/test_continuous.py::test_cont_state_independent_logstd_parameter"),
    _d("cont.independent_dims", "independent action components", False,
       "proximal/distributions.py:DiagGaussian",
       "tests/test_continuous.py::test_cont_independent_dims_log_prob_and_entropy_are_sums"),
    _d("cont.separate_networks", "separate MLP networks", True,
       "proximal/policy.py:ActorCritic", "tests/test_continuous.py::test_cont_separate_networks_parameter_sets"),
    _d("cont.action_clip", "action clipping and storage", True,
       "proximal/distributions.py:DiagGaussian",
       "tests/test_continuous.py::test_cont_action_clip_env_gets_clipped_rollout_stores_unclipped"),
    _d("cont.obs_norm", "observation normalization", True,
       "proximal/envs/normalize.py:normalize_obs",
       "tests/test_normalize.py::test_cont_obs_norm_counts_reset_observations_never_final_ones"),
    _d("cont.obs_clip", "observation clipping", True,
       "proximal/envs/normalize.py:normalize_obs", "tests/test_normalize.py::test_cont_obs_clip_at_ten"),
    _d("cont.reward_scaling", "reward scaling", True,
       "proximal/envs/normalize.py:scale_reward", "tests/test_normalize.py::test_cont_reward_scaling_hand_numbers"),
    _d("cont.reward_clip", "reward clipping", True,
       "proximal/envs/normalize.py:scale_reward", "tests/test_normalize.py::test_cont_reward_clip_at_ten"),
    # LSTM (5)
    _d("lstm.init", "LSTM layer initialization", True,
       "proximal/nets.py:LSTMCore", "tests/test_lstm.py::test_lstm_init_orthogonal_gain_1_zero_biases"),
    _d("lstm.zero_state", "zero initial state", False,
       "proximal/nets.py:LSTMCore", "tests/test_lstm.py::test_lstm_zero_state_at_the_start_of_training"),
    _d("lstm.reset_on_done", "reset at episode end", True,
       "proximal/nets.py:LSTMCore", "tests/test_lstm.py::test_lstm_reset_on_done_output_after_an_end_is_a_fresh_start"),
    _d("lstm.sequential_minibatches", "sequential rollouts in minibatches", False,
       "proximal/update.py:sequence_minibatch_indices",
       "tests/test_lstm.py::test_lstm_sequential_minibatches_are_whole_env_sequences_in_time_order"),
    _d("lstm.reconstruct_states", "reconstruct states during training", True,
       "proximal/update.py:minibatch",
       "tests/test_lstm.py::test_lstm_reconstruct_states_training_replays_from_the_stored_state"),
    # MultiDiscrete (1)
    _d("multidiscrete.independent_categoricals", "independent action components", False,
       "proximal/distributions.py:MultiCategorical",
       "tests/test_multidiscrete.py::test_multidiscrete_independent_categoricals_sums_of_torch_categoricals"),
    # Auxiliary (4), off by default in the reference
    _d("aux.clip_annealing", "clip-range annealing", True,
       "proximal/update.py:clip_range", "tests/test_update.py::test_aux_clip_annealing_schedule"),
    _d("aux.target_kl", "early stopping on approx_kl", True,
       "proximal/update.py:ppo_update", "tests/test_update.py::test_aux_target_kl_stops_after_epoch"),
    _d("aux.action_masking", "invalid action masking", True,
       "proximal/distributions.py:masked_logits",
       "tests/test_multidiscrete.py::test_aux_action_masking_never_samples_invalid_actions"),
    _d("aux.parallel_gradients", "parallelized gradient update", True),
    # proximal's own options
    _d("opt.truncation_bootstrap", "bootstrap truncated episodes from V(final observation)", True,
       "proximal/rollout.py:collect_rollout", "tests/test_rollout.py::test_opt_truncation_bootstrap_stores_final_value"),
)

BY_ID: dict[str, Detail] = {d.id: d for d in DETAILS}


def switchable_ids() -> list[str]:
    """IDs that ``--on``/``--off`` accept: switchable and implemented."""
    return [d.id for d in DETAILS if d.switchable and d.implemented]


def describe(cfg) -> list[dict]:
    """One row per detail for ``proximal details``: implemented, enabled in ``cfg``, where, test."""
    rows = []
    for d in DETAILS:
        if d.switchable:
            enabled = d.implemented and cfg.details.get(d.id, False)
        else:
            enabled = d.implemented
        rows.append({"id": d.id, "title": d.title, "implemented": d.implemented, "enabled": bool(enabled),
                     "where": d.where, "test": d.test})
    return rows
