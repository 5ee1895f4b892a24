"""Datasets and a resumable distributed sampler.

`build_dataset` checks everything about the data (paths, class count, every image's header) and raises `DataError`
before any engine starts, so a bad path costs seconds, not a queue wait plus a DeepSpeed start-up.

The sampler is a pure function of one integer, the images consumed so far (summed over ranks; the trainer state
keeps it, as edm2 keeps `cur_nimg`). The data stream is the concatenation of per-epoch permutations
(`torch.randperm` seeded by (seed, epoch)); from stream position n, the next global batch is [n, n + G) with
G = batch_per_rank * world_size, and rank r takes [n + r*B, n + (r+1)*B). Consequences:

- every rank gets the same number of batches (the stream is infinite; nobody waits at an epoch end);
- every image appears exactly once per epoch across ranks: an epoch may end inside a batch, whose rest then comes
  from the next epoch's permutation; nothing is dropped, padded or repeated;
- resuming at image n continues the same order, mid-epoch, with no batches read and thrown away, also on another
  world size or batch size;
- the order depends only on (seed, G), not on the world size: 2 ranks x 32 and 4 ranks x 16 see the same stream;
- the order depends on `torch.randperm`'s algorithm: a torch upgrade in the middle of a run may change the rest of
  the current epoch (each later epoch is still a permutation).

With `xflip`, each epoch also draws one flip bit per image (seeded by (seed, epoch), like the permutation), so the
flips too are a pure function of the stream position. The bit travels in the index: the sampler yields `i + N` for
a mirrored image i of a dataset of N, and `make_loader` wraps the dataset in `XFlip` (2N items: the N images, then
their mirror images), so datasets stay unaware of flips.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from dsgan.config import Data, DigitsData, ImageFolderData, NvlabsZipData, PackedData
from dsgan.errors import DataError
from dsgan.pixels import IMAGE_EXTENSIONS, PIXEL_MODES, load_pixels, read_member, to_unit_range

PACKED_FORMAT = "dsgan-packed-1"
IMAGES_FILE, LABELS_FILE, MANIFEST_FILE = "images.uint8", "labels.int64", "manifest.json"
"""A packed dataset's files (`dsgan prepare-data`; layout in dsgan/prepare.py)."""
# ----------------------------------------------------------------------------------------------------------------
# Datasets


class TensorImages(Dataset):
    """Images already in memory as one [N, C, S, S] tensor in [-1, 1], so an item is an index (the digits)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, description: str) -> None:
        self.images, self.labels, self.description = images, labels, description

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


class XFlip(Dataset):
    """`dataset` (N items) followed by its horizontally mirrored copy: item i + N is item i flipped (see module doc)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset, self.base_len = dataset, len(dataset)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return 2 * self.base_len

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, label = self.dataset[i % self.base_len]
        return (torch.flip(image, dims=[-1]) if i >= self.base_len else image), label


class ImageFolder(Dataset):
    """Image files decoded, resized and cropped on access (`load_pixels`), in [-1, 1]."""

    def __init__(self, files: list[Path], labels: list[int], resolution: int, channels: int, description: str) -> None:
        self.files, self.labels, self.resolution = files, labels, resolution
        self.mode = "L" if channels == 1 else "RGB"
        self.description = description

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return to_unit_range(load_pixels(self.files[i], self.resolution, self.mode)), self.labels[i]


class PackedImages(Dataset):
    """A packed dataset (`dsgan prepare-data`): uint8 pixels memory-mapped (or read into RAM), in [-1, 1] through
    the same `to_unit_range` as ImageFolder, so both give bit-identical tensors for the same source images."""

    def __init__(self, root: Path, shape: tuple[int, ...], labels: np.ndarray, in_memory: bool) -> None:
        path = root / IMAGES_FILE
        self.images = (
            np.fromfile(path, np.uint8).reshape(shape) if in_memory else np.memmap(path, np.uint8, "r", 0, shape)
        )
        self.labels, self.description = labels, ""

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return to_unit_range(self.images[i]), int(self.labels[i])


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def _build_packed(cfg: PackedData, resolution: int, channels: int, conditional: bool, num_classes: int) -> PackedImages:
    root = cfg.root
    try:
        manifest = json.loads((root / MANIFEST_FILE).read_text())
    except FileNotFoundError:
        raise DataError(
            f"data.root={root}: no {MANIFEST_FILE}: not a packed dataset, or an unfinished `dsgan prepare-data` "
            "(rerun the same command to finish it)"
        ) from None
    except (OSError, ValueError) as exc:
        raise DataError(f"data.root={root}: unreadable {MANIFEST_FILE}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != PACKED_FORMAT:
        raise DataError(f"data.root={root}: {MANIFEST_FILE} is not a {PACKED_FORMAT} manifest (dsgan prepare-data)")
    try:  # a manifest of the wrong shape (edited by hand, from another tool) is a damaged dataset, not a crash
        have = (manifest["resolution"], manifest["channels"])
        if have != (resolution, channels):
            raise DataError(
                f"data.root={root} holds {have[1]}x{have[0]}x{have[0]} images but the models use "
                f"{channels}x{resolution}x{resolution}: rerun `dsgan prepare-data` with --resolution {resolution} "
                f"--channels {channels}"
            )
        classes = manifest["classes"]
        if conditional and len(classes) != num_classes:
            raise DataError(
                f"data.root={root} has {len(classes)} classes but the models have num_classes={num_classes}: make them "
                "equal, or set data.conditional=false and num_classes=0"
            )
        for name in (IMAGES_FILE, LABELS_FILE):
            entry, path = manifest["files"][name], root / name
            size = path.stat().st_size if path.exists() else None
            if size != entry["bytes"] or size != math.prod(entry["shape"]) * np.dtype(entry["dtype"]).itemsize:
                raise DataError(
                    f"data.root={root}: {name} has {size} bytes, the manifest says {entry['bytes']}: the dataset is "
                    "damaged or was copied incompletely; copy it again or rerun `dsgan prepare-data`"
                )
            if cfg.verify and sha256_file(path) != entry["sha256"]:
                raise DataError(
                    f"data.root={root}: {name} does not match the manifest's sha256: the dataset is damaged; copy it "
                    "again or rerun `dsgan prepare-data` (data.verify=false skips this check)"
                )
        count = manifest["images"]
        labels = np.fromfile(root / LABELS_FILE, "<i8") if conditional else np.zeros(count, np.int64)
        # Checked here, in one pass over the labels: an out-of-range label would otherwise fail deep in an embedding
        # (on GPU as a device-side assert) at whichever iteration first draws it (data.verify=false skips the hash).
        if len(labels) and (labels.min() < 0 or labels.max() >= max(num_classes, 1)):
            raise DataError(
                f"data.root={root}: labels range over {labels.min()}..{labels.max()} but the models have "
                f"num_classes={num_classes}: the labels file is damaged; rerun `dsgan prepare-data`"
            )
        shape = tuple(manifest["files"][IMAGES_FILE]["shape"])
        if len(labels) != shape[0]:
            raise DataError(
                f"data.root={root}: {len(labels)} labels for {shape[0]} images: the dataset is damaged; rerun "
                "`dsgan prepare-data`"
            )
        dataset = PackedImages(root, shape, labels, cfg.in_memory)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise DataError(
            f"data.root={root}: {MANIFEST_FILE} is damaged ({type(exc).__name__}: {exc}); rerun `dsgan prepare-data`"
        ) from None
    kind = f"{len(classes)} classes ({classes[0]}..{classes[-1]})" if conditional else "unconditional"
    dataset.description = (
        f"packed dataset {root}: {count} images, {kind}, {channels}x{resolution}x{resolution}, "
        f"sha256 {manifest['files'][IMAGES_FILE]['sha256'][:16]}"
    )
    return dataset


class NvlabsZip(Dataset):
    """A zip of NVlabs' `dataset_tool.py` (stylegan2-ada, stylegan3), read in place: its images in sorted name order
    (as NVlabs' ImageFolderDataset), decoded and fitted as ImageFolder does, labels from its `dataset.json`."""

    def __init__(self, path: Path, names: list[str], labels: list[int], resolution: int, channels: int) -> None:
        self.path, self.names, self.labels, self.resolution = path, names, labels, resolution
        self.mode, self.description = ("L" if channels == 1 else "RGB"), ""
        self._zip: tuple[int, zipfile.ZipFile] | None = None

    def _archive(self) -> zipfile.ZipFile:
        # One handle per process: a ZipFile shares its file position, so forked loader workers must not share one.
        if self._zip is None or self._zip[0] != os.getpid():
            self._zip = (os.getpid(), zipfile.ZipFile(self.path))
        return self._zip[1]

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_zip": None}

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        name = f"{self.path}:{self.names[i]}"
        pixels = load_pixels(read_member(self._archive(), self.names[i], name), self.resolution, self.mode, name)
        return to_unit_range(pixels), self.labels[i]


def _unsafe_member(member: str) -> bool:
    """An absolute name or one with `..`: dataset_tool.py never writes one, and an archive that has one is not to be
    trusted (extracted, it would write outside its folder)."""
    path = member.replace("\\", "/")
    return path.startswith("/") or ".." in path.split("/") or (path[:1].isalpha() and path[1:2] == ":")


ZIP_LABELS = (
    "a dataset.json with 'labels', which dataset_tool.py copies from its source folder's dataset.json or writes for "
    "CIFAR-10, MNIST and ImageNet"
)
"""Where an NVlabs zip's labels come from, for the errors about their absence."""


def nvlabs_zip_index(path: Path, field: str, with_labels: bool) -> tuple[list[str], list[int] | None]:
    """The image members of a `dataset_tool.py` zip in sorted name order (NVlabs' order) and, `with_labels`, their
    labels from its `dataset.json` (None when it has none). Shared by `data.type: nvlabs_zip` and
    `dsgan prepare-data`; errors name `field` (the config key or the command's argument)."""
    try:
        with zipfile.ZipFile(path) as archive:
            all_names = archive.namelist()
            meta_json = archive.read("dataset.json") if with_labels and "dataset.json" in all_names else b"null"
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{field}={path}: not a readable zip: {exc}") from None
    unsafe = [n for n in all_names if _unsafe_member(n)]
    if unsafe:
        raise DataError(
            f"{field}={path}: member name {unsafe[0]!r} is absolute or leads out of the archive ({len(unsafe)} such "
            "names): not a dataset_tool.py zip; rebuild it with relative names"
        )
    names = sorted(n for n in all_names if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise DataError(f"{field}={path}: no images in the zip")
    try:
        meta = json.loads(meta_json)
    except ValueError as exc:
        raise DataError(f"{field}={path}: its dataset.json is not JSON: {exc}") from None
    pairs = meta.get("labels") if isinstance(meta, dict) else None
    if not pairs:
        return names, None
    try:
        by_name = {str(name).replace("\\", "/"): label for name, label in pairs}
    except (TypeError, ValueError):
        raise DataError(f"{field}={path}: dataset.json 'labels' is not a list of [name, label] pairs") from None
    missing = [n for n in names if n not in by_name]
    if missing:
        raise DataError(f"{field}={path}: dataset.json has no label for {missing[0]} ({len(missing)} images)")
    labels = [by_name[n] for n in names]
    if not all(type(label) is int and label >= 0 for label in labels):  # JSON true is a bool, not a class
        raise DataError(f"{field}={path}: dataset.json labels are not class indices (integers >= 0)")
    return names, labels


def _build_nvlabs_zip(
    cfg: NvlabsZipData, resolution: int, channels: int, conditional: bool, num_classes: int
) -> NvlabsZip:
    path = cfg.path
    names, labels = nvlabs_zip_index(path, "data.path", conditional)
    if conditional:
        if labels is None:
            raise DataError(
                f"data.path={path}: no labels ({ZIP_LABELS}) but the models are conditional: set "
                "data.conditional=false and num_classes=0, or add them"
            )
        if max(labels) + 1 != num_classes:
            raise DataError(
                f"data.path={path}: labels 0..{max(labels)} ({max(labels) + 1} classes) but the models have "
                f"num_classes={num_classes}"
            )
    kind = f"{num_classes} classes" if conditional else "unconditional"
    dataset = NvlabsZip(path, names, labels or [0] * len(names), resolution, channels)
    dataset.description = f"NVlabs zip {path}: {len(names)} images, {kind}, {channels}x{resolution}x{resolution}"
    return dataset


AnyDataset = TensorImages | ImageFolder | PackedImages | NvlabsZip


def _visible(name: str) -> bool:
    """Hidden entries are skipped: `.ipynb_checkpoints` is not a class, `._x.png` (macOS metadata) not an image."""
    return not name.startswith(".")


def _image_files(folder: Path) -> list[Path]:
    """Images anywhere below `folder`, following symlinks (datasets are often linked into place), each file once:
    a folder reached again through a link (a loop, or a second link to it) is not walked again, and a file linked
    from two places counts at its first path in walk order. Sorted: the index of an image must be the same on
    every rank and after a restart, or the sampler's stream would differ."""
    found: dict[str, Path] = {}
    walked: set[str] = set()
    for parent, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(parent)
        if real in walked:
            dirs[:] = []
            continue
        walked.add(real)
        dirs[:] = sorted(d for d in dirs if _visible(d))
        for n in sorted(names):
            if _visible(n) and n.lower().endswith(IMAGE_EXTENSIONS):
                found.setdefault(os.path.realpath(os.path.join(parent, n)), Path(parent, n))
    return sorted(found.values())


def _check_header(path: Path) -> str | None:
    try:
        with Image.open(path) as img:
            if img.mode not in PIXEL_MODES:
                return f"pixel mode {img.mode} is not supported (8/16-bit gray, palette, RGB(A), CMYK are)"
            img.verify()
    except Exception as exc:  # PIL raises many types for corrupt files (SyntaxError, struct.error, ...)
        return f"{type(exc).__name__}: {exc}"
    return None


def _verify_images(files: list[Path]) -> None:
    """Open every file with PIL's `verify` (header only for JPEG; all chunks and CRCs for PNG). Measured from the
    page cache on 2 cores: 0.03-0.04 ms per 500x375 JPEG, 0.25 ms per PNG of that size, so ~1 minute per rank
    for ImageNet-1k's 1.28M JPEGs; cold or network storage is slower, which is why the opens run on threads (they
    wait on the file system, not the GIL). Every rank checks, so none can start engines and then wait in a
    collective for a rank that failed alone."""
    chunk = 4096  # bounded number of pending futures for million-file datasets
    with ThreadPoolExecutor(max_workers=min(32, 4 * (os.cpu_count() or 1))) as pool:
        for start in range(0, len(files), chunk):
            part = files[start : start + chunk]
            for path, problem in zip(part, pool.map(_check_header, part), strict=True):
                if problem is not None:
                    raise DataError(f"data.root: unreadable image {path}: {problem}; remove or replace the file")


def _scan_image_folder(
    cfg: ImageFolderData, conditional: bool, num_classes: int
) -> tuple[list[Path], list[int], list[str], int]:
    """(files, labels, class names, images left out); labels index the sorted class folder names."""
    root = cfg.root
    if not root.exists():
        raise DataError(f"data.root={root}: no such directory")
    if not root.is_dir():
        raise DataError(f"data.root={root}: not a directory (expected root/<class>/<image>)")
    files = _image_files(root)
    if not files:
        raise DataError(f"data.root={root}: no images ({'/'.join(e[1:] for e in IMAGE_EXTENSIONS)}) in it")
    if not conditional:
        _verify_images(files)
        return files, [0] * len(files), [], 0
    found = len(files)
    files, labels, classes = class_folder_images(root, files)
    if len(classes) != num_classes:
        shown = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
        raise DataError(
            f"data.root={root} has {len(classes)} class folders ({shown or 'none'}) but the models have "
            f"num_classes={num_classes}: make them equal, or set data.conditional=false and num_classes=0"
        )
    empty = sorted(set(classes) - {classes[c] for c in labels})
    if empty:
        raise DataError(f"data.root={root}: class folders without images: {', '.join(empty[:5])}")
    left_out = found - len(files)  # images directly in root: no class
    _verify_images(files)
    return files, labels, classes, left_out


def class_folder_images(root: Path, files: list[Path]) -> tuple[list[Path], list[int], list[str]]:
    """(files, labels, class names) of ImageNet's layout, root/<class>/<image>: labels index the sorted class folder
    names. `files` are the images below `root` (`_image_files`); those directly in root belong to no class and are
    left out, as in torchvision's ImageFolder. The image_folder loader and `dsgan prepare-data` both use it."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and _visible(p.name))
    index = {name: c for c, name in enumerate(classes)}
    labelled = [(f, index[f.relative_to(root).parts[0]]) for f in files if len(f.relative_to(root).parts) > 1]
    return [f for f, _ in labelled], [c for _, c in labelled], classes


def build_dataset(cfg: Data, resolution: int, channels: int, num_classes: int) -> AnyDataset:
    """Validate and build the dataset; every problem is a DataError naming the path. Items are
    (image float32 [channels, resolution, resolution] in [-1, 1], label); the label is 0 when unconditional
    (`cfg.conditional` false or num_classes 0)."""
    conditional = cfg.conditional and num_classes > 0
    if isinstance(cfg, DigitsData):
        from dsgan.digits import NUM_CLASSES, digits_tensors

        if conditional and num_classes != NUM_CLASSES:
            raise DataError(f"data.type='digits' has {NUM_CLASSES} classes but the models have {num_classes}")
        images, digit_labels = digits_tensors(resolution, channels)
        if not conditional:
            digit_labels = torch.zeros_like(digit_labels)
        kind = f"{NUM_CLASSES} classes" if conditional else "unconditional"
        return TensorImages(
            images, digit_labels, f"digits: {len(images)} images, {kind}, {channels}x{resolution}x{resolution}"
        )
    if isinstance(cfg, PackedData):
        return _build_packed(cfg, resolution, channels, conditional, num_classes)
    if channels not in (1, 3):
        raise DataError(f"data.type='{cfg.type}' decodes to 1 (L) or 3 (RGB) channels, but the models use {channels}")
    if isinstance(cfg, NvlabsZipData):
        return _build_nvlabs_zip(cfg, resolution, channels, conditional, num_classes)
    files, labels, classes, left_out = _scan_image_folder(cfg, conditional, num_classes)
    kind = f"{len(classes)} classes ({classes[0]}..{classes[-1]})" if conditional else "unconditional"
    description = f"image folder {cfg.root}: {len(files)} images, {kind}, {channels}x{resolution}x{resolution}"
    if left_out:  # said in the start-up line rather than dropped without a word
        description += f"; {left_out} images directly in data.root left out (a conditional model needs a class folder)"
    return ImageFolder(files, labels, resolution, channels, description)


def dataset_summary(dataset: AnyDataset) -> str:
    """One line for the start-up log: source, image count, classes, image shape."""
    return dataset.description


# ----------------------------------------------------------------------------------------------------------------
# Sampling


def _epoch_seed(seed: int, epoch: int, purpose: str = "") -> int:
    """A 64-bit seed per (seed, epoch, purpose): any Python ints, no overflow, no collisions between nearby pairs.
    The permutation's purpose is "" (the seeds of existing runs' streams stay as they were)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{epoch}{purpose}".encode()).digest()[:8], "little")


class StreamSampler(Sampler[int]):
    """This rank's indices of the infinite data stream from stream position `start_image` on (see the module doc)."""

    def __init__(
        self,
        dataset_len: int,
        batch_per_rank: int,
        rank: int,
        world_size: int,
        seed: int,
        start_image: int = 0,
        xflip: bool = False,
    ) -> None:
        if dataset_len <= 0 or batch_per_rank <= 0 or not 0 <= rank < world_size or start_image < 0:
            raise ValueError(
                f"StreamSampler(dataset_len={dataset_len}, batch_per_rank={batch_per_rank}, rank={rank}, "
                f"world_size={world_size}, start_image={start_image}): need sizes > 0, 0 <= rank < world_size"
            )
        self.dataset_len, self.batch_per_rank, self.rank, self.world_size = (
            dataset_len,
            batch_per_rank,
            rank,
            world_size,
        )
        self.seed, self.start_image, self.xflip = seed, start_image, xflip
        self.global_batch = batch_per_rank * world_size
        self._cached_epoch, self._cached_perm = -1, torch.empty(0, dtype=torch.long)

    def _permutation(self, epoch: int) -> torch.Tensor:
        # One cached epoch: batches are read in order, so a permutation is drawn once per epoch (randperm of a
        # million takes ~10 ms).
        if epoch != self._cached_epoch:
            generator = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
            self._cached_perm = torch.randperm(self.dataset_len, generator=generator)
            if self.xflip:  # a mirrored image i is item i + N of XFlip; the bit belongs to the image, not the position
                generator.manual_seed(_epoch_seed(self.seed, epoch, ":xflip"))
                flips = torch.randint(0, 2, (self.dataset_len,), generator=generator)
                self._cached_perm = self._cached_perm + self.dataset_len * flips[self._cached_perm]
            self._cached_epoch = epoch
        return self._cached_perm

    def _positions(self, start: int, stop: int) -> list[int]:
        """Dataset indices at stream positions [start, stop), crossing epochs as needed."""
        out: list[int] = []
        while start < stop:
            epoch, offset = divmod(start, self.dataset_len)
            take = min(stop - start, self.dataset_len - offset)
            out += self._permutation(epoch)[offset : offset + take].tolist()
            start += take
        return out

    def batch_indices(self, k: int) -> list[int]:
        """This rank's dataset indices for the k-th global batch after `start_image` (+ N for a flip: module doc)."""
        start = self.start_image + k * self.global_batch + self.rank * self.batch_per_rank
        return self._positions(start, start + self.batch_per_rank)

    def epoch_of(self, batch_index: int) -> int:
        """The epoch in which the k-th global batch after `start_image` starts."""
        return (self.start_image + batch_index * self.global_batch) // self.dataset_len

    def __iter__(self) -> Iterator[int]:
        k = 0
        while True:
            yield from self.batch_indices(k)
            k += 1


def make_loader(
    dataset: AnyDataset, sampler: StreamSampler, batch_per_rank: int, num_workers: int, pin_memory: bool
) -> DataLoader:
    """An infinite loader: the trainer calls `next()` once per iteration and gets the sampler's next batch

    `num_workers` and `pin_memory` can come straight from the config: in-memory data (the digits) ignores
    `num_workers` and is indexed in the main process, where workers would only add inter-process copies; pinning
    applies only when CUDA is available.
    """
    if batch_per_rank != sampler.batch_per_rank:
        raise ValueError(f"batch_per_rank={batch_per_rank} != the sampler's {sampler.batch_per_rank}")
    if isinstance(dataset, TensorImages):
        num_workers = 0
    return DataLoader(
        XFlip(dataset) if sampler.xflip else dataset,
        batch_size=batch_per_rank,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory and torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        # Its own RNG: making an iterator draws a worker base seed, from the global RNG otherwise, which would shift
        # the stream that StyleGAN2's forward draws from after a resume has restored it. (Workers only decode.)
        generator=torch.Generator().manual_seed(0),
    )
