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
    output_scale: Literal[16, 32, 64] = 32
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
    input_scale: Literal[16, 32, 64] = 32
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
    """Miyato et al. 2018 ResNet generator (CIFAR layout)."""

    type: Literal["SNGANGenerator"] = "SNGANGenerator"
    output_scale: Literal[32, 64] = 32
    noise_size: PositiveInt = 128
    num_classes: Annotated[int, Field(ge=0)] = 0
    base_channels: PositiveInt = 256
    out_channels: PositiveInt = 3

    def build(self) -> nn.Module:
        from dsgan.models.sngan import SNGANGenerator

        return SNGANGenerator(self)


class SNGANDiscriminator(Strict):
    type: Literal["SNGANDiscriminator"] = "SNGANDiscriminator"
    input_scale: Literal[32, 64] = 32
    num_classes: Annotated[int, Field(ge=0)] = 0
    base_channels: PositiveInt = 128
    in_channels: PositiveInt = 3
    sn_eps: PositiveFloat = 1e-12

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


GeneratorModel = Annotated[DCGANGenerator | SNGANGenerator | BigGANGenerator, Field(discriminator="type")]
DiscriminatorModel = Annotated[
    DCGANDiscriminator | SNGANDiscriminator | BigGANDiscriminator, Field(discriminator="type")
]


def has_spectral_norm(d: BaseModel) -> bool:
    return isinstance(d, SNGANDiscriminator) or bool(getattr(d, "with_spectral_norm", False))
