"""Generator and discriminator configs, one class per architecture, told apart by `type`.

Each class builds its own module (`build()`), importing it only then: loading and validating a config needs no
torch. The two unions at the end are the list of architectures; `dsgan/models/README.md` says how to add one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, Field, PositiveFloat, PositiveInt, model_validator

from dsgan.config.base import Strict

if TYPE_CHECKING:
    from torch import nn


class Activation(Strict):
    type: Literal["ReLU", "LeakyReLU"] = "ReLU"
    inplace: bool = True
    negative_slope: Annotated[float, Field(ge=0, lt=1)] = 0.2
    """Only used by LeakyReLU."""


class DCGANGenerator(Strict):
    """Radford et al. 2016: transposed convolutions + BatchNorm; conditional via a label embedding on z."""

    type: Literal["DCGANGenerator"] = "DCGANGenerator"
    output_scale: Literal[16, 32, 64, 128] = 32
    noise_size: PositiveInt = 64
    num_classes: Annotated[int, Field(ge=0)] = 10
    """0 = unconditional."""
    base_channels: PositiveInt = 64
    out_channels: PositiveInt = 3

    def build(self) -> nn.Module:
        from dsgan.models.dcgan import DCGANGenerator

        return DCGANGenerator(self)


class DCGANDiscriminator(Strict):
    type: Literal["DCGANDiscriminator"] = "DCGANDiscriminator"
    input_scale: Literal[16, 32, 64, 128] = 32
    num_classes: Annotated[int, Field(ge=0)] = 10
    """0 = unconditional; otherwise projection conditioning (Miyato & Koyama 2018)."""
    base_channels: PositiveInt = 64
    in_channels: PositiveInt = 3
    with_spectral_norm: bool = False
    sn_eps: PositiveFloat = 1e-12

    def build(self) -> nn.Module:
        from dsgan.models.dcgan import DCGANDiscriminator

        return DCGANDiscriminator(self)


class SNGANGenerator(Strict):
    """Miyato et al. 2018 ResNet generator: the CIFAR layout at 32, the projection paper's ImageNet layouts at 64
    and 128 (as MMagic's SNGANGenerator builds them)."""

    type: Literal["SNGANGenerator"] = "SNGANGenerator"
    output_scale: Literal[32, 64, 128] = 32
    noise_size: PositiveInt = 128
    num_classes: Annotated[int, Field(ge=0)] = 0
    base_channels: PositiveInt = 256
    out_channels: PositiveInt = 3
    init_type: Literal["sngan", "studio", "BigGAN"] = "sngan"
    """Weight initialisation, as MMagic's `init_cfg=dict(type=...)` chooses it: 'sngan', the authors' Chainer one
    (Glorot uniform, gain sqrt(2) on the residual 3x3 convs, zero biases); 'studio', PyTorch-StudioGAN's
    (orthogonal weights, zero biases); 'BigGAN', BigGAN-PyTorch's (Glorot uniform weights, PyTorch's default biases;
    MMagic's default). Conditional BN scales are 1 + embedding in all three (the embedding starts at 0 for 'sngan')."""

    def build(self) -> nn.Module:
        from dsgan.models.sngan import SNGANGenerator

        return SNGANGenerator(self)


class SNGANDiscriminator(Strict):
    type: Literal["SNGANDiscriminator"] = "SNGANDiscriminator"
    input_scale: Literal[32, 64, 128] = 32
    num_classes: Annotated[int, Field(ge=0)] = 0
    base_channels: PositiveInt = 128
    in_channels: PositiveInt = 3
    sn_eps: PositiveFloat = 1e-12
    init_type: Literal["sngan", "studio", "BigGAN"] = "sngan"
    """As the generator's `init_type`."""

    def build(self) -> nn.Module:
        from dsgan.models.sngan import SNGANDiscriminator

        return SNGANDiscriminator(self)


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

    def build(self) -> nn.Module:
        from dsgan.models.biggan import BigGANGenerator

        return BigGANGenerator(self)


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

    def build(self) -> nn.Module:
        from dsgan.models.biggan import BigGANDiscriminator

        return BigGANDiscriminator(self)


class StyleGAN2Generator(Strict):
    """Karras et al. 2020 (config F), with MMagic's `StyleGANv2Generator` fields and parameter names: mapping network
    (pixel norm, equalized lr), constant input, modulated/demodulated convolutions, noise injection, skip outputs.
    Pure PyTorch (dsgan/models/stylegan2.py)."""

    type: Literal["StyleGAN2Generator"] = "StyleGAN2Generator"
    out_size: Literal[4, 8, 16, 32, 64, 128, 256, 512, 1024] = 256
    style_channels: PositiveInt = 512
    noise_size: PositiveInt = 512
    """Length of z; left out (or null) = style_channels, as MMagic."""
    num_classes: Annotated[int, Field(ge=0)] = 0
    """0 = unconditional; else a one-hot class embedded into the mapping network (MMagic's `cond_size`)."""
    out_channels: PositiveInt = 3
    num_mlps: PositiveInt = 8
    channel_multiplier: PositiveInt = 2
    channel_max: PositiveInt = 512
    """Cap on the channels of every layer (NVlabs' channel_max). 512 = MMagic's table, which has no such argument:
    only at 512 do MMagic checkpoints load. Smaller values make narrow test or toy models."""
    blur_kernel: list[PositiveInt] = [1, 3, 3, 1]
    lr_mlp: PositiveFloat = 0.01
    """Learning-rate multiplier of the mapping network (equalized lr)."""
    default_style_mode: Literal["mix", "single"] = "mix"
    """Style mode in training: 'mix' = style mixing with probability mix_prob."""
    eval_style_mode: Literal["mix", "single"] = "single"
    """Style mode in eval mode (sampling, evaluation)."""
    norm_eps: PositiveFloat = 1e-6
    mix_prob: Annotated[float, Field(ge=0, le=1)] = 0.9
    num_fp16_scales: Annotated[int, Field(ge=0)] = 0
    """Run the highest-resolution this many scales in reduced precision (`reduced_dtype`) inside an fp32 engine,
    clamping their outputs to +-conv_clamp (MMagic/NVlabs partial fp16). 0 = off."""
    reduced_dtype: Literal["float16", "bfloat16"] = "float16"
    """The dtype of the num_fp16_scales layers: float16 (GPU, as MMagic/NVlabs), bfloat16 (CPU or GPU)."""
    conv_clamp: PositiveFloat = 256.0
    """Only applied in the reduced-precision layers (MMagic's default)."""
    fixed_noise: bool = False
    """Inject the fixed `injected_noise_*` buffers instead of fresh noise (deterministic sampling)."""

    @model_validator(mode="before")
    @classmethod
    def _noise_size(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("noise_size") is None:
            data = {**data, "noise_size": data.get("style_channels", 512)}
        return data

    @model_validator(mode="after")
    def _check(self) -> StyleGAN2Generator:
        if len(self.blur_kernel) < 2:
            raise ValueError(f"blur_kernel={self.blur_kernel} needs at least 2 taps")
        if self.num_fp16_scales > self.num_scales:
            raise ValueError(
                f"num_fp16_scales={self.num_fp16_scales} > the {self.num_scales} scales of out_size {self.out_size}"
            )
        return self

    @property
    def num_scales(self) -> int:
        return self.out_size.bit_length() - 2  # 4x4 ... out_size

    @property
    def output_scale(self) -> int:
        return self.out_size

    def build(self) -> nn.Module:
        from dsgan.models.stylegan2 import StyleGAN2Generator

        return StyleGAN2Generator(self)


class MiniBatchStdDev(Strict):
    group_size: PositiveInt = 4
    channel_groups: PositiveInt = 1


class StyleGAN2Discriminator(Strict):
    """Karras et al. 2020: residual discriminator with minibatch standard deviation, MMagic's field and parameter
    names (`convs.*`, `final_conv.*`, `final_linear.*`)."""

    type: Literal["StyleGAN2Discriminator"] = "StyleGAN2Discriminator"
    in_size: Literal[4, 8, 16, 32, 64, 128, 256, 512, 1024] = 256
    img_channels: PositiveInt = 3
    num_classes: Annotated[int, Field(ge=0)] = 0
    """0 = unconditional; else projection onto a mapped class embedding (MMagic's `cond_size`)."""
    channel_multiplier: PositiveInt = 2
    channel_max: PositiveInt = 512
    """Cap on the channels of every layer (NVlabs' channel_max). 512 = MMagic's table, which has no such argument:
    only at 512 do MMagic checkpoints load. Smaller values make narrow test or toy models."""
    blur_kernel: list[PositiveInt] = [1, 3, 3, 1]
    mbstd_cfg: MiniBatchStdDev = MiniBatchStdDev()
    cond_mapping_channels: PositiveInt = 512
    cond_mapping_layers: PositiveInt = 8
    num_fp16_scales: Annotated[int, Field(ge=0)] = 0
    reduced_dtype: Literal["float16", "bfloat16"] = "float16"
    conv_clamp: PositiveFloat = 256.0

    @model_validator(mode="after")
    def _check(self) -> StyleGAN2Discriminator:
        if len(self.blur_kernel) < 2:
            raise ValueError(f"blur_kernel={self.blur_kernel} needs at least 2 taps")
        return self

    @property
    def input_scale(self) -> int:
        return self.in_size

    @property
    def in_channels(self) -> int:
        return self.img_channels

    def build(self) -> nn.Module:
        from dsgan.models.stylegan2 import StyleGAN2Discriminator

        return StyleGAN2Discriminator(self)


class WGANGPGenerator(Strict):
    """Gulrajani et al. 2017's ResNet-free CelebA/LSUN generator as MMagic's WGANGPGenerator builds it: linear to
    4x4x512 (ReLU, BN), 3x3 conv-BN-ReLU, then per doubling nearest upsampling and two of them (channels 512, 512,
    256, 128, 64, 32 at 4 ... 128), 1x1 conv to RGB and tanh. Unconditional."""

    type: Literal["WGANGPGenerator"] = "WGANGPGenerator"
    output_scale: Literal[8, 16, 32, 64, 128] = 128
    noise_size: PositiveInt = 128
    num_classes: Literal[0] = 0
    """MMagic's WGAN-GP is unconditional."""
    out_channels: Literal[3] = 3

    def build(self) -> nn.Module:
        from dsgan.models.wgangp import WGANGPGenerator

        return WGANGPGenerator(self)


class WGANGPDiscriminator(Strict):
    """MMagic's WGANGPDiscriminator: 1x1 conv from RGB (LeakyReLU 0.2), per halving two 3x3 conv-norm-LeakyReLU and
    an average pool, then a 4x4 conv-norm-LeakyReLU to 1x1 and a linear layer. No BatchNorm (the gradient penalty
    is per sample) and no spectral norm: train it with `loss.gp_weight`."""

    type: Literal["WGANGPDiscriminator"] = "WGANGPDiscriminator"
    input_scale: Literal[8, 16, 32, 64, 128] = 128
    num_classes: Literal[0] = 0
    in_channels: Literal[3] = 3
    norm: Literal["LN2d", "GN"] = "LN2d"
    """LN2d: LayerNorm over (C, H, W) with per-element affine (MMagic's default); GN: GroupNorm with one group (the
    upstream configs' `norm_cfg=dict(type='GN')`)."""

    def build(self) -> nn.Module:
        from dsgan.models.wgangp import WGANGPDiscriminator

        return WGANGPDiscriminator(self)


GeneratorModel = Annotated[
    DCGANGenerator | SNGANGenerator | BigGANGenerator | StyleGAN2Generator | WGANGPGenerator,
    Field(discriminator="type"),
]
DiscriminatorModel = Annotated[
    DCGANDiscriminator | SNGANDiscriminator | BigGANDiscriminator | StyleGAN2Discriminator | WGANGPDiscriminator,
    Field(discriminator="type"),
]


def has_spectral_norm(d: BaseModel) -> bool:
    return isinstance(d, SNGANDiscriminator) or bool(getattr(d, "with_spectral_norm", False))
