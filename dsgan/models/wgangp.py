"""WGAN-GP's CNNs (Gulrajani et al. 2017) in MMagic's layout (`mmagic/models/editors/wgan_gp`, commit 0a560bb).

Parameter names and shapes are MMagic's: mmcv's ConvModule keeps its convolution as `conv` and its BatchNorm as
`bn`, MMagic's ConvLNModule its norm under the norm's type name (`LN2d` or `GN`), and the upsampling and pooling
layers sit in `conv_blocks` between the convolutions (so the indices agree). The initialisation is mmcv's
ConvModule one (Kaiming normal, fan-out, for the following activation; zero biases; norms at 1 and 0), and N(0, 1)
for the two linear layers, as MMagic's modules do.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dsgan.config.models import WGANGPDiscriminator as DCfg
from dsgan.config.models import WGANGPGenerator as GCfg
from dsgan.models import Generator
from dsgan.models.layers import BatchNorm, check_labels, param_dtype

CHANNELS = {4: 512, 8: 512, 16: 256, 32: 128, 64: 64, 128: 32}
"""MMagic's `_default_channels_per_scale`, for G and D alike."""


def _kaiming(conv: nn.Conv2d, negative_slope: float | None) -> nn.Conv2d:
    """mmcv's ConvModule.init_weights: Kaiming normal (fan-out) for the activation that follows, zero bias."""
    if negative_slope is None:
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    else:
        nn.init.kaiming_normal_(conv.weight, a=negative_slope, mode="fan_out", nonlinearity="leaky_relu")
    assert conv.bias is not None
    nn.init.zeros_(conv.bias)
    return conv


class ConvBNReLU(nn.Module):
    """mmcv's ConvModule(conv 3x3, BN, ReLU) as MMagic's WGAN-GP generator configures it."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = _kaiming(nn.Conv2d(in_ch, out_ch, 3, padding=1), None)
        self.bn = BatchNorm(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class ConvNormLReLU(nn.Module):
    """MMagic's ConvLNModule: conv, then LayerNorm over (C, H, W) or one-group GroupNorm, then LeakyReLU 0.2."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, scale: int, norm: str) -> None:
        super().__init__()
        self.conv = _kaiming(nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2 if kernel == 3 else 0), 0.2)
        self.norm_name = norm
        layer = nn.LayerNorm((out_ch, scale, scale)) if norm == "LN2d" else nn.GroupNorm(1, out_ch)
        self.add_module(norm, layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm: nn.Module = getattr(self, self.norm_name)
        return nn.functional.leaky_relu(norm(self.conv(x)), 0.2)


class NoiseTo2DFeat(nn.Module):
    """MMagic's WGANNoiseTo2DFeat: a bias-free linear layer to 4x4x512, a per-channel bias, ReLU, then BN."""

    def __init__(self, noise_size: int, channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(noise_size, channels * 16, bias=False)
        nn.init.normal_(self.linear.weight, 0.0, 1.0)
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.norm = BatchNorm(channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.linear(z).view(len(z), -1, 4, 4) + self.bias
        return self.norm(torch.relu(h))


class WGANGPGenerator(Generator):
    def __init__(self, cfg: GCfg) -> None:
        super().__init__()
        self.noise_size, self.num_classes, self.output_scale = cfg.noise_size, cfg.num_classes, cfg.output_scale
        self.noise2feat = NoiseTo2DFeat(cfg.noise_size, CHANNELS[4])
        blocks: list[nn.Module] = [ConvBNReLU(CHANNELS[4], CHANNELS[4])]
        for i in range(3, int(math.log2(cfg.output_scale)) + 1):
            c_in, c_out = CHANNELS[2 ** (i - 1)], CHANNELS[2**i]
            blocks += [nn.Upsample(scale_factor=2, mode="nearest"), ConvBNReLU(c_in, c_out), ConvBNReLU(c_out, c_out)]
        self.conv_blocks = nn.ModuleList(blocks)
        to_rgb = _kaiming(nn.Conv2d(CHANNELS[cfg.output_scale], cfg.out_channels, 1), None)
        self.to_rgb = nn.ModuleDict({"conv": to_rgb})  # mmcv's ConvModule holds it as `to_rgb.conv`

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(self.num_classes, y)
        h = self.noise2feat(z.to(param_dtype(self)))
        for block in self.conv_blocks:
            h = block(h)
        return torch.tanh(self.to_rgb["conv"](h))


class WGANGPDiscriminator(nn.Module):
    def __init__(self, cfg: DCfg) -> None:
        super().__init__()
        self.num_classes = cfg.num_classes
        scale = cfg.input_scale
        self.from_rgb = nn.ModuleDict({"conv": _kaiming(nn.Conv2d(cfg.in_channels, CHANNELS[scale], 1), 0.2)})
        blocks: list[nn.Module] = []
        for i in range(int(math.log2(scale)), 2, -1):
            c, c_next = CHANNELS[2**i], CHANNELS[2 ** (i - 1)]
            blocks += [
                ConvNormLReLU(c, c, 3, 2**i, cfg.norm),
                ConvNormLReLU(c, c_next, 3, 2**i, cfg.norm),
                nn.AvgPool2d(2, 2),
            ]
        self.conv_blocks = nn.ModuleList(blocks)
        linear = nn.Linear(CHANNELS[4], 1)
        nn.init.normal_(linear.weight, 0.0, 1.0)
        nn.init.zeros_(linear.bias)
        self.decision = nn.ModuleDict(
            {"conv": ConvNormLReLU(CHANNELS[4], CHANNELS[4], 4, 1, cfg.norm), "linear": linear}
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(self.num_classes, y)
        h = nn.functional.leaky_relu(self.from_rgb["conv"](x.to(param_dtype(self))), 0.2)
        for block in self.conv_blocks:
            h = block(h)
        h = self.decision["conv"](h).flatten(1)
        return self.decision["linear"](h).squeeze(1).float()
