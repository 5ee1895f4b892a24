"""`dsgan prepare-data`: an image folder -> a packed dataset, read by `data.type: packed` without decoding.

Layout of OUT (all little-endian, C order; shapes and checksums in the manifest):

- `images.uint8`: the images, uint8 [N, C, R, R], resized and cropped by `load_pixels` (the image_folder loader's
  own function, so the pixels are the same);
- `labels.int64`: int64 [N], indices into the manifest's `classes` (all 0 for a flat, unconditional folder);
- `manifest.json`: counts, resolution, channels, class names, skipped files, each data file's size and sha256.
  Written last and atomically: a folder without it is unfinished, whatever else it holds.

Resumable: the source files are taken in sorted order, in chunks of `CHUNK_IMAGES`; chunks are decoded in parallel
but appended in order, and after each one `progress.json` (atomic) records how far the data files are valid. A
rerun truncates them to that point and continues, so a killed-and-rerun folder equals an uninterrupted one byte for
byte.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from dsgan.atomic import write_atomic
from dsgan.data import (
    IMAGE_EXTENSIONS,
    IMAGES_FILE,
    LABELS_FILE,
    MANIFEST_FILE,
    PACKED_FORMAT,
    _image_files,
    _visible,
    load_pixels,
    sha256_file,
)
from dsgan.errors import DataError

CHUNK_IMAGES = 256
"""Source files per chunk: the unit of parallel work and of resume (a kill loses at most one chunk per worker)."""
PROGRESS_FILE = "progress.json"

OnError = Literal["skip", "fail"]


def scan_source(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """(files, labels, class names) of an image folder: ImageNet's layout (root/<class>/<image>, images directly in
    root left out, as the image_folder loader does), or a flat folder without subfolders (unconditional)."""
    if not root.is_dir():
        raise DataError(f"prepare-data: {root}: no such directory")
    files = _image_files(root)
    if not files:
        raise DataError(f"prepare-data: {root}: no images ({'/'.join(e[1:] for e in IMAGE_EXTENSIONS)}) in it")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and _visible(p.name))
    if not classes:
        return files, [0] * len(files), []
    index = {name: c for c, name in enumerate(classes)}
    labelled = [(f, index[f.relative_to(root).parts[0]]) for f in files if len(f.relative_to(root).parts) > 1]
    return [f for f, _ in labelled], [c for _, c in labelled], classes


def _decode_chunk(job: tuple[list[Path], int, int]) -> tuple[bytes, list[tuple[int, str]]]:
    """The chunk's images that decode, as bytes of uint8 [k, C, R, R], and (position in chunk, error) of the rest."""
    files, resolution, channels = job
    mode = "L" if channels == 1 else "RGB"
    kept: list[np.ndarray] = []
    failed: list[tuple[int, str]] = []
    for i, path in enumerate(files):
        try:
            pixels = load_pixels(path, resolution, mode)
        except DataError as exc:
            failed.append((i, str(exc)))
            continue
        kept.append(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1))
    return (np.stack(kept).tobytes() if kept else b""), failed


def _write_json(path: Path, value: dict[str, Any]) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(value, indent=1) + "\n"))


class _Progress:
    """One carriage-return line on stderr: images done, rate, ETA."""

    def __init__(self, total_images: int, done_images: int) -> None:
        self.total, self.start_done, self.start_s = total_images, done_images, time.monotonic()

    def show(self, done_images: int) -> None:
        elapsed_s = max(time.monotonic() - self.start_s, 1e-9)
        rate = (done_images - self.start_done) / elapsed_s
        eta = f"{(self.total - done_images) / rate:.0f} s" if rate > 0 else "?"
        line = f"prepare-data: {done_images}/{self.total} images, {rate:.0f} images/s, ETA {eta}"
        print(f"\r{line}   ", end="" if done_images < self.total else "\n", file=sys.stderr, flush=True)


def prepare(
    src: Path,
    out: Path,
    resolution: int,
    channels: int = 3,
    on_error: OnError = "skip",
    workers: int = 1,
    stop_after_chunks: int | None = None,
) -> dict[str, Any]:
    """Pack `src` into `out` (module doc) and return the manifest; resumes an unfinished `out`.
    `stop_after_chunks` stops early as a kill would (tests of resume)."""
    if channels not in (1, 3):
        raise DataError(f"prepare-data --channels {channels}: 1 (L) or 3 (RGB)")
    if src.resolve() == out.resolve() or src.resolve() in out.resolve().parents:
        # Its files would sit among the images (an extra class folder, or loose files in a flat source).
        raise DataError(f"prepare-data: OUT {out} is inside SRC {src}; choose an OUT outside the image folder")
    files, labels, classes = scan_source(src)
    settings = {"source": str(src), "source_images": len(files), "resolution": resolution, "channels": channels}
    # Not --on-error: the chunks a failing run completed had no unreadable file, so they are the same either way.
    settings["chunk_images"] = CHUNK_IMAGES
    if (out / MANIFEST_FILE).exists():
        manifest: dict[str, Any] = json.loads((out / MANIFEST_FILE).read_text())
        if manifest.get("settings") != settings:
            raise DataError(f"prepare-data: {out} already holds a packed dataset made otherwise; choose another OUT")
        return manifest
    out.mkdir(parents=True, exist_ok=True)
    progress: dict[str, Any] = {"settings": settings, "chunks": 0, "images": 0, "skipped": []}
    if (out / PROGRESS_FILE).exists():
        progress = json.loads((out / PROGRESS_FILE).read_text())
        if progress.get("settings") != settings:
            raise DataError(f"prepare-data: {out} holds an unfinished preparation made otherwise; remove it")
    image_bytes = channels * resolution * resolution
    with open(out / IMAGES_FILE, "ab") as images, open(out / LABELS_FILE, "ab") as label_file:
        # Everything after the last recorded chunk is from a killed run: drop it.
        images.truncate(progress["images"] * image_bytes)
        label_file.truncate(progress["images"] * 8)
        chunks = [files[i : i + CHUNK_IMAGES] for i in range(0, len(files), CHUNK_IMAGES)]
        stop = len(chunks) if stop_after_chunks is None else min(len(chunks), progress["chunks"] + stop_after_chunks)
        todo = range(progress["chunks"], stop)
        bar = _Progress(len(files), min(progress["chunks"] * CHUNK_IMAGES, len(files)))
        decoded = _decoded([(chunks[k], resolution, channels) for k in todo], workers)
        for k, (data, failed) in zip(todo, decoded, strict=True):
            if failed and on_error == "fail":
                raise DataError(f"prepare-data: {failed[0][1]} (--on-error skip leaves such files out)")
            bad = {i for i, _ in failed}
            chunk_labels = [c for i, c in enumerate(labels[k * CHUNK_IMAGES : (k + 1) * CHUNK_IMAGES]) if i not in bad]
            images.write(data)
            label_file.write(np.asarray(chunk_labels, "<i8").tobytes())
            for f in (images, label_file):
                f.flush()
            progress["chunks"], progress["images"] = k + 1, progress["images"] + len(chunk_labels)
            progress["skipped"] += [{"path": str(chunks[k][i]), "error": error} for i, error in failed]
            _write_json(out / PROGRESS_FILE, progress)  # after the data: it never claims bytes not written
            bar.show(min((k + 1) * CHUNK_IMAGES, len(files)))
    if progress["chunks"] < len(chunks):
        return progress
    if progress["images"] == 0:
        raise DataError(f"prepare-data: {src}: none of its {len(files)} images could be decoded")
    count = progress["images"]
    manifest = {
        "format": PACKED_FORMAT,
        "images": count,
        "resolution": resolution,
        "channels": channels,
        "classes": classes,
        "class_counts": np.bincount(np.fromfile(out / LABELS_FILE, "<i8"), minlength=len(classes)).tolist()
        if classes
        else [],
        "files": {
            IMAGES_FILE: {"dtype": "uint8", "shape": [count, channels, resolution, resolution]},
            LABELS_FILE: {"dtype": "int64", "shape": [count]},
        },
        "skipped_count": len(progress["skipped"]),
        "skipped": progress["skipped"],
        "settings": settings,
    }
    for name, entry in manifest["files"].items():
        entry["bytes"], entry["sha256"] = (out / name).stat().st_size, sha256_file(out / name)
    _write_json(out / MANIFEST_FILE, manifest)
    (out / PROGRESS_FILE).unlink()
    return manifest


def _decoded(jobs: list[tuple[list[Path], int, int]], workers: int) -> Iterator[tuple[bytes, list[tuple[int, str]]]]:
    """The jobs' results in order, decoded on `workers` processes (PIL decoding holds the GIL in places)."""
    if workers == 1 or len(jobs) <= 1:
        yield from map(_decode_chunk, jobs)
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(_decode_chunk, jobs)
