"""Sample grids and image folders from a generator: fixed noise for training snapshots, `dsgan sample` for users."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn


def truncated_noise(batch: int, noise_size: int, truncation: float | None, generator: torch.Generator | None,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """Standard normal z; with `truncation`, entries with |z| > truncation are resampled (BigGAN's truncation
    trick: fidelity for variety)."""
    z = torch.randn(batch, noise_size, generator=generator)
    if truncation is not None:
        while (bad := z.abs() > truncation).any():
            z[bad] = torch.randn(int(bad.sum()), generator=generator)
    return z.to(device)


def fixed_noise(num_classes: int, per_class: int, noise_size: int, seed: int) -> tuple[torch.Tensor,
                                                                                        torch.Tensor | None]:
    """Deterministic (z, y) for snapshot grids, independent of the global RNG: one row per class (y = row), or
    8 rows when unconditional."""
    gen = torch.Generator().manual_seed(seed + 12345)
    rows = num_classes or 8
    z = torch.randn(rows * per_class, noise_size, generator=gen)
    y = torch.arange(num_classes).repeat_interleave(per_class) if num_classes else None
    return z, y


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def _atomic_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(tmp, format="PNG")
    os.replace(tmp, path)


def save_grid(images: torch.Tensor, path: Path, nrow: int, padding: int = 2) -> None:
    """A PNG grid with `nrow` images per row (written to a temporary name, then renamed)."""
    pixels = _to_uint8(images)
    n, h, w, c = pixels.shape
    rows = -(-n // nrow)
    grid = np.zeros((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[top : top + h, left : left + w] = pixels[i]
    _atomic_png(grid, Path(path))


def save_folder(images: torch.Tensor, labels: torch.Tensor | None, out_dir: Path) -> None:
    """Numbered PNGs, `000123_c7.png` (class in the name when conditional)."""
    pixels = _to_uint8(images)
    for i, array in enumerate(pixels):
        suffix = f"_c{int(labels[i])}" if labels is not None else ""
        _atomic_png(array, Path(out_dir) / f"{i:06d}{suffix}.png")


@torch.no_grad()
def generate(generator: nn.Module, num: int, classes: list[int] | None, truncation: float | None, seed: int,
             batch_size: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`num` images (on the CPU) and their labels, cycling over `classes` (default: all) when conditional."""
    gen = torch.Generator().manual_seed(seed)
    labels = None
    if generator.num_classes:
        pool = torch.tensor(classes if classes else range(generator.num_classes))
        labels = pool[torch.arange(num) % len(pool)]
    was_training = generator.training
    generator.eval()
    out = []
    for start in range(0, num, batch_size):
        n = min(batch_size, num - start)
        z = truncated_noise(n, generator.noise_size, truncation, gen, device)
        y = labels[start : start + n].to(device) if labels is not None else None
        out.append(generator(z, y).float().cpu())
    generator.train(was_training)
    return torch.cat(out), labels
