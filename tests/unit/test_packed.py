"""`data.type: packed`: the image_folder loader's images, order and flips; a bad manifest is a DataError."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from images import noise_folder

from dsgan.cli import main as cli_main
from dsgan.config import ImageFolderData, PackedData, load_config
from dsgan.data import IMAGES_FILE, LABELS_FILE, MANIFEST_FILE, StreamSampler, build_dataset, make_loader
from dsgan.errors import DataError
from dsgan.prepare import prepare


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("packed")
    src = noise_folder(root / "src")
    prepare(src, root / "out", 16)
    return src, root / "out"


@pytest.mark.parametrize("in_memory", [False, True])
@pytest.mark.parametrize("conditional", [True, False])
def test_same_images_order_and_flips_as_the_image_folder(source, in_memory, conditional):
    src, out = source
    folder = build_dataset(ImageFolderData(root=src, conditional=conditional, xflip=True), 16, 3, 2)
    packed = build_dataset(PackedData(root=out, conditional=conditional, xflip=True, in_memory=in_memory), 16, 3, 2)
    assert len(packed) == len(folder) == 10 and "packed dataset" in packed.description
    batches = []
    for dataset in (folder, packed):
        sampler = StreamSampler(len(dataset), 4, 1, 2, seed=9, start_image=6, xflip=True)  # mid-epoch, 2 epochs
        loader = iter(make_loader(dataset, sampler, 4, num_workers=0, pin_memory=False))
        batches.append([next(loader) for _ in range(4)])
    assert any(i >= 10 for k in range(4) for i in sampler.batch_indices(k))  # some flips were drawn
    for (folder_images, folder_labels), (packed_images, packed_labels) in zip(*batches, strict=True):
        assert torch.equal(folder_images, packed_images) and torch.equal(folder_labels, packed_labels)


def test_loader_workers_read_the_memory_map(source):
    _, out = source
    packed = build_dataset(PackedData(root=out), 16, 3, 2)
    sampler = StreamSampler(len(packed), 5, 0, 1, seed=0)
    images, labels = next(iter(make_loader(packed, sampler, 5, num_workers=1, pin_memory=False)))
    expected = [packed[i] for i in sampler.batch_indices(0)]
    assert torch.equal(images, torch.stack([x for x, _ in expected])) and labels.tolist() == [y for _, y in expected]


def _copy(out: Path, to: Path) -> Path:
    to.mkdir()
    for name in (IMAGES_FILE, LABELS_FILE, MANIFEST_FILE):
        (to / name).write_bytes((out / name).read_bytes())
    return to


@pytest.mark.parametrize(
    ("resolution", "channels", "num_classes", "message"),
    [
        (32, 3, 2, "holds 3x16x16 images but the models use 3x32x32"),
        (16, 1, 2, "the models use 1x16x16"),
        (16, 3, 5, "has 2 classes but the models have num_classes=5"),
    ],
)
def test_model_mismatches_are_data_errors(source, resolution, channels, num_classes, message):
    with pytest.raises(DataError, match=message):
        build_dataset(PackedData(root=source[1]), resolution, channels, num_classes)


def test_missing_manifest_is_an_unfinished_dataset(tmp_path):
    with pytest.raises(DataError, match="no manifest.json: not a packed dataset, or an unfinished"):
        build_dataset(PackedData(root=tmp_path), 16, 3, 2)


def test_size_always_and_checksum_when_asked(source, tmp_path):
    short = _copy(source[1], tmp_path / "short")
    with open(short / IMAGES_FILE, "r+b") as f:
        f.truncate(100)
    with pytest.raises(DataError, match=f"{IMAGES_FILE} has 100 bytes, the manifest says"):
        build_dataset(PackedData(root=short, verify=False), 16, 3, 2)
    damaged = _copy(source[1], tmp_path / "damaged")
    data = bytearray((damaged / IMAGES_FILE).read_bytes())
    data[7] ^= 1
    (damaged / IMAGES_FILE).write_bytes(bytes(data))
    with pytest.raises(DataError, match="does not match the manifest's sha256"):
        build_dataset(PackedData(root=damaged), 16, 3, 2)
    assert len(build_dataset(PackedData(root=damaged, verify=False), 16, 3, 2)) == 10


def test_not_a_manifest(tmp_path):
    (tmp_path / MANIFEST_FILE).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(DataError, match="is not a dsgan-packed-1 manifest"):
        build_dataset(PackedData(root=tmp_path), 16, 3, 2)


def _edit_manifest(out: Path, to: Path, change) -> Path:
    packed = _copy(out, to)
    manifest = json.loads((packed / MANIFEST_FILE).read_text())
    change(manifest)
    (packed / MANIFEST_FILE).write_text(json.dumps(manifest))
    return packed


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop("resolution"), r"manifest.json is damaged \(KeyError: 'resolution'\)"),
        (lambda m: m.update(classes=3), r"manifest.json is damaged \(TypeError: object of type 'int' has no len"),
        (lambda m: m["files"].pop(LABELS_FILE), r"manifest.json is damaged \(KeyError: 'labels.int64'\)"),
        (lambda m: m["files"][IMAGES_FILE].update(dtype="uint9"), r"damaged \(TypeError: data type 'uint9' not under"),
    ],
)
def test_manifest_of_the_wrong_shape_is_a_data_error(source, tmp_path, change, message):
    packed = _edit_manifest(source[1], tmp_path / "packed", change)
    with pytest.raises(DataError, match=message):
        build_dataset(PackedData(root=packed, verify=False), 16, 3, 2)


def test_labels_out_of_range_or_miscounted_are_data_errors(source, tmp_path):
    """Without the checksum (verify=false) a damaged labels file would otherwise fail in G's embedding at whichever
    iteration first draws the label (on a GPU as a device-side assert)."""
    bad = _copy(source[1], tmp_path / "bad")
    labels = np.fromfile(bad / LABELS_FILE, "<i8")
    labels[3] = 7
    labels.tofile(bad / LABELS_FILE)
    with pytest.raises(DataError, match="labels range over 0..7 but the models have num_classes=2"):
        build_dataset(PackedData(root=bad, verify=False), 16, 3, 2)
    assert len(build_dataset(PackedData(root=bad, verify=False, conditional=False), 16, 3, 0)) == 10

    def drop_one(manifest: dict) -> None:
        manifest["files"][LABELS_FILE].update(shape=[9], bytes=72)

    short = _edit_manifest(source[1], tmp_path / "short", drop_one)
    np.fromfile(short / LABELS_FILE, "<i8")[:9].tofile(short / LABELS_FILE)
    with pytest.raises(DataError, match="9 labels for 10 images"):
        build_dataset(PackedData(root=short, verify=False), 16, 3, 2)


def test_validate_config_accepts_packed_data(capsys):
    config = Path(__file__).parents[2] / "configs" / "biggan128.yaml"
    overrides = ["data.type=packed", "data.root=/data/imagenet128_packed", "data.in_memory=true", "data.xflip=true"]
    cfg = load_config(config, overrides)
    assert isinstance(cfg.data, PackedData) and cfg.data.in_memory and cfg.data.verify
    sets = [a for o in overrides for a in ("--set", o)]
    args = ["validate-config", "--config", str(config), "--world-size", "8", "--device", "cuda", *sets]
    assert cli_main(args) == 0
    assert "type: packed" in capsys.readouterr().out
