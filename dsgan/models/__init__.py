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
