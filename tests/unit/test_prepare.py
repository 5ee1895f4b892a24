"""`dsgan prepare-data` from an image folder or an NVlabs zip: the loaders' pixels, skipped or fatal unreadable
files, byte-exact resume, bad sources."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from images import dataset_tool_zip, noise_folder
from PIL import Image

from dsgan import prepare as prepare_module
from dsgan.cli import main as cli_main
from dsgan.config import ImageFolderData
from dsgan.data import build_dataset
from dsgan.errors import EXIT_CONFIG, DataError
from dsgan.pixels import to_unit_range
from dsgan.prepare import IMAGES_FILE, LABELS_FILE, MANIFEST_FILE, PROGRESS_FILE, prepare


def _packed(out: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    images = np.fromfile(out / IMAGES_FILE, np.uint8).reshape(manifest["files"][IMAGES_FILE]["shape"])
    return images, np.fromfile(out / LABELS_FILE, "<i8"), manifest


@pytest.mark.parametrize("channels", [3, 1])
def test_same_pixels_and_labels_as_the_image_folder_loader(tmp_path, channels):
    src = noise_folder(tmp_path / "src")
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
    src = noise_folder(tmp_path / "src")
    bad = _corrupt(src)
    assert cli_main(["prepare-data", str(src), str(tmp_path / "out"), "--resolution", "8", "--workers", "1"]) == 0
    images, labels, manifest = _packed(tmp_path / "out")
    assert manifest["images"] == 9 and len(images) == len(labels) == 9
    assert manifest["skipped_count"] == 1 and manifest["skipped"][0]["path"] == str(bad)
    assert manifest["class_counts"] == [4, 5]
    printed = capsys.readouterr()
    assert "1 unreadable source files skipped" in printed.out
    assert "prepare-data: 10/10 images, " in printed.err and printed.err.endswith("ETA 0:00:00   \n")  # the bar


def test_on_error_fail_names_the_file_and_exits_2(tmp_path, capsys):
    src = noise_folder(tmp_path / "src")
    bad = _corrupt(src)
    args = ["prepare-data", str(src), str(tmp_path / "out"), "--resolution", "8", "--on-error", "fail"]
    assert cli_main([*args, "--workers", "1"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert str(bad) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / MANIFEST_FILE).exists()
    bad.unlink()  # fixed (here: removed), the same command continues
    assert cli_main([*args, "--workers", "1"]) == 0
    assert _packed(tmp_path / "out")[2]["images"] == 9


def _source(tmp_path: Path, kind: str) -> Path:
    """The noise folder, with one truncated PNG, as a folder or as a dataset_tool.py zip of the same files."""
    src = noise_folder(tmp_path / "src")
    _corrupt(src)
    return src if kind == "folder" else dataset_tool_zip(src, tmp_path / "src.zip")


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_killed_then_rerun_equals_an_uninterrupted_run_byte_for_byte(tmp_path, monkeypatch, kind):
    monkeypatch.setattr(prepare_module, "CHUNK_IMAGES", 3)  # 10 images: 4 chunks
    src = _source(tmp_path, kind)
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
    assert _packed(part)[2]["skipped_count"] == 1


def test_worker_processes_give_the_same_files(tmp_path, monkeypatch):
    """Two decoding processes fed a zip's members (bytes read by the main process) write what one process writes
    from the folder of the same files (one pool start: each costs seconds of imports)."""
    monkeypatch.setattr(prepare_module, "CHUNK_IMAGES", 2)  # 5 chunks on 2 workers: more than 2 x workers in flight
    prepare(_source(tmp_path, "folder"), tmp_path / "one", 8, workers=1)
    prepare(_source(tmp_path, "zip"), tmp_path / "two", 8, workers=2)
    for name in (IMAGES_FILE, LABELS_FILE):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert len(_packed(tmp_path / "two")[2]["skipped"]) == 1


def test_zip_gives_the_folders_pixels_and_labels_with_index_class_names(tmp_path):
    src = noise_folder(tmp_path / "src")
    prepare(src, tmp_path / "from_folder", 16)
    zipped = dataset_tool_zip(src, tmp_path / "d.zip")
    args = ["prepare-data", str(zipped), str(tmp_path / "from_zip"), "--resolution", "16", "--labels", "required"]
    assert cli_main([*args, "--workers", "1"]) == 0
    folder_images, folder_labels, _ = _packed(tmp_path / "from_folder")
    zip_images, zip_labels, manifest = _packed(tmp_path / "from_zip")
    assert np.array_equal(zip_images, folder_images) and np.array_equal(zip_labels, folder_labels)
    assert manifest["classes"] == ["0", "1"] and manifest["class_counts"] == [5, 5]
    unlabelled = prepare(zipped, tmp_path / "unlabelled", 16, labels_from="none")
    assert unlabelled["classes"] == [] and not _packed(tmp_path / "unlabelled")[1].any()


def test_damaged_zip_member_is_skipped_or_fatal_by_name(tmp_path, capsys):
    src = noise_folder(tmp_path / "src")
    path = dataset_tool_zip(src, tmp_path / "d.zip")
    with zipfile.ZipFile(path) as archive:
        member = archive.namelist()[3]
        content = archive.read(member)
    data = bytearray(path.read_bytes())
    at = data.index(content) + len(content) // 2  # stored, not compressed: the member's bytes are in the file as is
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))  # the CRC no longer matches
    manifest = prepare(path, tmp_path / "skip", 8)
    assert manifest["images"] == 9 and manifest["skipped"][0]["path"] == f"{path}:{member}"
    assert "Bad CRC-32" in manifest["skipped"][0]["error"]
    capsys.readouterr()
    args = ["prepare-data", str(path), str(tmp_path / "fail"), "--resolution", "8", "--on-error", "fail"]
    assert cli_main([*args, "--workers", "1"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"{path}:{member}: cannot read from the zip" in err and len(err.strip().splitlines()) == 1


def _bad_zip(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "bad.zip"
    if kind == "not a zip":
        path.write_bytes(b"PK but not really a zip")
        return path
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("00000/img00000000.png", b"")
        if kind == "traversal":
            archive.writestr("../../etc/x.png", b"")
    return path


@pytest.mark.parametrize(
    ("kind", "labels", "message"),
    [
        ("not a zip", "auto", "SRC={}: not a readable zip: File is not a zip file"),
        ("traversal", "auto", "SRC={}: member name '../../etc/x.png' is absolute or leads out of the archive"),
        ("no labels", "required", "SRC={} --labels required: the zip has no labels (a dataset.json with 'labels'"),
        ("missing", "auto", "SRC={}: no such folder or zip"),
    ],
)
def test_bad_sources_are_one_line_errors_with_exit_2(tmp_path, capsys, kind, labels, message):
    path = tmp_path / "missing" if kind == "missing" else _bad_zip(tmp_path, kind)
    args = ["prepare-data", str(path), str(tmp_path / "out"), "--resolution", "8", "--labels", labels]
    assert cli_main(args) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert message.format(path) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_labels_required_of_a_flat_folder_and_none_of_a_class_folder(tmp_path, capsys):
    src = noise_folder(tmp_path / "src")
    Image.new("RGB", (20, 30), (1, 2, 3)).save(src / "loose.png")  # in no class: left out unless unconditional
    flat = src / "a_cat"
    args = ["prepare-data", str(flat), str(tmp_path / "o"), "--resolution", "8", "--labels", "required"]
    assert cli_main(args) == EXIT_CONFIG
    assert "--labels required: no class subfolders" in capsys.readouterr().err
    assert prepare(src, tmp_path / "auto", 8)["images"] == 10
    unconditional = prepare(src, tmp_path / "none", 8, labels_from="none")
    assert unconditional["images"] == 11 and unconditional["classes"] == []
    assert unconditional["images"] == len(build_dataset(ImageFolderData(root=src, conditional=False), 8, 3, 0))
