"""One engine's DeepSpeed config.

The keys dsgan relies on are typed here; the rest of DeepSpeed's keys are passed through and checked by DeepSpeed's
own pydantic models where it has them (zero_optimization).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from dsgan.config.base import NonNegativeFloat, Strict


class FP16(Strict):
    enabled: bool = False
    auto_cast: bool = False
    loss_scale: NonNegativeFloat = 0.0
    """0 = dynamic loss scaling."""
    initial_scale_power: Annotated[int, Field(ge=0, le=64)] = 16
    loss_scale_window: PositiveInt = 1000
    hysteresis: PositiveInt = 2
    consecutive_hysteresis: bool = False
    min_loss_scale: PositiveFloat = 1.0
    fp16_master_weights_and_grads: bool = False


class BF16(Strict):
    enabled: bool = False
    immediate_grad_update: bool = True
    check_grad_overflow: bool = False
    bf16_master_weights_and_grads: bool = False
    bf16_optimizer_states: bool = False


class TorchAutocast(Strict):
    enabled: bool = False
    dtype: Literal["bfloat16", "float16", "torch.bfloat16", "torch.float16"] = "bfloat16"
    lower_precision_safe_modules: list[str] | None = None


class AdamParams(Strict):
    lr: PositiveFloat = 2e-4
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.0, 0.999)
    eps: PositiveFloat = 1e-8
    weight_decay: NonNegativeFloat = 0.0
    torch_adam: bool = False
    """Use torch.optim.Adam(W) instead of DeepSpeed's fused kernel (no JIT build; the choice on CPU)."""
    adam_w_mode: bool | None = None


class Optimizer(Strict):
    type: Literal["Adam", "AdamW"] = "Adam"
    params: AdamParams = AdamParams()


class Scheduler(Strict):
    type: Literal["WarmupLR", "WarmupDecayLR", "WarmupCosineLR", "OneCycle", "LRRangeTest"]
    params: dict[str, Any] = {}


class ZeroOptimization(BaseModel):
    """`stage` is typed here; every other ZeRO key is validated by DeepSpeed's own (strict) ZeRO config model."""

    model_config = ConfigDict(extra="allow", frozen=True)
    stage: Annotated[int, Field(ge=0, le=3)] = 0

    @model_validator(mode="after")
    def _check_with_deepspeed(self) -> ZeroOptimization:
        if self.model_extra:
            from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

            try:
                DeepSpeedZeroConfig(stage=self.stage, **self.model_extra)
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                raise ValueError(f"DeepSpeed rejects this ZeRO config: {problems}") from None
        return self


# DeepSpeed top-level keys that dsgan passes through untouched. Anything else is refused: a misspelt key would be
# ignored silently by DeepSpeed.
PASSTHROUGH_KEYS = (
    "steps_per_print",
    "wall_clock_breakdown",
    "memory_breakdown",
    "dump_state",
    "zero_allow_untested_optimizer",
    "zero_force_ds_cpu_optimizer",
    "communication_data_type",
    "prescale_gradients",
    "gradient_predivide_factor",
    "flops_profiler",
    "comms_logger",
    "activation_checkpointing",
    "tensorboard",
    "csv_monitor",
    "checkpoint",
    "data_types",
    "compile",
)


class DeepSpeedConfig(Strict):
    """One engine's DeepSpeed config. `gradient_accumulation_steps` is MMagic's `accumulative_counts`."""

    train_micro_batch_size_per_gpu: PositiveInt
    gradient_accumulation_steps: PositiveInt = 1
    train_batch_size: PositiveInt | None = None
    """Optional; when given it must equal micro-batch x accumulation x world size."""
    optimizer: Optimizer = Optimizer()
    scheduler: Scheduler | None = None
    fp16: FP16 = FP16()
    bf16: BF16 = BF16()
    torch_autocast: TorchAutocast = TorchAutocast()
    zero_optimization: ZeroOptimization = ZeroOptimization()
    gradient_clipping: NonNegativeFloat = 0.0
    passthrough: dict[str, Any] = {}
    """Other DeepSpeed keys (see PASSTHROUGH_KEYS), written at the top level of the DeepSpeed JSON."""

    @model_validator(mode="before")
    @classmethod
    def _collect_passthrough(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            extra = {k: data.pop(k) for k in list(data) if k in PASSTHROUGH_KEYS}
            if extra:
                data["passthrough"] = {**data.get("passthrough", {}), **extra}
        return data

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> DeepSpeedConfig:
        ctx = info.context or {}
        if self.fp16.enabled and self.bf16.enabled:
            raise ValueError("fp16.enabled and bf16.enabled are both true: choose one precision")
        if self.torch_autocast.enabled and (self.fp16.enabled or self.bf16.enabled):
            raise ValueError("torch_autocast.enabled cannot be combined with fp16.enabled or bf16.enabled")
        if self.fp16.enabled and ctx.get("device") == "cpu":
            raise ValueError(
                "fp16.enabled is true but this machine has no GPU, and DeepSpeed refuses fp16 on CPU: "
                "use bf16 (bf16.enabled: true) or fp32 on CPU (`dsgan validate-config --device cuda` checks a GPU "
                "config on a machine without one)"
            )
        world = ctx.get("world_size")
        per_step = self.train_micro_batch_size_per_gpu * self.gradient_accumulation_steps
        if self.train_batch_size is not None:
            if world is not None and self.train_batch_size != per_step * world:
                raise ValueError(
                    f"train_batch_size={self.train_batch_size} != train_micro_batch_size_per_gpu "
                    f"({self.train_micro_batch_size_per_gpu}) x gradient_accumulation_steps "
                    f"({self.gradient_accumulation_steps}) x world size ({world}) = {per_step * world}; "
                    "remove train_batch_size or fix it"
                )
            if self.train_batch_size % per_step:
                raise ValueError(
                    f"train_batch_size={self.train_batch_size} is not a multiple of micro-batch x accumulation "
                    f"= {per_step}"
                )
        return self

    @property
    def precision(self) -> str:
        if self.fp16.enabled:
            return "fp16"
        if self.bf16.enabled:
            return "bf16"
        if self.torch_autocast.enabled:
            return "autocast-" + self.torch_autocast.dtype.removeprefix("torch.")
        return "fp32"

    def to_deepspeed(self, world_size: int) -> dict[str, Any]:
        """The dict handed to `deepspeed.initialize` (train_batch_size made explicit for this world size)."""
        out = self.model_dump(mode="json", exclude={"passthrough", "train_batch_size"}, exclude_none=True)
        out["train_batch_size"] = self.train_micro_batch_size_per_gpu * self.gradient_accumulation_steps * world_size
        out["zero_optimization"] = {"stage": self.zero_optimization.stage, **(self.zero_optimization.model_extra or {})}
        out.update(self.passthrough)
        if out["optimizer"]["params"].get("adam_w_mode") is None:
            out["optimizer"]["params"].pop("adam_w_mode", None)
        if not self.optimizer.params.torch_adam:
            out["optimizer"]["params"].pop("torch_adam")
        return out
