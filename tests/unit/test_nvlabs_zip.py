"""`data.type: nvlabs_zip`: dataset_tool.py zips read in place; the same tensors, order and flips as the image folder
and the packed dataset; missing labels for a conditional model are a DataError."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch
from images import dataset_tool_zip, noise_folder

from dsgan.cli import main as cli_main
from dsgan.config import ImageFolderData, NvlabsZipData, PackedData, load_config
from dsgan.data import StreamSampler, build_dataset, make_loader
from dsgan.errors import EXIT_CONFIG, DataError
from dsgan.prepare import prepare


@pytest.mark.parametrize("workers", [0, 1])
def test_same_images_order_and_flips_as_image_folder_and_packed(tmp_path, workers):
    """image_folder, packed from the folder, nvlabs_zip read in place, and packed from that zip: the same batches."""
    src = noise_folder(tmp_path / "src")
    zipped = dataset_tool_zip(src, tmp_path / "d.zip")
    prepare(src, tmp_path / "packed", 16)
    prepare(zipped, tmp_path / "packed_zip", 16)
    datasets = [
        build_dataset(ImageFolderData(root=src, xflip=True), 16, 3, 2),
        build_dataset(PackedData(root=tmp_path / "packed", xflip=True), 16, 3, 2),
        build_dataset(NvlabsZipData(path=zipped, xflip=True), 16, 3, 2),
        build_dataset(PackedData(root=tmp_path / "packed_zip", xflip=True), 16, 3, 2),
    ]
    assert "NVlabs zip" in datasets[2].description
    reads = []
    for dataset in datasets:
        sampler = StreamSampler(len(dataset), 4, 0, 2, seed=1, start_image=6, xflip=True)
        batches = iter(make_loader(dataset, sampler, 4, num_workers=workers, pin_memory=False))
        reads.append([next(batches) for _ in range(4)])
    assert any(i >= len(datasets[0]) for k in range(4) for i in sampler.batch_indices(k))  # some flips were drawn
    for (images, labels), *others in zip(*reads, strict=True):
        for other_images, other_labels in others:
            assert torch.equal(images, other_images) and torch.equal(labels, other_labels)


@pytest.mark.parametrize("dataset_json", [True, False])
def test_conditional_model_without_labels_is_a_data_error(tmp_path, dataset_json):
    path = dataset_tool_zip(noise_folder(tmp_path / "src"), tmp_path / "d.zip", labels=False, dataset_json=dataset_json)
    with pytest.raises(DataError, match="no labels .* but the models are conditional"):
        build_dataset(NvlabsZipData(path=path), 16, 3, 2)
    assert len(build_dataset(NvlabsZipData(path=path, conditional=False), 16, 3, 0)) == 10


@pytest.mark.parametrize(
    ("members", "message"),
    [
        (None, "not a readable zip"),
        ({"readme.txt": "x"}, "no images in the zip"),
        ({"a.png": "", "/abs/b.png": ""}, "member name '/abs/b.png' is absolute or leads out of the archive"),
        ({"a.png": "", "x/../../b.png": ""}, "member name 'x/../../b.png' is absolute"),
        ({"a.png": "", "dataset.json": '{"labels": '}, "its dataset.json is not JSON: Expecting value"),
        (
            {"a.png": "", "dataset.json": '{"labels": [["a.png"]]}'},
            "dataset.json 'labels' is not a list of \\[name, label\\] pairs",
        ),
        ({"a.png": "", "dataset.json": '{"labels": [["a.png", -1]]}'}, "dataset.json labels are not class indices"),
        ({"a.png": "", "dataset.json": '{"labels": [["a.png", true]]}'}, "dataset.json labels are not class indices"),
    ],
)
def test_bad_zips(tmp_path, members, message):
    path = tmp_path / "d.zip"
    if members is None:
        path.write_bytes(b"not a zip")
    else:
        with zipfile.ZipFile(path, "w") as archive:
            for name, content in members.items():
                archive.writestr(name, content)
    with pytest.raises(DataError, match=f"^data.path={path}: {message}"):
        build_dataset(NvlabsZipData(path=path), 16, 3, 2)


def test_class_count_mismatch(tmp_path):
    path = dataset_tool_zip(noise_folder(tmp_path / "src"), tmp_path / "d.zip")
    with pytest.raises(DataError, match=r"labels 0..1 \(2 classes\) but the models have num_classes=3"):
        build_dataset(NvlabsZipData(path=path), 16, 3, 3)


def test_config_validates(capsys):
    config = str(Path(__file__).parents[2] / "configs" / "biggan128.yaml")
    cfg = load_config(config, ["data.type=nvlabs_zip", "data.path=/d.zip"])
    assert isinstance(cfg.data, NvlabsZipData) and cfg.data.path == Path("/d.zip") and not cfg.data.xflip
    args = ["validate-config", "--config", config, "--world-size", "8", "--device", "cuda"]
    sets = ["--set", "data.type=nvlabs_zip", "--set", "data.path=/d.zip", "--set", "data.xflip=true"]
    assert cli_main([*args, *sets]) == 0
    assert "type: nvlabs_zip" in capsys.readouterr().out
    assert cli_main([*args, *sets, "--set", "data.mirror=true"]) == EXIT_CONFIG  # NVlabs' name: not this schema's
    err = capsys.readouterr().err
    assert "data.mirror: unknown key" in err and len(err.strip().splitlines()) == 1
