"""GAN losses and gradient penalties: pure functions of logits and modules.

Penalties take D's *underlying module* (`engines['discriminator'].module`), never its engine: `autograd.grad`
through a DeepSpeed engine fails at ZeRO 0-2 (DeepSpeed 0.19: its gradient hooks fire). They run in fp32 (gradient
penalties in fp16 tend to NaN).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol, cast

import torch
import torch.nn.functional as F
from torch import nn

from dsgan.config import Loss
from dsgan.models.stylegan2 import full_precision


def d_loss(
    loss_type: str, real_logits: torch.Tensor, fake_logits: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """D's loss, and its real and fake terms (detached, for logging)."""
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    if loss_type == "hinge":  # Lim & Ye 2017; BigGAN
        real, fake = F.relu(1 - real_logits).mean(), F.relu(1 + fake_logits).mean()
    elif loss_type == "vanilla":  # Goodfellow et al. 2014: -log sigmoid(D(x)) - log(1 - sigmoid(D(G(z))))
        real, fake = F.softplus(-real_logits).mean(), F.softplus(fake_logits).mean()
    elif loss_type == "wgan":  # Arjovsky et al. 2017: D(G(z)) - D(x)
        real, fake = -real_logits.mean(), fake_logits.mean()
    elif loss_type == "lsgan":  # Mao et al. 2017 with targets 1 (real) and 0 (fake), as MMagic's LSGAN
        real, fake = (real_logits - 1).pow(2).mean(), fake_logits.pow(2).mean()
    else:
        raise ValueError(f"unknown loss type {loss_type!r}")
    return real + fake, {"d_loss_real": real.detach(), "d_loss_fake": fake.detach()}


def g_loss(loss_type: str, fake_logits: torch.Tensor) -> torch.Tensor:
    fake_logits = fake_logits.float()
    if loss_type in ("hinge", "wgan"):
        return -fake_logits.mean()
    if loss_type == "vanilla":  # the non-saturating form: -log sigmoid(D(G(z)))
        return F.softplus(-fake_logits).mean()
    if loss_type == "lsgan":  # G pulls D(G(z)) towards the real target 1
        return (fake_logits - 1).pow(2).mean()
    raise ValueError(f"unknown loss type {loss_type!r}")


View = Callable[[torch.Tensor], torch.Tensor]
"""What D sees of an image batch: its augmentation (dsgan.augment); None where D sees the images as they are."""


def _input_gradients(
    d_module: nn.Module, x: torch.Tensor, y: torch.Tensor | None, view: View | None = None
) -> torch.Tensor:
    """grad_x D(view(x)) per sample, with a graph (the penalty is differentiated again). Autocast off: fp32 unless a
    bf16 engine made D's parameters bf16 (bf16 has fp32's range, so no overflow as in fp16)."""
    x = x.detach().float().requires_grad_(True)
    # The backward too: it runs under the caller's autocast. Partial-precision layers (StyleGAN2) in fp32 as well.
    with torch.autocast(x.device.type, enabled=False), full_precision(d_module):
        out = d_module(view(x) if view else x, y).float()
        (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return grad.flatten(1)


def r1_penalty(
    d_module: nn.Module, real: torch.Tensor, y: torch.Tensor | None, view: View | None = None
) -> torch.Tensor:
    """E ||grad_x D(x)||^2 on reals (Mescheder et al. 2018); the caller applies gamma / 2. With an augmentation
    `view`, the gradient of D(view(x)) w.r.t. the un-augmented x (NVlabs' R1 under ADA)."""
    return _input_gradients(d_module, real, y, view).pow(2).sum(1).mean()


def gradient_penalty(
    d_module: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    y: torch.Tensor | None,
    generator: torch.Generator | None = None,
    view: View | None = None,
) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): E (||grad D(view(x_hat))|| - 1)^2 on random interpolates of real and fake."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, generator=generator, device=real.device)
    x_hat = alpha * real.detach().float() + (1 - alpha) * fake.detach().float()
    return (_input_gradients(d_module, x_hat, y, view).norm(dim=1) - 1).pow(2).mean()


def d_regularizer(
    cfg: Loss,
    d_module: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    y: torch.Tensor | None,
    d_update: int,
    view: View | None = None,
) -> torch.Tensor | None:
    """The weighted penalties for a D micro-step of D update `d_update` (0-based), or None. R1 is lazy (StyleGAN2):
    applied to every micro-batch of every `r1_interval`-th update and scaled by the interval so that its average
    strength does not depend on the interval. A conditional D scores WGAN-GP interpolates with the real images'
    labels. `view`: the reals' augmentation, which D sees in both penalties (the same draw as the real logits')."""
    terms = []
    if cfg.r1_weight > 0 and d_update % cfg.r1_interval == 0:
        terms.append(cfg.r1_weight / 2 * cfg.r1_interval * r1_penalty(d_module, real, y, view))
    if cfg.gp_weight > 0:
        terms.append(cfg.gp_weight * gradient_penalty(d_module, real, fake, y, view=view))
    return torch.stack(terms).sum() if terms else None


class StyleSpace(Protocol):
    """A generator with style codes (StyleGAN2Generator), as the path-length penalty needs it."""

    def style_codes(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor: ...

    def __call__(self, w: torch.Tensor, y: torch.Tensor | None, *, input_is_latent: bool) -> torch.Tensor: ...


def path_length_penalty(
    g_module: StyleSpace,
    z: torch.Tensor,
    y: torch.Tensor | None,
    mean: torch.Tensor,
    decay: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """StyleGAN2's path-length regularizer (Karras et al. 2020, eq. 4): E (|J_w^T u| - a)^2, J the Jacobian of the
    image w.r.t. the style codes w that synthesised it, u ~ N(0, I) / sqrt(H W) an image-shaped probe (drawn from
    `generator`), and a = mean + decay * (batch mean - mean) the running mean of the path length, differentiated
    through as in NVlabs and MMagic. In fp32, unscaled. Returns (penalty, a detached)."""
    # The backward too: it runs under the caller's autocast. Partial-precision layers in fp32 as well.
    with torch.autocast(z.device.type, enabled=False), full_precision(cast(nn.Module, g_module)):
        # Differentiate w.r.t. style codes this function passes in: under ZeRO-3 a module's outputs are copies
        # made by DeepSpeed's hooks, so the w+ a forward returns is not the one its synthesis used.
        latents = g_module.style_codes(z, y)
        images = g_module(latents, y, input_is_latent=True)
        images = images.float()
        probe = torch.randn(images.shape, generator=generator, device=images.device) / math.sqrt(images[0, 0].numel())
        (grad,) = torch.autograd.grad((images * probe).sum(), latents, create_graph=True)
    lengths = grad.float().pow(2).sum(2).mean(1).sqrt()  # [B]: |J^T u| over each sample's style codes
    path_mean = mean + decay * (lengths.mean() - mean)
    return (lengths - path_mean).pow(2).mean(), path_mean.detach()
