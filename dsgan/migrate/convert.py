"""MMGeneration 0.x / MMagic 1.x config -> dsgan run config: version detection, the conversion, validation.

The result is checked with `dsgan.config.load_config` exactly as `dsgan train` would read it; a conversion that
dsgan would refuse is a ConfigError, never a file that fails later.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dsgan.config import Config, apply_override, load_config
from dsgan.errors import ConfigError
from dsgan.migrate import training as t
from dsgan.migrate.ledger import MISSING, Ctx, Ledger, lookup, show
from dsgan.migrate.models import IMPLICIT_LOSS, STYLEGAN2_NETS, convert_loss, convert_network
from dsgan.migrate.source import Source, load_source
from dsgan.schedule import Schedule

V0_MODELS = {"BasiccGAN", "StaticUnconditionalGAN", "BasicGaussianDiffusion", "BasicConditionalGAN"}
V1_MODELS = {
    "BigGAN",
    "DCGAN",
    "SNGAN",
    "SAGAN",
    "BaseGAN",
    "BaseConditionalGAN",
    "StyleGAN2",
    "StyleGAN3",
    "WGANGP",
    "LSGAN",
    "GGAN",
}
SUPPORTED = {
    "0.x": ("BasiccGAN", "StaticUnconditionalGAN"),
    "1.x": (
        "BigGAN",
        "DCGAN",
        "SNGAN",
        "SAGAN",
        "LSGAN",
        "GGAN",
        "WGANGP",
        "BaseGAN",
        "BaseConditionalGAN",
        "StyleGAN2",
    ),
}
VERSION_NAMES = {"0.x": "MMGeneration 0.x", "1.x": "MMGeneration 1.x / MMagic"}
IMAGENET_TYPES = {
    "ImageNet",
    "mmcls.ImageNet",
    "mmpretrain.ImageNet",
    "CustomDataset",
    "mmcls.CustomDataset",
    "mmpretrain.CustomDataset",
}
UNCONDITIONAL_TYPES = {"UnconditionalImageDataset", "BasicImageDataset"}

_EVAL = "evaluation: dsgan evaluates with `dsgan eval` or eval.every_iters (TF-Inception FID/IS); not converted"
_PIPELINE = "image pipeline: dsgan's image_folder loader center-crops and resizes to the model scale, in RGB"
_DIST = "process-group setting: dsgan reads the launcher's environment (RANK, WORLD_SIZE, MASTER_ADDR...)"
_HOOK = "an MMEngine/mmcv hook; dsgan's loop does this itself"
IGNORED = {
    "log_level": "logging verbosity",
    "dist_params": _DIST,
    "env_cfg": "environment settings (cuDNN, worker processes, distributed backend): dsgan reads the launcher's "
    "environment and does not change what is trained",
    "launcher": _DIST,
    "load_from": "weights to start from: dsgan resumes from its own run directory",
    "resume_from": "dsgan resumes by rerunning the same command in the same run directory",
    "resume": "dsgan resumes by rerunning the same command in the same run directory",
    "workflow": "mmcv's train/val workflow: dsgan's loop only trains (plus eval.every_iters)",
    "work_dir": "run.dir is set from the config's name instead",
    "find_unused_parameters": "a DDP wrapper setting; DeepSpeed engines do the reduction",
    "use_ddp_wrapper": "a DDP wrapper setting; DeepSpeed engines do the reduction",
    "model_wrapper_cfg": "a DDP wrapper setting; DeepSpeed engines do the reduction",
    "cudnn_benchmark": "cuDNN autotuning: does not change what is trained",
    "opencv_num_threads": "a data-loading thread setting",
    "mp_start_method": "a data-loading process setting",
    "default_scope": "MMEngine's registry scope",
    "log_processor": "logging",
    "vis_backends": "visualisation backends: dsgan writes PNG grids and logs to wandb (tracking.wandb)",
    "visualizer": "visualisation backends: dsgan writes PNG grids and logs to wandb (tracking.wandb)",
    "evaluation": _EVAL,
    "metrics": _EVAL,
    "inception_pkl": _EVAL,
    "val_evaluator": _EVAL,
    "test_evaluator": _EVAL,
    "val_cfg": _EVAL,
    "test_cfg": _EVAL,
    "val_dataloader": _EVAL,
    "test_dataloader": _EVAL,
    "img_norm_cfg": _PIPELINE,
    "train_pipeline": _PIPELINE,
    "test_pipeline": _PIPELINE,
    "val_pipeline": _PIPELINE,
}


@dataclass
class Migration:
    source: Source
    version: str
    evidence: list[str]
    raw: dict[str, Any]
    """The dsgan run config, with both DeepSpeed configs inline."""
    ledger: Ledger
    overrides: list[str]
    config: Config

    @property
    def version_name(self) -> str:
        return VERSION_NAMES[self.version]


V0_TOP = {
    "total_iters",
    "checkpoint_config",
    "log_config",
    "apex_amp",
    "optimizer",
    "optimizer_config",
    "data",
    "lr_config",
    "runner",
    "evaluation",
    "workflow",
    "resume_from",
    "dist_params",
    "use_ddp_wrapper",
    "find_unused_parameters",
    "cudnn_benchmark",
    "opencv_num_threads",
    "mp_start_method",
}
"""Top-level keys that MMGeneration 0.x (its tools/train.py, apis/train.py and mmcv's runner) reads and MMEngine's
Runner does not."""
V1_TOP = {
    "optim_wrapper",
    "param_scheduler",
    "train_dataloader",
    "val_dataloader",
    "test_dataloader",
    "val_evaluator",
    "test_evaluator",
    "val_cfg",
    "default_hooks",
    "env_cfg",
    "randomness",
    "default_scope",
    "visualizer",
    "log_processor",
    "resume",
    "auto_scale_lr",
    "model_wrapper_cfg",
}
"""Top-level keys that MMEngine's Runner (MMGeneration 1.x, MMagic) reads and MMGeneration 0.x does not."""
_TOP = {"0.x": V0_TOP, "1.x": V1_TOP}


def detect_version(values: dict[str, Any], source: Path) -> tuple[str, list[str], list[str]]:
    """('0.x' | '1.x', evidence, stray top-level keys).

    The model type decides (V0_MODELS and V1_MODELS share no name; another type is refused by name); without one,
    the keys that only configs of one version define do. A top-level variable that only the other framework reads
    is stray: the detected one never looks at it (a 1.x config may keep a helper named `total_iters`), so it is
    reported as ignored. Keys of the other version inside what the detected framework reads (`model`,
    `train_cfg`) would change or break its training, so a config with those is refused as mixed."""
    model = values.get("model")
    if not isinstance(model, dict):
        model = {}
    kind = model.get("type")
    if isinstance(kind, str) and kind not in V0_MODELS | V1_MODELS:
        raise ConfigError(
            f"{source}: model.type: not supported yet: {kind!r} (supported MMGeneration 0.x models: "
            f"{', '.join(SUPPORTED['0.x'])}; MMagic models: {', '.join(SUPPORTED['1.x'])})"
        )
    v0 = [f"model.{k}" for k in ("gan_loss", "disc_auxiliary_loss") if k in model]
    v1 = [
        f"model.{k}"
        for k in ("data_preprocessor", "ema_config", "generator_steps", "discriminator_steps", "loss_config")
        if k in model
    ]
    train_cfg = values.get("train_cfg")
    if not isinstance(train_cfg, dict):
        train_cfg = {}
    v0 += [
        f"train_cfg.{k}" for k in ("disc_steps", "gen_steps", "batch_accumulation_steps", "use_ema") if k in train_cfg
    ]
    v1 += [f"train_cfg.{k}" for k in ("by_epoch", "max_iters", "max_epochs", "val_interval", "type") if k in train_cfg]
    if v0 and v1:
        raise ConfigError(
            f"{source}: mixes MMGeneration 0.x keys ({', '.join(v0)}) with 1.x/MMagic keys ({', '.join(v1)}) in "
            "what both frameworks read: their step counts mean different things, so the version must be unambiguous"
        )
    top = {version: sorted(k for k in values if k in keys) for version, keys in _TOP.items()}
    if kind in V0_MODELS or kind in V1_MODELS:
        version = "0.x" if kind in V0_MODELS else "1.x"
        nested = v0 if version == "1.x" else v1
        if nested:
            raise ConfigError(
                f"{source}: model.type={kind!r} is a {VERSION_NAMES[version]} model, but {', '.join(nested)} "
                "belong to the other version's model and training loop (unsupported: a mixed config)"
            )
        other = "1.x" if version == "0.x" else "0.x"
        evidence = [f"model.type={kind!r}", *(v0 or v1), *top[version]]
        return version, evidence, top[other]
    # Without a model type, only keys that a config of one version always has and the other never defines decide
    # (MMagic's runtime bases keep mmgen's dist_params, opencv_num_threads and mp_start_method, for instance).
    v0 += [k for k in ("total_iters", "checkpoint_config", "log_config", "apex_amp") if k in values]
    optimizer = values.get("optimizer")
    if isinstance(optimizer, dict) and {"generator", "discriminator"} & set(optimizer):
        v0.append("optimizer.generator/discriminator")
    if isinstance(values.get("data"), dict) and "samples_per_gpu" in values["data"]:
        v0.append("data.samples_per_gpu")
    v1 += [k for k in ("optim_wrapper", "train_dataloader", "default_hooks", "param_scheduler") if k in values]
    if v0 and v1:
        raise ConfigError(
            f"{source}: mixes MMGeneration 0.x keys ({', '.join(v0)}) with 1.x/MMagic keys ({', '.join(v1)}) and "
            "names no model type, so the version is ambiguous"
        )
    if not v0 and not v1:
        raise ConfigError(
            f"{source}: not recognisably an MMGeneration 0.x or MMagic GAN config (no optimizer/optim_wrapper, "
            "train_cfg, total_iters or known model.type)"
        )
    return ("0.x", v0, []) if v0 else ("1.x", v1, [])


def migrate(path: Path | str, overrides: Sequence[str] = ()) -> Migration:
    """Read, convert and validate; nothing is written."""
    source = load_source(path)
    version, evidence, stray = detect_version(source.values, source.path)
    ctx = Ctx(source.path, source.values, version)
    raw = _convert(ctx, source)
    for key in stray:
        ctx.ledger.ignored(
            key, f"a stray variable: {VERSION_NAMES[version]} never reads a top-level {key!r} (the other version does)"
        )
    _account_for_every_key(ctx, source)
    for assignment in overrides:
        apply_override(raw, assignment)
    if raw["run"].get("total_iters") is None and raw["run"].get("total_images") is None:
        raise _no_length(ctx)
    _absolute_data_root(raw)
    with tempfile.TemporaryDirectory() as tmp:
        write_config(raw, Path(tmp), header="")
        try:
            config = load_config(Path(tmp) / "config.yaml")
        except ConfigError as exc:
            hint = ""
            if raw["data"]["type"] == "digits":
                hint = (
                    "\nthe dataset was not converted and the digits stand-in may not fit this model: pass "
                    "--set data.type=image_folder --set data.root=PATH"
                )
            problems = str(exc).replace(str(Path(tmp) / "config.yaml"), "converted config")
            raise ConfigError(f"{source.path}: the conversion is not a valid dsgan config:\n{problems}{hint}") from None
    return Migration(source, version, evidence, raw, ctx.ledger, list(overrides), config)


def _convert(ctx: Ctx, source: Source) -> dict[str, Any]:
    version, ledger = ctx.version, ctx.ledger
    kind = ctx.get("model.type")
    if kind not in SUPPORTED[version]:
        raise ctx.error(
            "model.type",
            f"not supported yet: {kind!r} (supported {VERSION_NAMES[version]} models: {', '.join(SUPPORTED[version])})",
        )
    model_defaults = {}
    if kind == "StyleGAN2":
        for key in ("num_classes", "noise_size"):
            if ctx.has(f"model.{key}"):
                raise ctx.error(f"model.{key}", "MMagic's StyleGAN2 takes no model-level value: set it in the networks")
    else:
        # MMagic's BaseGAN passes both to the networks that do not set them, mmgen 0.x's BasiccGAN num_classes
        keys = ("num_classes", "noise_size") if version == "1.x" else ("num_classes",) if kind == "BasiccGAN" else ()
        for key in keys:
            if ctx.has(f"model.{key}"):
                model_defaults[key] = ctx.get(f"model.{key}")
                ledger.converted(f"model.{key}", f"the networks' {key} where they do not set it ({kind})")
    generator = convert_network(ctx, "generator", model_defaults)
    discriminator = convert_network(ctx, "discriminator", model_defaults)
    stylegan2 = ctx.get("model.generator.type") in STYLEGAN2_NETS
    if kind not in IMPLICIT_LOSS and kind != "StyleGAN2":
        ledger.converted("model.type", f"{kind}: dsgan's D/G alternation (see schedule)")
    schedule = t.schedule_0x(ctx) if version == "0.x" else t.schedule_1x(ctx)
    d_scale = discriminator["in_size"] if stylegan2 else discriminator["input_scale"]
    loss_root = "model" if version == "0.x" else "model.loss_config"
    loss = convert_loss(ctx, loss_root, kind if version == "1.x" else None, d_scale, schedule)
    if version == "0.x":
        precision = t.precision_stylegan2(ctx, generator, discriminator) if stylegan2 else t.precision_0x(ctx)
        optimizers = {role: t.optimizer(ctx, f"optimizer.{role}", role) for role in t.ROLES}
        clipping = {role: 0.0 for role in t.ROLES}
        ema = t.ema_0x(ctx, schedule)
    else:
        if stylegan2:
            precision = t.precision_stylegan2(ctx, generator, discriminator)
        else:
            precision = {role: t.precision_1x(ctx, role) for role in t.ROLES}
        optimizers = {role: t.optimizer(ctx, f"optim_wrapper.{role}.optimizer", role) for role in t.ROLES}
        clipping = {role: t.clip_grad(ctx, f"optim_wrapper.{role}.clip_grad", role) for role in t.ROLES}
        ema = t.ema_1x(ctx, schedule)
    _optim_wrapper_rest(ctx)
    micro, data = _data(ctx, generator["num_classes"])
    deepspeed = {}
    for role, acc in (("generator", schedule.g_accumulation), ("discriminator", schedule.d_accumulation)):
        deepspeed[role] = {
            "train_micro_batch_size_per_gpu": micro,
            "gradient_accumulation_steps": acc,
            "optimizer": optimizers[role],
            "gradient_clipping": clipping[role],
            "zero_optimization": {"stage": 0},
            **precision.get(role, {}),
        }
    ledger.defaults.append("zero_optimization.stage = 0 in both DeepSpeed configs (the source has no sharding)")
    return {
        "run": _run(ctx, source, schedule),
        "schedule": {"discriminator_steps": schedule.discriminator_steps, "generator_steps": schedule.generator_steps},
        "loss": loss,
        "generator": {"model": generator, "deepspeed": deepspeed["generator"]},
        "discriminator": {"model": discriminator, "deepspeed": deepspeed["discriminator"]},
        "ema": ema,
        "data": data,
        "checkpoint": _checkpoint(ctx, schedule),
    }


def _optim_wrapper_rest(ctx: Ctx) -> None:
    if ctx.version == "0.x":
        return
    ledger = ctx.ledger
    constructor = ctx.get("optim_wrapper.constructor")
    if constructor not in (None, "MultiOptimWrapperConstructor"):
        raise ctx.error("optim_wrapper.constructor", f"not supported yet: {constructor!r}")
    if constructor:
        ledger.converted("optim_wrapper.constructor", "one DeepSpeed engine per network")
    for role in ("", ".generator", ".discriminator"):
        if ctx.get(f"optim_wrapper{role}.paramwise_cfg"):
            raise ctx.error(f"optim_wrapper{role}.paramwise_cfg", "not supported yet: per-parameter optimizer settings")


def _data(ctx: Ctx, num_classes: int) -> tuple[int, dict[str, Any]]:
    """Batch size, and the dataset when it is a folder of images (ImageNet layout or unconditional)."""
    ledger = ctx.ledger
    if ctx.version == "0.x":
        root_key, batch, workers, dataset_key = "data", "samples_per_gpu", "workers_per_gpu", "data.train"
    else:
        root_key, batch, workers, dataset_key = (
            "train_dataloader",
            "batch_size",
            "num_workers",
            "train_dataloader.dataset",
        )
    batch_key, workers_key = f"{root_key}.{batch}", f"{root_key}.{workers}"
    micro = ctx.get(batch_key)
    if isinstance(micro, bool) or not isinstance(micro, int) or micro < 1:
        raise ctx.error(batch_key, f"{micro!r}: the per-GPU batch size must be set (a positive integer)")
    ledger.converted(batch_key, f"train_micro_batch_size_per_gpu = {micro} in both DeepSpeed configs")
    dataset = ctx.get(dataset_key) or {}
    if isinstance(dataset, dict) and dataset.get("type") == "RepeatDataset":
        ledger.converted(f"{dataset_key}.type", "the inner dataset (dsgan's sampler streams epochs without end)")
        ledger.ignored(f"{dataset_key}.times", "epoch repetition: dsgan's length is run.total_iters")
        dataset_key, dataset = f"{dataset_key}.dataset", dataset.get("dataset") or {}
    kind = dataset.get("type") if isinstance(dataset, dict) else None
    root = _dataset_root(ctx, dataset_key, dataset, kind)
    conditional = num_classes > 0
    if root is None:
        ledger.unsupported(dataset_key, f"dataset {kind!r} is not a folder of images dsgan can read")
        ledger.ignored(root_key, "a data-loader setting of the dataset that is not converted")
        ledger.note(
            f"{dataset_key}: {kind!r} is not converted; the config keeps dsgan's digits data as a stand-in "
            "(set data.type=image_folder and data.root to train on real images)"
        )
        return micro, {"type": "digits", "conditional": conditional}
    data: dict[str, Any] = {"type": "image_folder", "root": root, "conditional": conditional}
    if ctx.has(workers_key):
        data["num_workers"] = ctx.get(workers_key)
        ledger.converted(workers_key, f"data.num_workers = {data['num_workers']}")
    if ctx.has(f"{root_key}.pin_memory"):
        data["pin_memory"] = bool(ctx.get(f"{root_key}.pin_memory"))
        ledger.converted(f"{root_key}.pin_memory", f"data.pin_memory = {data['pin_memory']}")
    for key, reason in (
        ("sampler", "dsgan's resumable sampler shuffles every epoch with the run seed"),
        ("persistent_workers", "a data-loader performance setting"),
        ("drop_last", "dsgan's sampler streams epochs without end"),
        ("collate_fn", "dsgan batches (image, label) pairs itself"),
        ("val", _EVAL),
        ("test", _EVAL),
    ):
        ledger.ignored(f"{root_key}.{key}", reason)
    ledger.ignored(f"{dataset_key}.pipeline", _PIPELINE)
    if _flips(ctx, dataset_key, dataset):
        data["xflip"] = True
    return micro, data


def _flips(ctx: Ctx, dataset_key: str, dataset: dict[str, Any]) -> bool:
    """Whether the training pipeline flips at random: it changes what is trained (it doubles the data), so it
    becomes `data.xflip` (a flip of about half the images, a different half every epoch, as MMagic's Flip)."""
    pipeline = dataset.get("pipeline") or []
    found = False
    for i, step in enumerate(pipeline if isinstance(pipeline, (list, tuple)) else []):
        if isinstance(step, dict) and step.get("type") in ("Flip", "RandomFlip"):
            ratio = step.get("flip_ratio", step.get("prob", 0.5))
            if step.get("direction", "horizontal") != "horizontal" or ratio != 0.5:
                ctx.ledger.unsupported(f"{dataset_key}.pipeline[{i}]", "flip: only horizontal, half the images, is")
                continue
            converted = f"data.xflip = true (a random horizontal flip, {show(step)})"
            ctx.ledger.converted(f"{dataset_key}.pipeline[{i}]", converted)
            train_pipeline = ctx.get("train_pipeline")
            if isinstance(train_pipeline, list) and i < len(train_pipeline) and train_pipeline[i] == step:
                ctx.ledger.converted(f"train_pipeline[{i}]", converted)
            found = True
    return found


def _dataset_root(ctx: Ctx, key: str, dataset: dict[str, Any], kind: str | None) -> str | None:
    """An ImageNet-layout folder (one subfolder per class) or a flat unconditional folder, or None."""
    ledger = ctx.ledger
    if kind in IMAGENET_TYPES:
        prefix = dataset.get("data_prefix", "")
        if isinstance(prefix, dict):
            prefix = prefix.get("img_path", prefix.get("img", ""))
        parts = [p for p in (dataset.get("data_root"), prefix) if p]
        if not parts:
            return None
        root = os.path.join(*parts)
        for name in ("data_root", "data_prefix"):
            if name in dataset:
                ledger.converted(f"{key}.{name}", f"data.root = {root!r}")
        if dataset.get("ann_file"):
            ledger.unsupported(f"{key}.ann_file", "dsgan lists the class folders itself instead of an annotation file")
            ledger.note(
                f"{key}.ann_file: dsgan reads every image under data.root (one subfolder per class), not "
                f"the list in {dataset['ann_file']!r}; the two agree for a standard ImageNet train folder"
            )
    elif kind in UNCONDITIONAL_TYPES:
        name = "imgs_root" if "imgs_root" in dataset else "data_root"
        if not dataset.get(name):
            return None
        root = dataset[name]
        prefix = dataset.get("data_prefix")
        if kind == "BasicImageDataset" and isinstance(prefix, dict):
            # MMagic's BasicImageDataset reads data_root/data_prefix['gt'] (every image under it)
            if set(prefix) != {"gt"} or not isinstance(prefix["gt"], str):
                raise ctx.error(f"{key}.data_prefix", f"not supported yet: {show(prefix)} (one 'gt' folder)")
            root = os.path.join(root, prefix["gt"]) if prefix["gt"] else root
            ledger.converted(f"{key}.data_prefix", f"data.root = {root!r}")
        ledger.converted(f"{key}.{name}", f"data.root = {root!r}")
    else:
        return None
    ledger.converted(f"{key}.type", f"data.type = 'image_folder' ({kind})")
    return root


def _run(ctx: Ctx, source: Source, schedule: Schedule) -> dict[str, Any]:
    ledger = ctx.ledger
    run: dict[str, Any] = {"dir": f"runs/{source.path.stem}"}
    ledger.defaults.append(f"run.dir = {run['dir']!r}: from the config's file name")
    key = "total_iters" if ctx.version == "0.x" else "train_cfg.max_iters"
    total = ctx.get(key)
    if total is None:
        for epochs in ("train_cfg.max_epochs", "runner.max_epochs"):
            ledger.ignored(epochs, "an epoch-based length: dsgan's comes from --set run.total_iters (or total_images)")
        return run  # migrate() asks for the length unless an override gives it
    if not isinstance(total, int) or total < 1:
        raise ctx.error(key, f"{total!r}: expected a positive number of iterations")
    whole = total - total % schedule.d_accumulation
    if whole < 1:
        raise ctx.error(key, f"{total} iterations is less than one D update ({schedule.d_accumulation} micro-batches)")
    run["total_iters"] = whole
    ledger.converted(key, f"run.total_iters = {whole}")
    if whole != total:
        ledger.note(
            f"{key}={total} is not a multiple of D's accumulation ({schedule.d_accumulation}); dsgan ends runs on a "
            f"whole D update, so run.total_iters = {whole} (the source's last partial update is dropped)"
        )
    if ctx.version == "1.x":
        for name in ("by_epoch", "type", "val_interval", "val_begin", "dynamic_intervals"):
            if ctx.has(f"train_cfg.{name}"):
                ledger.ignored(
                    f"train_cfg.{name}",
                    "iteration-based loop settings (dsgan's loop is iteration-based)"
                    if name in ("by_epoch", "type")
                    else _EVAL,
                )
        seed = ctx.get("randomness.seed")
        if seed is not None:
            run["seed"] = int(seed)
            ledger.converted("randomness.seed", f"run.seed = {seed}")
        ledger.ignored("randomness.diff_rank_seed", "dsgan seeds every rank differently from (seed, rank, step)")
        if ctx.get("randomness.deterministic"):
            ledger.unsupported("randomness.deterministic", "dsgan does not switch torch to deterministic algorithms")
    log_key = "log_config.interval" if ctx.version == "0.x" else "default_hooks.logger.interval"
    if isinstance(ctx.get(log_key), int) and ctx.get(log_key) > 0:
        run["log_every_iters"] = ctx.get(log_key)
        ledger.converted(log_key, f"run.log_every_iters = {run['log_every_iters']}")
    sample_types = ("VisualizeUnconditionalSamples", "VisualizeConditionalSamples", "VisualizationHook")
    for i, hook in enumerate(ctx.get("custom_hooks") or []):
        if isinstance(hook, dict) and hook.get("type") in sample_types:
            if "sample_every_iters" not in run and isinstance(hook.get("interval"), int) and hook["interval"] > 0:
                run["sample_every_iters"] = hook["interval"]
                ledger.converted(f"custom_hooks[{i}].interval", f"run.sample_every_iters = {hook['interval']}")
                ledger.converted(f"custom_hooks[{i}].type", "dsgan's PNG sample grids")
            ledger.ignored(f"custom_hooks[{i}]", "sample visualisation settings: dsgan writes fixed-noise PNG grids")
        elif isinstance(hook, dict) and hook.get("type") != "ExponentialMovingAverageHook":
            ledger.unsupported(f"custom_hooks[{i}]", f"hook {hook.get('type')!r} has no dsgan equivalent")
    return run


def _no_length(ctx: Ctx) -> ConfigError:
    epochs = ctx.get("train_cfg.max_epochs") or ctx.get("runner.max_epochs")
    why = f"an epoch-based length ({epochs} epochs)" if epochs else "no training length"
    key = "total_iters" if ctx.version == "0.x" else "train_cfg.max_iters"
    return ctx.error(key, f"{why}: dsgan counts iterations; give the length with --set run.total_iters=N")


def _checkpoint(ctx: Ctx, schedule: Schedule) -> dict[str, Any]:
    """Checkpoint interval (rounded up to a whole D update, where no gradients are half-accumulated) and count."""
    ledger = ctx.ledger
    base = "checkpoint_config" if ctx.version == "0.x" else "default_hooks.checkpoint"
    cfg = ctx.get(base) or {}
    out: dict[str, Any] = {}
    interval = cfg.get("interval") if isinstance(cfg, dict) else None
    if isinstance(interval, int) and interval > 0 and cfg.get("by_epoch", True) is False:
        every = -(-interval // schedule.d_accumulation) * schedule.d_accumulation
        out["every_iters"] = every
        ledger.converted(f"{base}.interval", f"checkpoint.every_iters = {every}")
        ledger.converted(f"{base}.by_epoch", "iteration-based checkpoints")
        if every != interval:
            ledger.note(f"{base}.interval={interval} is rounded up to {every}: dsgan checkpoints on whole D updates")
    else:
        # dsgan's default interval (1000 iterations), on a whole D update
        out["every_iters"] = -(-1000 // schedule.d_accumulation) * schedule.d_accumulation
        ledger.defaults.append(f"checkpoint.every_iters = {out['every_iters']}: the source sets no iteration interval")
    keep = cfg.get("max_keep_ckpts") if isinstance(cfg, dict) else None
    if isinstance(keep, int) and keep > 0:
        out["keep_last"] = keep
        ledger.converted(f"{base}.max_keep_ckpts", f"checkpoint.keep_last = {keep}")
    ledger.ignored(base, "checkpoint file options: dsgan checkpoints hold both engines, optimizers, EMA and counters")
    return out


def _account_for_every_key(ctx: Ctx, source: Source) -> None:
    """Reasons for the keys no conversion claimed: known runtime keys, helper variables, leftovers."""
    ledger, values = ctx.ledger, source.values
    for key, reason in IGNORED.items():
        if key in values:
            ledger.ignored(key, reason)
    for key in ("lr_config", "param_scheduler"):
        if values.get(key):
            raise ctx.error(key, "not supported yet: an LR schedule (dsgan's converted configs keep the LR constant)")
        if key in values:
            ledger.ignored(key, "no LR schedule, as dsgan's converted configs")
    if isinstance(values.get("auto_scale_lr"), dict) and values["auto_scale_lr"].get("enable"):
        raise ctx.error("auto_scale_lr.enable", "not supported yet: LR scaling by the actual batch size")
    ledger.ignored("auto_scale_lr", "disabled: the LR is used as given")
    if values.get("optimizer_config"):
        ledger.unsupported("optimizer_config", "an optimizer hook: GANs step their optimizers in train_step")
    ledger.ignored("optimizer_config", "no optimizer hook")
    if ctx.version == "0.x":
        for key in ("type", "is_dynamic_ddp", "pass_training_status"):
            ledger.ignored(f"runner.{key}", "mmcv's runner: dsgan's loop is iteration-based and needs no wrapper")
        ledger.unsupported("runner", "a runner option dsgan does not know")
        ledger.unsupported("train_cfg", "a 0.x train_cfg key dsgan does not know")
        ledger.ignored("log_config", "log sinks: dsgan logs to stdout and (tracking.wandb) to wandb")
    else:
        ledger.ignored("default_hooks", _HOOK)
        ledger.ignored("model.data_preprocessor", "dsgan maps images to [-1, 1] itself")
        for order in ("output_channel_order", "bgr_to_rgb", "rgb_to_bgr"):
            if lookup(values, f"model.data_preprocessor.{order}") not in (MISSING, None, False):
                ledger.unsupported(f"model.data_preprocessor.{order}", "a channel order: dsgan trains on RGB images")
        for stat in ("mean", "std"):
            value = lookup(values, f"model.data_preprocessor.{stat}")
            if isinstance(value, (list, tuple)) and any(v != 127.5 for v in value):
                ledger.unsupported(f"model.data_preprocessor.{stat}", f"{show(value)}: dsgan maps [0, 255] to [-1, 1]")
        ledger.unsupported("train_cfg", "an MMEngine train loop key dsgan does not know")
    for key in values:
        if key in source.used_by and not any(p == key or p.startswith((key + ".", key + "[")) for p in ledger.entries):
            ledger.ignored(key, f"a helper variable; its value is used by: {', '.join(sorted(source.used_by[key]))}")


def _absolute_data_root(raw: dict[str, Any]) -> None:
    """MMEngine resolves data paths against the launch directory; dsgan against the config's folder."""
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("root"), str) and not os.path.isabs(data["root"]):
        data["root"] = os.path.abspath(data["root"])


def write_config(raw: dict[str, Any], out_dir: Path, header: str) -> list[Path]:
    """config.yaml (referring to the DeepSpeed files by relative path) and the two DeepSpeed JSON files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    run_config = copy.deepcopy(raw)
    paths = []
    for role, name in t.DS_FILES.items():
        path = out_dir / name
        path.write_text(json.dumps(raw[role]["deepspeed"], indent=2) + "\n")
        run_config[role]["deepspeed"] = name
        paths.append(path)
    path = out_dir / "config.yaml"
    path.write_text(header + yaml.safe_dump(_plain(run_config), sort_keys=False))
    return [path, *paths]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
