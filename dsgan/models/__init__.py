"""Generators and discriminators, built from their config class (no string registry).

Every generator is called `G(z, y)` with z [B, noise_size] and labels y [B] (None when num_classes == 0) and returns
images [B, C, S, S] in [-1, 1]; every discriminator is called `D(x, y)` and returns logits [B].
"""

from __future__ import annotations

import torch
from torch import nn

from dsgan import config as c


def build_generator(cfg: c.GeneratorModel) -> nn.Module:
    match cfg:
        case c.DCGANGenerator():
            from dsgan.models.dcgan import DCGANGenerator

            return DCGANGenerator(cfg)
        case c.SNGANGenerator():
            from dsgan.models.sngan import SNGANGenerator

            return SNGANGenerator(cfg)
        case c.BigGANGenerator():
            from dsgan.models.biggan import BigGANGenerator

            return BigGANGenerator(cfg)
    raise TypeError(f"no generator for {type(cfg).__name__}")


def build_discriminator(cfg: c.DiscriminatorModel) -> nn.Module:
    match cfg:
        case c.DCGANDiscriminator():
            from dsgan.models.dcgan import DCGANDiscriminator

            return DCGANDiscriminator(cfg)
        case c.SNGANDiscriminator():
            from dsgan.models.sngan import SNGANDiscriminator

            return SNGANDiscriminator(cfg)
        case c.BigGANDiscriminator():
            from dsgan.models.biggan import BigGANDiscriminator

            return BigGANDiscriminator(cfg)
    raise TypeError(f"no discriminator for {type(cfg).__name__}")


def count_parameters(module: nn.Module) -> int:
    """Trainable tensors only: spectral-norm `u` and BatchNorm statistics are buffers."""
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
