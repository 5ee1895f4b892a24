"""One engine's DeepSpeed config.

DeepSpeed owns its defaults: what the JSON leaves out, dsgan leaves out too. The keys dsgan reads or checks are typed
here (absent where the JSON leaves them out; `enabled` and the ZeRO `stage` read as DeepSpeed reads an absent key:
off, 0), the other known keys pass through as written, and the rest are refused: DeepSpeed ignores a misspelt key
silently. ZeRO keys are checked by DeepSpeed's own (strict) ZeRO config model. `to_deepspeed` is the user's JSON plus
the keys dsgan sets (`dsgan_settings`), nothing else.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    model_serializer,
    model_validator,
)

from dsgan.config.base import NonNegativeFloat, Strict


class FP16(Strict):
    enabled: bool = False
    auto_cast: bool | None = None
    loss_scale: NonNegativeFloat | None = None
    """0 = dynamic loss scaling."""
    initial_scale_power: Annotated[int, Field(ge=0, le=64)] | None = None
    loss_scale_window: PositiveInt | None = None
    hysteresis: PositiveInt | None = None
    consecutive_hysteresis: bool | None = None
    min_loss_scale: PositiveFloat | None = None
    fp16_master_weights_and_grads: bool | None = None


class BF16(Strict):
    enabled: bool = False
    immediate_grad_update: bool | None = None
    check_grad_overflow: bool | None = None
    bf16_master_weights_and_grads: bool | None = None
    bf16_optimizer_states: bool | None = None


class TorchAutocast(Strict):
    enabled: bool = False
    dtype: Literal["bfloat16", "float16", "torch.bfloat16", "torch.float16"] | None = None
    lower_precision_safe_modules: list[str] | None = None


class AdamParams(Strict):
    lr: PositiveFloat | None = None
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] | None = None
    eps: PositiveFloat | None = None
    weight_decay: NonNegativeFloat | None = None
    torch_adam: bool | None = None
    """Use torch.optim.Adam(W) instead of DeepSpeed's fused kernel (no JIT build; the choice on CPU)."""
    adam_w_mode: bool | None = None


class Optimizer(Strict):
    type: Literal["Adam", "AdamW"]
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


def _given(dumped: Any, model: Any) -> Any:
    """`dumped` (the serialisation of `model`) without the fields the input did not set, at every depth."""
    if not isinstance(model, BaseModel) or not isinstance(dumped, dict):
        return dumped
    fields = type(model).model_fields
    return {
        key: _given(value, getattr(model, key, None))
        for key, value in dumped.items()
        if key not in fields or key in model.model_fields_set
    }


class DeepSpeedConfig(Strict):
    """One engine's DeepSpeed config. `gradient_accumulation_steps` is MMagic's `accumulative_counts`.

    It serialises to what the JSON stated and nothing more, so that the dumped run config, `--set` overrides and
    `validate-config` all see the JSON as written."""

    train_micro_batch_size_per_gpu: PositiveInt
    gradient_accumulation_steps: PositiveInt = 1
    """DeepSpeed's meaning of an absent key when train_batch_size is not given (dsgan always gives it)."""
    train_batch_size: PositiveInt | None = None
    """Optional; when given it must equal micro-batch x accumulation x world size."""
    optimizer: Optimizer
    """Required: dsgan hands DeepSpeed no optimizer of its own, and a GAN engine without one cannot train."""
    scheduler: Scheduler | None = None
    fp16: FP16 = FP16()
    bf16: BF16 = BF16()
    torch_autocast: TorchAutocast = TorchAutocast()
    zero_optimization: ZeroOptimization = ZeroOptimization()
    gradient_clipping: NonNegativeFloat | None = None
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

    @model_serializer(mode="wrap")
    def _as_written(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out = _given(handler(self), self)
        out.update(out.pop("passthrough", {}))
        return out

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
            return "autocast-" + (self.torch_autocast.dtype or "default").removeprefix("torch.")
        return "fp32"

    def dsgan_settings(self, world_size: int) -> dict[str, Any]:
        """The only keys dsgan adds to the JSON: the batch arithmetic its schedule and sampler rely on, for this
        world size (DeepSpeed would otherwise derive one of the three from the other two)."""
        return {
            "train_batch_size": self.train_micro_batch_size_per_gpu * self.gradient_accumulation_steps * world_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
        }

    def to_deepspeed(self, world_size: int) -> dict[str, Any]:
        """The dict handed to `deepspeed.initialize`: the JSON as written, plus `dsgan_settings`."""
        return {**self.model_dump(mode="json"), **self.dsgan_settings(world_size)}
