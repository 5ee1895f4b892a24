"""The D/G schedule as a pure function of the iteration counter (no torch, no state).

MMagic 1.x semantics (BaseGAN.train_step): one data batch per iteration; D trains one micro-batch every iteration
and steps its optimizer every `d_accumulation` iterations; when `(it + 1) % (discriminator_steps * d_accumulation)
== 0`, G trains `generator_steps * g_accumulation` micro-batches of fresh noise in the same iteration.

Because the schedule is a function of `it` alone, every rank computes the same plan, and resuming needs only the
iteration count. Checkpoints are taken only where both networks sit on an optimizer-update boundary (DeepSpeed does
not save half-accumulated gradients): at the end of an iteration whose D micro-step completed a D update. That can
be in the middle of a D/G cycle when `discriminator_steps > 1`.

The trainer, config validation, `dsgan migrate`'s report and `--diff` all read the schedule from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dsgan.config import Config


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

    @classmethod
    def of(cls, cfg: Config) -> Schedule:
        """The schedule a run config trains: its `schedule` section and each engine's accumulation."""
        return cls(
            cfg.schedule.discriminator_steps,
            cfg.schedule.generator_steps,
            cfg.discriminator.deepspeed.gradient_accumulation_steps,
            cfg.generator.deepspeed.gradient_accumulation_steps,
        )

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

    def fingerprint(self, iters_done: int, start_iteration: int) -> dict[str, int]:
        """The counters every rank's engines must show after `iters_done` iterations of a process that started
        (fresh or resumed) at `start_iteration`. DeepSpeed restores `global_steps` from a checkpoint but counts
        `micro_steps` from 0 in each process, so the micro-step counters are those of this process only."""
        return {
            "iteration": iters_done,
            "d_micro_steps": iters_done - start_iteration,
            "d_updates": self.d_updates(iters_done),
            "g_micro_steps": self.g_micro_steps(iters_done) - self.g_micro_steps(start_iteration),
        }

    def describe(self, total_iters: int | None) -> list[str]:
        """What a run of `total_iters` iterations trains, in words (the trainer's log and the migration report).
        None (a length in images, before the world size is known) describes the cycle only."""
        lines = [
            f"one cycle = {self.cycle_iters} iterations (data batches): D makes {self.discriminator_steps} update(s) "
            f"of {self.d_accumulation} micro-batch(es), then G makes {self.generator_steps} update(s) of "
            f"{self.g_accumulation} micro-batch(es) of fresh noise"
        ]
        if total_iters is not None:
            lines.append(
                f"{total_iters} iterations = {self.d_updates(total_iters)} D updates and "
                f"{self.g_updates(total_iters)} G updates"
            )
        return lines
