"""Layers that behave the same in fp32, inside bf16/fp16 DeepSpeed engines, under autocast and at every ZeRO stage.

A bf16 engine casts parameters to bf16 but leaves buffers fp32 and inputs uncast; an fp16 engine casts buffers too;
autocast runs matmuls in bf16 whatever the parameters' dtype. So BatchNorm statistics and the spectral-norm power
iteration run in fp32 with fp32 buffers and autocast off, and results are cast back to the activations' dtype.
`torch.nn.utils.spectral_norm` fails under bf16 engines (its u/v stay fp32: "addmv input tensors must have the same
dtype"). Under ZeRO-3 a layer reads only its own parameters, inside its own forward, where DeepSpeed's hooks have
gathered them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dsgan.config.models import Activation


def _fp32_buffer(module: nn.Module, name: str) -> torch.Tensor:
    buf = getattr(module, name)
    if buf.dtype != torch.float32:  # an fp16 engine cast it: statistics stay fp32
        buf.data = buf.data.float()
    return buf


def _no_autocast(t: torch.Tensor) -> torch.autocast:
    return torch.autocast(t.device.type, enabled=False)


def param_dtype(module: nn.Module) -> torch.dtype:
    """The dtype a DeepSpeed engine gave the parameters (inputs arrive fp32 and must be cast to it)."""
    return next(module.parameters()).dtype


def check_labels(num_classes: int, y: torch.Tensor | None) -> None:
    if num_classes and y is None:
        raise ValueError(f"the model is class-conditional (num_classes={num_classes}): pass labels y")
    if not num_classes and y is not None:
        raise ValueError("the model is unconditional (num_classes=0): pass y=None")


class SpectralNorm(nn.Module):
    """Miyato et al. 2018: W / sigma(W), sigma from one power iteration per training forward, in fp32.

    `u` starts from a generator seeded by the weight's shape, not the global RNG, so it is identical on every rank
    whatever the rank's RNG state; its update depends only on the (replicated) weight, so it stays identical
    (DeepSpeed broadcasts no buffers).
    """

    def __init__(self, out_features: int, fan_in: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        gen = torch.Generator().manual_seed(out_features * 1_000_003 + fan_in)
        self.register_buffer("u", F.normalize(torch.randn(out_features, generator=gen), dim=0, eps=eps))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        with _no_autocast(weight):
            w = weight.float().flatten(1)
            u = _fp32_buffer(self, "u")
            with torch.no_grad():
                if self.training:
                    v = F.normalize(w.t() @ u, dim=0, eps=self.eps)
                    u.copy_(F.normalize(w @ v, dim=0, eps=self.eps))
                # A copy: D runs twice (real, fake) before one backward, and the second forward updates the buffer.
                u = u.clone()
                v = F.normalize(w.t() @ u, dim=0, eps=self.eps)
            sigma = torch.dot(u, w @ v)
            return (weight.float() / sigma).to(weight.dtype)


class SNConv2d(nn.Conv2d):
    """Conv2d, spectrally normalised when `sn_eps` is given; casts its input to the weight's dtype."""

    def __init__(self, *args, sn_eps: float | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sn = SpectralNorm(self.out_channels, self.weight[0].numel(), sn_eps) if sn_eps else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.sn(self.weight) if self.sn is not None else self.weight
        return self._conv_forward(x.to(w.dtype), w, self.bias)


class SNLinear(nn.Linear):
    def __init__(self, *args, sn_eps: float | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sn = SpectralNorm(self.out_features, self.in_features, sn_eps) if sn_eps else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.sn(self.weight) if self.sn is not None else self.weight
        return F.linear(x.to(w.dtype), w, self.bias)


class SNEmbedding(nn.Embedding):
    def __init__(self, *args, sn_eps: float | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sn = SpectralNorm(self.num_embeddings, self.embedding_dim, sn_eps) if sn_eps else None

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return F.embedding(y, self.sn(self.weight) if self.sn is not None else self.weight)


CondMap = nn.Embedding | nn.Linear
"""A conditional BatchNorm's gain or shift map: a per-class embedding or a linear map of the condition."""


class BatchNorm(nn.Module):
    """BatchNorm over dim 1 with fp32 statistics and buffers.

    Given `gain` and `shift` maps it is conditional BN (de Vries et al. 2017; SNGAN-projection, BigGAN): no affine
    parameters of its own, per-sample scale `1 + gain(c)` and shift `shift(c)` of a condition c (class embedding,
    noise chunk, or both).
    """

    def __init__(
        self,
        channels: int,
        gain: CondMap | None = None,
        shift: CondMap | None = None,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
    ) -> None:
        super().__init__()
        assert (gain is None) == (shift is None), "conditional BatchNorm takes both a gain and a shift map"
        self.eps, self.momentum = eps, momentum
        self.gain, self.shift = gain, shift
        affine = affine and gain is None  # affine=False: normalisation only (a caller applies its own scale)
        self.weight = nn.Parameter(torch.ones(channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(channels)) if affine else None
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        with _no_autocast(x):
            out = F.batch_norm(
                x.float(),
                _fp32_buffer(self, "running_mean"),
                _fp32_buffer(self, "running_var"),
                self.weight.float() if self.weight is not None else None,
                self.bias.float() if self.bias is not None else None,
                self.training,
                self.momentum,
                self.eps,
            )
            if self.gain is not None and self.shift is not None:
                shape = (len(x), -1, *([1] * (x.ndim - 2)))
                out = out * (1 + self.gain(cond).float()).view(shape) + self.shift(cond).float().view(shape)
        return out.to(x.dtype)


class SelfAttention(nn.Module):
    """SAGAN self-attention (Zhang et al. 2019) as BigGAN uses it: theta/phi at C/8, g at C/2, 2x2 max-pooled keys,
    a learned gate initialised at 0 (the block starts as the identity). Softmax in fp32."""

    def __init__(self, channels: int, sn_eps: float | None) -> None:
        super().__init__()
        self.theta = SNConv2d(channels, channels // 8, 1, bias=False, sn_eps=sn_eps)
        self.phi = SNConv2d(channels, channels // 8, 1, bias=False, sn_eps=sn_eps)
        self.g = SNConv2d(channels, channels // 2, 1, bias=False, sn_eps=sn_eps)
        self.o = SNConv2d(channels // 2, channels, 1, bias=False, sn_eps=sn_eps)
        # Shape [1], not a scalar: DeepSpeed's initial broadcast views bf16 parameters as bytes, which a 0-dim tensor
        # cannot be ("self.dim() cannot be 0 to view BFloat16 as Byte").
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        theta = self.theta(x).flatten(2)  # [b, c/8, hw]
        phi = F.max_pool2d(self.phi(x), 2).flatten(2)  # [b, c/8, hw/4]
        g = F.max_pool2d(self.g(x), 2).flatten(2)  # [b, c/2, hw/4]
        attn = torch.softmax((theta.transpose(1, 2) @ phi).float(), dim=-1).to(g.dtype)  # [b, hw, hw/4]
        o = self.o((g @ attn.transpose(1, 2)).view(b, c // 2, h, w))
        return x + self.gamma.to(o.dtype) * o


Norm = Callable[[int], BatchNorm]
"""Builds the (conditional) BatchNorm of a block for a channel count."""
Layer = Callable[[torch.Tensor], torch.Tensor]
CondLayer = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
"""A layer called with a condition (a conditional BatchNorm)."""


class ResBlockUp(nn.Module):
    """Generator residual block of BigGAN (Brock et al. 2019, fig. 15b; SNGAN's, whose layers sngan.py names as
    MMagic does, computes the same): BN-act-up-conv3x3-BN-act-conv3x3, plus a nearest-upsampled 1x1-conv shortcut.
    Both BNs see the same condition."""

    def __init__(self, in_ch: int, out_ch: int, norm: Norm, act: nn.Module, sn_eps: float | None) -> None:
        super().__init__()
        self.bn1, self.bn2 = norm(in_ch), norm(out_ch)
        self.conv1 = SNConv2d(in_ch, out_ch, 3, padding=1, sn_eps=sn_eps)
        self.conv2 = SNConv2d(out_ch, out_ch, 3, padding=1, sn_eps=sn_eps)
        self.shortcut = SNConv2d(in_ch, out_ch, 1, sn_eps=sn_eps)
        self.act = act

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        return residual_up(x, cond, self.bn1, self.bn2, self.conv1, self.conv2, self.shortcut, self.act)


class ResBlockDown(nn.Module):
    """Discriminator residual block of BigGAN and SNGAN (fig. 15c): act-conv3x3-act-conv3x3-avgpool, shortcut
    1x1-conv then avgpool. The head block (SNGAN's "optimized block") skips the first activation, since its input is
    the image, and pools before its shortcut conv. The activation is never in place: its input feeds the shortcut."""

    def __init__(
        self, in_ch: int, out_ch: int, act: nn.Module, sn_eps: float | None, downsample: bool, head: bool
    ) -> None:
        super().__init__()
        self.conv1 = SNConv2d(in_ch, out_ch, 3, padding=1, sn_eps=sn_eps)
        self.conv2 = SNConv2d(out_ch, out_ch, 3, padding=1, sn_eps=sn_eps)
        learnable = in_ch != out_ch or downsample
        self.shortcut = SNConv2d(in_ch, out_ch, 1, sn_eps=sn_eps) if learnable else None
        self.act, self.downsample, self.head = act, downsample, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return residual_down(x, self.conv1, self.conv2, self.shortcut, self.act, self.downsample, self.head)


def residual_up(
    x: torch.Tensor,
    cond: torch.Tensor | None,
    norm1: CondLayer,
    norm2: CondLayer,
    conv1: Layer,
    conv2: Layer,
    shortcut: Layer,
    act: Layer,
) -> torch.Tensor:
    """The up-block's computation, for blocks that name their layers differently (BigGAN's, MMagic's SNGAN's)."""
    h = F.interpolate(act(norm1(x, cond)), scale_factor=2, mode="nearest")
    h = conv2(act(norm2(conv1(h), cond)))
    return h + shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


def residual_down(
    x: torch.Tensor, conv1: Layer, conv2: Layer, shortcut: Layer | None, act: Layer, downsample: bool, head: bool
) -> torch.Tensor:
    """The down-block's computation (see ResBlockDown), for blocks that name their layers differently."""

    def pool(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(t, 2) if downsample else t

    h = pool(conv2(act(conv1(x if head else act(x)))))
    if shortcut is None:
        return h + x
    return h + (shortcut(pool(x)) if head else pool(shortcut(x)))


def init_weights(module: nn.Module, init_type: str) -> None:
    """BigGAN's initialisations as MMagic applies them to every Conv2d/Linear/Embedding weight: 'ortho' (orthogonal;
    biases keep PyTorch's default), 'N02' (normal, std 0.02, zero bias), 'xavier' (mmengine's xavier_init: Glorot
    normal, zero bias)."""
    for m in module.modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            continue
        if init_type == "ortho":
            nn.init.orthogonal_(m.weight)
            continue
        if init_type == "N02":
            nn.init.normal_(m.weight, 0, 0.02)
        elif init_type == "xavier":
            nn.init.xavier_normal_(m.weight)
        else:
            raise ValueError(f"unknown init_type {init_type!r}")
        bias = getattr(m, "bias", None)  # Embedding has no bias; bias=False holds None
        if bias is not None:
            nn.init.zeros_(bias)


def activation(cfg: Activation, inplace: bool | None = None) -> nn.Module:
    """The configured activation; `inplace` overrides the config where an input is still needed afterwards."""
    inplace = cfg.inplace if inplace is None else inplace
    if cfg.type == "ReLU":
        return nn.ReLU(inplace=inplace)
    return nn.LeakyReLU(cfg.negative_slope, inplace=inplace)


def num_resamplings(scale: int, base: int = 4) -> int:
    return int(math.log2(scale // base))
