"""Layers that work the same in fp32, inside bf16/fp16 DeepSpeed engines and at every ZeRO stage.

A bf16 engine casts parameters to bf16 but leaves buffers fp32 and inputs uncast; an fp16 engine casts buffers too.
So: statistics (BatchNorm) and spectral-norm power iterations run in fp32 with fp32 buffers, and results are cast
back to the input's dtype. `torch.nn.utils.spectral_norm` fails under bf16 engines (its u/v stay fp32).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _fp32_buffer(module: nn.Module, name: str) -> torch.Tensor:
    buf = getattr(module, name)
    if buf.dtype != torch.float32:  # an fp16 engine cast it: keep statistics in fp32
        buf.data = buf.data.float()
    return buf


class SpectralNorm(nn.Module):
    """Miyato et al. 2018: W / sigma(W), sigma from one power iteration per training forward, computed in fp32.

    `u` starts from a generator seeded by the weight's shape, not the global RNG, so it is identical on every rank;
    its update depends only on the (replicated) weight, so it stays identical (DeepSpeed broadcasts no buffers).
    """

    def __init__(self, out_features: int, fan_in: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        gen = torch.Generator().manual_seed(out_features * 1_000_003 + fan_in)
        self.register_buffer("u", F.normalize(torch.randn(out_features, generator=gen), dim=0, eps=eps))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
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


class BatchNorm(nn.Module):
    """BatchNorm over dim 1 with fp32 statistics; `affine=False` plus (gain, bias) is class-conditional BN."""

    def __init__(self, channels: int, affine: bool = True, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(channels)) if affine else None
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor, gain: torch.Tensor | None = None, bias: torch.Tensor | None = None):
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        out = F.batch_norm(
            x.float(),
            _fp32_buffer(self, "running_mean"),
            _fp32_buffer(self, "running_var"),
            w,
            b,
            self.training,
            self.momentum,
            self.eps,
        )
        if gain is not None:
            shape = (*gain.shape, *([1] * (x.ndim - 2)))
            out = out * (1 + gain.float()).view(shape) + bias.float().view(shape)
        return out.to(x.dtype)


class SelfAttention(nn.Module):
    """SAGAN self-attention (Zhang et al. 2019) as BigGAN uses it: theta/phi at C/8, g at C/2, 2x2 max-pooled keys,
    a learned gate initialised at 0."""

    def __init__(self, channels: int, sn_eps: float | None) -> None:
        super().__init__()
        self.theta = SNConv2d(channels, channels // 8, 1, bias=False, sn_eps=sn_eps)
        self.phi = SNConv2d(channels, channels // 8, 1, bias=False, sn_eps=sn_eps)
        self.g = SNConv2d(channels, channels // 2, 1, bias=False, sn_eps=sn_eps)
        self.o = SNConv2d(channels // 2, channels, 1, bias=False, sn_eps=sn_eps)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        theta = self.theta(x).flatten(2)  # [b, c/8, hw]
        phi = F.max_pool2d(self.phi(x), 2).flatten(2)  # [b, c/8, hw/4]
        g = F.max_pool2d(self.g(x), 2).flatten(2)  # [b, c/2, hw/4]
        attn = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)  # [b, hw, hw/4]
        o = self.o((g @ attn.transpose(1, 2)).view(b, c // 2, h, w))
        return x + self.gamma.to(o.dtype) * o


def init_weights(module: nn.Module, init_type: str) -> None:
    """BigGAN's initialisations: 'ortho' (orthogonal), 'N02' (normal, std 0.02), 'xavier' (Glorot uniform)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            if init_type == "ortho":
                nn.init.orthogonal_(m.weight)
            elif init_type == "N02":
                nn.init.normal_(m.weight, 0, 0.02)
            elif init_type == "xavier":
                nn.init.xavier_uniform_(m.weight)
            else:
                raise ValueError(f"unknown init_type {init_type!r}")
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)


def activation(cfg) -> nn.Module:
    if cfg.type == "ReLU":
        return nn.ReLU(inplace=cfg.inplace)
    return nn.LeakyReLU(cfg.negative_slope, inplace=cfg.inplace)


def num_resamplings(scale: int, base: int = 4) -> int:
    return int(math.log2(scale // base))
