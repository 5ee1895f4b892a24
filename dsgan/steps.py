"""One D micro-step and one G micro-step through the engine dict: MMagic's `train_discriminator` and
`train_generator`, built around DeepSpeed's GAN pitfalls: one backward per micro-step (DeepSpeed #7981), fakes
without G's graph, and D as a frozen module in the G phase (#399; through its engine, D's gradient hooks break G's
backward). Also their inputs (noise that needs no RNG state to resume) and their statistics over a log interval."""

from __future__ import annotations

from typing import NamedTuple, cast

import torch

from dsgan.config import GeneratorModel, Loss
from dsgan.distributed import DistEnv
from dsgan.engines import EngineDict, Update
from dsgan.losses import StyleSpace, View, d_loss, d_regularizer, g_loss, path_length_penalty
from dsgan.schedule import Schedule

D_STATS = ("d_loss", "d_loss_real", "d_loss_fake", "d_real_mean", "d_fake_mean", "d_reg", "d_real_sign")
"""What `d_step` returns, in order (d_real_sign: the mean of sign(D(real)), ADA's overfitting heuristic r_t)."""
G_STATS = ("g_loss", "g_reg")
"""What `g_step` returns, in order."""
PL_STREAM = 1 << 20
"""Micro-step indices of `step_seed` from here on draw the path-length batches (G micro-steps are 1, 2, ...)."""


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
    d_update: int,
    measure_grad_norm: bool = False,
    real_view: View | None = None,
    fake_view: View | None = None,
) -> tuple[torch.Tensor, Update]:
    """One D micro-step of D update `d_update` (0-based: which updates regularise). Fakes come from G's module
    under no_grad (no G graph, no G engine hooks); real and fake terms (and any gradient penalty) are summed into
    one loss for a single backward. D sees `real_view(real)` and `fake_view(fake)` (the augmentation, dsgan.augment;
    None: the images as they are), and the penalties differentiate D(real_view(x)) w.r.t. x, as NVlabs' R1 does.
    Returns the detached D_STATS and D's update."""
    g, d = engines["generator"], engines["discriminator"]
    with torch.no_grad(), g.optim_context():
        fake = g.module(z, fake_y)
    real_logits = d(real_view(real) if real_view else real, labels)
    fake_logits = d(fake_view(fake) if fake_view else fake, fake_y)
    loss, parts = d_loss(loss_cfg.type, real_logits, fake_logits)
    reg = d_regularizer(loss_cfg, d.module, real, fake, labels, d_update, real_view)
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
            real_logits.detach().float().sign().mean(),
        ]
    )
    return stats, update


class PathLengthBatch(NamedTuple):
    """The inputs of one micro-step's path-length penalty: its own latents, and the seed of its image probe."""

    z: torch.Tensor
    y: torch.Tensor | None
    probe: torch.Generator


def g_step(
    engines: EngineDict,
    loss_cfg: Loss,
    z: torch.Tensor,
    fake_y: torch.Tensor | None,
    measure_grad_norm: bool = False,
    path_length: tuple[PathLengthBatch, torch.Tensor] | None = None,
    view: View | None = None,
) -> tuple[torch.Tensor, Update, torch.Tensor | None]:
    """One G micro-step through G's engine; D runs as its frozen module (through D's engine, its gradient hooks
    break G's backward at ZeRO 0-2) on `view(fake)` (the augmentation, differentiated through). With `path_length`
    (the batch and the running mean), the weighted penalty joins the same loss: one backward. Returns (detached
    G_STATS, G's update, the updated path-length mean or None)."""
    g, d = engines["generator"], engines["discriminator"]
    reg, path_mean = None, None
    with d.frozen() as critic:
        fake = g(z, fake_y)
        with d.optim_context():
            loss = g_loss(loss_cfg.type, critic(view(fake) if view else fake, fake_y))
        if path_length is not None:
            (pl_z, pl_y, probe), mean = path_length
            # G's module, not its engine: autograd.grad through an engine fires its gradient hooks (see losses).
            styled = cast(StyleSpace, g.module)  # the config allows pl_weight > 0 only for StyleGAN2
            penalty, path_mean = path_length_penalty(styled, pl_z, pl_y, mean, loss_cfg.pl_decay, probe)
            reg = loss_cfg.pl_weight * loss_cfg.pl_interval * penalty  # lazy: scaled by the interval
        update = g.update_params(loss if reg is None else loss + reg, measure_grad_norm)
    zero = torch.zeros((), device=loss.device)
    stats = torch.stack([loss.detach().float(), reg.detach().float() if reg is not None else zero])
    return stats, update, path_mean


class PathLength:
    """The path-length regularizer's training state and timing. The running mean is kept on the device, the same on
    every rank (each update is averaged over ranks), and checkpointed (TrainerState.pl_mean). The penalty runs on
    every micro-batch of every `pl_interval`-th G update (0-based update index, so the first update has it), the
    rule that makes MMagic's `iteration % g_reg_interval == 0` exact for any accumulation and D/G steps."""

    def __init__(self, cfg: Loss, model: GeneratorModel, seed: int, env: DistEnv, mean: float) -> None:
        self.cfg, self.model, self.seed, self.env = cfg, model, seed, env
        self.mean = torch.tensor(mean, device=env.device)

    def due(self, schedule: Schedule, it: int, g_micro_step: int) -> bool:
        """Does G micro-step `g_micro_step` (0-based, in the G phase of iteration `it`) carry the penalty?"""
        update = schedule.g_updates(it) + g_micro_step // schedule.g_accumulation
        return self.cfg.pl_weight > 0 and update % self.cfg.pl_interval == 0

    def batch(self, it: int, g_micro_step: int, micro_batch: int) -> tuple[PathLengthBatch, torch.Tensor]:
        """The penalty's latents (micro_batch / pl_batch_shrink of them, at least 1) and probe seed, drawn from
        (seed, rank, iteration, micro-step) like G's noise; and the current mean."""
        size = max(1, micro_batch // self.cfg.pl_batch_shrink)
        micro = PL_STREAM + 2 * g_micro_step
        z, y = sample_latents(self.model, self.seed, self.env, it, micro, size)
        probe = torch.Generator(self.env.device).manual_seed(step_seed(self.seed, self.env.rank, it, micro + 1))
        return PathLengthBatch(z, y, probe), self.mean

    def update(self, path_mean: torch.Tensor) -> None:
        if self.env.world_size > 1:
            path_mean = path_mean.clone()
            torch.distributed.all_reduce(path_mean)
            path_mean /= self.env.world_size
        self.mean = path_mean


class IntervalStats:
    """Sums over one log interval, kept on the device: added every micro-step, read (one all-reduce, one copy to
    the host) only by `reduce`, on logging iterations."""

    def __init__(self, device: torch.device) -> None:
        self._sums = torch.zeros(len(D_STATS) + len(G_STATS), device=device)
        self._d_micro_steps = self._g_micro_steps = 0
        self._grad_norms: dict[str, torch.Tensor | float | None] = {}
        """Each network's last update's gradient norm (None when that update was not measured)."""

    def add_d(self, stats: torch.Tensor, update: Update) -> None:
        self._sums[: len(D_STATS)] += stats
        self._d_micro_steps += 1
        if update.stepped:
            self._grad_norms["d_grad_norm"] = update.grad_norm

    def add_g(self, stats: torch.Tensor, update: Update) -> None:
        self._sums[len(D_STATS) :] += stats
        self._g_micro_steps += 1
        if update.stepped:
            self._grad_norms["g_grad_norm"] = update.grad_norm

    def reduce(self, env: DistEnv) -> dict[str, float]:
        """Means over the interval and over ranks, then reset. G_STATS are absent (not NaN) from an interval without
        a G step (the D-only stretches of a long D phase); each gradient norm is that of the network's last update, when
        it was measured (the same on every rank: gradients are reduced before it is measured)."""
        sums = self._sums
        if env.world_size > 1:
            torch.distributed.all_reduce(sums)
            sums /= env.world_size
        values = sums.tolist()
        d_sums, g_sums = values[: len(D_STATS)], values[len(D_STATS) :]
        out = {key: value / max(self._d_micro_steps, 1) for key, value in zip(D_STATS, d_sums, strict=True)}
        if self._g_micro_steps:
            out |= {key: value / self._g_micro_steps for key, value in zip(G_STATS, g_sums, strict=True)}
        out |= {key: float(norm) for key, norm in self._grad_norms.items() if norm is not None}
        sums.zero_()
        self._d_micro_steps = self._g_micro_steps = 0
        return out
