"""Importing MMagic / MMGeneration / BigGAN-PyTorch weights (dsgan.migrate.layouts, dsgan.migrate.weights).

Each source layout is built from a dsgan model by the inverse map (names taken from the published modules: MMagic
`editors/{biggan,sagan,dcgan}`, BigGAN-PyTorch `BigGAN.py`/`layers.py`), read back, and the imported model must give
the same images and logits for fixed z, classes and noise. StyleGAN2's state dict comes from MMagic's own key/shape
lists (tests/fixtures/stylegan2).
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from dsgan.checkpoint import initial_weights, load_generator, save_weights
from dsgan.cli import main
from dsgan.config import load_config
from dsgan.config import models as c
from dsgan.errors import CheckpointError, ConfigError
from dsgan.migrate.layouts import Layout, _mmagic_names, layout
from dsgan.migrate.weights import convert, convert_network, export_network, load_source
from dsgan.models import build_discriminator, build_generator, freeze_input_blocks, input_blocks
from dsgan.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny_cpu.yaml"
FIXTURES = REPO / "tests" / "fixtures" / "stylegan2"


def _randomize(module: torch.nn.Module, seed: int) -> None:
    """Every tensor random (BatchNorm statistics positive, attention gates non-zero), so that a tensor put in the
    wrong place changes the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                t.copy_(
                    torch.rand(t.shape, generator=gen) + 0.5
                    if "running_var" in name
                    else torch.randn(t.shape, generator=gen) * 0.2
                )


def _outputs(module: torch.nn.Module, inputs: tuple) -> torch.Tensor:
    module.eval()
    with torch.no_grad():
        return module(*inputs)


def _round_trip(module: torch.nn.Module, fresh: torch.nn.Module, lay: Layout, inputs: tuple) -> dict:
    exported = export_network(module.state_dict(), lay)
    rows: list = []
    back = convert_network(exported, lay, fresh.state_dict(), "generator", rows)
    fresh.load_state_dict(back)
    assert len([r for r in rows if not r[2].startswith("filled")]) == len(exported)  # every source key accounted for
    assert torch.equal(_outputs(module, inputs), _outputs(fresh, inputs))
    return exported


def _pair(cfg_g, cfg_d, seed: int = 1) -> tuple:
    torch.manual_seed(seed)
    g, d = build_generator(cfg_g), build_discriminator(cfg_d)
    _randomize(g, seed)
    _randomize(d, seed + 1)
    return g, d


BIGGAN_G = c.BigGANGenerator(output_scale=128, noise_size=120, num_classes=5, base_channels=8, shared_dim=16)
BIGGAN_D = c.BigGANDiscriminator(input_scale=128, num_classes=5, base_channels=8)
Z = torch.randn(2, 120, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([1, 4])


@pytest.mark.parametrize(("style", "sn"), [("mmagic", "ajbrock"), ("mmagic", "torch"), ("biggan-pytorch", "ajbrock")])
def test_biggan_round_trip_same_images_and_logits(style: str, sn: str) -> None:
    g, d = _pair(BIGGAN_G, BIGGAN_D)
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    g_keys = _round_trip(g, build_generator(BIGGAN_G), layout(g, style, sn), (Z, Y))
    d_keys = _round_trip(d, build_discriminator(BIGGAN_D), layout(d, style, sn), (x, Y))
    if (style, sn) == ("mmagic", "ajbrock"):  # MMagic's BigGANGenerator: attention is conv_blocks[4] at 128
        for key in (
            "noise2feat.u0",
            "noise2feat.sv0",
            "shared_embedding.weight",
            "conv_blocks.0.bn1.gain.u0",
            "conv_blocks.0.bn1.bn.running_mean",
            "conv_blocks.0.bn1.bn.num_batches_tracked",
            "conv_blocks.3.shortcut.conv.weight",
            "conv_blocks.4.gamma",
            "conv_blocks.4.theta.conv.u0",
            "conv_blocks.5.conv2.conv.weight",
            "output_layer.bn.running_var",
            "output_layer.conv.bias",
        ):
            assert key in g_keys, key
        assert g_keys["conv_blocks.4.gamma"].shape == ()
        for key in (
            "conv_blocks.0.conv1.conv.u0",
            "conv_blocks.1.gamma",
            "conv_blocks.5.shortcut.conv.weight",
            "conv_blocks.6.conv2.conv.weight",
            "decision.weight",
            "proj_y.u0",
        ):
            assert key in d_keys, key
    if sn == "torch":
        assert "noise2feat.weight_orig" in g_keys and "decision.weight_v" in d_keys
    if style == "biggan-pytorch":  # BigGAN.Generator: blocks[i] = [GBlock, Attention?], output_layer = (bn, act, conv)
        for key in (
            "linear.u0",
            "shared.weight",
            "blocks.0.0.bn1.gain.u0",
            "blocks.0.0.bn1.stored_mean",
            "blocks.0.0.conv_sc.weight",
            "blocks.3.1.gamma",
            "blocks.3.1.o.sv0",
            "output_layer.0.gain",
            "output_layer.0.stored_var",
            "output_layer.2.weight",
        ):
            assert key in g_keys, key
        for key in (
            "blocks.0.0.conv_sc.u0",
            "blocks.0.1.gamma",
            "blocks.5.0.conv1.weight",
            "linear.weight",
            "embed.u0",
        ):
            assert key in d_keys, key


def test_sngan_round_trip() -> None:
    g_cfg = c.SNGANGenerator(output_scale=32, num_classes=3, base_channels=16, noise_size=16)
    d_cfg = c.SNGANDiscriminator(input_scale=32, num_classes=3, base_channels=16)
    g, d = _pair(g_cfg, d_cfg)
    z, y, x = torch.randn(2, 16), torch.tensor([0, 2]), torch.randn(2, 3, 32, 32)
    g_keys = _round_trip(g, build_generator(g_cfg), layout(g, "mmagic", None), (z, y))  # MMagic: no SN in G
    d_keys = _round_trip(d, build_discriminator(d_cfg), layout(d, "mmagic", "torch"), (x, y))
    assert {
        "noise2feat.weight",
        "conv_blocks.0.norm_1.weight_embedding.weight",
        "conv_blocks.2.norm_2.norm.running_var",
        "conv_blocks.0.shortcut.conv.weight",
        "to_rgb.bn.weight",
        "to_rgb.conv.bias",
    } <= set(g_keys)
    assert {
        "from_rgb.conv_1.conv.weight_orig",
        "from_rgb.shortcut.conv.weight_u",
        "conv_blocks.0.conv_2.conv.weight_v",
        "decision.weight_orig",
        "proj_y.weight_u",
    } <= set(d_keys)


def test_dcgan_round_trip_and_batchnorm_discriminator_dropped() -> None:
    g, d = _pair(
        c.DCGANGenerator(output_scale=16, noise_size=8, base_channels=8, num_classes=0),
        c.DCGANDiscriminator(input_scale=16, base_channels=8, num_classes=0),
    )
    with torch.no_grad():  # MMagic's convs before BatchNorm have no bias: a dsgan model with zero ones has its layout
        g.fc.bias.zero_()
        for up in g.ups:
            up.bias.zero_()
    z, x = torch.randn(2, 8), torch.randn(2, 3, 16, 16)
    g_keys = _round_trip(
        g,
        build_generator(c.DCGANGenerator(output_scale=16, noise_size=8, base_channels=8, num_classes=0)),
        layout(g, "mmagic", None),
        (z, None),
    )
    assert g_keys["noise2feat.conv.weight"].shape == (8, 16, 4, 4)  # [noise, channels at 4x4, 4, 4]
    d_keys = _round_trip(
        d,
        build_discriminator(c.DCGANDiscriminator(input_scale=16, base_channels=8, num_classes=0)),
        layout(d, "mmagic", None),
        (x, None),
    )
    assert d_keys["output_layer.conv.weight"].shape == (1, 16, 4, 4)
    reason = layout(d, "mmagic", None, {"downsamples.1.bn.running_mean"})
    assert isinstance(reason, str) and "BatchNorm" in reason


@pytest.mark.parametrize("fixture", sorted(FIXTURES.glob("mmagic_keys_*.json")), ids=lambda p: p.stem)
def test_stylegan2_from_mmagic_key_lists(fixture: Path) -> None:
    """A state dict with exactly the keys and shapes of MMagic's own modules converts onto dsgan's, and back."""
    ref = json.loads(fixture.read_text())
    if "cond10" in fixture.stem:
        g_cfg = c.StyleGAN2Generator(out_size=16, style_channels=32, channel_multiplier=1, num_mlps=2, num_classes=10)
        d_cfg = c.StyleGAN2Discriminator(in_size=16, num_classes=10, cond_mapping_channels=32, cond_mapping_layers=2)
    else:
        g_cfg = c.StyleGAN2Generator(out_size=32, style_channels=64, channel_multiplier=1)
        d_cfg = c.StyleGAN2Discriminator(in_size=32)
    for network, module in (("generator", StyleGAN2Generator(g_cfg)), ("discriminator", StyleGAN2Discriminator(d_cfg))):
        source = {k: torch.randn(shape) for k, shape in ref[network].items()}
        rows: list = []
        lay = layout(module, "mmagic", None)
        assert isinstance(lay, Layout)
        module.load_state_dict(convert_network(source, lay, module.state_dict(), network, rows))
        assert all(outcome.startswith("converted") for _, _, outcome in rows) and len(rows) == len(source)
        exported = export_network(module.state_dict(), lay)
        assert all(torch.equal(exported[k], v) for k, v in source.items())


def test_shape_mismatch_names_the_key_and_both_shapes() -> None:
    g, _ = _pair(BIGGAN_G, BIGGAN_D)
    lay = layout(g, "mmagic", "ajbrock")
    exported = export_network(g.state_dict(), lay)
    exported["conv_blocks.2.conv1.conv.weight"] = torch.zeros(3, 3, 3, 3)
    with pytest.raises(
        Exception,
        match=r"generator\.conv_blocks\.2\.conv1\.conv\.weight: the checkpoint has \[3, 3, 3, 3\], "
        r"dsgan's blocks\.2\.conv1\.weight needs \[32, 64, 3, 3\]",
    ):
        convert_network(exported, lay, g.state_dict(), "generator", [])
    del exported["conv_blocks.2.conv1.conv.weight"]
    exported["conv_blocks.9.extra"] = torch.zeros(1)
    with pytest.raises(
        Exception,
        match=r"conv_blocks\.9\.extra \[1\]: dsgan's model has no tensor.*conv_blocks\.2\.conv1\.conv\.weight: missing",
    ):
        convert_network(exported, lay, g.state_dict(), "generator", [])


# ----------------------------------------------------------------------------------------------------------------
# Whole checkpoints through `dsgan migrate --checkpoint`


def _tiny_unconditional() -> tuple:
    cfg = load_config(
        TINY, ["generator.model.num_classes=0", "discriminator.model.num_classes=0", "data.conditional=false"]
    )
    return cfg, *_pair(cfg.generator.model, cfg.discriminator.model, seed=3)


def _history_buffer(monkeypatch: pytest.MonkeyPatch) -> object:
    """An object of MMEngine's `HistoryBuffer` class, as its checkpoints pickle into the message hub: a package dsgan
    never imports (registered here only while the test writes the file)."""
    name = "mmengine.logging.history_buffer"
    cls = type("HistoryBuffer", (), {"__module__": name, "__init__": lambda self: setattr(self, "values", [1.0])})
    for package in ("mmengine", "mmengine.logging", name):
        monkeypatch.setitem(sys.modules, package, types.ModuleType(package))
    sys.modules[name].HistoryBuffer = cls  # type: ignore[attr-defined]
    return cls()


def _mmagic_checkpoint(
    path: Path, g: torch.nn.Module, d: torch.nn.Module, ema: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MMagic 1.x's layout: BaseGAN's state dict with the EMA wrapped as `generator_ema.module`, meta, message hub."""
    state = {}
    for prefix, module in (("generator.", g), ("discriminator.", d), ("generator_ema.module.", ema)):
        lay = layout(module, "mmagic", None)
        assert isinstance(lay, Layout)
        state.update({prefix + k: v for k, v in export_network(module.state_dict(), lay).items()})
    state["generator_ema.steps"] = torch.tensor(7)
    hub = {"log_scalars": {"train/loss": _history_buffer(monkeypatch)}}
    meta = {"iter": 7, "seed": np.int64(0), "scales": np.ones(2, dtype=np.float32)}  # numpy values, as MMEngine's
    torch.save({"meta": meta, "state_dict": state, "message_hub": hub}, path)
    monkeypatch.undo()  # the import below must not find the class


def _zero_pre_bn_biases(g: torch.nn.Module) -> None:
    with torch.no_grad():
        g.fc.bias.zero_()
        for up in g.ups:
            up.bias.zero_()


def test_migrate_checkpoint_writes_a_run_that_samples_and_evaluates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, g, d = _tiny_unconditional()
    _, ema, _ = _tiny_unconditional()
    _randomize(ema, 9)
    for module in (g, ema):
        _zero_pre_bn_biases(module)
    ckpt = tmp_path / "iter_7.pth"
    _mmagic_checkpoint(ckpt, g, d, ema, monkeypatch)
    assert "mmengine" not in sys.modules
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(TINY.read_text())
    out = tmp_path / "imported"
    sets = [
        "--set",
        "generator.model.num_classes=0",
        "--set",
        "discriminator.model.num_classes=0",
        "--set",
        "data.conditional=false",
    ]
    assert main(["migrate", "--checkpoint", str(ckpt), "--config", str(cfg_file), "--out", str(out), *sets]) == 0
    report = (out / "weights_report.md").read_text()
    assert "MMagic 1.x" in report and "`generator_ema.steps`" in report and "`message_hub`" in report
    assert "unexpected" not in report
    imported, imported_cfg, iteration = load_generator(out)
    assert iteration == 0 and imported_cfg.run.dir == out.resolve()
    z = torch.randn(4, cfg.generator.model.noise_size)
    assert torch.equal(_outputs(ema, (z, None)), _outputs(imported, (z, None)))
    no_ema, _, _ = load_generator(out, use_ema=False)
    assert torch.equal(_outputs(g, (z, None)), _outputs(no_ema, (z, None)))
    assert main(["sample", "--run", str(out), "--num", "4", "--out", str(tmp_path / "grid.png")]) == 0
    assert (tmp_path / "grid.png").stat().st_size > 0
    assert main(["eval", "--run", str(out), "--digits"]) == 0
    assert "iteration 0: " in capsys.readouterr().out


def test_mmgeneration_0x_ema_prefix(tmp_path: Path) -> None:
    cfg, g, d = _tiny_unconditional()
    _zero_pre_bn_biases(g)
    state = {}
    for prefix, module in (("generator.", g), ("discriminator.", d), ("generator_ema.", g)):
        lay = layout(module, "mmagic", None)
        assert isinstance(lay, Layout)
        state.update({prefix + k: v for k, v in export_network(module.state_dict(), lay).items()})
    torch.save(
        {"meta": {"mmgen_version": "0.7.3", "config": "model = dict()"}, "state_dict": state}, tmp_path / "c.pth"
    )
    source = load_source(tmp_path / "c.pth")
    assert source.version.startswith("MMGeneration 0.x") and source.config_text == "model = dict()"
    assert set(source.networks["ema"]) == set(source.networks["generator"])


class _Payload:
    """A pickle that would create a file when loaded (what a malicious checkpoint does)."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path: Path, capsys) -> None:
    target = tmp_path / "pwned"
    ckpt = tmp_path / "evil.pth"
    torch.save({"state_dict": {"generator.fc.weight": torch.zeros(1)}, "meta": _Payload(target)}, ckpt)
    code = main(["migrate", "--checkpoint", str(ckpt), "--config", str(TINY), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "refused" in err and "system" in err and "Nothing in it was run" in err
    assert not target.exists()
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_checkpoint_without_config_asks_for_one(tmp_path: Path, capsys) -> None:
    torch.save({"state_dict": {"generator.fc.weight": torch.zeros(1)}}, tmp_path / "c.pth")
    assert main(["migrate", "--checkpoint", str(tmp_path / "c.pth"), "--out", str(tmp_path / "out")]) == 2
    assert "give --config" in capsys.readouterr().err


def test_biggan_pytorch_folder_with_only_g_ema(tmp_path: Path) -> None:
    """BigGAN-PyTorch's release files are plain state dicts; G_ema.pth alone gives G and the EMA."""
    g, _ = _pair(BIGGAN_G, BIGGAN_D)
    lay = layout(g, "biggan-pytorch", "ajbrock")
    assert isinstance(lay, Layout)
    torch.save(export_network(g.state_dict(), lay), tmp_path / "G_ema_best1.pth")
    (tmp_path / "G.pth").write_bytes(b"")  # another snapshot: not read
    (tmp_path / "state_dict_best1.pth").write_bytes(b"")
    source = load_source(tmp_path / "G_ema_best1.pth")
    assert source.format == "biggan-pytorch" and set(source.networks) == {"ema"} and "best1" in source.version
    assert [row[0] for row in source.rows] == ["G.pth", "state_dict_best1.pth"]
    sets = ["generator.model.base_channels=8", "discriminator.model.base_channels=8", "generator.model.shared_dim=16"]
    classes = ["generator.model.num_classes=5", "discriminator.model.num_classes=5"]
    imported = convert(source, load_config(REPO / "configs" / "biggan128.yaml", [*sets, *classes]))
    assert all(torch.equal(imported.weights["generator"][k], v) for k, v in g.state_dict().items())
    assert imported.ema is not None and imported.ema.keys() == imported.weights["generator"].keys()
    notes = "\n".join(imported.notes)
    assert "no generator weights" not in notes and "dsgan's discriminator starts from a fresh initialisation" in notes
    assert "G's weights are the EMA's" in notes
    assert "ema: spectral norm: dsgan's sigma differs from the source's estimate" in notes  # random u: not converged
    no_ema = convert(source, load_config(REPO / "configs" / "biggan128.yaml", [*sets, *classes, "ema=null"]))
    assert no_ema.ema is None and no_ema.weights["generator"].keys() == imported.weights["generator"].keys()


# ----------------------------------------------------------------------------------------------------------------
# init: fine-tuning


def test_freeze_input_blocks_counts_attention_with_its_block() -> None:
    d = build_discriminator(BIGGAN_D)  # at 128, attention follows block 0 (64x64)
    assert input_blocks(d)[0] == [d.blocks[0], d.attention] and len(input_blocks(d)) == 6
    freeze_input_blocks(d, 2)
    frozen = {name for name, p in d.named_parameters() if not p.requires_grad}
    assert frozen == {
        name for name, _ in d.named_parameters() if name.startswith(("blocks.0.", "blocks.1.", "attention."))
    }
    with pytest.raises(ConfigError, match=r"init.freeze_d_blocks=7: this discriminator has 6 blocks"):
        freeze_input_blocks(d, 7)


def test_init_checkpoint_missing_or_of_another_model(tmp_path: Path) -> None:
    run = f"run.dir={tmp_path / 'run'}"
    cfg = load_config(TINY, [f"init.checkpoint={tmp_path / 'none'}", run])
    g, d = build_generator(cfg.generator.model), build_discriminator(cfg.discriminator.model)
    with pytest.raises(CheckpointError, match=r"init.checkpoint=.*none: not a checkpoint directory"):
        initial_weights(cfg, None, g, d)
    narrow = load_config(TINY, ["generator.model.base_channels=4", "discriminator.model.base_channels=4", run])
    weights = {
        "generator": build_generator(narrow.generator.model).state_dict(),
        "discriminator": build_discriminator(narrow.discriminator.model).state_dict(),
    }
    ckpt = save_weights(tmp_path / "narrow", narrow, weights, None)
    cfg = load_config(TINY, [f"init.checkpoint={ckpt}", run])
    with pytest.raises(
        ConfigError,
        match=r"\(generator\): the weights do not fit the configured model .*fc.weight: "
        r"checkpoint has \[128, 32\], the model has \[256, 32\]",
    ):
        initial_weights(cfg, None, g, d)


def test_mmagic_dcgan_with_its_config_from_meta(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No --config: the config text MMEngine keeps in the checkpoint's meta is converted; MMagic's DCGAN D, which
    has BatchNorm, is dropped with the reason and G is imported."""
    text = (REPO / "tests" / "fixtures" / "mmgen" / "v1" / "dcgan_tiny_cifar10-32x32.py").read_text()
    text = text.replace("_base_ = ['./_base_/gen_default_runtime.py']", "")  # MMEngine stores the merged text
    (tmp_path / "source.py").write_text(text)
    assert main(["migrate", str(tmp_path / "source.py"), "--out", str(tmp_path / "converted")]) == 0
    cfg = load_config(tmp_path / "converted" / "config.yaml")
    g = build_generator(cfg.generator.model)
    _randomize(g, 5)
    _zero_pre_bn_biases(g)
    lay = layout(g, "mmagic", None)
    assert isinstance(lay, Layout)
    state = {f"generator.{k}": v for k, v in export_network(g.state_dict(), lay).items()}
    state["discriminator.downsamples.0.conv.weight"] = torch.zeros(8, 3, 4, 4)
    state["discriminator.downsamples.1.bn.running_mean"] = torch.zeros(16)
    torch.save({"meta": {"cfg": text}, "state_dict": state}, tmp_path / "iter_400.pth")
    out = tmp_path / "imported"
    assert main(["migrate", "--checkpoint", str(tmp_path / "iter_400.pth"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "discriminator: the source's DCGAN discriminator normalises with BatchNorm" in printed
    assert (out / "source_config.py").read_text() == text and (out / "migration_report.md").is_file()
    report = (out / "weights_report.md").read_text()
    assert "| `discriminator.downsamples.1.bn.running_mean` | [16] | dropped: the source's DCGAN" in report
    imported, _, _ = load_generator(out, use_ema=False)
    z = torch.randn(3, cfg.generator.model.noise_size)
    assert torch.equal(_outputs(g, (z, None)), _outputs(imported, (z, None)))


def test_same_names_with_spectral_norm_in_the_source_style() -> None:
    """A module named as MMagic names it keeps every tensor's name, except each spectrally normalised layer's,
    which takes the source's style (here torch's weight_orig / weight_u, and weight_v dropped)."""
    cfg = c.BigGANDiscriminator(input_scale=32, num_classes=3, base_channels=8)
    d = build_discriminator(cfg)
    _randomize(d, 4)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    keys = _round_trip(d, build_discriminator(cfg), _mmagic_names(d, "torch"), (x, y))
    assert {"fc.weight_orig", "fc.weight_u", "fc.weight_v", "fc.bias", "blocks.0.conv1.weight_orig"} <= set(keys)
    assert not any(k.endswith((".sn.u", "fc.weight")) for k in keys)
    g = build_generator(BIGGAN_G)
    _randomize(g, 5)
    keys = _round_trip(g, build_generator(BIGGAN_G), _mmagic_names(g, "ajbrock"), (Z, Y))
    assert {
        "blocks.0.bn1.gain.u0",
        "blocks.0.bn1.gain.sv0",
        "blocks.0.bn1.num_batches_tracked",
        "shared.weight",
    } <= set(keys)
