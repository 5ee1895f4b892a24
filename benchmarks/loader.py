"""Loader throughput: images/s delivered to the training loop by `packed` vs `image_folder` on the same images,
and `dsgan prepare-data`'s own rate from the folder and from a zip of it.

    python benchmarks/loader.py [--images 2000] [--resolution 128] [--batch 64] [--workers 1 2]

Generates `--images` JPEGs of ImageNet's typical size (500x375, smooth content plus noise: ~30-60 KB each at
quality 90) and a stored (uncompressed) zip of them, as NVlabs' dataset_tool.py writes; packs both with `dsgan
prepare-data` on each worker count, and reads the folder, the zip in place (`nvlabs_zip`) and the packed dataset
through `make_loader` (the trainer's own loader, xflip on) for one epoch after a warm-up batch, with 1 and 2
workers. The files stay in the page cache, so this measures decoding and copying, not the disk.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dsgan.config import ImageFolderData, NvlabsZipData, PackedData  # noqa: E402
from dsgan.data import StreamSampler, build_dataset, make_loader  # noqa: E402
from dsgan.prepare import prepare  # noqa: E402


def make_jpegs(folder: Path, count: int) -> None:
    """Photograph-like JPEGs: a random low-resolution image upsampled (smooth regions, edges) plus sensor noise."""
    rng = np.random.default_rng(0)
    for i in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((500, 375))
        pixels = np.asarray(coarse, np.int16) + rng.integers(-12, 13, (375, 500, 3), dtype=np.int16)
        path = folder / f"class_{i % 10}" / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)


def zip_folder(src: Path, path: Path) -> Path:
    """The folder's images as a stored zip in sorted order (dataset_tool.py stores its PNGs uncompressed too)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for f in sorted(src.rglob("*.jpg")):
            archive.write(f, f.relative_to(src).as_posix())
    return path


def prepare_per_s(src: Path, out: Path, resolution: int, workers: int) -> float:
    start = time.perf_counter()
    manifest = prepare(src, out, resolution, workers=workers)
    return manifest["images"] / (time.perf_counter() - start)


def images_per_s(
    data: ImageFolderData | PackedData | NvlabsZipData, resolution: int, batch: int, workers: int
) -> float:
    dataset = build_dataset(data, resolution, 3, 10)
    sampler = StreamSampler(len(dataset), batch, 0, 1, seed=0, xflip=True)
    batches = iter(make_loader(dataset, sampler, batch, workers, pin_memory=False))
    next(batches)  # warm-up: worker start-up is not throughput
    count = max(1, len(dataset) // batch)
    start = time.perf_counter()
    for _ in range(count):
        next(batches)
    return count * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "jpegs")
        make_jpegs(src, args.images)
        zipped = zip_folder(src, Path(tmp, "jpegs.zip"))
        mean_kb = sum(f.stat().st_size for f in src.rglob("*.jpg")) / args.images / 1e3
        print(f"{args.images} JPEGs 500x375 ({mean_kb:.0f} KB each) -> {args.resolution}x{args.resolution}")
        print("| workers | prepare-data from the folder (images/s) | prepare-data from a zip (images/s) |")
        print("|---:|---:|---:|")
        for workers in args.workers:
            folder_rate = prepare_per_s(src, Path(tmp, f"folder{workers}"), args.resolution, workers)
            zip_rate = prepare_per_s(zipped, Path(tmp, f"zip{workers}"), args.resolution, workers)
            print(f"| {workers} | {folder_rate:.0f} | {zip_rate:.0f} |")
        out = Path(tmp, f"folder{args.workers[0]}")
        print(
            "| workers | image_folder (img/s) | nvlabs_zip (img/s) | packed (img/s) | packed, in_memory (img/s) | "
            "packed / image_folder |"
        )
        print("|---:|---:|---:|---:|---:|---:|")
        for workers in args.workers:
            size, batch = args.resolution, args.batch
            folder = images_per_s(ImageFolderData(root=src, xflip=True), size, batch, workers)
            in_zip = images_per_s(NvlabsZipData(path=zipped, conditional=False, xflip=True), size, batch, workers)
            packed = images_per_s(PackedData(root=out, xflip=True), size, batch, workers)
            memory = images_per_s(PackedData(root=out, xflip=True, in_memory=True), size, batch, workers)
            print(f"| {workers} | {folder:.0f} | {in_zip:.0f} | {packed:.0f} | {memory:.0f} | {packed / folder:.1f} |")


if __name__ == "__main__":
    main()
