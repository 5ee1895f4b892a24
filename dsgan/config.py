"""Typed, validated configuration for a dsgan run.

Every run goes through `load_config` before any process group starts. A run config is a YAML (or JSON/TOML) file;
each network's DeepSpeed config is either inline or a path (relative to the run config's folder) to a JSON file.
DeepSpeed owns the batch and optimizer settings (`train_micro_batch_size_per_gpu`, `gradient_accumulation_steps`,
`optimizer`, precision, ZeRO); dsgan owns the rest and checks that the two agree.
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from dsgan.errors import ConfigError

NonNegativeFloat = Annotated[float, Field(ge=0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


# ----------------------------------------------------------------------------------------------------------------
# Models


class Activation(Strict):
    type: Literal["ReLU", "LeakyReLU"] = "ReLU"
    inplace: bool = True
    negative_slope: Annotated[float, Field(ge=0, lt=1)] = 0.2
    """Only used by LeakyReLU."""


class DCGANGenerator(Strict):
    """Radford et al. 2016: transposed convolutions + BatchNorm; conditional via a label embedding on z."""

    type: Literal["DCGANGenerator"] = "DCGANGenerator"
    output_scale: Literal[16, 32, 64] = 32
    noise_size: PositiveInt = 64
    num_classes: Annotated[int, Field(ge=0)] = 10
    """0 = unconditional."""
    base_channels: PositiveInt = 64
    out_channels: PositiveInt = 3


class DCGANDiscriminator(Strict):
    type: Literal["DCGANDiscriminator"] = "DCGANDiscriminator"
    input_scale: Literal[16, 32, 64] = 32
    num_classes: Annotated[int, Field(ge=0)] = 10
    """0 = unconditional; otherwise projection conditioning (Miyato & Koyama 2018)."""
    base_channels: PositiveInt = 64
    in_channels: PositiveInt = 3
    with_spectral_norm: bool = False
    sn_eps: PositiveFloat = 1e-12


class SNGANGenerator(Strict):
    """Miyato et al. 2018 ResNet generator (CIFAR layout)."""

    type: Literal["SNGANGenerator"] = "SNGANGenerator"
    output_scale: Literal[32, 64] = 32
    noise_size: PositiveInt = 128
    num_classes: Annotated[int, Field(ge=0)] = 0
    base_channels: PositiveInt = 256
    out_channels: PositiveInt = 3


class SNGANDiscriminator(Strict):
    type: Literal["SNGANDiscriminator"] = "SNGANDiscriminator"
    input_scale: Literal[32, 64] = 32
    num_classes: Annotated[int, Field(ge=0)] = 0
    base_channels: PositiveInt = 128
    in_channels: PositiveInt = 3
    sn_eps: PositiveFloat = 1e-12


class BigGANGenerator(Strict):
    """Brock et al. 2019, with every field of MMagic's BigGANGenerator that the seed's BigGAN-128 config sets."""

    type: Literal["BigGANGenerator"] = "BigGANGenerator"
    output_scale: Literal[32, 64, 128, 256] = 128
    noise_size: PositiveInt = 120
    num_classes: Annotated[int, Field(ge=0)] = 1000
    base_channels: PositiveInt = 96
    shared_dim: PositiveInt = 128
    with_shared_embedding: bool = True
    sn_eps: PositiveFloat = 1e-6
    init_type: Literal["ortho", "N02", "xavier"] = "ortho"
    act: Activation = Activation()
    split_noise: bool = True
    """Hierarchical z: one chunk for the first linear layer and one per residual block."""
    with_spectral_norm: bool = True
    auto_sync_bn: bool = False
    """Accepted for MMagic compatibility; must stay false (per-rank BatchNorm statistics, as the seed trains)."""
    out_channels: PositiveInt = 3

    @model_validator(mode="after")
    def _check(self) -> BigGANGenerator:
        if self.auto_sync_bn:
            raise ValueError("auto_sync_bn=True is not supported: BatchNorm statistics are per rank, as in the seed")
        slots = {32: 4, 64: 5, 128: 6, 256: 7}[self.output_scale]  # the first linear layer + one per block
        if self.split_noise and self.noise_size % slots:
            raise ValueError(
                f"noise_size={self.noise_size} is not divisible by {slots} (the first linear layer + {slots - 1} "
                f"blocks at output_scale {self.output_scale}, split_noise=true): use {self.noise_size // slots * slots}"
                " (MMagic and BigGAN-PyTorch round down to it silently)"
            )
        if self.num_classes and not self.with_shared_embedding and self.split_noise:
            raise ValueError(
                "with_shared_embedding=false needs split_noise=false: without the shared embedding the BatchNorm "
                "maps read the one-hot class alone (MMagic's layout)"
            )
        return self


class BigGANDiscriminator(Strict):
    type: Literal["BigGANDiscriminator"] = "BigGANDiscriminator"
    input_scale: Literal[32, 64, 128, 256] = 128
    num_classes: Annotated[int, Field(ge=0)] = 1000
    base_channels: PositiveInt = 96
    sn_eps: PositiveFloat = 1e-6
    init_type: Literal["ortho", "N02", "xavier"] = "ortho"
    act: Activation = Activation()
    with_spectral_norm: bool = True
    in_channels: PositiveInt = 3


GeneratorModel = Annotated[DCGANGenerator | SNGANGenerator | BigGANGenerator, Field(discriminator="type")]
DiscriminatorModel = Annotated[
    DCGANDiscriminator | SNGANDiscriminator | BigGANDiscriminator, Field(discriminator="type")
]


# ----------------------------------------------------------------------------------------------------------------
# DeepSpeed configs: the keys dsgan relies on are typed here; the rest of DeepSpeed's keys are passed through and
# checked by DeepSpeed's own pydantic models where it has them (zero_optimization).


class FP16(Strict):
    enabled: bool = False
    auto_cast: bool = False
    loss_scale: NonNegativeFloat = 0.0
    """0 = dynamic loss scaling."""
    initial_scale_power: Annotated[int, Field(ge=0, le=64)] = 16
    loss_scale_window: PositiveInt = 1000
    hysteresis: PositiveInt = 2
    consecutive_hysteresis: bool = False
    min_loss_scale: PositiveFloat = 1.0
    fp16_master_weights_and_grads: bool = False


class BF16(Strict):
    enabled: bool = False
    immediate_grad_update: bool = True
    check_grad_overflow: bool = False
    bf16_master_weights_and_grads: bool = False
    bf16_optimizer_states: bool = False


class TorchAutocast(Strict):
    enabled: bool = False
    dtype: Literal["bfloat16", "float16", "torch.bfloat16", "torch.float16"] = "bfloat16"
    lower_precision_safe_modules: list[str] | None = None


class AdamParams(Strict):
    lr: PositiveFloat = 2e-4
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.0, 0.999)
    eps: PositiveFloat = 1e-8
    weight_decay: NonNegativeFloat = 0.0
    torch_adam: bool = False
    """Use torch.optim.Adam(W) instead of DeepSpeed's fused kernel (no JIT build; the choice on CPU)."""
    adam_w_mode: bool | None = None


class Optimizer(Strict):
    type: Literal["Adam", "AdamW"] = "Adam"
    params: AdamParams = AdamParams()


class Scheduler(Strict):
    type: Literal["WarmupLR", "WarmupDecayLR", "WarmupCosineLR", "OneCycle", "LRRangeTest"]
    params: dict[str, Any] = {}


class ZeroOptimization(BaseModel):
    """`stage` is typed here; every other ZeRO key is validated by DeepSpeed's own (strict) ZeRO config model."""

    model_config = ConfigDict(extra="allow", frozen=True)
    stage: Annotated[int, Field(ge=0, le=3)] = 0

    @model_validator(mode="after")
    def _check_with_deepspeed(self) -> ZeroOptimization:
        if self.model_extra:
            from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

            try:
                DeepSpeedZeroConfig(stage=self.stage, **self.model_extra)
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                raise ValueError(f"DeepSpeed rejects this ZeRO config: {problems}") from None
        return self


# DeepSpeed top-level keys that dsgan passes through untouched. Anything else is refused: a misspelt key would be
# ignored silently by DeepSpeed.
PASSTHROUGH_KEYS = (
    "steps_per_print",
    "wall_clock_breakdown",
    "memory_breakdown",
    "dump_state",
    "zero_allow_untested_optimizer",
    "zero_force_ds_cpu_optimizer",
    "communication_data_type",
    "prescale_gradients",
    "gradient_predivide_factor",
    "flops_profiler",
    "comms_logger",
    "activation_checkpointing",
    "tensorboard",
    "csv_monitor",
    "checkpoint",
    "data_types",
    "compile",
)


class DeepSpeedConfig(Strict):
    """One engine's DeepSpeed config. `gradient_accumulation_steps` is MMagic's `accumulative_counts`."""

    train_micro_batch_size_per_gpu: PositiveInt
    gradient_accumulation_steps: PositiveInt = 1
    train_batch_size: PositiveInt | None = None
    """Optional; when given it must equal micro-batch x accumulation x world size."""
    optimizer: Optimizer = Optimizer()
    scheduler: Scheduler | None = None
    fp16: FP16 = FP16()
    bf16: BF16 = BF16()
    torch_autocast: TorchAutocast = TorchAutocast()
    zero_optimization: ZeroOptimization = ZeroOptimization()
    gradient_clipping: NonNegativeFloat = 0.0
    passthrough: dict[str, Any] = {}
    """Other DeepSpeed keys (see PASSTHROUGH_KEYS), written at the top level of the DeepSpeed JSON."""

    @model_validator(mode="before")
    @classmethod
    def _collect_passthrough(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            extra = {k: data.pop(k) for k in list(data) if k in PASSTHROUGH_KEYS}
            if extra:
                data["passthrough"] = {**data.get("passthrough", {}), **extra}
        return data

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> DeepSpeedConfig:
        ctx = info.context or {}
        if self.fp16.enabled and self.bf16.enabled:
            raise ValueError("fp16.enabled and bf16.enabled are both true: choose one precision")
        if self.torch_autocast.enabled and (self.fp16.enabled or self.bf16.enabled):
            raise ValueError("torch_autocast.enabled cannot be combined with fp16.enabled or bf16.enabled")
        if self.fp16.enabled and ctx.get("device") == "cpu":
            raise ValueError(
                "fp16.enabled is true but this machine has no GPU, and DeepSpeed refuses fp16 on CPU: "
                "use bf16 (bf16.enabled: true) or fp32 on CPU"
            )
        world = ctx.get("world_size")
        per_step = self.train_micro_batch_size_per_gpu * self.gradient_accumulation_steps
        if self.train_batch_size is not None:
            if world is not None and self.train_batch_size != per_step * world:
                raise ValueError(
                    f"train_batch_size={self.train_batch_size} != train_micro_batch_size_per_gpu "
                    f"({self.train_micro_batch_size_per_gpu}) x gradient_accumulation_steps "
                    f"({self.gradient_accumulation_steps}) x world size ({world}) = {per_step * world}; "
                    "remove train_batch_size or fix it"
                )
            if self.train_batch_size % per_step:
                raise ValueError(
                    f"train_batch_size={self.train_batch_size} is not a multiple of micro-batch x accumulation "
                    f"= {per_step}"
                )
        return self

    @property
    def precision(self) -> str:
        if self.fp16.enabled:
            return "fp16"
        if self.bf16.enabled:
            return "bf16"
        if self.torch_autocast.enabled:
            return "autocast-" + self.torch_autocast.dtype.removeprefix("torch.")
        return "fp32"

    def to_deepspeed(self, world_size: int) -> dict[str, Any]:
        """The dict handed to `deepspeed.initialize` (train_batch_size made explicit for this world size)."""
        out = self.model_dump(mode="json", exclude={"passthrough", "train_batch_size"}, exclude_none=True)
        out["train_batch_size"] = self.train_micro_batch_size_per_gpu * self.gradient_accumulation_steps * world_size
        out["zero_optimization"] = {"stage": self.zero_optimization.stage, **(self.zero_optimization.model_extra or {})}
        out.update(self.passthrough)
        if out["optimizer"]["params"].get("adam_w_mode") is None:
            out["optimizer"]["params"].pop("adam_w_mode", None)
        if not self.optimizer.params.torch_adam:
            out["optimizer"]["params"].pop("torch_adam")
        return out


def _digits_adam(lr: float) -> DeepSpeedConfig:
    """The embedded digits run's engines: TTUR learning rates (Heusel et al. 2017), BigGAN's betas, torch's Adam."""
    return DeepSpeedConfig(
        train_micro_batch_size_per_gpu=64,
        optimizer=Optimizer(params=AdamParams(lr=lr, betas=(0.0, 0.999), torch_adam=True)),
    )


class GeneratorEngine(Strict):
    model: GeneratorModel = DCGANGenerator(output_scale=16)
    deepspeed: DeepSpeedConfig = _digits_adam(1e-4)


class DiscriminatorEngine(Strict):
    model: DiscriminatorModel = DCGANDiscriminator(input_scale=16, with_spectral_norm=True)
    deepspeed: DeepSpeedConfig = _digits_adam(4e-4)


# ----------------------------------------------------------------------------------------------------------------
# Training


class Schedule(Strict):
    """MMagic 1.x meaning: consecutive *optimizer updates* of each network before the other one is updated.

    One data batch per iteration; D trains one micro-batch per iteration; after `discriminator_steps` D updates
    (each `gradient_accumulation_steps` of D's config micro-batches), G makes `generator_steps` updates (each
    `gradient_accumulation_steps` of G's config micro-batches of fresh noise).
    """

    discriminator_steps: PositiveInt = 1
    generator_steps: PositiveInt = 1


class Loss(Strict):
    type: Literal["hinge", "vanilla", "wgan"] = "hinge"
    """hinge (BigGAN), vanilla = non-saturating logistic (Goodfellow et al.), wgan (Arjovsky et al.)."""
    r1_weight: NonNegativeFloat = 0.0
    """gamma of the R1 penalty gamma/2 * E|grad D(x)|^2 on reals (Mescheder et al. 2018); 0 = off."""
    r1_interval: PositiveInt = 1
    """Lazy regularisation (StyleGAN2): apply R1 every this many D micro-steps, scaled by the interval."""
    gp_weight: NonNegativeFloat = 0.0
    """WGAN-GP weight (Gulrajani et al. 2017) on interpolates; 0 = off."""


class EMA(Strict):
    """EMA of G's weights: `ema = (1 - momentum) * ema + momentum * G`, once per G optimizer update.

    Units are G updates. MMagic's ExponentialMovingAverage uses the same `momentum` convention (weight of the new
    value) with `interval`/`start_iter` in iterations; MMGeneration 0.x's `ema_cfg` gives the kept fraction
    (`momentum = 1 - kept`) and counts train_step calls. `dsgan migrate` converts both.
    """

    momentum: Annotated[float, Field(gt=0, le=1)] = 0.01
    start_g_updates: Annotated[int, Field(ge=0)] = 0
    """The first this many G updates copy G into the EMA; averaging starts after them."""
    interval_g_updates: PositiveInt = 1


class DigitsData(Strict):
    """scikit-learn's 8x8 digits (1797 images, 10 classes), bundled with scikit-learn: no download."""

    type: Literal["digits"] = "digits"
    conditional: bool = True


class ImageFolderData(Strict):
    """ImageNet layout: one subfolder per class; images resized/center-cropped to the model scale."""

    type: Literal["image_folder"] = "image_folder"
    root: Path
    conditional: bool = True
    num_workers: Annotated[int, Field(ge=0)] = 4
    pin_memory: bool = True


Data = Annotated[DigitsData | ImageFolderData, Field(discriminator="type")]


class Run(Strict):
    seed: int = 0
    dir: Path = Path("runs/digits")
    """Run directory: checkpoints, samples, logs. Rerunning with the same directory resumes."""
    total_iters: PositiveInt | None = 3000
    """Length in iterations (one data batch each). Set this or total_images."""
    total_images: PositiveInt | None = None
    """Length in real images seen by D, summed over ranks; converted to iterations at start."""
    log_every_iters: PositiveInt = 50
    collective_timeout_seconds: PositiveFloat = 300.0
    """Upper bound on any collective: a dead or diverged rank becomes an error after this, never a hang."""
    sample_every_iters: PositiveInt | None = 1000
    """Write a PNG grid of fixed-noise samples (EMA G when enabled) this often; None = only at the end."""

    @model_validator(mode="after")
    def _length(self) -> Run:
        if (self.total_iters is None) == (self.total_images is None):
            raise ValueError("set exactly one of total_iters and total_images")
        return self


class Checkpoint(Strict):
    every_iters: PositiveInt | None = 1000
    """None = only at the end and on a signal."""
    keep_last: PositiveInt = 2
    milestone_every_iters: PositiveInt | None = None
    """Checkpoints at multiples of this are kept forever."""


class Wandb(Strict):
    mode: Literal["online", "offline", "disabled"] = "disabled"
    """The WANDB_MODE environment variable overrides this."""
    project: str = "dsgan"
    entity: str | None = None
    name: str | None = None
    group: str | None = None
    tags: list[str] = []


class Tracking(Strict):
    wandb: Wandb = Wandb()
    image_every_iters: PositiveInt | None = None
    """Log sample grids to wandb this often; None = with every PNG grid."""


class Eval(Strict):
    every_iters: PositiveInt | None = None
    """Evaluate during training this often (every rank; EMA G when kept); None = only from the CLI."""
    features: Literal["inception", "digits"] = "digits"
    """inception: the TF FID Inception (comparable to papers); digits: 8x8 pixel space, for the digits data only."""
    inception_weights: Path | None = None
    num_samples: PositiveInt = 10_000
    batch_size: PositiveInt = 100
    reference_stats: Path | None = None
    """Cache of the real data's feature statistics (.npz); default: <run dir>/fid_reference.npz."""

    @model_validator(mode="after")
    def _weights(self) -> Eval:
        if self.features == "inception" and self.inception_weights is None:
            raise ValueError("features='inception' needs inception_weights (a local file; see README, Evaluation)")
        return self


class Config(Strict):
    """A whole run. The defaults are the embedded digits run (a conditional DCGAN on CPU); `load_config()` with no
    file adds its periodic FD8 evaluation (EMBEDDED_DEFAULT), which a partial config must not inherit."""

    run: Run = Run()
    schedule: Schedule = Schedule()
    loss: Loss = Loss()
    generator: GeneratorEngine = GeneratorEngine()
    discriminator: DiscriminatorEngine = DiscriminatorEngine()
    ema: EMA | None = EMA()
    data: Data = DigitsData()
    checkpoint: Checkpoint = Checkpoint()
    tracking: Tracking = Tracking()
    eval: Eval = Eval()

    @model_validator(mode="after")
    def _cross(self) -> Config:
        g, d = self.generator.model, self.discriminator.model
        if g.output_scale != d.input_scale:
            raise ValueError(
                f"generator.model.output_scale={g.output_scale} != discriminator.model.input_scale={d.input_scale}"
            )
        if g.num_classes != d.num_classes:
            raise ValueError(
                f"generator.model.num_classes={g.num_classes} != discriminator.model.num_classes={d.num_classes}"
            )
        if g.out_channels != d.in_channels:
            raise ValueError(
                f"generator.model.out_channels={g.out_channels} != discriminator.model.in_channels={d.in_channels}"
            )
        g_mb = self.generator.deepspeed.train_micro_batch_size_per_gpu
        d_mb = self.discriminator.deepspeed.train_micro_batch_size_per_gpu
        if g_mb != d_mb:
            raise ValueError(
                f"generator.deepspeed.train_micro_batch_size_per_gpu={g_mb} != "
                f"discriminator.deepspeed.train_micro_batch_size_per_gpu={d_mb}: one data batch feeds D's "
                "micro-step and sets the size of G's fake batch (MMagic semantics); make them equal"
            )
        if self.data.conditional != (g.num_classes > 0):
            raise ValueError(
                f"data.conditional={self.data.conditional} but generator.model.num_classes={g.num_classes}: "
                "class-conditional models need conditional data, unconditional models (num_classes=0) need "
                "data.conditional=false"
            )
        if isinstance(self.data, DigitsData) and g.num_classes not in (0, 10):
            raise ValueError(f"data is the digits (10 classes) but generator.model.num_classes={g.num_classes}")
        if self.eval.features == "digits" and not isinstance(self.data, DigitsData) and self.eval.every_iters:
            raise ValueError("eval.features='digits' only applies to data.type='digits'; use 'inception'")
        d_acc = self.discriminator.deepspeed.gradient_accumulation_steps
        for name, value in (
            ("run.total_iters", self.run.total_iters),
            ("checkpoint.every_iters", self.checkpoint.every_iters),
            ("checkpoint.milestone_every_iters", self.checkpoint.milestone_every_iters),
            ("eval.every_iters", self.eval.every_iters),
        ):
            if value is not None and value % d_acc:
                raise ValueError(
                    f"{name}={value} is not a multiple of discriminator.deepspeed.gradient_accumulation_steps="
                    f"{d_acc}: checkpoints (and the end of the run) must fall on a D update, where no gradients are "
                    "half-accumulated"
                )
        if self.loss.type == "wgan" and self.loss.gp_weight == 0 and not _has_spectral_norm(d):
            raise ValueError(
                "loss.type='wgan' needs a Lipschitz constraint: set loss.gp_weight > 0 (WGAN-GP) or use a "
                "discriminator with spectral norm"
            )
        return self

    def images_per_iter(self, world_size: int) -> int:
        return self.discriminator.deepspeed.train_micro_batch_size_per_gpu * world_size

    def total_iters_for(self, world_size: int) -> int:
        if self.run.total_iters is not None:
            return self.run.total_iters
        d_acc = self.discriminator.deepspeed.gradient_accumulation_steps
        return d_acc * math.ceil(self.run.total_images / (self.images_per_iter(world_size) * d_acc))


EMBEDDED_DEFAULT: dict[str, Any] = {"eval": {"every_iters": 1000, "num_samples": 2000, "features": "digits"}}
"""What `load_config()` with no file adds to the class defaults: the digits run's FD8 evaluation."""


def _has_spectral_norm(d: BaseModel) -> bool:
    return isinstance(d, SNGANDiscriminator) or bool(getattr(d, "with_spectral_norm", False))


# ----------------------------------------------------------------------------------------------------------------
# Loading


def read_file(path: Path) -> Any:
    """Parse YAML, JSON or TOML by extension; never executes anything."""
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            return json.loads(text)
        if path.suffix == ".toml":
            return tomllib.loads(text)
        if path.suffix in (".yaml", ".yml"):
            return yaml.safe_load(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot parse: {exc}") from None
    raise ConfigError(f"{path}: unknown config format {path.suffix!r} (use .yaml, .json or .toml)")


def _inline_deepspeed(raw: dict[str, Any], base_dir: Path, source: str) -> None:
    """Replace `<network>.deepspeed: path` by the file's contents, so that overrides and errors see one tree."""
    for network in ("generator", "discriminator"):
        section = raw.get(network)
        if isinstance(section, dict) and isinstance(section.get("deepspeed"), str):
            path = (base_dir / section["deepspeed"]).resolve()
            if not path.is_file():
                raise ConfigError(f"{source}: {network}.deepspeed: file not found: {path}")
            data = read_file(path)
            if not isinstance(data, dict):
                raise ConfigError(f"{path}: a DeepSpeed config must be a mapping")
            section["deepspeed"] = data
            section["_deepspeed_file"] = str(path)


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """`a.b.c=value`; the value is parsed as YAML (numbers, booleans, lists, null)."""
    key, sep, value = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {assignment!r}: expected key.path=value")
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"--set {assignment!r}: {part} is not a section")
    if leaf == "type" and node.get("type") != (parsed := yaml.safe_load(value)):
        node.clear()  # a new type starts from that type's defaults, not the old type's fields
        node["type"] = parsed
    else:
        node[leaf] = yaml.safe_load(value)


_UNION_TAGS = {
    m.model_fields["type"].default
    for m in (
        DCGANGenerator,
        SNGANGenerator,
        BigGANGenerator,
        DCGANDiscriminator,
        SNGANDiscriminator,
        BigGANDiscriminator,
        DigitsData,
        ImageFolderData,
    )
}


def format_errors(exc: ValidationError, files: dict[str, str]) -> str:
    """One line per problem: `<file>: <dotted.field.path>: <message>`; DeepSpeed fields name the DeepSpeed file."""
    lines = []
    for err in exc.errors():
        parts = [str(p) for p in err["loc"] if p not in _UNION_TAGS]
        where = files.get(parts[0], files["run"]) if parts[1:2] == ["deepspeed"] else files["run"]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (misspelt? `dsgan validate-config` prints every valid key with its default)"
        elif err["type"] == "union_tag_not_found":
            msg = "missing 'type'"
        lines.append(f"{where}: {'.'.join(parts)}: {msg}" if parts else f"{where}: {msg}")
    return "\n".join(lines)


def load_config(
    path: Path | str | None = None,
    overrides: list[str] = (),
    *,
    world_size: int | None = None,
    device: str | None = None,
) -> Config:
    """Read, inline DeepSpeed files, validate, apply `--set` overrides, validate again.

    Raises ConfigError naming the file and the dotted field. `device` ('cpu'/'cuda') and `world_size` enable the
    checks that depend on where the run happens.
    """
    if path is None:
        raw: dict[str, Any] = json.loads(json.dumps(EMBEDDED_DEFAULT))
        source, base_dir = "<default config>", Path.cwd()
    else:
        path = Path(path)
        raw = read_file(path) or {}
        source, base_dir = str(path), path.resolve().parent
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a run config must be a mapping at the top level")
    _inline_deepspeed(raw, base_dir, source)
    files = {"run": source}
    for network in ("generator", "discriminator"):
        if isinstance(raw.get(network), dict) and "_deepspeed_file" in raw[network]:
            files[network] = raw[network].pop("_deepspeed_file")
    _resolve_paths(raw, base_dir)
    context = {"world_size": world_size, "device": device}
    try:
        cfg = Config.model_validate(raw, context=context)
        if not overrides:
            return cfg
        # Overrides apply to the complete tree, so that `--set run.total_iters=10` keeps every other default.
        full = cfg.model_dump(mode="json")
        for assignment in overrides:
            apply_override(full, assignment)
        return Config.model_validate(full, context=context)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, files)) from None


def _resolve_paths(raw: dict[str, Any], base_dir: Path) -> None:
    """Data and weight paths are relative to the run config's folder; the run dir is relative to the cwd."""
    for section, key in (("data", "root"), ("eval", "inception_weights"), ("eval", "reference_stats")):
        value = raw.get(section, {}).get(key) if isinstance(raw.get(section), dict) else None
        if isinstance(value, str) and not Path(value).is_absolute():
            raw[section][key] = str(base_dir / value)


def config_hash(cfg: Config) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]
