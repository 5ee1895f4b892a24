"""Small models for tests: a tiny generator with dsgan's generator interface, and a BigGAN-32 override set."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BIGGAN32_10 = (
    "generator.model.type=BigGANGenerator",
    "discriminator.model.type=BigGANDiscriminator",
    "generator.model.num_classes=10",
    "discriminator.model.num_classes=10",
    "generator.model.output_scale=32",
    "discriminator.model.input_scale=32",
)
"""`--set` overrides that turn the default run into a BigGAN pair at 32x32 for the digits' 10 classes."""


class TinyGenerator(nn.Module):
    """G(z, y) -> [B, 3, S, S] in [-1, 1], with noise_size, num_classes and output_scale like dsgan's generators.

    BatchNorm (and dropout, when given) make a forgotten eval() visible: the output then depends on the batch. The
    weights depend on the arguments only, and the calls are recorded."""

    noise_size = 8

    def __init__(self, num_classes: int = 10, output_scale: int = 16, dropout: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.num_classes, self.output_scale = num_classes, output_scale
        self.embed = nn.Embedding(max(num_classes, 1), self.noise_size)
        self.fc = nn.Linear(self.noise_size, 3 * 4 * 4)
        self.bn = nn.BatchNorm1d(3 * 4 * 4)
        self.dropout = nn.Dropout(dropout)
        self.calls: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def forward(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        self.calls.append((z, y))
        h = z if y is None else z + self.embed(y)
        x = torch.tanh(self.dropout(self.bn(self.fc(h)))).view(-1, 3, 4, 4)
        return F.interpolate(x, size=(self.output_scale,) * 2, mode="nearest")
