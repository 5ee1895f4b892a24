"""Schedule, optimizers, precision and EMA: the parts whose meaning changed between MMGeneration 0.x and 1.x.

Units: an iteration is one data batch (one `train_step` call). A cycle is one D phase
followed by one G phase: `discriminator_steps * accumulation_D` iterations, then `generator_steps` G updates. dsgan
counts EMA start and interval in G updates.
"""

from __future__ import annotations

import math
from typing import Any

from dsgan.migrate.ledger import Ctx, show
from dsgan.schedule import Schedule

DS_FILES = {"generator": "generator_ds.json", "discriminator": "discriminator_ds.json"}
ROLES = ("generator", "discriminator")


def _positive_int(ctx: Ctx, path: str, default: int) -> int:
    value = ctx.get(path, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ctx.error(path, f"{value!r}: expected a positive integer")
    return value


def schedule_0x(ctx: Ctx) -> Schedule:
    """0.x counts disc_steps and batch_accumulation_steps in train_step calls; gen_steps in G updates."""
    disc = _positive_int(ctx, "train_cfg.disc_steps", 1)
    gen = _positive_int(ctx, "train_cfg.gen_steps", 1)
    acc = _positive_int(ctx, "train_cfg.batch_accumulation_steps", 1)
    if disc % acc:
        raise ctx.error(
            "train_cfg.disc_steps",
            f"disc_steps={disc} is not a multiple of batch_accumulation_steps={acc}. In 0.x both count train_step "
            f"calls, so G would step every {disc} iterations while D steps every {acc}: G's phase would fall inside "
            "a D accumulation window. 1.x (and dsgan) count whole D updates (discriminator_steps) and have no exact "
            "equivalent; make disc_steps a multiple of batch_accumulation_steps",
        )
    ledger = ctx.ledger
    ledger.converted("train_cfg.disc_steps", f"schedule.discriminator_steps = {disc} // {acc} = {disc // acc}")
    ledger.converted("train_cfg.gen_steps", f"schedule.generator_steps = {gen}")
    ledger.converted(
        "train_cfg.batch_accumulation_steps",
        f"gradient_accumulation_steps = {acc} in {DS_FILES['generator']} and {DS_FILES['discriminator']}",
    )
    ledger.note(
        f"Step counting (0.x -> 1.x): 0.x counts disc_steps={disc} and batch_accumulation_steps={acc} in train_step "
        f"calls (data batches), so D makes disc_steps // batch_accumulation_steps = {disc} // {acc} = {disc // acc} "
        f"consecutive update(s); gen_steps={gen} counts real G updates; both networks accumulate {acc} micro-batches "
        f"per update. 1.x / dsgan: discriminator_steps={disc // acc}, generator_steps={gen}, "
        f"accumulative_counts (gradient_accumulation_steps)={acc} for G and D."
    )
    return Schedule(disc // acc, gen, acc, acc)


def schedule_1x(ctx: Ctx) -> Schedule:
    """1.x: model.discriminator_steps / generator_steps count updates; accumulative_counts is per sub-wrapper."""
    d_steps = _positive_int(ctx, "model.discriminator_steps", 1)
    g_steps = _positive_int(ctx, "model.generator_steps", 1)
    accs = {role: _positive_int(ctx, f"optim_wrapper.{role}.accumulative_counts", 1) for role in ROLES}
    ledger = ctx.ledger
    for key, name, value in (
        ("model.discriminator_steps", "schedule.discriminator_steps", d_steps),
        ("model.generator_steps", "schedule.generator_steps", g_steps),
    ):
        if ctx.has(key):
            ledger.converted(key, f"{name} = {value}")
        else:
            ledger.defaults.append(f"{name} = 1: MMagic's default (not set in the source)")
    for role in ROLES:
        key = f"optim_wrapper.{role}.accumulative_counts"
        if ctx.has(key):
            ledger.converted(key, f"{DS_FILES[role]}: gradient_accumulation_steps = {accs[role]}")
    ledger.note(
        f"Step counting (1.x): discriminator_steps={d_steps} and generator_steps={g_steps} count optimizer updates; "
        f"accumulative_counts (D {accs['discriminator']}, G {accs['generator']}) count micro-batches per update. "
        f"G's phase starts every discriminator_steps * accumulative_counts(D) = "
        f"{d_steps * accs['discriminator']} iterations, exactly as dsgan schedules it. (0.x's disc_steps would be "
        f"{d_steps * accs['discriminator']}: it counted train_step calls.)"
    )
    return Schedule(d_steps, g_steps, accs["discriminator"], accs["generator"])


# ----------------------------------------------------------------------------------------------------------------
# Optimizers

_TORCH_DEFAULTS = {
    "Adam": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0},
    "AdamW": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2},
}
_KERNEL_CHOICES = ("foreach", "fused", "capturable", "differentiable")


def optimizer(ctx: Ctx, path: str, role: str) -> dict[str, Any]:
    """torch.optim Adam/AdamW -> DeepSpeed `optimizer`. Absent values take torch's defaults, not DeepSpeed's."""
    opt = ctx.get(path)
    if not isinstance(opt, dict):
        raise ctx.error(path, "missing: each network needs its optimizer")
    kind = opt.get("type")
    if kind not in _TORCH_DEFAULTS:
        raise ctx.error(f"{path}.type", f"not supported yet: {kind!r} (dsgan's DeepSpeed configs take Adam and AdamW)")
    ledger, target = ctx.ledger, f"{DS_FILES[role]}: optimizer"
    ledger.converted(f"{path}.type", f"{target}.type = {kind!r}")
    params: dict[str, Any] = {}
    for key, default in _TORCH_DEFAULTS[kind].items():
        value = opt.get(key, default)
        params[key] = [float(v) for v in value] if key == "betas" else float(value)
        if key in opt:
            ledger.converted(f"{path}.{key}", f"{target}.params.{key} = {show(value)}")
        else:
            ledger.defaults.append(f"{target}.params.{key} = {default!r}: torch's {kind} default (not set)")
    for key in ("amsgrad", "maximize"):
        if opt.get(key):
            raise ctx.error(f"{path}.{key}", "not supported yet (DeepSpeed's Adam has no such mode)")
        if key in opt:
            ledger.ignored(f"{path}.{key}", "False, torch's default")
    for key in _KERNEL_CHOICES:
        if key in opt:
            ledger.ignored(f"{path}.{key}", "a torch kernel choice; DeepSpeed picks its own Adam kernel")
    if kind == "Adam" and params["weight_decay"] > 0:
        params["adam_w_mode"] = False
        ledger.note(
            f"{path}: torch's Adam adds weight decay to the gradient (L2); DeepSpeed's 'Adam' decouples it (AdamW) "
            "unless adam_w_mode is false, so adam_w_mode: false is written"
        )
    return {"type": kind, "params": params}


def clip_grad(ctx: Ctx, path: str, role: str) -> float:
    clip = ctx.get(path)
    if not clip:
        if ctx.has(path):
            ctx.ledger.converted(path, f"{DS_FILES[role]}: gradient_clipping = 0 (off)")
        return 0.0
    if not isinstance(clip, dict) or clip.get("type", "norm") != "norm" or clip.get("norm_type", 2) != 2:
        raise ctx.error(path, f"not supported yet: {show(clip)} (DeepSpeed clips the global L2 norm)")
    value = float(clip.get("max_norm", 0.0))
    ctx.ledger.converted(path, f"{DS_FILES[role]}: gradient_clipping = {value:g} (global L2 norm)")
    return value


# ----------------------------------------------------------------------------------------------------------------
# Precision


def _grad_scaler(ctx: Ctx, path: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """torch GradScaler -> DeepSpeed dynamic loss scaling. GradScaler halves the scale on every overflow and doubles
    it after `growth_interval` clean steps; DeepSpeed does the same with hysteresis 1 and loss_scale_window."""
    init = float(cfg.get("init_scale", 2.0**16))
    if cfg.get("growth_factor", 2.0) != 2.0 or cfg.get("backoff_factor", 0.5) != 0.5:
        raise ctx.error(path, "not supported yet: growth_factor/backoff_factor other than 2/0.5 (DeepSpeed's)")
    power = math.log2(init) if init > 0 else -1.0
    if power != int(power) or not 0 <= power <= 64:
        raise ctx.error(
            path, f"init_scale={init:g} is not a power of two (DeepSpeed starts from 2**initial_scale_power)"
        )
    if cfg.get("enabled", True) is False:
        raise ctx.error(path, "enabled=False: a disabled scaler with fp16 is not supported yet")
    for key in set(cfg) - {"init_scale", "growth_factor", "backoff_factor", "growth_interval", "enabled"}:
        ctx.ledger.unsupported(f"{path}.{key}", "not a GradScaler option dsgan knows")
    return {
        "enabled": True,
        "loss_scale": 0,
        "initial_scale_power": int(power),
        "loss_scale_window": int(cfg.get("growth_interval", 2000)),
        "hysteresis": 1,
    }


def _scaler_note(ctx: Ctx) -> None:
    ctx.ledger.note(
        "Dynamic loss scaling: torch's GradScaler has no lower bound; DeepSpeed stops at min_loss_scale (1) and "
        "aborts with 'Current loss scale already at minimum' if fp16 collapses"
    )


def precision_0x(ctx: Ctx) -> dict[str, dict[str, Any]]:
    """0.x: `runner.fp16_loss_scaler` (one GradScaler for G and D). `fp16=...` is not applied to GANs by mmgen
    (apis/train.py uses it only with an optimizer hook, which GANs do not have) and `apex_amp` is not converted."""
    if ctx.has("apex_amp") and ctx.get("apex_amp"):
        raise ctx.error("apex_amp", "not supported yet: apex AMP; use runner.fp16_loss_scaler-style fp16 instead")
    if ctx.has("fp16"):
        ctx.ledger.ignored(
            "fp16",
            "mmgen 0.x does not apply `fp16` to GANs (they step their optimizers in train_step), so the source "
            "trains in fp32 and so does the conversion; enable fp16 in the DeepSpeed configs to change that",
        )
    scaler = ctx.get("runner.fp16_loss_scaler")
    if not scaler:
        return {}
    block = _grad_scaler(ctx, "runner.fp16_loss_scaler", scaler)
    ctx.ledger.converted("runner.fp16_loss_scaler", f"fp16 = {block} in both DeepSpeed configs")
    ctx.ledger.note(
        "Loss scaler: 0.x shares one GradScaler between G and D, so an overflow in D's loss also shrinks the scale "
        "used for G (and skips steps on both sides); 1.x gives each sub-wrapper its own scaler, and dsgan each "
        "DeepSpeed engine its own. 0.x also ran fp16 only inside modules that enable it (fp16_enabled); DeepSpeed "
        "fp16 runs the whole network in fp16 with fp32 master weights."
    )
    _scaler_note(ctx)
    return {role: {"fp16": block} for role in ROLES}


_INT_LOSS_SCALE = (
    "the int {scale} is refused by MMEngine's AmpOptimWrapper, which takes 'dynamic', a float (a static scale) or a "
    "dict (GradScaler arguments) and raises TypeError for anything else (mmengine/optim/optimizer/"
    "amp_optimizer_wrapper.py, AmpOptimWrapper.__init__), so the source does not build; write {scale}.0 for a "
    "static scale or dict(init_scale={scale}) for a dynamic one"
)


def precision_stylegan2(ctx: Ctx, generator: dict[str, Any], discriminator: dict[str, Any]) -> dict[str, Any]:
    """StyleGAN2 in MMagic and mmgen runs fp16 only inside the layers its `num_fp16_scales` select (MMagic's
    StyleGAN2.train_step does not enter the AmpOptimWrapper's autocast context); the wrapper's (1.x) or the
    runner's (0.x) GradScaler only scales the losses. dsgan keeps fp32 engines and runs the same layers in fp16
    without loss scaling (NVlabs' partial precision), so a loss scale is reported as not applied."""
    ledger = ctx.ledger
    reduced = {
        role: net["num_fp16_scales"] for role, net in (("generator", generator), ("discriminator", discriminator))
    }
    why = (
        "dsgan's StyleGAN2 partial precision (num_fp16_scales layers in fp16 inside an fp32 DeepSpeed engine, as "
        "NVlabs') does no loss scaling: the losses, R1 and the path-length penalty are computed unscaled, and "
        "fp16 overflow is bounded by conv_clamp instead"
    )
    if ctx.version == "0.x":
        if ctx.get("apex_amp"):
            raise ctx.error("apex_amp", "not supported yet: apex AMP")
        if ctx.has("fp16"):
            ctx.ledger.ignored("fp16", "mmgen 0.x does not apply `fp16` to GANs (they step their own optimizers)")
        scaler = ctx.get("runner.fp16_loss_scaler")
        if scaler and not isinstance(scaler, dict):
            raise ctx.error("runner.fp16_loss_scaler", f"{show(scaler)}: expected a dict of GradScaler arguments")
        if scaler:
            ledger.unsupported("runner.fp16_loss_scaler", "not applied: see the note on loss scaling")
            ledger.note(
                f"runner.fp16_loss_scaler={show(scaler)}: in mmgen 0.x this is torch's GradScaler(**fp16_loss_scaler) "
                "(mmgen/core/runners/dynamic_iterbased_runner.py, DynamicIterBasedRunner.__init__), a *dynamic* "
                f"scaler starting at {scaler.get('init_scale', 2.0**16):g} (halved on an overflow, doubled after "
                f"{scaler.get('growth_interval', 2000)} clean steps), shared by G and D and updated once per "
                f"iteration. Not applied: {why}. num_fp16_scales (G {reduced['generator']}, D "
                f"{reduced['discriminator']}) is converted."
            )
        return {}
    for role in ROLES:
        path = f"optim_wrapper.{role}"
        kind = ctx.get(f"{path}.type", "OptimWrapper")
        if kind not in ("OptimWrapper", "AmpOptimWrapper"):
            raise ctx.error(f"{path}.type", f"not supported yet: {kind!r} (OptimWrapper and AmpOptimWrapper are)")
        if ctx.has(f"{path}.type"):
            ledger.converted(
                f"{path}.type", f"{DS_FILES[role]}: fp32 engine, {reduced[role]} fp16 scale(s) in the model"
            )
        if kind == "OptimWrapper":
            continue
        scale = ctx.get(f"{path}.loss_scale", "dynamic")
        if isinstance(scale, int) and not isinstance(scale, bool):
            meaning = _INT_LOSS_SCALE.format(scale=scale)
        elif isinstance(scale, float):
            meaning = f"the float {scale:g} is a static GradScaler scale in MMEngine's AmpOptimWrapper"
        else:
            meaning = f"{show(scale)} is a dynamic GradScaler in MMEngine's AmpOptimWrapper"
        ledger.unsupported(f"{path}.loss_scale", "not applied: see the note on loss scaling")
        if ctx.has(f"{path}.dtype"):
            ledger.ignored(f"{path}.dtype", "MMagic's StyleGAN2 does not use the wrapper's autocast")
        ledger.note(
            f"{path}.loss_scale={show(scale)}: {meaning}. MMagic's StyleGAN2 uses the AmpOptimWrapper only for that "
            "scaler (its train_step does not enter the autocast context; fp16 runs in the num_fp16_scales layers). "
            f"Not applied: {why}. num_fp16_scales ({role} {reduced[role]}) is converted."
        )
    return {}


def precision_1x(ctx: Ctx, role: str) -> dict[str, Any]:
    """MMEngine AmpOptimWrapper (autocast + a per-wrapper GradScaler) -> DeepSpeed fp16, or autocast for bf16."""
    path = f"optim_wrapper.{role}"
    kind = ctx.get(f"{path}.type", "OptimWrapper")
    ledger = ctx.ledger
    if kind == "OptimWrapper":
        if ctx.has(f"{path}.type"):
            ledger.converted(f"{path}.type", f"{DS_FILES[role]}: fp32")
        return {}
    if kind != "AmpOptimWrapper":
        raise ctx.error(f"{path}.type", f"not supported yet: {kind!r} (OptimWrapper and AmpOptimWrapper are)")
    dtype = ctx.get(f"{path}.dtype") or "float16"
    if dtype in ("bfloat16", "torch.bfloat16"):
        ledger.converted(f"{path}.type", f"{DS_FILES[role]}: torch_autocast bfloat16 (fp32 weights, as AMP keeps)")
        ledger.converted(f"{path}.dtype", "torch_autocast.dtype = 'bfloat16'")
        if ctx.has(f"{path}.loss_scale"):
            ledger.ignored(f"{path}.loss_scale", "bf16 has fp32's exponent range: no loss scaling is needed")
        return {"torch_autocast": {"enabled": True, "dtype": "bfloat16"}}
    if dtype not in ("float16", "torch.float16", "fp16"):
        raise ctx.error(f"{path}.dtype", f"not supported yet: {dtype!r}")
    if ctx.has(f"{path}.dtype"):
        ledger.converted(f"{path}.dtype", "fp16")
    scale = ctx.get(f"{path}.loss_scale", "dynamic")
    if scale == "dynamic":
        block = _grad_scaler(ctx, f"{path}.loss_scale", {})
    elif isinstance(scale, dict):
        block = _grad_scaler(ctx, f"{path}.loss_scale", scale)
    elif isinstance(scale, float) and scale > 0:
        block = {"enabled": True, "loss_scale": scale}
    elif isinstance(scale, int) and not isinstance(scale, bool):
        raise ctx.error(f"{path}.loss_scale", _INT_LOSS_SCALE.format(scale=scale))
    else:
        raise ctx.error(f"{path}.loss_scale", f"{scale!r}: expected 'dynamic', a positive float or a dict")
    ledger.converted(f"{path}.type", f"{DS_FILES[role]}: fp16 = {block}")
    if ctx.has(f"{path}.loss_scale"):
        ledger.converted(f"{path}.loss_scale", f"{DS_FILES[role]}: fp16 loss scaling as above")
    ledger.note(
        "Loss scaler: 1.x gives each AmpOptimWrapper its own GradScaler (0.x shared one between G and D); dsgan "
        "gives each DeepSpeed engine its own. AMP autocasts the forward with fp32 weights; DeepSpeed fp16 keeps "
        "fp16 weights with fp32 master copies in the optimizer."
    )
    if block["loss_scale"] == 0:
        _scaler_note(ctx)
    return {"fp16": block}


# ----------------------------------------------------------------------------------------------------------------
# EMA
#
# dsgan's EMA (dsgan/ema.py) counts start and interval in G optimizer updates, and `momentum` is the weight of the
# new value. The order matches MMagic's: before `start_iter` BaseGAN syncs the EMA with G, and mmengine's
# BaseAveragedModel copies again on its first `update_parameters` call (`steps == 0`), then averages every
# `interval` calls; MMGeneration 0.x's hook likewise copies before `start_iter` and averages when
# `(iter + 1 - start_iter) % interval == 0`.
# - MMagic 1.x's `ExponentialMovingAverage` has the same momentum convention (BigGAN-128: 1e-4), but BaseGAN calls
#   it once per G phase and compares `start_iter` with a counter of G phases, not of iterations: in iterations,
#   start_iter * discriminator_steps * accumulative_counts(D) (checked against MMagic 1.2.0's code; reading it as
#   iterations is 8x off for BigGAN-128). One G phase is `generator_steps` G updates.
# - MMGeneration 0.x's `ExponentialMovingAverageHook` (`ema_cfg`) gives the kept fraction (`momentum=0.9999` is
#   1e-4 here) and counts train_step calls.


def _momentum(value: float) -> float:
    """1 - 0.9999 is 9.999999999998899e-05 in binary floating point; 12 significant digits give back 1e-4."""
    return float(f"{value:.12g}")


_EMA_HOOK = "ExponentialMovingAverageHook"


def _ema_hook(ctx: Ctx) -> tuple[str, dict[str, Any]] | None:
    """The 0.x EMA hook's key path and config, checked for what dsgan can express."""
    hooks = ctx.get("custom_hooks") or []
    found = [(i, h) for i, h in enumerate(hooks) if isinstance(h, dict) and h.get("type") == _EMA_HOOK]
    if not found:
        return None
    if len(found) > 1:
        raise ctx.error("custom_hooks", "more than one ExponentialMovingAverageHook: dsgan keeps one EMA of G")
    i, hook = found[0]
    p = f"custom_hooks[{i}]"
    keys = hook.get("module_keys")
    if keys not in ("generator_ema", ("generator_ema",), ["generator_ema"]):
        raise ctx.error(f"{p}.module_keys", f"not supported yet: {keys!r} (dsgan averages the generator only)")
    if hook.get("interp_mode", "lerp") != "lerp":
        raise ctx.error(f"{p}.interp_mode", "not supported yet (only 'lerp')")
    if hook.get("momentum_policy", "fixed") != "fixed":
        raise ctx.error(f"{p}.momentum_policy", "not supported yet: a ramped momentum (dsgan's is fixed)")
    interval = hook.get("interval", -1)
    if not isinstance(interval, int) or interval <= 0:
        raise ctx.error(f"{p}.interval", f"{interval!r}: the hook never averages after start_iter (0.x default -1)")
    return p, hook


def _ema_rate_0x(interval: int, schedule: Schedule, kept: float) -> tuple[float, int, str]:
    """(momentum, interval in G updates, how exact). G only changes at the end of a cycle, so a hook that runs r
    times per cycle averages the same G r times: one average with momentum 1 - kept**r per cycle."""
    cycle, per = schedule.cycle_iters, schedule.generator_steps
    if interval % cycle == 0:
        return 1 - kept, interval // cycle * per, "exact"
    averages = cycle / interval
    if averages >= 1:
        how = f"{averages:g} averages of the same G per cycle, compounded into one"
        return 1 - kept**averages, per, how + ("" if cycle % interval == 0 else " (approximate)")
    return 1 - kept, max(1, round(1 / averages)) * per, f"rounded from one average per {1 / averages:g} cycles"


def ema_0x(ctx: Ctx, schedule: Schedule) -> dict[str, Any] | None:
    """mmgen's ExponentialMovingAverageHook runs after every train_step call: before `start_iter` it copies G;
    afterwards, when (iter + 1 - start_iter) % interval == 0, ema = m * ema + (1 - m) * G (m: the kept fraction)."""
    ledger = ctx.ledger
    use_ema = ctx.get("train_cfg.use_ema", False)
    found = _ema_hook(ctx)
    if found is None:
        if ctx.has("train_cfg.use_ema"):
            ledger.converted("train_cfg.use_ema", "ema: null")
        if use_ema:
            ledger.note(
                "train_cfg.use_ema=True creates generator_ema, but without an ExponentialMovingAverageHook in "
                "custom_hooks 0.x never updates it (it keeps G's initial weights): EMA is off in the conversion"
            )
        return None
    p, hook = found
    interval, start = hook["interval"], int(hook.get("start_iter", 0))
    interp = hook.get("interp_cfg") or {}
    kept = float(interp.get("momentum", 0.999))  # mmgen's lerp default
    cycle, per = schedule.cycle_iters, schedule.generator_steps
    momentum, interval_g, how = _ema_rate_0x(interval, schedule, kept)
    start_g = round(start / cycle) * per
    out = {"momentum": _momentum(momentum), "start_g_updates": start_g, "interval_g_updates": interval_g}
    ledger.converted(f"{p}.type", "ema")
    ledger.converted(f"{p}.module_keys", "ema of the generator")
    if ctx.has("train_cfg.use_ema"):
        ledger.converted("train_cfg.use_ema", "ema (updated by the hook)")
    ledger.converted(f"{p}.interp_cfg.momentum", f"ema.momentum = {out['momentum']:g} (from {kept} kept)")
    ledger.converted(f"{p}.interval", f"ema.interval_g_updates = {interval_g} ({how})")
    ledger.converted(f"{p}.start_iter", f"ema.start_g_updates = {start_g}")
    for key in ("interp_mode", "momentum_policy", "momentum_cfg"):
        if key in hook:
            ledger.converted(f"{p}.{key}", "a fixed-momentum lerp, as dsgan's EMA")
    if "priority" in hook:
        ledger.ignored(f"{p}.priority", "hook ordering: dsgan updates the EMA right after G's update")
    _buffers_note(ctx, f"{p}.interp_cfg.momentum_nontrainable", interp.get("momentum_nontrainable", 0.0) != 0)
    rounded = "" if start % cycle == 0 else f" (rounded from {start / cycle * per:g})"
    ledger.note(
        f"EMA units: 0.x's hook counts train_step calls and its momentum is the kept fraction"
        f"{'' if 'momentum' in interp else ' (0.999 by default)'}; dsgan counts G updates and its momentum is the "
        f"weight of the new value. A cycle here is {cycle} iterations with {per} G update(s): interval {interval} "
        f"iterations -> {interval_g} G update(s) ({how}); start_iter {start} -> {start_g} G updates{rounded}; "
        f"momentum {kept} kept -> {out['momentum']:g}."
    )
    if interval % cycle == 0 and interval > cycle and (start // cycle) % (interval // cycle):
        ledger.note(
            f"EMA phase: 0.x averages every {interval // cycle} cycles counted from start_iter, dsgan "
            "from the first G update; the same rate, shifted by less than one interval"
        )
    return out


def ema_1x(ctx: Ctx, schedule: Schedule) -> dict[str, Any] | None:
    """MMagic's BaseGAN.train_step updates the EMA once per G phase, after all generator_steps updates, when
    (iter + 1) >= start_iter * discriminator_steps * accumulative_counts(D): start_iter counts G phases (cycles),
    not iterations. ExponentialMovingAverage's first call copies G; later calls average every `interval` calls."""
    cfg = ctx.get("model.ema_config")
    ledger = ctx.ledger
    if not cfg:
        if ctx.has("model.ema_config"):
            ledger.converted("model.ema_config", "ema: null")
        return None
    path = "model.ema_config"
    kind = cfg.get("type", "ExponentialMovingAverage")
    if kind != "ExponentialMovingAverage":
        raise ctx.error(f"{path}.type", f"not supported yet: {kind!r} (dsgan's EMA has a fixed momentum)")
    momentum = float(cfg.get("momentum", 0.0002))  # MMagic's default
    interval = int(cfg.get("interval", 1))
    start = int(cfg.get("start_iter", 0))
    per = schedule.generator_steps
    first = max(start, 1)  # the first call (cycle `first`) copies G
    out = {"momentum": _momentum(momentum), "start_g_updates": first * per, "interval_g_updates": interval * per}
    if "type" in cfg:
        ledger.converted(f"{path}.type", "ema")
    ledger.converted(f"{path}.momentum", f"ema.momentum = {out['momentum']:g} (same convention)")
    ledger.converted(f"{path}.interval", f"ema.interval_g_updates = {interval} x generator_steps {per}")
    ledger.converted(
        f"{path}.start_iter", f"ema.start_g_updates = {first} x generator_steps {per} = {out['start_g_updates']}"
    )
    if "device" in cfg:
        ledger.ignored(f"{path}.device", "dsgan keeps the EMA on G's device, in fp32")
    _buffers_note(ctx, f"{path}.update_buffers", bool(cfg.get("update_buffers", False)))
    for key in set(cfg) - {"type", "momentum", "interval", "start_iter", "device", "update_buffers"}:
        ledger.unsupported(f"{path}.{key}", "not an ExponentialMovingAverage option dsgan knows")
    ledger.note(
        f"EMA units: MMagic updates the EMA once per cycle ({schedule.cycle_iters} iterations, {per} G "
        f"update(s)); its start_iter={start} is compared with (iter + 1) / (discriminator_steps * "
        f"accumulative_counts), so it counts cycles, not iterations, despite its name "
        f"(= {start * schedule.cycle_iters} iterations here). Its first EMA call copies G, so start_g_updates = "
        f"max(start_iter, 1) x generator_steps = {out['start_g_updates']}; interval {interval} cycle(s) -> "
        f"{out['interval_g_updates']} G update(s). "
        "Momentum has the same meaning (weight of the new value)."
    )
    if interval > 1 and first % interval:
        ledger.note(
            f"EMA phase: MMagic averages every {interval} cycles counted from cycle {first}, dsgan from the "
            "first G update; the same rate, shifted by less than one interval"
        )
    return out


def _buffers_note(ctx: Ctx, path: str, averaged: bool) -> None:
    if averaged:
        ctx.ledger.unsupported(path, "the source averages buffers (BatchNorm statistics) too; dsgan copies them")
        ctx.ledger.note(
            f"{path}: the source averages G's buffers (BatchNorm running statistics) like its weights; dsgan's EMA "
            "copies buffers from G (as MMagic does with update_buffers=False)"
        )
    elif ctx.has(path):
        ctx.ledger.converted(path, "buffers copied from G, as dsgan's EMA does")
