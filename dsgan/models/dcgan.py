"""DCGAN (Radford et al. 2016), conditional by a label embedding concatenated to z (G) and projection (D).

Small and fast on CPU: the embedded digits run trains it in minutes on 2 cores. D has no BatchNorm (real and fake
batches are scored in separate forwards; batch statistics would tell them apart) and optional spectral norm.
"""

from __future__ import annotations

import torch
from torch import nn

from dsgan.config.models import DCGANDiscriminator as DCfg
from dsgan.config.models import DCGANGenerator as GCfg
from dsgan.models import Generator
from dsgan.models.layers import BatchNorm, SNConv2d, SNEmbedding, SNLinear, check_labels, num_resamplings, param_dtype


class DCGANGenerator(Generator):
    def __init__(self, cfg: GCfg) -> None:
        super().__init__()
        self.noise_size, self.num_classes, self.output_scale = cfg.noise_size, cfg.num_classes, cfg.output_scale
        n = num_resamplings(cfg.output_scale)
        channels = [cfg.base_channels * 2 ** (n - 1 - i) for i in range(n)]
        self.embed = nn.Embedding(cfg.num_classes, cfg.noise_size) if cfg.num_classes else None
        in_dim = cfg.noise_size * (2 if cfg.num_classes else 1)
        self.fc = nn.Linear(in_dim, channels[0] * 16)
        self.bn0 = BatchNorm(channels[0])
        self.ups = nn.ModuleList(nn.ConvTranspose2d(channels[i], channels[i + 1], 4, 2, 1) for i in range(n - 1))
        self.bns = nn.ModuleList(BatchNorm(c) for c in channels[1:])
        self.out = nn.ConvTranspose2d(channels[-1], cfg.out_channels, 4, 2, 1)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.ConvTranspose2d, nn.Embedding)):
                nn.init.normal_(m.weight, 0, 0.02)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(self.num_classes, y)
        h = z.to(param_dtype(self))
        if self.embed is not None:
            h = torch.cat([h, self.embed(y)], dim=1)
        h = self.fc(h).view(len(z), -1, 4, 4)
        h = torch.relu(self.bn0(h))
        for up, bn in zip(self.ups, self.bns, strict=True):
            h = torch.relu(bn(up(h)))
        return torch.tanh(self.out(h))


class DCGANDiscriminator(nn.Module):
    def __init__(self, cfg: DCfg) -> None:
        super().__init__()
        self.num_classes = cfg.num_classes
        eps = cfg.sn_eps if cfg.with_spectral_norm else None
        n = num_resamplings(cfg.input_scale)
        channels = [cfg.in_channels] + [cfg.base_channels * 2**i for i in range(n)]
        self.convs = nn.ModuleList(SNConv2d(channels[i], channels[i + 1], 4, 2, 1, sn_eps=eps) for i in range(n))
        features = channels[-1] * 16
        self.fc = SNLinear(features, 1, sn_eps=eps)
        self.embed = SNEmbedding(cfg.num_classes, features, sn_eps=eps) if cfg.num_classes else None
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.Embedding)):
                nn.init.normal_(m.weight, 0, 0.02)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(self.num_classes, y)
        h = x.to(param_dtype(self))
        for conv in self.convs:
            h = nn.functional.leaky_relu(conv(h), 0.2)
        h = h.flatten(1)
        out = self.fc(h).squeeze(1)
        if self.embed is not None:  # projection discriminator (Miyato & Koyama 2018)
            out = out + (self.embed(y) * h).sum(1)
        return out.float()
