"""The run config: every section of a run, and the checks between them."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, PositiveInt, ValidationInfo, model_validator

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
    type: Literal["hinge", "vanilla", "wgan"] = "hinge"
    """hinge (BigGAN), vanilla = non-saturating logistic (Goodfellow et al.), wgan (Arjovsky et al.)."""
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


class Eval(Strict):
    every_iters: PositiveInt | None = None
    """Evaluate during training this often (every rank; EMA G when kept); None = only from the CLI."""
    features: Literal["inception", "digits"] = "digits"
    """inception: the TF FID Inception (comparable to papers); digits: 8x8 pixel space, for the digits data only."""
    inception_weights: UserPath | None = None
    num_samples: Annotated[int, Field(ge=2)] = 10_000
    """Generated images per evaluation: at least 2 (a covariance) and at least one per rank."""
    batch_size: PositiveInt = 100
    reference_stats: UserPath | None = None
    """Cache of the real data's feature statistics (.npz); default: <run dir>/fid_reference.npz."""

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> Eval:
        if self.features == "inception" and self.inception_weights is None:
            raise ValueError("features='inception' needs inception_weights (a local file; see README, Evaluation)")
        world = (info.context or {}).get("world_size")
        if self.every_iters and world and self.num_samples < world:
            raise ValueError(
                f"num_samples={self.num_samples} is less than the world size ({world}): the ranks split the samples, "
                "at least one each"
            )
        return self


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
