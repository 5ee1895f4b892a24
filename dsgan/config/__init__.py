"""Typed, validated configuration for a dsgan run.

Every run goes through `load_config` before any process group starts. A run config is a YAML (or JSON/TOML) file;
each network's DeepSpeed config is either inline or a path (relative to the run config's folder) to a JSON file.
DeepSpeed owns the batch and optimizer settings (`train_micro_batch_size_per_gpu`, `gradient_accumulation_steps`,
`optimizer`, precision, ZeRO); dsgan owns the rest and checks that the two agree.

- `models`: one config class per architecture (discriminated on `type`), each building its module;
- `deepspeed`: one engine's DeepSpeed config, typed where dsgan reads it, handed over as written;
- `run`: the run's sections and the checks between them (`Config`);
- `load`: files, `--set` overrides and error messages that name the file and the field.
"""

from dsgan.config.deepspeed import DeepSpeedConfig
from dsgan.config.load import apply_override, config_hash, load_config
from dsgan.config.models import DiscriminatorModel, GeneratorModel
from dsgan.config.run import (
    EMA,
    Ada,
    Augment,
    Config,
    Data,
    DiffAugment,
    DigitsData,
    ImageFolderData,
    Loss,
    NoAugment,
    NvlabsZipData,
    PackedData,
    Wandb,
)

__all__ = [
    "EMA",
    "Ada",
    "Augment",
    "Config",
    "Data",
    "DiffAugment",
    "DeepSpeedConfig",
    "DigitsData",
    "DiscriminatorModel",
    "GeneratorModel",
    "ImageFolderData",
    "Loss",
    "NoAugment",
    "NvlabsZipData",
    "PackedData",
    "Wandb",
    "apply_override",
    "config_hash",
    "load_config",
]
