"""Sample grids and image folders from a generator: fixed noise for training snapshots, `dsgan sample` for users.

Generators are called `G(z [B, noise_size], y [B] | None) -> [B, C, S, S]` in [-1, 1] and carry `noise_size` and
`num_classes` (0 = unconditional). Noise comes from a private `torch.Generator`, never the global RNG, so that
sampling neither depends on nor disturbs the training RNG.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import nn

from dsgan.atomic import write_atomic

if TYPE_CHECKING:
    from dsgan.models import Generator

FIXED_NOISE_SALT = 12345
"""Added to the run seed so the snapshot noise is not the same stream as anything else seeded by it."""


def truncated_noise(
    num: int, noise_size: int, truncation: float | None, generator: torch.Generator | None
) -> torch.Tensor:
    """Standard normal z [num, noise_size]; with `truncation` t, the normal truncated to [-t, t] (BigGAN's
    truncation trick: fidelity for variety). Drawn by inverse CDF, which has the distribution of resampling every
    |z| > t until none is left, but a fixed cost: rejection needs ~1/P(|z| < t) rounds, ~10^4 at t=1e-4."""
    if truncation is None:
        return torch.randn(num, noise_size, generator=generator)
    if not truncation > 0:
        raise ValueError(f"truncation={truncation} must be > 0 (|z| is resampled above it; BigGAN uses 0.04..2)")
    # float64: the tails of ndtr/ndtri lose precision in float32 for t > ~5.
    lo = torch.special.ndtr(torch.tensor(-float(truncation), dtype=torch.float64))
    u = torch.rand(num, noise_size, generator=generator, dtype=torch.float64)
    z = torch.special.ndtri(lo + u * (1 - 2 * lo))
    return z.clamp(-truncation, truncation).float()


def fixed_noise(
    num_classes: int, per_class: int, noise_size: int, seed: int, rows: int = 8
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Deterministic (z, y) for snapshot grids, independent of the global RNG: one row of `per_class` samples per
    class (y = row index), or `rows` rows and y None when unconditional (num_classes 0)."""
    generator = torch.Generator().manual_seed(seed + FIXED_NOISE_SALT)
    count = (num_classes or rows) * per_class
    z = torch.randn(count, noise_size, generator=generator)
    y = torch.arange(num_classes).repeat_interleave(per_class) if num_classes else None
    return z, y


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """[B, C, H, W] in [-1, 1] -> [B, H, W, C] uint8."""
    if images.ndim != 4:
        raise ValueError(f"expected images [B, C, H, W], got shape {tuple(images.shape)}")
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def _write_png(pixels: np.ndarray, path: Path) -> None:
    image = Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels)
    write_atomic(path, lambda f: image.save(f, format="PNG"))


def save_grid(images: torch.Tensor, path: Path | str, nrow: int, padding: int = 2) -> None:
    """One PNG of `images` ([B, C, H, W] in [-1, 1]), `nrow` images per row, `padding` black pixels around each."""
    if nrow <= 0:
        raise ValueError(f"nrow={nrow} must be > 0")
    pixels = _to_uint8(images)
    n, h, w, c = pixels.shape
    rows = -(-n // nrow)
    grid = np.zeros((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[top : top + h, left : left + w] = pixels[i]
    _write_png(grid, Path(path))


def save_folder(images: torch.Tensor, labels: torch.Tensor | None, out_dir: Path | str) -> None:
    """Numbered PNGs, `000123_c7.png` (the class in the name when conditional, `000123.png` otherwise)."""
    pixels = _to_uint8(images)
    for i, image in enumerate(pixels):
        suffix = f"_c{int(labels[i])}" if labels is not None else ""
        _write_png(image, Path(out_dir) / f"{i:06d}{suffix}.png")


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """eval() and no_grad for the duration; every submodule's own training flag is restored afterwards (a module
    kept in eval inside a training network stays so)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training


def generate(
    generator: Generator, z: torch.Tensor, y: torch.Tensor | None, device: torch.device | str, **kwargs: object
) -> torch.Tensor:
    """The one way dsgan runs G for images rather than for training: `G(z, y, **kwargs)` in `eval_mode` (BatchNorm
    running statistics, no gradients), with z in G's parameter dtype (a bf16 module takes bf16 noise); float32 on
    `device`. Autocast, where wanted, is the caller's context. Randomness inside G (StyleGAN2's noise injection)
    comes from the global RNG seeded by z's bytes and restored afterwards: the images are a function of (z, y), and
    sampling in the middle of training leaves the training RNG as it was."""
    param = next(generator.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type=device.type):
        torch.manual_seed(zlib.crc32(z.detach().float().cpu().numpy().tobytes()))
        with eval_mode(generator):
            return generator(z.to(device=device, dtype=dtype), None if y is None else y.to(device), **kwargs).float()


def sample(
    generator: Generator,
    num: int,
    classes: list[int] | None,
    truncation: float | None,
    seed: int,
    batch_size: int,
    device: torch.device | str,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`num` images (float32, on the CPU) and their labels (None when unconditional), with labels cycling over
    `classes` (default: all), for `dsgan sample`. `truncation` is BigGAN's on |z|, or, for a generator with a style
    space (`mean_latent`), StyleGAN's towards the mean latent (t in (0, 1] keeps that fraction of w - mean). All
    noise is drawn up front from `seed`, so the images do not depend on `batch_size`."""
    if num <= 0 or batch_size <= 0:
        raise ValueError(f"num={num} and batch_size={batch_size} must be > 0")
    num_classes = generator.num_classes
    labels = None
    if num_classes:
        pool = classes or list(range(num_classes))
        if not all(0 <= c < num_classes for c in pool):
            raise ValueError(f"classes={classes}: the generator has num_classes={num_classes}")
        labels = torch.tensor(pool)[torch.arange(num) % len(pool)]
    elif classes:
        raise ValueError(f"classes={classes}: the generator is unconditional")
    rng = torch.Generator().manual_seed(seed)
    mean_latent = getattr(generator, "mean_latent", None)  # a style space (StyleGAN2)
    means = None
    if mean_latent is not None and truncation is not None:
        # StyleGAN's truncation: w' = mean + t (w - mean) towards the mean style code (of each sample's class)
        with eval_mode(generator):
            drawn = torch.Generator(device).manual_seed(seed)
            per_class = [mean_latent(generator=drawn, label=c) for c in range(num_classes)] if num_classes else []
            means = torch.cat(per_class)[labels.to(device)] if labels is not None else mean_latent(generator=drawn)
    z = truncated_noise(num, generator.noise_size, None if mean_latent else truncation, rng)
    out = []
    for i in range(0, num, batch_size):
        part = slice(i, i + batch_size)
        y = None if labels is None else labels[part]
        if means is None:
            out.append(generate(generator, z[part], y, device).cpu())
        else:
            mean = means if len(means) == 1 else means[part]
            out.append(generate(generator, z[part], y, device, truncation=truncation, truncation_latent=mean).cpu())
    return torch.cat(out), labels
