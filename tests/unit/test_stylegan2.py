"""StyleGAN2: modulated convolution, resampling filters, noise, style mixing, truncation, precision, MMagic layout."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dsgan.config import models as c
from dsgan.models import count_parameters
from dsgan.models.stylegan2 import (
    MiniBatchStdDev,
    ModulatedConv2d,
    StyleGAN2Discriminator,
    StyleGAN2Generator,
    Upsample,
    full_precision,
    make_kernel,
    upfirdn2d,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "stylegan2"

# Parameter counts of MMagic's StyleGANv2Generator(out_size, style_channels, channel_multiplier=...) and
# StyleGAN2Discriminator(in_size, channel_multiplier=...), all other arguments default, measured by instantiating
# MMagic commit 0a560bb's stylegan2/stylegan1/pggan/stylegan3 module files with mmengine 0.10.7 and mmcv-lite 2.2.0;
# mmcv.ops was replaced by stand-ins with mmcv's parameters (FusedBiasLeakyReLU holds `bias` [C], as mmcv's) and
# pure-PyTorch ops (parameter creation does not depend on the ops), and the mmagic registry/archs/ada imports by empty
# modules. The fixtures' key/shape lists come from the same instances' state_dict().
MMAGIC_COUNTS = {
    # (size, style_channels, channel_multiplier): (G parameters, D parameters)
    (256, 512, 2): (30_034_338, 28_864_129),  # FFHQ-256 config F
    (1024, 512, 2): (30_370_060, 29_012_513),
    (512, 512, 2): (30_276_583, 28_982_849),
    (128, 512, 2): (29_328_669, 28_389_121),
    (64, 512, 1): (23_819_544, 23_407_361),
    (64, 512, 2): (27_032_600, 26_488_833),
    (32, 512, 1): (21_523_475, 21_507_073),
    (16, 512, 1): (16_014_350, 16_525_313),
    (8, 512, 2): (10_505_225, 11_543_553),
    (4, 512, 2): (4_996_100, 6_561_793),
    (32, 64, 1): (16_932_371, 21_507_073),
}
MMAGIC_BUFFER_VALUES_256 = (174_928, 192)
"""G: the injected-noise maps and blur kernels; D: the blur kernels."""


def small_g(**kw) -> StyleGAN2Generator:
    kw = {"out_size": 8, "style_channels": 32, "channel_multiplier": 1, "channel_max": 32, "num_mlps": 2, **kw}
    return StyleGAN2Generator(c.StyleGAN2Generator(**kw))


def small_d(**kw) -> StyleGAN2Discriminator:
    kw = {"in_size": 8, "channel_multiplier": 1, "channel_max": 32, **kw}
    return StyleGAN2Discriminator(c.StyleGAN2Discriminator(**kw))


def with_noise_weights(g: StyleGAN2Generator, value: float = 0.5) -> StyleGAN2Generator:
    """Noise weights start at 0 (no effect); tests of the noise set them."""
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise_injector.weight"):
                p.fill_(value)
    return g


def shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


# --- layers against closed forms ---


@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("upsample", [False, True])
def test_modulated_conv_matches_per_sample_closed_form(demodulate: bool, upsample: bool) -> None:
    torch.manual_seed(0)
    conv = ModulatedConv2d(4, 5, 3, 6, demodulate=demodulate, upsample=upsample)
    with torch.no_grad():
        conv.style_modulation.bias.normal_()
    x, w = torch.randn(3, 4, 6, 6), torch.randn(3, 6)
    out = conv(x, w)
    s = F.linear(w, conv.style_modulation.linear.weight_orig / math.sqrt(6)) + conv.style_modulation.bias
    base = conv.weight_orig[0] / math.sqrt(4 * 9)  # [O, I, k, k]
    for i in range(3):
        wi = base * s[i].view(1, 4, 1, 1)
        if demodulate:
            wi = wi / (wi.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8).sqrt()
        if upsample:
            ref = F.conv_transpose2d(x[i : i + 1], wi.transpose(0, 1), stride=2)
            ref = upfirdn2d(ref, make_kernel([1, 3, 3, 1]) * 4, pad=(1, 1))
        else:
            ref = F.conv2d(x[i : i + 1], wi, padding=1)
        torch.testing.assert_close(out[i : i + 1], ref, rtol=1e-5, atol=1e-5)
    assert out.shape == (3, 5, 12 if upsample else 6, 12 if upsample else 6)


def brute_upfirdn(x: torch.Tensor, k: torch.Tensor, up: int, down: int, pad: tuple[int, int]) -> torch.Tensor:
    """The definition, one output sample at a time: y[o] = sum_t k[t] u[o * down - t] over the zero-inserted, padded
    signal u (a true convolution)."""
    _, _, h, w = x.shape
    u = torch.zeros(h * up + sum(pad), w * up + sum(pad))
    u[pad[0] : pad[0] + h * up : up, pad[0] : pad[0] + w * up : up] = x[0, 0]
    kh = k.shape[0]
    size = (u.shape[0] - kh) // down + 1
    y = torch.zeros(size, size)
    for oy in range(size):
        for ox in range(size):
            for ty in range(kh):
                for tx in range(kh):
                    y[oy, ox] += k[ty, tx] * u[oy * down + kh - 1 - ty, ox * down + kh - 1 - tx]
    return y[None, None]


@pytest.mark.parametrize(("up", "down", "pad"), [(2, 1, (2, 1)), (1, 2, (1, 1)), (1, 1, (2, 2))])
def test_upfirdn2d_matches_the_definition(up: int, down: int, pad: tuple[int, int]) -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 1, 5, 5)
    k = torch.rand(4, 4)  # asymmetric, so a missing flip shows
    torch.testing.assert_close(upfirdn2d(x, k, up, down, pad), brute_upfirdn(x, k, up, down, pad))


def test_upsample_keeps_a_constant_and_spreads_an_impulse_as_the_kernel() -> None:
    up = Upsample([1, 3, 3, 1])
    out = up(torch.full((1, 2, 4, 4), 3.0))
    assert out.shape == (1, 2, 8, 8)
    torch.testing.assert_close(out[..., 2:-2, 2:-2], torch.full_like(out[..., 2:-2, 2:-2], 3.0))
    impulse = torch.zeros(1, 1, 4, 4)
    impulse[0, 0, 2, 2] = 1
    response = up(impulse)[0, 0]
    # Sample 2 lands at 4 after zero insertion, then the 4-tap filter (padded 2 before) covers outputs 3..6.
    torch.testing.assert_close(response[3:7, 3:7], make_kernel([1, 3, 3, 1]) * 4)
    assert response.sum().item() == pytest.approx(4.0)


def test_minibatch_stddev_groups_samples_modulo_the_group_count() -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 4, 2, 2)
    out = MiniBatchStdDev(group_size=4, channel_groups=2)(x)
    assert out.shape == (8, 6, 2, 2)
    groups = x.reshape(4, 2, 2, 2, 2, 2)  # [G, B/G, Gc, C/Gc, H, W]: sample i is in group i % 2
    expected = (groups.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(2, 3, 4))  # [B/G, Gc]
    torch.testing.assert_close(out[:, 4:, 0, 0], expected.repeat(4, 1))
    with pytest.raises(ValueError, match="multiple"):
        MiniBatchStdDev(4, 1)(torch.randn(6, 4, 2, 2))


# --- generator behaviour ---


def test_shapes_and_interfaces() -> None:
    g, d = small_g().eval(), small_d()
    z = torch.randn(2, 32)
    img = g(z)
    assert img.shape == (2, 3, 8, 8) and img.dtype == torch.float32
    img, latents = g(z, return_latents=True)
    assert latents.shape == (2, g.num_latents, 32) == (2, 4, 32)
    logits = d(img)
    assert logits.shape == (2,) and logits.dtype == torch.float32
    assert (g.noise_size, g.num_classes, g.output_scale) == (32, 0, 8)


def test_noise_injection_fixed_buffers_zero_weight_and_random() -> None:
    g = small_g().eval()
    z = torch.randn(2, 32)
    torch.testing.assert_close(g(z), g(z))  # noise weights start at 0: random noise has no effect
    with_noise_weights(g)
    assert not torch.allclose(g(z), g(z))
    torch.testing.assert_close(g(z, randomize_noise=False), g(z, randomize_noise=False))
    fixed = small_g(fixed_noise=True).eval()
    fixed.load_state_dict(g.state_dict())
    torch.testing.assert_close(fixed(z), g(z, randomize_noise=False))
    zeros = [torch.zeros(1, 1, s, s) for s in (4, 8, 8)]
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise_injector.weight"):
                p.zero_()
    torch.testing.assert_close(g(z, injected_noise=zeros), g(z))


def test_style_mixing_rows_and_modes() -> None:
    g = small_g(out_size=16, mix_prob=1.0).train()
    z = torch.randn(3, 32)
    w1 = g.style_mapping(z)
    _, latents = g(z, return_latents=True, inject_index=2)
    torch.testing.assert_close(latents[:, :2], w1[:, None].expand(-1, 2, -1))
    second = latents[:, 2:]
    torch.testing.assert_close(second, second[:, :1].expand_as(second))
    assert not torch.allclose(second[:, 0], w1)
    _, latents = g(z, return_latents=True)  # a random inject index in 1..num_latents-1
    assert torch.allclose(latents[:, 0], w1) and not torch.allclose(latents[:, -1], w1)
    for single in (small_g(out_size=16, mix_prob=0.0).train(), g.eval()):
        _, latents = single(z, return_latents=True)
        w = single.style_mapping(z)
        torch.testing.assert_close(latents, w[:, None].expand_as(latents))


def test_truncation_towards_the_mean_latent() -> None:
    g = small_g().eval()
    z = torch.randn(2, 32)
    mean = torch.randn(1, 32)
    _, w = g(z, return_latents=True)
    _, same = g(z, return_latents=True, truncation=1.0, truncation_latent=mean)
    torch.testing.assert_close(same, w)
    _, half = g(z, return_latents=True, truncation=0.5, truncation_latent=mean)
    torch.testing.assert_close(half, mean + 0.5 * (w - mean))
    _, zero = g(z, return_latents=True, truncation=0.0, truncation_latent=mean)
    torch.testing.assert_close(zero, mean[:, None].expand_as(zero))
    gen = torch.Generator().manual_seed(0)
    est = g.mean_latent(2048, generator=gen)
    gen.manual_seed(0)
    torch.testing.assert_close(est, g.style_mapping(torch.randn(2048, 32, generator=gen)).mean(0, keepdim=True))
    _, auto = g(z, return_latents=True, truncation=0.0)  # mean_latent() recomputed: near the 2048-sample estimate
    assert (auto[:, 0] - est).abs().max() < 0.1 * w.std()


def test_return_latents_is_in_the_graph_for_the_path_length_penalty() -> None:
    g = small_g().train()
    img, latents = g(torch.randn(2, 32), return_latents=True)
    (grad,) = torch.autograd.grad((img * torch.randn_like(img)).sum(), latents, create_graph=True)
    assert grad.shape == latents.shape and grad.abs().sum() > 0
    grad.square().sum().backward()  # second order, as the penalty's backward
    assert g.convs[0].conv.weight_orig.grad is not None


def test_gradients_reach_every_parameter() -> None:
    g, d = with_noise_weights(small_g().train()), small_d()
    d(g(torch.randn(2, 32))).sum().backward()
    assert [n for n, p in g.named_parameters() if p.grad is None or not p.grad.abs().sum()] == []
    assert [n for n, p in d.named_parameters() if p.grad is None or not p.grad.abs().sum()] == []


def test_conditional_models() -> None:
    g = small_g(num_classes=5).train()
    d = small_d(num_classes=5, cond_mapping_channels=16, cond_mapping_layers=2)
    z, y = torch.randn(2, 32), torch.tensor([0, 3])
    img = g(z, y)
    assert d(img, y).shape == (2,)
    with pytest.raises(ValueError, match="pass labels"):
        g(z)
    # truncation's mean for a class: the mean of w over z with that class's embedding
    zs = torch.randn(64, 32, generator=torch.Generator().manual_seed(3))
    y3 = torch.full((64,), 3)
    w = g.style_mapping(torch.cat([g.pixel_norm(zs), g.pixel_norm(g.embed(F.one_hot(y3, 5).float()))], 1))
    got = g.mean_latent(64, torch.Generator().manual_seed(3), label=3)
    torch.testing.assert_close(got, w.mean(0, keepdim=True), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="label"):
        g.mean_latent()
    assert not torch.allclose(d(img, y), d(img, torch.tensor([1, 1])))


# --- precision ---


def test_partial_bf16_is_close_to_fp32_and_full_precision_turns_it_off() -> None:
    torch.manual_seed(0)
    g32, g16 = small_g(out_size=16).eval(), small_g(out_size=16, num_fp16_scales=2, reduced_dtype="bfloat16").eval()
    g16.load_state_dict(g32.state_dict())
    d32, d16 = small_d(in_size=16), small_d(in_size=16, num_fp16_scales=2, reduced_dtype="bfloat16")
    d16.load_state_dict(d32.state_dict())
    z = torch.randn(2, 32)
    ref, out = g32(z, randomize_noise=False), g16(z, randomize_noise=False)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
    assert not torch.equal(out, ref)
    with full_precision(g16):
        torch.testing.assert_close(g16(z, randomize_noise=False), ref)
    assert g16.convs[-1].reduced_dtype == torch.bfloat16 and not g16.convs[-1].force_full_precision
    assert g16.convs[0].reduced_dtype == torch.bfloat16 and g16.conv1.reduced_dtype is None  # 16 and 8, not 4
    assert small_g(out_size=16, num_fp16_scales=1).convs[0].reduced_dtype is None
    logits = d16(ref)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    torch.testing.assert_close(logits, d32(ref), rtol=0.05, atol=0.05)
    with full_precision(d16):
        torch.testing.assert_close(d16(ref), d32(ref))


def test_bf16_parameters() -> None:
    g, d = small_g().eval().to(torch.bfloat16), small_d().to(torch.bfloat16)
    img = g(torch.randn(2, 32))
    assert img.dtype == torch.float32 and torch.isfinite(img).all()
    logits = d(img)
    assert logits.dtype == torch.float32 and logits.shape == (2,)
    gc = small_g(num_classes=3).eval().to(torch.bfloat16)
    dc = small_d(num_classes=3, cond_mapping_channels=16, cond_mapping_layers=1).to(torch.bfloat16)
    y = torch.tensor([0, 2])
    assert dc(gc(torch.randn(2, 32), y), y).dtype == torch.float32


# --- MMagic layout ---


@pytest.mark.parametrize("fixture", sorted(FIXTURES.glob("mmagic_keys_*.json")), ids=lambda p: p.stem)
def test_state_dict_keys_and_shapes_equal_mmagics(fixture: Path) -> None:
    ref = json.loads(fixture.read_text())
    if "cond10" in fixture.stem:
        g = small_g(out_size=16, num_classes=10, channel_max=512)
        d = small_d(in_size=16, num_classes=10, channel_max=512, cond_mapping_channels=32, cond_mapping_layers=2)
    else:
        g = StyleGAN2Generator(c.StyleGAN2Generator(out_size=32, style_channels=64, channel_multiplier=1))
        d = small_d(in_size=32, channel_max=512)
    assert shapes(g) == ref["generator"]
    assert shapes(d) == ref["discriminator"]


@pytest.mark.parametrize(("size", "style", "multiplier"), list(MMAGIC_COUNTS))
def test_parameter_counts_equal_mmagics(size: int, style: int, multiplier: int) -> None:
    with torch.device("meta"):  # counting only: no memory, no initialisation cost
        g = StyleGAN2Generator(c.StyleGAN2Generator(out_size=size, style_channels=style, channel_multiplier=multiplier))
        d = StyleGAN2Discriminator(c.StyleGAN2Discriminator(in_size=size, channel_multiplier=multiplier))
    assert (count_parameters(g), count_parameters(d)) == MMAGIC_COUNTS[(size, style, multiplier)]
    if (size, multiplier) == (256, 2):
        assert (sum(b.numel() for b in g.buffers()), sum(b.numel() for b in d.buffers())) == MMAGIC_BUFFER_VALUES_256


def _import_mmagic(src: Path) -> tuple[type, type]:
    """MMagic's StyleGAN2 classes from a checkout, with mmcv.ops replaced by pure-PyTorch stand-ins (mmcv-lite has no
    compiled ops) and the mmagic package internals they do not need replaced by empty modules."""
    pytest.importorskip("mmengine")
    pytest.importorskip("mmcv.cnn")
    from mmengine.registry import Registry

    def bias_leakyrelu(x: torch.Tensor, bias: torch.Tensor, negative_slope: float = 0.2, scale: float = 2**0.5):
        return F.leaky_relu(x + bias.view(1, -1, *[1] * (x.ndim - 2)).to(x.dtype), negative_slope) * scale

    class FusedBiasLeakyReLU(torch.nn.Module):  # mmcv's parameters: `bias` [C]
        def __init__(self, num_channels: int, negative_slope: float = 0.2, scale: float = 2**0.5) -> None:
            super().__init__()
            self.bias = torch.nn.Parameter(torch.zeros(num_channels))
            self.negative_slope, self.scale = negative_slope, scale

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return bias_leakyrelu(x, self.bias, self.negative_slope, self.scale)

    def upfirdn(x, kernel, up=1, down=1, padding=(0, 0)):
        return upfirdn2d(x, kernel, up, down, (padding[0], padding[1]))

    def module(name: str, **attrs) -> types.ModuleType:
        m = types.ModuleType(name)
        m.__path__ = []  # type: ignore[attr-defined]
        m.__dict__.update(attrs)
        sys.modules[name] = m
        return m

    ops = {"upfirdn2d": upfirdn, "fused_bias_leakyrelu": bias_leakyrelu, "FusedBiasLeakyReLU": FusedBiasLeakyReLU}
    module("mmcv.ops", **ops, conv2d=F.conv2d, conv_transpose2d=F.conv_transpose2d, conv2d_gradfix=None)
    module("mmcv.ops.fused_bias_leakyrelu", **ops)
    module("mmcv.ops.upfirdn2d", upfirdn2d=upfirdn)
    module("mmcv.ops").bias_act = lambda x, b, act: bias_leakyrelu(x, b)
    module("mmcv.ops").filtered_lrelu = None
    module("mmagic")
    module("mmagic.registry", MODELS=Registry("model"))
    module("mmagic.models")
    module("mmagic.models.archs", AllGatherLayer=None)
    module("mmagic.models.utils", get_module_device=lambda m: next(m.parameters()).device)
    module("mmagic.models.editors")
    editors = src / "mmagic" / "models" / "editors"

    def load(name: str, rel: str) -> types.ModuleType:
        spec = importlib.util.spec_from_file_location(f"mmagic.models.editors.{name}", editors / rel)
        assert spec is not None and spec.loader is not None
        m = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = m
        spec.loader.exec_module(m)
        return m

    public = lambda m: {k: v for k, v in vars(m).items() if not k.startswith("__")}  # noqa: E731
    module("mmagic.models.editors.pggan", **public(load("pggan.pggan_modules", "pggan/pggan_modules.py")))
    s1 = load("stylegan1.stylegan1_modules", "stylegan1/stylegan1_modules.py")
    utils = load("stylegan1.stylegan_utils", "stylegan1/stylegan_utils.py")
    module("mmagic.models.editors.stylegan1", **{**public(s1), **public(utils)})
    module("mmagic.models.editors.stylegan3")
    load("stylegan3.stylegan3_modules", "stylegan3/stylegan3_modules.py").bias_act = lambda x, b, act: bias_leakyrelu(
        x, b
    )
    module("mmagic.models.editors.stylegan2")
    module("mmagic.models.editors.stylegan2.ada")
    module("mmagic.models.editors.stylegan2.ada.augment", AugmentPipe=None)
    module("mmagic.models.editors.stylegan2.ada.misc", constant=None)
    load("stylegan2.stylegan2_modules", "stylegan2/stylegan2_modules.py")
    gen = load("stylegan2.stylegan2_generator", "stylegan2/stylegan2_generator.py")
    dis = load("stylegan2.stylegan2_discriminator", "stylegan2/stylegan2_discriminator.py")
    return gen.StyleGAN2Generator, dis.StyleGAN2Discriminator


@pytest.mark.skipif(not os.environ.get("MMAGIC_SRC"), reason="MMAGIC_SRC (an MMagic checkout) is not set")
def test_against_mmagic_checkout() -> None:
    """MMagic's own modules load this state dict strictly and compute the same images and logits (with noise
    buffers; the ops are the pure-PyTorch stand-ins)."""
    mm_g, mm_d = _import_mmagic(Path(os.environ["MMAGIC_SRC"]))
    torch.manual_seed(0)
    g = with_noise_weights(small_g(out_size=16, channel_max=512)).eval()
    theirs_g = mm_g(16, 32, channel_multiplier=1, num_mlps=2).eval()
    theirs_g.load_state_dict(g.state_dict(), strict=True)
    z = torch.randn(3, 32)
    torch.testing.assert_close(g(z, randomize_noise=False), theirs_g(z, randomize_noise=False), rtol=1e-4, atol=1e-4)
    d = small_d(in_size=16, num_classes=10, channel_max=512, cond_mapping_channels=32, cond_mapping_layers=2)
    theirs_d = mm_d(16, channel_multiplier=1, cond_size=10, cond_mapping_channels=32, cond_mapping_layers=2)
    theirs_d.load_state_dict(d.state_dict(), strict=True)
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([1, 3, 5, 7])
    torch.testing.assert_close(d(x, y), theirs_d(x, F.one_hot(y, 10).float())[:, 0], rtol=1e-4, atol=1e-5)
