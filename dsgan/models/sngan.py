"""SNGAN ResNets (Miyato et al. 2018, appendix B.4; conditional version: Miyato & Koyama 2018).

32x32 (the CIFAR layout): G = linear to 4x4, three up-blocks at base_channels, BN-ReLU-conv3x3-tanh; D = four
down-blocks at base_channels (the first two halve the resolution), ReLU, sum pooling, linear. 64x64 and 128x128
follow the projection paper's ImageNet layouts as MMagic's SNGANGenerator / ProjDiscriminator build them (their
`_default_channels_cfg`): at 64, G up-blocks 16-8-4-2-1 x base_channels and D 1-2-4-8-16 with five halvings; at 128,
G 16-16-8-4-2-1 and D 1-2-4-8-16-16 with five halvings and a last block at 4x4. base_channels=64 there is the paper's
width (the config defaults are the 32x32 ones). Spectral norm on D only, as in the paper. Conditional:
class-conditional BN in G (a gain and a bias embedding per class), projection in D.

Module and parameter names are MMagic's (`noise2feat`, `conv_blocks.i.conv_1.conv`, `norm_1.weight_embedding`,
`to_rgb.bn`; D: `from_rgb`, `conv_blocks`, `decision`, `proj_y`), and so are its BatchNorm eps (1e-4) and its
conditional scale `1 + weight_embedding(y)`. Spectrally normalised weights are dsgan's `weight` with a `sn.u` buffer
where MMagic's torch spectral norm has `weight_orig` with `weight_u` / `weight_v`: the same shapes.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dsgan.config.models import SNGANDiscriminator as DCfg
from dsgan.config.models import SNGANGenerator as GCfg
from dsgan.models import Generator
from dsgan.models.layers import (
    BatchNorm,
    SNConv2d,
    SNEmbedding,
    SNLinear,
    check_labels,
    param_dtype,
    residual_down,
    residual_up,
)

G_CHANNELS = {32: (1, 1, 1, 1), 64: (16, 8, 4, 2, 1), 128: (16, 16, 8, 4, 2, 1)}
"""Multipliers of base_channels: the linear layer's output, then each up-block's."""
D_CHANNELS = {
    32: ((1, 1, 1, 1), (True, True, False, False)),
    64: ((1, 2, 4, 8, 16), (True, True, True, True, True)),
    128: ((1, 2, 4, 8, 16, 16), (True, True, True, True, True, False)),
}
"""Each down-block's output multiplier and whether it halves the resolution (the first is the head block)."""
NORM_EPS = 1e-4
"""MMagic's SNGAN `norm_eps` (BatchNorm's own default is 1e-5)."""


class Conv(nn.Module):
    """A (spectrally normalised when sn_eps is given) convolution held as `.conv`, as mmcv's ConvModule holds it,
    so that parameter names are MMagic's (`conv_1.conv.weight`)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, sn_eps: float | None) -> None:
        super().__init__()
        self.conv = SNConv2d(in_ch, out_ch, kernel, padding=kernel // 2, sn_eps=sn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ConditionNorm(nn.Module):
    """MMagic's SNConditionNorm: BatchNorm, affine when unconditional; conditional: no affine of its own but a
    per-class scale 1 + weight_embedding(y) and shift bias_embedding(y) (MMagic adds the 1 under its BigGAN and
    StudioGAN initialisations, the defaults and what its SNGAN-proj configs use)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.norm = BatchNorm(channels, eps=NORM_EPS, affine=not num_classes)
        self.weight_embedding = nn.Embedding(num_classes, channels) if num_classes else None
        self.bias_embedding = nn.Embedding(num_classes, channels) if num_classes else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        out = self.norm(x.float())
        if self.weight_embedding is not None and self.bias_embedding is not None:
            scale = 1 + self.weight_embedding(y).float()[:, :, None, None]
            out = out * scale + self.bias_embedding(y).float()[:, :, None, None]
        return out.to(x.dtype)


class GenBlock(nn.Module):
    """MMagic's SNGANGenResBlock: norm-ReLU-upsample-conv3x3-norm-ReLU-conv3x3, plus the nearest-upsampled input
    through a 1x1 conv (always learnable: the block always upsamples)."""

    def __init__(self, in_ch: int, out_ch: int, num_classes: int) -> None:
        super().__init__()
        self.norm_1, self.norm_2 = ConditionNorm(in_ch, num_classes), ConditionNorm(out_ch, num_classes)
        self.conv_1, self.conv_2 = Conv(in_ch, out_ch, 3, None), Conv(out_ch, out_ch, 3, None)
        self.shortcut = Conv(in_ch, out_ch, 1, None)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return residual_up(x, y, self.norm_1, self.norm_2, self.conv_1, self.conv_2, self.shortcut, torch.relu)


class DiscBlock(nn.Module):
    """MMagic's SNGANDiscResBlock (ReLU-conv3x3-ReLU-conv3x3-avgpool; shortcut 1x1 conv then avgpool, learnable when
    the channels change or it pools) and, as `head`, SNGANDiscHeadResBlock (no first ReLU on the image; the shortcut
    pools before its conv). The ReLU is never in place: its input feeds the shortcut."""

    def __init__(self, in_ch: int, out_ch: int, sn_eps: float, downsample: bool, head: bool) -> None:
        super().__init__()
        self.conv_1, self.conv_2 = Conv(in_ch, out_ch, 3, sn_eps), Conv(out_ch, out_ch, 3, sn_eps)
        self.shortcut = Conv(in_ch, out_ch, 1, sn_eps) if in_ch != out_ch or downsample else None
        self.downsample, self.head = downsample, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return residual_down(x, self.conv_1, self.conv_2, self.shortcut, torch.relu, self.downsample, self.head)


def _sngan_init(module: nn.Module, init_type: str) -> None:
    """The initialisations MMagic's SNGAN offers (the config's `init_type` says what each does). 'sngan' starts the
    conditional BN embeddings at 0 (scale 1, shift 0); 'studio' and 'BigGAN' treat them as every other layer, as
    MMagic's generator-level initialisation, which runs last, does."""
    for m in module.modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            continue
        bias = getattr(m, "bias", None)  # embeddings have none; bias=False holds None
        if init_type == "studio":
            nn.init.orthogonal_(m.weight)
        else:
            nn.init.xavier_uniform_(m.weight)
        if bias is not None and init_type != "BigGAN":  # BigGAN-PyTorch keeps PyTorch's default biases
            nn.init.zeros_(bias)
    if init_type != "sngan":
        return
    for m in module.modules():  # after the pass above, which visits a block before its convs
        if isinstance(m, ConditionNorm) and m.weight_embedding is not None and m.bias_embedding is not None:
            nn.init.zeros_(m.weight_embedding.weight)
            nn.init.zeros_(m.bias_embedding.weight)
        if isinstance(m, (GenBlock, DiscBlock)):
            nn.init.xavier_uniform_(m.conv_1.conv.weight, math.sqrt(2))
            nn.init.xavier_uniform_(m.conv_2.conv.weight, math.sqrt(2))


class SNGANGenerator(Generator):
    def __init__(self, cfg: GCfg) -> None:
        super().__init__()
        self.noise_size, self.num_classes, self.output_scale = cfg.noise_size, cfg.num_classes, cfg.output_scale
        channels = [cfg.base_channels * m for m in G_CHANNELS[cfg.output_scale]]
        self.noise2feat = nn.Linear(cfg.noise_size, channels[0] * 16)
        self.conv_blocks = nn.ModuleList(
            GenBlock(channels[i], channels[i + 1], cfg.num_classes) for i in range(len(channels) - 1)
        )
        # mmcv's ConvModule(order=('norm', 'act', 'conv')): `to_rgb.bn`, then ReLU, then `to_rgb.conv`
        self.to_rgb = nn.ModuleDict(
            {
                "bn": BatchNorm(channels[-1], eps=NORM_EPS),
                "conv": SNConv2d(channels[-1], cfg.out_channels, 3, padding=1),
            }
        )
        _sngan_init(self, cfg.init_type)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(self.num_classes, y)
        h = self.noise2feat(z.to(param_dtype(self))).view(len(z), -1, 4, 4)
        for block in self.conv_blocks:
            h = block(h, y)
        return torch.tanh(self.to_rgb["conv"](torch.relu(self.to_rgb["bn"](h))))


class SNGANDiscriminator(nn.Module):
    def __init__(self, cfg: DCfg) -> None:
        super().__init__()
        self.num_classes = cfg.num_classes
        multipliers, downsample = D_CHANNELS[cfg.input_scale]
        channels = [cfg.in_channels] + [cfg.base_channels * m for m in multipliers]
        self.from_rgb = DiscBlock(channels[0], channels[1], cfg.sn_eps, downsample[0], head=True)
        self.conv_blocks = nn.ModuleList(
            DiscBlock(channels[i], channels[i + 1], cfg.sn_eps, downsample[i], head=False)
            for i in range(1, len(multipliers))
        )
        self.decision = SNLinear(channels[-1], 1, sn_eps=cfg.sn_eps)
        self.proj_y = SNEmbedding(cfg.num_classes, channels[-1], sn_eps=cfg.sn_eps) if cfg.num_classes else None
        _sngan_init(self, cfg.init_type)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(self.num_classes, y)
        h = self.from_rgb(x.to(param_dtype(self)))
        for block in self.conv_blocks:
            h = block(h)
        h = torch.relu(h).sum(dim=(2, 3))
        out = self.decision(h).squeeze(1)
        if self.proj_y is not None:
            out = out + (self.proj_y(y) * h).sum(1)
        return out.float()
