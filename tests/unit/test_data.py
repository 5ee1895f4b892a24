"""Datasets (digits, image folder and its errors), the stream sampler's guarantees, and the loader."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dsgan.config import DigitsData, ImageFolderData
from dsgan.data import (
    StreamSampler,
    TensorImages,
    XFlip,
    build_dataset,
    dataset_summary,
    make_loader,
)
from dsgan.digits import digits_tensors
from dsgan.errors import EXIT_CONFIG, DataError, user_error
from dsgan.pixels import decode

# ----------------------------------------------------------------------------------------------------------------
# Digits


@pytest.fixture(scope="module")
def digits() -> TensorImages:
    return build_dataset(DigitsData(), 16, 3, 10)


def test_digits_items(digits):
    assert len(digits) == 1797
    image, label = digits[5]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    assert isinstance(label, int)
    assert digits.images.min() == -1 and digits.images.max() <= 1
    assert sorted(set(digits.labels.tolist())) == list(range(10))
    assert torch.equal(image[0], image[2])  # grey replicated
    assert dataset_summary(digits) == "digits: 1797 images, 10 classes, 3x16x16"


def test_digits_deterministic_and_native_resolution_is_exact(digits):
    again = build_dataset(DigitsData(), 16, 3, 10)
    assert torch.equal(again.images, digits.images) and torch.equal(again.labels, digits.labels)
    from sklearn.datasets import load_digits

    native, _ = digits_tensors(8, 1)
    assert torch.equal(native[:, 0], torch.tensor(load_digits().images, dtype=torch.float32) / 8 - 1)


@pytest.mark.parametrize(("cfg", "num_classes"), [(DigitsData(conditional=False), 0), (DigitsData(), 0)])
def test_digits_unconditional_labels_are_zero(cfg, num_classes):
    ds = build_dataset(cfg, 8, 1, num_classes)
    assert ds[0][0].shape == (1, 8, 8)
    assert set(ds.labels.tolist()) == {0}


def test_digits_wrong_class_count():
    with pytest.raises(DataError, match="digits' has 10 classes but the models have 7"):
        build_dataset(DigitsData(), 8, 1, 7)


# ----------------------------------------------------------------------------------------------------------------
# Image folder


def _png(path: Path, size: tuple[int, int], color: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def _folder(root: Path, num_classes: int = 2) -> Path:
    """root/<class>/<image>: classes named so that sorted order differs from creation order."""
    for c, name in reversed(list(enumerate(["a_cat", "b_dog", "c_eel"][:num_classes]))):
        _png(root / name / "x.png", (40, 20), (10 * c, 100, 200))
        _png(root / name / "nested" / "y.JPG", (20, 30), (10 * c, 100, 200))
    return root


def test_image_folder_labels_sizes_and_values(tmp_path):
    root = _folder(tmp_path / "data")
    (root / "a_cat" / "notes.txt").write_text("not an image")
    _png(root / ".ipynb_checkpoints" / "z.png", (8, 8), (0, 0, 0))  # hidden: not a class
    _png(root / "a_cat" / "._x.png", (8, 8), (0, 0, 0))  # macOS metadata: skipped
    ds = build_dataset(ImageFolderData(root=root), 16, 3, 2)
    assert [f.relative_to(root).as_posix() for f in ds.files] == [
        "a_cat/nested/y.JPG",
        "a_cat/x.png",
        "b_dog/nested/y.JPG",
        "b_dog/x.png",
    ]
    assert [ds[i][1] for i in range(len(ds))] == [0, 0, 1, 1]
    image, _ = ds[3]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    expected = torch.tensor([10, 100, 200]) / 127.5 - 1  # a flat colour survives bicubic resizing
    assert torch.allclose(image.mean(dim=(1, 2)), expected, atol=2e-2)
    assert dataset_summary(ds).endswith("4 images, 2 classes (a_cat..b_dog), 3x16x16")
    grey = build_dataset(ImageFolderData(root=root), 16, 1, 2)
    assert grey[0][0].shape == (1, 16, 16)


def test_image_folder_center_crop(tmp_path):
    pixels = np.zeros((10, 30, 3), np.uint8)
    pixels[:, :10, 0] = pixels[:, 20:, 2] = 255  # red | black | blue; the shorter side is already 10
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    ds = build_dataset(ImageFolderData(root=tmp_path, conditional=False), 10, 3, 0)
    assert torch.equal(ds[0][0], torch.full((3, 10, 10), -1.0))


def test_image_folder_unconditional_takes_every_image(tmp_path):
    root = _folder(tmp_path / "data")
    _png(root / "loose.png", (16, 16), (0, 0, 0))
    for cfg, num_classes in ((ImageFolderData(root=root, conditional=False), 0), (ImageFolderData(root=root), 0)):
        ds = build_dataset(cfg, 8, 3, num_classes)
        assert len(ds) == 5 and {ds[i][1] for i in range(5)} == {0}
        assert "unconditional" in dataset_summary(ds)
    conditional = build_dataset(ImageFolderData(root=root), 8, 3, 2)
    assert len(conditional) == 4  # images directly in root belong to no class: left out, and said so
    assert "; 1 images directly in data.root left out" in dataset_summary(conditional)


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match=rf"data.root={tmp_path / 'nope'}: no such directory") as info:
        build_dataset(ImageFolderData(root=tmp_path / "nope"), 8, 3, 2)
    assert info.value.exit_code == EXIT_CONFIG


def test_root_is_a_file(tmp_path):
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(DataError, match=rf"data.root={tmp_path / 'file.png'}: not a directory"):
        build_dataset(ImageFolderData(root=tmp_path / "file.png"), 8, 3, 2)


def test_empty_root(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "readme.txt").write_text("")
    with pytest.raises(DataError, match=rf"data.root={tmp_path}: no images \(bmp/jpeg/jpg/png/webp\)"):
        build_dataset(ImageFolderData(root=tmp_path), 8, 3, 1)


def test_corrupt_image_named_at_build_time(tmp_path):
    root = _folder(tmp_path)
    (root / "b_dog" / "broken.png").write_bytes(b"this is not a png" * 10)
    with pytest.raises(DataError, match=rf"unreadable image {root / 'b_dog' / 'broken.png'}: "):
        build_dataset(ImageFolderData(root=root), 8, 3, 2)


def test_truncated_image_named_when_read(tmp_path):
    """The build-time check reads headers; a truncated JPEG body is reported, with its path, when decoded."""
    path = tmp_path / "cut.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:-1000])  # header intact, scan data cut
    ds = build_dataset(ImageFolderData(root=tmp_path, conditional=False), 8, 3, 0)
    with pytest.raises(DataError, match=rf"{path}: cannot decode image"):
        ds[0]


def test_class_count_mismatch(tmp_path):
    root = _folder(tmp_path)
    with pytest.raises(DataError, match=r"has 2 class folders \(a_cat, b_dog\) but the models have num_classes=3"):
        build_dataset(ImageFolderData(root=root), 8, 3, 3)


def test_class_folder_without_images(tmp_path):
    root = _folder(tmp_path)
    (root / "c_empty").mkdir()
    with pytest.raises(DataError, match="class folders without images: c_empty"):
        build_dataset(ImageFolderData(root=root), 8, 3, 3)


def test_image_folder_channels(tmp_path):
    with pytest.raises(DataError, match="1 \\(L\\) or 3 \\(RGB\\) channels, but the models use 4"):
        build_dataset(ImageFolderData(root=_folder(tmp_path)), 8, 4, 2)


# ----------------------------------------------------------------------------------------------------------------
# Stream sampler


def _global_stream(n: int, batch: int, world: int, batches: int, seed: int = 0) -> list[int]:
    """The global order: batch k of rank 0, of rank 1, ..., then batch k+1."""
    samplers = [StreamSampler(n, batch, r, world, seed) for r in range(world)]
    return [i for k in range(batches) for s in samplers for i in s.batch_indices(k)]


def test_each_epoch_is_a_permutation_across_ranks():
    n, batch, world = 23, 4, 2  # G = 8 does not divide 23: epochs end inside batches
    batches = -(-3 * n // (batch * world))
    stream = _global_stream(n, batch, world, batches)
    for epoch in range(3):
        assert sorted(stream[epoch * n : (epoch + 1) * n]) == list(range(n)), epoch
    assert stream[:n] != stream[n : 2 * n]  # a fresh permutation per epoch
    rank_counts = [
        len(list(itertools.islice(iter(StreamSampler(n, batch, r, world, 0)), batches * batch))) for r in (0, 1)
    ]
    assert rank_counts == [batches * batch] * 2


def test_batch_larger_than_dataset():
    stream = _global_stream(3, 4, 2, 3)  # every batch spans epochs
    assert all(sorted(stream[e * 3 : e * 3 + 3]) == [0, 1, 2] for e in range(8))


def test_iterator_matches_batch_indices_and_resumes():
    n, batch, world = 50, 3, 2
    full = StreamSampler(n, batch, 1, world, seed=7)
    first = list(itertools.islice(iter(full), 40 * batch))
    assert first == [i for k in range(40) for i in full.batch_indices(k)]
    resumed = StreamSampler(n, batch, 1, world, seed=7, start_image=25 * batch * world)
    assert list(itertools.islice(iter(resumed), 15 * batch)) == first[25 * batch :]
    assert [full.epoch_of(k) for k in (0, 8, 9, 16, 17)] == [0, 0, 1, 1, 2]  # G = 6, N = 50


def test_resume_at_any_image_continues_the_stream_on_a_new_world_size():
    """1 rank x 5 images for 3 batches (15 images), then 2 ranks x 4: the second run reads images 15, 16, ... of the
    same stream, although 15 is not a multiple of its global batch of 8."""
    n = 23
    stream = list(itertools.islice(iter(StreamSampler(n, 1, 0, 1, seed=5)), 60))
    ranks = [StreamSampler(n, 4, r, 2, seed=5, start_image=15) for r in (0, 1)]
    resumed = [i for k in range(5) for s in ranks for i in s.batch_indices(k)]
    assert resumed == stream[15:55]
    assert [ranks[0].epoch_of(k) for k in (0, 1, 2)] == [0, 1, 1]  # positions 15, 23, 31 with N = 23


def test_order_depends_on_global_batch_not_world_size():
    reference = _global_stream(37, 12, 1, 10, seed=3)
    assert _global_stream(37, 6, 2, 10, seed=3) == reference
    assert _global_stream(37, 3, 4, 10, seed=3) == reference
    assert _global_stream(37, 12, 1, 10, seed=4) != reference


@pytest.mark.parametrize("args", [(0, 1, 0, 1), (5, 0, 0, 1), (5, 1, 2, 2), (5, 1, -1, 2)])
def test_sampler_rejects_bad_arguments(args):
    with pytest.raises(ValueError, match="StreamSampler"):
        StreamSampler(*args, seed=0)


def test_xflip_bits_are_half_deterministic_per_epoch_and_resume_mid_epoch():
    n, batch = 1000, 10
    stream = list(itertools.islice(iter(StreamSampler(n, batch, 0, 1, seed=3, xflip=True)), 3 * n))
    epochs = [stream[e * n : (e + 1) * n] for e in range(3)]
    assert all(sorted(i % n for i in epoch) == list(range(n)) for epoch in epochs)  # still a permutation
    flipped = [{i % n for i in epoch if i >= n} for epoch in epochs]
    assert all(400 < len(f) < 600 for f in flipped)
    assert flipped[0] != flipped[1] != flipped[2]  # a different half every epoch
    unflipped = list(itertools.islice(iter(StreamSampler(n, batch, 0, 1, seed=3)), 3 * n))
    assert [i % n for i in stream] == unflipped  # the flips leave the order as it was
    assert list(itertools.islice(iter(StreamSampler(n, batch, 0, 1, seed=3, xflip=True)), 3 * n)) == stream
    resumed = StreamSampler(n, 4, 1, 2, seed=3, start_image=1234, xflip=True)  # another world size, mid-epoch
    assert [i for k in range(50) for i in resumed.batch_indices(k)][:4] == stream[1238:1242]
    assert flipped[0] != {i % n for i in itertools.islice(iter(StreamSampler(n, 1, 0, 1, 4, xflip=True)), n) if i >= n}


def test_xflip_items_are_the_mirror_images(tmp_path):
    pixels = np.zeros((8, 8, 3), np.uint8)
    pixels[:, :3, 0] = 255  # red on the left: asymmetric
    Image.fromarray(pixels).save(tmp_path / "left.png")
    ds = build_dataset(ImageFolderData(root=tmp_path, conditional=False, xflip=True), 8, 3, 0)
    flip = XFlip(ds)
    assert len(flip) == 2
    assert torch.equal(flip[0][0], ds[0][0]) and torch.equal(flip[1][0], torch.flip(ds[0][0], dims=[-1]))
    assert not torch.equal(flip[0][0], flip[1][0])


def test_loader_flips_as_the_sampler_says(digits):
    sampler = StreamSampler(len(digits), 64, 0, 1, seed=0, start_image=1790, xflip=True)
    images, labels = next(iter(make_loader(digits, sampler, 64, num_workers=0, pin_memory=False)))
    index = sampler.batch_indices(0)
    assert any(i >= len(digits) for i in index) and any(i < len(digits) for i in index)
    for image, label, i in zip(images, labels, index, strict=True):
        expected = digits.images[i % len(digits)]
        assert torch.equal(image, torch.flip(expected, dims=[-1]) if i >= len(digits) else expected)
        assert label == digits.labels[i % len(digits)]


# ----------------------------------------------------------------------------------------------------------------
# Loader


def test_loader_yields_this_ranks_batches_in_memory(digits):
    sampler = StreamSampler(len(digits), 5, 1, 2, seed=0, start_image=3590)  # 3590 + 10 crosses epoch 1 -> 2
    loader = make_loader(digits, sampler, 5, num_workers=4, pin_memory=True)
    assert loader.num_workers == 0  # in-memory data ignores workers
    batches = iter(loader)
    for k in (0, 1):
        images, labels = next(batches)
        index = sampler.batch_indices(k)
        assert images.shape == (5, 3, 16, 16)
        assert torch.equal(images, digits.images[index]) and torch.equal(labels, digits.labels[index])


def test_loader_leaves_the_global_rng_alone(digits):
    """Resume restores the global RNG (StyleGAN2's noise and mixing draw from it) before the loader's iterator is
    made; making and reading it must not draw from it."""
    before = torch.get_rng_state()
    next(iter(make_loader(digits, StreamSampler(len(digits), 5, 0, 1, seed=0), 5, 0, False)))
    assert torch.equal(torch.get_rng_state(), before)


def test_loader_with_workers(tmp_path):
    ds = build_dataset(ImageFolderData(root=_folder(tmp_path)), 8, 3, 2)
    sampler = StreamSampler(len(ds), 3, 0, 1, seed=0)
    loader = make_loader(ds, sampler, 3, num_workers=1, pin_memory=False)
    assert loader.persistent_workers
    batches = iter(loader)
    for k in range(3):  # 9 images from a set of 4: two epoch boundaries
        _, labels = next(batches)
        assert labels.tolist() == [ds.labels[i] for i in sampler.batch_indices(k)]


def test_an_image_gone_while_training_is_named_in_one_line_from_a_worker(tmp_path):
    """A worker's DataError comes back from the DataLoader with the worker's traceback as its message; the user gets
    the error's own line."""
    ds = build_dataset(ImageFolderData(root=_folder(tmp_path)), 8, 3, 2)
    (tmp_path / "a_cat" / "x.png").unlink()  # after the start-up check, as a cleanup job or a sync would
    batches = iter(make_loader(ds, StreamSampler(len(ds), 4, 0, 1, seed=0), 4, num_workers=1, pin_memory=False))
    with pytest.raises(DataError, match="Original Traceback") as info:
        next(batches)
    code, message = user_error(info.value)
    assert code == EXIT_CONFIG and "\n" not in message
    assert message.startswith(f"{tmp_path / 'a_cat' / 'x.png'}: cannot decode image: FileNotFoundError")


@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_digits_pool_back_to_the_real_digits_exactly(resolution):
    """FD8 compares samples pooled to 8x8 with the real digits: the training data must round-trip exactly."""
    from sklearn.datasets import load_digits

    images, _ = digits_tensors(resolution, 3)
    pooled = torch.nn.functional.adaptive_avg_pool2d(images.mean(1, keepdim=True), 8)
    assert torch.equal((pooled + 1) * 8, torch.tensor(load_digits().images, dtype=torch.float32).unsqueeze(1))


# ----------------------------------------------------------------------------------------------------------------
# Decoding as a viewer shows it, and each file once


def _decoded(tmp_path: Path, img: Image.Image, name: str, mode: str = "RGB", **save: object) -> np.ndarray:
    path = tmp_path / name
    img.save(path, **save)
    with Image.open(path) as f:
        return np.asarray(decode(f, mode))


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    ramp = np.array([[0, 257 * 64, 65535]], dtype=np.uint16)  # PIL's plain convert() makes the last two 255
    out = _decoded(tmp_path, Image.fromarray(ramp), "g16.png", mode="L")
    assert out.tolist() == [[0, 64, 255]]


def test_transparency_is_composited_onto_white(tmp_path):
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 255))
    rgba.putpixel((1, 0), (0, 0, 0, 0))  # fully transparent black reads as white
    assert _decoded(tmp_path, rgba, "a.png").tolist() == [[[0, 0, 0], [255, 255, 255]]]
    la = Image.new("LA", (1, 1), (0, 128))  # half-transparent black over white
    assert _decoded(tmp_path, la, "la.png", mode="L").tolist() == [[127]]
    palette = Image.new("P", (2, 1), 0)
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette.putpixel((1, 0), 1)
    assert _decoded(tmp_path, palette, "p.png").tolist() == [[[10, 20, 30], [200, 100, 50]]]
    palette.info["transparency"] = 0
    assert _decoded(tmp_path, palette, "pt.png", transparency=0).tolist() == [[[255, 255, 255], [200, 100, 50]]]


def test_cmyk_and_exif_rotation(tmp_path):
    cmyk = Image.new("CMYK", (1, 1), (0, 255, 255, 0))  # pure red
    assert _decoded(tmp_path, cmyk, "c.jpg", quality=100)[0, 0].tolist() == pytest.approx([255, 0, 0], abs=3)
    wide = Image.new("RGB", (4, 2), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    assert _decoded(tmp_path, wide, "r.jpg", exif=exif).shape == (4, 2, 3)  # shown upright: 2 wide, 4 tall


def test_float_images_are_refused_by_name(tmp_path):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.float32), "F").save(root / "a" / "f.tiff")
    (root / "a" / "f.tiff").rename(root / "a" / "f.png")  # a TIFF named .png: PIL goes by content
    with pytest.raises(DataError, match=r"f.png: pixel mode F is not supported"):
        build_dataset(ImageFolderData(root=root), 8, 3, 1)


def test_symlink_loops_and_double_links_count_each_image_once(tmp_path):
    root = _folder(tmp_path / "data")  # 2 classes x 2 images
    (root / "a_cat" / "nested" / "loop").symlink_to(root / "a_cat")  # a loop inside a class
    (root / "b_dog" / "again").symlink_to(root / "a_cat")  # a's images linked from b as well
    ds = build_dataset(ImageFolderData(root=root), 16, 3, 2)
    assert [f.relative_to(root).as_posix() for f in ds.files] == [
        "a_cat/nested/y.JPG",
        "a_cat/x.png",
        "b_dog/nested/y.JPG",
        "b_dog/x.png",
    ]
    assert ds.labels == [0, 0, 1, 1]
