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
from dsgan.schedule import Schedule

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
        "pretrained": None,
    },
)
_WGANGP_G = NetSpec(
    "WGANGPGenerator",
    {"noise_size": ("noise_size", _NO_DEFAULT), "out_scale": ("output_scale", _NO_DEFAULT)},
    {"upsample_cfg": None, "init_cfg": None},
    {"num_classes": 0, "out_channels": 3},
)
_WGANGP_D = NetSpec(
    "WGANGPDiscriminator", {"in_scale": ("input_scale", _NO_DEFAULT)}, {"init_cfg": None}, {"num_classes": 0}
)
_SG2_COMMON = {
    "channel_multiplier": ("channel_multiplier", 2),
    "blur_kernel": ("blur_kernel", [1, 3, 3, 1]),
    "num_fp16_scales": ("num_fp16_scales", 0),
}
_SG2_G = {
    "out_size": ("out_size", _NO_DEFAULT),
    "style_channels": ("style_channels", _NO_DEFAULT),
    "num_mlps": ("num_mlps", 8),
    "lr_mlp": ("lr_mlp", 0.01),
    "default_style_mode": ("default_style_mode", "mix"),
    "eval_style_mode": ("eval_style_mode", "single"),
    "mix_prob": ("mix_prob", 0.9),
    **_SG2_COMMON,
}
_SG2_FIXED = {"reduced_dtype": "float16", "conv_clamp": 256.0}
"""Partial precision as MMagic/mmgen run it: fp16 layers whose outputs are clamped to +-256 (their modules'
`conv_clamp` default, not a network argument)."""
_STYLEGAN2_G = NetSpec(
    "StyleGAN2Generator",
    {
        **_SG2_G,
        "out_channels": ("out_channels", 3),
        "noise_size": ("noise_size", None),
        "cond_size": ("num_classes", None),
        "norm_eps": ("norm_eps", 1e-6),
        "fixed_noise": ("fixed_noise", False),
    },
    {
        "w_avg_beta": 0.998,  # MMagic's trainer never updates w_avg; dsgan truncates towards each class's mean
        "cond_mapping_channels": None,
        "update_mean_latent_with_ema": False,
        "fp16_enabled": False,
        "bgr2rgb": False,
        "pretrained": None,
    },
    _SG2_FIXED,
)
_STYLEGAN2_G_0X = NetSpec(
    "StyleGAN2Generator",
    _SG2_G,
    {"fp16_enabled": False, "pretrained": None},
    # mmgen 0.x's generator is unconditional and RGB, its PixelNorm eps 1e-6, its noise always fresh.
    {**_SG2_FIXED, "out_channels": 3, "num_classes": 0, "norm_eps": 1e-6, "fixed_noise": False},
)
_SG2_D_EXTRA = {
    "fp16_enabled": False,
    "out_fp32": True,
    "convert_input_fp32": True,
    "input_bgr2rgb": False,
    "pretrained": None,
}
_STYLEGAN2_D = NetSpec(
    "StyleGAN2Discriminator",
    {
        "in_size": ("in_size", _NO_DEFAULT),
        "img_channels": ("img_channels", 3),
        "cond_size": ("num_classes", None),
        "cond_mapping_channels": ("cond_mapping_channels", None),
        "cond_mapping_layers": ("cond_mapping_layers", None),
        **_SG2_COMMON,
    },
    {**_SG2_D_EXTRA, "init_cfg": None},
    _SG2_FIXED,
)
_STYLEGAN2_D_0X = NetSpec(
    "StyleGAN2Discriminator",
    {"in_size": ("in_size", _NO_DEFAULT), **_SG2_COMMON},
    _SG2_D_EXTRA,
    {**_SG2_FIXED, "img_channels": 3, "num_classes": 0, "cond_mapping_channels": 512, "cond_mapping_layers": 8},
)
SPECS = {
    ("generator", "StyleGANv2Generator"): _STYLEGAN2_G,
    ("discriminator", "StyleGAN2Discriminator"): _STYLEGAN2_D,
    ("generator", "BigGANGenerator"): _BIGGAN_G,
    ("discriminator", "BigGANDiscriminator"): _BIGGAN_D,
    ("generator", "DCGANGenerator"): _DCGAN_G,
    ("discriminator", "DCGANDiscriminator"): _DCGAN_D,
    ("generator", "SNGANGenerator"): _SNGAN_G,
    ("discriminator", "ProjDiscriminator"): _SNGAN_D,
    ("discriminator", "SAGANDiscriminator"): _SNGAN_D,
    ("generator", "WGANGPGenerator"): _WGANGP_G,
    ("discriminator", "WGANGPDiscriminator"): _WGANGP_D,
}
SPECS_0X = {
    ("generator", "StyleGANv2Generator"): _STYLEGAN2_G_0X,
    ("discriminator", "StyleGAN2Discriminator"): _STYLEGAN2_D_0X,
}
"""mmgen 0.x networks whose fields differ from MMagic's of the same name (looked up first for 0.x configs)."""
STYLEGAN2_NETS = ("StyleGANv2Generator", "StyleGAN2Discriminator")


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
    spec = SPECS_0X.get((role, kind), SPECS[(role, kind)]) if ctx.version == "0.x" else SPECS[(role, kind)]
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
            if default is not None:  # None defaults are resolved (and reported) by _special
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
        out["init_type"] = _init_type(ctx, path, cfg, target, _BIGGAN_INITS, "ortho")
        if kind == "BigGANGenerator":
            out["auto_sync_bn"] = False
            ledger.converted(f"{path}.auto_sync_bn", f"{target}.auto_sync_bn = False")
            if cfg.get("auto_sync_bn", True):  # MMagic's default is True
                ledger.note(
                    f"{path}.auto_sync_bn=True (set or by default): SyncBatchNorm across ranks is not supported; dsgan "
                    "keeps per-rank BatchNorm statistics (as the seed's BigGAN-128 does with auto_sync_bn=False)"
                )
    elif kind in STYLEGAN2_NETS:
        _stylegan2(ctx, path, kind, cfg, out, target)
    elif kind == "DCGANGenerator":
        _dcgan_generator(ctx, path, cfg, out, target)
    elif kind == "DCGANDiscriminator":
        _dcgan_discriminator(ctx, path, cfg, out)
    elif kind in ("WGANGPGenerator", "WGANGPDiscriminator"):
        _wgangp(ctx, path, kind, cfg, out, target)
    elif kind == "SNGANGenerator":
        out["init_type"] = _init_type(ctx, path, cfg, target, _SNGAN_INITS, "BigGAN")
        _relu_only(ctx, f"{path}.act_cfg", cfg)
        sync = cfg.get("auto_sync_bn", True)
        ledger.converted(f"{path}.auto_sync_bn", "per-rank BatchNorm statistics (dsgan's only mode)")
        if sync:
            ledger.note(f"{path}.auto_sync_bn=True: SyncBatchNorm is not supported; dsgan keeps per-rank statistics")
    else:  # ProjDiscriminator
        out["init_type"] = _init_type(ctx, path, cfg, target, _SNGAN_INITS, "BigGAN")
        _relu_only(ctx, f"{path}.act_cfg", cfg)
        if not cfg.get("with_spectral_norm", True):
            raise ctx.error(f"{path}.with_spectral_norm", "False is not supported: dsgan's SNGAN D always uses SN")
        if "with_spectral_norm" in cfg:
            ledger.converted(f"{path}.with_spectral_norm", "spectral norm (always on in dsgan's SNGANDiscriminator)")


def _stylegan2(ctx: Ctx, path: str, kind: str, cfg: dict[str, Any], out: dict[str, Any], target: str) -> None:
    """MMagic's `None` defaults resolved as its modules resolve them, and the settings dsgan cannot express."""
    ledger = ctx.ledger
    if cfg.get("fp16_enabled"):
        raise ctx.error(
            f"{path}.fp16_enabled",
            "True (the whole network in fp16) is not supported yet: dsgan runs the top num_fp16_scales resolutions in "
            "reduced precision inside an fp32 engine",
        )
    if out.get("num_classes") is None:
        out["num_classes"] = 0
        ledger.defaults.append(f"{target}.num_classes = 0: {kind}'s cond_size=None (unconditional)")
    if kind == "StyleGANv2Generator":
        if out.get("noise_size") is None:
            out["noise_size"] = out["style_channels"]
            ledger.defaults.append(f"{target}.noise_size = style_channels = {out['noise_size']}: {kind}'s rule")
        return
    # None: StyleGAN2Discriminator maps a condition with 512 channels and 8 layers (unused when unconditional)
    for name, default in (("cond_mapping_channels", 512), ("cond_mapping_layers", 8)):
        if out.get(name) is None:
            out[name] = default
    mbstd = cfg.get("mbstd_cfg", {"group_size": 4, "channel_groups": 1})
    if not isinstance(mbstd, dict) or set(mbstd) - {"group_size", "channel_groups"}:
        raise ctx.error(f"{path}.mbstd_cfg", f"not supported yet: {show(mbstd)} (group_size, channel_groups)")
    # a given dict replaces the default; ModMBStddevLayer's own defaults fill what it leaves out
    out["mbstd_cfg"] = {"group_size": mbstd.get("group_size", 4), "channel_groups": mbstd.get("channel_groups", 1)}
    if "mbstd_cfg" in cfg:
        ledger.converted(f"{path}.mbstd_cfg", f"{target}.mbstd_cfg = {out['mbstd_cfg']}")
    else:
        ledger.defaults.append(f"{target}.mbstd_cfg = {out['mbstd_cfg']}: {kind}'s default (not set there)")


_WGANGP_CONV: dict[str, dict[str, Any]] = {
    "WGANGPGenerator": {
        "conv_cfg": None,
        "kernel_size": 3,
        "stride": 1,
        "padding": 1,
        "bias": True,
        "act_cfg": {"type": "ReLU"},
        "norm_cfg": {"type": "BN"},
        "order": ("conv", "norm", "act"),
    },
    "WGANGPDiscriminator": {
        "conv_cfg": None,
        "kernel_size": 3,
        "stride": 1,
        "padding": 1,
        "bias": True,
        "act_cfg": {"type": "LeakyReLU", "negative_slope": 0.2},
        "norm_cfg": {"type": "LN2d"},
        "order": ("conv", "norm", "act"),
    },
}
"""MMagic's `_default_conv_module_cfg`s, which a config's `conv_module_cfg` updates key by key."""


def _wgangp(ctx: Ctx, path: str, kind: str, cfg: dict[str, Any], out: dict[str, Any], target: str) -> None:
    """`conv_module_cfg` may only choose D's norm (LN2d or GN, as the upstream configs do); `in_channel` is read by
    MMagic's D but never used (its from-RGB conv takes 3 channels)."""
    ledger, key = ctx.ledger, f"{path}.conv_module_cfg"
    given = cfg.get("conv_module_cfg") or {}
    conv = {**_WGANGP_CONV[kind], **given}
    for name, value in conv.items():
        default = _WGANGP_CONV[kind].get(name, _NO_DEFAULT)
        allowed = name == "norm_cfg" and kind == "WGANGPDiscriminator" and value in ({"type": "LN2d"}, {"type": "GN"})
        if value != default and not (isinstance(value, list) and tuple(value) == default) and not allowed:
            raise ctx.error(f"{key}.{name}", f"{show(value)}: not supported (dsgan's {kind} has {show(default)})")
        if name in given:
            ledger.converted(f"{key}.{name}", f"{target} as MMagic builds it ({show(value)})")
    if kind == "WGANGPDiscriminator":
        out["norm"] = conv["norm_cfg"]["type"]
        if "in_channel" in cfg:
            ledger.ignored(
                f"{path}.in_channel", "MMagic's WGANGPDiscriminator ignores it: its from_rgb takes 3 channels"
            )


def _activation(ctx: Ctx, path: str, act: Any, target: str) -> dict[str, Any]:
    if not isinstance(act, dict) or act.get("type") not in ("ReLU", "LeakyReLU"):
        raise ctx.error(path, f"not supported yet: activation {show(act)} (dsgan has ReLU and LeakyReLU)")
    out = {"type": act["type"], "inplace": act.get("inplace", False)}  # torch/mmcv default: not in place
    if act["type"] == "LeakyReLU":
        out["negative_slope"] = act.get("negative_slope", 0.01)  # torch's default
    ctx.ledger.converted(path, f"{target}.act = {out}")
    return out


_BIGGAN_INITS = {"ortho": "ortho", "N02": "N02", "xavier": "xavier"}
_SNGAN_INITS = {"STUDIO": "studio", "BIGGAN": "BigGAN", "SNGAN": "sngan", "SNGAN-PROJ": "sngan", "GAN-PROJ": "sngan"}
"""MMagic's SNGAN compares `init_cfg['type'].upper()` with these; its SAGAN initialisation has no dsgan equivalent."""


def _init_type(ctx: Ctx, path: str, cfg: dict[str, Any], target: str, names: dict[str, str], default: str) -> str:
    """mmgen 0.x BigGAN: `init_type='ortho'`; MMagic: `init_cfg=dict(type='ortho')` (the seed's 1.x table uses
    init_type). `names` maps the source's names to dsgan's (upper-case keys: compared case-insensitively, as MMagic's
    SNGAN does); `default` is the source's name when neither is set."""
    if "init_type" in cfg:
        key, init = f"{path}.init_type", cfg["init_type"]
    elif "init_cfg" in cfg:
        key, init = f"{path}.init_cfg", (cfg["init_cfg"] or {}).get("type")
    else:
        key, init = f"{path}.init_type", default
    folded = init.upper() if isinstance(init, str) and all(k.isupper() for k in names) else init
    if folded not in names:
        raise ctx.error(key, f"not supported yet: initialisation {init!r} (dsgan has {', '.join(names)})")
    if ctx.has(key):
        ctx.ledger.converted(key, f"{target}.init_type = {names[folded]!r}")
    else:
        ctx.ledger.defaults.append(f"{target}.init_type = {names[folded]!r}: the source's default (not set there)")
    return names[folded]


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
        raise ctx.error(
            f"{path}.base_channels",
            f"{mm_base}: not supported (not divisible by {factor}: dsgan's DCGAN G halves its channels per upsampling)",
        )
    out["base_channels"] = mm_base // factor
    ctx.ledger.converted(
        f"{path}.base_channels",
        f"{target}.base_channels = {mm_base // factor} (channels at 4x4 {mm_base} / 2**{max(ups - 1, 0)})",
    )


def _dcgan_discriminator(ctx: Ctx, path: str, cfg: dict[str, Any], out: dict[str, Any]) -> None:
    for key, want in (("output_scale", 4), ("out_channels", 1)):
        if cfg.get(key) != want:
            raise ctx.error(
                f"{path}.{key}",
                f"{cfg.get(key)!r}: not supported yet: a DCGAN D head with this {key} (dsgan's DCGAN D ends in "
                "one logit from the 4x4 features: output_scale=4, out_channels=1)",
            )
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

GAN_TYPES = {"hinge": "hinge", "vanilla": "vanilla", "wgan": "wgan", "wgan-logistic-ns": "vanilla", "lsgan": "lsgan"}
IMPLICIT_LOSS = {
    "BigGAN": "hinge",
    "SNGAN": "hinge",
    "SAGAN": "hinge",
    "DCGAN": "vanilla",
    "LSGAN": "lsgan",
    "GGAN": "hinge",
    "WGANGP": "wgan",
}
"""MMagic 1.x models whose train step hard-codes the loss (BigGAN/SAGAN/GGAN: hinge; DCGAN: BCE with logits;
LSGAN: MSE to 1 for reals and 0 for fakes; WGANGP: WGAN plus its gradient penalty)."""
_R1 = ("R1GradientPenalty", "R1GradientPenaltyComps")
_GP = ("GradientPenaltyLoss", "GradientPenaltyLossComps")


def convert_loss(ctx: Ctx, loss_root: str, model_type: str | None, d_scale: int, schedule: Schedule) -> dict[str, Any]:
    """`loss_root` is `model` (0.x) or `model.loss_config` (1.x BaseGAN); 1.x BigGAN/SNGAN/DCGAN imply the loss,
    1.x StyleGAN2 implies it and reads its penalties from `loss_config`."""
    ledger = ctx.ledger
    out: dict[str, Any] = {}
    if model_type == "StyleGAN2":
        return _stylegan2_loss(ctx, d_scale, schedule)
    if model_type == "WGANGP":
        return _wgangp_loss(ctx)
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
            _aux_loss(ctx, key, item, d_scale, out, schedule)
    gen_aux = ctx.get(f"{loss_root}.gen_auxiliary_loss")
    if gen_aux:
        items = gen_aux if isinstance(gen_aux, (list, tuple)) else [gen_aux]
        if len(items) > 1:
            raise ctx.error(f"{loss_root}.gen_auxiliary_loss", "more than one generator regulariser: not supported")
        key = f"{loss_root}.gen_auxiliary_loss" + ("[0]" if isinstance(gen_aux, (list, tuple)) else "")
        _path_regularizer_0x(ctx, key, items[0], out, schedule)
    return out


def _wgangp_loss(ctx: Ctx) -> dict[str, Any]:
    """MMagic's WGANGP hard-codes the WGAN loss and adds `loss_weight` (10) times the gradient penalty on
    interpolates, normed over the whole image (`norm_mode` 'HWC')."""
    ledger, root = ctx.ledger, "model.loss_config"
    ledger.converted("model.type", "loss.type = 'wgan' (MMagic's WGANGP hard-codes it)")
    mode = ctx.get(f"{root}.norm_mode", "HWC")
    if mode != "HWC":
        raise ctx.error(
            f"{root}.norm_mode", f"{mode!r}: not supported (dsgan's gp_weight norms the whole image, 'HWC')"
        )
    weight = float(ctx.get(f"{root}.loss_weight", 10))
    for name, became in (
        ("norm_mode", "the whole-image norm of dsgan's gradient penalty"),
        ("loss_weight", f"loss.gp_weight = {weight:g}"),
    ):
        if ctx.has(f"{root}.{name}"):
            ledger.converted(f"{root}.{name}", became)
    # MMagic's own configs write gp_loss_weight / gp_norm_mode, which its WGANGP never reads
    for name, read in (("gp_loss_weight", "loss_weight"), ("gp_norm_mode", "norm_mode")):
        if not ctx.has(f"{root}.{name}"):
            continue
        value = ctx.get(f"{root}.{name}")
        used = weight if read == "loss_weight" else mode
        ledger.ignored(f"{root}.{name}", f"never read by MMagic's WGANGP (it reads loss_config.{read}: {used!r})")
        if value != used:
            ledger.note(
                f"{root}.{name}={value!r} has no effect in MMagic (its WGANGP reads loss_config.{read}), which "
                f"trains with {used!r}; the conversion does the same (--set loss.gp_weight=... for another weight)"
            )
    return {"type": "wgan", "gp_weight": weight}


def _path_regularizer_0x(ctx: Ctx, key: str, item: Any, out: dict[str, Any], schedule: Schedule) -> None:
    """mmgen 0.x `GeneratorPathRegularizer`: loss_weight (1.) * the penalty on iterations where
    `iteration % interval == 0`, on micro-batch // pl_batch_shrink (1) images, running mean decay 0.01."""
    if not isinstance(item, dict) or item.get("type") != "GeneratorPathRegularizer":
        raise ctx.error(key, f"not supported yet: {show(item)} (supported: GeneratorPathRegularizer)")
    if item.get("pl_batch_size") is not None:
        raise ctx.error(f"{key}.pl_batch_size", "not supported yet: a fixed batch (dsgan shrinks the micro-batch)")
    if item.get("use_apex_amp"):
        raise ctx.error(f"{key}.use_apex_amp", "not supported yet: apex AMP's loss scale inside the penalty")
    ledger = ctx.ledger
    ledger.converted(f"{key}.type", "loss.pl_weight")
    for name, reason in (
        ("data_info", "wiring of mmgen's loss inputs; dsgan passes G and the batch size"),
        ("loss_name", "a logging name"),
        ("use_apex_amp", "False: no apex loss scale"),
        ("pl_batch_size", "None: the batch is the micro-batch // pl_batch_shrink"),
    ):
        if name in item:
            ledger.ignored(f"{key}.{name}", reason)
    known = {"type", "loss_weight", "pl_batch_shrink", "decay", "pl_batch_size", "sync_mean_buffer", "interval"}
    for extra in set(item) - known - {"data_info", "loss_name", "use_apex_amp"}:
        ledger.unsupported(f"{key}.{extra}", "no dsgan equivalent")
    _path_length(
        ctx,
        {name: f"{key}.{name}" for name in ("loss_weight", "interval", "pl_batch_shrink", "decay")},
        float(item.get("loss_weight", 1.0)),
        int(item.get("interval", 1)),
        int(item.get("pl_batch_shrink", 1)),
        float(item.get("decay", 0.01)),
        schedule,
        out,
    )
    if item.get("sync_mean_buffer", False):
        ledger.converted(f"{key}.sync_mean_buffer", "the running mean averaged over ranks, as dsgan's")
    else:
        if "sync_mean_buffer" in item:
            ledger.converted(f"{key}.sync_mean_buffer", "see the note on the running mean")
        _pl_mean_note(ctx)


def _pl_mean_note(ctx: Ctx) -> None:
    ctx.ledger.note(
        "Path-length running mean: the source keeps one per rank (not synchronised, as NVlabs'); dsgan averages "
        "the new batch's mean over ranks, so every rank uses one value. The same in expectation; on one GPU identical."
    )


# MMagic's StyleGAN2.__init__ reads these loss_config keys with these defaults (mmagic/models/editors/stylegan2/
# stylegan2.py); it hard-codes the non-saturating logistic loss and the path-length decay 0.01.
_SG2_LOSS_DEFAULTS: dict[str, Any] = {
    "r1_loss_weight": 80.0,
    "r1_interval": 16,
    "norm_mode": "pixel",
    "r1_use_apex_amp": False,
    "scale_r1_loss": False,
    "g_reg_interval": 4,
    "g_reg_weight": 8.0,
    "pl_batch_shrink": 2,
    "g_reg_use_apex_amp": False,
}


def _stylegan2_loss(ctx: Ctx, d_scale: int, schedule: Schedule) -> dict[str, Any]:
    root = "model.loss_config"
    ledger = ctx.ledger
    cfg = ctx.get(root) or {}
    if not isinstance(cfg, dict):
        raise ctx.error(root, f"{show(cfg)}: expected a dict")
    for key in set(cfg) - set(_SG2_LOSS_DEFAULTS):
        ledger.unsupported(f"{root}.{key}", "MMagic's StyleGAN2 does not read this key")

    def value(key: str) -> Any:
        return cfg.get(key, _SG2_LOSS_DEFAULTS[key])

    for key in ("r1_use_apex_amp", "g_reg_use_apex_amp"):
        if value(key):
            raise ctx.error(f"{root}.{key}", "not supported yet: apex AMP's loss scale inside the penalty")
        if key in cfg:
            ledger.ignored(f"{root}.{key}", "False: the penalty is computed without apex's loss scale")
    if "scale_r1_loss" in cfg:
        ledger.ignored(
            f"{root}.scale_r1_loss",
            "MMagic's StyleGAN2 stores it but no code reads it (its R1 gets no loss scaler): no effect in the source",
        )
    out: dict[str, Any] = {"type": "vanilla"}
    ledger.converted(
        "model.type",
        "StyleGAN2: loss.type = 'vanilla' (MMagic hard-codes softplus(-D(x)) + softplus(D(G(z))) for D and "
        "softplus(-D(G(z))) for G, the non-saturating logistic loss); dsgan's D/G alternation (see schedule)",
    )
    for key in _SG2_LOSS_DEFAULTS:
        if key not in cfg and key not in ("r1_use_apex_amp", "g_reg_use_apex_amp", "scale_r1_loss"):
            ledger.defaults.append(f"{root}.{key} = {_SG2_LOSS_DEFAULTS[key]!r}: MMagic's StyleGAN2 default (not set)")
    _r1(
        ctx,
        {"loss_weight": f"{root}.r1_loss_weight", "interval": f"{root}.r1_interval", "norm_mode": f"{root}.norm_mode"},
        float(value("r1_loss_weight")),
        int(value("r1_interval")),
        value("norm_mode"),
        d_scale,
        out,
        schedule,
    )
    _path_length(
        ctx,
        {
            "loss_weight": f"{root}.g_reg_weight",
            "interval": f"{root}.g_reg_interval",
            "pl_batch_shrink": f"{root}.pl_batch_shrink",
        },
        float(value("g_reg_weight")),
        int(value("g_reg_interval")),
        int(value("pl_batch_shrink")),
        0.01,
        schedule,
        out,
    )
    _pl_mean_note(ctx)
    return out


def _path_length(
    ctx: Ctx,
    keys: dict[str, str],
    weight: float,
    interval: int,
    shrink: int,
    decay: float,
    schedule: Schedule,
    out: dict[str, Any],
) -> None:
    """Both versions add `weight` * penalty (unscaled) on the iterations where `iteration % interval == 0`, and G
    trains on the iterations that end a cycle; dsgan adds pl_weight * pl_interval * penalty on every pl_interval-th
    G update, so pl_weight = weight / interval (NVlabs' pl_weight; MMagic's g_reg_weight = pl_weight * interval)."""
    ledger = ctx.ledger
    if interval < 1 or shrink < 1:
        raise ctx.error(keys["interval"], f"interval {interval}, batch shrink {shrink}: expected positive integers")
    cycle = schedule.cycle_iters
    pl_weight = float(f"{weight / interval:.12g}")
    if cycle > 1 and math.gcd(cycle, interval) > 1:
        # G phases end at iterations k * cycle - 1, never a multiple of the interval: the source never applies it
        ledger.note(
            f"Path-length penalty: G trains at iterations k * {cycle} - 1 (the last of each cycle) and the source "
            f"adds the penalty when iteration % {interval} == 0, which never happens: it is off in the source, so "
            "loss.pl_weight = 0 in the conversion"
        )
        pl_weight = 0.0
    elif cycle > 1 or schedule.generator_steps > 1:
        ledger.note(
            "Path-length penalty timing: the source adds it to every G micro-batch of one G phase "
            f"({schedule.generator_steps} update(s)) in {interval}; dsgan to every micro-batch of every "
            f"{interval}-th G update: the same share of G updates, so the same average strength, in a different "
            "pattern"
        )
    out.update(pl_weight=pl_weight, pl_interval=interval, pl_batch_shrink=shrink, pl_decay=decay)
    for name, became in (
        ("loss_weight", f"loss.pl_weight = {weight:g} / {interval} = {pl_weight:g}"),
        ("interval", f"loss.pl_interval = {interval} (G updates)"),
        ("pl_batch_shrink", f"loss.pl_batch_shrink = {shrink}"),
        ("decay", f"loss.pl_decay = {decay:g}"),
    ):
        if name in keys and ctx.has(keys[name]):
            ledger.converted(keys[name], became)
    ledger.note(
        f"Path-length conventions: the source adds {weight:g} * E(|J^T y| - a)^2 every {interval} iteration(s); "
        f"dsgan adds pl_weight * pl_interval * the same every pl_interval-th G update, so pl_weight = "
        f"{weight:g} / {interval} = {pl_weight:g} (NVlabs' pl_weight). The penalty's batch is micro-batch // {shrink}."
    )


def _aux_loss(ctx: Ctx, key: str, item: Any, d_scale: int, out: dict[str, Any], schedule: Schedule) -> None:
    """mmgen's penalty modules (R1, WGAN-GP) given as `disc_auxiliary_loss`."""
    if not isinstance(item, dict) or item.get("type") not in (*_R1, *_GP):
        raise ctx.error(key, f"not supported yet: {show(item)} (supported: R1GradientPenalty, GradientPenaltyLoss)")
    ledger = ctx.ledger
    weight = float(item.get("loss_weight", 1.0))
    mode = item.get("norm_mode", "pixel")
    ledger.converted(f"{key}.type", "loss.r1_weight" if item["type"] in _R1 else "loss.gp_weight")
    if "data_info" in item:
        ledger.ignored(f"{key}.data_info", "wiring of MMagic's loss inputs; dsgan passes the real images and D")
    if isinstance(item.get("data_info"), dict) and "loss_scaler" in item["data_info"]:
        ledger.ignored(
            f"{key}.data_info.loss_scaler",
            "the source scales D's output by the GradScaler before the gradient and unscales the gradient: the same "
            "penalty, protected from fp16 underflow; dsgan computes it unscaled in fp32",
        )
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
    keys = {name: f"{key}.{name}" for name in ("loss_weight", "interval", "norm_mode")}
    _r1(ctx, keys, weight, int(item.get("interval", 1)), mode, d_scale, out, schedule)


def _r1(
    ctx: Ctx,
    keys: dict[str, str],
    weight: float,
    interval: int,
    mode: Any,
    d_scale: int,
    out: dict[str, Any],
    schedule: Schedule,
) -> None:
    """MMagic/mmgen multiply `weight` by the mean squared gradient norm on the iterations (D micro-batches) where
    `iteration % interval == 0`; dsgan adds gamma/2 * r1_interval * E|grad|^2 to every micro-batch of every
    r1_interval-th D update. norm_mode 'HWC' is E|grad|^2 over the whole image; 'pixel' (the default) sums over
    channels per pixel and averages over pixels, i.e. E|grad|^2 / (H*W)."""
    ledger = ctx.ledger
    if mode not in ("HWC", "pixel"):
        raise ctx.error(keys["norm_mode"], f"{mode!r}: unknown (MMagic has 'pixel' and 'HWC')")
    if interval < 1:
        raise ctx.error(keys["interval"], f"{interval}: expected a positive integer")
    pixels = 1 if mode == "HWC" else d_scale * d_scale
    gamma = 2 * weight / (interval * pixels)
    out["r1_weight"] = float(f"{gamma:.12g}")
    out["r1_interval"] = interval
    for name, became in (
        ("loss_weight", f"loss.r1_weight = {out['r1_weight']:g}"),
        ("interval", f"loss.r1_interval = {interval}"),
        ("norm_mode", f"the whole-image E|grad|^2 of dsgan's R1 ({mode!r} converted)"),
    ):
        if ctx.has(keys[name]):
            ledger.converted(keys[name], became)
    per_pixel = f" / (H*W = {pixels})" if pixels > 1 else ""
    ledger.note(
        f"{keys['loss_weight']}: R1 conventions: the source adds loss_weight * mean squared gradient norm "
        f"({'over the whole image' if mode == 'HWC' else 'per pixel, averaged over pixels'}) every {interval} "
        f"iteration(s); dsgan adds r1_weight/2 * r1_interval * E|grad|^2 to every micro-batch of every "
        f"r1_interval-th D update, so r1_weight = 2 * {weight:g} / {interval}{per_pixel} = {out['r1_weight']:g}"
    )
    if schedule.d_accumulation > 1:
        ledger.note(
            f"R1 timing under accumulation: the source penalises one micro-batch every {interval} iterations, dsgan "
            f"all {schedule.d_accumulation} micro-batches of every {interval}-th D update: the same share of "
            f"micro-batches (1 in {interval}), so the same average strength, in a different pattern"
        )
