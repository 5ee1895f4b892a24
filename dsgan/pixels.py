"""How a source image becomes pixels, one way for every data type: an image file (image_folder) or a zip member
(nvlabs_zip) decoded as a viewer shows it, resized and cropped to the models' resolution (`load_pixels`), and
uint8 pixels as the float tensors the models see (`to_unit_range`). `dsgan prepare-data` packs the output of
`load_pixels`, and `data.type: packed` converts it with `to_unit_range`, so all data types give the same tensors."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from dsgan.errors import DataError

IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".webp")
PIXEL_MODES: tuple[str, ...] = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr")
PIXEL_MODES += ("LAB", "HSV", "I;16", "I;16B", "I;16L", "I;16N", "I")
"""PIL modes `decode` turns into 8-bit RGB or L as a viewer would; others (float "F", ...) are refused by name."""


def decode(file: Image.Image, mode: str) -> Image.Image:
    """An opened image as a viewer shows it, in `mode` ("RGB" or "L"): EXIF orientation applied, 16- and 32-bit
    integer images scaled to 8 bits (PIL's own convert clips them, which turns a 16-bit PNG white), transparency
    composited onto white, CMYK converted. Other modes (not in PIXEL_MODES) are refused (ValueError)."""
    if file.mode not in PIXEL_MODES:
        raise ValueError(f"pixel mode {file.mode} is not supported (8/16-bit gray, palette, RGB(A), CMYK are)")
    img = ImageOps.exif_transpose(file)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        pixels = np.asarray(img).astype(np.float64)
        maximum = 65535.0 if img.mode.startswith("I;16") or pixels.max() > 255 else 255.0
        img = Image.fromarray(np.clip(np.rint(pixels * (255.0 / maximum)), 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "PA", "RGBa", "La", "RGBA"):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return img.convert(mode)


def load_pixels(source: Path | bytes, resolution: int, mode: str, name: str | None = None) -> np.ndarray:
    """An image file (or a file's bytes: a zip member, called `name` in errors) decoded (`decode`), resized and
    cropped (`fit`), as uint8 [C, S, S]. The image_folder and nvlabs_zip loaders and `dsgan prepare-data` all use
    it: packed datasets hold the same pixels."""
    # The build-time check reads headers only; a truncated body surfaces here, named.
    try:
        with Image.open(source if isinstance(source, Path) else io.BytesIO(source)) as file:
            img = decode(file, mode)
    except Exception as exc:  # as in data._check_header: PIL raises many types for corrupt files
        raise DataError(f"{name or str(source)}: cannot decode image: {type(exc).__name__}: {exc}") from None
    pixels = fit(img, resolution)
    return pixels[None] if pixels.ndim == 2 else np.ascontiguousarray(pixels.transpose(2, 0, 1))


def fit(img: Image.Image, resolution: int) -> np.ndarray:
    """Resized on the shorter side (PIL bicubic, which antialiases when shrinking) and center-cropped to
    `resolution`: uint8 [S, S] (mode "L") or [S, S, 3] ("RGB"); an image of that size already is left as it is."""
    s = resolution
    scale = s / min(img.size)
    size = (max(s, round(img.width * scale)), max(s, round(img.height * scale)))
    if size != img.size:
        img = img.resize(size, Image.Resampling.BICUBIC)
    left, top = (img.width - s) // 2, (img.height - s) // 2
    return np.asarray(img.crop((left, top, left + s, top + s)), dtype=np.uint8)


def to_unit_range(pixels: np.ndarray) -> torch.Tensor:
    """uint8 pixels as float32 in [-1, 1]; one function, so every dataset type gives bit-identical tensors. Converted
    by torch (measured ~15x faster than numpy's astype for a 3x128x128 image); the uint8 copy makes a read-only
    memory map writable, as torch tensors must be."""
    return torch.from_numpy(np.array(pixels, np.uint8)).float() / 127.5 - 1


def read_member(archive: zipfile.ZipFile, member: str, name: str) -> bytes:
    """A zip member's bytes; a damaged member (bad CRC, truncated, bad compressed data) is a DataError naming it."""
    try:
        return archive.read(member)
    except Exception as exc:  # zipfile raises BadZipFile, zlib.error, EOFError, OSError, ... for damaged members
        raise DataError(f"{name}: cannot read from the zip: {type(exc).__name__}: {exc}") from None
