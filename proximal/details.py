"""The registry of the reference's implementation details.

Every detail has a stable ID. A *switchable* detail has an entry in ``Config.details`` that the code reads
where the detail lives (``cfg.on("core.gae")``), so ``--off ID`` gives the behaviour its ``off_means`` states.
A *structural* detail cannot be switched off; its test checks the structure. ``where`` names the code that
implements the detail and ``test`` the test that fails when it is off or broken (``tests/...::name``).

The registry is also the documentation's catalogue: ``docs/details.md`` is ``markdown()``'s rendering of it,
written by ``python scripts/render_details.py``, and a test fails when the page and the registry disagree.
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
    does: str = ""
    """what the reference does, with the numbers"""
    off_means: str = ""
    """what the code does instead under ``--off ID`` (for a structural detail: that it has no switch)"""
    why: str = ""
    """why the reference does it"""

    @property
    def implemented(self) -> bool:
        return bool(self.where)


STRUCTURAL = "structural: no switch (`--off` refuses it); its test checks the structure"


DETAILS: tuple[Detail, ...] = (
    # Core (13)
    Detail(
        "core.vector_envs", "vectorized architecture", False,
        "proximal/rollout.py:collect_rollout", "tests/test_rollout.py::test_core_vector_envs_carry_over_between_iterations",
        does="N envs are stepped together; each iteration collects num_steps steps of each (batch = N × num_steps); "
             "the last observation and done flags carry over to the next iteration, and no env is reset between "
             "iterations",
        off_means=STRUCTURAL,
        why="N envs in lockstep give one batch of experience from several independent episodes per update and "
            "let the network act on all of them in one call; carrying the state over means an iteration boundary "
            "never cuts an episode short."),
    Detail(
        "core.orthogonal_init", "orthogonal weights, constant biases", True,
        "proximal/nets.py:layer_init", "tests/test_nets.py::test_core_orthogonal_init_gains",
        does="orthogonal weights with gain √2 in hidden layers, 0.01 in the policy head and 1 in the value head; "
             "biases 0",
        off_means="PyTorch's default initialization of every layer",
        why="Orthogonal matrices keep the scale of activations and gradients through the layers; the policy "
            "head's small gain makes the first policy close to uniform (or to a zero mean), so early actions "
            "explore evenly."),
    Detail(
        "core.adam_eps", "Adam epsilon 1e-5", True,
        "proximal/update.py:make_optimizer", "tests/test_update.py::test_core_adam_eps",
        does="Adam with eps = 1e-5 (the reference adds it before the bias correction, as TensorFlow does; PyTorch "
             "after it, a known and accepted difference)",
        off_means="PyTorch's default eps, 1e-8",
        why="It is the reference's value; a larger epsilon damps the steps of parameters whose gradients have "
            "been tiny, which are otherwise divided by almost nothing."),
    Detail(
        "core.lr_annealing", "learning-rate annealing", True,
        "proximal/update.py:learning_rate", "tests/test_update.py::test_core_lr_annealing_schedule",
        does="at update i of U (counted from 1) the learning rate is lr0 · (1 − (i − 1)/U): the last update uses "
             "lr0/U",
        off_means="the constant learning rate lr0",
        why="Shrinking the steps linearly to nearly zero lets the policy settle at the end of training instead of "
            "being shaken by full-size steps; the reference anneals in its Atari and MuJoCo settings."),
    Detail(
        "core.gae", "generalized advantage estimation", True,
        "proximal/advantages.py:compute_advantages", "tests/test_advantages.py::test_core_gae_lambda_from_config",
        does="GAE(γ, λ) with γ 0.99 and λ 0.95, cut at every episode end; the returns A + V are the value "
             "targets",
        off_means="λ = 1: bootstrapped Monte-Carlo returns as advantages",
        why="λ trades the bias of one-step TD errors against the variance of Monte-Carlo returns; 0.95 gives "
            "lower-variance advantages than λ = 1 at little bias."),
    Detail(
        "core.minibatches", "mini-batch updates", True,
        "proximal/update.py:minibatch_indices", "tests/test_update.py::test_core_minibatches_cover_batch_once_per_epoch",
        does="each epoch draws a fresh permutation of the batch and splits it into num_minibatches equal "
             "minibatches, one gradient step each",
        off_means="one gradient step on the whole batch per epoch",
        why="Several smaller steps per epoch get more learning out of each collected batch than one full-batch "
            "step; a new permutation every epoch keeps the same samples from always meeting in one minibatch."),
    Detail(
        "core.adv_norm", "advantage normalization per minibatch", True,
        "proximal/update.py:ppo_loss", "tests/test_update.py::test_core_adv_norm_per_minibatch_population_std",
        does="in every minibatch, A ← (A − mean) / (std + 1e-8) with the population std (ddof 0)",
        off_means="the raw advantages",
        why="Unit-scale advantages make the policy gradient's size independent of the reward's scale, so one "
            "learning rate serves many envs; the reference normalizes inside the loss, hence per minibatch."),
    Detail(
        "core.clipped_objective", "clipped surrogate objective", True,
        "proximal/update.py:ppo_loss", "tests/test_update.py::test_core_clipped_objective_hand_numbers",
        does="r = exp(log π − log π_old); policy loss = mean(max(−A·r, −A·clip(r, 1 − ε, 1 + ε))), ε 0.2 "
             "(classic, MuJoCo) or 0.1 (Atari)",
        off_means="the unclipped surrogate mean(−A·r)",
        why="The pessimistic minimum removes any gain from pushing the ratio beyond 1 ± ε, which keeps each "
            "update close to the policy that collected the data: PPO's cheap stand-in for TRPO's trust region."),
    Detail(
        "core.value_clipping", "value-function loss clipping", True,
        "proximal/update.py:ppo_loss", "tests/test_update.py::test_core_value_clipping_hand_numbers",
        does="V_clip = V_old + clip(V − V_old, −ε, ε) with the update's policy clip range ε; value loss = "
             "0.5 · mean(max((V − R)², (V_clip − R)²))",
        off_means="the plain loss 0.5 · mean((V − R)²)",
        why="The reference limits how far one update moves the value predictions, as the policy's clip limits "
            "the ratio; studies since found it does not help, but a reproduction keeps it on."),
    Detail(
        "core.entropy_bonus", "overall loss with entropy bonus", True,
        "proximal/update.py:ppo_loss", "tests/test_update.py::test_core_entropy_bonus_loss_composition",
        does="loss = policy loss − ent_coef · entropy + vf_coef · value loss, one Adam over all parameters; "
             "vf_coef 0.5, ent_coef 0.01 (classic, Atari) or 0 (MuJoCo)",
        off_means="ent_coef = 0: no entropy term",
        why="The entropy term keeps the policy from collapsing early onto one action, so it keeps exploring; one "
            "loss and one optimizer because the policy and the value may share a trunk."),
    Detail(
        "core.grad_clip", "global gradient clipping", True,
        "proximal/update.py:clip_gradients", "tests/test_update.py::test_core_grad_clip_global_norm",
        does="all gradients are rescaled together so that their global L2 norm is at most 0.5",
        off_means="no clipping",
        why="One minibatch with an outsized gradient cannot then throw the parameters far in one step; rescaling "
            "all of them together keeps the gradient's direction."),
    Detail(
        "core.debug_stats", "debug variables", False,
        "proximal/update.py:ppo_update", "tests/test_update.py::test_core_debug_stats_known_ratios",
        does="every update logs the means over all minibatches of all epochs of the policy loss, value loss, "
             "entropy, clip fraction and three KL estimates (approx_kl = mean((r − 1) − log r), old_approx_kl = "
             "mean(−log r), approxkl_ppo2 = ½ mean((log r)²)), with explained variance, learning rate, clip range "
             "and SPS",
        off_means=STRUCTURAL,
        why="These are the numbers that show whether updates are too large (KL, clip fraction) or the value "
            "function is learning (explained variance); the same means as the reference's make runs comparable."),
    Detail(
        "core.separate_networks", "separate actor and critic networks (classic preset)", True,
        "proximal/policy.py:ActorCritic", "tests/test_policy.py::test_core_separate_networks_parameter_sets",
        does="the classic preset uses separate 64-64 tanh networks for actor and critic (a deliberate deviation: "
             "the reference shares one trunk for discrete actions)",
        off_means="the reference's shared trunk under the policy and value heads",
        why="With separate networks the value loss's gradients do not reshape the policy's features; the blog "
            "and CleanRL's ppo.py use them on classic control because they learn better there."),
    # Atari (9)
    Detail(
        "atari.noop_reset", "NoopResetEnv", True,
        "proximal/envs/atari.py:NoopReset", "tests/test_atari.py::test_atari_noop_reset_count_in_1_to_30_from_the_seeded_rng",
        does="on a real reset, 1 to 30 no-op raw frames (uniform, from the env's seeded RNG; inside the frame "
             "skip); reset again if the game ends during them",
        off_means="no no-ops: every game starts from the emulator's reset frame",
        why="Without sticky actions the emulator is deterministic; a random number of idle frames varies the "
            "start, so the agent cannot succeed by replaying one memorized sequence of actions."),
    Detail(
        "atari.frame_skip", "MaxAndSkipEnv", True,
        "proximal/envs/atari.py:wrap_atari", "tests/test_atari.py::test_atari_frame_skip_max_of_last_two_frames_rewards_summed_early_stop",
        does="each agent step repeats the action for 4 raw frames (fewer if the game ends), rewards summed; the "
             "observation is the pixel-wise max of the last 2 frames",
        off_means="frameskip 1: one decision per raw frame",
        why="Deciding every 4th frame plays 4 times as much game per network call; the max of two frames shows "
            "sprites that the Atari draws only on every other frame."),
    Detail(
        "atari.episodic_life", "EpisodicLifeEnv", True,
        "proximal/envs/atari.py:EpisodicLife", "tests/test_atari.py::test_atari_episodic_life_loss_is_terminal_without_emulator_reset",
        does="a life loss is a terminal for learning (GAE, LSTM reset, frame-stack reset), while the emulator "
             "resets only at game over; the pseudo-reset after a life loss is one no-op step",
        off_means="a life loss is not terminal: only game over ends an episode",
        why="Ending the learner's episode at a life loss tells the value function at once that losing a life is "
            "costly, which it would otherwise learn only through the later, discounted game over."),
    Detail(
        "atari.fire_reset", "FireResetEnv", True,
        "proximal/envs/atari.py:FireReset", "tests/test_atari.py::test_atari_fire_reset_after_every_reset_real_and_pseudo",
        does="where action 1 is FIRE (and there are at least 3 actions): after every reset, the pseudo-reset "
             "after a life loss included, step FIRE and then action 2; their rewards count in the statistics, "
             "never reach the learner",
        off_means="no FIRE: the agent must learn to start the game itself",
        why="Games such as Breakout wait for FIRE before play starts; pressing it for the agent saves it from "
            "learning, life after life, that nothing happens until it does."),
    Detail(
        "atari.warp_frame", "WarpFrame", False,
        "proximal/envs/atari.py:WarpFrame", "tests/test_atari.py::test_atari_warp_frame_gray_area_resize_equals_opencv",
        does="RGB to gray, then resized to 84×84 with OpenCV's INTER_AREA; uint8",
        off_means=STRUCTURAL,
        why="A gray 84×84 frame holds about 1/20 of the bytes of the 210×160 RGB one and keeps what the games' "
            "play depends on; it is the preprocessing of the Nature DQN, which the Nature CNN expects."),
    Detail(
        "atari.clip_reward", "ClipRewardEnv", True,
        "proximal/envs/atari.py:ClipRewardSign", "tests/test_atari.py::test_atari_clip_reward_sign",
        does="the learning reward is sign(reward); the episode statistics keep the raw rewards",
        off_means="the learner gets the raw game rewards",
        why="Scores differ by orders of magnitude between games; the sign puts every game on one scale, so one "
            "set of hyperparameters serves them all."),
    Detail(
        "atari.frame_stack", "FrameStack", True,
        "proximal/envs/atari.py:FrameStack", "tests/test_atari.py::test_atari_frame_stack_zeroed_on_done_newest_last",
        does="the last 4 frames as channels, stacked on the vector env, newest last; an env's stack is zeroed on "
             "every done, life losses included (repeating the first frame instead is the atari_repeat_first "
             "option)",
        off_means="a stack of 1: each observation is the current frame alone",
        why="One frame shows where things are but not where they move; four show velocities. Zeroing on a done "
            "keeps frames of the previous episode or life out of the new one's observations."),
    Detail(
        "atari.nature_cnn", "shared Nature CNN", False,
        "proximal/nets.py:NatureCNN", "tests/test_nets.py::test_atari_nature_cnn_layer_shapes_and_gains",
        does="conv 32×8×8 stride 4, conv 64×4×4 stride 2, conv 64×3×3 stride 1, linear 512, ReLU, gain √2; one "
             "trunk under the policy (gain 0.01) and value (gain 1) heads",
        off_means=STRUCTURAL,
        why="It is the Nature DQN's network, which the reference uses for every Atari game; sharing the trunk "
            "between the heads halves the cost of the convolutions."),
    Detail(
        "atari.scale_obs", "scaling images to [0, 1]", True,
        "proximal/nets.py:NatureCNN", "tests/test_nets.py::test_atari_scale_obs_divides_uint8_by_255",
        does="frames are stored as uint8 and the network divides them by 255",
        off_means="no division: the network reads values from 0 to 255",
        why="Inputs in [0, 1] match the scale the initialization assumes; unscaled pixels make the first "
            "layer's outputs huge, and the blog shows the KL between updates exploding without the division."),
    # Continuous actions (9)
    Detail(
        "cont.gaussian", "continuous actions via normal distributions", False,
        "proximal/distributions.py:DiagGaussian",
        "tests/test_continuous.py::test_cont_gaussian_head_outputs_the_mean_with_gain_001",
        does="for Box actions the actor's head (gain 0.01) gives the mean of a Normal; deterministic actions are "
             "the mean",
        off_means=STRUCTURAL,
        why="A Normal around a learned mean is the simplest stochastic policy over real-valued actions with a "
            "tractable log-probability and entropy; the small gain starts the mean near 0."),
    Detail(
        "cont.state_independent_logstd", "state-independent log std", True,
        "proximal/nets.py:GaussianHead", "tests/test_continuous.py::test_cont_state_independent_logstd_parameter",
        does="one learned log std per action dimension, initialized to 0 (std 1), not a function of the "
             "observation",
        off_means="a log-std head: a Linear layer from the actor's features (gain 0.01, zero bias), so it "
                  "starts near 0 too",
        why="A free vector is the reference's choice (as in the PPO paper's MuJoCo policy): exploration shrinks "
            "as a whole over training, and there is no second head whose outputs could drive the std to "
            "extremes."),
    Detail(
        "cont.independent_dims", "independent action components", False,
        "proximal/distributions.py:DiagGaussian",
        "tests/test_continuous.py::test_cont_independent_dims_log_prob_and_entropy_are_sums",
        does="the log-prob and the entropy are sums over the action dimensions (a diagonal Gaussian)",
        off_means=STRUCTURAL,
        why="A diagonal covariance needs one std per dimension instead of a full matrix, and makes the "
            "log-prob and the entropy plain sums."),
    Detail(
        "cont.separate_networks", "separate MLP networks", True,
        "proximal/policy.py:ActorCritic", "tests/test_continuous.py::test_cont_separate_networks_parameter_sets",
        does="for Box actions, separate 64-64 tanh actor and critic networks (the reference's "
             "value_network='copy' on MuJoCo); discrete actions follow core.separate_networks",
        off_means="one shared trunk under the Gaussian and value heads",
        why="The reference builds its MuJoCo policy so; a separate critic keeps the value loss, which is large "
            "with unnormalized returns, from reshaping the features the actor uses."),
    Detail(
        "cont.action_clip", "action clipping and storage", True,
        "proximal/distributions.py:DiagGaussian",
        "tests/test_continuous.py::test_cont_action_clip_env_gets_clipped_rollout_stores_unclipped",
        does="NaNs set to 0, then the action clipped to the Box bounds, only on the way to the env (an infinite "
             "bound clips nothing); the unclipped sample and its log-prob are stored and trained on",
        off_means="the env receives the raw Gaussian sample",
        why="A Gaussian sample can leave the bounds, which many envs do not accept; clipping only what the env "
            "receives keeps the stored log-prob that of the distribution that was sampled."),
    Detail(
        "cont.obs_norm", "observation normalization", True,
        "proximal/envs/normalize.py:normalize_obs",
        "tests/test_normalize.py::test_cont_obs_norm_counts_reset_observations_never_final_ones",
        does="running mean and variance (float64; prior mean 0, variance 1, count 1e-4) of every observation "
             "batch the vector env returns, reset observations included, final observations never; "
             "obs ← (obs − mean)/√(var + 1e-8), float32 whatever the env's dtype (the rollout stores them so); "
             "statistics checkpointed and frozen at evaluation",
        off_means="the raw observations",
        why="MuJoCo observations mix positions, velocities and forces of very different scales; normalizing "
            "each to about zero mean and unit variance lets one network and learning rate read them all."),
    Detail(
        "cont.obs_clip", "observation clipping", True,
        "proximal/envs/normalize.py:normalize_obs", "tests/test_normalize.py::test_cont_obs_clip_at_ten",
        does="normalized observations clipped to [−10, 10]",
        off_means="no clip (the clip acts only with cont.obs_norm on)",
        why="It bounds the inputs while the statistics rest on few samples and for states far outside those "
            "seen so far."),
    Detail(
        "cont.reward_scaling", "reward scaling", True,
        "proximal/envs/normalize.py:scale_reward", "tests/test_normalize.py::test_cont_reward_scaling_hand_numbers",
        does="ret ← g·ret + r for each env, with g = reward_scaling_gamma (0.99, the discount of the reference's "
             "VecNormalize, whatever PPO's γ); the running variance of ret is updated; r ← r / √(var + 1e-8), no "
             "mean subtracted; then ret ← 0 where the episode ended (terminated or truncated). Not gymnasium's "
             "NormalizeReward, which resets before adding and on termination only",
        off_means="the raw rewards",
        why="Dividing by the spread of the discounted return keeps the value targets near unit scale whatever "
            "the env's reward scale; no mean is subtracted, so a reward keeps its sign."),
    Detail(
        "cont.reward_clip", "reward clipping", True,
        "proximal/envs/normalize.py:scale_reward", "tests/test_normalize.py::test_cont_reward_clip_at_ten",
        does="scaled rewards clipped to [−10, 10]",
        off_means="no clip (the clip acts only with cont.reward_scaling on)",
        why="It bounds the rare very large scaled reward, mostly early, when the return's variance is still "
            "poorly estimated."),
    # LSTM (5)
    Detail(
        "lstm.init", "LSTM layer initialization", True,
        "proximal/nets.py:LSTMCore", "tests/test_lstm.py::test_lstm_init_orthogonal_gain_1_zero_biases",
        does="the LSTM's input and recurrent weights orthogonal with gain 1 over all four gates; all biases 0 (no "
             "forget-gate offset)",
        off_means="PyTorch's default LSTM initialization",
        why="It is how the reference's LSTM is built, and it matches the orthogonal initialization of the other "
            "layers (core.orthogonal_init)."),
    Detail(
        "lstm.zero_state", "zero initial state", False,
        "proximal/nets.py:LSTMCore", "tests/test_lstm.py::test_lstm_zero_state_at_the_start_of_training",
        does="the hidden and cell states start at zeros",
        off_means=STRUCTURAL,
        why="At the start of training nothing has been observed, and zeros are also the state a reset on done "
            "gives, so every episode starts the same way."),
    Detail(
        "lstm.reset_on_done", "reset at episode end", True,
        "proximal/nets.py:LSTMCore", "tests/test_lstm.py::test_lstm_reset_on_done_output_after_an_end_is_a_fresh_start",
        does="before each step, the state of an env whose observation starts an episode is multiplied by 0, in "
             "the rollout and in training",
        off_means="the state is carried from one episode into the next",
        why="A new episode must not see memories of the previous one: they carry information the policy cannot "
            "have in a fresh episode, such as how the last one ended."),
    Detail(
        "lstm.sequential_minibatches", "sequential rollouts in minibatches", False,
        "proximal/update.py:sequence_minibatch_indices",
        "tests/test_lstm.py::test_lstm_sequential_minibatches_are_whole_env_sequences_in_time_order",
        does="each epoch shuffles the envs; a minibatch is every step of num_envs / num_minibatches envs, in "
             "time order (num_envs must divide evenly)",
        off_means=STRUCTURAL,
        why="A recurrent state is built step by step, so training needs each env's steps whole and in order; "
            "shuffling single steps would cut the sequences the memory depends on."),
    Detail(
        "lstm.reconstruct_states", "reconstruct states during training", True,
        "proximal/update.py:minibatch",
        "tests/test_lstm.py::test_lstm_reconstruct_states_training_replays_from_the_stored_state",
        does="the state each env's sequence started the rollout from is stored; training replays every sequence "
             "from it, with the resets",
        off_means="training replays every sequence from a zero state",
        why="Replaying from the stored state reproduces the rollout's hidden states, so before the first "
            "gradient step the ratio is exactly 1; from zeros, a sequence that began mid-episode would be "
            "evaluated with a different memory than it acted with."),
    # MultiDiscrete (1)
    Detail(
        "multidiscrete.independent_categoricals", "independent action components", False,
        "proximal/distributions.py:MultiCategorical",
        "tests/test_multidiscrete.py::test_multidiscrete_independent_categoricals_sums_of_torch_categoricals",
        does="one head of sum(nvec) logits (gain 0.01) split into independent Categoricals; the log-prob and the "
             "entropy are sums over the components",
        off_means=STRUCTURAL,
        why="Independent components need sum(nvec) outputs where one Categorical over all combinations would "
            "need their product, which for Gym-μRTS's 7 components per cell is far too many."),
    # Auxiliary (4), off by default in the reference
    Detail(
        "aux.clip_annealing", "clip-range annealing", True,
        "proximal/update.py:clip_range", "tests/test_update.py::test_aux_clip_annealing_schedule",
        does="ε_i = ε0 · (1 − (i − 1)/U), annealed like the learning rate",
        off_means="off by default: the constant ε0 (`--on aux.clip_annealing` or the atari-2017 preset anneals)",
        why="The 2017 ppo2, and the code behind baselines' published Atari table, annealed ε on Atari; the "
            "ea25b9e reference keeps it constant, so it is here for reproducing the older results."),
    Detail(
        "aux.target_kl", "early stopping on approx_kl", True,
        "proximal/update.py:ppo_update", "tests/test_update.py::test_aux_target_kl_stops_after_epoch",
        does="after each epoch, the update stops when that epoch's mean approx_kl exceeds target_kl",
        off_means="off by default: every update runs all its epochs (`--target-kl X` switches it on at X)",
        why="It ends an update whose policy has already moved far from the one that collected the data, a "
            "second guard next to the clipped objective; other PPO implementations use it, the reference does "
            "not."),
    Detail(
        "aux.action_masking", "invalid action masking", True,
        "proximal/distributions.py:masked_logits",
        "tests/test_multidiscrete.py::test_aux_action_masking_never_samples_invalid_actions",
        does="the env's action masks are stored with the rollout and used in the rollout and the update: "
             "invalid logits − 1e8 (never sampled, zero gradients, no entropy); a component with no valid "
             "action adds 0 to the log-prob and the entropy",
        off_means="no masks: the policy samples from every action and the env gets whatever is sampled (on by "
                  "default, acting only where the env provides masks)",
        why="In games such as Gym-μRTS most actions are invalid at any moment; masking keeps the policy from "
            "wasting samples and gradient on them, and studies found it decisive there."),
    Detail(
        "aux.parallel_gradients", "parallelized gradient update", True,
        "proximal/distributed.py:average_gradients",
        "tests/test_distributed.py::test_aux_parallel_gradients_average_equals_the_concatenated_minibatch",
        does="under torchrun, one learner per process, each with its own envs (seeded seed + 10000 · rank), its "
             "own rollout, advantages and minibatches (advantages normalized per local minibatch); every "
             "minibatch's flat gradient is summed over the ranks and divided by their number, then clipped to "
             "the global norm and given to Adam, so the parameters stay the same on every rank (the reference "
             "does this over MPI). On by default; it acts only with more than one process",
        off_means="under torchrun, independent learners that share nothing but the start parameters and the run "
                  "directory (rank 0's are logged; each rank's are checkpointed); a single process is unaffected",
        why="It scales the batch over processes or machines while each optimizer step sees the gradient of the "
            "whole batch; the envs of each process step in parallel with the others'."),
    # proximal's own options
    Detail(
        "opt.truncation_bootstrap", "bootstrap truncated episodes from V(final observation)", True,
        "proximal/rollout.py:collect_rollout", "tests/test_rollout.py::test_opt_truncation_bootstrap_stores_final_value",
        does="a step truncated but not terminated gets γ·V(final observation) added to its reward, with V from "
             "the rollout-time network; the GAE recursion is cut there as at a termination. proximal's own "
             "option, on by default",
        off_means="the reference's truncation-as-termination: a time limit ends the return like a real end "
                  "(run comparisons with published numbers this way)",
        why="A time limit is not part of the task: the episode would have gone on, so its value is the "
            "network's estimate, not 0. Treating it as a termination teaches that the states before the limit "
            "are worth little."),
)

BY_ID: dict[str, Detail] = {d.id: d for d in DETAILS}


def switchable_ids() -> list[str]:
    """IDs that ``--on``/``--off`` accept: switchable and implemented."""
    return [d.id for d in DETAILS if d.switchable and d.implemented]


# the details of the Gaussian policy; the other cont.* ones (normalization) act on any env
CONTINUOUS_ACTIONS = ("cont.state_independent_logstd", "cont.separate_networks", "cont.action_clip")


def applicable(cfg, continuous: bool, masked: bool) -> list[str]:
    """The switchable details on in ``cfg`` whose switch changes a run of it: the Gaussian policy's details need a
    continuous action space, the ``lstm.*`` ones an LSTM, action masking an env that gives masks, parallel gradients more
    than one process. Switching one of the others off would train exactly the full preset again."""
    def acts(detail_id: str) -> bool:
        if detail_id in CONTINUOUS_ACTIONS:
            return continuous
        if detail_id.startswith("lstm."):
            return cfg.lstm_size > 0
        if detail_id == "aux.action_masking":
            return masked
        # averages gradients across processes: a single-process run, as every ablation's, has nothing to average
        return detail_id != "aux.parallel_gradients"

    return [i for i in switchable_ids() if cfg.details.get(i, False) and acts(i)]


def describe(cfg) -> list[dict]:
    """One row per detail for ``proximal details``: implemented, enabled in ``cfg``, where, test, and the texts."""
    rows = []
    for d in DETAILS:
        if d.switchable:
            enabled = d.implemented and cfg.details.get(d.id, False)
        else:
            enabled = d.implemented
        rows.append({"id": d.id, "title": d.title, "implemented": d.implemented, "enabled": bool(enabled),
                     "where": d.where, "test": d.test, "does": d.does, "off_means": d.off_means, "why": d.why})
    return rows


GROUPS = {
    "core": "Core",
    "atari": "Atari",
    "cont": "Continuous actions",
    "lstm": "LSTM",
    "multidiscrete": "MultiDiscrete actions",
    "aux": "Auxiliary: off by default in the reference",
    "opt": "proximal's own options",
}


def markdown() -> str:
    """The catalogue as the Markdown page ``docs/details.md``: a summary table, then one section per detail."""
    lines = [
        "# Every implementation detail",
        "",
        "<!-- generated from proximal/details.py by `python scripts/render_details.py`: edit the registry, not "
        "this page -->",
        "",
        "Each detail of the reference (OpenAI baselines `ppo2`, commit ea25b9e) has a stable ID. The ID appears "
        "where the detail is implemented and in the name of its test, so `grep -r core.value_clipping` finds "
        "both. A switchable detail is switched with `--off ID` (or `--on ID` where a preset has it off); a "
        "structural one has no switch and its test checks the structure. `proximal details --preset NAME` "
        "lists which details are on in a preset. A detail acts only where its kind of env or policy is present: "
        "the `atari.*` details on Atari envs, `lstm.*` with an LSTM core, `cont.*` with Box actions.",
        "",
        "| ID | detail | switch |",
        "|---|---|---|",
    ]
    for d in DETAILS:
        switch = "not implemented yet" if not d.implemented else "switchable" if d.switchable else "structural"
        lines.append(f"| [`{d.id}`](#{d.id.replace('.', '')}) | {d.title} | {switch} |")
    group = None
    for d in DETAILS:
        prefix = d.id.split(".")[0]
        if prefix != group:
            group = prefix
            lines += ["", f"## {GROUPS[prefix]}"]
        lines += ["", f"### {d.id}", "", f"*{d.title}*", "", f"- **Does:** {_sentence(d.does)}",
                  f"- **Off means:** {_sentence(d.off_means)}", f"- **Why:** {d.why}"]
        if d.implemented:
            lines.append(f"- **Code:** `{d.where}`; **test:** `{d.test}`")
    return "\n".join(lines) + "\n"


def _sentence(text: str) -> str:
    # Greek symbols stay as they are: "λ = 1" must not become "Λ = 1"
    first = text[0].upper() if text[0].isascii() else text[0]
    return first + text[1:] + ("" if text.endswith(".") else ".")
