"""Two DeepSpeed engines, one per network, with an MMEngine-OptimWrapper-like API.

This is the only module that calls `deepspeed.initialize`. Each network gets its own DeepSpeed config, optimizer,
loss scaler (fp16) and ZeRO stage, as MMagic's `OptimWrapperDict` gives each network its own `OptimWrapper`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import NamedTuple

import torch
from torch import nn

from dsgan.config import DeepSpeedConfig

NETWORKS = ("generator", "discriminator")


class Update(NamedTuple):
    """What one `update_params` call did."""

    stepped: bool
    """The optimizer stepped (the micro-batch closed an accumulation window)."""
    grad_norm: torch.Tensor | float | None
    """The global gradient norm before clipping, when asked for and stepped; a device tensor where dsgan measures
    it (read only when logged), DeepSpeed's number elsewhere."""


class NetworkEngine:
    """One network's DeepSpeed engine. DeepSpeed does the loss scaling, accumulation and gradient reduction;
    `gradient_accumulation_steps` of its config is MMagic's `accumulative_counts`."""

    def __init__(self, name: str, engine, ds_cfg: DeepSpeedConfig) -> None:  # engine: deepspeed.DeepSpeedEngine
        self.name = name
        self.engine = engine
        self.ds_cfg = ds_cfg
        # DeepSpeed's own reading of its torch_autocast section (None: torch's default for the device, as DeepSpeed's)
        self._autocast = engine.torch_autocast_enabled()
        self._autocast_dtype = engine.torch_autocast_dtype()
        self._device_type = engine.device.type if isinstance(engine.device, torch.device) else "cpu"
        # DeepSpeed's ZeRO, fp16 and bf16 optimizers measure the gradient norm at every step; for its plain fp32
        # path this class does, only when asked (~1% of a small model's step: the trainer asks ahead of a log line).
        self._own_grad_norm = ds_cfg.zero_optimization.stage == 0 and ds_cfg.precision not in ("fp16", "bf16")

    @property
    def module(self) -> nn.Module:
        """The underlying network, for calls that must not go through the engine: D as a frozen critic in the G
        phase and in gradient penalties (the engine's gradient hooks break those at ZeRO 0-2), G under no_grad."""
        return self.engine.module

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        """Forward through the engine: only for the network that is being trained in this phase."""
        return self.engine(*args, **kwargs)

    def optim_context(self) -> contextlib.AbstractContextManager:
        """Context for forwards that bypass the engine (`module`): the same autocast the engine would apply.
        (No `no_sync` is needed: DeepSpeed reduces gradients only at accumulation boundaries, and ZeRO-3
        forbids `no_sync` anyway.)"""
        if not self._autocast:
            return contextlib.nullcontext()
        return torch.autocast(self._device_type, dtype=self._autocast_dtype)

    def should_update(self) -> bool:
        """Will the next `update_params` call step the optimizer (end of an accumulation window)?"""
        return self.engine.is_gradient_accumulation_boundary()

    def update_params(self, loss: torch.Tensor, measure_grad_norm: bool = False) -> Update:
        """backward + step. DeepSpeed divides the loss by gradient_accumulation_steps, accumulates, and steps the
        optimizer (then zeroes the gradients) at the window's end. One call per micro-batch: several backward
        calls per micro-step lose gradients in some DeepSpeed versions (DeepSpeed #7981). With
        `measure_grad_norm`, an update that steps also returns the global gradient norm before clipping."""
        stepped = self.engine.is_gradient_accumulation_boundary()
        measure = stepped and measure_grad_norm
        self.engine.backward(loss)
        norm = self._total_grad_norm() if measure and self._own_grad_norm else None  # reduced and unscaled by now
        self.engine.step()
        if measure and not self._own_grad_norm:
            norm = self.engine.get_global_grad_norm()
        return Update(stepped, norm)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[nn.Module]:
        """The module with `requires_grad=False` on every parameter, so that the other network's backward does
        not fill (or reduce) this network's gradients (DeepSpeed #399)."""
        params = list(self.module.parameters())
        flags = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(False)
        try:
            yield self.module
        finally:
            for p, flag in zip(params, flags, strict=True):
                p.requires_grad_(flag)

    def _total_grad_norm(self) -> torch.Tensor:
        return torch.nn.utils.get_total_norm([p.grad for p in self.module.parameters() if p.grad is not None])

    def apply_config_optimizer_settings(self) -> None:
        """After loading a checkpoint, which restores the optimizer's hyper-parameters: the values the JSON states
        (possibly changed) win, except the learning rate when a DeepSpeed LR scheduler owns it. What the JSON leaves
        out keeps the checkpoint's value, which is DeepSpeed's default unless an earlier JSON stated it."""
        keys = ("betas", "eps", "weight_decay") if self.ds_cfg.scheduler else ("lr", "betas", "eps", "weight_decay")
        stated = self.ds_cfg.optimizer.params.model_dump(include=set(keys), exclude_none=True)
        for group in self.engine.optimizer.param_groups:
            group.update(stated)

    # ---- counters and numbers for logging; none of these syncs the device
    @property
    def micro_steps(self) -> int:
        return self.engine.micro_steps

    @property
    def global_steps(self) -> int:
        """Optimizer updates (fp16 overflow-skipped updates included; see `skipped_steps`)."""
        return self.engine.global_steps

    @property
    def skipped_steps(self) -> int:
        return self.engine.skipped_steps

    @property
    def lr(self) -> float:
        return self.engine.get_lr()[0]

    @property
    def loss_scale(self) -> float | None:
        return float(self.engine.optimizer.loss_scale) if self.ds_cfg.fp16.enabled else None


class EngineDict(Mapping[str, NetworkEngine]):
    """`engines['generator']`, `engines['discriminator']`: like MMagic's OptimWrapperDict."""

    def __init__(self, generator: NetworkEngine, discriminator: NetworkEngine) -> None:
        self._engines = {"generator": generator, "discriminator": discriminator}

    def __getitem__(self, name: str) -> NetworkEngine:
        if name not in self._engines:
            raise KeyError(f"no engine {name!r}; the networks are {NETWORKS}")
        return self._engines[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._engines)

    def __len__(self) -> int:
        return len(self._engines)

    def update_params(self, loss: torch.Tensor) -> None:
        raise TypeError(
            "EngineDict.update_params is ambiguous: name the network, e.g. "
            "engines['discriminator'].update_params(loss) (as with MMagic's OptimWrapperDict)"
        )

    backward = step = update_params


def build_engine(name: str, module: nn.Module, ds_cfg: DeepSpeedConfig, world_size: int) -> NetworkEngine:
    import deepspeed

    engine, _, _, _ = deepspeed.initialize(
        model=module,
        model_parameters=[p for p in module.parameters() if p.requires_grad],
        config=ds_cfg.to_deepspeed(world_size),
    )
    if world_size == 1 and ds_cfg.zero_optimization.stage == 0:
        # Nothing to reduce, but DeepSpeed would still flatten, "all-reduce" and unflatten every gradient at each
        # boundary (measured: ~10% of a small fp32 CPU step). At ZeRO >= 1 the same call partitions: keep it.
        engine.enable_backward_allreduce = False
    return NetworkEngine(name, engine, ds_cfg)


def build_engines(
    generator: nn.Module, discriminator: nn.Module, g_cfg: DeepSpeedConfig, d_cfg: DeepSpeedConfig, world_size: int
) -> EngineDict:
    return EngineDict(
        build_engine("generator", generator, g_cfg, world_size),
        build_engine("discriminator", discriminator, d_cfg, world_size),
    )
