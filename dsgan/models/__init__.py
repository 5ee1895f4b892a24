"""Generators and discriminators, each built by its config class (`cfg.build()`; no string registry).

Every generator is called `G(z, y)` with z [B, noise_size] and labels y [B] (None when num_classes == 0) and returns
images [B, C, S, S] in [-1, 1]; every discriminator is called `D(x, y)` and returns logits [B].
"""

from __future__ import annotations

import torch
from torch import nn

from dsgan.config import models as c


class Generator(nn.Module):
    """The base of every generator: what sampling, evaluation and the EMA read besides the forward."""

    noise_size: int
    num_classes: int
    """0 = unconditional (y is None)."""
    output_scale: int


def build_generator(cfg: c.GeneratorModel) -> Generator:
    generator = cfg.build()
    assert isinstance(generator, Generator), type(generator)
    return generator


def build_discriminator(cfg: c.DiscriminatorModel) -> nn.Module:
    return cfg.build()


def input_blocks(discriminator: nn.Module) -> list[list[nn.Module]]:
    """D's blocks in input order, for FreezeD: residual blocks (BigGAN's attention with the block it follows),
    DCGAN's strided convs, StyleGAN2's from-RGB layer then its ResBlocks."""
    from dsgan.models.biggan import BigGANDiscriminator
    from dsgan.models.dcgan import DCGANDiscriminator
    from dsgan.models.sngan import SNGANDiscriminator
    from dsgan.models.stylegan2 import StyleGAN2Discriminator

    match discriminator:
        case BigGANDiscriminator():
            attention_after = discriminator.attention_after
            return [
                [block, discriminator.attention] if i == attention_after and discriminator.attention else [block]
                for i, block in enumerate(discriminator.blocks)
            ]
        case SNGANDiscriminator():
            return [[discriminator.from_rgb], *([b] for b in discriminator.conv_blocks)]
        case DCGANDiscriminator() | StyleGAN2Discriminator():
            return [[conv] for conv in discriminator.convs]
    raise TypeError(f"no block list for {type(discriminator).__name__}")


def freeze_input_blocks(discriminator: nn.Module, count: int) -> None:
    """`requires_grad=False` on D's first `count` blocks (init.freeze_d_blocks). Call before the engine is built,
    which hands DeepSpeed's optimizer only the parameters that require gradients."""
    blocks = input_blocks(discriminator)
    if count > len(blocks):
        from dsgan.errors import ConfigError

        raise ConfigError(f"init.freeze_d_blocks={count}: this discriminator has {len(blocks)} blocks; freeze fewer")
    for block in blocks[:count]:
        for module in block:
            module.requires_grad_(False)


def count_parameters(module: nn.Module) -> int:
    """Elements of every parameter, frozen ones included; buffers (spectral-norm `u`, BatchNorm statistics) are not
    parameters and are not counted."""
    return sum(p.numel() for p in module.parameters())


def truncated_noise(
    batch: int, noise_size: int, truncation: float | None, generator: torch.Generator | None
) -> torch.Tensor:
    """z [batch, noise_size] for G; BigGAN's truncation trick resamples |z| > truncation (None = plain normal).
    One implementation, in dsgan.samples, which draws the same distribution by inverse CDF at a fixed cost."""
    from dsgan.samples import truncated_noise as draw

    return draw(batch, noise_size, truncation, generator)


def parameter_report(cfg_g: c.GeneratorModel, cfg_d: c.DiscriminatorModel) -> str:
    """Parameter (and buffer) counts of the configured G and D, for `dsgan params`."""
    lines = []
    for role, cfg, module in (
        ("generator", cfg_g, build_generator(cfg_g)),
        ("discriminator", cfg_d, build_discriminator(cfg_d)),
    ):
        params, buffers = count_parameters(module), sum(b.numel() for b in module.buffers())
        lines.append(f"{role:<13} {cfg.type:<20} {params:>14,} parameters {buffers:>10,} buffer values")
    return "\n".join(lines)
