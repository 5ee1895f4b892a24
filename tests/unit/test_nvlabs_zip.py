"""`data.type: nvlabs_zip`: dataset_tool.py zips read in place; the same tensors, order and flips as the image folder
and the packed dataset; missing labels for a conditional model are a DataError."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch

from dsgan.config import ImageFolderData, NvlabsZipData, PackedData, load_config
from dsgan.data import StreamSampler, build_dataset, make_loader
from dsgan.errors import DataError
from dsgan.prepare import prepare
from tests.unit.test_prepare import _noise_folder


def _zip(src: Path, path: Path, labels: bool = True) -> Path:
    """The folder's images under dataset_tool's names (00000/img00000000.png, ...), in the folder's sorted order,
    with `dataset.json` labels as dataset_tool writes them for class folders."""
    files = sorted(p for p in src.rglob("*") if p.is_file())
    classes = sorted({f.relative_to(src).parts[0] for f in files})
    names = [f"{i // 1000:05d}/img{i:08d}.png" for i in range(len(files))]
    with zipfile.ZipFile(path, "w") as archive:
        for name, f in zip(names, files, strict=True):
            archive.writestr(name, f.read_bytes())  # PIL reads the content, whatever the name says
        meta = {"labels": [[n, classes.index(f.relative_to(src).parts[0])] for n, f in zip(names, files, strict=True)]}
        archive.writestr("dataset.json", json.dumps(meta if labels else {"labels": None}))
    return path


@pytest.mark.parametrize("workers", [0, 1])
def test_same_images_order_and_flips_as_image_folder_and_packed(tmp_path, workers):
    src = _noise_folder(tmp_path / "src")
    prepare(src, tmp_path / "packed", 16)
    datasets = [
        build_dataset(ImageFolderData(root=src, xflip=True), 16, 3, 2),
        build_dataset(PackedData(root=tmp_path / "packed", xflip=True), 16, 3, 2),
        build_dataset(NvlabsZipData(path=_zip(src, tmp_path / "d.zip"), xflip=True), 16, 3, 2),
    ]
    assert "NVlabs zip" in datasets[2].description
    reads = []
    for dataset in datasets:
        sampler = StreamSampler(len(dataset), 4, 0, 2, seed=1, start_image=6, xflip=True)
        batches = iter(make_loader(dataset, sampler, 4, num_workers=workers, pin_memory=False))
        reads.append([next(batches) for _ in range(4)])
    for (images, labels), *others in zip(*reads, strict=True):
        for other_images, other_labels in others:
            assert torch.equal(images, other_images) and torch.equal(labels, other_labels)


def test_conditional_model_without_labels_is_a_data_error(tmp_path):
    path = _zip(_noise_folder(tmp_path / "src"), tmp_path / "d.zip", labels=False)
    with pytest.raises(DataError, match="no labels .* but the models are conditional"):
        build_dataset(NvlabsZipData(path=path), 16, 3, 2)
    assert len(build_dataset(NvlabsZipData(path=path, conditional=False), 16, 3, 0)) == 10


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "not a readable zip"), ({}, "no images in the zip")],
)
def test_bad_zips(tmp_path, content, message):
    path = tmp_path / "d.zip"
    if content is None:
        path.write_bytes(b"not a zip")
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("readme.txt", "x")
    with pytest.raises(DataError, match=message):
        build_dataset(NvlabsZipData(path=path), 16, 3, 2)


def test_class_count_mismatch(tmp_path):
    path = _zip(_noise_folder(tmp_path / "src"), tmp_path / "d.zip")
    with pytest.raises(DataError, match=r"labels 0..1 \(2 classes\) but the models have num_classes=3"):
        build_dataset(NvlabsZipData(path=path), 16, 3, 3)


def test_config_validates():
    cfg = load_config(
        Path(__file__).parents[2] / "configs" / "biggan128.yaml", ["data.type=nvlabs_zip", "data.path=/d.zip"]
    )
    assert isinstance(cfg.data, NvlabsZipData) and cfg.data.path == Path("/d.zip") and not cfg.data.xflip
