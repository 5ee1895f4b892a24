"""Generators and discriminators: shapes, gradients, precisions, BigGAN layout, spectral norm."""

from __future__ import annotations

import pytest
import torch
from pydantic import BaseModel
from torch import nn

from dsgan.config import models as c
from dsgan.models import build_discriminator, build_generator, count_parameters, parameter_report, truncated_noise
from dsgan.models.biggan import BigGANDiscriminator, BigGANGenerator
from dsgan.models.layers import BatchNorm, SelfAttention, SNConv2d, SNLinear, SpectralNorm

BIGGAN_SLOTS = {32: 4, 64: 5, 128: 6, 256: 7}
"""Noise chunks at each scale: the first linear layer + one per up-block."""


def pairs(num_classes: int) -> list[tuple[BaseModel, BaseModel]]:
    """Every architecture at every supported scale, narrow enough for CPU tests."""
    out = []
    for s in (16, 32, 64, 128):
        out.append(
            (
                c.DCGANGenerator(output_scale=s, noise_size=8, num_classes=num_classes, base_channels=4),
                c.DCGANDiscriminator(input_scale=s, num_classes=num_classes, base_channels=4, with_spectral_norm=True),
            )
        )
    for s in (32, 64, 128):
        out.append(
            (
                c.SNGANGenerator(output_scale=s, noise_size=8, num_classes=num_classes, base_channels=4),
                c.SNGANDiscriminator(input_scale=s, num_classes=num_classes, base_channels=4),
            )
        )
    for s, slots in BIGGAN_SLOTS.items():
        out.append(
            (
                c.BigGANGenerator(
                    output_scale=s, noise_size=4 * slots, num_classes=num_classes, base_channels=8, shared_dim=8
                ),
                c.BigGANDiscriminator(input_scale=s, num_classes=num_classes, base_channels=8),
            )
        )
    return out


CASES = [(g, d) for n in (0, 5) for g, d in pairs(n)]
IDS = [f"{g.type[:-9]}{g.output_scale}-{'cond' if g.num_classes else 'uncond'}" for g, _ in CASES]
SMALLEST = [i for i, (g, _) in enumerate(CASES) if g.output_scale == (16 if g.type == "DCGANGenerator" else 32)]
"""Each architecture at its smallest scale, conditional and not."""
SMALL_CASES, SMALL_IDS = [CASES[i] for i in SMALLEST], [IDS[i] for i in SMALLEST]


def inputs(g_cfg, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, g_cfg.noise_size, generator=gen)
    y = torch.randint(g_cfg.num_classes, (batch,), generator=gen) if g_cfg.num_classes else None
    return z, y


def first_conv(module: nn.Module) -> nn.Conv2d:
    return next(m for m in module.modules() if isinstance(m, nn.Conv2d))


def first_linear(module: nn.Module) -> nn.Linear:
    return next(m for m in module.modules() if isinstance(m, nn.Linear))


def cast_params(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """What a bf16 DeepSpeed engine does: parameters cast, buffers left fp32."""
    for p in module.parameters():
        p.data = p.data.to(dtype)
    return module


@pytest.mark.parametrize(("g_cfg", "d_cfg"), CASES, ids=IDS)
def test_shapes_and_gradients(g_cfg, d_cfg):
    torch.manual_seed(0)
    g, d = build_generator(g_cfg), build_discriminator(d_cfg)
    assert (g.noise_size, g.num_classes, g.output_scale) == (g_cfg.noise_size, g_cfg.num_classes, g_cfg.output_scale)
    z, y = inputs(g_cfg)
    fake = g(z, y)
    s = g_cfg.output_scale
    assert fake.shape == (2, 3, s, s) and fake.dtype == torch.float32
    assert fake.abs().max() <= 1
    logits = d(fake, y)
    assert logits.shape == (2,) and logits.dtype == torch.float32 and torch.isfinite(logits).all()
    logits.sum().backward()
    for name, module in (("G", g), ("D", d)):
        missing = [n for n, p in module.named_parameters() if p.grad is None]
        assert not missing, f"{name}: no gradient for {missing}"
    assert first_linear(g).weight.grad.abs().sum() > 0
    assert first_conv(d).weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("g_cfg", "d_cfg"), SMALL_CASES, ids=SMALL_IDS)
def test_labels_must_match_conditioning(g_cfg, d_cfg):
    g, d = build_generator(g_cfg), build_discriminator(d_cfg)
    z, y = inputs(g_cfg)
    x = torch.zeros(2, 3, g_cfg.output_scale, g_cfg.output_scale)
    wrong = None if y is not None else torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="num_classes"):
        g(z, wrong)
    with pytest.raises(ValueError, match="num_classes"):
        d(x, wrong)


@pytest.mark.parametrize(("g_cfg", "d_cfg"), SMALL_CASES, ids=SMALL_IDS)
def test_bf16_parameters_fp32_inputs(g_cfg, d_cfg):
    """Inside a bf16 engine: bf16 parameters, fp32 buffers and fp32 inputs."""
    torch.manual_seed(0)
    g, d = cast_params(build_generator(g_cfg), torch.bfloat16), cast_params(build_discriminator(d_cfg), torch.bfloat16)
    z, y = inputs(g_cfg)
    fake = g(z, y)
    assert fake.dtype == torch.bfloat16
    logits = d(fake, y)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    logits.sum().backward()
    assert first_linear(g).weight.grad.dtype == torch.bfloat16 and first_linear(g).weight.grad.abs().sum() > 0
    assert all(b.dtype in (torch.float32, torch.int64) for b in [*g.buffers(), *d.buffers()])


@pytest.mark.parametrize(("g_cfg", "d_cfg"), SMALL_CASES, ids=SMALL_IDS)
def test_autocast(g_cfg, d_cfg):
    """DeepSpeed's torch_autocast: fp32 parameters, bf16 matmuls."""
    torch.manual_seed(0)
    g, d = build_generator(g_cfg), build_discriminator(d_cfg)
    z, y = inputs(g_cfg)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = d(g(z, y), y)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    assert first_linear(g).weight.grad.dtype == torch.float32 and first_linear(g).weight.grad.abs().sum() > 0
    assert all(m.u.dtype == torch.float32 for m in g.modules() if isinstance(m, SpectralNorm))


def test_eval_mode_is_deterministic_and_freezes_buffers():
    g_cfg, _ = pairs(5)[-3]  # BigGAN-64: BatchNorm, spectral norm and attention
    g = build_generator(g_cfg)
    z, y = inputs(g_cfg, batch=4)
    g(z, y)  # one training forward: running statistics and u move
    g.eval()
    before = {k: v.clone() for k, v in g.state_dict().items()}
    a, b = g(z, y), g(z[:2], y[:2])
    torch.testing.assert_close(a[:2], b)  # no batch statistics in eval
    for k, v in g.state_dict().items():
        assert torch.equal(v, before[k]), k


# ---------------------------------------------------------------------------------------------------------------
def mmagic_sngan_parameters(scale: int, base: int, num_classes: int, noise: int) -> tuple[dict, dict]:
    """Parameter names and shapes of MMagic's SNGANGenerator / ProjDiscriminator (0a560bb, default arguments), from
    their definitions, not from dsgan's modules: `_default_channels_cfg` (G) and `_defualt_channels_cfg` /
    `_defualt_downsample_cfg` (D) in mmagic/models/editors/sagan/, and the layers of sagan_modules.py:
    SNGANGenResBlock = conv_1 3x3 in->out, conv_2 3x3 out->out, shortcut 1x1 in->out (G always upsamples, so it is
    always learnable), norm_1 / norm_2 = SNConditionNorm (BN without affine + weight/bias embeddings of num_classes x
    C when conditional, affine BN otherwise); SNGANDiscHeadResBlock (`from_rgb`) = conv_1, conv_2, shortcut;
    SNGANDiscResBlock = conv_1, conv_2, and a shortcut when in != out or it downsamples; every conv has a bias and
    sits in an mmcv ConvModule (`.conv`), spectrally normalised in D by torch (`weight_orig`). G: noise2feat
    Linear(noise, 16 * C0), to_rgb = ConvModule(norm, act, conv): `bn` (affine) and a 3x3 conv to 3 channels. D:
    decision Linear(C, 1), proj_y Embedding(num_classes, C), both spectrally normalised."""
    g_factors = {32: [1, 1, 1], 64: [16, 8, 4, 2], 128: [16, 16, 8, 4, 2]}[scale]
    d_factors, d_down = {
        32: ([1, 1, 1], [True, False, False]),
        64: ([2, 4, 8, 16], [True, True, True, True]),
        128: ([2, 4, 8, 16, 16], [True, True, True, True, False]),
    }[scale]

    def conv(name: str, i: int, o: int, k: int, weight: str = "weight") -> dict:
        return {f"{name}.conv.{weight}": (o, i, k, k), f"{name}.conv.bias": (o,)}

    def norm(name: str, ch: int) -> dict:
        if num_classes:
            return {
                f"{name}.weight_embedding.weight": (num_classes, ch),
                f"{name}.bias_embedding.weight": (num_classes, ch),
            }
        return {f"{name}.norm.weight": (ch,), f"{name}.norm.bias": (ch,)}

    g = {"noise2feat.weight": (16 * base * g_factors[0], noise), "noise2feat.bias": (16 * base * g_factors[0],)}
    for i, f_in in enumerate(g_factors):
        c_in, c_out = f_in * base, (g_factors[i + 1] if i + 1 < len(g_factors) else 1) * base
        b = f"conv_blocks.{i}"
        g |= conv(f"{b}.conv_1", c_in, c_out, 3) | conv(f"{b}.conv_2", c_out, c_out, 3)
        g |= conv(f"{b}.shortcut", c_in, c_out, 1) | norm(f"{b}.norm_1", c_in) | norm(f"{b}.norm_2", c_out)
    g |= {"to_rgb.bn.weight": (base,), "to_rgb.bn.bias": (base,)} | conv("to_rgb", base, 3, 3)
    sn = "weight_orig"
    d = conv("from_rgb.conv_1", 3, base, 3, sn) | conv("from_rgb.conv_2", base, base, 3, sn)
    d |= conv("from_rgb.shortcut", 3, base, 1, sn)
    for i, (f_out, down) in enumerate(zip(d_factors, d_down, strict=True)):
        c_in, c_out = (1 if i == 0 else d_factors[i - 1]) * base, f_out * base
        b = f"conv_blocks.{i}"
        d |= conv(f"{b}.conv_1", c_in, c_out, 3, sn) | conv(f"{b}.conv_2", c_out, c_out, 3, sn)
        if c_in != c_out or down:
            d |= conv(f"{b}.shortcut", c_in, c_out, 1, sn)
    c_last = d_factors[-1] * base
    d |= {"decision.weight_orig": (1, c_last), "decision.bias": (1,)}
    if num_classes:
        d |= {"proj_y.weight_orig": (num_classes, c_last)}
    return g, d


def shapes(module: nn.Module) -> dict:
    return {name: tuple(p.shape) for name, p in module.named_parameters()}


@pytest.mark.parametrize(
    ("scale", "base", "num_classes", "noise"),
    [(128, 64, 1000, 128), (128, 8, 0, 16), (64, 8, 7, 16), (32, 128, 10, 128), (32, 8, 0, 16)],
)
def test_sngan_parameters_equal_mmagic_s(scale, base, num_classes, noise):
    """Names and shapes as MMagic's (D's spectrally normalised `weight` is MMagic's `weight_orig`), so the counts
    too: MMagic's SNGAN-proj ImageNet 128 (base 64, 1000 classes, noise 128) has G 41,996,931 and D 39,443,137."""
    with torch.device("meta"):  # shapes only: 81M parameters are not initialised
        g = c.SNGANGenerator(output_scale=scale, base_channels=base, num_classes=num_classes, noise_size=noise).build()
        d = c.SNGANDiscriminator(input_scale=scale, base_channels=base, num_classes=num_classes).build()
    mm_g, mm_d = mmagic_sngan_parameters(scale, base, num_classes, noise)
    assert shapes(g) == mm_g
    assert shapes(d) == {name.replace("weight_orig", "weight"): shape for name, shape in mm_d.items()}
    if (scale, base, num_classes) == (128, 64, 1000):
        assert (count_parameters(g), count_parameters(d)) == (41_996_931, 39_443_137)


@pytest.mark.parametrize("init_type", ["sngan", "studio", "BigGAN"])
def test_sngan_initialisations(init_type):
    """MMagic's choices: studio = orthogonal weights and zero biases; BigGAN = Glorot uniform weights with PyTorch's
    default biases; sngan = Glorot (sqrt(2) on the residual 3x3 convs), zero biases, conditional BN embeddings at 0."""
    torch.manual_seed(0)
    g = c.SNGANGenerator(output_scale=32, base_channels=8, num_classes=3, noise_size=16, init_type=init_type).build()
    d = c.SNGANDiscriminator(input_scale=32, base_channels=8, num_classes=3, init_type=init_type).build()
    conv = d.conv_blocks[0].conv_1.conv.weight.flatten(1)  # [8, 72]: orthogonal rows under 'studio'
    embedding = g.conv_blocks[0].norm_1.weight_embedding.weight
    biases = torch.cat(
        [m.bias.flatten() for m in (*g.modules(), *d.modules()) if isinstance(m, (nn.Conv2d, nn.Linear))]
    )
    if init_type == "studio":
        torch.testing.assert_close(conv @ conv.T, torch.eye(8), atol=1e-5, rtol=0)
    else:  # Glorot uniform: |w| <= gain * sqrt(6 / (fan_in + fan_out))
        gain = 2**0.5 if init_type == "sngan" else 1.0
        assert conv.abs().max() <= gain * (6 / (72 + 72)) ** 0.5
    assert (biases == 0).all() == (init_type != "BigGAN")
    assert (embedding == 0).all() == (init_type == "sngan")


def mmagic_wgangp_parameters(scale: int, noise: int, norm: str) -> tuple[int, int]:
    """G and D parameter counts of MMagic's WGANGPGenerator / WGANGPDiscriminator (0a560bb), in closed form from
    mmagic/models/editors/wgan_gp/: `_default_channels_per_scale`; G = WGANNoiseTo2DFeat (bias-free linear to
    16 x 512, a [1, 512, 1, 1] bias, BN), a 3x3 ConvModule 512 -> 512, two 3x3 ConvModules per doubling (conv bias
    + BN), a 1x1 conv to RGB; D = a 1x1 conv from RGB, two 3x3 ConvLNModules per halving (LayerNorm over (C, H, W)
    or GroupNorm's per-channel affine), a 4x4 ConvLNModule to 1x1 and a linear layer."""
    ch = {4: 512, 8: 512, 16: 256, 32: 128, 64: 64, 128: 32}

    def conv(i: int, o: int, k: int) -> int:
        return i * o * k * k + o

    def norm_params(c: int, size: int) -> int:
        return 2 * c * size * size if norm == "LN2d" else 2 * c

    g = noise * 512 * 16 + 512 + 2 * 512 + conv(512, 512, 3) + 2 * 512
    d = conv(3, ch[scale], 1) + conv(512, 512, 4) + norm_params(512, 1) + 512 + 1
    for level in range(3, scale.bit_length()):
        c_low, c_high = ch[2 ** (level - 1)], ch[2**level]
        g += conv(c_low, c_high, 3) + 2 * c_high + conv(c_high, c_high, 3) + 2 * c_high
        d += (
            conv(c_high, c_high, 3)
            + norm_params(c_high, 2**level)
            + conv(c_high, c_low, 3)
            + norm_params(c_low, 2**level)
        )
    g += conv(ch[scale], 3, 1)
    return g, d


@pytest.mark.parametrize(("scale", "norm"), [(128, "GN"), (128, "LN2d"), (32, "LN2d")])
def test_wgangp_parameter_counts_and_names_equal_mmagic_s(scale, norm):
    """MMagic's WGAN-GP 128 (noise 128, GroupNorm D as its configs set): G 10,485,667 and D 11,272,545."""
    with torch.device("meta"):
        g = c.WGANGPGenerator(output_scale=scale, noise_size=128).build()
        d = c.WGANGPDiscriminator(input_scale=scale, norm=norm).build()
    assert (count_parameters(g), count_parameters(d)) == mmagic_wgangp_parameters(scale, 128, norm)
    if (scale, norm) == (128, "GN"):
        assert (count_parameters(g), count_parameters(d)) == (10_485_667, 11_272_545)
    # mmcv's ConvModule names (conv, bn), the norm named by its type, upsampling/pooling layers between the convs
    g_names, d_names = dict(g.named_parameters()), dict(d.named_parameters())
    for name in ("noise2feat.linear.weight", "noise2feat.bias", "noise2feat.norm.weight", "conv_blocks.0.bn.bias"):
        assert name in g_names, name
    assert g_names["conv_blocks.2.conv.weight"].shape == (512, 512, 3, 3)  # [1] upsamples to 8x8
    assert g_names["to_rgb.conv.weight"].shape == (3, 32 if scale == 128 else 128, 1, 1)
    if scale == 128:  # LayerNorm's affine is per element of (C, H, W), GroupNorm's per channel
        assert d_names[f"conv_blocks.0.{norm}.weight"].shape == ((32, 128, 128) if norm == "LN2d" else (32,))
    assert d_names["conv_blocks.3.conv.weight"].shape[1] == d_names["conv_blocks.1.conv.weight"].shape[0]  # [2] pools
    assert d_names["decision.conv.conv.weight"].shape == (512, 512, 4, 4)
    assert d_names["decision.linear.weight"].shape == (1, 512)


def test_wgangp_trains_with_a_gradient_penalty():
    """Forward, the WGAN-GP loss with its penalty, and a backward that reaches every parameter (16x16)."""
    from dsgan.losses import d_loss, gradient_penalty

    torch.manual_seed(0)
    g = c.WGANGPGenerator(output_scale=16, noise_size=8).build()
    d = c.WGANGPDiscriminator(input_scale=16, norm="GN").build()
    fake = g(torch.randn(3, 8))
    assert fake.shape == (3, 3, 16, 16) and fake.abs().max() <= 1
    real = torch.rand(3, 3, 16, 16) * 2 - 1
    loss, _ = d_loss("wgan", d(real), d(fake))
    (loss + 10 * gradient_penalty(d, real, fake.detach(), None)).backward()
    # D's output bias cancels in mean D(G(z)) - mean D(x) and does not move the input gradient: its gradient is 0
    still = [n for m in (g, d) for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert still == ["decision.linear.bias"]


# BigGAN layout (MMagic's BigGANGenerator / BigGANDiscriminator)


def test_biggan_128_seed_parameter_counts(monkeypatch):
    """The seed's BigGAN-128 equals BigGAN-PyTorch's (G_ch=D_ch=96, shared 128, hier, dim_z 120): 70,433,988 and
    87,982,370 parameters (70.4M + 88.0M = 158.3M, the BigGAN paper's Table 1)."""
    monkeypatch.setattr("dsgan.models.biggan.init_weights", lambda module, init_type: None)  # QR of 158M: slow
    report = parameter_report(c.BigGANGenerator(), c.BigGANDiscriminator())
    assert "70,433,988 parameters" in report and "87,982,370 parameters" in report


@pytest.mark.parametrize(
    ("scale", "g_attention", "d_attention"), [(32, None, None), (64, 3, None), (128, 3, 0), (256, 3, 1)]
)
def test_biggan_attention_at_64(scale, g_attention, d_attention):
    slots = BIGGAN_SLOTS[scale]
    g = BigGANGenerator(c.BigGANGenerator(output_scale=scale, noise_size=slots, base_channels=8, num_classes=0))
    d = BigGANDiscriminator(c.BigGANDiscriminator(input_scale=scale, base_channels=8, num_classes=0))
    assert (g.attention_after, d.attention_after) == (g_attention, d_attention)
    assert sum(isinstance(m, SelfAttention) for m in g.modules()) == (g_attention is not None)
    assert sum(isinstance(m, SelfAttention) for m in d.modules()) == (d_attention is not None)


def test_biggan_hierarchical_noise_and_conditional_bn():
    g = BigGANGenerator(c.BigGANGenerator(output_scale=128, noise_size=120, base_channels=8, shared_dim=128))
    assert g.chunk == 20 and g.fc.in_features == 20
    bn = g.blocks[0].bn1
    assert bn.weight is None and isinstance(bn.gain, SNLinear) and bn.gain.in_features == 128 + 20
    assert bn.gain.bias is None and bn.shift.bias is None
    assert g.shared.weight.shape == (1000, 128)


def test_biggan_noise_must_split_evenly():
    with pytest.raises(ValueError, match=r"noise_size=120 is not divisible by 7.*use 119"):
        BigGANGenerator(c.BigGANGenerator(output_scale=256, base_channels=2))


def test_biggan_one_hot_conditioning():
    """with_shared_embedding=false: the BN maps read the one-hot class (embeddings), z is not split (MMagic)."""
    with pytest.raises(ValueError, match="split_noise=false"):
        BigGANGenerator(c.BigGANGenerator(output_scale=32, with_shared_embedding=False, base_channels=2))
    cfg = c.BigGANGenerator(
        output_scale=32, noise_size=10, num_classes=5, with_shared_embedding=False, split_noise=False, base_channels=4
    )
    g = BigGANGenerator(cfg)
    assert g.shared is None and g.fc.in_features == 10
    assert isinstance(g.blocks[0].bn1.gain, nn.Embedding) and g.blocks[0].bn1.gain.weight.shape == (5, 16)
    z, y = inputs(cfg, batch=4)
    assert g(z, y).shape == (4, 3, 32, 32)


def test_biggan_unconditional_without_split_uses_plain_bn():
    g = BigGANGenerator(c.BigGANGenerator(output_scale=32, noise_size=8, num_classes=0, split_noise=False))
    assert g.shared is None and g.blocks[0].bn1.gain is None and g.blocks[0].bn1.weight is not None


@pytest.mark.parametrize("init_type", ["ortho", "N02", "xavier"])
def test_biggan_options(init_type):
    act = c.Activation(type="LeakyReLU", negative_slope=0.1)
    g_cfg = c.BigGANGenerator(output_scale=32, noise_size=8, num_classes=3, base_channels=4, init_type=init_type)
    g_cfg = g_cfg.model_copy(update={"act": act, "with_spectral_norm": False})
    d_cfg = c.BigGANDiscriminator(input_scale=32, num_classes=3, base_channels=4, init_type=init_type, act=act)
    g, d = build_generator(g_cfg), build_discriminator(d_cfg)
    assert not any(isinstance(m, SpectralNorm) for m in g.modules())
    assert any(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.1 for m in d.modules())
    w = d.blocks[1].conv1.weight.flatten(1)
    if init_type == "ortho":  # rows orthonormal
        torch.testing.assert_close(w @ w.t(), torch.eye(len(w)), atol=1e-5, rtol=0)
    elif init_type == "N02":
        assert 0.015 < w.std() < 0.025 and torch.all(d.blocks[1].conv1.bias == 0)
    z, y = inputs(g_cfg)
    assert torch.isfinite(d(g(z, y), y)).all()


def test_count_parameters_excludes_buffers():
    bn = BatchNorm(4)
    assert count_parameters(bn) == 8 and sum(b.numel() for b in bn.buffers()) == 8


def test_truncated_noise():
    z = truncated_noise(256, 16, 0.5, torch.Generator().manual_seed(0))
    assert z.shape == (256, 16) and z.abs().max() <= 0.5
    plain = truncated_noise(4, 3, None, torch.Generator().manual_seed(1))
    torch.testing.assert_close(plain, torch.randn(4, 3, generator=torch.Generator().manual_seed(1)))


# ---------------------------------------------------------------------------------------------------------------
# Spectral norm


def test_power_iteration_converges_to_largest_singular_value():
    torch.manual_seed(0)
    weight = torch.randn(16, 3, 3, 3)
    sn = SpectralNorm(16, 27, eps=1e-12)
    for _ in range(100):
        normalized = sn(weight)
    sigma = torch.linalg.matrix_norm(weight.flatten(1), ord=2)
    torch.testing.assert_close(weight / normalized, torch.full_like(weight, float(sigma)), rtol=1e-4, atol=0)
    torch.testing.assert_close(torch.linalg.matrix_norm(normalized.flatten(1), ord=2), torch.tensor(1.0))
    sn.eval()
    u = sn.u.clone()
    sn(weight)
    assert torch.equal(sn.u, u)  # no iteration outside training


def test_spectral_norm_bf16_weight():
    torch.manual_seed(0)
    layer = cast_params(SNLinear(32, 16, sn_eps=1e-6), torch.bfloat16)
    for _ in range(50):
        out = layer(torch.randn(4, 32))  # fp32 input, as a bf16 engine passes it
    assert out.dtype == torch.bfloat16 and layer.sn.u.dtype == torch.float32
    w = layer.sn(layer.weight).float()
    torch.testing.assert_close(torch.linalg.matrix_norm(w, ord=2), torch.tensor(1.0), rtol=2e-2, atol=0)
    w.sum().backward()
    assert layer.weight.grad.dtype == torch.bfloat16


def test_spectral_norm_u_independent_of_global_rng():
    def u_buffers(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        d = build_discriminator(c.BigGANDiscriminator(input_scale=32, base_channels=4, num_classes=3))
        return [m.u for m in d.modules() if isinstance(m, SpectralNorm)]

    a, b = u_buffers(1), u_buffers(2)
    assert len(a) > 10 and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_spectral_norm_twice_before_backward():
    """D scores real and fake before one backward: each forward's graph keeps its own u."""
    torch.manual_seed(0)
    conv = SNConv2d(3, 4, 3, sn_eps=1e-12)
    x = torch.randn(2, 3, 8, 8)
    (conv(x).sum() + conv(x).sum()).backward()
    assert torch.isfinite(conv.weight.grad).all()
