"""Imported weights train: an MMagic-layout BigGAN checkpoint through `dsgan migrate --checkpoint`, then the real
`dsgan.train` entry point continues it in its run dir (2 ranks) and fine-tunes it from `init.checkpoint` with FreezeD
(1 rank), and the fine-tuning run resumes from its own checkpoint with the initial weights gone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from runs import TINY, ok, train

from dsgan.checkpoint import WEIGHTS, initial_weights, network_weights
from dsgan.cli import main
from dsgan.config import load_config
from dsgan.migrate.layouts import Layout, layout
from dsgan.migrate.weights import export_network
from dsgan.models import build_discriminator, build_generator

BIGGAN32 = (
    "generator.model.type=BigGANGenerator",
    "discriminator.model.type=BigGANDiscriminator",
    "generator.model.output_scale=32",
    "discriminator.model.input_scale=32",
    "generator.model.base_channels=8",
    "discriminator.model.base_channels=8",
    "generator.model.shared_dim=8",
    "generator.model.num_classes=10",
    "discriminator.model.num_classes=10",
    "generator.model.noise_size=16",
    "run.sample_every_iters=null",
)
"""tiny_cpu.yaml's digits (10 classes) with a small BigGAN at 32x32 (noise 16: four chunks of 4)."""


def _import(tmp_path: Path) -> Path:
    """An MMagic 1.x checkpoint (G, D and the EMA of a randomly initialised BigGAN), imported; returns the run dir."""
    cfg = load_config(Path(TINY), list(BIGGAN32))
    state = {}
    for seed, (prefix, module) in enumerate(
        (
            ("generator.", build_generator(cfg.generator.model)),
            ("discriminator.", build_discriminator(cfg.discriminator.model)),
            ("generator_ema.module.", build_generator(cfg.generator.model)),
        )
    ):
        torch.manual_seed(seed)
        lay = layout(module, "mmagic", "ajbrock")
        assert isinstance(lay, Layout)
        state.update({prefix + k: v for k, v in export_network(module.state_dict(), lay).items()})
    torch.save({"meta": {"iter": 100}, "state_dict": state}, tmp_path / "iter_100.pth")
    out = tmp_path / "imported"
    sets = [a for s in BIGGAN32 for a in ("--set", s)]
    assert (
        main(["migrate", "--checkpoint", str(tmp_path / "iter_100.pth"), "--config", TINY, "--out", str(out), *sets])
        == 0
    )
    return out


def test_imported_run_dir_continues_training_at_two_ranks(tmp_path: Path) -> None:
    """`dsgan train --config DIR/config.yaml` in the imported run dir starts from its weights at iteration 0."""
    out = _import(tmp_path)
    stdout = ok(train(out, 2, "run.total_iters=4", config=str(out / "config.yaml")))
    assert "starting from the weights of" in stdout and "step-00000000" in stdout
    assert (out / "checkpoints" / "latest").read_text() == "step-00000004"
    # That training checkpoint (engine files, no weights.pt) is an init.checkpoint too: G, D and the EMA load from it.
    step4 = out / "checkpoints" / "step-00000004"
    cfg = load_config(out / "config.yaml", [f"init.checkpoint={step4}", f"run.dir={tmp_path / 'next'}"])
    g, d = build_generator(cfg.generator.model), build_discriminator(cfg.discriminator.model)
    state = initial_weights(cfg, None, g, d)
    assert state is not None and state.iteration == 4 and state.ema is not None
    for module, name in ((g, "generator"), (d, "discriminator")):
        weights = network_weights(step4, cfg, name)
        assert all(torch.equal(v, weights[k]) for k, v in module.state_dict().items())


def _fine_tune(tmp_path: Path, world: int, *zero: str) -> tuple:
    """Fine-tune the imported model for 4 iterations with D's first two blocks frozen; check they kept their
    weights and the rest trained. Returns (run dir, overrides, initial checkpoint, imported D, D after 4)."""
    out = _import(tmp_path)
    initial = out / "checkpoints" / "step-00000000"
    d0 = torch.load(initial / WEIGHTS, weights_only=True)["discriminator"]
    run = tmp_path / "fine_tune"
    sets = (*BIGGAN32, *zero, f"init.checkpoint={initial}", "init.freeze_d_blocks=2", "checkpoint.every_iters=4")
    stdout = ok(train(run, world, *sets, "run.total_iters=4"))
    assert "starting from the weights of" in stdout
    cfg = load_config(Path(TINY), [*BIGGAN32, *zero])
    d4 = network_weights(run / "checkpoints" / "step-00000004", cfg, "discriminator")
    for key, value in d0.items():
        if key.startswith(("blocks.0.", "blocks.1.")) and not key.endswith(".sn.u"):
            assert torch.equal(value, d4[key]), key  # FreezeD: the first two blocks kept their imported weights
    assert not torch.equal(d0["blocks.2.conv1.weight"], d4["blocks.2.conv1.weight"])  # the rest trained
    assert not torch.equal(d0["fc.weight"], d4["fc.weight"])
    return run, sets, initial, cfg, d0, d4


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_fine_tune_with_frozen_d_blocks_under_zero(tmp_path: Path, stage: int) -> None:
    """Frozen parameters are left out of ZeRO's optimizer partitions (and ZeRO-3's are gathered for the forward)."""
    _fine_tune(
        tmp_path, 2, *(f"{net}.deepspeed.zero_optimization.stage={stage}" for net in ("generator", "discriminator"))
    )


def test_fine_tune_with_frozen_d_blocks_then_resume(tmp_path: Path) -> None:
    run, sets, initial, cfg, d0, d4 = _fine_tune(tmp_path, 1)

    initial.rename(tmp_path / "moved")  # a resumed fine-tuning run never reads its initial weights again
    stdout = ok(train(run, 1, *sets, "run.total_iters=8"))
    assert "resumed from" in stdout and "step-00000004" in stdout and "starting from the weights" not in stdout
    d8 = network_weights(run / "checkpoints" / "step-00000008", cfg, "discriminator")
    assert torch.equal(d0["blocks.0.conv1.weight"], d8["blocks.0.conv1.weight"])
    assert not torch.equal(d4["blocks.2.conv1.weight"], d8["blocks.2.conv1.weight"])
