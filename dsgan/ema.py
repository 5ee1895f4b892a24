"""EMA of G's weights, updated once per G optimizer update.

    ema = (1 - momentum) * ema + momentum * G        (parameters; buffers such as BatchNorm statistics are copied)

Units: dsgan counts `start_g_updates` and `interval_g_updates` in G optimizer updates and `momentum` is the weight
of the new value. MMagic's `ExponentialMovingAverage` uses the same momentum convention (BigGAN-128: 1e-4) but
counts `interval` and `start_iter` in iterations (data batches; G updates once per
`discriminator_steps * accumulative_counts` of them); MMGeneration 0.x's `ExponentialMovingAverageHook` gives the
kept fraction (`momentum=0.9999` means 1e-4 here) and counts train_step calls. `dsgan migrate` converts both.

The average is kept in fp32 on a full (never partitioned) copy of G, the same on every rank: under ZeRO-3, G's
partitioned parameters are gathered for each update (DeepSpeed #2056: an update of partitioned tensors is lost).
"""

from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn

from dsgan.config import EMA as EMAConfig


def _gathered(module: nn.Module) -> contextlib.AbstractContextManager:
    params = list(module.parameters())
    if params and hasattr(params[0], "ds_id"):  # ZeRO-3 partitioned
        import deepspeed

        return deepspeed.zero.GatheredParameters(params)
    return contextlib.nullcontext()


class EMA:
    def __init__(self, generator: nn.Module, cfg: EMAConfig) -> None:
        self.cfg = cfg
        with _gathered(generator):
            self.module = copy.deepcopy(generator).float()
        self.module.eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, generator: nn.Module, g_updates: int) -> None:
        """Call after each G optimizer update; `g_updates` counts the updates done so far (1 after the first)."""
        if g_updates % self.cfg.interval_g_updates:
            return
        m = self.cfg.momentum if g_updates > self.cfg.start_g_updates else 1.0  # before start: copy G
        with _gathered(generator):
            ema_params = list(self.module.parameters())
            g_params = [p.detach().float() for p in generator.parameters()]
            torch._foreach_lerp_(ema_params, g_params, m)
            for ema_buf, buf in zip(self.module.buffers(), generator.buffers(), strict=True):
                ema_buf.copy_(buf)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
