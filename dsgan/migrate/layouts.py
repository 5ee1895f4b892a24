"""Where each dsgan tensor lives in MMagic 1.x / MMGeneration 0.x and BigGAN-PyTorch state dicts.

A layout is built from the dsgan module itself (its blocks, which layers carry spectral norm, where attention sits),
so the same list converts a checkpoint into dsgan's names (`Entry.to_dsgan`) and a dsgan model into the source's
(`Entry.to_source`, which also gives the shape each source tensor must have). Names follow the modules as published:
MMagic `mmagic/models/editors/{biggan,sagan,dcgan}` (MMGeneration 0.x's `mmgen/models/architectures` uses the same
names), BigGAN-PyTorch `BigGAN.py` / `layers.py`. StyleGAN2 needs no renaming: dsgan's modules have MMagic's names.

Spectral norm comes in two styles: BigGAN-PyTorch's (`u0` [1, out] and the logged `sv0`, MMagic's `sn_style='ajbrock'`)
and torch's `spectral_norm` (`weight_orig`, `weight_u` [out], `weight_v` [in]). dsgan keeps `u` only and derives v
and sigma from it at each forward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from dsgan.errors import ConfigError
from dsgan.models.biggan import BigGANDiscriminator, BigGANGenerator
from dsgan.models.dcgan import DCGANDiscriminator, DCGANGenerator
from dsgan.models.layers import BatchNorm, SelfAttention
from dsgan.models.sngan import SNGANDiscriminator, SNGANGenerator
from dsgan.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator

Tensor = torch.Tensor
Transform = Callable[[Tensor], Tensor]
SNStyle = Literal["ajbrock", "torch"] | None
"""The source's spectral norm: BigGAN-PyTorch's buffers, torch's parametrisation, or none."""
Format = Literal["mmagic", "biggan-pytorch"]


def _same(t: Tensor) -> Tensor:
    return t


@dataclass(frozen=True)
class Entry:
    source: str | None
    """The source's name (None: a dsgan tensor with no source counterpart, filled with zeros)."""
    dsgan: str | None
    """dsgan's name (None: a source tensor dsgan does not keep)."""
    why: str = ""
    """For a dropped or filled tensor: the reason."""
    to_dsgan: Transform = _same
    to_source: Transform = _same
    make: Callable[[dict[str, Tensor]], Tensor] | None = None
    """For a dropped tensor: the value the source holds, from dsgan's state dict (the inverse map)."""


class Layout:
    """The entries of one network, built by walking its dsgan module."""

    def __init__(self, sn: SNStyle) -> None:
        self.sn = sn
        self.entries: list[Entry] = []

    def same(self, dsgan: str, source: str, to_dsgan: Transform = _same, to_source: Transform = _same) -> None:
        self.entries.append(Entry(source, dsgan, to_dsgan=to_dsgan, to_source=to_source))

    def drop(self, source: str, why: str, make: Callable[[dict[str, Tensor]], Tensor]) -> None:
        self.entries.append(Entry(source, None, why, make=make))

    def fill(self, dsgan: str, why: str) -> None:
        self.entries.append(Entry(None, dsgan, why))

    def layer(self, d: str, s: str, module: Any) -> None:
        """A Conv2d / Linear / Embedding, spectrally normalised when dsgan's has an `sn` (then so must the source's)."""
        sn = getattr(module, "sn", None)
        torch_sn = sn is not None and self.sn == "torch"
        self.same(f"{d}.weight", f"{s}.weight_orig" if torch_sn else f"{s}.weight")
        if getattr(module, "bias", None) is not None:
            self.same(f"{d}.bias", f"{s}.bias")
        if sn is None:
            return
        if self.sn == "ajbrock":
            self.same(f"{d}.sn.u", f"{s}.u0", lambda t: t.reshape(-1), lambda t: t.reshape(1, -1))
            self.drop(f"{s}.sv0", "the source's logged sigma estimate; dsgan computes sigma from u", _ones)
        elif self.sn == "torch":
            self.same(f"{d}.sn.u", f"{s}.weight_u")
            self.drop(f"{s}.weight_v", "torch's cached v; dsgan derives v from u and the weight", _right_vector(d))
        else:
            raise ConfigError(
                f"{d}: dsgan's layer is spectrally normalised but the checkpoint's network has no spectral-norm "
                "vectors: set with_spectral_norm as the checkpoint's model had it"
            )

    def batch_norm(self, d: str, s: str, bn: Any, style: Format) -> None:
        """Statistics (and affine parameters) of a BatchNorm; MMagic nests torch's BatchNorm2d as `bn`,
        BigGAN-PyTorch keeps `stored_mean` / `stored_var` and names the affine pair `gain` / `bias`."""
        if style == "mmagic":
            self.same(f"{d}.running_mean", f"{s}.running_mean")
            self.same(f"{d}.running_var", f"{s}.running_var")
            self.drop(f"{s}.num_batches_tracked", "BatchNorm's step counter (unused with a momentum)", _zero_long)
            if bn.weight is not None:
                self.same(f"{d}.weight", f"{s}.weight")
                self.same(f"{d}.bias", f"{s}.bias")
        else:
            self.same(f"{d}.running_mean", f"{s}.stored_mean")
            self.same(f"{d}.running_var", f"{s}.stored_var")
            if bn.weight is not None:
                self.same(f"{d}.weight", f"{s}.gain")
                self.same(f"{d}.bias", f"{s}.bias")

    def attention(self, d: str, s: str, attn: SelfAttention, conv: str) -> None:
        for name in ("theta", "phi", "g", "o"):
            self.layer(f"{d}.{name}", f"{s}.{name}{conv}", getattr(attn, name))
        # dsgan's gate has shape [1] (DeepSpeed's bf16 broadcast cannot view a 0-dim tensor), the sources' [].
        self.same(f"{d}.gamma", f"{s}.gamma", lambda t: t.reshape(1), lambda t: t.reshape(()))


def _ones(_: dict[str, Tensor]) -> Tensor:
    return torch.ones(1)


def _zero_long(_: dict[str, Tensor]) -> Tensor:
    return torch.tensor(0)


def _right_vector(d: str) -> Callable[[dict[str, Tensor]], Tensor]:
    def make(sd: dict[str, Tensor]) -> Tensor:
        return F.normalize(sd[f"{d}.weight"].flatten(1).t() @ sd[f"{d}.sn.u"], dim=0, eps=1e-12)

    return make


def source_sn_style(keys: Iterable[str]) -> SNStyle:
    """Which spectral norm a source network's state dict carries."""
    if any(k.endswith(".u0") for k in keys):
        return "ajbrock"
    if any(k.endswith(".weight_orig") for k in keys):
        return "torch"
    return None


# ----------------------------------------------------------------------------------------------------------------
# BigGAN


def _biggan_g(g: BigGANGenerator, style: Format, sn: SNStyle) -> Layout:
    L = Layout(sn)
    if style == "mmagic":
        L.layer("fc", "noise2feat", g.fc)
        if g.shared is not None:
            L.same("shared.weight", "shared_embedding.weight")
    else:
        L.layer("fc", "linear", g.fc)
        if g.shared is not None:
            L.same("shared.weight", "shared.weight")
    for d, s, block in _biggan_blocks(L, g, style):
        for bn_name in ("bn1", "bn2"):
            bn = getattr(block, bn_name)
            _conditional_maps(L, f"{d}.{bn_name}", f"{s}.{bn_name}", bn, "gain", "bias")
            L.batch_norm(f"{d}.{bn_name}", f"{s}.{bn_name}" + (".bn" if style == "mmagic" else ""), bn, style)
    if style == "mmagic":
        L.batch_norm("out_bn", "output_layer.bn", g.out_bn, style)
        L.layer("out_conv", "output_layer.conv", g.out_conv)
    else:
        L.batch_norm("out_bn", "output_layer.0", g.out_bn, style)
        L.layer("out_conv", "output_layer.2", g.out_conv)
    return L


def _biggan_blocks(
    L: Layout, net: BigGANGenerator | BigGANDiscriminator, style: Format
) -> Iterator[tuple[str, str, Any]]:
    """Each residual block's dsgan prefix, source prefix and module, for the caller to add its BatchNorms; then its
    convs, and the attention block where it follows. MMagic interleaves attention with the residual blocks in one
    list (`conv_blocks`); BigGAN-PyTorch nests it as the block's second module."""
    conv = ".conv" if style == "mmagic" else ""
    index = 0
    for i, block in enumerate(net.blocks):
        d, s = f"blocks.{i}", f"conv_blocks.{index}" if style == "mmagic" else f"blocks.{i}.0"
        yield d, s, block
        L.layer(f"{d}.conv1", f"{s}.conv1{conv}", block.conv1)
        L.layer(f"{d}.conv2", f"{s}.conv2{conv}", block.conv2)
        if block.shortcut is not None:
            L.layer(f"{d}.shortcut", f"{s}.shortcut{conv}" if style == "mmagic" else f"{s}.conv_sc", block.shortcut)
        index += 1
        if i == net.attention_after and net.attention is not None:
            L.attention(
                "attention", f"conv_blocks.{index}" if style == "mmagic" else f"blocks.{i}.1", net.attention, conv
            )
            index += 1


def _conditional_maps(L: Layout, d: str, s: str, bn: Any, gain: str, shift: str) -> None:
    if bn.gain is not None and bn.shift is not None:
        L.layer(f"{d}.gain", f"{s}.{gain}", bn.gain)
        L.layer(f"{d}.shift", f"{s}.{shift}", bn.shift)


def _biggan_d(d: BigGANDiscriminator, style: Format, sn: SNStyle) -> Layout:
    L = Layout(sn)
    for _ in _biggan_blocks(L, d, style):  # D's blocks have no BatchNorm: the walk adds their convs and attention
        pass
    L.layer("fc", "decision" if style == "mmagic" else "linear", d.fc)
    if d.embed is not None:
        L.layer("embed", "proj_y" if style == "mmagic" else "embed", d.embed)
    return L


# ----------------------------------------------------------------------------------------------------------------
# DCGAN (MMagic's is unconditional, without spectral norm)


def _dcgan_g(g: DCGANGenerator) -> Layout:
    if g.embed is not None:
        raise ConfigError("MMagic's DCGAN is unconditional: set generator.model.num_classes=0 for its weights")
    L = Layout(None)
    channels = g.fc.out_features // 16
    # MMagic maps z to 4x4 with a transposed conv on a 1x1 input ([noise, C, 4, 4]); dsgan with a linear layer to
    # C*16 features viewed as [C, 4, 4]: the same map, its weight laid out [C*16, noise].
    L.same(
        "fc.weight",
        "noise2feat.conv.weight",
        lambda t: t.permute(1, 2, 3, 0).reshape(-1, t.shape[0]),
        lambda t: t.reshape(channels, 4, 4, -1).permute(3, 0, 1, 2),
    )
    L.fill("fc.bias", "MMagic's layer has no bias (BatchNorm follows it)")
    L.batch_norm("bn0", "noise2feat.bn", g.bn0, "mmagic")
    for i, bn in enumerate(g.bns):
        L.same(f"ups.{i}.weight", f"upsampling.{i}.conv.weight")
        L.fill(f"ups.{i}.bias", "MMagic's layer has no bias (BatchNorm follows it)")
        L.batch_norm(f"bns.{i}", f"upsampling.{i}.bn", bn, "mmagic")
    L.same("out.weight", "output_layer.conv.weight")
    L.same("out.bias", "output_layer.conv.bias")
    return L


def _dcgan_d(d: DCGANDiscriminator, keys: AbstractSet[str]) -> Layout | str:
    if any(".bn." in k for k in keys):
        return (
            "the source's DCGAN discriminator normalises with BatchNorm, which dsgan's (scoring real and fake "
            "batches in separate forwards) does not have: D starts from its initialisation"
        )
    if d.embed is not None:
        raise ConfigError("MMagic's DCGAN is unconditional: set discriminator.model.num_classes=0 for its weights")
    L = Layout(None)
    for i, conv in enumerate(d.convs):
        L.layer(f"convs.{i}", f"downsamples.{i}.conv", conv)
    # MMagic's output layer is a 4x4 valid conv on the 4x4 features: dsgan's linear layer on them, flattened.
    channels = d.fc.in_features // 16
    L.same("fc.weight", "output_layer.conv.weight", lambda t: t.reshape(1, -1), lambda t: t.reshape(1, channels, 4, 4))
    L.same("fc.bias", "output_layer.conv.bias")
    return L


# ----------------------------------------------------------------------------------------------------------------


def _mmagic_names(module: nn.Module, sn: SNStyle) -> Layout:
    """A module whose parameter names are MMagic's (SNGAN, StyleGAN2): every tensor in the same place, except that a
    spectrally normalised layer keeps dsgan's `weight` + `sn.u` where the source has its own style's names, and
    torch's BatchNorm step counter, which dsgan's BatchNorm does not keep."""
    L = Layout(sn)
    owners = {name for name, m in module.named_modules() if getattr(m, "sn", None) is not None}
    for key in module.state_dict():
        owner, _, leaf = key.rpartition(".")
        if owner in owners and leaf in ("weight", "bias"):
            continue  # named by the layer call below
        if owner.endswith(".sn") and owner.removesuffix(".sn") in owners:
            continue
        L.same(key, key)
    for owner in sorted(owners):
        L.layer(owner, owner, module.get_submodule(owner))
    for name, m in module.named_modules():
        if isinstance(m, BatchNorm):  # torch's BatchNorm2d, as MMagic's modules hold it, also counts its steps
            L.drop(f"{name}.num_batches_tracked", "BatchNorm's step counter (unused with a momentum)", _zero_long)
    return L


def layout(module: nn.Module, style: Format, sn: SNStyle, keys: AbstractSet[str] = frozenset()) -> Layout | str:
    """The layout of `module`'s weights in a source state dict with spectral norm `sn` (`source_sn_style`) and
    these `keys`; a string when the source's network cannot be represented there (the reason)."""
    if style == "biggan-pytorch" and not isinstance(module, (BigGANGenerator, BigGANDiscriminator)):
        raise ConfigError(f"BigGAN-PyTorch weights need BigGAN models in the config, not {type(module).__name__}")
    match module:
        case BigGANGenerator():
            return _biggan_g(module, style, sn)
        case BigGANDiscriminator():
            return _biggan_d(module, style, sn)
        case DCGANGenerator():
            return _dcgan_g(module)
        case DCGANDiscriminator():
            return _dcgan_d(module, keys)
        case SNGANGenerator() | SNGANDiscriminator() | StyleGAN2Generator() | StyleGAN2Discriminator():
            return _mmagic_names(module, sn)  # their modules carry MMagic's names already
    raise ConfigError(f"no checkpoint layout for {type(module).__name__}")
