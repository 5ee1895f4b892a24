"""DiffAugment's and ADA's ops against their definitions (closed forms, brute force, torch.flip/rot90), their
gradients, the per-micro-step views, ADA's adjustment of p, and the config's checks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dsgan import augment
from dsgan.augment import AugmentPipe
from dsgan.cli import main as cli_main
from dsgan.config import Ada, DiffAugment, NoAugment
from dsgan.distributed import DistEnv
from dsgan.errors import EXIT_CONFIG
from dsgan.losses import r1_penalty

TINY = str(Path(__file__).resolve().parents[2] / "configs" / "tiny_cpu.yaml")
PIXEL_EXACT = 1e-5
"""Resampling at integer offsets: exact up to float32 rounding of the sampling coordinates (~1e-6 at 16 pixels)."""


def images(batch: int = 4, channels: int = 3, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Brute force: out[:, i, j] = x[:, i + dy, j + dx], zero outside."""
    out = torch.zeros_like(x)
    h, w = x.shape[1:]
    for i in range(h):
        for j in range(w):
            if 0 <= i + dy < h and 0 <= j + dx < w:
                out[:, i, j] = x[:, i + dy, j + dx]
    return out


# ---- DiffAugment ---------------------------------------------------------------------------------------------------


def test_translation_shifts_by_the_given_offsets_with_zero_fill():
    x = images()
    shift = torch.tensor([[1, -2], [0, 3], [-1, 0], [2, 2]])
    out = augment.translate(x, shift)
    for b, (dy, dx) in enumerate(shift.tolist()):
        assert torch.equal(out[b], shifted(x[b], dy, dx))


def test_cutout_zeros_the_given_square_only():
    x = images()
    start = torch.tensor([[0, 0], [-2, 5], [3, 1], [6, 6]])
    out = augment.cutout(x, start, (4, 3))
    for b, (r, c) in enumerate(start.tolist()):
        expected = x[b].clone()
        expected[:, max(r, 0) : max(r + 4, 0), max(c, 0) : max(c + 3, 0)] = 0
        assert torch.equal(out[b], expected)


def test_colour_ops_match_their_formulas():
    x, v = images(), torch.tensor([0.3, -0.2, 1.5, 0.0])
    assert torch.equal(augment.brightness(x, v), x + v.view(-1, 1, 1, 1))
    grey = x.mean(dim=1, keepdim=True)
    torch.testing.assert_close(augment.saturation(x, torch.zeros(4)), grey.expand_as(x))
    torch.testing.assert_close(augment.saturation(x, v), grey + (x - grey) * v.view(-1, 1, 1, 1))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(augment.contrast(x, v), mean + (x - mean) * v.view(-1, 1, 1, 1))


def test_diffaugment_policy_draws_within_the_papers_ranges():
    """Every translated image is x shifted by some offset in [-1, 1] (1/8 of 8 pixels); every cutout a 4x4 square
    (half of 8) at a centre inside the image."""
    x = images(batch=64)
    gen = torch.Generator().manual_seed(1)
    out = augment.diffaugment(x, DiffAugment(policy="translation"), gen)
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    seen = {next(o for o in offsets if torch.equal(out[b], shifted(x[b], *o))) for b in range(64)}
    assert len(seen) == 9
    out = augment.diffaugment(x, DiffAugment(policy="cutout"), gen)
    zeroed = out == 0
    for b in range(64):
        rows, cols = zeroed[b, 0].any(1).nonzero().flatten(), zeroed[b, 0].any(0).nonzero().flatten()
        assert 2 <= len(rows) <= 4 and 2 <= len(cols) <= 4  # 4, or clipped at the border (centre inside)
        assert torch.equal(out[b][:, ~zeroed[b, 0]], x[b][:, ~zeroed[b, 0]])


def test_diffaugment_colour_is_the_papers_formula_with_the_drawn_values():
    """Replaying the generator: brightness + (U - 0.5), saturation x 2U about the channel mean, contrast x (U + 0.5)
    about the image mean (Zhao et al.'s rand_brightness, rand_saturation, rand_contrast), written out here."""
    x = images(batch=6)
    out = augment.diffaugment(x, DiffAugment(policy="color"), torch.Generator().manual_seed(3))
    replay = torch.Generator().manual_seed(3)
    u = [torch.rand(6, generator=replay).view(-1, 1, 1, 1) for _ in range(3)]
    expected = x + (u[0] - 0.5)
    expected = (expected - expected.mean(1, keepdim=True)) * (2 * u[1]) + expected.mean(1, keepdim=True)
    expected = (expected - expected.mean((1, 2, 3), keepdim=True)) * (u[2] + 0.5) + expected.mean(
        (1, 2, 3), keepdim=True
    )
    torch.testing.assert_close(out, expected)


def test_diffaugment_translation_and_cutout_with_the_drawn_offsets():
    """Replaying the generator (rand_translation: offsets in [-1, 1] for 8 pixels at ratio 1/8; rand_cutout: a
    4x4 square around a centre in [0, 8] for ratio 1/2), against the brute-force shift and an explicit hole."""
    x = images(batch=6)
    out = augment.diffaugment(x, DiffAugment(policy="translation"), torch.Generator().manual_seed(4))
    replay = torch.Generator().manual_seed(4)
    dy, dx = (torch.randint(-1, 2, (6,), generator=replay) for _ in range(2))
    for b in range(6):
        assert torch.equal(out[b], shifted(x[b], int(dy[b]), int(dx[b])))
    out = augment.diffaugment(x, DiffAugment(policy="cutout"), torch.Generator().manual_seed(5))
    replay = torch.Generator().manual_seed(5)
    cy, cx = (torch.randint(0, 9, (6,), generator=replay) for _ in range(2))
    for b in range(6):
        expected = x[b].clone()
        expected[:, max(int(cy[b]) - 2, 0) : int(cy[b]) + 2, max(int(cx[b]) - 2, 0) : int(cx[b]) + 2] = 0
        assert torch.equal(out[b], expected)


def test_diffaugment_colour_keeps_each_image_an_affine_map_of_itself():
    """color = brightness, saturation, contrast: on a grey image (saturation has nothing to scale) each output is
    a * x + b per image with a in [0.5, 1.5]."""
    x = images(batch=16, channels=1)
    out = augment.diffaugment(x, DiffAugment(policy="color"), torch.Generator().manual_seed(2))
    for b in range(16):
        xs, ys = x[b].flatten(), out[b].flatten()
        a = ((xs - xs.mean()) * (ys - ys.mean())).sum() / (xs - xs.mean()).square().sum()
        assert 0.5 - 1e-5 <= a <= 1.5 + 1e-5
        torch.testing.assert_close(ys, a * xs + (ys.mean() - a * xs.mean()), atol=1e-5, rtol=1e-5)


# ---- ADA -------------------------------------------------------------------------------------------------------


def only(*ops: str, **strengths: float) -> Ada:
    return Ada(ops=",".join(ops), **strengths)


def test_ada_at_p_zero_is_the_identity():
    x = images()
    assert augment.ada(x, Ada(), 0.0, torch.Generator().manual_seed(0)) is x
    # and every op's draw is off: both matrices are exactly the identity
    geometric, color = augment.ada_matrices(Ada(), 0.0, x.shape, torch.Generator().manual_seed(0), x.device)
    assert torch.equal(geometric, torch.eye(3).expand(4, 3, 3)) and torch.equal(color, torch.eye(4).expand(4, 4, 4))


def test_flip_and_quarter_turns_resample_exactly():
    x = images()
    ones = torch.ones(4)
    flip = augment.scale2d(-ones, ones)
    torch.testing.assert_close(augment.resample(x, flip), torch.flip(x, dims=[3]), atol=PIXEL_EXACT, rtol=0)
    for k, (cos, sin) in enumerate([(1, 0), (0, 1), (-1, 0), (0, -1)]):
        turn = augment.rotate2d(ones * cos, ones * sin)
        torch.testing.assert_close(augment.resample(x, turn), torch.rot90(x, k, dims=(2, 3)), atol=PIXEL_EXACT, rtol=0)


def test_integer_translation_is_a_roll_inside_and_a_reflection_at_the_border():
    x = images(size=9)
    dx, dy = 2, -3
    inverse = augment.translate2d(torch.full((4,), -float(dx)), torch.full((4,), -float(dy)))
    out = augment.resample(x, inverse)
    # out[i, j] = x[i - dy, j - dx]: where that is inside the image, it is torch.roll's value
    rolled = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    torch.testing.assert_close(out[:, :, : 9 + dy, dx:], rolled[:, :, : 9 + dy, dx:], atol=PIXEL_EXACT, rtol=0)
    # and everywhere, x padded by reflection about the edge pixels (F.pad's 'reflect') and cropped
    padded = F.pad(x, (dx, 0, 0, -dy), mode="reflect")
    torch.testing.assert_close(out, padded[:, :, -dy:, :9], atol=PIXEL_EXACT, rtol=0)


def test_at_p_one_xflip_and_rotate90_each_give_one_of_their_transforms():
    x, gen = images(batch=32), torch.Generator().manual_seed(3)
    out = augment.ada(x, only("xflip"), 1.0, gen)
    flipped = [torch.allclose(out[b], torch.flip(x[b], dims=[2]), atol=PIXEL_EXACT) for b in range(32)]
    same = [torch.allclose(out[b], x[b], atol=PIXEL_EXACT) for b in range(32)]
    assert all(f or s for f, s in zip(flipped, same, strict=True)) and any(flipped) and any(same)
    out = augment.ada(x, only("rotate90"), 1.0, gen)
    turns = [
        next(k for k in range(4) if torch.allclose(out[b], torch.rot90(x[b], k, (1, 2)), atol=PIXEL_EXACT))
        for b in range(32)
    ]
    assert set(turns) == {0, 1, 2, 3}


def test_at_p_one_integer_translation_stays_within_xint_max():
    x, gen = images(batch=16, size=16), torch.Generator().manual_seed(4)
    out = augment.ada(x, only("xint"), 1.0, gen)  # at most 0.125 * 16 = 2 pixels
    for b in range(16):
        matches = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.allclose(
                out[b, :, 2:-2, 2:-2], torch.roll(x[b], (dy, dx), (1, 2))[:, 2:-2, 2:-2], atol=PIXEL_EXACT
            )
        ]
        assert len(matches) == 1


def recolored(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    return augment.recolor(x, matrix.expand(len(x), 4, 4))


def test_colour_matrices_match_closed_forms():
    x = images(batch=1)
    mean = x.mean(dim=1, keepdim=True)
    one = torch.ones(1)
    torch.testing.assert_close(recolored(x, augment.color_offset(0.3 * one)), x + 0.3)
    torch.testing.assert_close(recolored(x, augment.color_scale(1.7 * one)), 1.7 * x)
    torch.testing.assert_close(recolored(x, augment.luma_flip(one)), x - 2 * mean)  # reflect the grey component
    torch.testing.assert_close(recolored(x, augment.luma_flip(0 * one)), x)
    torch.testing.assert_close(recolored(x, augment.saturation_scale(0.25 * one)), mean + 0.25 * (x - mean))
    # a third of a turn about the grey axis carries red to green, green to blue, blue to red
    third = recolored(x, augment.hue_rotation(2 * math.pi / 3 * one))
    torch.testing.assert_close(third, x[:, [2, 0, 1]], atol=PIXEL_EXACT, rtol=0)
    # grey images: the mean of the RGB rows (NVlabs), so offset and scale act as on each channel
    g = x[:, :1]
    torch.testing.assert_close(recolored(g, augment.color_offset(0.3 * one)), g + 0.3)
    torch.testing.assert_close(recolored(g, augment.color_scale(1.7 * one)), 1.7 * g)


class Critic(nn.Module):
    """D(x, y) with a smooth activation, so that R1's second derivative is not zero."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Softplus(), nn.Flatten(), nn.Linear(4 * 6 * 6, 1))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return self.net(x)


AUGMENTATIONS = {
    "ada": lambda t, g: augment.ada(t, Ada(), 1.0, g),
    "diffaugment": lambda t, g: augment.diffaugment(t, DiffAugment(), g),
}


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_every_op_at_p_one_changes_images_and_passes_gradients(name):
    """bgc at p = 1 and DiffAugment: finite, changed, differentiable w.r.t. the images, and twice (R1 through the
    augmentation) w.r.t. D's weights."""
    fn, d = AUGMENTATIONS[name], Critic()
    x = images().requires_grad_(True)
    out = fn(x, torch.Generator().manual_seed(5))
    assert torch.isfinite(out).all() and not torch.allclose(out, x)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    r1_penalty(d, x.detach(), None, lambda t: fn(t, torch.Generator().manual_seed(5))).backward()
    weights = (d.net[0].weight, d.net[3].weight)  # (the last bias does not move grad_x D)
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in weights)


# ---- the run's views and ADA's p ---------------------------------------------------------------------------------


def pipe(cfg, p: float | None = None, signs=(0.0, 0), rank: int = 0) -> AugmentPipe:
    env = DistEnv(rank=rank, local_rank=rank, world_size=1, device=torch.device("cpu"))
    return AugmentPipe(cfg, seed=7, env=env, images_per_iter=8, p=p, signs=signs)


def test_views_are_pure_functions_of_seed_rank_iteration_and_micro_step():
    x = images()
    a = pipe(Ada(initial_p=0.8))
    real, fake = a.d_views(3)
    assert torch.equal(real(x), real(x))  # R1 sees the draw the real logits saw
    assert torch.equal(real(x), pipe(Ada(initial_p=0.8)).d_views(3)[0](x))  # and a resumed run the same
    others = [fake(x), a.d_views(4)[0](x), a.g_view(3, 0)(x), pipe(Ada(initial_p=0.8), rank=1).d_views(3)[0](x)]
    assert all(not torch.equal(real(x), o) for o in others)
    assert pipe(NoAugment()).d_views(3) == (None, None)
    bf16 = a.g_view(0, 1)(x.bfloat16())
    assert bf16.dtype == torch.bfloat16


def test_p_moves_by_images_over_ada_kimg_towards_the_target():
    cfg = Ada(ada_kimg=1, interval_iters=4)  # step = 8 images * 4 iterations / 1000
    a = pipe(cfg, p=0.5)
    for _ in range(4):
        a.observe(torch.tensor(0.75), 8)  # r_t = 0.75 > 0.6
    assert a.adjust_due(4) and not a.adjust_due(6)
    a.adjust()
    assert a.rt == 0.75 and a.p == pytest.approx(0.532, abs=1e-12)
    a.observe(torch.tensor(-0.25), 8)
    a.adjust()
    assert a.rt == -0.25 and a.p == pytest.approx(0.5, abs=1e-12)
    low = pipe(cfg, p=0.01)
    low.observe(torch.tensor(-1.0), 8)
    low.adjust()
    assert low.p == 0.0  # clamped
    high = pipe(cfg, p=0.99)
    high.observe(torch.tensor(1.0), 8)
    high.adjust()
    assert high.p == 1.0


def test_checkpointed_signs_continue_the_interval_exactly():
    """Signs seen before a checkpoint count in the next adjustment after resume (held by rank 0 only)."""
    cfg = Ada(ada_kimg=1)
    straight = pipe(cfg, p=0.0)
    straight.observe(torch.tensor(0.625), 8)
    saved = straight.state()
    assert saved == {"augment_p": 0.0, "augment_signs": (5.0, 8)}
    straight.observe(torch.tensor(1.0), 8)
    resumed = pipe(cfg, p=saved["augment_p"], signs=saved["augment_signs"])
    resumed.observe(torch.tensor(1.0), 8)
    straight.adjust(), resumed.adjust()
    assert resumed.rt == straight.rt == 13 / 16 and resumed.p == straight.p > 0
    other_rank = pipe(cfg, p=0.0, signs=(5.0, 8), rank=1)
    assert other_rank.state()["augment_signs"] == (0.0, 0)


def test_fixed_p_never_adjusts():
    a = pipe(Ada(target=None, initial_p=0.3))
    assert a.p == 0.3 and not a.adjust_due(4) and a.metrics() == {"aug/p": 0.3}


@pytest.mark.parametrize(
    "sets,expected",
    [
        (["augment.type=ada", "augment.ops=bgc,zoom"], "augment.ops: unknown augmentation 'zoom'"),
        (["augment.type=ada", "augment.ops=xflip,,hue"], "augment.ops: 'xflip,,hue': empty name"),
        (["augment.type=ada", "augment.ops=blit,xflip"], "augment.ops: 'xflip' appears twice"),
        (["augment.type=ada", "augment.target=1.5"], "augment.target"),
        (["augment.type=diffaugment", "augment.policy=color,translatoin"], "augment.policy: unknown augmentation"),
        (["augment.type=mixup"], "augment: Input tag 'mixup'"),
        (
            ["augment.type=ada", "generator.model.out_channels=2", "discriminator.model.in_channels=2"],
            "augment.ops='bgc' has colour ops",
        ),
    ],
)
def test_bad_augmentation_is_a_config_error(capsys, sets, expected):
    extra = [arg for s in sets for arg in ("--set", s)]
    assert cli_main(["validate-config", "--config", TINY, *extra]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err, err
