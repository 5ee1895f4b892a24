"""BigGAN (Brock et al. 2019) laid out as MMagic's BigGANGenerator / BigGANDiscriminator configure it, which follows
the authors' BigGAN-PyTorch: residual blocks with channel multipliers per scale, self-attention at 64x64, spectral
norm on every weight but the embeddings of G, hinge loss (in dsgan.losses).

G: hierarchical noise (`split_noise`): z is cut into one chunk for the first linear layer and one per residual block
(6 chunks of 20 at 128px); each block's class-conditional BatchNorm takes gain and bias from bias-free linear maps of
[shared class embedding, z chunk]. Without the shared embedding the maps read the one-hot class (an nn.Embedding per
map, as MMagic does) and z is not split. Unconditional (num_classes=0): the maps read the z chunk alone, or, with no
split either, BatchNorm is the plain affine one.
D: residual down-blocks, ReLU, sum pooling, a linear output plus the projection term <embed(y), h> (Miyato & Koyama
2018).
"""

from __future__ import annotations

import torch
from torch import nn

from dsgan.config.models import BigGANDiscriminator as DCfg
from dsgan.config.models import BigGANGenerator as GCfg
from dsgan.models import Generator
from dsgan.models.layers import (
    BatchNorm,
    ResBlockDown,
    ResBlockUp,
    SelfAttention,
    SNConv2d,
    SNEmbedding,
    SNLinear,
    activation,
    check_labels,
    init_weights,
    param_dtype,
)

ATTENTION_RESOLUTION = 64

G_CHANNELS = {
    32: (4, 4, 4, 4),
    64: (16, 16, 8, 4, 2),
    128: (16, 16, 8, 4, 2, 1),
    256: (16, 16, 8, 8, 4, 2, 1),
}
"""Multipliers of base_channels: the first linear layer's output, then each up-block's output (4x4 -> scale)."""

D_CHANNELS = {
    32: ((4, 4, 4, 4), (True, True, False, False)),
    64: ((1, 2, 4, 8, 16), (True, True, True, True, False)),
    128: ((1, 2, 4, 8, 16, 16), (True, True, True, True, True, False)),
    256: ((1, 2, 4, 8, 8, 16, 16), (True, True, True, True, True, True, False)),
}
"""Per down-block: output multiplier of base_channels, and whether it halves the resolution."""


class BigGANGenerator(Generator):
    def __init__(self, cfg: GCfg) -> None:
        super().__init__()
        self.num_classes, self.output_scale = cfg.num_classes, cfg.output_scale
        channels = [cfg.base_channels * m for m in G_CHANNELS[cfg.output_scale]]
        n_blocks = len(channels) - 1
        sn_eps = cfg.sn_eps if cfg.with_spectral_norm else None
        # config.BigGANGenerator has checked that z splits evenly and that one-hot classes come without split_noise.
        self.chunk = cfg.noise_size // (n_blocks + 1) if cfg.split_noise else 0
        one_hot = cfg.num_classes > 0 and not cfg.with_shared_embedding
        self.noise_size = cfg.noise_size
        self.shared = nn.Embedding(cfg.num_classes, cfg.shared_dim) if cfg.num_classes and not one_hot else None
        cond_dim = (cfg.shared_dim if self.shared is not None else 0) + self.chunk

        def norm(c: int) -> BatchNorm:
            if one_hot:
                return BatchNorm(c, nn.Embedding(cfg.num_classes, c), nn.Embedding(cfg.num_classes, c))
            if cond_dim:
                return BatchNorm(
                    c,
                    SNLinear(cond_dim, c, bias=False, sn_eps=sn_eps),
                    SNLinear(cond_dim, c, bias=False, sn_eps=sn_eps),
                )
            return BatchNorm(c)

        act = activation(cfg.act)
        self.fc = SNLinear(self.chunk or cfg.noise_size, channels[0] * 16, sn_eps=sn_eps)
        self.blocks = nn.ModuleList(
            ResBlockUp(channels[i], channels[i + 1], norm, act, sn_eps) for i in range(n_blocks)
        )
        # Block i outputs 8 * 2^i pixels; attention follows the one at 64x64.
        resolutions = [8 * 2**i for i in range(n_blocks)]
        self.attention_after = resolutions.index(ATTENTION_RESOLUTION) if ATTENTION_RESOLUTION in resolutions else None
        self.attention = (
            SelfAttention(channels[self.attention_after + 1], sn_eps) if self.attention_after is not None else None
        )
        self.out_bn = BatchNorm(channels[-1])
        self.out_act = act
        self.out_conv = SNConv2d(channels[-1], cfg.out_channels, 3, padding=1, sn_eps=sn_eps)
        init_weights(self, cfg.init_type)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(self.num_classes, y)
        z = z.to(param_dtype(self))
        if self.chunk:
            z, *conds = z.split(self.chunk, dim=1)
        else:
            conds = [None] * len(self.blocks)
        if y is not None:  # check_labels: given exactly when class-conditional
            label = self.shared(y) if self.shared is not None else y
            conds = [label if c is None else torch.cat([label, c], dim=1) for c in conds]
        h = self.fc(z).view(len(z), -1, 4, 4)
        for i, (block, cond) in enumerate(zip(self.blocks, conds, strict=True)):
            h = block(h, cond)
            if i == self.attention_after and self.attention is not None:
                h = self.attention(h)
        return torch.tanh(self.out_conv(self.out_act(self.out_bn(h))))


class BigGANDiscriminator(nn.Module):
    def __init__(self, cfg: DCfg) -> None:
        super().__init__()
        self.num_classes = cfg.num_classes
        multipliers, downsample = D_CHANNELS[cfg.input_scale]
        channels = [cfg.in_channels] + [cfg.base_channels * m for m in multipliers]
        sn_eps = cfg.sn_eps if cfg.with_spectral_norm else None
        act = activation(cfg.act, inplace=False)
        self.blocks = nn.ModuleList(
            ResBlockDown(channels[i], channels[i + 1], act, sn_eps, downsample[i], head=i == 0)
            for i in range(len(multipliers))
        )
        # Attention follows the block that outputs 64x64 (none at 32 and 64, whose first block outputs 32x32).
        resolutions = [cfg.input_scale >> sum(downsample[: i + 1]) for i in range(len(downsample))]
        self.attention_after = resolutions.index(ATTENTION_RESOLUTION) if ATTENTION_RESOLUTION in resolutions else None
        self.attention = (
            SelfAttention(channels[self.attention_after + 1], sn_eps) if self.attention_after is not None else None
        )
        self.act = act
        self.fc = SNLinear(channels[-1], 1, sn_eps=sn_eps)
        self.embed = SNEmbedding(cfg.num_classes, channels[-1], sn_eps=sn_eps) if cfg.num_classes else None
        init_weights(self, cfg.init_type)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(self.num_classes, y)
        h = x.to(param_dtype(self))
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i == self.attention_after and self.attention is not None:
                h = self.attention(h)
        h = self.act(h).sum(dim=(2, 3))
        out = self.fc(h).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(y) * h).sum(1)
        return out.float()
