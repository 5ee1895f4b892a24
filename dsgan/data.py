"""Datasets and a resumable distributed sampler.

The sampler is a pure function of one integer, the number of global batches consumed: the data stream is the
concatenation of per-epoch permutations (seeded by (seed, epoch)); global batch k is stream positions
[k*G, (k+1)*G) with G = batch_per_rank * world_size, and rank r takes the r-th slice of it. So every rank gets the
same number of batches, every image appears exactly once per epoch across ranks (an epoch may end inside a batch;
nothing is dropped or repeated), resuming at batch k continues mid-epoch in the same order, and the order does not
depend on the world size when G is the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, Sampler

from dsgan.config import Data, DigitsData, ImageFolderData
from dsgan.errors import DataError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class TensorImages(Dataset):
    """Images already in memory as one [N, C, S, S] tensor in [-1, 1] (the digits: 1797 tiny images)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, description: str) -> None:
        self.images, self.labels, self.description = images, labels, description

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


def digits_tensors(resolution: int, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits (values 0..16, shipped inside the package), upscaled bilinearly to [-1, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 8 - 1
    x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False).clamp(-1, 1)
    return x.expand(-1, channels, -1, -1).contiguous(), torch.tensor(digits.target)


class ImageFolder(Dataset):
    """ImageNet layout (root/<class>/<image>), labels from the sorted folder names; resized on the shorter side and
    center-cropped to the model scale."""

    def __init__(self, files: list[Path], labels: list[int], resolution: int, channels: int, description: str):
        self.files, self.labels, self.resolution = files, labels, resolution
        self.mode = "L" if channels == 1 else "RGB"
        self.description = description

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        try:
            with Image.open(self.files[i]) as img:
                img = img.convert(self.mode)
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"{self.files[i]}: cannot read image: {exc}") from None
        s = self.resolution
        scale = s / min(img.size)
        img = img.resize((max(s, round(img.width * scale)), max(s, round(img.height * scale))), Image.BICUBIC)
        left, top = (img.width - s) // 2, (img.height - s) // 2
        img = img.crop((left, top, left + s, top + s))
        x = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()) / 127.5 - 1
        return (x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1)), self.labels[i]


def _scan_image_folder(cfg: ImageFolderData, num_classes: int) -> tuple[list[Path], list[int], list[str]]:
    root = cfg.root
    if not root.exists():
        raise DataError(f"data.root: {root}: no such directory")
    if not root.is_dir():
        raise DataError(f"data.root: {root}: not a directory")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if cfg.conditional:
        if len(classes) != num_classes:
            raise DataError(
                f"data.root: {root} has {len(classes)} class folders but the models have num_classes={num_classes}"
            )
        files = [(f, c) for c, name in enumerate(classes) for f in sorted((root / name).rglob("*"))]
    else:
        files = [(f, 0) for f in sorted(root.rglob("*"))]
    files = [(f, c) for f, c in files if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()]
    if not files:
        raise DataError(f"data.root: {root}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    if cfg.conditional:
        empty = sorted(set(classes) - {classes[c] for _, c in files})
        if empty:
            raise DataError(f"data.root: {root}: class folders without images: {', '.join(empty[:5])}")
    for f, _ in files:  # header check of every file: costs a directory walk, saves a crash hours into a run
        try:
            with Image.open(f) as img:
                img.verify()
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"data.root: unreadable image {f}: {exc}") from None
    return [f for f, _ in files], [c for _, c in files], classes


def build_dataset(cfg: Data, resolution: int, channels: int, num_classes: int) -> Dataset:
    """Validate and build the dataset; every problem is a DataError before any engine starts. Items are
    (image [channels, resolution, resolution] in [-1, 1], label; 0 when unconditional)."""
    if isinstance(cfg, DigitsData):
        images, labels = digits_tensors(resolution, channels)
        if not cfg.conditional:
            labels = torch.zeros_like(labels)
        return TensorImages(images, labels, f"digits: {len(images)} images, 10 classes, {resolution}x{resolution}")
    files, labels, classes = _scan_image_folder(cfg, num_classes)
    kind = f"{len(classes)} classes" if cfg.conditional else "unconditional"
    return ImageFolder(files, labels, resolution, channels,
                       f"{cfg.root}: {len(files)} images, {kind}, {resolution}x{resolution}")


def dataset_summary(dataset: Dataset) -> str:
    return dataset.description


class StreamSampler(Sampler[int]):
    """This rank's indices of the infinite data stream, from global batch `start_batch` on (see module doc)."""

    def __init__(self, dataset_len: int, batch_per_rank: int, rank: int, world_size: int, seed: int,
                 start_batch: int = 0) -> None:
        self.n, self.batch, self.rank, self.world = dataset_len, batch_per_rank, rank, world_size
        self.seed, self.start_batch = seed, start_batch
        self._perm_epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=gen), epoch
        return self._perm

    def batch_indices(self, k: int) -> list[int]:
        start = (k * self.world + self.rank) * self.batch
        return [int(self._permutation(pos // self.n)[pos % self.n]) for pos in range(start, start + self.batch)]

    def epoch_of(self, k: int) -> int:
        return (k * self.world * self.batch) // self.n

    def __iter__(self) -> Iterator[int]:
        k = self.start_batch
        while True:
            yield from self.batch_indices(k)
            k += 1


def make_loader(dataset: Dataset, sampler: StreamSampler, batch_per_rank: int, num_workers: int,
                pin_memory: bool) -> DataLoader:
    """An infinite loader. In-memory data is indexed in the main process (workers would only add copies)."""
    if isinstance(dataset, TensorImages):
        num_workers = 0
    return DataLoader(dataset, batch_size=batch_per_rank, sampler=sampler, num_workers=num_workers,
                      pin_memory=pin_memory and torch.cuda.is_available(), persistent_workers=num_workers > 0,
                      drop_last=False)
