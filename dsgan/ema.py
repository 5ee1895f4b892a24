"""EMA of G's weights, updated once per G optimizer update.

    ema = (1 - momentum) * ema + momentum * G        (parameters; buffers such as BatchNorm statistics and
                                                      spectral-norm u are copied)

Units: `start_g_updates` and `interval_g_updates` count G optimizer updates; `momentum` is the weight of the new
value. The first `start_g_updates` updates copy G; after them, every `interval_g_updates`-th update (counted from
the start) averages. How MMagic's and MMGeneration's EMA settings map onto these: dsgan/migrate/training.py, EMA.

The average is kept in fp32 (even when G's parameters are bf16) on a full, never partitioned copy of G, the same on
every rank: under ZeRO-3, G's partitioned parameters are gathered on every rank for each update (DeepSpeed #2056: an
update of partitioned tensors is lost).
"""

from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn

from dsgan.config import EMA as EMAConfig
from dsgan.models import Generator


def _gathered(module: nn.Module) -> contextlib.AbstractContextManager:
    """Full parameters for reading; a no-op unless ZeRO-3 has partitioned them."""
    params = list(module.parameters())
    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        return deepspeed.zero.GatheredParameters(params)
    return contextlib.nullcontext()


def _plain_copy(generator: Generator) -> Generator:
    """An fp32 copy without DeepSpeed's state. ZeRO-3 registers gather/release hooks on every submodule; copied
    along, they would fire on the copy, whose parameters ZeRO knows nothing of. dsgan's models register none."""
    with _gathered(generator):
        module = copy.deepcopy(generator)
    for m in module.modules():
        for hooks in (m._forward_pre_hooks, m._forward_hooks, m._backward_hooks, m._backward_pre_hooks):
            hooks.clear()
    return module.float().eval().requires_grad_(False)


class EMA:
    def __init__(self, generator: Generator, cfg: EMAConfig) -> None:
        self.cfg = cfg
        self.module = _plain_copy(generator)
        """The averaged generator, for sampling and evaluation."""

    @torch.no_grad()
    def update(self, generator: nn.Module, g_updates: int) -> None:
        """Call after each G optimizer update; `g_updates` counts the updates done so far (1 after the first).
        Buffers are copied on every call, parameters averaged on the due ones (copied before the start)."""
        since_start = g_updates - self.cfg.start_g_updates
        averaging = since_start > 0
        if not averaging or since_start % self.cfg.interval_g_updates == 0:
            with _gathered(generator):
                ema_params: list[torch.Tensor] = list(self.module.parameters())
                g_params = [p.detach().float() for p in generator.parameters()]
                if averaging:
                    torch._foreach_lerp_(ema_params, g_params, self.cfg.momentum)
                else:
                    torch._foreach_copy_(ema_params, g_params)
        for (name, ema_buf), (g_name, buf) in zip(self.module.named_buffers(), generator.named_buffers(), strict=True):
            assert name == g_name, (name, g_name)
            ema_buf.copy_(buf)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
