"""Typed options: the single source of truth for every setting and its default.

The dataclasses below are read by the CLI (``tyro`` turns each field's docstring into ``--help`` text), stored
resolved in every run directory as ``config.json``, and validated in one place (:func:`validate`).

Step accounting: every step count a user sees (``env_steps``, ``seed_steps``, ``eval_every``, CSV columns) is in
**environment steps, including action repeat**. Agent steps (one action, one replay transition) are env steps
divided by the action repeat; :func:`agent_steps` is the only place that converts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from kprl.errors import ConfigError
from kprl.runtime.files import atomic_write_text

AgentName = Literal["sac_ae", "sac_ae_imm", "sac_imm"]
AugmentationName = Literal["none", "crop", "shift"]
Precision = Literal["auto", "fp32", "bf16"]
UpdatePath = Literal["fast", "reference"]
NormName = Literal["none", "batch", "instance"]
IMMAugmentation = Literal["crop", "none"]

# Published DrQ and DrQ-v2 per-seed curves shipped with kprl (reference_results/README.md cites them); the
# default of `kprl report --reference-results`.
PUBLISHED_CURVES = Path(__file__).parent / "reference_results"

# Extra pixels rendered around the network's view when random crop is on (CURL / the poster: 100 -> 84).
CROP_MARGIN = 16



# What kind of option a field is, carried by the field itself. ``EXECUTION``: how a run executes or is logged, not
# which method it is (left out of the report's variant labels). ``RESUMABLE``: an execution option a resumed run
# may change (more env steps, another device); every other option must match the stored config to resume.
EXECUTION = {"execution": True}
RESUMABLE = {"execution": True, "resumable": True}


def options_marked(cls: type, key: str) -> frozenset[str]:
    """Names of ``cls``'s top-level fields whose metadata sets ``key`` (``execution`` or ``resumable``)."""
    return frozenset(f.name for f in dataclasses.fields(cls) if f.metadata.get(key))

@dataclass
class EnvConfig:
    """The dm_control task and how it is turned into pixel observations."""

    task: Annotated[str, tyro.conf.arg(aliases=("--env",))] = "cartpole_swingup"
    """dm_control task as ``domain_task`` (cartpole_swingup, reacher_easy, cheetah_run, finger_spin,
    ball_in_cup_catch, walker_walk, ...), or ``gym:ID`` for a Gymnasium environment that renders rgb_array
    (gym:InvertedPendulum-v5; docs/gymnasium.md). ``--env`` is the same option."""
    image_size: int = 84
    """Side in pixels of the square image the networks see."""
    action_repeat: int | None = None
    """Physics steps per agent action; None takes the PlaNet value of the domain (cartpole 8, reacher 4, ...),
    1 for Gymnasium environments."""
    frame_stack: int = 3
    """Consecutive frames stacked into one observation."""
    camera_id: int | None = None
    """Camera to render from; None takes the task's default (0; quadruped 2)."""
    time_limit: float | None = None
    """Episode length in simulated seconds; None keeps the task's (10 s for the benchmark tasks). For quick tests."""


@dataclass
class SACConfig:
    """Soft actor-critic (Haarnoja et al. 2018) as configured in SAC+AE (Yarats et al. 2019, Table 2)."""

    hidden_dim: int = 1024
    """Width of the two hidden layers of actor and critic MLPs."""
    discount: float = 0.99
    """Reward discount gamma."""
    init_temperature: float = 0.1
    """Initial entropy temperature alpha."""
    alpha_lr: float = 1e-4
    """Adam learning rate of log alpha."""
    alpha_beta: float = 0.5
    """Adam beta1 of log alpha."""
    actor_lr: float = 1e-3
    """Adam learning rate of the actor."""
    actor_beta: float = 0.9
    """Adam beta1 of the actor."""
    actor_log_std_min: float = -10.0
    """Lower bound of the policy's log standard deviation."""
    actor_log_std_max: float = 2.0
    """Upper bound of the policy's log standard deviation."""
    actor_update_every: int = 2
    """Update the actor and alpha every this many updates."""
    critic_lr: float = 1e-3
    """Adam learning rate of the TD loss's step: the Q networks and, with rl_trains_encoder, the conv trunk and the
    critic's heads (latent, keypoints)."""
    critic_beta: float = 0.9
    """Adam beta1 of the critic."""
    critic_tau: float = 0.01
    """EMA rate of the target Q networks."""
    critic_target_update_every: int = 2
    """Update the target networks every this many updates."""
    target_entropy: float | None = None
    """Entropy target; None means -|A| (Haarnoja et al. 2018)."""
    rl_trains_encoder: bool = True
    """Whether the TD loss trains the conv trunk and the critic's heads (SAC+AE, the poster). False decouples
    representation learning from RL (ATC, Stooke et al. 2020): the critic reads its features detached, so the
    encoder is shaped by the auxiliary losses alone (SAC+AE's by reconstruction, the keypoints by IMM) and the TD
    loss trains only the Q networks."""


@dataclass
class EncoderConfig:
    """The convolutional encoder shared by critic and actor (SAC+AE, Section 4)."""

    num_conv_layers: int = 4
    """3x3 conv layers (the first with stride 2, the rest stride 1)."""
    num_filters: int = 32
    """Channels of every conv layer."""
    latent_dim: int = 50
    """Size of the latent code after FC -> LayerNorm -> tanh."""
    encoder_tau: float = 0.05
    """EMA rate of the target encoder (faster than the Q networks')."""


@dataclass
class AEConfig:
    """The pixel autoencoder of SAC+AE (Yarats et al. 2019, Section 5)."""

    encoder_lr: float = 1e-3
    """Adam learning rate of the reconstruction loss's step on the conv trunk and the latent head (agents with an
    autoencoder: sac_ae, sac_ae_imm)."""
    decoder_lr: float = 1e-3
    """Adam learning rate of the decoder."""
    decoder_update_every: int = 1
    """Reconstruction update every this many updates."""
    decoder_latent_lambda: float = 1e-6
    """Weight of the L2 penalty on the latent code (the RAE regulariser of Ghosh et al. 2019)."""
    decoder_weight_decay: float = 1e-7
    """L2 weight decay of the decoder (RAE)."""
    reconstruction_bits: int = 5
    """Bit depth of the reconstruction target (Kingma & Dhariwal 2018 style dequantised 5-bit images)."""


@dataclass
class IMMConfig:
    """The IMM keypoint model (Jakab et al. 2018; the poster): KeyNet finds K keypoints in the target frame, GenNet
    renders the target from the source frame and the keypoints' Gaussian maps; the loss is the pixel MSE."""

    keypoints: int = 3
    """Number of keypoints K (the poster: 3)."""
    sigma: float = 0.1
    """Standard deviation of the Gaussian maps, in normalised [-1, 1] coordinates (map = exp(-d^2 / sigma^2))."""
    num_conv_layers: int = 4
    """3x3 conv layers of the KeyNet and GenNet image encoders (first stride 2). With 84 px frames, 4 layers give
    35 x 35 score and Gaussian maps; fewer layers give larger maps."""
    num_filters: int = 32
    """Channels of the encoders and the renderer."""
    norm: NormName = "none"
    """Normalisation after each conv of the encoders and renderer: none, batch (IMM's choice) or instance."""
    mix_layers: int = 2
    """3x3 convs that mix source features and Gaussian maps at map resolution, with dilations 1, 2, 4, ...: the
    renderer must see from a keypoint to every pixel it explains (a pole spans ~12 cells of a 35 x 35 map; two
    undilated layers see 5). IMM's 16 x 16 maps need no dilation."""
    same_padding: bool = False
    """Pad every 3x3 conv of KeyNet and GenNet by one pixel (not in SAC+AE, whose encoder the agents share): the
    score maps then reach the frame's edges (42 x 42 over all of an 84 px frame) instead of stopping 7.5 px inside
    each side, so a keypoint on a pole tip near the edge is not held back at the border."""
    source_skip: bool = False
    """Also give the renderer the source frame at full resolution (a skip connection; not in IMM): the static
    background is then copied rather than re-drawn from 35 x 35 maps, so the loss concentrates on what moved."""
    lr: float = 1e-3
    """Adam learning rate (the poster: 1e-3; its follow-up found 2e-4 better)."""
    separation_weight: float = 0.0
    """Weight of the temporal separation loss (Minderer et al. 2019) added to the MSE: it charges keypoints of
    the source and target frame that move alike, so that two keypoints do not follow one object. 0 (the poster)
    turns it off; with it on, KeyNet also sees the source frame."""
    separation_sigma: float = 0.1
    """Distance scale of the separation loss in [-1, 1] coordinates: keypoints whose motions differ by much more
    than this cost nothing (Minderer et al.: 0.1)."""


@dataclass
class IMMTrainConfig:
    """Standalone IMM training on a frame dataset written by ``kprl collect``."""

    data: Path = Path("data/cartpole")
    """Dataset directory (``kprl collect --out``)."""
    run_dir: Path = field(default=Path("runs/imm"), metadata=RESUMABLE)
    """Directory for config, logs, checkpoints and figures. Rerunning with the same directory resumes."""
    seed: int = 1
    """Seed of initialisation, pair sampling and augmentation."""
    steps: int = field(default=4000, metadata=RESUMABLE)
    """Gradient updates to train for."""
    batch_size: int = 32
    """Source/target pairs per update."""
    image_size: int = 84
    """Side of the frames the networks see: random crops of the dataset frames when training, centre crops when
    evaluating (the dataset's 100 px frames give the agent's 84 px view)."""
    augmentation: IMMAugmentation = "crop"
    """crop: a random image_size window of the dataset frame, the same window for source and target (the
    poster); none: centre crop only."""
    max_offset: int = 10
    """A pair is two frames of one episode min_offset..max_offset agent steps apart (either order)."""
    min_offset: int = 1
    """Smallest distance of a pair, in agent steps: above 1 it keeps nearly identical pairs out, where the generator
    can copy the moving parts from the source instead of drawing them from the keypoints."""
    val_fraction: float = 0.2
    """Fraction of episodes held out for validation (loss, figures, landmark regression)."""
    val_pairs: int = 256
    """Fixed validation pairs on which the validation loss is measured."""
    eval_every: int = 500
    """Measure validation loss (and landmark error) every this many updates."""
    checkpoint_every: int = field(default=500, metadata=RESUMABLE)
    """Write a resumable checkpoint every this many updates."""
    log_every: int = field(default=50, metadata=RESUMABLE)
    """Write a train.csv row every this many updates."""
    precision: Precision = "auto"
    """auto (bf16 where the CPU or GPU computes it natively, else fp32), fp32, or bf16 autocast."""
    device: str = field(default="cpu", metadata=RESUMABLE)
    """Torch device: cpu, cuda, cuda:1, ..."""
    threads: int | None = field(default=None, metadata=RESUMABLE)
    """Torch intra-op threads; None leaves torch's default."""
    model: IMMConfig = field(default_factory=IMMConfig)


@dataclass
class KeypointAgentConfig:
    """The IMM part of the keypoint agents (sac_ae_imm, sac_imm; the poster): a KeypointHead on the shared
    encoder's maps gives K keypoints (2K features); a GenNet renders the target observation, ``imm_target_offset``
    steps later in the episode, from the observation and the target's keypoints (Jakab et al. 2018)."""

    keypoints: int = 3
    """Number of keypoints K (the poster: 3)."""
    sigma: float = 0.1
    """Standard deviation of the Gaussian maps in normalised [-1, 1] coordinates."""
    imm_lr: float = 1e-3
    """Adam learning rate of the IMM loss's step on everything it trains: the shared conv trunk, the keypoint head
    and the GenNet (the poster: 1e-3; its follow-up found 2e-4 better)."""
    imm_update_every: int = 1
    """IMM update every this many agent updates."""
    imm_target_offset: int = 3
    """The IMM target is the observation this many agent steps later in the same episode (1 = next_obs). With
    3-frame stacks, 3 is the smallest offset whose target shares no frame with the source, so the generator cannot
    copy the target from the source and must read the keypoints (docs/agents/sac_imm.md: after 10k env steps the
    cart is read off the keypoints to 6-12 px instead of 15-16 px, and the keypoints follow the scene more)."""
    imm_mix_layers: int = 2
    """Dilated 3x3 convs mixing source features and Gaussian maps in the GenNet (see kprl imm train)."""
    per_frame: bool = False
    """Find keypoints in each frame of the stack separately (the conv trunk runs per frame; S*K keypoints, all
    frames' concatenated), so the agent sees where things were and are: motion. The poster's KeyNet mixed the
    three stacked frames into one set of keypoints."""
    keypoint_features: bool = False
    """Actor and critic also get, per keypoint, the conv features averaged under its Gaussian map (what is at the
    keypoint, not only where): K x filters more features per frame."""
    pretrained_imm: Path | None = None
    """Initialise the keypoint head and conv trunk from a `kprl imm train` run or checkpoint (the poster's
    IMM pretrained on a pregenerated buffer). Needs per_frame (standalone IMM sees single frames) and the same
    keypoints, filters, conv layers and image size."""
    freeze_keynet: bool = False
    """With pretrained_imm: keep the pretrained conv trunk and keypoint head fixed (no IMM, critic or AE updates
    reach them; the IMM objective is then dropped). Otherwise they are fine-tuned."""


@dataclass
class TrainConfig:
    """One training run: an agent on a task, from pixels."""

    agent: AgentName = "sac_ae"
    """Agent: sac_ae (SAC+AE, Yarats et al. 2019); sac_ae_imm (the poster: SAC+AE whose features are the latent
    and IMM keypoints found on the shared encoder's maps); sac_imm (the poster: keypoints only, no decoder)."""
    run_dir: Path = field(default=Path("runs/default"), metadata=RESUMABLE)
    """Directory for config, logs, checkpoints and videos. Rerunning with the same directory resumes."""
    seed: int = field(default=1, metadata=EXECUTION)
    """Seed of environment, networks and sampling."""
    env_steps: int = field(default=100_000, metadata=RESUMABLE)
    """Total environment steps (including action repeat) to train for."""
    seed_steps: int | None = None
    """Environment steps of uniformly random actions before the agent acts and updates; None means 1000 agent
    steps (pytorch_sac_ae's init_steps), i.e. 1000 x action repeat env steps (cartpole: 8000)."""
    seed_update_burst: bool = True
    """When the seed steps end, do as many updates at once as there were seed agent steps (pytorch_sac_ae)."""
    batch_size: int = 128
    """Transitions per update."""
    replay_capacity: int = 100_000
    """Replay capacity in agent transitions."""
    augmentation: AugmentationName = "none"
    """Image augmentation of sampled observations: none (SAC+AE), crop (render +16 px, random crop back; CURL and
    the poster), shift (pad 4, random crop back; DrQ)."""
    precision: Precision = field(default="auto", metadata=EXECUTION)
    """Arithmetic of network forward passes: auto (bf16 where the CPU or GPU computes it natively, e.g. AVX512-BF16,
    AMX or an Ampere+ GPU; fp32 elsewhere), fp32 (the reference), or bf16 autocast for the convolutional networks
    and the latent head's linear layer (the Q and policy MLPs, log-probabilities, TD target and temperature stay
    fp32; pixel losses are computed in bf16, see docs/performance.md)."""
    update_path: UpdatePath = field(default="fast", metadata=EXECUTION)
    """fast: one encoder pass on the observation shared by the critic, the auxiliary losses and (detached) the actor,
    channels-last convolutions, fused Adam (docs/performance.md); reference: pytorch_sac_ae's update structure, the
    encoder run again for every loss. Both compute the same losses and gradients at the same parameters."""
    eval_every: int = field(default=10_000, metadata=EXECUTION)
    """Evaluate every this many environment steps (and at the start and the end)."""
    eval_episodes: int = field(default=10, metadata=EXECUTION)
    """Episodes per evaluation (deterministic policy: the mean action)."""
    checkpoint_every: int = field(default=10_000, metadata=RESUMABLE)
    """Write a resumable checkpoint (with the replay buffer) every this many environment steps. A killed run loses
    what it did since its last checkpoint; a resumed run may checkpoint more or less often (it computes the same)."""
    keep_checkpoints: int = field(default=1, metadata=RESUMABLE)
    """How many of the newest checkpoints to keep. Each holds the networks, target networks and optimiser moments
    (~145 MB for sac_ae) and the replay buffer (~21 KB per stored 84 px frame, 30 KB at 100 px: ~265 / 375 MB at
    100k env steps with action repeat 8)."""
    video: bool = field(default=True, metadata=RESUMABLE)
    """Record the first episode of every evaluation as an mp4."""
    video_size: int = field(default=256, metadata=EXECUTION)
    """Side in pixels of evaluation videos."""
    device: str = field(default="cpu", metadata=RESUMABLE)
    """Torch device: cpu, cuda, cuda:1, ..."""
    threads: int | None = field(default=None, metadata=RESUMABLE)
    """Torch intra-op threads; None leaves torch's default (all cores)."""
    wandb: bool = field(default=False, metadata=RESUMABLE)
    """Also log every train/eval row to Weights & Biases (pip install 'kprl[wandb]'; WANDB_MODE=offline works
    without network). CSV and TensorBoard are always written."""
    wandb_project: str = field(default="kprl", metadata=RESUMABLE)
    """W&B project of the run (with --wandb)."""
    log_every: int = field(default=1000, metadata=RESUMABLE)
    """Print a console progress line every this many environment steps (train.csv gets a row every episode)."""
    env: EnvConfig = field(default_factory=EnvConfig)
    sac: SACConfig = field(default_factory=SACConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    ae: AEConfig = field(default_factory=AEConfig)
    keypoint: KeypointAgentConfig = field(default_factory=KeypointAgentConfig)


RESUMABLE_FIELDS = options_marked(TrainConfig, "resumable") | options_marked(IMMTrainConfig, "resumable")
"""Options that may differ between the stored config of a run and the command that resumes it."""


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Every option of a config dataclass by its dotted name (``sac.actor_lr``), nested dataclasses expanded."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def option_name(name: str, cls: type = TrainConfig) -> str:
    """The dotted name of an option given as dotted (``keypoint.imm_lr``), as its field (``imm_lr``) or as its flag
    (``--imm-lr``, ``imm-lr``); a :class:`ConfigError` for an unknown name."""
    names = list(flatten(cls()))
    key = name.strip().lstrip("-").replace("-", "_")
    if key in names:
        return key
    matches = [n for n in names if n.rsplit(".", 1)[-1] == key]
    if len(matches) == 1:
        return matches[0]
    raise ConfigError(f"unknown option {name!r} (see kprl train --help)")


def with_options(cfg: Any, options: dict[str, Any]) -> Any:
    """A copy of ``cfg`` with options set by name (any spelling :func:`option_name` accepts), values converted
    from JSON/YAML form like :func:`from_dict` does (paths from strings)."""
    data = to_dict(cfg)
    for name, value in options.items():
        dotted = option_name(name, type(cfg))
        *parents, leaf = dotted.split(".")
        node, owner = data, cfg
        for part in parents:
            node, owner = node[part], getattr(owner, part)
        node[leaf] = _coerce(dotted, value, typing.get_type_hints(type(owner))[leaf])
    return from_dict(type(cfg), data)


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """``value`` as the type ``hint`` of option ``name`` wants it (YAML reads ``1e-4`` as a string, JSON ``3.0``
    as a float); a :class:`ConfigError` when it cannot be."""
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
    if optional and value is None and type(None) in typing.get_args(hint):
        return None
    kind = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    if typing.get_origin(kind) is Literal:
        _check(value in typing.get_args(kind), f"{flag(name)} must be one of {typing.get_args(kind)}, got {value!r}")
        return value
    if kind is bool:
        _check(isinstance(value, bool), f"{flag(name)} must be true or false, got {value!r}")
        return value
    if kind is Path:
        return Path(value)
    if kind not in (int, float):
        return value
    try:
        number = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        number = math.nan
    _check(math.isfinite(number) and (kind is float or number.is_integer()),
           f"{flag(name)} must be {'a number' if kind is float else 'an integer'}, got {value!r}")  # fmt: skip
    return kind(number)


def render_size(cfg: TrainConfig) -> int:
    """Side of the rendered (and stored) frames: larger than the network input when random crop is on."""
    return cfg.env.image_size + (CROP_MARGIN if cfg.augmentation == "crop" else 0)


SEED_AGENT_STEPS = 1000  # pytorch_sac_ae's init_steps, counted in actions


def seed_env_steps(cfg: TrainConfig, action_repeat: int) -> int:
    """The seed phase in env steps: ``cfg.seed_steps``, or 1000 actions when it is None."""
    return SEED_AGENT_STEPS * action_repeat if cfg.seed_steps is None else cfg.seed_steps


def agent_steps(env_steps: int, action_repeat: int) -> int:
    """Convert environment steps to agent steps (actions / transitions). The one place that does it."""
    return env_steps // action_repeat


def flag(name: str) -> str:
    """The command-line spelling of an option: ``sac.actor_lr`` -> ``--actor-lr`` (prefixes are omitted)."""
    return "--" + name.rsplit(".", 1)[-1].replace("_", "-")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg: TrainConfig) -> None:
    """Reject impossible settings with a one-line :class:`ConfigError` naming the option."""
    pos_int = {
        "env_steps": cfg.env_steps,
        "batch_size": cfg.batch_size,
        "replay_capacity": cfg.replay_capacity,
        "eval_every": cfg.eval_every,
        "eval_episodes": cfg.eval_episodes,
        "checkpoint_every": cfg.checkpoint_every,
        "keep_checkpoints": cfg.keep_checkpoints,
        "video_size": cfg.video_size,
        "log_every": cfg.log_every,
        "env.image_size": cfg.env.image_size,
        "env.frame_stack": cfg.env.frame_stack,
        "sac.hidden_dim": cfg.sac.hidden_dim,
        "sac.actor_update_every": cfg.sac.actor_update_every,
        "sac.critic_target_update_every": cfg.sac.critic_target_update_every,
        "encoder.num_conv_layers": cfg.encoder.num_conv_layers,
        "encoder.num_filters": cfg.encoder.num_filters,
        "encoder.latent_dim": cfg.encoder.latent_dim,
        "ae.decoder_update_every": cfg.ae.decoder_update_every,
        "keypoint.keypoints": cfg.keypoint.keypoints,
        "keypoint.imm_update_every": cfg.keypoint.imm_update_every,
        "keypoint.imm_target_offset": cfg.keypoint.imm_target_offset,
        "keypoint.imm_mix_layers": cfg.keypoint.imm_mix_layers,
    }
    for name, value in pos_int.items():
        _check(value >= 1, f"{flag(name)} must be >= 1, got {value}")
    if cfg.env.time_limit is not None:
        _check(cfg.env.time_limit > 0, f"--time-limit must be > 0, got {cfg.env.time_limit}")
    if cfg.env.action_repeat is not None:
        _check(cfg.env.action_repeat >= 1, f"--action-repeat must be >= 1, got {cfg.env.action_repeat}")
    if cfg.seed_steps is not None:
        _check(cfg.seed_steps >= 0, f"--seed-steps must be >= 0, got {cfg.seed_steps}")
        _check(
            cfg.env_steps > cfg.seed_steps,
            f"--env-steps ({cfg.env_steps}) must exceed --seed-steps ({cfg.seed_steps}): no update would run",
        )
    positive = {
        "sac.actor_lr": cfg.sac.actor_lr,
        "sac.critic_lr": cfg.sac.critic_lr,
        "sac.alpha_lr": cfg.sac.alpha_lr,
        "sac.init_temperature": cfg.sac.init_temperature,
        "ae.encoder_lr": cfg.ae.encoder_lr,
        "ae.decoder_lr": cfg.ae.decoder_lr,
        "keypoint.sigma": cfg.keypoint.sigma,
        "keypoint.imm_lr": cfg.keypoint.imm_lr,
    }
    for name, value in positive.items():
        _check(math.isfinite(value) and value > 0, f"{flag(name)} must be > 0, got {value}")
    for name, value in {
        "sac.critic_tau": cfg.sac.critic_tau,
        "encoder.encoder_tau": cfg.encoder.encoder_tau,
        "sac.discount": cfg.sac.discount,
        "sac.actor_beta": cfg.sac.actor_beta,
        "sac.critic_beta": cfg.sac.critic_beta,
        "sac.alpha_beta": cfg.sac.alpha_beta,
    }.items():
        _check(0 <= value <= 1, f"{flag(name)} must be in [0, 1], got {value}")
    _check(cfg.ae.decoder_latent_lambda >= 0, "--decoder-latent-lambda must be >= 0")
    _check(cfg.ae.decoder_weight_decay >= 0, "--decoder-weight-decay must be >= 0")
    _check(1 <= cfg.ae.reconstruction_bits <= 8, "--reconstruction-bits must be in [1, 8]")
    _check(
        cfg.sac.actor_log_std_min < cfg.sac.actor_log_std_max,
        "--actor-log-std-min must be below --actor-log-std-max",
    )
    _check(
        cfg.env.image_size >= 2 * cfg.encoder.num_conv_layers + 8,
        f"--image-size {cfg.env.image_size} is too small",
    )
    _check(cfg.threads is None or cfg.threads >= 1, "--threads must be >= 1")
    _check(
        cfg.device == "cpu" or cfg.device.startswith("cuda") or cfg.device == "mps",
        f"--device must be cpu, cuda or cuda:N, got {cfg.device!r}",
    )
    keypoint_agent = cfg.agent in ("sac_ae_imm", "sac_imm")
    _check(
        keypoint_agent
        or (
            not cfg.keypoint.per_frame
            and cfg.keypoint.pretrained_imm is None
            and not cfg.keypoint.keypoint_features
        ),
        f"--per-frame, --keypoint-features and --pretrained-imm need a keypoint agent (sac_ae_imm, sac_imm), not {cfg.agent}",
    )
    _check(
        cfg.keypoint.pretrained_imm is None or cfg.keypoint.per_frame,
        "--pretrained-imm needs --per-frame",
    )
    _check(not cfg.keypoint.freeze_keynet or cfg.keypoint.pretrained_imm is not None,
           "--freeze-keynet needs --pretrained-imm")  # fmt: skip


def validate_imm_model(model: IMMConfig, image_size: int) -> None:
    """Reject impossible IMM model settings (one-line :class:`ConfigError`)."""
    _check(model.keypoints >= 1, f"--keypoints must be >= 1, got {model.keypoints}")
    _check(math.isfinite(model.sigma) and model.sigma > 0, f"--sigma must be > 0, got {model.sigma}")
    _check(model.num_conv_layers >= 1, f"--num-conv-layers must be >= 1, got {model.num_conv_layers}")
    _check(model.num_filters >= 1, f"--num-filters must be >= 1, got {model.num_filters}")
    _check(model.mix_layers >= 1, f"--mix-layers must be >= 1, got {model.mix_layers}")
    _check(math.isfinite(model.lr) and model.lr > 0, f"--lr must be > 0, got {model.lr}")
    _check(
        math.isfinite(model.separation_weight) and model.separation_weight >= 0,
        f"--separation-weight must be >= 0, got {model.separation_weight}",
    )
    _check(
        math.isfinite(model.separation_sigma) and model.separation_sigma > 0,
        f"--separation-sigma must be > 0, got {model.separation_sigma}",
    )
    _check(
        image_size >= 2 * model.num_conv_layers + 8,
        f"--image-size {image_size} is too small for {model.num_conv_layers} conv layers",
    )


def validate_imm_train(cfg: IMMTrainConfig) -> None:
    """Reject impossible standalone-IMM settings (one-line :class:`ConfigError`)."""
    for name, value in {
        "steps": cfg.steps,
        "batch_size": cfg.batch_size,
        "image_size": cfg.image_size,
        "max_offset": cfg.max_offset,
        "min_offset": cfg.min_offset,
        "val_pairs": cfg.val_pairs,
        "eval_every": cfg.eval_every,
        "checkpoint_every": cfg.checkpoint_every,
        "log_every": cfg.log_every,
    }.items():
        _check(value >= 1, f"{flag(name)} must be >= 1, got {value}")
    _check(
        cfg.min_offset <= cfg.max_offset,
        f"--min-offset ({cfg.min_offset}) must be <= --max-offset ({cfg.max_offset})",
    )
    _check(0 < cfg.val_fraction < 1, f"--val-fraction must be in (0, 1), got {cfg.val_fraction}")
    _check(
        cfg.checkpoint_every % cfg.log_every == 0,
        f"--checkpoint-every ({cfg.checkpoint_every}) must be a multiple of --log-every ({cfg.log_every}), so that a"
        " resumed run logs the same rows as an uninterrupted one",
    )
    _check(cfg.threads is None or cfg.threads >= 1, "--threads must be >= 1")
    _check(
        cfg.device == "cpu" or cfg.device.startswith("cuda") or cfg.device == "mps",
        f"--device must be cpu, cuda or cuda:N, got {cfg.device!r}",
    )
    validate_imm_model(cfg.model, cfg.image_size)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (paths as strings)."""

    def convert(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    return convert(dataclasses.asdict(cfg))


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a config dataclass from :func:`to_dict` output; unknown keys are a :class:`ConfigError`."""
    kwargs: dict[str, Any] = {}
    defaults = cls()
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"unknown option {key!r} in config for {cls.__name__}")
        default = getattr(defaults, key)
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ConfigError(
                    f"option {key!r} in config must be an object of {type(default).__name__} options"
                )
            kwargs[key] = from_dict(type(default), value)
        elif isinstance(default, Path):
            kwargs[key] = Path(value)
        else:
            kwargs[key] = value
    return cls(**kwargs)


def save_json(cfg: Any, path: Path) -> None:
    """Write the resolved config as indented JSON (atomically)."""
    atomic_write_text(path, json.dumps(to_dict(cfg), indent=2, sort_keys=True) + "\n")


def load_json(cls: type, path: Path) -> Any:
    """Read a config written by :func:`save_json` (or by hand: a subset of keys is fine)."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc.msg} at line {exc.lineno}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a JSON object")
    return from_dict(cls, data)


def require_rl_run(run_dir: Path, command: str) -> None:
    """A one-line :class:`ConfigError` when ``run_dir`` holds a standalone IMM run (``kprl imm train``: its config
    names a frame dataset and no agent) rather than the RL run ``command`` works on, saying which command fits."""
    try:
        data = json.loads((Path(run_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return
    if isinstance(data, dict) and "data" in data and "agent" not in data:
        instead = {"kprl plot": "kprl imm figure", "kprl eval": "kprl imm eval"}.get(command, "the kprl imm commands")
        raise ConfigError(f"{run_dir} is a `kprl imm train` run, not an RL run: use `{instead} --run-dir {run_dir}`")


def config_differences(stored: dict[str, Any], requested: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of options whose values differ between two :func:`to_dict` dicts (resumable ones ignored)."""
    diffs: list[str] = []
    for key in sorted(set(stored) | set(requested)):
        if not prefix and key in RESUMABLE_FIELDS:
            continue
        a, b = stored.get(key), requested.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += config_differences(a, b, prefix=f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key} ({a!r} -> {b!r})")
    return diffs
