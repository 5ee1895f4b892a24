"""`dsgan migrate` on configs written in the upstream layout (their `_base_` chains, dataset bases and helper
variables): WGAN-GP, LSGAN, DCGAN and SNGAN-proj 128 in MMGeneration 0.x and MMagic form, each converting with the
training semantics README.md describes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dsgan.errors import ConfigError
from dsgan.migrate import migrate
from dsgan.migrate.report import render_diff
from dsgan.migrate.source import load_source

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mmgen"
V0, V1 = FIXTURES / "v0", FIXTURES / "v1"
SNGAN_0X = V0 / "sngan_proj" / "sngan_proj_128_wReLUinplace_Glr-2e-4_Dlr-5e-5_ndisc5_imagenet1k_b128x2.py"
SNGAN_1X = V1 / "sngan_proj" / "sngan-proj_wReLUinplace_Glr2e-4_Dlr5e-5_ndisc5-2xb128_imagenet1k-128x128.py"
WGANGP_1X = "wgangp_GN_1xb64-160kiters_celeba-cropped-128x128.py"


def adam(cfg, role: str) -> tuple[float, tuple[float, float]]:
    params = getattr(cfg, role).deepspeed.optimizer.params
    return params.lr, tuple(params.betas)


def test_dcgan_0x_with_the_common_dataset_base() -> None:
    """The unconditional dataset base (`mean=[127.5] * 3`) and default_runtime; one D and one G update of 128
    images per iteration, MMagic's channel count at 4x4 (1024) as dsgan's last hidden width (1024 / 2**3)."""
    m = migrate(V0 / "dcgan" / "dcgan_celeba-cropped_64_b128x1_300k.py")
    cfg = m.config
    assert m.version == "0.x" and len(m.source.files) == 4
    assert m.source.values["train_pipeline"][2]["mean"] == [127.5, 127.5, 127.5]
    assert (cfg.schedule.discriminator_steps, cfg.schedule.generator_steps) == (1, 1)
    assert cfg.loss.type == "vanilla" and cfg.run.total_iters == 300002
    assert (cfg.generator.model.output_scale, cfg.generator.model.base_channels) == (64, 128)
    assert (cfg.generator.model.num_classes, cfg.discriminator.model.input_scale) == (0, 64)
    assert cfg.generator.deepspeed.train_micro_batch_size_per_gpu == 128
    assert adam(cfg, "generator") == adam(cfg, "discriminator") == (2e-4, (0.5, 0.999))
    assert cfg.data.type == "image_folder"
    assert str(cfg.data.root).endswith("data/celeba-cropped/cropped_images_aligned_png")
    assert cfg.checkpoint.every_iters == 10000 and cfg.checkpoint.keep_last == 20


@pytest.mark.parametrize(
    "path",
    [
        V0 / "lsgan" / "lsgan_dcgan-archi_lr-1e-3_celeba-cropped_64_b128x1_12m.py",
        V1 / "lsgan" / "lsgan_dcgan-archi_lr1e-3-1xb128-12Mimgs_celeba-cropped-64x64.py",
    ],
    ids=["0.x", "1.x"],
)
def test_lsgan_in_both_versions(path) -> None:
    """mmgen's GANLoss(gan_type='lsgan') and MMagic's LSGAN model (which hard-codes the MSE loss) both become
    loss.type lsgan on the DCGAN architecture; the 1.x config's `total_iters` is a stray variable."""
    m = migrate(path)
    cfg = m.config
    assert cfg.loss.type == "lsgan" and cfg.run.total_iters == 100000
    assert (cfg.schedule.discriminator_steps, cfg.schedule.generator_steps) == (1, 1)
    assert adam(cfg, "generator") == adam(cfg, "discriminator") == (1e-3, (0.5, 0.99))
    assert (cfg.generator.model.output_scale, cfg.generator.model.noise_size) == (64, 100)
    assert str(cfg.data.root).endswith("data/celeba-cropped/cropped_images_aligned_png")
    if m.version == "1.x":
        kind, reason = m.ledger.classify("total_iters")
        assert kind == "ignored" and reason.startswith("a stray variable")
        assert m.ledger.classify("disc_step")[0] == "ignored"  # a helper: read by train_cfg.max_iters


@pytest.mark.parametrize("path", [SNGAN_0X, SNGAN_1X], ids=["0.x", "1.x"])
def test_sngan_projection_128_in_both_versions(path) -> None:
    """MMGeneration's and MMagic's ImageNet SNGAN-proj: 5 D updates per G update, hinge loss, 1000 classes at
    128x128 with base_channels 64, 128 images per GPU, random flips; 2.5M iterations = 500k G updates."""
    m = migrate(path)
    cfg = m.config
    assert m.version == ("0.x" if path == SNGAN_0X else "1.x")
    assert (cfg.schedule.discriminator_steps, cfg.schedule.generator_steps) == (5, 1)
    assert cfg.generator.deepspeed.gradient_accumulation_steps == 1
    assert cfg.loss.type == "hinge" and cfg.run.total_iters == 2_500_000
    g, d = cfg.generator.model, cfg.discriminator.model
    assert (g.type, g.output_scale, g.base_channels, g.num_classes, g.noise_size) == (
        "SNGANGenerator",
        128,
        64,
        1000,
        128,
    )
    assert (d.type, d.input_scale, d.base_channels, d.num_classes) == ("SNGANDiscriminator", 128, 64, 1000)
    if m.version == "0.x":
        assert adam(cfg, "generator") == (2e-4, (0.0, 0.999)) and adam(cfg, "discriminator") == (5e-5, (0.0, 0.999))
    else:  # MMagic's file trains both at 2e-4, betas (0.5, 0.999), whatever its name says
        assert adam(cfg, "generator") == adam(cfg, "discriminator") == (2e-4, (0.5, 0.999))
    assert cfg.generator.deepspeed.train_micro_batch_size_per_gpu == 128
    assert cfg.data.type == "image_folder" and cfg.data.conditional and cfg.data.xflip
    assert str(cfg.data.root).endswith("data/imagenet/train")
    assert g.init_type == d.init_type == "studio"  # init_cfg=dict(type='studio'): PyTorch-StudioGAN's


def test_sngan_projection_128_versions_differ_only_in_their_optimizers() -> None:
    """Schedule, loss, models and data agree between the two versions; --diff finds what the files really differ
    in: MMagic's D learning rate and both networks' betas (and the data-loading workers)."""
    lines = render_diff(migrate(SNGAN_0X), migrate(SNGAN_1X), 2).splitlines()
    rows = {tuple(line.split()[:3]) for line in lines if line.startswith(("optimizer", "data", "schedule", "loss"))}
    assert rows == {
        ("optimizer", "generator", "betas"),
        ("optimizer", "discriminator", "lr"),
        ("optimizer", "discriminator", "betas"),
        ("data", "num_workers", "2"),
    }, lines
    assert "4 differences in training semantics" in lines


@pytest.mark.parametrize(
    "path",
    [V0 / "wgan-gp" / "wgangp_GN_celeba-cropped_128_b64x1_160kiter.py", V1 / "wgan-gp" / WGANGP_1X],
    ids=["0.x", "1.x"],
)
def test_wgan_gp_in_both_versions(path) -> None:
    """WGAN loss plus 10 x the whole-image gradient penalty, 5 D updates per G update, Adam 1e-4 (0.5, 0.9),
    MMagic's WGAN-GP CNNs at 128x128 with GroupNorm in D (the configs' norm_cfg=dict(type='GN'))."""
    m = migrate(path)
    cfg = m.config
    assert (cfg.loss.type, cfg.loss.gp_weight) == ("wgan", 10.0)
    assert (cfg.schedule.discriminator_steps, cfg.schedule.generator_steps) == (5, 1)
    assert cfg.run.total_iters == 160000 and cfg.generator.deepspeed.train_micro_batch_size_per_gpu == 64
    assert adam(cfg, "generator") == adam(cfg, "discriminator") == (1e-4, (0.5, 0.9))
    g, d = cfg.generator.model, cfg.discriminator.model
    assert (g.type, g.output_scale, g.noise_size, d.type, d.input_scale, d.norm) == (
        "WGANGPGenerator",
        128,
        128,
        "WGANGPDiscriminator",
        128,
        "GN",
    )
    assert str(cfg.data.root).endswith("data/celeba-cropped/cropped_images_aligned_png")


def test_wgan_gp_50_trains_with_what_mmagic_reads() -> None:
    """MMagic's GP-50 config sets loss_config.gp_loss_weight=50, a key its WGANGP never reads (it reads
    loss_weight), so MMagic trains with lambda 10: the conversion does the same and says so."""
    m = migrate(V1 / "wgan-gp" / "wgangp_GN-GP-50_1xb64-160kiters_lsun-bedroom-128x128.py")
    assert m.config.loss.gp_weight == 10.0
    assert m.ledger.classify("model.loss_config.gp_loss_weight")[0] == "ignored"
    assert any("gp_loss_weight=50 has no effect in MMagic" in note for note in m.ledger.notes)


@pytest.mark.parametrize(
    ("v0", "v1"),
    [
        (
            V0 / "lsgan" / "lsgan_dcgan-archi_lr-1e-3_celeba-cropped_64_b128x1_12m.py",
            V1 / "lsgan" / "lsgan_dcgan-archi_lr1e-3-1xb128-12Mimgs_celeba-cropped-64x64.py",
        ),
        (V0 / "wgan-gp" / "wgangp_GN_celeba-cropped_128_b64x1_160kiter.py", V1 / "wgan-gp" / WGANGP_1X),
    ],
    ids=["lsgan", "wgan-gp"],
)
def test_0x_and_1x_versions_of_one_recipe_train_the_same(v0, v1) -> None:
    """mmgen's GANLoss + disc_steps and MMagic's model classes + discriminator_steps, read with each version's
    rules, give the same dsgan config."""
    text = render_diff(migrate(v0), migrate(v1), 8)
    assert text.rstrip().endswith("no differences in training semantics"), text


REFUSED_UPSTREAM = ("a `for` loop", "list comprehension", "a call (", "file not found")
"""What the upstream trees hold that the reader refuses (README's census): loops and comprehensions in MMagic's
restoration configs, `max()`/`float()` calls, and mmgen StyleGAN3 configs whose `_base_` file does not exist."""


@pytest.mark.parametrize(
    ("variable", "readable"), [("MMGEN_SRC", 87), ("MMAGIC_SRC", 204)], ids=["mmgeneration", "mmagic"]
)
def test_upstream_config_trees_read(variable, readable) -> None:
    """Given a checkout (open-mmlab/mmgeneration at ccd1f56, open-mmlab/mmagic at 0a560bb), every top-level config
    under configs/ reads, or is refused for one of the constructs the census counts as not evaluable."""
    root = os.environ.get(variable)
    if not root:
        pytest.skip(f"{variable} (a checkout) is not set")
    read, refused = 0, {}
    for path in sorted(Path(root, "configs").rglob("*.py")):
        if "_base_" in path.parts:
            continue
        try:
            load_source(path)
            read += 1
        except ConfigError as exc:
            refused[path] = str(exc)
    assert read == readable, refused
    assert all(any(why in message for why in REFUSED_UPSTREAM) for message in refused.values()), refused
