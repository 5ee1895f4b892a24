"""One D micro-step and one G micro-step through the engine dict: MMagic's `train_discriminator` and
`train_generator`, built around DeepSpeed's GAN pitfalls: one backward per micro-step (DeepSpeed #7981), fakes
without G's graph, and D as a frozen module in the G phase (#399; through its engine, D's gradient hooks break G's
backward). Also their inputs (noise that needs no RNG state to resume) and their statistics over a log interval."""

from __future__ import annotations

import torch

from dsgan.config import GeneratorModel, Loss
from dsgan.distributed import DistEnv
from dsgan.engines import EngineDict, Update
from dsgan.losses import d_loss, d_regularizer, g_loss

D_STATS = ("d_loss", "d_loss_real", "d_loss_fake", "d_real_mean", "d_fake_mean", "d_reg")
"""What `d_step` returns, in order."""


def step_seed(seed: int, rank: int, iteration: int, micro: int) -> int:
    """Noise and fake labels come from (seed, rank, iteration, micro-step): resume needs no RNG state, and each
    rank draws different noise."""
    return (seed * 0x9E3779B1 + rank * 0x85EBCA77 + iteration * 0xC2B2AE3D + micro * 0x27D4EB2F) % (2**63)


def sample_latents(
    model: GeneratorModel, seed: int, env: DistEnv, iteration: int, micro: int, batch: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """G's noise and (for a conditional G) fake labels for micro-step `micro` of `iteration` on this rank."""
    gen = torch.Generator(env.device).manual_seed(step_seed(seed, env.rank, iteration, micro))
    z = torch.randn(batch, model.noise_size, generator=gen, device=env.device)
    y = torch.randint(model.num_classes, (batch,), generator=gen, device=env.device) if model.num_classes else None
    return z, y


def d_step(
    engines: EngineDict,
    loss_cfg: Loss,
    real: torch.Tensor,
    labels: torch.Tensor | None,
    z: torch.Tensor,
    fake_y: torch.Tensor | None,
    it: int,
    measure_grad_norm: bool = False,
) -> tuple[torch.Tensor, Update]:
    """One D micro-step. Fakes come from G's module under no_grad (no G graph, no G engine hooks); real and fake
    terms (and any gradient penalty) are summed into one loss for a single backward. Returns the detached D_STATS
    and D's update."""
    g, d = engines["generator"], engines["discriminator"]
    with torch.no_grad(), g.optim_context():
        fake = g.module(z, fake_y)
    real_logits = d(real, labels)
    fake_logits = d(fake, fake_y)
    loss, parts = d_loss(loss_cfg.type, real_logits, fake_logits)
    reg = d_regularizer(loss_cfg, d.module, real, fake, labels, it)
    if reg is not None:
        loss = loss + reg
    update = d.update_params(loss, measure_grad_norm)
    stats = torch.stack(
        [
            loss.detach().float(),
            parts["d_loss_real"].float(),
            parts["d_loss_fake"].float(),
            real_logits.detach().float().mean(),
            fake_logits.detach().float().mean(),
            reg.detach().float() if reg is not None else torch.zeros((), device=loss.device),
        ]
    )
    return stats, update


def g_step(
    engines: EngineDict, loss_type: str, z: torch.Tensor, fake_y: torch.Tensor | None, measure_grad_norm: bool = False
) -> tuple[torch.Tensor, Update]:
    """One G micro-step through G's engine; D runs as its frozen module (through D's engine, its gradient hooks
    break G's backward at ZeRO 0-2). Returns (detached loss, G's update)."""
    g, d = engines["generator"], engines["discriminator"]
    with d.frozen() as critic:
        fake = g(z, fake_y)
        with d.optim_context():
            loss = g_loss(loss_type, critic(fake, fake_y))
        update = g.update_params(loss, measure_grad_norm)
    return loss.detach().float(), update


class IntervalStats:
    """Sums over one log interval, kept on the device: added every micro-step, read (one all-reduce, one copy to
    the host) only by `reduce`, on logging iterations."""

    def __init__(self, device: torch.device) -> None:
        self._sums = torch.zeros(len(D_STATS) + 1, device=device)  # D_STATS, then g_loss
        self._d_micro_steps = self._g_micro_steps = 0
        self._grad_norms: dict[str, torch.Tensor | float | None] = {}
        """Each network's last update's gradient norm (None when that update was not measured)."""

    def add_d(self, stats: torch.Tensor, update: Update) -> None:
        self._sums[:-1] += stats
        self._d_micro_steps += 1
        if update.stepped:
            self._grad_norms["d_grad_norm"] = update.grad_norm

    def add_g(self, loss: torch.Tensor, update: Update) -> None:
        self._sums[-1] += loss
        self._g_micro_steps += 1
        if update.stepped:
            self._grad_norms["g_grad_norm"] = update.grad_norm

    def reduce(self, env: DistEnv) -> dict[str, float]:
        """Means over the interval and over ranks, then reset. `g_loss` is absent (not NaN) from an interval without
        a G step (the D-only stretches of a long D phase); each gradient norm is that of the network's last update, when
        it was measured (the same on every rank: gradients are reduced before it is measured)."""
        sums = self._sums
        if env.world_size > 1:
            torch.distributed.all_reduce(sums)
            sums /= env.world_size
        *d_sums, g_sum = sums.tolist()
        out = {key: value / max(self._d_micro_steps, 1) for key, value in zip(D_STATS, d_sums, strict=True)}
        if self._g_micro_steps:
            out["g_loss"] = g_sum / self._g_micro_steps
        out |= {key: float(norm) for key, norm in self._grad_norms.items() if norm is not None}
        sums.zero_()
        self._d_micro_steps = self._g_micro_steps = 0
        return out
