"""The run configuration: one dataclass whose field docstrings become ``--help``, the presets, validation and
the derived sizes."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import os
from dataclasses import dataclass, field, fields, replace

from .details import BY_ID, switchable_ids
from .errors import UserError

# the networks' arithmetic (precision.py)
PRECISIONS = ("fp32", "bf16", "auto")

# the Atari vector envs (envs/atari_vector.py, envs/atari_backends.py)
BACKENDS = ("python", "envpool", "ale")

# the reference wraps only its MuJoCo envs in VecNormalize: these are on in the mujoco preset, off elsewhere
MUJOCO_NORMALIZATION = ("cont.obs_norm", "cont.obs_clip", "cont.reward_scaling", "cont.reward_clip")


def atari_details() -> tuple[str, ...]:
    """The switchable atari.* details: on in the atari presets only."""
    return tuple(i for i in switchable_ids() if i.startswith("atari."))


# the auxiliary details on by default: they act only where the env provides action masks, or under torchrun
AUX_ON = ("aux.action_masking", "aux.parallel_gradients")


def _default_details(on: tuple[str, ...] = (), off: tuple[str, ...] = ()) -> dict[str, bool]:
    # Every switchable detail of the reference on, except the auxiliary ones (but AUX_ON), MuJoCo's normalization
    # and the Atari preprocessing; ``on`` adds some of those back, ``off`` switches others off.
    return {i: ((not i.startswith(("aux.", "atari.")) and i not in MUJOCO_NORMALIZATION) or i in AUX_ON or i in on)
            and i not in off for i in switchable_ids()}


@dataclass
class Config:
    env_id: str = "CartPole-v1"
    """gymnasium environment id"""
    seed: int = 1
    """seed of the environments, the network initialization, sampling and minibatch shuffling"""
    total_steps: int = 500_000
    """environment steps to train for (summed over all envs; under torchrun, of each rank, as in the reference)"""
    num_envs: int = 4
    """parallel environments stepped together (core.vector_envs)"""
    num_steps: int = 128
    """steps collected per environment per update; batch = num_envs * num_steps"""
    num_minibatches: int = 4
    """minibatches per epoch (core.minibatches)"""
    update_epochs: int = 4
    """passes over the batch per update"""
    learning_rate: float = 2.5e-4
    """initial Adam learning rate (annealed linearly to lr/U at the last update with core.lr_annealing)"""
    adam_eps: float = 1e-5
    """Adam epsilon (core.adam_eps; off gives PyTorch's 1e-8)"""
    gamma: float = 0.99
    """discount factor"""
    reward_scaling_gamma: float = 0.99
    """discount of the return whose running std scales the rewards (cont.reward_scaling); the reference's
    VecNormalize keeps its default 0.99 whatever gamma is"""
    gae_lambda: float = 0.95
    """GAE lambda (core.gae; off gives 1.0)"""
    clip_coef: float = 0.2
    """clip range of the surrogate objective and of the value clipping"""
    ent_coef: float = 0.01
    """entropy bonus coefficient (core.entropy_bonus; off gives 0)"""
    vf_coef: float = 0.5
    """value loss coefficient"""
    max_grad_norm: float = 0.5
    """global gradient-norm bound (core.grad_clip)"""
    target_kl: float = 0.015
    """approx_kl above which an update stops after the current epoch (aux.target_kl, which setting it switches
    on)"""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """hidden layer widths of the MLP trunks, comma separated"""
    lstm_size: int = 0
    """units of an LSTM core between the trunk and the heads (the lstm.* details; the reference uses 128); 0 gives
    a feedforward policy. Minibatches are then whole env sequences: num_envs must divide by num_minibatches"""
    lstm_mlp: bool = False
    """with lstm_size: vector observations pass through the hidden_sizes tanh MLP before the LSTM, instead of
    going straight in as in the reference's lstm network"""
    squash_actions: bool = False
    """Box actions only: the env receives low + (tanh(u) + 1) / 2 * (high - low) of the Gaussian sample u (the
    rollout stores u; the log-prob includes the tanh log-det), instead of the reference's clipping of u
    (cont.action_clip); needs finite bounds"""
    device: str = "auto"
    """cpu, cuda, or auto (cuda when available)"""
    torch_threads: int = 1
    """CPU threads for torch and numpy's BLAS (0 keeps their defaults); small MLPs are fastest on one"""
    env_workers: int = 1
    """processes that step the envs, each a share of them (1: all in this process; 0: one per CPU core, at most
    one per env); the same transitions either way"""
    atari_repeat_first: bool = False
    """Atari: a new episode's frame stack holds 4 copies of its first frame (CleanRL, gymnasium's
    FrameStackObservation) instead of the reference's zeros and the frame (atari.frame_stack)"""
    ale_options: str = ""
    """Atari: emulator settings passed to the ale-py env, comma-separated key=value, e.g.
    repeat_action_probability=0.25 for v5's sticky actions; by default v4 and v5 ids run as the reference's
    NoFrameskip-v4 (frameskip 1 at the emulator, no sticky actions)"""
    fast_paths: bool = True
    """numpy rollout inference and numpy update for MLP policies on the CPU (discrete actions, and Gaussian ones:
    the update with the state-independent log std), tested to agree with the torch code; false trains with the
    torch code (do that when you change the loss)"""
    precision: str = "fp32"
    """the networks' matmuls and convolutions in fp32 (the reference) or bf16 (autocast: weights, optimizer state,
    losses and stored log-probs stay fp32), or auto: bf16 where the CPU or GPU has native bf16 and the torch path
    runs (docs/precision.md)"""
    backend: str = "python"
    """Atari only: python (the reference's wrapper chain, exact), envpool or ale (C++ vector envs, faster; they
    differ between episodes and in the max-pool order: docs/backends.md)"""
    dist_timeout: float = 300.0
    """under torchrun: seconds a rank waits for the others in a collective (gradient all-reduce, barrier) before
    it stops with an error naming what it waited for; a rank that died or hangs cannot stall the run longer"""
    dist_check_every: int = 10
    """under torchrun with aux.parallel_gradients: compare a checksum of the parameters across ranks every this
    many updates (and at the end), stopping if they differ"""
    checkpoint_every: int = 50
    """write a checkpoint every this many updates (and always at the end); 0 writes only the final one"""
    capture_video: bool = False
    """record env 0's episodes 0, 1, 8, 27, ..., 729, then every 1000th (CleanRL's schedule) to the run
    directory's videos/, for envs that render rgb_array (a factory's env must be made with that render_mode);
    the transitions are the same with or without it"""
    track: bool = False
    """log the run to Weights & Biases (pip install -e '.[wandb]', then wandb login, or WANDB_MODE=offline): the
    config, the TensorBoard scalars under the same names, the captured videos; run name = the run directory's"""
    wandb_project: str = "proximal"
    """with track: the W&B project"""
    wandb_entity: str = ""
    """with track: the W&B team or user (empty: your default entity)"""
    preset: str = "classic"
    """the preset these values started from (recorded for the run directory name and plots)"""
    details: dict[str, bool] = field(default_factory=_default_details)
    """switchable detail IDs and whether each is on; set with --on/--off"""

    # --- derived sizes -------------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def minibatches_per_epoch(self) -> int:
        # core.minibatches off: one full-batch gradient step per epoch
        return self.num_minibatches if self.on("core.minibatches") else 1

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.minibatches_per_epoch

    @property
    def num_updates(self) -> int:
        return self.total_steps // self.batch_size

    def on(self, detail_id: str) -> bool:
        return self.details[detail_id]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden_sizes"] = list(self.hidden_sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UserError(f"config has unknown fields {sorted(unknown)}: was it written by another version?")
        d = dict(d)
        if "hidden_sizes" in d:
            d["hidden_sizes"] = tuple(d["hidden_sizes"])
        details = _default_details()
        details.update(d.get("details", {}))
        d["details"] = details
        return cls(**d)


PRESETS: dict[str, Config] = {
    # CleanRL's ppo.py / the blog's classic-control settings; separate actor and critic (core.separate_networks)
    "classic": Config(),
    # the reference's MuJoCo settings (ppo2's mujoco defaults): one env, long rollouts, VecNormalize
    "mujoco": Config(env_id="HalfCheetah-v5", total_steps=1_000_000, num_envs=1, num_steps=2048, num_minibatches=32,
                     update_epochs=10, learning_rate=3e-4, ent_coef=0.0,
                     details=_default_details(on=MUJOCO_NORMALIZATION)),
    # the reference's Atari settings (ppo2's atari defaults, the 2020 code: clip range 0.1 constant): the wrapper
    # chain and frame stack, the shared Nature CNN (core.separate_networks off), uint8 frames scaled in the network
    # The CNN's update uses every core (torch_threads 0) and so do the emulators, in worker processes
    # (env_workers 0), while the update waits.
    "atari": Config(env_id="BreakoutNoFrameskip-v4", total_steps=10_000_000, num_envs=8, num_steps=128,
                    num_minibatches=4, update_epochs=4, learning_rate=2.5e-4, clip_coef=0.1, ent_coef=0.01,
                    vf_coef=0.5, gamma=0.99, gae_lambda=0.95, max_grad_norm=0.5, torch_threads=0, env_workers=0,
                    details=_default_details(on=atari_details(), off=("core.separate_networks",))),
    # the 2017 paper's Atari settings: the same with the clip range annealed with the learning rate
    "atari-2017": Config(env_id="BreakoutNoFrameskip-v4", total_steps=10_000_000, num_envs=8, num_steps=128,
                         num_minibatches=4, update_epochs=4, learning_rate=2.5e-4, clip_coef=0.1, ent_coef=0.01,
                         vf_coef=0.5, gamma=0.99, gae_lambda=0.95, max_grad_norm=0.5, torch_threads=0, env_workers=0,
                         details=_default_details(on=(*atari_details(), "aux.clip_annealing"),
                                                  off=("core.separate_networks",))),
    # the reference's lstm network (the observation straight into LSTM(128)) on the memory task. 32 envs: each of
    # the 4 minibatches replays 8 whole sequences, and the fused LSTM calls run on 1024 rows. The one LSTM under
    # both heads learns CartPole's returns of up to ~100 poorly: VecNormalize's reward scaling keeps the values
    # near 1, and the larger lr makes up for 8x fewer gradient steps per env step than classic's
    "classic-lstm": Config(env_id="proximal/CartPoleNoVelocity-v1", num_envs=32, learning_rate=2e-3, lstm_size=128,
                           details=_default_details(on=("cont.reward_scaling", "cont.reward_clip"))),
    # Gym-muRTS's grid mode against a bot, with the Atari settings (the Gym-muRTS and invalid-action-masking
    # papers' choice), the grid CNN (nets.GridCNN, chosen by the spaces) and action masks
    # (aux.action_masking, on by default). The CNN's update uses every core (torch_threads 0), the rollout's
    # inference one, beside the games' Java threads
    "microrts": Config(env_id="MicroRTS-basesWorkers16x16-randomBiasedAI", total_steps=10_000_000, num_envs=8,
                       num_steps=128, num_minibatches=4, update_epochs=4, learning_rate=2.5e-4, clip_coef=0.1,
                       ent_coef=0.01, vf_coef=0.5, gamma=0.99, gae_lambda=0.95, max_grad_norm=0.5, torch_threads=0,
                       details=_default_details(off=("core.separate_networks",))),
}
# the reference's cnn_lstm: the atari preset (its 4-frame stack included: the reference stacks frames for every
# Atari network) with Nature CNN -> LSTM(512 -> 128)
PRESETS["atari-lstm"] = replace(PRESETS["atari"], lstm_size=128, details=dict(PRESETS["atari"].details))
# proximal's own variant, not the reference's: one frame per observation, the LSTM alone carrying the motion the
# stack would show
PRESETS["atari-lstm-1frame"] = replace(PRESETS["atari-lstm"], details=_default_details(
    on=atari_details(), off=("core.separate_networks", "atari.frame_stack")))


def preset(name: str) -> Config:
    if name not in PRESETS:
        raise UserError(f"unknown preset '{name}'; choose one of: {', '.join(PRESETS)}")
    return replace(PRESETS[name], details=dict(PRESETS[name].details), preset=name)


def set_detail(cfg: Config, detail_id: str, value: bool) -> None:
    valid = switchable_ids()
    if detail_id not in valid:
        if detail_id in BY_ID:
            why = "is structural and cannot be switched" if not BY_ID[detail_id].switchable else "is not implemented yet"
        else:
            why = "is not a detail ID"
        raise UserError(f"'{detail_id}' {why}; switchable details: {', '.join(valid)}")
    cfg.details[detail_id] = value


# more torch threads than this only slow training down (and a very large count crashes torch's thread pool)
MAX_THREADS = 256
# seeds reach the envs (gymnasium and ALE take 0 <= seed < 2**31, plus an env's index) as well as torch and numpy
MAX_SEED = 2**31 - 2**20


def check_seed(seed: int) -> None:
    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"seed must lie in [0, {MAX_SEED}], got {seed}")


def _free_memory() -> int | None:
    """Bytes the machine can still give this process (MemAvailable); None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory_estimate(cfg: Config, obs_size: int = 1, obs_itemsize: int = 4) -> tuple[int, int]:
    """A lower bound on (the rollout's bytes, the networks' bytes). The rollout: per env step the observation and
    eight 4-byte entries (action, log-prob, value, reward, start, final value, advantage, return), twice (the
    buffer and the training batch the update reads), and 2 KiB per env (a gymnasium CartPole takes about 3.5).
    The networks: the MLP trunks' weights (two where
    core.separate_networks) and the LSTM's, each held four times (weights, gradients, Adam's two moments)."""
    steps = cfg.num_envs * cfg.num_steps
    rollout = 2 * steps * (obs_size * obs_itemsize + 8 * 4) + 2048 * cfg.num_envs
    sizes = (obs_size, *cfg.hidden_sizes)
    weights = sum((a + 1) * b for a, b in zip(sizes, sizes[1:])) * (2 if cfg.on("core.separate_networks") else 1)
    weights += 4 * cfg.lstm_size * (cfg.lstm_size + sizes[-1] + 2)
    return rollout, 4 * 4 * weights


def check_memory(cfg: Config, obs_size: int = 1, obs_itemsize: int = 4) -> None:
    """Refuse sizes whose rollout and networks cannot fit in the machine's free memory, before allocating them."""
    free = _free_memory()
    rollout, networks = memory_estimate(cfg, obs_size, obs_itemsize)
    if free is not None and rollout + networks > free:
        raise UserError(f"the rollout (num_envs {cfg.num_envs} x num_steps {cfg.num_steps} x {obs_size} observation "
                        f"values) needs {rollout / 2**30:.1f} GiB and the networks (hidden_sizes "
                        f"{','.join(map(str, cfg.hidden_sizes))}, lstm_size {cfg.lstm_size}) {networks / 2**30:.1f} "
                        f"GiB, more than the {free / 2**30:.1f} GiB of free memory: lower them")


def validate(cfg: Config) -> None:
    """Reject inconsistent values with one message that names the fix."""
    floats = [f.name for f in fields(Config) if isinstance(getattr(cfg, f.name), float)]
    bad = [name for name in floats if not math.isfinite(getattr(cfg, name))]
    if bad:
        raise UserError(f"{bad[0]} must be a finite number, got {getattr(cfg, bad[0])}: training with it would make "
                        "every parameter non-finite")
    check_seed(cfg.seed)
    if cfg.torch_threads > MAX_THREADS:
        raise UserError(f"torch_threads {cfg.torch_threads} is more than {MAX_THREADS}; use at most the machine's "
                        f"cores ({os.cpu_count()}), or 0 for torch's default")
    for name in ("total_steps", "num_envs", "num_steps", "num_minibatches", "update_epochs"):
        if getattr(cfg, name) <= 0:
            raise UserError(f"{name} must be positive, got {getattr(cfg, name)}")
    if cfg.batch_size % cfg.minibatches_per_epoch:
        raise UserError(f"batch size {cfg.batch_size} (num_envs {cfg.num_envs} x num_steps {cfg.num_steps}) is not "
                        f"divisible by num_minibatches {cfg.num_minibatches}; change one of them")
    if cfg.lstm_size and cfg.num_envs % cfg.minibatches_per_epoch:
        raise UserError(f"an LSTM policy trains on whole env sequences (lstm.sequential_minibatches): num_envs "
                        f"{cfg.num_envs} is not divisible by num_minibatches {cfg.num_minibatches}; change one of them")
    if cfg.total_steps < cfg.batch_size:
        raise UserError(f"total_steps {cfg.total_steps} is less than one batch ({cfg.batch_size}); raise it")
    checks = [
        (cfg.learning_rate > 0, "learning_rate must be positive"),
        (cfg.adam_eps > 0, "adam_eps must be positive"),
        (0 <= cfg.gamma <= 1, "gamma must lie in [0, 1]"),
        (0 <= cfg.reward_scaling_gamma <= 1, "reward_scaling_gamma must lie in [0, 1]"),
        (0 <= cfg.gae_lambda <= 1, "gae_lambda must lie in [0, 1]"),
        (cfg.clip_coef >= 0, "clip_coef must be >= 0"),
        (cfg.ent_coef >= 0, "ent_coef must be >= 0"),
        (cfg.vf_coef >= 0, "vf_coef must be >= 0"),
        (cfg.max_grad_norm > 0, "max_grad_norm must be positive (switch clipping off with --off core.grad_clip)"),
        (cfg.target_kl > 0, "target_kl must be positive"),
        (len(cfg.hidden_sizes) > 0 and all(h > 0 for h in cfg.hidden_sizes), "hidden_sizes must be positive widths"),
        (cfg.lstm_size >= 0, "lstm_size must be >= 0 (0: no LSTM)"),
        (cfg.lstm_size > 0 or not cfg.lstm_mlp, "lstm_mlp needs an LSTM: set lstm_size (the reference's is 128)"),
        (cfg.device in ("cpu", "cuda", "auto"), "device must be cpu, cuda or auto"),
        (cfg.torch_threads >= 0, "torch_threads must be >= 0"),
        (cfg.checkpoint_every >= 0, "checkpoint_every must be >= 0"),
        (cfg.dist_timeout > 0, "dist_timeout must be positive (seconds)"),
        (cfg.dist_check_every > 0, "dist_check_every must be positive (updates)"),
        (cfg.env_workers >= 0, "env_workers must be >= 0"),
        (cfg.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}"),
        (cfg.backend in BACKENDS, f"backend must be one of {', '.join(BACKENDS)}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    emulator = ale_options(cfg)
    if emulator.get("frameskip", 1) != 1 and cfg.on("atari.frame_skip"):
        raise UserError("ale_options frameskip skips frames in the emulator on top of atari.frame_skip's 4; "
                        "add --off atari.frame_skip to let the emulator skip instead")
    if emulator and cfg.backend != "python":
        raise UserError(f"ale_options set the Python chain's emulators; the {cfg.backend} backend runs its own "
                        "reference settings: drop --ale-options or use --backend python")
    if cfg.env_workers > 1 and cfg.backend != "python":
        raise UserError(f"env_workers {cfg.env_workers}: the {cfg.backend} backend steps its envs in its own C++ "
                        "threads, not in worker processes; drop --env-workers or use --backend python")
    if "max_num_frames_per_episode" in emulator:
        raise UserError("the Atari frame limit is the reference's (400k frames); ale_options cannot change it")
    check_memory(cfg)


def env_worker_count(cfg: Config) -> int:
    """The processes that step the envs: ``env_workers``, 0 meaning one per CPU core, at most one per env."""
    return max(1, min(cfg.env_workers or os.cpu_count() or 1, cfg.num_envs))


def ale_options(cfg: Config) -> dict:
    """``cfg.ale_options`` ("key=value,...") as keyword arguments; values are Python literals (numbers, True,
    False) or else strings, and "true"/"false" are booleans."""
    options = {}
    for item in filter(None, (part.strip() for part in cfg.ale_options.split(","))):
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"ale_options takes key=value pairs separated by commas, got '{item}'")
        text = text.strip()
        booleans = {"true": True, "false": False}
        if text.lower() in booleans:
            options[key.strip()] = booleans[text.lower()]
            continue
        try:
            options[key.strip()] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            options[key.strip()] = text
    return options


def field_docs() -> dict[str, str]:
    """The docstring written under each field of Config (these become the CLI's --help)."""
    tree = ast.parse(inspect.getsource(Config))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[node.target.id] = nxt.value.value
    return docs
