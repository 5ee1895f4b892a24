"""SNGAN ResNets (Miyato et al. 2018, appendix B.4; conditional version: Miyato & Koyama 2018).

32x32 (the CIFAR layout): G = linear to 4x4, three up-blocks at base_channels, BN-ReLU-conv3x3-tanh; D = four
down-blocks at base_channels (the first two halve the resolution), ReLU, sum pooling, linear. 64x64 and 128x128
follow the projection paper's ImageNet layouts as MMagic's SNGANGenerator / ProjDiscriminator build them (their
`_default_channels_cfg`): at 64, G up-blocks 16-8-4-2-1 x base_channels and D 1-2-4-8-16 with five halvings; at 128,
G 16-16-8-4-2-1 and D 1-2-4-8-16-16 with five halvings and a last block at 4x4. base_channels=64 there is the paper's
width (the config defaults are the 32x32 ones). Spectral norm on D only, as in the paper. Conditional:
class-conditional BN in G (a gain and a bias embedding per class), projection in D.
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
    ResBlockDown,
    ResBlockUp,
    SNConv2d,
    SNEmbedding,
    SNLinear,
    check_labels,
    param_dtype,
)

G_CHANNELS = {32: (1, 1, 1, 1), 64: (16, 8, 4, 2, 1), 128: (16, 16, 8, 4, 2, 1)}
"""Multipliers of base_channels: the linear layer's output, then each up-block's."""
D_CHANNELS = {
    32: ((1, 1, 1, 1), (True, True, False, False)),
    64: ((1, 2, 4, 8, 16), (True, True, True, True, True)),
    128: ((1, 2, 4, 8, 16, 16), (True, True, True, True, True, False)),
}
"""Each down-block's output multiplier and whether it halves the resolution (the first is the head block)."""


def _sngan_init(module: nn.Module) -> None:
    """The authors' Chainer initialisation: Glorot uniform, gain sqrt(2) on the residual 3x3 convs, 1 elsewhere;
    zero biases. Conditional BN embeddings start at 0: scale 1, shift 0 for every class."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, SNEmbedding)):
            nn.init.xavier_uniform_(m.weight)
            bias = getattr(m, "bias", None)  # SNEmbedding has no bias; bias=False holds None
            if bias is not None:
                nn.init.zeros_(bias)
        elif isinstance(m, BatchNorm) and m.gain is not None and m.shift is not None:
            nn.init.zeros_(m.gain.weight)
            nn.init.zeros_(m.shift.weight)
    for m in module.modules():  # after the pass above, which visits a block before its convs
        if isinstance(m, (ResBlockUp, ResBlockDown)):
            nn.init.xavier_uniform_(m.conv1.weight, math.sqrt(2))
            nn.init.xavier_uniform_(m.conv2.weight, math.sqrt(2))


class SNGANGenerator(Generator):
    def __init__(self, cfg: GCfg) -> None:
        super().__init__()
        self.noise_size, self.num_classes, self.output_scale = cfg.noise_size, cfg.num_classes, cfg.output_scale
        channels = [cfg.base_channels * m for m in G_CHANNELS[cfg.output_scale]]

        def norm(c: int) -> BatchNorm:
            if cfg.num_classes:
                return BatchNorm(c, nn.Embedding(cfg.num_classes, c), nn.Embedding(cfg.num_classes, c))
            return BatchNorm(c)

        act = nn.ReLU(inplace=True)
        self.fc = nn.Linear(cfg.noise_size, channels[0] * 16)
        self.blocks = nn.ModuleList(
            ResBlockUp(channels[i], channels[i + 1], norm, act, None) for i in range(len(channels) - 1)
        )
        self.out_bn = BatchNorm(channels[-1])
        self.out_conv = SNConv2d(channels[-1], cfg.out_channels, 3, padding=1)
        _sngan_init(self)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(self.num_classes, y)
        h = self.fc(z.to(param_dtype(self))).view(len(z), -1, 4, 4)
        for block in self.blocks:
            h = block(h, y)
        return torch.tanh(self.out_conv(torch.relu(self.out_bn(h))))


class SNGANDiscriminator(nn.Module):
    def __init__(self, cfg: DCfg) -> None:
        super().__init__()
        self.num_classes = cfg.num_classes
        multipliers, downsample = D_CHANNELS[cfg.input_scale]
        channels = [cfg.in_channels] + [cfg.base_channels * m for m in multipliers]
        act = nn.ReLU()
        self.blocks = nn.Sequential(
            *(
                ResBlockDown(channels[i], channels[i + 1], act, cfg.sn_eps, downsample[i], head=i == 0)
                for i in range(len(multipliers))
            )
        )
        self.fc = SNLinear(channels[-1], 1, sn_eps=cfg.sn_eps)
        self.embed = SNEmbedding(cfg.num_classes, channels[-1], sn_eps=cfg.sn_eps) if cfg.num_classes else None
        _sngan_init(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(self.num_classes, y)
        h = torch.relu(self.blocks(x.to(param_dtype(self)))).sum(dim=(2, 3))
        out = self.fc(h).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(y) * h).sum(1)
        return out.float()
