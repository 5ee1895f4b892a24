"""Sample grids, numbered folders, fixed noise, truncation, `sample` and `eval_mode`."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image
from tiny import TinyGenerator

from dsgan import atomic
from dsgan.samples import eval_mode, fixed_noise, generate, sample, save_folder, save_grid, truncated_noise


def test_grid_dimensions_padding_and_pixels(tmp_path):
    images = torch.full((5, 3, 8, 6), -1.0)
    images[4] = 1  # last image white
    path = tmp_path / "sub" / "grid.png"
    save_grid(images, path, nrow=3)
    with Image.open(path) as img:
        assert img.mode == "RGB" and img.size == (3 * (6 + 2) + 2, 2 * (8 + 2) + 2)
        assert img.getpixel((2 + 1 * 8, 2 + 1 * 10)) == (255, 255, 255)  # image 4: row 1, column 1
        assert img.getpixel((1, 1)) == (0, 0, 0)
    save_grid(torch.zeros(4, 1, 5, 5), tmp_path / "grey.png", nrow=2)
    with Image.open(tmp_path / "grey.png") as img:
        assert img.mode == "L" and img.size == (16, 16) and img.getpixel((3, 3)) == 128


def test_grid_write_is_atomic(tmp_path, monkeypatch):
    """PNGs go through dsgan.atomic.write_atomic (as checkpoints and reference statistics do): a failed rename leaves
    the old file and no temporary."""
    save_grid(torch.zeros(2, 3, 4, 4), tmp_path / "grid.png", nrow=2)
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        save_grid(torch.ones(2, 3, 4, 4), tmp_path / "grid.png", nrow=2)
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]  # old file intact, no temporary left
    with Image.open(tmp_path / "grid.png") as img:
        assert img.getpixel((3, 3)) == (128, 128, 128)


def test_save_folder_names(tmp_path):
    images = torch.rand(3, 3, 4, 4) * 2 - 1
    save_folder(images, torch.tensor([3, 0, 9]), tmp_path / "c")
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["000000_c3.png", "000001_c0.png", "000002_c9.png"]
    save_folder(images[:2], None, tmp_path / "u")
    assert sorted(p.name for p in (tmp_path / "u").iterdir()) == ["000000.png", "000001.png"]
    with Image.open(tmp_path / "u" / "000001.png") as img:
        assert img.size == (4, 4)


def test_fixed_noise_deterministic_and_independent_of_global_rng():
    torch.manual_seed(1)
    state = torch.get_rng_state()
    z, y = fixed_noise(10, 4, 16, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the training RNG is untouched
    torch.manual_seed(2)
    z2, y2 = fixed_noise(10, 4, 16, seed=3)
    assert torch.equal(z, z2) and torch.equal(y, y2)
    assert z.shape == (40, 16) and y.dtype == torch.long and y.tolist() == [c for c in range(10) for _ in range(4)]
    assert not torch.equal(fixed_noise(10, 4, 16, seed=4)[0], z)
    z_u, y_u = fixed_noise(0, 5, 16, seed=3, rows=3)
    assert z_u.shape == (15, 16) and y_u is None


def test_truncation_bound_and_distribution():
    z = truncated_noise(4000, 64, 1.0, torch.Generator().manual_seed(0))
    assert z.abs().max() <= 1.0 and z.dtype == torch.float32
    # Variance of the standard normal truncated to [-1, 1]: 1 - 2 phi(1) / (2 Phi(1) - 1).
    phi, cdf = math.exp(-0.5) / math.sqrt(2 * math.pi), 0.5 * (1 + math.erf(1 / math.sqrt(2)))
    assert z.var().item() == pytest.approx(1 - 2 * phi / (2 * cdf - 1), rel=0.01)
    assert z.mean().abs() < 0.01
    tiny = truncated_noise(1000, 64, 1e-4, torch.Generator().manual_seed(0))  # rejection would need ~1e4 rounds
    assert tiny.abs().max() <= 1e-4
    with pytest.raises(ValueError, match="truncation=0"):
        truncated_noise(2, 2, 0.0, None)


def test_generate_conditional_cycles_classes_and_is_batch_independent():
    generator = TinyGenerator(output_scale=4).train()
    images, labels = sample(generator, 7, [3, 5], None, seed=1, batch_size=3, device="cpu")
    assert images.shape == (7, 3, 4, 4) and not images.requires_grad
    assert labels.tolist() == [3, 5, 3, 5, 3, 5, 3]
    assert generator.training  # mode restored
    again, _ = sample(generator.eval(), 7, [3, 5], None, seed=1, batch_size=7, device="cpu")
    assert not generator.training
    assert torch.allclose(images, again, atol=1e-6)
    _, all_labels = sample(generator, 12, None, None, seed=1, batch_size=12, device="cpu")
    assert all_labels.tolist() == list(range(10)) + [0, 1]


def test_generate_truncation_and_unconditional():
    generator = TinyGenerator(num_classes=0, output_scale=4)
    images, labels = sample(generator, 5, None, 0.5, seed=0, batch_size=2, device="cpu")
    assert images.shape == (5, 3, 4, 4) and labels is None
    assert all(y is None and z.abs().max() <= 0.5 for z, y in generator.calls)
    assert sum(len(z) for z, _ in generator.calls) == 5


@pytest.mark.parametrize(("num_classes", "classes", "message"), [(0, [1], "unconditional"), (10, [10], "num_classes")])
def test_generate_rejects_bad_classes(num_classes, classes, message):
    with pytest.raises(ValueError, match=message):
        sample(TinyGenerator(num_classes), 2, classes, None, seed=0, batch_size=2, device="cpu")


class NoisyGenerator(TinyGenerator):
    """Adds global-RNG noise in its forward, as StyleGAN2's noise injection does."""

    def forward(self, z, y):
        out = super().forward(z, y)
        return out + 0.1 * torch.randn_like(out)


def test_generate_is_a_function_of_z_and_leaves_the_global_rng_alone():
    g, z = NoisyGenerator(), torch.randn(4, TinyGenerator().noise_size)
    y = torch.arange(4) % max(g.num_classes, 1) if g.num_classes else None
    torch.manual_seed(7)
    before = torch.get_rng_state()
    a = generate(g, z, y, "cpu")
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(8)
    assert torch.equal(generate(g, z, y, "cpu"), a)  # whatever the global RNG's state
    with eval_mode(g):
        assert not torch.equal(TinyGenerator.forward(g, z, y), a)  # the noise is there


@pytest.mark.parametrize("num_classes", [0, 3])
def test_stylegan2_truncation_moves_towards_the_mean_latent(num_classes):
    """truncation -> 0 gives the image of the mean style code (of each sample's class); 1 leaves w as it is."""
    from dsgan.config.models import StyleGAN2Generator

    cfg = StyleGAN2Generator(
        out_size=8,
        style_channels=8,
        num_mlps=1,
        channel_multiplier=1,
        channel_max=8,
        num_classes=num_classes,
        fixed_noise=True,
    )
    g = cfg.build()
    images, labels = sample(g, 6, None, 1e-6, seed=0, batch_size=4, device="cpu")
    for c in range(max(num_classes, 1)):
        same = images if labels is None else images[labels == c]
        torch.testing.assert_close(same, same[:1].expand_as(same), atol=1e-4, rtol=0)
    if num_classes:
        assert not torch.allclose(images[labels == 0][0], images[labels == 1][0])
    plain, _ = sample(g, 6, None, None, seed=0, batch_size=4, device="cpu")
    full, _ = sample(g, 6, None, 1.0, seed=0, batch_size=4, device="cpu")
    torch.testing.assert_close(full, plain)
    assert not torch.allclose(plain[0], plain[1])
