"""`dsgan prepare-data`: an image folder or an NVlabs dataset zip -> a packed dataset, read by `data.type: packed`
without decoding.

Layout of OUT (all little-endian, C order; shapes and checksums in the manifest):

- `images.uint8`: the images, uint8 [N, C, R, R], resized and cropped by `load_pixels` (dsgan/pixels.py: the
  image_folder and nvlabs_zip loaders' own function, so the pixels are the same);
- `labels.int64`: int64 [N], indices into the manifest's `classes` (all 0 for an unconditional source);
- `manifest.json`: counts, resolution, channels, class names, skipped files, each data file's size and sha256.
  Written last and atomically: a folder without it is unfinished, whatever else it holds.

Resumable: the source images are taken in sorted order (a folder's files; a zip's members, NVlabs' order), in
chunks of `CHUNK_IMAGES`; chunks are decoded in parallel but appended in order, and after each one `progress.json`
(atomic) records how far the data files are valid. A rerun truncates them to that point and continues, so a
killed-and-rerun folder equals an uninterrupted one byte for byte.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import sys
import time
import zipfile
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.pool import AsyncResult
from pathlib import Path
from typing import Any, Literal

import numpy as np

from dsgan.atomic import write_atomic
from dsgan.data import (
    IMAGES_FILE,
    LABELS_FILE,
    MANIFEST_FILE,
    PACKED_FORMAT,
    ZIP_LABELS,
    _image_files,
    class_folder_images,
    nvlabs_zip_index,
    sha256_file,
)
from dsgan.errors import DataError
from dsgan.pixels import IMAGE_EXTENSIONS, load_pixels, read_member
from dsgan.tracking import hms

CHUNK_IMAGES = 256
"""Source files per chunk: the unit of parallel work and of resume (a kill loses at most one chunk per worker)."""
PROGRESS_FILE = "progress.json"

OnError = Literal["skip", "fail"]
LabelsFrom = Literal["auto", "required", "none"]
"""auto: class subfolders or the zip's dataset.json labels if there are any; required: an error if there are none;
none: unconditional (every image of a folder, as image_folder reads it with data.conditional=false)."""

Item = Path | bytes | DataError
"""One source image as a decoding worker gets it: a file it reads itself, a zip member's bytes (read in the main
process, which holds the archive open), or the error of reading that member."""
Job = tuple[list[tuple[str, Item]], int, int]
"""A chunk: (name for errors, item) per image, resolution, channels."""
Decoded = tuple[bytes, list[tuple[int, str, str]]]
"""A decoded chunk: its images that decode, as bytes of uint8 [k, C, R, R]; (position, name, error) of the rest."""


@dataclass(frozen=True)
class Source:
    """What `prepare` packs: image files, or the image members of the zip `archive`; their labels; class names."""

    images: list[Path] | list[str]
    labels: list[int]
    classes: list[str]
    archive: Path | None = None

    def chunk(self, k: int, archive: zipfile.ZipFile | None) -> list[tuple[str, Item]]:
        """The k-th chunk's items (see `Item`); `archive` is `self.archive` opened, for a zip."""
        members = self.images[k * CHUNK_IMAGES : (k + 1) * CHUNK_IMAGES]
        if archive is None:
            return [(str(f), Path(f)) for f in members]
        return [(f"{self.archive}:{m}", _read(archive, str(m), f"{self.archive}:{m}")) for m in members]


def _read(archive: zipfile.ZipFile, member: str, name: str) -> bytes | DataError:
    try:
        return read_member(archive, member, name)
    except DataError as exc:  # skipped or fatal by --on-error, like an image that does not decode
        return exc


def scan_source(src: Path, labels_from: LabelsFrom = "auto") -> Source:
    """The images of an image folder (ImageNet's layout, root/<class>/<image>, images directly in root left out as
    the image_folder loader does; or a flat folder: unconditional) or of a `dataset_tool.py` zip (labels from its
    dataset.json, class names their indices: NVlabs' zips name no classes)."""
    if src.is_file():
        names, zip_labels = nvlabs_zip_index(src, "prepare-data SRC", labels_from != "none")
        if zip_labels is None:
            if labels_from == "required":
                raise DataError(
                    f"prepare-data SRC={src} --labels required: the zip has no labels ({ZIP_LABELS}); add them, or "
                    "pack it unconditionally (--labels auto or none)"
                )
            return Source(names, [0] * len(names), [], src)
        return Source(names, zip_labels, [str(c) for c in range(max(zip_labels) + 1)], src)
    if not src.is_dir():
        raise DataError(f"prepare-data SRC={src}: no such folder or zip")
    files = _image_files(src)
    if not files:
        raise DataError(f"prepare-data SRC={src}: no images ({'/'.join(e[1:] for e in IMAGE_EXTENSIONS)}) in it")
    labelled = class_folder_images(src, files) if labels_from != "none" else ([], [], [])
    if not labelled[2]:
        if labels_from == "required":
            raise DataError(f"prepare-data SRC={src} --labels required: no class subfolders (SRC/<class>/<image>)")
        return Source(files, [0] * len(files), [])
    return Source(*labelled)


def _decode_chunk(job: Job) -> Decoded:
    items, resolution, channels = job
    mode = "L" if channels == 1 else "RGB"
    kept: list[np.ndarray] = []
    failed: list[tuple[int, str, str]] = []
    for i, (name, item) in enumerate(items):
        if isinstance(item, DataError):
            failed.append((i, name, str(item)))
            continue
        try:
            kept.append(load_pixels(item, resolution, mode, name))
        except DataError as exc:
            failed.append((i, name, str(exc)))
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
        eta = hms((self.total - done_images) / rate) if rate > 0 else "?"
        line = f"prepare-data: {done_images}/{self.total} images, {rate:.0f} images/s, ETA {eta}"
        print(f"\r{line}   ", end="" if done_images < self.total else "\n", file=sys.stderr, flush=True)


def prepare(
    src: Path,
    out: Path,
    resolution: int,
    channels: int = 3,
    on_error: OnError = "skip",
    workers: int = 1,
    labels_from: LabelsFrom = "auto",
    stop_after_chunks: int | None = None,
) -> dict[str, Any]:
    """Pack `src` (a folder or a zip) into `out` (module doc) and return the manifest; resumes an unfinished `out`.
    `stop_after_chunks` stops early as a kill would (tests of resume)."""
    if channels not in (1, 3):
        raise DataError(f"prepare-data --channels {channels}: 1 (L) or 3 (RGB)")
    if src.resolve() == out.resolve() or src.resolve() in out.resolve().parents:
        # Its files would sit among the images (an extra class folder, or loose files in a flat source).
        raise DataError(f"prepare-data: OUT {out} is inside SRC {src}; choose an OUT outside the image folder")
    source = scan_source(src, labels_from)
    total = len(source.images)
    settings = {"source": str(src), "source_images": total, "resolution": resolution, "channels": channels}
    # Not --on-error: the chunks a failing run completed had no unreadable file, so they are the same either way.
    settings |= {"chunk_images": CHUNK_IMAGES, "classes": source.classes}
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
    chunk_count = -(-total // CHUNK_IMAGES)
    stop = chunk_count if stop_after_chunks is None else min(chunk_count, progress["chunks"] + stop_after_chunks)
    todo = range(progress["chunks"], stop)
    with (
        zipfile.ZipFile(source.archive) if source.archive else contextlib.nullcontext() as archive,
        open(out / IMAGES_FILE, "ab") as images,
        open(out / LABELS_FILE, "ab") as label_file,
    ):
        # Everything after the last recorded chunk is from a killed run: drop it.
        images.truncate(progress["images"] * image_bytes)
        label_file.truncate(progress["images"] * 8)
        bar = _Progress(total, min(progress["chunks"] * CHUNK_IMAGES, total))
        jobs = ((source.chunk(k, archive), resolution, channels) for k in todo)
        for k, (data, failed) in zip(todo, _decoded(jobs, min(workers, len(todo))), strict=True):
            if failed and on_error == "fail":
                raise DataError(f"prepare-data: {failed[0][2]} (--on-error skip leaves such files out)")
            bad = {i for i, _, _ in failed}
            chunk_labels = [
                c for i, c in enumerate(source.labels[k * CHUNK_IMAGES : (k + 1) * CHUNK_IMAGES]) if i not in bad
            ]
            images.write(data)
            label_file.write(np.asarray(chunk_labels, "<i8").tobytes())
            for f in (images, label_file):
                f.flush()
            progress["chunks"], progress["images"] = k + 1, progress["images"] + len(chunk_labels)
            progress["skipped"] += [{"path": name, "error": error} for _, name, error in failed]
            _write_json(out / PROGRESS_FILE, progress)  # after the data: it never claims bytes not written
            bar.show(min((k + 1) * CHUNK_IMAGES, total))
    if progress["chunks"] < chunk_count:
        return progress
    if progress["images"] == 0:
        raise DataError(f"prepare-data: {src}: none of its {total} images could be decoded")
    count, classes = progress["images"], source.classes
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


def _decoded(jobs: Iterator[Job], workers: int) -> Iterator[Decoded]:
    """The jobs' results in order, decoded on `workers` processes (PIL decoding holds the GIL in places). At most
    2 x workers chunks are in flight: `jobs` is read (a zip's bytes) only as fast as the workers decode."""
    if workers <= 1:
        yield from map(_decode_chunk, jobs)
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pending: deque[AsyncResult[Decoded]] = deque()
        for job in jobs:
            pending.append(pool.apply_async(_decode_chunk, (job,)))
            if len(pending) > 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
