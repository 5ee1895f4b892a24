"""Generators and discriminators, built from their config class (no string registry).

Every generator is called `G(z, y)` with z [B, noise_size] and labels y [B] (None when num_classes == 0) and returns
images [B, C, S, S] in [-1, 1]; every discriminator is called `D(x, y)` and returns logits [B].
"""

from __future__ import annotations

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
    return sum(p.numel() for p in module.parameters())


def parameter_report(g_cfg: c.GeneratorModel, d_cfg: c.DiscriminatorModel) -> str:
    g, d = build_generator(g_cfg), build_discriminator(d_cfg)
    return (
        f"generator     {g_cfg.type:<22} {count_parameters(g):>14,} parameters\n"
        f"discriminator {d_cfg.type:<22} {count_parameters(d):>14,} parameters"
    )
