"""The run config: every section of a run, and the checks between them."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, PositiveInt, ValidationInfo, field_validator, model_validator

from dsgan.config.base import NonNegativeFloat, Strict, UserPath
from dsgan.config.deepspeed import DeepSpeedConfig
from dsgan.config.models import DiscriminatorModel, GeneratorModel, StyleGAN2Generator, has_spectral_norm
from dsgan.schedule import Schedule


class GeneratorEngine(Strict):
    model: GeneratorModel
    deepspeed: DeepSpeedConfig


class DiscriminatorEngine(Strict):
    model: DiscriminatorModel
    deepspeed: DeepSpeedConfig


class ScheduleConfig(Strict):
    """MMagic 1.x meaning: consecutive *optimizer updates* of each network before the other one is updated.

    One data batch per iteration; D trains one micro-batch per iteration; after `discriminator_steps` D updates
    (each `gradient_accumulation_steps` of D's config micro-batches), G makes `generator_steps` updates (each
    `gradient_accumulation_steps` of G's config micro-batches of fresh noise).
    """

    discriminator_steps: PositiveInt = 1
    generator_steps: PositiveInt = 1


class Loss(Strict):
    type: Literal["hinge", "vanilla", "wgan", "lsgan"] = "hinge"
    """hinge (BigGAN), vanilla = non-saturating logistic (Goodfellow et al.), wgan (Arjovsky et al.), lsgan = least
    squares (Mao et al.; D: (D(x) - 1)^2 + D(G(z))^2, G: (D(G(z)) - 1)^2, as MMagic's LSGAN)."""
    r1_weight: NonNegativeFloat = 0.0
    """gamma of the R1 penalty gamma/2 * E|grad D(x)|^2 on reals (Mescheder et al. 2018); 0 = off."""
    r1_interval: PositiveInt = 1
    """Lazy regularisation (StyleGAN2): R1 is added to every micro-batch of every `r1_interval`-th D update (the
    0th, the r1_interval-th, ...), scaled by the interval so that its average strength does not depend on it."""
    gp_weight: NonNegativeFloat = 0.0
    """WGAN-GP weight (Gulrajani et al. 2017) on interpolates; 0 = off."""
    pl_weight: NonNegativeFloat = 0.0
    """Path-length regularisation (StyleGAN2; NVlabs' pl_weight, 2 in config F) of a generator with a style space:
    pl_weight * E(|J_w^T y| - a)^2 with a the running mean of the path length; 0 = off."""
    pl_interval: PositiveInt = 1
    """Lazy regularisation: the penalty is added to every micro-batch of every `pl_interval`-th G update (the 0th,
    the pl_interval-th, ...), scaled by the interval (MMagic's g_reg_interval; its g_reg_weight is
    pl_weight * pl_interval)."""
    pl_batch_shrink: PositiveInt = 2
    """The penalty's batch is the micro-batch divided by this (at least 1 image)."""
    pl_decay: Annotated[float, Field(gt=0, le=1)] = 0.01
    """Weight of the new batch in the running mean of the path length (averaged over ranks: one value for all)."""


class EMA(Strict):
    """EMA of G's weights: `ema = (1 - momentum) * ema + momentum * G`, once per G optimizer update.

    Units are G updates. MMagic's ExponentialMovingAverage uses the same `momentum` convention (weight of the new
    value); its BaseGAN compares `start_iter` and `interval` with a counter that advances once per G phase, so in
    iterations MMagic's `start_iter` is `start_iter * discriminator_steps * accumulative_counts`. MMGeneration 0.x's
    `ema_cfg` gives the kept fraction (`momentum = 1 - kept`) and counts train_step calls. `dsgan migrate` converts
    both.
    """

    momentum: Annotated[float, Field(gt=0, le=1)] = 0.01
    start_g_updates: Annotated[int, Field(ge=0)] = 0
    """The first this many G updates copy G into the EMA; averaging starts after them."""
    interval_g_updates: PositiveInt = 1


class DigitsData(Strict):
    """scikit-learn's 8x8 digits (1797 images, 10 classes), bundled with scikit-learn: no download."""

    type: Literal["digits"] = "digits"
    conditional: bool = True
    xflip: bool = False
    """Mirror about half the images at random, a different half every epoch (NVlabs' --mirror, MMagic's Flip)."""


class ImageFolderData(Strict):
    """ImageNet layout: one subfolder per class; images resized/center-cropped to the model scale."""

    type: Literal["image_folder"] = "image_folder"
    root: UserPath
    conditional: bool = True
    xflip: bool = False
    """Mirror about half the images at random, a different half every epoch (NVlabs' --mirror, MMagic's Flip)."""
    num_workers: Annotated[int, Field(ge=0)] = 4
    pin_memory: bool = True


class PackedData(Strict):
    """A folder written by `dsgan prepare-data`: decoded, resized pixels, memory-mapped; no decoding in training."""

    type: Literal["packed"] = "packed"
    root: UserPath
    conditional: bool = True
    xflip: bool = False
    """Mirror about half the images at random, a different half every epoch (NVlabs' --mirror, MMagic's Flip)."""
    in_memory: bool = False
    """Read the whole image file into RAM at start (each rank its own copy) instead of memory-mapping it."""
    verify: bool = True
    """Check the data files' sha256 against the manifest at start. It reads every byte, on every rank (roughly a
    second per GB from the page cache, minutes for ImageNet at 128 from a network disk); off, only the sizes are."""
    num_workers: Annotated[int, Field(ge=0)] = 2
    pin_memory: bool = True


class NvlabsZipData(Strict):
    """A zip made by NVlabs' `dataset_tool.py` (stylegan2-ada, stylegan3), read in place: PNGs, labels from its
    `dataset.json`; images not at the models' resolution are resized/cropped as image_folder does."""

    type: Literal["nvlabs_zip"] = "nvlabs_zip"
    path: UserPath
    conditional: bool = True
    xflip: bool = False
    """Mirror about half the images at random, a different half every epoch (NVlabs' --mirror, MMagic's Flip)."""
    num_workers: Annotated[int, Field(ge=0)] = 4
    pin_memory: bool = True


Data = Annotated[DigitsData | ImageFolderData | PackedData | NvlabsZipData, Field(discriminator="type")]


DIFFAUGMENT_OPS = ("color", "translation", "cutout")
"""DiffAugment's policy words (Zhao et al. 2020); color = brightness, saturation and contrast, in that order."""
ADA_GEOMETRIC_OPS = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
ADA_COLOR_OPS = ("brightness", "contrast", "lumaflip", "hue", "saturation")
ADA_PRESETS = {
    "blit": ("xflip", "rotate90", "xint"),
    "geom": ("scale", "rotate", "aniso", "xfrac"),
    "color": ADA_COLOR_OPS,
    "bg": ADA_GEOMETRIC_OPS,
    "bgc": ADA_GEOMETRIC_OPS + ADA_COLOR_OPS,
}
"""NVlabs' `--augpipe` names for groups of ops."""


def _op_list(text: str, known: tuple[str, ...], presets: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """Comma-separated names (presets expanded), each once, in the order given; ValueError naming the bad one."""
    ops: list[str] = []
    for word in (w.strip() for w in text.split(",")):
        if not word:
            raise ValueError(f"{text!r}: empty name between commas")
        for op in presets.get(word, (word,)):
            if op not in known:
                names = ", ".join((*presets, *known))
                raise ValueError(f"unknown augmentation {op!r} in {text!r}; known: {names}")
            if op in ops:
                raise ValueError(f"{op!r} appears twice in {text!r}")
            ops.append(op)
    return tuple(ops)


class NoAugment(Strict):
    """D sees the images as they are."""

    type: Literal["none"] = "none"


class DiffAugment(Strict):
    """Differentiable Augmentation (Zhao et al. 2020): every image D sees, real or fake, in both phases, gets every op
    of the policy, with the paper's parameters, drawn per image."""

    type: Literal["diffaugment"] = "diffaugment"
    policy: str = "color,translation,cutout"
    """Comma-separated ops, applied in this order: color (brightness + U(-0.5, 0.5), saturation x U(0, 2), contrast
    x U(0.5, 1.5)), translation (integer shift, zero fill), cutout (a zeroed square)."""
    translation_ratio: Annotated[float, Field(gt=0, le=0.5)] = 0.125
    """Largest shift, as a fraction of the image side (rounded to pixels)."""
    cutout_ratio: Annotated[float, Field(gt=0, le=1)] = 0.5
    """Side of the cutout square, as a fraction of the image side (rounded to pixels)."""

    @field_validator("policy")
    @classmethod
    def _policy(cls, policy: str) -> str:
        _op_list(policy, DIFFAUGMENT_OPS, {})
        return policy

    @property
    def ops(self) -> tuple[str, ...]:
        return _op_list(self.policy, DIFFAUGMENT_OPS, {})


class Ada(Strict):
    """Adaptive discriminator augmentation (Karras et al. 2020, NVlabs stylegan2-ada-pytorch): each op of `ops` is
    applied to each image D sees with probability p; p follows the overfitting heuristic r_t = E[sign(D(real))].
    Strengths are NVlabs' defaults."""

    type: Literal["ada"] = "ada"
    ops: str = "bgc"
    """Comma-separated ops or NVlabs presets (blit, geom, color, bg, bgc = all): xflip, rotate90, xint, scale,
    rotate, aniso, xfrac, brightness, contrast, lumaflip, hue, saturation."""
    target: Annotated[float, Field(gt=0, lt=1)] | None = 0.6
    """r_t to aim at: p rises while E[sign(D(real))] is above it, falls while below. None = p stays `initial_p`."""
    ada_kimg: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 500.0
    """Speed: p can go from 0 to 1 in this many thousand real images (NVlabs' ada_kimg)."""
    interval_iters: PositiveInt = 4
    """p is adjusted every this many iterations, from the signs of all ranks' real logits since the last adjustment
    (NVlabs: every 4 batches)."""
    initial_p: Annotated[float, Field(ge=0, le=1)] = 0.0
    xint_max: Annotated[float, Field(ge=0, le=1)] = 0.125
    """Integer translation: largest shift, as a fraction of the image side."""
    scale_std: NonNegativeFloat = 0.2
    """Isotropic scaling: standard deviation of log2(scale)."""
    rotate_max: Annotated[float, Field(ge=0, le=1)] = 1.0
    """Rotation: largest angle as a fraction of half a turn (1 = any angle)."""
    aniso_std: NonNegativeFloat = 0.2
    """Anisotropic scaling: standard deviation of log2(x scale) (y is scaled by its inverse)."""
    xfrac_std: NonNegativeFloat = 0.125
    """Fractional translation: standard deviation, as a fraction of the image side."""
    brightness_std: NonNegativeFloat = 0.2
    """Brightness: standard deviation of the offset added to every channel."""
    contrast_std: NonNegativeFloat = 0.5
    """Contrast: standard deviation of log2(factor)."""
    hue_max: Annotated[float, Field(ge=0, le=1)] = 1.0
    """Hue: largest rotation about the luma axis, as a fraction of half a turn."""
    saturation_std: NonNegativeFloat = 1.0
    """Saturation: standard deviation of log2(factor) of the chroma (the part orthogonal to the luma axis)."""

    @field_validator("ops")
    @classmethod
    def _ops(cls, ops: str) -> str:
        _op_list(ops, ADA_GEOMETRIC_OPS + ADA_COLOR_OPS, ADA_PRESETS)
        return ops

    @property
    def op_set(self) -> frozenset[str]:
        return frozenset(_op_list(self.ops, ADA_GEOMETRIC_OPS + ADA_COLOR_OPS, ADA_PRESETS))


Augment = Annotated[NoAugment | DiffAugment | Ada, Field(discriminator="type")]


class Run(Strict):
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0
    dir: UserPath
    """Run directory: checkpoints, samples, logs. Rerunning with the same directory resumes. `load_config` fills in
    `runs/<config file stem>` (relative to the working directory) when a config file leaves it out."""
    total_iters: PositiveInt | None = None
    """Length in iterations (one data batch each). Set this or total_images."""
    total_images: PositiveInt | None = None
    """Length in real images seen by D, summed over ranks; converted to iterations at start."""
    log_every_iters: PositiveInt = 50
    collective_timeout_seconds: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 300.0
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


EvalMetric = Literal["fid", "is", "kid", "pr", "dc", "ifid"]
"""fid; is: Inception Score; kid: Kernel Inception Distance; pr: improved precision and recall (k=3); dc: density
and coverage (k=5); ifid: per-class FID (intra-FID) of a conditional model. All from one pass of features."""

DEFAULT_EVAL_SAMPLES = 10_000
DEFAULT_EVAL_METRICS: tuple[EvalMetric, ...] = ("fid", "is")
EvalProtocol = Literal["fid50k_full", "kid50k_full", "pr50k3_full", "is50k", "all50k_full", "fid10k_full"]
EVAL_PROTOCOLS: dict[EvalProtocol, tuple[int, tuple[EvalMetric, ...]]] = {
    "fid50k_full": (50_000, ("fid",)),
    "kid50k_full": (50_000, ("kid",)),
    "pr50k3_full": (50_000, ("pr",)),
    "is50k": (50_000, ("is",)),
    "all50k_full": (50_000, ("fid", "is", "kid", "pr", "dc")),
    "fid10k_full": (10_000, ("fid",)),
}
"""Named evaluations (NVlabs' names; README, Evaluation, says which published tables each matches). "_full": the
reference is the whole training set, unflipped."""


class Eval(Strict):
    every_iters: Annotated[int, Field(ge=0)] | None = None
    """Evaluate during training this often (every rank; EMA G when kept); 0 or None = never during training: from
    the CLI only, e.g. `dsgan eval --watch RUN_DIR` beside the job, which costs the job no time."""
    features: Literal["inception", "digits"] = "digits"
    """inception: the TF FID Inception (comparable to papers); digits: 8x8 pixel space, for the digits data only."""
    inception_weights: UserPath | None = None
    protocol: EvalProtocol | None = None
    """A named evaluation: sets num_samples and metrics (which may then not be given otherwise)."""
    num_samples: Annotated[int, Field(ge=2)] = DEFAULT_EVAL_SAMPLES
    """Generated images per evaluation: at least 2 (a covariance) and at least one per rank."""
    metrics: tuple[EvalMetric, ...] = DEFAULT_EVAL_METRICS
    """Computed at every evaluation, from one pass of generated features."""
    batch_size: PositiveInt = 100
    reference_stats: UserPath | None = None
    """Cache of the real data's feature statistics (.npz; also its features when kid, pr or dc are asked for), or a
    published file with only mu and sigma (pytorch-fid, NVlabs): FID/IS only. Default: <run dir>/fid_reference.npz."""

    @model_validator(mode="before")
    @classmethod
    def _protocol(cls, data: object) -> object:
        """A protocol fills num_samples and metrics. A value given beside it must agree, except the defaults: `--set`
        applies to the whole resolved tree, where every field has a value, and setting a protocol there must work."""
        if not isinstance(data, dict) or data.get("protocol") not in EVAL_PROTOCOLS:
            return data  # no protocol, or a misspelt one: the Literal names the choices
        num_samples, metrics = EVAL_PROTOCOLS[data["protocol"]]
        given_num, given_metrics = data.get("num_samples"), data.get("metrics")
        conflicts = {
            "num_samples": given_num not in (None, num_samples, DEFAULT_EVAL_SAMPLES),
            "metrics": given_metrics is not None
            and set(given_metrics) not in (set(metrics), set(DEFAULT_EVAL_METRICS)),
        }
        for name, conflict in conflicts.items():
            if conflict:
                value = num_samples if name == "num_samples" else list(metrics)
                raise ValueError(
                    f"eval.{name}={data[name]!r} conflicts with eval.protocol={data['protocol']!r} ({name}="
                    f"{value!r}): leave out one of them (on the command line: --set eval.{name}=null)"
                )
        return {**data, "num_samples": num_samples, "metrics": metrics}

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> Eval:
        if self.features == "inception" and self.inception_weights is None:
            raise ValueError("features='inception' needs inception_weights (a local file; see README, Evaluation)")
        if not self.metrics:
            raise ValueError("eval.metrics is empty: name at least one of fid, is, kid, pr, dc, ifid")
        world = (info.context or {}).get("world_size")
        if self.every_iters and world and self.num_samples < world:
            raise ValueError(
                f"num_samples={self.num_samples} is less than the world size ({world}): the ranks split the samples, "
                "at least one each"
            )
        return self

    @property
    def protocol_name(self) -> str:
        """The protocol these settings are, whether named or spelt out; "custom" if none."""
        named = (n for n, (num, m) in EVAL_PROTOCOLS.items() if (num, set(m)) == (self.num_samples, set(self.metrics)))
        return next(named, "custom")


class Init(Strict):
    """Fine-tuning: a new run starts from these weights instead of a random initialisation. Read only while the run
    dir has no checkpoint of its own: a resumed fine-tuning run continues from its own checkpoints."""

    checkpoint: UserPath
    """A checkpoint dir (`.../checkpoints/step-N`) of a dsgan run or of `dsgan migrate --checkpoint` (imported
    MMagic/MMGeneration/BigGAN-PyTorch weights). G, D and the EMA are loaded; optimizer state starts fresh. The
    models' shapes must equal the checkpoint's (a difference is an error naming each tensor)."""
    freeze_d_blocks: Annotated[int, Field(ge=0)] = 0
    """FreezeD (Mo et al. 2020): D's first this many blocks from the input (`dsgan.models.input_blocks`) keep their
    weights; they are left out of D's optimizer (and ZeRO's partitions) altogether."""


class Config(Strict):
    """A whole run. The networks, their DeepSpeed configs, the data, the run dir and the run's length have no
    defaults: the default run is a file (`dsgan/default/digits.yaml`), and a config that leaves one of them out is
    refused rather than completed from another run."""

    run: Run
    schedule: ScheduleConfig = ScheduleConfig()
    loss: Loss = Loss()
    generator: GeneratorEngine
    discriminator: DiscriminatorEngine
    ema: EMA | None = EMA()
    data: Data
    augment: Augment = NoAugment()
    """Augmentation of every image D sees (none, diffaugment, ada); see README, Augmentation."""
    checkpoint: Checkpoint = Checkpoint()
    tracking: Tracking = Tracking()
    eval: Eval = Eval()
    init: Init | None = None
    """Start a new run from existing weights (fine-tuning); None = random initialisation."""

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
        if "ifid" in self.eval.metrics and (g.num_classes == 0 or self.eval.num_samples < 2 * g.num_classes):
            raise ValueError(
                f"eval.metrics includes ifid (per-class FID): it needs a conditional generator and 2 samples per "
                f"class or more; generator.model.num_classes={g.num_classes}, eval.num_samples={self.eval.num_samples}"
            )
        if self.eval.features == "digits" and not isinstance(self.data, DigitsData) and self.eval.every_iters:
            raise ValueError("eval.features='digits' only applies to data.type='digits'; use 'inception'")
        if isinstance(self.augment, Ada) and d.in_channels not in (1, 3) and self.augment.op_set & set(ADA_COLOR_OPS):
            raise ValueError(
                f"augment.ops={self.augment.ops!r} has colour ops, defined for RGB or grey images only, but "
                f"discriminator.model.in_channels={d.in_channels}; leave the colour ops out"
            )
        schedule = Schedule.of(self)
        for name, value in (
            ("run.total_iters", self.run.total_iters),
            ("checkpoint.every_iters", self.checkpoint.every_iters),
            ("checkpoint.milestone_every_iters", self.checkpoint.milestone_every_iters),
            ("eval.every_iters", self.eval.every_iters),
        ):
            if value is not None and not schedule.is_boundary(value):
                raise ValueError(
                    f"{name}={value} is not a multiple of discriminator.deepspeed.gradient_accumulation_steps="
                    f"{schedule.d_accumulation}: checkpoints (and the end of the run) must fall on a D update, where "
                    "no gradients are half-accumulated"
                )
        if self.loss.pl_weight > 0 and not isinstance(g, StyleGAN2Generator):
            raise ValueError(
                f"loss.pl_weight={self.loss.pl_weight} (path-length regularisation) needs a generator with a "
                f"style space (StyleGAN2Generator), not {g.type}; set loss.pl_weight=0"
            )
        if self.loss.type == "wgan" and self.loss.gp_weight == 0 and not has_spectral_norm(d):
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
        assert self.run.total_images is not None  # RunConfig requires one of the two
        d_acc = Schedule.of(self).d_accumulation  # whole D updates: the run ends on a boundary
        return d_acc * math.ceil(self.run.total_images / (self.images_per_iter(world_size) * d_acc))
