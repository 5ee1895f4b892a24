"""`dsgan prepare-data`: the image_folder loader's pixels, skipped or fatal unreadable files, byte-exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dsgan import prepare as prepare_module
from dsgan.cli import main as cli_main
from dsgan.config import ImageFolderData
from dsgan.data import build_dataset, to_unit_range
from dsgan.errors import EXIT_CONFIG, DataError
from dsgan.prepare import IMAGES_FILE, LABELS_FILE, MANIFEST_FILE, PROGRESS_FILE, prepare


def _noise_folder(root: Path, per_class: int = 5) -> Path:
    """Two classes of noise images of assorted sizes and formats: any resize or crop difference shows."""
    rng = np.random.default_rng(0)
    for name in ("b_dog", "a_cat"):
        for i in range(per_class):
            size = (int(rng.integers(17, 60)), int(rng.integers(17, 60)))
            path = root / name / f"{i}.{'jpg' if i % 2 else 'png'}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return root


def _packed(out: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    images = np.fromfile(out / IMAGES_FILE, np.uint8).reshape(manifest["files"][IMAGES_FILE]["shape"])
    return images, np.fromfile(out / LABELS_FILE, "<i8"), manifest


@pytest.mark.parametrize("channels", [3, 1])
def test_same_pixels_and_labels_as_the_image_folder_loader(tmp_path, channels):
    src = _noise_folder(tmp_path / "src")
    prepare(src, tmp_path / "out", 16, channels)
    images, labels, manifest = _packed(tmp_path / "out")
    folder = build_dataset(ImageFolderData(root=src), 16, channels, 2)
    assert manifest["images"] == len(folder) == 10 and manifest["classes"] == ["a_cat", "b_dog"]
    assert manifest["class_counts"] == [5, 5] and manifest["skipped_count"] == 0
    assert images.shape == (10, channels, 16, 16)
    for i in range(len(folder)):
        image, label = folder[i]
        assert (to_unit_range(images[i]) == image).all() and labels[i] == label


def test_flat_folder_is_unconditional(tmp_path):
    src = tmp_path / "flat"
    src.mkdir()
    Image.new("RGB", (20, 30), (1, 2, 3)).save(src / "x.png")
    manifest = prepare(src, tmp_path / "out", 8)
    assert manifest["classes"] == [] and manifest["class_counts"] == [] and manifest["images"] == 1


def _corrupt(src: Path) -> Path:
    bad = src / "a_cat" / "2.png"
    bad.write_bytes(bad.read_bytes()[:100])  # truncated: the header reads, the body does not
    return bad


def test_unreadable_images_are_skipped_and_listed(tmp_path, capsys):
    src = _noise_folder(tmp_path / "src")
    bad = _corrupt(src)
    assert cli_main(["prepare-data", str(src), str(tmp_path / "out"), "--resolution", "8", "--workers", "1"]) == 0
    images, labels, manifest = _packed(tmp_path / "out")
    assert manifest["images"] == 9 and len(images) == len(labels) == 9
    assert manifest["skipped_count"] == 1 and manifest["skipped"][0]["path"] == str(bad)
    assert manifest["class_counts"] == [4, 5]
    assert "1 unreadable source files skipped" in capsys.readouterr().out


def test_on_error_fail_names_the_file_and_exits_2(tmp_path, capsys):
    src = _noise_folder(tmp_path / "src")
    bad = _corrupt(src)
    args = ["prepare-data", str(src), str(tmp_path / "out"), "--resolution", "8", "--on-error", "fail"]
    assert cli_main([*args, "--workers", "1"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert str(bad) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / MANIFEST_FILE).exists()
    bad.unlink()  # fixed (here: removed), the same command continues
    assert cli_main([*args, "--workers", "1"]) == 0
    assert _packed(tmp_path / "out")[2]["images"] == 9


def test_killed_then_rerun_equals_an_uninterrupted_run_byte_for_byte(tmp_path, monkeypatch):
    monkeypatch.setattr(prepare_module, "CHUNK_IMAGES", 3)  # 10 images: 4 chunks
    src = _noise_folder(tmp_path / "src")
    _corrupt(src)
    prepare(src, tmp_path / "whole", 8)
    part = tmp_path / "part"
    progress = prepare(src, part, 8, stop_after_chunks=2)
    assert progress["chunks"] == 2 and not (part / MANIFEST_FILE).exists()
    with open(part / IMAGES_FILE, "ab") as f:  # a kill in the middle of the next chunk's write
        f.write(b"\xff" * 100)
    with pytest.raises(DataError, match="made otherwise"):
        prepare(src, part, 16)
    prepare(src, part, 8, stop_after_chunks=1)
    prepare(src, part, 8)
    assert not (part / PROGRESS_FILE).exists()
    for name in (IMAGES_FILE, LABELS_FILE, MANIFEST_FILE):
        assert (part / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    assert prepare(src, part, 8) == json.loads((part / MANIFEST_FILE).read_text())  # complete: nothing to do


def test_worker_processes_give_the_same_files(tmp_path, monkeypatch):
    monkeypatch.setattr(prepare_module, "CHUNK_IMAGES", 4)
    src = _noise_folder(tmp_path / "src")
    prepare(src, tmp_path / "one", 8, workers=1)
    prepare(src, tmp_path / "two", 8, workers=2)
    for name in (IMAGES_FILE, LABELS_FILE, MANIFEST_FILE):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
