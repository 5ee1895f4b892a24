"""StyleGAN2 (Karras et al. 2020, config F) in pure PyTorch, in MMagic's layout: its `StyleGANv2Generator` and
`StyleGAN2Discriminator` parameter and buffer names and shapes, so that an MMagic checkpoint loads after stripping
its `generator.` / `discriminator.` prefix. README.md (StyleGAN2 section) says where MMagic and NVlabs differ and which
is followed.

Equalized learning rate: MMagic stores the raw parameter as `weight_orig` and scales it by `gain / sqrt(fan_in) *
lr_mul` in a forward pre-hook; here each layer scales it inside its own forward (no hooks, so ZeRO-3 and bf16 engines
see plain modules). Every layer reads only its own parameters inside its own forward, where ZeRO-3 gathers them.

Partial reduced precision: the `num_fp16_scales` highest resolutions run under autocast to `reduced_dtype`, their
outputs clamped to +-conv_clamp; `full_precision(model)` turns that off for a block of code (R1, path length).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from dsgan.config import models as c
from dsgan.models import Generator
from dsgan.models.layers import check_labels

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
"""StyleGAN's bias + leaky-ReLU: slope 0.2, output scaled by sqrt(2) to keep the activations' second moment."""
DEMOD_EPS = 1e-8
MBSTD_EPS = 1e-8


def channels_at(size_px: int, channel_multiplier: int, channel_max: int) -> int:
    """Feature channels at a resolution: MMagic's (and config F's) table, 512 up to 32x32, then halving, capped at
    channel_max."""
    return min(512 if size_px <= 32 else 16384 // size_px * channel_multiplier, channel_max)


def make_kernel(taps: Sequence[int]) -> torch.Tensor:
    """The separable FIR filter of `taps`, as a 2-D kernel normalised to sum 1 (fp32)."""
    k = torch.tensor(list(taps), dtype=torch.float32)
    k2 = k[None, :] * k[:, None]
    return k2 / k2.sum()


def upfirdn2d(
    x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """Upsample by zero insertion, pad (negative = crop), convolve with `kernel` (a true convolution: the kernel is
    flipped for F.conv2d's correlation), keep every `down`-th sample; one depthwise conv2d, as NVlabs' reference op.
    `pad` is (before, after), the same on both axes."""
    b, ch, h, w = x.shape
    if up > 1:
        x = x.reshape(b, ch, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(b, ch, h * up, w * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    weight = kernel.flip([0, 1]).to(x.dtype)[None, None].expand(ch, 1, *kernel.shape)
    return F.conv2d(x, weight, stride=down, groups=ch)


def _autocast(x: torch.Tensor, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast to `dtype`, or explicitly off (None): a full-precision layer stays fp32 inside an outer autocast, as
    MMagic's `autocast(enabled=fp16_enabled)`."""
    return torch.autocast(x.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


class _ReducedPrecision(nn.Module):
    """A block that may run in reduced precision: `reduced_dtype` is set at build (None = always fp32);
    `force_full_precision` is the plain flag that `full_precision()` sets."""

    reduced_dtype: torch.dtype | None
    force_full_precision: bool = False

    def _dtype(self) -> torch.dtype | None:
        return None if self.force_full_precision else self.reduced_dtype


@contextmanager
def full_precision(module: nn.Module) -> Iterator[None]:
    """Run every reduced-precision block of `module` in fp32 inside the block of code (e.g. the R1 or path-length
    pass, whose second-order gradients fp16 would overflow); restores each block's own setting afterwards."""
    blocks = [m for m in module.modules() if isinstance(m, _ReducedPrecision)]
    before = [m.force_full_precision for m in blocks]
    for m in blocks:
        m.force_full_precision = True
    try:
        yield
    finally:
        for m, flag in zip(blocks, before, strict=True):
            m.force_full_precision = flag


def _reduced_dtype(name: str) -> torch.dtype:
    return {"float16": torch.float16, "bfloat16": torch.bfloat16}[name]


class EqualizedLinear(nn.Module):
    """y = x W^T with W = weight_orig * lr_mul / sqrt(in_features) (MMagic's EqualizedLRLinearModule: bias-free; the
    bias lives in the parent `EqualLinear`). Initialised N(0, 1 / lr_mul), so the effective weight is N(0, 1/fan_in)
    while its gradient step is scaled by lr_mul."""

    def __init__(self, in_features: int, out_features: int, lr_mul: float = 1.0) -> None:
        super().__init__()
        self.weight_orig = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.scale = lr_mul / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(self.weight_orig.dtype), self.weight_orig * self.scale)


class EqualLinear(nn.Module):
    """MMagic's EqualLinearActModule: equalized-lr linear layer, bias scaled by lr_mul, optionally followed by the
    bias + leaky-ReLU * sqrt(2) activation."""

    def __init__(
        self, in_features: int, out_features: int, lr_mul: float = 1.0, bias_init: float = 0.0, act: bool = False
    ) -> None:
        super().__init__()
        self.linear = EqualizedLinear(in_features, out_features, lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.lr_mul, self.act = lr_mul, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x.flatten(1))
        x = x + (self.bias * self.lr_mul).to(x.dtype)
        return F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN if self.act else x


class PixelNorm(nn.Module):
    """x / (rms(x) + eps) over dim 1 (MMagic's pixel_norm: eps added to the RMS, not inside the root)."""

    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / (x.square().mean(dim=1, keepdim=True).sqrt() + self.eps)


class FusedBiasLeakyReLU(nn.Module):
    """leaky_relu(x + bias) * sqrt(2) per channel (mmcv's FusedBiasLeakyReLU, by composition)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.bias.to(x.dtype).view(1, -1, 1, 1), LRELU_SLOPE) * LRELU_GAIN


class Blur(nn.Module):
    """The FIR filter (times up_factor^2 after an upsampling, to keep the mean) applied with `pad`. `kernel` is a
    state-dict buffer because MMagic's Blur registers it as one."""

    def __init__(self, taps: Sequence[int], pad: tuple[int, int], up_factor: int = 1) -> None:
        super().__init__()
        self.register_buffer("kernel", make_kernel(taps) * up_factor**2)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.get_buffer("kernel"), pad=self.pad)


class Upsample(nn.Module):
    """2x upsampling with the FIR filter (MMagic's UpsampleUpFIRDn, of the skip images): zero insertion, filter."""

    def __init__(self, taps: Sequence[int], factor: int = 2) -> None:
        super().__init__()
        self.register_buffer("kernel", make_kernel(taps) * factor**2)
        self.factor = factor
        p = len(taps) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.get_buffer("kernel"), up=self.factor, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Modulated convolution: the weight is scaled per sample by style s = A(w) per input channel and, when
    demodulating, renormalised per output channel, w'_oik = s_i w_oik / sqrt(sum_ik (s_i w_oik)^2 + 1e-8).
    Upsampling is a stride-2 transposed convolution then the blur (MMagic/NVlabs)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        style_channels: int,
        demodulate: bool = True,
        upsample: bool = False,
        blur_kernel: Sequence[int] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.demodulate, self.upsample = demodulate, upsample
        self.style_modulation = EqualLinear(style_channels, in_channels, bias_init=1.0)
        self.weight_orig = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        if upsample:
            # The transposed conv gives 2h + k - 2 samples; the blur's padding brings them back to 2h.
            p = (len(blur_kernel) - 2) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, ((p + 1) // 2 + 1, p // 2 + 1), up_factor=2)
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor, style: torch.Tensor, pre_normalize: bool = False) -> torch.Tensor:
        # The same function as MMagic's grouped convolution of per-sample weights, computed as NVlabs does in
        # training: scale the input by s, convolve with the shared weight, scale the output by the demodulation
        # coefficients. No [B, O, I, k, k] tensor is built (measured: G's step 1.5x faster than the grouped form).
        ch, k = x.shape[1], self.kernel_size
        weight = self.weight_orig[0] * self.scale  # [O, I, k, k]
        s = self.style_modulation(style).to(weight.dtype)  # [B, I]
        if pre_normalize and self.demodulate:
            # Keep fp16 products in range (NVlabs): a positive per-output-channel factor on the weight and one per
            # sample on the modulation s, both cancelled exactly by the demodulation.
            weight = weight / weight.abs().amax(dim=[1, 2, 3], keepdim=True) / math.sqrt(ch * k**2)
            s = s / s.abs().amax(dim=1, keepdim=True)
        x = x.to(weight.dtype) * s[:, :, None, None]
        if self.upsample:
            out = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)  # its weight is [in, out, k, k]
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            # 1 / |s_i w_oik|_(i,k) per sample and output channel: sum_ik s_i^2 w_oik^2 = s^2 @ (sum_k w_oik^2)^T
            dcoefs = torch.rsqrt(s.square() @ weight.square().sum(dim=[2, 3]).T + DEMOD_EPS)  # [B, O]
            out = out * dcoefs[:, :, None, None]
        return self.blur(out) if self.upsample else out


class NoiseInjection(nn.Module):
    """x + weight * noise, one learned weight for all channels (initialised 0); fresh N(0, 1) noise per sample and
    pixel from torch's global RNG on x's device unless a noise map is given."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            noise = torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype)
        return x + self.weight.to(x.dtype) * noise.to(x.dtype)


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size_px: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size_px, size_px))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


class ModulatedStyleConv(_ReducedPrecision):
    """Modulated conv, noise injection, bias + leaky ReLU (MMagic's ModulatedStyleConv)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        style_channels: int,
        upsample: bool,
        blur_kernel: Sequence[int],
        reduced_dtype: torch.dtype | None,
        conv_clamp: float,
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channels, out_channels, 3, style_channels, upsample=upsample, blur_kernel=blur_kernel
        )
        self.noise_injector = NoiseInjection()
        self.activate = FusedBiasLeakyReLU(out_channels)
        self.reduced_dtype, self.conv_clamp = reduced_dtype, conv_clamp

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        dtype = self._dtype()
        with _autocast(x, dtype):
            out = self.activate(self.noise_injector(self.conv(x, style, pre_normalize=dtype is not None), noise))
            return out.clamp(-self.conv_clamp, self.conv_clamp) if dtype is not None else out


class ModulatedToRGB(_ReducedPrecision):
    """1x1 modulated conv without demodulation plus bias, added to the upsampled running image (skip generator).
    The output is fp32 (MMagic's out_fp32, NVlabs' fp32 images)."""

    def __init__(
        self,
        in_channels: int,
        style_channels: int,
        out_channels: int,
        upsample: bool,
        blur_kernel: Sequence[int],
        reduced_dtype: torch.dtype | None,
        conv_clamp: float,
    ) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channels, out_channels, 1, style_channels, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, out_channels, 1, 1))
        self.reduced_dtype, self.conv_clamp = reduced_dtype, conv_clamp

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        dtype = self._dtype()
        with _autocast(x, dtype):
            out = self.conv(x, style)
            out = out + self.bias.to(out.dtype)
            if dtype is not None:
                out = out.clamp(-self.conv_clamp, self.conv_clamp)
            if skip is not None:
                out = out + self.upsample(skip)
        return out.float()


class StyleGAN2Generator(Generator):
    """Mapping network z -> w (pixel norm, `num_mlps` equalized-lr layers at lr_mlp), then the synthesis network from
    a learned 4x4 constant: per resolution an upsampling and a plain modulated conv, each with noise, and a to-RGB
    layer summed into the upsampled running image. w+ has 2 log2(out_size) - 2 rows: row 2i for conv i,
    row 2i + 1 for the to-RGB after it (one row is shared by a to-RGB and the next conv).

    `G(z, y)` returns images [B, out_channels, S, S] in MMagic's range (no tanh; trained towards [-1, 1]).
    """

    def __init__(self, cfg: c.StyleGAN2Generator) -> None:
        super().__init__()
        self.cfg = cfg
        self.noise_size, self.num_classes, self.output_scale = cfg.noise_size, cfg.num_classes, cfg.out_size
        self.style_channels = cfg.style_channels
        log_size = cfg.out_size.bit_length() - 1
        self.num_latents = 2 * log_size - 2
        self.num_injected_noises = self.num_latents - 1
        ch = {2**i: channels_at(2**i, cfg.channel_multiplier, cfg.channel_max) for i in range(2, log_size + 1)}
        reduced = _reduced_dtype(cfg.reduced_dtype)

        mapping: list[nn.Module] = []
        if cfg.num_classes:
            # The one-hot class is embedded and normalised apart from z (MMagic's cond_size path): no leading norm.
            self.embed = EqualLinear(cfg.num_classes, cfg.style_channels)
            self.pixel_norm = PixelNorm(cfg.norm_eps)
            in_features = cfg.noise_size + cfg.style_channels
        else:
            mapping.append(PixelNorm(cfg.norm_eps))
            in_features = cfg.noise_size
        for i in range(cfg.num_mlps):
            mapping.append(
                EqualLinear(in_features if i == 0 else cfg.style_channels, cfg.style_channels, cfg.lr_mlp, act=True)
            )
        self.style_mapping = nn.Sequential(*mapping)

        self.constant_input = ConstantInput(ch[4])
        style_conv = partial(
            ModulatedStyleConv,
            style_channels=cfg.style_channels,
            blur_kernel=cfg.blur_kernel,
            conv_clamp=cfg.conv_clamp,
        )
        to_rgb = partial(
            ModulatedToRGB,
            style_channels=cfg.style_channels,
            out_channels=cfg.out_channels,
            blur_kernel=cfg.blur_kernel,
            conv_clamp=cfg.conv_clamp,
        )
        self.conv1 = style_conv(ch[4], ch[4], upsample=False, reduced_dtype=None)
        self.to_rgb1 = to_rgb(ch[4], upsample=False, reduced_dtype=None)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_ch = ch[4]
        for i in range(3, log_size + 1):
            out_ch = ch[2**i]
            dtype = reduced if log_size - i < cfg.num_fp16_scales else None
            self.convs.append(style_conv(in_ch, out_ch, upsample=True, reduced_dtype=dtype))
            self.convs.append(style_conv(out_ch, out_ch, upsample=False, reduced_dtype=dtype))
            self.to_rgbs.append(to_rgb(out_ch, upsample=True, reduced_dtype=dtype))
            in_ch = out_ch

        for i in range(self.num_injected_noises):
            size_px = 2 ** ((i + 5) // 2)
            self.register_buffer(f"injected_noise_{i}", torch.randn(1, 1, size_px, size_px))
        if cfg.num_classes:
            # MMagic's running mean of w (its `update_ws`, which its trainer never sets): kept for the state-dict
            # layout only; truncation uses each class's own mean (mean_latent).
            self.register_buffer("w_avg", torch.zeros(cfg.style_channels))

    def _style_mode(self) -> str:
        # MMagic switches default_style_mode in its train() override; reading self.training is the same switch.
        return self.cfg.default_style_mode if self.training else self.cfg.eval_style_mode

    def _map(self, z: torch.Tensor, embedding: torch.Tensor | None) -> torch.Tensor:
        if embedding is not None:
            z = torch.cat([self.pixel_norm(z), embedding.to(z.dtype)], dim=1)
        return self.style_mapping(z)

    def _embedding(self, y: torch.Tensor | None) -> torch.Tensor | None:
        check_labels(self.num_classes, y)
        if y is None:
            return None
        return self.pixel_norm(self.embed(F.one_hot(y, self.num_classes).float()))

    @torch.no_grad()
    def mean_latent(
        self, num_samples: int = 4096, generator: torch.Generator | None = None, label: int | None = None
    ) -> torch.Tensor:
        """The mean w [1, style_channels] for truncation: the mean of mapping(z) over num_samples normal z (MMagic's
        get_mean_latent, in chunks of 1024); for a conditional G, of mapping(z, label) (the class's own mean: the
        `w_avg` buffer is kept for MMagic's state-dict layout, but MMagic's trainer never updates it)."""
        if bool(self.num_classes) != (label is not None):
            raise ValueError(f"mean_latent: label={label} for a generator with num_classes={self.num_classes}")
        device = self.get_buffer("injected_noise_0").device  # a buffer: never partitioned by ZeRO-3
        draw_on = device if generator is None else generator.device
        total = None
        for start in range(0, num_samples, 1024):
            z = torch.randn(min(1024, num_samples - start), self.noise_size, generator=generator, device=draw_on)
            z = z.to(device)
            y = None if label is None else torch.full((len(z),), label, device=device)
            part = self._map(z, self._embedding(y)).float().sum(dim=0, keepdim=True)
            total = part if total is None else total + part
        assert total is not None, "num_samples must be positive"
        return total / num_samples

    def style_codes(
        self,
        z: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        truncation: float = 1.0,
        truncation_latent: torch.Tensor | None = None,
        input_is_latent: bool = False,
        inject_index: int | None = None,
    ) -> torch.Tensor:
        """The w+ [B, num_latents, style_channels] that the synthesis consumes, from z [B, noise_size] (or w
        [B, style_channels] / w+ with input_is_latent).

        In the 'mix' style mode (training by default) a second z is drawn with probability mix_prob and its w
        replaces rows inject_index.. of w+ (inject_index uniform in 1..num_latents-1 unless given). The decision and
        the index come from torch's global CPU RNG (python control flow: no device sync), the second z from the
        global RNG of z's device. truncation < 1: w' = mean + truncation (w - mean), mean = truncation_latent ([1 or
        B, style_channels]) or `mean_latent()` recomputed (pass truncation_latent to avoid that)."""
        if input_is_latent:
            styles = [z]
        else:
            embedding = self._embedding(y)
            styles = [self._map(z, embedding)]
            mix = self._style_mode() == "mix" and torch.rand(()).item() < self.cfg.mix_prob
            if mix and self.num_latents > 1:
                styles.append(self._map(torch.randn_like(z), embedding))

        if truncation < 1:
            mean = self.mean_latent() if truncation_latent is None else truncation_latent
            styles = [mean.to(s.dtype) + truncation * (s - mean.to(s.dtype)) for s in styles]

        if len(styles) == 1:
            w = styles[0]
            return w if w.ndim == 3 else w[:, None].expand(-1, self.num_latents, -1)
        if inject_index is None:
            inject_index = int(torch.randint(1, self.num_latents, ()).item())
        first = styles[0][:, None].expand(-1, inject_index, -1)
        second = styles[1][:, None].expand(-1, self.num_latents - inject_index, -1)
        return torch.cat([first, second], dim=1)

    def forward(
        self,
        z: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        return_latents: bool = False,
        truncation: float = 1.0,
        truncation_latent: torch.Tensor | None = None,
        input_is_latent: bool = False,
        injected_noise: Sequence[torch.Tensor | None] | None = None,
        randomize_noise: bool = True,
        inject_index: int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Images from z (see `style_codes` for z, mixing and truncation). Noise: fresh per call, or the
        `injected_noise_*` buffers when randomize_noise is false or cfg.fixed_noise, or the given maps.
        return_latents: also return the w+ the synthesis consumed (MMagic's API; under ZeRO-3 the returned tensor is
        a copy made by DeepSpeed's forward hooks, so differentiate w.r.t. `style_codes`' output passed back in with
        input_is_latent, as the path-length penalty does)."""
        latent = self.style_codes(
            z,
            y,
            truncation=truncation,
            truncation_latent=truncation_latent,
            input_is_latent=input_is_latent,
            inject_index=inject_index,
        )
        if injected_noise is None:
            if randomize_noise and not self.cfg.fixed_noise:
                injected_noise = [None] * self.num_injected_noises
            else:
                injected_noise = [self.get_buffer(f"injected_noise_{i}") for i in range(self.num_injected_noises)]

        out = self.constant_input(latent.shape[0])
        out = self.conv1(out, latent[:, 0], injected_noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        for i, to_rgb in enumerate(self.to_rgbs):
            out = self.convs[2 * i](out, latent[:, 2 * i + 1], injected_noise[2 * i + 1])
            out = self.convs[2 * i + 1](out, latent[:, 2 * i + 2], injected_noise[2 * i + 2])
            skip = to_rgb(out, latent[:, 2 * i + 3], skip)
        return (skip, latent) if return_latents else skip


class EqualizedConv2d(nn.Module):
    """Conv2d with weight_orig / sqrt(fan_in) (gain 1), as MMagic's EqualizedLRConvModule's `conv`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.weight_orig = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight_orig * self.scale
        return F.conv2d(x.to(w.dtype), w, stride=self.stride, padding=self.padding)


class EqualizedConvModule(nn.Module):
    """Holds `conv` so that the state-dict key is MMagic's `<i>.conv.weight_orig`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.conv = EqualizedConv2d(in_channels, out_channels, kernel_size, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ConvDownLayer(nn.Sequential, _ReducedPrecision):
    """[blur] -> equalized conv (stride 2 after the blur when downsampling) -> [bias + leaky ReLU], as MMagic's
    Sequential (its indices are the state-dict keys). In reduced precision the output is clamped to +-conv_clamp."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        downsample: bool = False,
        blur_kernel: Sequence[int] = (1, 3, 3, 1),
        act: bool = True,
        reduced_dtype: torch.dtype | None = None,
        conv_clamp: float = 256.0,
    ) -> None:
        layers: list[nn.Module] = []
        if downsample:
            p = (len(blur_kernel) - 2) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, ((p + 1) // 2, p // 2)))
            layers.append(EqualizedConvModule(in_channels, out_channels, kernel_size, stride=2, padding=0))
        else:
            layers.append(EqualizedConvModule(in_channels, out_channels, kernel_size, 1, kernel_size // 2))
        if act:
            layers.append(FusedBiasLeakyReLU(out_channels))
        super().__init__(*layers)
        self.reduced_dtype, self.conv_clamp = reduced_dtype, conv_clamp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self._dtype()
        with _autocast(x, dtype):
            for layer in self:
                x = layer(x)
            return x.clamp(-self.conv_clamp, self.conv_clamp) if dtype is not None else x


class ResBlock(_ReducedPrecision):
    """D residual block: conv3x3, conv3x3 + 2x down; skip 1x1 + 2x down without bias; sum / sqrt(2)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        blur_kernel: Sequence[int],
        reduced_dtype: torch.dtype | None,
        conv_clamp: float,
    ) -> None:
        super().__init__()
        layer = partial(ConvDownLayer, blur_kernel=blur_kernel, reduced_dtype=reduced_dtype, conv_clamp=conv_clamp)
        self.conv1 = layer(in_channels, in_channels, 3)
        self.conv2 = layer(in_channels, out_channels, 3, downsample=True)
        self.skip = layer(in_channels, out_channels, 1, downsample=True, act=False)
        self.reduced_dtype = reduced_dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self._dtype()
        if dtype is None:
            x = x.float()  # MMagic's convert_input_fp32: the previous block may have been reduced
        with _autocast(x, dtype):
            return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)


class MiniBatchStdDev(nn.Module):
    """Appends the standard deviation over groups of `group_size` samples (sample i is in group i mod B/G), averaged
    over channels, height and width within each of `channel_groups` channel groups: `channel_groups` extra channels
    (MMagic's ModMBStddevLayer; computed in fp32)."""

    def __init__(self, group_size: int, channel_groups: int) -> None:
        super().__init__()
        self.group_size, self.channel_groups = group_size, channel_groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, ch, h, w = x.shape
        if n > self.group_size and n % self.group_size:
            raise ValueError(f"batch {n} is neither <= nor a multiple of the mbstd group size {self.group_size}")
        if ch % self.channel_groups:
            raise ValueError(f"{ch} channels do not split into {self.channel_groups} mbstd channel groups")
        group = min(n, self.group_size)
        y = x.float().reshape(group, -1, self.channel_groups, ch // self.channel_groups, h, w)
        y = (y.var(dim=0, unbiased=False) + MBSTD_EPS).sqrt()  # [B/G, Gc, C/Gc, H, W]
        y = y.mean(dim=(2, 3, 4))[:, :, None, None].repeat(group, 1, h, w)
        return torch.cat([x, y.to(x.dtype)], dim=1)


class FullyConnectedLayer(nn.Module):
    """NVlabs' (and MMagic's StyleGAN3) FullyConnectedLayer: raw `weight` [out, in] and `bias` scaled by
    lr_mul / sqrt(in) and lr_mul; 'lrelu' adds the bias then leaky ReLU * sqrt(2). Used by D's class mapping."""

    def __init__(self, in_features: int, out_features: int, lrelu: bool = False, lr_mul: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.weight_gain, self.bias_gain, self.lrelu = lr_mul / math.sqrt(in_features), lr_mul, lrelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x.to(self.weight.dtype), self.weight * self.weight_gain, self.bias * self.bias_gain)
        return F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN if self.lrelu else x


class ClassMapping(nn.Module):
    """D's class mapping (MMagic's StyleGAN3 MappingNetwork with noise_size 0, no w_avg): embed the one-hot class,
    normalise to unit second moment, `num_layers` lrelu layers at lr multiplier 0.01."""

    def __init__(self, num_classes: int, channels: int, num_layers: int) -> None:
        super().__init__()
        self.embed = FullyConnectedLayer(num_classes, channels)
        self.num_layers = num_layers
        for i in range(num_layers):
            self.add_module(f"fc{i}", FullyConnectedLayer(channels, channels, lrelu=True, lr_mul=0.01))

    def forward(self, onehot: torch.Tensor) -> torch.Tensor:
        x = self.embed(onehot).float()
        x = x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        for i in range(self.num_layers):
            x = self.get_submodule(f"fc{i}")(x)
        return x


class StyleGAN2Discriminator(nn.Module):
    """Residual discriminator: 1x1 from-RGB conv, one ResBlock per resolution down to 4x4, minibatch stddev, 3x3
    conv, two equalized linear layers. Conditional: the last linear layer outputs cond_mapping_channels features,
    projected onto the class mapping, sum(x * cmap) / sqrt(cond_mapping_channels) (MMagic/NVlabs). Logits [B], fp32.
    """

    def __init__(self, cfg: c.StyleGAN2Discriminator) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes, self.input_scale = cfg.num_classes, cfg.in_size
        log_size = cfg.in_size.bit_length() - 1
        ch = {2**i: channels_at(2**i, cfg.channel_multiplier, cfg.channel_max) for i in range(2, log_size + 1)}
        reduced = _reduced_dtype(cfg.reduced_dtype)
        # MMagic runs the from-RGB layer reduced whenever any scale is.
        first_dtype = reduced if cfg.num_fp16_scales > 0 else None
        convs: list[nn.Module] = [
            ConvDownLayer(
                cfg.img_channels,
                ch[cfg.in_size],
                1,
                blur_kernel=cfg.blur_kernel,
                reduced_dtype=first_dtype,
                conv_clamp=cfg.conv_clamp,
            )
        ]
        in_ch = ch[cfg.in_size]
        for i in range(log_size, 2, -1):
            dtype = reduced if log_size - i < cfg.num_fp16_scales else None
            convs.append(ResBlock(in_ch, ch[2 ** (i - 1)], cfg.blur_kernel, dtype, cfg.conv_clamp))
            in_ch = ch[2 ** (i - 1)]
        self.convs = nn.Sequential(*convs)
        self.mbstd_layer = MiniBatchStdDev(cfg.mbstd_cfg.group_size, cfg.mbstd_cfg.channel_groups)
        # MMagic sizes this for one stddev channel; with channel_groups > 1 it would not run, so the input grows here.
        self.final_conv = ConvDownLayer(
            in_ch + cfg.mbstd_cfg.channel_groups, ch[4], 3, blur_kernel=cfg.blur_kernel, conv_clamp=cfg.conv_clamp
        )
        out_features = cfg.cond_mapping_channels if cfg.num_classes else 1
        self.final_linear = nn.Sequential(EqualLinear(ch[4] * 16, ch[4], act=True), EqualLinear(ch[4], out_features))
        if cfg.num_classes:
            self.mapping = ClassMapping(cfg.num_classes, cfg.cond_mapping_channels, cfg.cond_mapping_layers)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(self.num_classes, y)
        x = self.final_conv(self.mbstd_layer(self.convs(x)).float())
        out = self.final_linear(x).float()
        if y is None:
            return out[:, 0]
        cmap = self.mapping(F.one_hot(y, self.num_classes).float()).float()
        return (out * cmap).sum(dim=1) / math.sqrt(cmap.shape[1])
