"""The D/G schedule as a pure function of the iteration counter (no torch, no state).

MMagic 1.x semantics (BaseGAN.train_step): one data batch per iteration; D trains one micro-batch every iteration
and steps its optimizer every `d_accumulation` iterations; when `(it + 1) % (discriminator_steps * d_accumulation)
== 0`, G trains `generator_steps * g_accumulation` micro-batches of fresh noise in the same iteration.

Because the schedule is a function of `it` alone, every rank computes the same plan, and resuming needs only the
iteration count. Checkpoints are taken only where both networks sit on an optimizer-update boundary (DeepSpeed does
not save half-accumulated gradients): at the end of an iteration whose D micro-step completed a D update. That can
be in the middle of a D/G cycle when `discriminator_steps > 1`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IterationPlan:
    d_update: bool
    """This iteration's D micro-step completes an accumulation window: D's optimizer steps."""
    g_micro_steps: int
    """G micro-batches to run after D's micro-step (0, or generator_steps * g_accumulation)."""


@dataclass(frozen=True)
class Schedule:
    discriminator_steps: int
    generator_steps: int
    d_accumulation: int
    g_accumulation: int

    def __post_init__(self) -> None:
        for name in ("discriminator_steps", "generator_steps", "d_accumulation", "g_accumulation"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def cycle_iters(self) -> int:
        """Iterations (data batches) per D/G cycle."""
        return self.discriminator_steps * self.d_accumulation

    def plan(self, it: int) -> IterationPlan:
        g_phase = (it + 1) % self.cycle_iters == 0
        return IterationPlan(
            d_update=(it + 1) % self.d_accumulation == 0,
            g_micro_steps=self.generator_steps * self.g_accumulation if g_phase else 0,
        )

    def is_boundary(self, iters_done: int) -> bool:
        """After `iters_done` iterations, are both networks on an optimizer-update boundary (safe to checkpoint)?"""
        return iters_done % self.d_accumulation == 0

    def d_updates(self, iters_done: int) -> int:
        return iters_done // self.d_accumulation

    def g_updates(self, iters_done: int) -> int:
        return (iters_done // self.cycle_iters) * self.generator_steps

    def g_micro_steps(self, iters_done: int) -> int:
        return self.g_updates(iters_done) * self.g_accumulation

    def fingerprint(self, iters_done: int) -> tuple[int, int, int, int]:
        """What every rank must agree on after `iters_done` iterations: (iterations, D micro-steps, D updates,
        G micro-steps). The trainer compares these with the engines' own counters and across ranks."""
        return (iters_done, iters_done, self.d_updates(iters_done), self.g_micro_steps(iters_done))
