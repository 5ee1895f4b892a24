"""Augmentation of every image D sees, real and fake, in both phases (and of the reals under R1): DiffAugment (Zhao
et al. 2020) and ADA (Karras et al. 2020), pure differentiable PyTorch on the training device.

Randomness: the parameters of micro-step m of iteration t on rank r are drawn from a generator seeded with
`step_seed(seed, r, t, AUG_STREAM + m)`, and a view re-seeds it on every call. So the same iteration augments the
same way after a resume (no RNG state to save), and R1 differentiates exactly the transform that the real logits saw.

ADA's p is trainer state (`TrainerState.augment_p`): the same on every rank (the signs are summed over ranks before
each adjustment), checkpointed, and part of the ranks' agreement (`AugmentPipe.p_bits`).
"""

from __future__ import annotations

import math
import struct
from typing import Any

import torch
import torch.nn.functional as F

from dsgan.config import Ada, Augment, DiffAugment, NoAugment
from dsgan.distributed import DistEnv
from dsgan.losses import View
from dsgan.steps import step_seed

AUG_STREAM = 1 << 21
"""Micro-step indices of `step_seed` from here on draw augmentations: + 0 the D micro-step's reals, + 1 its fakes,
+ 2 + k the fakes of G micro-step k (noise uses 0, 1, ...; path length 2**20 + ...)."""


# ---- DiffAugment: the policy's ops, each on every image ------------------------------------------------------------


def brightness(x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    return x + offset.view(-1, 1, 1, 1)


def saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale each pixel's deviation from its mean over channels."""
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * factor.view(-1, 1, 1, 1) + mean


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale each image's deviation from its mean over channels and pixels."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * factor.view(-1, 1, 1, 1) + mean


def translate(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """out[b, :, i, j] = x[b, :, i + shift[b, 0], j + shift[b, 1]], zero where that is outside the image (integer
    shifts, gathered: exact and differentiable)."""
    batch, channels, height, width = x.shape
    rows = torch.arange(height, device=x.device).view(1, -1) + shift[:, :1]  # [B, H]
    cols = torch.arange(width, device=x.device).view(1, -1) + shift[:, 1:]  # [B, W]
    inside = ((rows >= 0) & (rows < height)).view(batch, 1, height, 1) & ((cols >= 0) & (cols < width)).view(
        batch, 1, 1, width
    )
    rows, cols = rows.clamp(0, height - 1), cols.clamp(0, width - 1)
    gathered = x.gather(2, rows.view(batch, 1, height, 1).expand(batch, channels, height, width))
    gathered = gathered.gather(3, cols.view(batch, 1, 1, width).expand(batch, channels, height, width))
    return gathered * inside.to(x.dtype)


def cutout(x: torch.Tensor, start: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Zero the rows [start[b, 0], start[b, 0] + size[0]) x columns [start[b, 1], start[b, 1] + size[1]) (clipped to
    the image)."""
    batch, _, height, width = x.shape
    rows = torch.arange(height, device=x.device).view(1, -1) - start[:, :1]
    cols = torch.arange(width, device=x.device).view(1, -1) - start[:, 1:]
    in_rows, in_cols = (rows >= 0) & (rows < size[0]), (cols >= 0) & (cols < size[1])
    hole = in_rows.view(batch, 1, height, 1) & in_cols.view(batch, 1, 1, width)
    return x * (~hole).to(x.dtype)


def diffaugment(x: torch.Tensor, cfg: DiffAugment, gen: torch.Generator) -> torch.Tensor:
    """The policy's ops in order, with the paper's distributions (its reference implementation's draws)."""
    batch, _, height, width = x.shape

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(batch, generator=gen, device=x.device)

    for op in cfg.ops:
        if op == "color":
            x = brightness(x, uniform(-0.5, 0.5))
            x = saturation(x, uniform(0.0, 2.0))
            x = contrast(x, uniform(0.5, 1.5))
        elif op == "translation":
            shift = [int(side * cfg.translation_ratio + 0.5) for side in (height, width)]
            x = translate(x, torch.stack([_randint(-s, s + 1, batch, gen, x.device) for s in shift], dim=1))
        elif op == "cutout":
            size = (int(height * cfg.cutout_ratio + 0.5), int(width * cfg.cutout_ratio + 0.5))
            # The paper's centre: uniform over the image (one more position for an even size), the square around it
            start = [
                _randint(0, side + 1 - s % 2, batch, gen, x.device) - s // 2
                for side, s in zip((height, width), size, strict=True)
            ]
            x = cutout(x, torch.stack(start, dim=1), size)
    return x


def _randint(low: int, high: int, batch: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randint(low, high, (batch,), generator=gen, device=device)


# ---- ADA: geometric ops as one 3x3 matrix, colour ops as one 4x4 matrix --------------------------------------------


def _matrices(batch: int, n: int, device: torch.device) -> torch.Tensor:
    return torch.eye(n, device=device).repeat(batch, 1, 1)


def translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    m = _matrices(len(tx), 3, tx.device)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = _matrices(len(sx), 3, sx.device)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def rotate2d(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotation by the angle with this cosine and sine (x right, y down: clockwise on screen)."""
    m = _matrices(len(cos), 3, cos.device)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos, -sin, sin, cos
    return m


LUMA = torch.tensor([1.0, 1.0, 1.0, 0.0]) / math.sqrt(3)
"""The luma axis of RGB (homogeneous), about which lumaflip reflects and hue rotates."""


def color_offset(b: torch.Tensor) -> torch.Tensor:
    m = _matrices(len(b), 4, b.device)
    m[:, :3, 3] = b.view(-1, 1)
    return m


def color_scale(c: torch.Tensor) -> torch.Tensor:
    m = _matrices(len(c), 4, c.device)
    m[:, :3, :3] *= c.view(-1, 1, 1)
    return m


def luma_flip(flip: torch.Tensor) -> torch.Tensor:
    """Householder reflection I - 2 v v^T across the plane orthogonal to the luma axis, where `flip` is 1."""
    v = LUMA.to(flip.device)
    return _matrices(len(flip), 4, flip.device) - 2 * torch.outer(v, v) * flip.view(-1, 1, 1)


def hue_rotation(theta: torch.Tensor) -> torch.Tensor:
    """Rodrigues' rotation by theta about the luma axis v: cos I + sin [v]x + (1 - cos) v v^T on RGB."""
    vx, vy, vz = LUMA[:3].tolist()
    cross = torch.tensor([[0.0, -vz, vy], [vz, 0.0, -vx], [-vy, vx, 0.0]], device=theta.device)
    vv = torch.outer(LUMA[:3], LUMA[:3]).to(theta.device)
    c, s = torch.cos(theta).view(-1, 1, 1), torch.sin(theta).view(-1, 1, 1)
    m = _matrices(len(theta), 4, theta.device)
    m[:, :3, :3] = c * torch.eye(3, device=theta.device) + s * cross + (1 - c) * vv
    return m


def saturation_scale(s: torch.Tensor) -> torch.Tensor:
    """v v^T + s (I - v v^T): the luma component kept, the chroma scaled by s."""
    vv = torch.outer(LUMA, LUMA).to(s.device)
    return vv + (torch.eye(4, device=s.device) - vv) * s.view(-1, 1, 1)


def resample(x: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """out(pixel) = x(inverse @ pixel), in pixel units about the image centre, bilinear, reflecting at the borders
    about the edge pixels' centres (NVlabs' `reflect` padding). One bilinear sampling at the output resolution:
    NVlabs instead pads, upsamples 2x with a wavelet low-pass filter, samples there and filters back down, which
    suppresses the aliasing of rotations and down-scaling (a frequency leak D could notice); integer ops (flips,
    90-degree turns, integer shifts) are exact either way."""
    batch, _, height, width = x.shape
    cx, cy = (width - 1) / 2, (height - 1) / 2
    ys, xs = torch.meshgrid(
        torch.arange(height, device=x.device, dtype=x.dtype) - cy,
        torch.arange(width, device=x.device, dtype=x.dtype) - cx,
        indexing="ij",
    )
    pixels = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).view(1, -1, 3)  # [1, H*W, xy1]
    source = (pixels @ inverse.transpose(1, 2))[..., :2]  # [B, H*W, xy]
    # align_corners=True: -1 and 1 are the centres of the edge pixels (the reflection axes)
    grid = (source / torch.tensor([max(cx, 0.5), max(cy, 0.5)], device=x.device, dtype=x.dtype)).view(
        batch, height, width, 2
    )
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


def recolor(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Apply the homogeneous colour matrix; a grey image gets the mean of its RGB rows (NVlabs' convention)."""
    batch, channels, height, width = x.shape
    flat = x.reshape(batch, channels, height * width)
    if channels == 3:
        out = matrix[:, :3, :3] @ flat + matrix[:, :3, 3:]
    else:  # 1 channel (the config refuses colour ops otherwise)
        grey = matrix[:, :3, :].mean(dim=1, keepdim=True)  # [B, 1, 4]
        out = flat * grey[:, :, :3].sum(dim=2, keepdim=True) + grey[:, :, 3:]
    return out.view(batch, channels, height, width)


def ada_matrices(
    cfg: Ada, p: float, shape: torch.Size, gen: torch.Generator, device: torch.device
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The per-image inverse geometric matrix (output pixel -> input pixel) and colour matrix, each op drawn with
    probability p, in NVlabs' order and with its distributions; None where no op of that kind is enabled."""
    batch, channels, height, width = shape
    ops = cfg.op_set

    def chosen(prob: float) -> torch.Tensor:
        return torch.rand(batch, generator=gen, device=device) < prob

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(batch, generator=gen, device=device)

    def normal(std: float) -> torch.Tensor:
        return torch.randn(batch, generator=gen, device=device) * std

    def kept(value: torch.Tensor, neutral: float, prob: float) -> torch.Tensor:
        return torch.where(chosen(prob), value, torch.full_like(value, neutral))

    geometric = None
    if ops & {"xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac"}:
        geometric = _matrices(batch, 3, device)
        if "xflip" in ops:
            flip = kept(torch.floor(uniform(0, 2)), 0, p)
            geometric = geometric @ scale2d(1 - 2 * flip, torch.ones_like(flip))
        if "rotate90" in ops:
            quarter = kept(torch.floor(uniform(0, 4)), 0, p).long()
            # exact cosines and sines of k * 90 degrees, so that the turn samples pixel centres exactly
            cos = torch.tensor([1.0, 0.0, -1.0, 0.0], device=device)[quarter]
            sin = torch.tensor([0.0, 1.0, 0.0, -1.0], device=device)[quarter]
            geometric = geometric @ rotate2d(cos, sin)
        if "xint" in ops:
            tx, ty = uniform(-cfg.xint_max, cfg.xint_max), uniform(-cfg.xint_max, cfg.xint_max)
            on = chosen(p).float()
            geometric = geometric @ translate2d(-torch.round(tx * width) * on, -torch.round(ty * height) * on)
        if "scale" in ops:
            s = kept(torch.exp2(normal(cfg.scale_std)), 1, p)
            geometric = geometric @ scale2d(1 / s, 1 / s)
        # Rotation before and after the anisotropic scaling, each with p_rot: P(either) = p (NVlabs)
        p_rot = 1 - math.sqrt(min(max(1 - p, 0.0), 1.0))
        for stage in ("pre", "post"):
            if "rotate" in ops:
                theta = kept(uniform(-math.pi * cfg.rotate_max, math.pi * cfg.rotate_max), 0, p_rot)
                geometric = geometric @ rotate2d(torch.cos(theta), torch.sin(theta))
            if stage == "pre" and "aniso" in ops:
                s = kept(torch.exp2(normal(cfg.aniso_std)), 1, p)
                geometric = geometric @ scale2d(1 / s, s)
        if "xfrac" in ops:
            tx, ty = normal(cfg.xfrac_std), normal(cfg.xfrac_std)
            on = chosen(p).float()
            geometric = geometric @ translate2d(-tx * width * on, -ty * height * on)

    color = None
    if ops & {"brightness", "contrast", "lumaflip", "hue", "saturation"}:
        color = _matrices(batch, 4, device)
        if "brightness" in ops:
            color = color_offset(kept(normal(cfg.brightness_std), 0, p)) @ color
        if "contrast" in ops:
            color = color_scale(kept(torch.exp2(normal(cfg.contrast_std)), 1, p)) @ color
        if "lumaflip" in ops:
            color = luma_flip(kept(torch.floor(uniform(0, 2)), 0, p)) @ color
        if "hue" in ops and channels > 1:
            color = hue_rotation(kept(uniform(-math.pi * cfg.hue_max, math.pi * cfg.hue_max), 0, p)) @ color
        if "saturation" in ops and channels > 1:
            color = saturation_scale(kept(torch.exp2(normal(cfg.saturation_std)), 1, p)) @ color
    return geometric, color


def ada(x: torch.Tensor, cfg: Ada, p: float, gen: torch.Generator) -> torch.Tensor:
    if p == 0:  # every op off: the images as they are, at no cost
        return x
    geometric, color = ada_matrices(cfg, p, x.shape, gen, x.device)
    if geometric is not None:
        x = resample(x, geometric)
    if color is not None:
        x = recolor(x, color)
    return x


# ---- the run's augmentation and ADA's adaptive p -------------------------------------------------------------------


class AugmentPipe:
    """What D sees in a run: `d_views`/`g_view` give each micro-step's augmentation; for ADA, `observe` collects
    sign(D(real)) on the device and `adjust` (every `interval_iters` iterations: one all-reduce, one host read)
    moves p by at most images * interval / (ada_kimg * 1000) towards r_t = target."""

    def __init__(
        self, cfg: Augment, seed: int, env: DistEnv, images_per_iter: int, p: float | None, signs: tuple[float, int]
    ) -> None:
        """`p`: the checkpoint's (None: the config's initial_p); `signs`: the checkpoint's sum of signs and count
        since the last adjustment, over all ranks (held by rank 0 alone, so that the next all-reduce sums the same)."""
        self.cfg, self.seed, self.env, self.images_per_iter = cfg, seed, env, images_per_iter
        self.p = p if p is not None else (cfg.initial_p if isinstance(cfg, Ada) else 0.0)
        self.rt: float | None = None
        """r_t of the last adjustment (logged)."""
        own = signs if env.is_main else (0.0, 0)
        self._signs = torch.tensor([float(own[0]), float(own[1])], dtype=torch.float64, device=env.device)

    @property
    def adaptive(self) -> bool:
        return isinstance(self.cfg, Ada) and self.cfg.target is not None

    def view(self, iteration: int, micro: int) -> View | None:
        """The augmentation of one batch: a pure function of its input (re-seeded on each call); fp32 math,
        autocast off, returned in the input's dtype. None without augmentation."""
        cfg, p = self.cfg, self.p
        if isinstance(cfg, NoAugment):
            return None
        seed = step_seed(self.seed, self.env.rank, iteration, AUG_STREAM + micro)

        def augmented(images: torch.Tensor) -> torch.Tensor:
            gen = torch.Generator(images.device).manual_seed(seed)
            with torch.autocast(images.device.type, enabled=False):
                x = images.float()
                x = diffaugment(x, cfg, gen) if isinstance(cfg, DiffAugment) else ada(x, cfg, p, gen)
                return x.to(images.dtype)

        return augmented

    def d_views(self, iteration: int) -> tuple[View | None, View | None]:
        """(reals', fakes') augmentation in the D micro-step of `iteration`; R1 uses the reals' too."""
        return self.view(iteration, 0), self.view(iteration, 1)

    def g_view(self, iteration: int, g_micro_step: int) -> View | None:
        return self.view(iteration, 2 + g_micro_step)

    def observe(self, real_sign_mean: torch.Tensor, batch: int) -> None:
        """Add a D micro-step's mean sign(D(real)) over its `batch` images (device-side, no sync)."""
        if self.adaptive:
            # mean * batch is the integer sum of signs up to rounding: round, so that sums stay exact in any order
            total = torch.round(real_sign_mean.double() * batch)
            self._signs += torch.stack([total, torch.full_like(total, batch)])

    def adjust_due(self, iteration: int) -> bool:
        """After iteration `iteration` - 1 completes, i.e. with `iteration` iterations done."""
        cfg = self.cfg
        return isinstance(cfg, Ada) and cfg.target is not None and iteration % cfg.interval_iters == 0

    def adjust(self) -> None:
        """r_t over all ranks since the last adjustment; p += sign(r_t - target) * step, clamped to [0, 1]."""
        cfg = self.cfg
        assert isinstance(cfg, Ada) and cfg.target is not None
        signs = self._global_signs()
        self._signs.zero_()
        total, count = signs
        if count == 0:
            return
        self.rt = total / count
        step = self.images_per_iter * cfg.interval_iters / (cfg.ada_kimg * 1000)
        direction = (self.rt > cfg.target) - (self.rt < cfg.target)
        self.p = min(max(self.p + direction * step, 0.0), 1.0)

    def _global_signs(self) -> tuple[float, int]:
        signs = self._signs.clone()
        if self.env.world_size > 1:
            torch.distributed.all_reduce(signs)
        total, count = signs.tolist()
        return total, int(count)

    def state(self) -> dict[str, Any]:
        """The TrainerState fields (collective when adaptive: every rank calls it at a checkpoint)."""
        if not isinstance(self.cfg, Ada):
            return {}
        total, count = self._global_signs() if self.adaptive else (0.0, 0)
        return {"augment_p": self.p, "augment_signs": (total, count)}

    @property
    def p_bits(self) -> int:
        """p as an int64 (its float64 bits), for the ranks' agreement: any difference is a disagreement."""
        return struct.unpack("<q", struct.pack("<d", self.p))[0]

    def metrics(self) -> dict[str, float]:
        if not isinstance(self.cfg, Ada):
            return {}
        return {"aug/p": self.p} | ({"aug/rt": self.rt} if self.rt is not None else {})
