"""One D micro-step and one G micro-step through the engine dict: MMagic's `train_discriminator` and
`train_generator`, built around DeepSpeed's GAN pitfalls: one backward per micro-step (DeepSpeed #7981), fakes
without G's graph, and D as a frozen module in the G phase (#399; through its engine, D's gradient hooks break G's
backward)."""

from __future__ import annotations

import torch

from dsgan.config import Loss
from dsgan.engines import EngineDict
from dsgan.losses import d_loss, d_regularizer, g_loss

D_STATS = ("d_loss", "d_loss_real", "d_loss_fake", "d_real_mean", "d_fake_mean", "d_reg")
"""What `d_step` returns, in order: summed over an interval's micro-steps on device, read when logging."""


def d_step(
    engines: EngineDict,
    loss_cfg: Loss,
    real: torch.Tensor,
    labels: torch.Tensor | None,
    z: torch.Tensor,
    fake_y: torch.Tensor | None,
    it: int,
) -> torch.Tensor:
    """One D micro-step. Fakes come from G's module under no_grad (no G graph, no G engine hooks); real and fake
    terms (and any gradient penalty) are summed into one loss for a single backward. Returns the detached D_STATS."""
    g, d = engines["generator"], engines["discriminator"]
    with torch.no_grad(), g.optim_context():
        fake = g.module(z, fake_y)
    real_logits = d(real, labels)
    fake_logits = d(fake, fake_y)
    loss, parts = d_loss(loss_cfg.type, real_logits, fake_logits)
    reg = d_regularizer(loss_cfg, d.module, real, fake, labels, it)
    if reg is not None:
        loss = loss + reg
    d.update_params(loss)
    return torch.stack(
        [
            loss.detach().float(),
            parts["d_loss_real"].float(),
            parts["d_loss_fake"].float(),
            real_logits.detach().float().mean(),
            fake_logits.detach().float().mean(),
            reg.detach().float() if reg is not None else torch.zeros((), device=loss.device),
        ]
    )


def g_step(
    engines: EngineDict, loss_type: str, z: torch.Tensor, fake_y: torch.Tensor | None
) -> tuple[torch.Tensor, bool]:
    """One G micro-step through G's engine; D runs as its frozen module (through D's engine, its gradient hooks
    break G's backward at ZeRO 0-2). Returns (detached loss, whether G's optimizer stepped)."""
    g, d = engines["generator"], engines["discriminator"]
    with d.frozen() as critic:
        fake = g(z, fake_y)
        with d.optim_context():
            loss = g_loss(loss_type, critic(fake, fake_y))
        stepped = g.update_params(loss)
    return loss.detach().float(), stepped
