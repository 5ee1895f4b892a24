"""`dsgan migrate` of StyleGAN2: MMagic 1.x and MMGeneration 0.x FFHQ-256 configs (copied as fixtures), every
converted field against a value computed here from the source's formulas, the report, and the shipped config."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import yaml

from dsgan.cli import main as cli_main
from dsgan.config import load_config
from dsgan.errors import ConfigError
from dsgan.migrate import main_migrate, migrate
from dsgan.migrate.ledger import leaves
from dsgan.migrate.source import load_source

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "mmgen"
V1_DIR = FIXTURES / "v1" / "stylegan2" / "styleganv2"
V0_DIR = FIXTURES / "v0" / "stylegan2" / "styleganv2"
V1 = V1_DIR / "stylegan2_c2_8xb4-800kiters_ffhq-256x256.py"
V1_FP16 = V1_DIR / "stylegan2_c2-PL_8xb4-fp16-partial-GD-no-scaler-800kiters_ffhq-256x256.py"
V0 = V0_DIR / "stylegan2_c2_ffhq_256_b4x8_800k.py"
V0_FP16 = V0_DIR / "stylegan2_c2_fp16_partial-GD_PL-no-scaler_ffhq_256_b4x8_800k.py"

# StyleGAN2 config F with lazy regularisation (Karras et al. 2020, appendix B): R1 every 16 D updates, path length
# every 4 G updates; Adam's lr and betas are adjusted by c = interval / (interval + 1).
G_RATIO, D_RATIO = 4 / 5, 16 / 17
EMA_MOMENTUM = 1 - 0.5 ** (32 / (10 * 1000))  # half-life 10k images at 32 images per update


def expected_optimizers(cfg) -> None:
    g = cfg.generator.deepspeed.optimizer
    d = cfg.discriminator.deepspeed.optimizer
    assert (g.type, d.type) == ("Adam", "Adam")
    assert g.params.lr == pytest.approx(0.002 * G_RATIO)
    assert d.params.lr == pytest.approx(0.002 * D_RATIO)
    assert g.params.betas == pytest.approx((0.0, 0.99**G_RATIO))
    assert d.params.betas == pytest.approx((0.0, 0.99**D_RATIO))
    assert (g.params.eps, g.params.weight_decay) == (1e-8, 0.0)  # torch's Adam defaults: the source sets neither


@pytest.mark.parametrize("path", [V1, V0], ids=["1.x", "0.x"])
def test_ffhq256_converts_every_field(path) -> None:
    m = migrate(path)
    cfg = m.config
    assert m.version == ("1.x" if path == V1 else "0.x")
    g, d = cfg.generator.model, cfg.discriminator.model
    assert (g.type, g.out_size, g.style_channels, g.noise_size, g.num_classes, g.out_channels) == (
        "StyleGAN2Generator",
        256,
        512,
        512,
        0,
        3,
    )
    assert (g.num_mlps, g.channel_multiplier, g.blur_kernel, g.lr_mlp, g.mix_prob) == (8, 2, [1, 3, 3, 1], 0.01, 0.9)
    assert (g.default_style_mode, g.eval_style_mode, g.norm_eps, g.num_fp16_scales) == ("mix", "single", 1e-6, 0)
    assert (g.fixed_noise, g.conv_clamp) == (False, 256.0)
    assert (d.type, d.in_size, d.img_channels, d.num_classes, d.channel_multiplier) == (
        "StyleGAN2Discriminator",
        256,
        3,
        0,
        2,
    )
    assert (d.mbstd_cfg.group_size, d.mbstd_cfg.channel_groups, d.num_fp16_scales) == (4, 1, 0)
    loss = cfg.loss
    assert loss.type == "vanilla"
    # loss_weight = 10 / 2 * 16 on the whole-image norm every 16 iterations: gamma = 2 * 80 / 16 = 10
    assert (loss.r1_weight, loss.r1_interval) == (pytest.approx(10.0), 16)
    # g_reg_weight = 2 * 4 every 4 iterations: NVlabs' pl_weight 2
    assert (loss.pl_weight, loss.pl_interval, loss.pl_batch_shrink, loss.pl_decay) == (pytest.approx(2.0), 4, 2, 0.01)
    expected_optimizers(cfg)
    assert cfg.ema is not None
    assert cfg.ema.momentum == pytest.approx(EMA_MOMENTUM, rel=1e-9)
    assert cfg.ema.interval_g_updates == 1
    # MMagic's first EMA call copies G (start_iter 0 -> 1 G update); mmgen's hook averages from iteration 0
    assert cfg.ema.start_g_updates == (1 if path == V1 else 0)
    assert (cfg.schedule.discriminator_steps, cfg.schedule.generator_steps) == (1, 1)
    for net in (cfg.generator.deepspeed, cfg.discriminator.deepspeed):
        assert (net.train_micro_batch_size_per_gpu, net.gradient_accumulation_steps) == (4, 1)
        assert net.precision == "fp32"
    assert cfg.run.total_iters == 800002
    assert cfg.data.type == "image_folder" and cfg.data.conditional is False and cfg.data.xflip is True
    assert str(cfg.data.root).endswith("data/ffhq/ffhq_imgs/ffhq_256")
    assert cfg.checkpoint.every_iters == 10000


@pytest.mark.parametrize("path", [V1, V0, V1_FP16, V0_FP16], ids=["1.x", "0.x", "1.x-fp16", "0.x-fp16"])
def test_report_accounts_for_every_key_and_converts_the_flip(path, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert main_migrate([str(path), "--out", str(out)]) == 0
    report = (out / "migration_report.md").read_text()
    reported = re.findall(r"^\| `([^`]+)` \|", report, flags=re.M)
    assert sorted(reported) == sorted(p for p, _ in leaves(load_source(path).values))
    assert "not recognised" not in report
    assert re.search(r"\| `[a-z_.]*pipeline\[1\]\.type` \| `'Flip'` \| data.xflip = true", report)
    assert "R1 conventions" in report and "r1_weight = 2 * 80 / 16 = 10" in report
    assert "pl_weight = 8 / 4 = 2" in report
    # the converted files pass `dsgan validate-config` (the schema only: no StyleGAN2 module is built)
    capsys.readouterr()
    assert cli_main(["validate-config", "--config", str(out / "config.yaml"), "--world-size", "8"]) == 0


def test_1x_fp16_partial_maps_the_fp16_scales_and_reports_the_loss_scale() -> None:
    m = migrate(V1_FP16)
    cfg = m.config
    assert (cfg.generator.model.num_fp16_scales, cfg.discriminator.model.num_fp16_scales) == (4, 4)
    assert (cfg.generator.model.reduced_dtype, cfg.generator.model.conv_clamp) == ("float16", 256.0)
    for net in (cfg.generator.deepspeed, cfg.discriminator.deepspeed):
        assert net.precision == "fp32"  # no DeepSpeed fp16: the reduced layers run inside an fp32 engine
    for role in ("generator", "discriminator"):
        assert m.ledger.classify(f"optim_wrapper.{role}.loss_scale")[0] == "unsupported"
    notes = "\n".join(m.ledger.notes)
    assert "the int 512 is refused by MMEngine's AmpOptimWrapper" in notes
    assert "raises TypeError" in notes and "so the source does not build" in notes
    assert "does no loss scaling" in notes and "Not applied" in notes
    assert m.ledger.classify("model.loss_config.scale_r1_loss")[0] == "ignored"
    assert "no code reads it" in m.ledger.classify("model.loss_config.scale_r1_loss")[1]
    # everything else is the base config's
    base = migrate(V1).config
    assert cfg.loss == base.loss and cfg.ema == base.ema
    assert cfg.generator.deepspeed.optimizer == base.generator.deepspeed.optimizer


def test_0x_fp16_partial_reports_the_dynamic_grad_scaler() -> None:
    m = migrate(V0_FP16)
    cfg = m.config
    assert (cfg.generator.model.num_fp16_scales, cfg.discriminator.model.num_fp16_scales) == (4, 4)
    assert cfg.generator.deepspeed.precision == "fp32" and cfg.discriminator.deepspeed.precision == "fp32"
    assert m.ledger.classify("runner.fp16_loss_scaler.init_scale")[0] == "unsupported"
    notes = "\n".join(m.ledger.notes)
    assert "GradScaler(**fp16_loss_scaler)" in notes and "a *dynamic* scaler starting at 512" in notes
    assert "shared by G and D" in notes and "Not applied" in notes
    assert m.ledger.classify("model.disc_auxiliary_loss.data_info.loss_scaler")[0] == "ignored"


def test_0x_and_1x_ffhq256_agree() -> None:
    a, b = migrate(V0).config, migrate(V1).config
    assert a.generator.model == b.generator.model
    assert a.discriminator.model == b.discriminator.model
    assert a.loss == b.loss
    assert a.generator.deepspeed.optimizer == b.generator.deepspeed.optimizer
    assert a.discriminator.deepspeed.optimizer == b.discriminator.deepspeed.optimizer
    assert a.ema is not None and b.ema is not None and a.ema.momentum == b.ema.momentum


def test_shipped_config_is_what_migrate_produces() -> None:
    """configs/stylegan2_ffhq256.yaml trains exactly what the MMagic config trains (the run layout may differ)."""
    shipped = load_config(REPO / "configs" / "stylegan2_ffhq256.yaml")
    converted = migrate(V1).config
    assert shipped.generator.model == converted.generator.model
    assert shipped.discriminator.model == converted.discriminator.model
    assert shipped.schedule == converted.schedule
    assert shipped.loss.model_dump() == pytest.approx(converted.loss.model_dump())
    assert shipped.ema is not None and converted.ema is not None
    assert shipped.ema.model_dump() == pytest.approx(converted.ema.model_dump())
    assert shipped.run.total_iters == converted.run.total_iters
    assert shipped.data.type == "image_folder" and shipped.data.conditional is False
    for role in ("generator", "discriminator"):
        a, b = getattr(shipped, role).deepspeed, getattr(converted, role).deepspeed
        assert a.train_micro_batch_size_per_gpu == b.train_micro_batch_size_per_gpu
        assert a.gradient_accumulation_steps == b.gradient_accumulation_steps
        assert a.precision == b.precision
        assert a.gradient_clipping == b.gradient_clipping
        assert a.optimizer.type == b.optimizer.type
        pa, pb = a.optimizer.params, b.optimizer.params
        assert (pa.lr, pa.eps, pa.weight_decay) == pytest.approx((pb.lr, pb.eps, pb.weight_decay))
        assert pa.betas == pytest.approx(pb.betas)


def test_digits16_config_is_valid_and_small(capsys) -> None:
    path = REPO / "configs" / "stylegan2_digits16.yaml"
    assert cli_main(["validate-config", "--config", str(path)]) == 0
    cfg = load_config(path)
    assert (cfg.generator.model.out_size, cfg.discriminator.model.in_size) == (16, 16)
    assert cfg.data.type == "digits" and cfg.data.conditional is False
    assert (cfg.generator.model.out_channels, cfg.discriminator.model.img_channels) == (1, 1)
    assert cfg.eval.features == "digits" and cfg.eval.every_iters
    assert cfg.loss.r1_weight > 0 and cfg.loss.pl_weight > 0
    assert cfg.generator.deepspeed.precision == "fp32"


# ----------------------------------------------------------------------------------------------------------------
# Rules that the FFHQ configs do not exercise


@pytest.fixture
def child(tmp_path: Path):
    def _child(text: str, base: Path = V1, name: str = "child.py") -> Path:
        path = tmp_path / name
        path.write_text(f"_base_ = '{base}'\n" + textwrap.dedent(text))
        return path

    return _child


def test_pixel_norm_mode_and_source_defaults(child) -> None:
    # MMagic's defaults: r1_loss_weight 80 every 16 with the per-pixel norm, g_reg_weight 8 every 4, shrink 2
    path = child("model = dict(loss_config=dict(_delete_=True))\n")
    loss = migrate(path).config.loss
    assert loss.r1_weight == pytest.approx(2 * 80 / 16 / (256 * 256))
    assert (loss.r1_interval, loss.pl_weight, loss.pl_interval, loss.pl_batch_shrink) == (16, 2.0, 4, 2)


def test_penalty_timing_under_other_schedules(child) -> None:
    # G trains at iterations 2k - 1, never a multiple of 4: MMagic never adds the path-length penalty
    m = migrate(child("model = dict(discriminator_steps=2)\n", name="a.py"))
    assert m.config.loss.pl_weight == 0.0
    assert any("which never happens: it is off in the source" in n for n in m.ledger.notes)
    # G every 3 iterations: every 4th G phase (3k - 1 = 0 mod 4), the same share as dsgan's every 4th update
    m = migrate(child("model = dict(discriminator_steps=3)\n", name="b.py"))
    assert (m.config.loss.pl_weight, m.config.loss.pl_interval) == (2.0, 4)
    assert any("Path-length penalty timing" in n for n in m.ledger.notes)
    text = "optim_wrapper = dict(discriminator=dict(accumulative_counts=2), generator=dict(accumulative_counts=2))\n"
    m = migrate(child(text, name="c.py"))
    assert any("R1 timing under accumulation" in n and "1 in 16" in n for n in m.ledger.notes)


def test_unsupported_stylegan2_settings_are_refused(child) -> None:
    with pytest.raises(ConfigError, match=r"model.generator.fp16_enabled: True \(the whole network in fp16\)"):
        migrate(child("model = dict(generator=dict(fp16_enabled=True))\n", name="a.py"))
    with pytest.raises(ConfigError, match="r1_use_apex_amp: not supported yet: apex"):
        migrate(child("model = dict(loss_config=dict(r1_use_apex_amp=True))\n", name="b.py"))
    with pytest.raises(ConfigError, match="model.num_classes: MMagic's StyleGAN2 takes no model-level value"):
        migrate(child("model = dict(num_classes=10)\n", name="c.py"))
    with pytest.raises(ConfigError, match="pl_batch_size: not supported yet"):
        migrate(child("model = dict(gen_auxiliary_loss=dict(pl_batch_size=2))\n", V0, "d.py"))


def test_conditional_stylegan2_maps_cond_size(child) -> None:
    text = """
    model = dict(generator=dict(cond_size=10), discriminator=dict(cond_size=10, cond_mapping_layers=2))
    train_dataloader = dict(dataset=dict(_delete_=True, type='CIFAR10'))
    """
    cfg = migrate(child(text), ["data.conditional=true"]).config
    assert (cfg.generator.model.num_classes, cfg.discriminator.model.num_classes) == (10, 10)
    assert (cfg.discriminator.model.cond_mapping_channels, cfg.discriminator.model.cond_mapping_layers) == (512, 2)


def test_powers_are_evaluated_with_a_bounded_result(tmp_path) -> None:
    ok = tmp_path / "ok.py"
    ok.write_text(
        "r = 16 / 17\nb = 0.99**r\nm = 1. - (0.5**(32. / (10. * 1000.)))\nn = 2**63 - 1\nmean = [127.5] * 3\n"
    )
    values = load_source(ok).values
    assert values["b"] == 0.99 ** (16 / 17) and values["m"] == EMA_MOMENTUM and values["n"] == 2**63 - 1
    assert values["mean"] == [127.5, 127.5, 127.5]
    for i, line in enumerate(
        [
            "x = 9**9**9",
            "x = (-8) ** 0.5",
            "x = 10. ** 400",
            "x = 2 ** 64 * 2 ** 64",
            "x = 1e300 * 1e300",
            "x = [0] * 10**7",
        ]
    ):
        bad = tmp_path / f"bad{i}.py"
        bad.write_text(line + "\n")
        with pytest.raises(ConfigError, match=r"bad\d.py:1: (the power|the arithmetic|this statement)"):
            load_source(bad)


def test_converted_yaml_round_trips(tmp_path) -> None:
    out = tmp_path / "out"
    assert main_migrate([str(V1), "--out", str(out)]) == 0
    raw = yaml.safe_load((out / "config.yaml").read_text())
    assert raw["loss"]["r1_interval"] == 16 and raw["generator"]["model"]["type"] == "StyleGAN2Generator"
