"""Generator/discriminator and loss configs: MMGeneration/MMagic field names -> dsgan's model and loss schemas.

Fields a source config leaves out take the *source's* defaults (MMagic's BigGANGenerator has num_classes=0 and
auto_sync_bn=True; torch's LeakyReLU slope is 0.01), never dsgan's, and every dsgan field is written explicitly.
Field names and defaults follow mmgen 0.7 (`mmgen/models/architectures`) and MMagic 1.x (`mmagic/models/editors`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from dsgan.migrate.ledger import Ctx, show

_NO_DEFAULT = object()


@dataclass(frozen=True)
class NetSpec:
    dsgan_type: str
    plain: dict[str, tuple[str, Any]]
    """source field -> (dsgan field, source default); _NO_DEFAULT = required."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Source fields dsgan has no option for -> the source default."""
    fixed: dict[str, Any] = field(default_factory=dict)
    """dsgan fields with a value implied by the architecture (MMagic's DCGAN is unconditional and has no SN)."""


_BIGGAN_G = NetSpec(
    "BigGANGenerator",
    {
        "output_scale": ("output_scale", _NO_DEFAULT),
        "noise_size": ("noise_size", 120),
        "num_classes": ("num_classes", 0),
        "out_channels": ("out_channels", 3),
        "base_channels": ("base_channels", 96),
        "with_shared_embedding": ("with_shared_embedding", True),
        "shared_dim": ("shared_dim", 128),
        "sn_eps": ("sn_eps", 1e-6),
        "split_noise": ("split_noise", True),
        "with_spectral_norm": ("with_spectral_norm", True),
    },
    {
        "input_scale": 4,
        "sn_style": "ajbrock",
        "upsample_cfg": {"type": "nearest", "scale_factor": 2},
        "blocks_cfg": {"type": "BigGANGenResBlock"},
        "arch_cfg": None,
        "out_norm_cfg": {"type": "BN"},
        "rgb2bgr": False,
        "pretrained": None,
    },
)
_BIGGAN_D = NetSpec(
    "BigGANDiscriminator",
    {
        "input_scale": ("input_scale", _NO_DEFAULT),
        "num_classes": ("num_classes", 0),
        "in_channels": ("in_channels", 3),
        "base_channels": ("base_channels", 96),
        "sn_eps": ("sn_eps", 1e-6),
        "with_spectral_norm": ("with_spectral_norm", True),
    },
    {
        "out_channels": 1,
        "sn_style": "ajbrock",
        "blocks_cfg": {"type": "BigGANDiscResBlock"},
        "arch_cfg": None,
        "pretrained": None,
    },
)
_DCGAN_G = NetSpec(
    "DCGANGenerator",
    {
        "output_scale": ("output_scale", _NO_DEFAULT),
        "out_channels": ("out_channels", 3),
        "noise_size": ("noise_size", 100),
    },
    {
        "default_norm_cfg": {"type": "BN"},
        "default_act_cfg": {"type": "ReLU"},
        "out_act_cfg": {"type": "Tanh"},
        "init_cfg": None,
        "pretrained": None,
    },
    {"num_classes": 0},
)
_DCGAN_D = NetSpec(
    "DCGANDiscriminator",
    {
        "input_scale": ("input_scale", _NO_DEFAULT),
        "in_channels": ("in_channels", 3),
        "base_channels": ("base_channels", 128),
    },
    {"out_act_cfg": None, "init_cfg": None, "pretrained": None},
    {"num_classes": 0, "with_spectral_norm": False},
)
_SNGAN_G = NetSpec(
    "SNGANGenerator",
    {
        "output_scale": ("output_scale", _NO_DEFAULT),
        "num_classes": ("num_classes", 0),
        "base_channels": ("base_channels", 64),
        "out_channels": ("out_channels", 3),
        "noise_size": ("noise_size", 128),
    },
    {
        "input_scale": 4,
        "attention_cfg": {"type": "SelfAttentionBlock"},
        "attention_after_nth_block": 0,
        "channels_cfg": None,
        "blocks_cfg": {"type": "SNGANGenResBlock"},
        "use_cbn": True,
        "with_spectral_norm": False,
        "with_embedding_spectral_norm": None,
        "sn_style": "torch",
        "norm_eps": 1e-4,
        "sn_eps": 1e-12,
        "init_cfg": {"type": "BigGAN"},
        "pretrained": None,
        "rgb_to_bgr": False,
    },
)
_SNGAN_D = NetSpec(
    "SNGANDiscriminator",
    {
        "input_scale": ("input_scale", _NO_DEFAULT),
        "num_classes": ("num_classes", 0),
        "base_channels": ("base_channels", 128),
        "input_channels": ("in_channels", 3),
        "sn_eps": ("sn_eps", 1e-12),
    },
    {
        "attention_cfg": {"type": "SelfAttentionBlock"},
        "attention_after_nth_block": -1,
        "channels_cfg": None,
        "downsample_cfg": None,
        "from_rgb_cfg": {"type": "SNGANDiscHeadResBlock"},
        "blocks_cfg": {"type": "SNGANDiscResBlock"},
        "sn_style": "torch",
        "init_cfg": {"type": "BigGAN"},
        "pretrained": None,
    },
)
SPECS = {
    ("generator", "BigGANGenerator"): _BIGGAN_G,
    ("discriminator", "BigGANDiscriminator"): _BIGGAN_D,
    ("generator", "DCGANGenerator"): _DCGAN_G,
    ("discriminator", "DCGANDiscriminator"): _DCGAN_D,
    ("generator", "SNGANGenerator"): _SNGAN_G,
    ("discriminator", "ProjDiscriminator"): _SNGAN_D,
    ("discriminator", "SAGANDiscriminator"): _SNGAN_D,
}


def convert_network(ctx: Ctx, role: str, model_defaults: dict[str, Any]) -> dict[str, Any]:
    """`model.<role>` -> dsgan `<role>.model`. `model_defaults` are MMagic's model-level `num_classes`/`noise_size`,
    which BaseGAN passes to the networks that do not set them."""
    path = f"model.{role}"
    cfg = ctx.get(path)
    if not isinstance(cfg, dict):
        raise ctx.error(path, "missing: a GAN config needs model.generator and model.discriminator")
    kind = cfg.get("type")
    if not isinstance(kind, str) or (role, kind) not in SPECS:
        supported = ", ".join(t for r, t in SPECS if r == role)
        raise ctx.error(f"{path}.type", f"not supported yet: {kind!r} (supported {role}s: {supported})")
    spec = SPECS[(role, kind)]
    ledger, target = ctx.ledger, f"{role}.model"
    ledger.converted(f"{path}.type", f"{target}.type = {spec.dsgan_type}")
    out: dict[str, Any] = {"type": spec.dsgan_type, **spec.fixed}
    for name, value in spec.fixed.items():
        ledger.defaults.append(f"{target}.{name} = {value!r}: implied by {kind} in the source")
    cfg = {**{k: v for k, v in model_defaults.items() if k in spec.plain}, **cfg}
    for src, (dst, default) in spec.plain.items():
        if src in cfg:
            out[dst] = cfg[src]
            if src in model_defaults and src not in ctx.get(path):
                continue  # recorded with the model-level key
            ledger.converted(f"{path}.{src}", f"{target}.{dst} = {show(cfg[src])}")
        elif default is _NO_DEFAULT:
            raise ctx.error(f"{path}.{src}", f"missing ({kind} has no default for it)")
        else:
            out[dst] = default
            ledger.defaults.append(f"{target}.{dst} = {default!r}: {kind}'s default in the source (not set there)")
    for src, default in spec.extra.items():
        if src not in cfg:
            continue
        if cfg[src] == default:
            ledger.ignored(f"{path}.{src}", f"the source's default for {kind}; dsgan has no such option")
        else:
            ledger.unsupported(
                f"{path}.{src}", f"dsgan's {spec.dsgan_type} has no such option; {show(cfg[src])} is not carried over"
            )
    _special(ctx, path, kind, cfg, out)
    return out


def _special(ctx: Ctx, path: str, kind: str, cfg: dict[str, Any], out: dict[str, Any]) -> None:
    """Fields whose meaning differs between the source and dsgan."""
    ledger, target = ctx.ledger, f"{path.split('.')[1]}.model"
    if kind in ("BigGANGenerator", "BigGANDiscriminator"):
        out["act"] = _activation(ctx, f"{path}.act_cfg", cfg.get("act_cfg", {"type": "ReLU"}), target)
        out["init_type"] = _init_type(ctx, path, cfg, target)
        if kind == "BigGANGenerator":
            out["auto_sync_bn"] = False
            ledger.converted(f"{path}.auto_sync_bn", f"{target}.auto_sync_bn = False")
            if cfg.get("auto_sync_bn", True):  # MMagic's default is True
                ledger.note(
                    f"{path}.auto_sync_bn=True (set or by default): SyncBatchNorm across ranks is not supported; dsgan "
                    "keeps per-rank BatchNorm statistics (as the seed's BigGAN-128 does with auto_sync_bn=False)"
                )
    elif kind == "DCGANGenerator":
        _dcgan_generator(ctx, path, cfg, out, target)
    elif kind == "DCGANDiscriminator":
        _dcgan_discriminator(ctx, path, cfg, out)
    elif kind == "SNGANGenerator":
        _relu_only(ctx, f"{path}.act_cfg", cfg)
        sync = cfg.get("auto_sync_bn", True)
        ledger.converted(f"{path}.auto_sync_bn", "per-rank BatchNorm statistics (dsgan's only mode)")
        if sync:
            ledger.note(f"{path}.auto_sync_bn=True: SyncBatchNorm is not supported; dsgan keeps per-rank statistics")
    else:  # ProjDiscriminator
        _relu_only(ctx, f"{path}.act_cfg", cfg)
        if not cfg.get("with_spectral_norm", True):
            raise ctx.error(f"{path}.with_spectral_norm", "False is not supported: dsgan's SNGAN D always uses SN")
        if "with_spectral_norm" in cfg:
            ledger.converted(f"{path}.with_spectral_norm", "spectral norm (always on in dsgan's SNGANDiscriminator)")


def _activation(ctx: Ctx, path: str, act: Any, target: str) -> dict[str, Any]:
    if not isinstance(act, dict) or act.get("type") not in ("ReLU", "LeakyReLU"):
        raise ctx.error(path, f"not supported yet: activation {show(act)} (dsgan has ReLU and LeakyReLU)")
    out = {"type": act["type"], "inplace": act.get("inplace", False)}  # torch/mmcv default: not in place
    if act["type"] == "LeakyReLU":
        out["negative_slope"] = act.get("negative_slope", 0.01)  # torch's default
    ctx.ledger.converted(path, f"{target}.act = {out}")
    return out


def _init_type(ctx: Ctx, path: str, cfg: dict[str, Any], target: str) -> str:
    """mmgen 0.x: `init_type='ortho'`; MMagic: `init_cfg=dict(type='ortho')` (the seed's 1.x table uses init_type)."""
    if "init_type" in cfg:
        key, init = f"{path}.init_type", cfg["init_type"]
    elif "init_cfg" in cfg:
        key, init = f"{path}.init_cfg", (cfg["init_cfg"] or {}).get("type")
    else:
        key, init = f"{path}.init_type", "ortho"
    if init not in ("ortho", "N02", "xavier"):
        raise ctx.error(key, f"not supported yet: initialisation {init!r} (dsgan has ortho, N02, xavier)")
    if ctx.has(key):
        ctx.ledger.converted(key, f"{target}.init_type = {init!r}")
    else:
        ctx.ledger.defaults.append(f"{target}.init_type = 'ortho': the source's default (not set there)")
    return init


def _relu_only(ctx: Ctx, path: str, cfg: dict[str, Any]) -> None:
    act = cfg.get("act_cfg")
    if act is None:
        return
    if not isinstance(act, dict) or act.get("type") != "ReLU":
        raise ctx.error(path, f"not supported yet: {show(act)} (dsgan's SNGAN uses ReLU)")
    ctx.ledger.ignored(path, "ReLU, as in dsgan's SNGAN (in-place or not does not change the result)")


def _dcgan_generator(ctx: Ctx, path: str, cfg: dict[str, Any], out: dict[str, Any], target: str) -> None:
    """MMagic counts G's channels at the 4x4 input and halves them per upsampling; dsgan names the channels of the
    last hidden layer (doubling towards the input), so base_channels is divided by 2**(upsamplings - 1)."""
    if cfg.get("input_scale", 4) != 4:
        raise ctx.error(f"{path}.input_scale", "not supported yet: dsgan's DCGAN starts from 4x4")
    if "input_scale" in cfg:
        ctx.ledger.converted(f"{path}.input_scale", "the 4x4 input of dsgan's DCGANGenerator")
    mm_base = cfg.get("base_channels", 1024)
    ups = int(math.log2(out["output_scale"] // 4)) if isinstance(out["output_scale"], int) else 0
    factor = 2 ** max(ups - 1, 0)
    if mm_base % factor:
        raise ctx.error(f"{path}.base_channels", f"{mm_base} is not divisible by {factor}: no dsgan equivalent")
    out["base_channels"] = mm_base // factor
    ctx.ledger.converted(
        f"{path}.base_channels",
        f"{target}.base_channels = {mm_base // factor} (channels at 4x4 {mm_base} / 2**{max(ups - 1, 0)})",
    )


def _dcgan_discriminator(ctx: Ctx, path: str, cfg: dict[str, Any], out: dict[str, Any]) -> None:
    for key, want in (("output_scale", 4), ("out_channels", 1)):
        if cfg.get(key) != want:
            raise ctx.error(f"{path}.{key}", f"{cfg.get(key)!r}: not supported yet (dsgan's DCGAN D needs {want})")
        ctx.ledger.converted(f"{path}.{key}", f"dsgan's head: a linear layer on the 4x4 features to {want} logit")
    norm = cfg.get("default_norm_cfg", {"type": "BN"})
    if "default_norm_cfg" in cfg:
        ctx.ledger.unsupported(f"{path}.default_norm_cfg", "dsgan's DCGAN D has no normalisation layers")
    if norm:
        ctx.ledger.note(
            f"{path}: the source's DCGAN D has BatchNorm ({show(norm)}); dsgan's has none (real and fake batches are "
            "scored in separate forwards, so batch statistics would tell them apart)"
        )
    act = cfg.get("default_act_cfg", {"type": "LeakyReLU"})
    slope = act.get("negative_slope", 0.01) if isinstance(act, dict) else None  # mmcv's LeakyReLU: torch's 0.01
    if isinstance(act, dict) and act.get("type") == "LeakyReLU" and slope == 0.2:
        ctx.ledger.ignored(f"{path}.default_act_cfg", "LeakyReLU(0.2), as in dsgan's DCGAN D")
        return
    if "default_act_cfg" in cfg:
        ctx.ledger.unsupported(f"{path}.default_act_cfg", "dsgan's DCGAN D uses LeakyReLU(0.2)")
    ctx.ledger.note(f"{path}: the source's DCGAN D activation is {show(act)} (slope {slope}); dsgan's: LeakyReLU(0.2)")


# ----------------------------------------------------------------------------------------------------------------
# Loss

GAN_TYPES = {"hinge": "hinge", "vanilla": "vanilla", "wgan": "wgan", "wgan-logistic-ns": "vanilla"}
IMPLICIT_LOSS = {"BigGAN": "hinge", "SNGAN": "hinge", "SAGAN": "hinge", "DCGAN": "vanilla"}
"""MMagic 1.x models whose train step hard-codes the loss (BigGAN/SAGAN: hinge; DCGAN: BCE with logits)."""
_R1 = ("R1GradientPenalty", "R1GradientPenaltyComps")
_GP = ("GradientPenaltyLoss", "GradientPenaltyLossComps")


def convert_loss(ctx: Ctx, loss_root: str, model_type: str | None, d_scale: int) -> dict[str, Any]:
    """`loss_root` is `model` (0.x) or `model.loss_config` (1.x BaseGAN); 1.x BigGAN/SNGAN/DCGAN imply the loss."""
    ledger = ctx.ledger
    out: dict[str, Any] = {}
    if model_type in IMPLICIT_LOSS:
        out["type"] = IMPLICIT_LOSS[model_type]
        ledger.converted("model.type", f"loss.type = {out['type']!r} (MMagic's {model_type} hard-codes it)")
        if ctx.has("model.loss_config"):
            ledger.unsupported("model.loss_config", f"MMagic's {model_type} takes no loss_config")
        return out
    gan = ctx.get(f"{loss_root}.gan_loss")
    if not isinstance(gan, dict):
        raise ctx.error(f"{loss_root}.gan_loss", "missing: the GAN loss must be given")
    kind = gan.get("gan_type")
    if gan.get("type") != "GANLoss" or kind not in GAN_TYPES:
        raise ctx.error(
            f"{loss_root}.gan_loss",
            f"not supported yet: {show(gan)} (supported: GANLoss with gan_type {', '.join(GAN_TYPES)})",
        )
    for key, default in (("loss_weight", 1.0), ("real_label_val", 1.0), ("fake_label_val", 0.0)):
        if gan.get(key, default) != default:
            raise ctx.error(f"{loss_root}.gan_loss.{key}", f"not supported yet: {gan[key]!r} (dsgan uses {default})")
        if key in gan:
            ledger.converted(f"{loss_root}.gan_loss.{key}", f"{default} (dsgan's fixed value)")
    out["type"] = GAN_TYPES[kind]
    ledger.converted(f"{loss_root}.gan_loss.type", "loss.type")
    ledger.converted(f"{loss_root}.gan_loss.gan_type", f"loss.type = {out['type']!r}")
    if kind == "wgan-logistic-ns":
        ledger.note(
            f"{loss_root}.gan_loss.gan_type='wgan-logistic-ns' is softplus(-D(x)) + softplus(D(G(z))) for D and "
            "softplus(-D(G(z))) for G: the same functions as dsgan's 'vanilla' (non-saturating logistic)"
        )
    for key in ("disc_auxiliary_loss", "gen_auxiliary_loss"):
        if ctx.has(f"{loss_root}.{key}") and not ctx.get(f"{loss_root}.{key}"):
            ledger.ignored(f"{loss_root}.{key}", "none given")
    aux = ctx.get(f"{loss_root}.disc_auxiliary_loss")
    if aux:
        items = aux if isinstance(aux, (list, tuple)) else [aux]
        for i, item in enumerate(items):
            key = f"{loss_root}.disc_auxiliary_loss" + (f"[{i}]" if isinstance(aux, (list, tuple)) else "")
            _aux_loss(ctx, key, item, d_scale, out)
    if ctx.get(f"{loss_root}.gen_auxiliary_loss"):
        raise ctx.error(f"{loss_root}.gen_auxiliary_loss", "not supported yet (dsgan has no generator regulariser)")
    return out


def _aux_loss(ctx: Ctx, key: str, item: Any, d_scale: int, out: dict[str, Any]) -> None:
    """MMagic/mmgen penalties multiply `loss_weight` by the mean squared gradient norm on the iterations where
    `iteration % interval == 0`; dsgan applies gamma/2 * interval * E|grad|^2 every `r1_interval` D micro-steps
    (one per iteration, the same unit). norm_mode 'HWC' is E|grad|^2 over the whole image; 'pixel' (the default)
    sums over channels per pixel and averages over pixels, i.e. E|grad|^2 / (H*W)."""
    if not isinstance(item, dict) or item.get("type") not in (*_R1, *_GP):
        raise ctx.error(key, f"not supported yet: {show(item)} (supported: R1GradientPenalty, GradientPenaltyLoss)")
    ledger = ctx.ledger
    weight = float(item.get("loss_weight", 1.0))
    mode = item.get("norm_mode", "pixel")
    ledger.converted(f"{key}.type", "loss.r1_weight" if item["type"] in _R1 else "loss.gp_weight")
    if "data_info" in item:
        ledger.ignored(f"{key}.data_info", "wiring of MMagic's loss inputs; dsgan passes the real images and D")
    for extra in set(item) - {"type", "loss_weight", "norm_mode", "interval", "data_info", "loss_name"}:
        ledger.unsupported(f"{key}.{extra}", "no dsgan equivalent")
    if "loss_name" in item:
        ledger.ignored(f"{key}.loss_name", "a logging name")
    if item["type"] in _GP:
        if mode != "HWC":
            raise ctx.error(
                f"{key}.norm_mode",
                f"{mode!r}: not supported yet: this penalises the per-pixel channel norm; dsgan's gp_weight penalises "
                "the norm over the whole image (norm_mode='HWC')",
            )
        out["gp_weight"] = weight
        ledger.converted(f"{key}.loss_weight", f"loss.gp_weight = {weight}")
        ledger.converted(f"{key}.norm_mode", "the whole-image norm of dsgan's gradient penalty")
        return
    if mode not in ("HWC", "pixel"):
        raise ctx.error(f"{key}.norm_mode", f"{mode!r}: unknown (MMagic has 'pixel' and 'HWC')")
    interval = int(item.get("interval", 1))
    pixels = 1 if mode == "HWC" else d_scale * d_scale
    gamma = 2 * weight / (interval * pixels)
    out["r1_weight"] = float(f"{gamma:.12g}")
    out["r1_interval"] = interval
    ledger.converted(f"{key}.loss_weight", f"loss.r1_weight = {out['r1_weight']:g}")
    ledger.converted(f"{key}.interval", f"loss.r1_interval = {interval}")
    ledger.converted(f"{key}.norm_mode", f"the whole-image E|grad|^2 of dsgan's R1 ({mode!r} converted)")
    per_pixel = f" / (H*W = {pixels})" if pixels > 1 else ""
    ledger.note(
        f"{key}: R1 conventions: the source adds loss_weight * mean squared gradient norm "
        f"({'over the whole image' if mode == 'HWC' else 'per pixel, averaged over pixels'}) every {interval} "
        f"iteration(s); dsgan adds r1_weight/2 * r1_interval * E|grad|^2 every r1_interval D micro-steps, so "
        f"r1_weight = 2 * {weight:g} / {interval}{per_pixel} = {out['r1_weight']:g}"
    )
