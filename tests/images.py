"""Small image sources for the data tests: a class folder of assorted images, and the same images as a zip laid out
as NVlabs' `dataset_tool.py` writes one."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def noise_folder(root: Path, per_class: int = 5) -> Path:
    """Two classes of noise images of assorted sizes and formats: any resize or crop difference shows."""
    rng = np.random.default_rng(0)
    for name in ("b_dog", "a_cat"):
        for i in range(per_class):
            size = (int(rng.integers(17, 60)), int(rng.integers(17, 60)))
            path = root / name / f"{i}.{'jpg' if i % 2 else 'png'}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return root


def dataset_tool_zip(src: Path, path: Path, labels: bool = True, dataset_json: bool = True) -> Path:
    """The folder's images under dataset_tool's names (00000/img00000000.png, ...), in the folder's sorted order,
    with `dataset.json` labels as dataset_tool writes them for class folders (`{"labels": null}` without labels;
    no dataset.json at all without `dataset_json`)."""
    files = sorted(p for p in src.rglob("*") if p.is_file())
    classes = sorted({f.relative_to(src).parts[0] for f in files})
    names = [f"{i // 1000:05d}/img{i:08d}.png" for i in range(len(files))]
    with zipfile.ZipFile(path, "w") as archive:
        for name, f in zip(names, files, strict=True):
            archive.writestr(name, f.read_bytes())  # PIL reads the content, whatever the name says
        meta = {"labels": [[n, classes.index(f.relative_to(src).parts[0])] for n, f in zip(names, files, strict=True)]}
        if dataset_json:
            archive.writestr("dataset.json", json.dumps(meta if labels else {"labels": None}))
    return path
