"""Converted MMagic configs train: `dsgan migrate` a tiny 1.x DCGAN, MMagic's StyleGAN2 FFHQ-256, SNGAN-proj
ImageNet-128 and (slow) WGAN-GP configs (shrunk), then run the real `dsgan.train` entry point."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from launch import REPO, launch

from dsgan.migrate import main_migrate

FIXTURES = REPO / "tests" / "fixtures" / "mmgen" / "v1"


def train_converted(
    tmp_path: Path, source: Path, *migrate_sets: str, total_iters: int = 4
) -> subprocess.CompletedProcess:
    """Convert `source` (with `--set` overrides), then train the result for `total_iters` iterations on one
    process."""
    out = tmp_path / "converted"
    assert main_migrate([str(source), "--out", str(out), *(a for s in migrate_sets for a in ("--set", s))]) == 0
    sets = [
        f"run.total_iters={total_iters}",
        "run.sample_every_iters=null",
        # torch's Adam: DeepSpeed's fused Adam needs a JIT build on CPU
        "generator.deepspeed.optimizer.params.torch_adam=true",
        "discriminator.deepspeed.optimizer.params.torch_adam=true",
    ]
    args = ["-m", "dsgan.train", "--config", str(out / "config.yaml"), "--run-dir", str(tmp_path / "run")]
    for s in sets:
        args += ["--set", s]
    (result,) = launch(args, world_size=1, timeout=600)
    assert result.returncode == 0, result.stdout[-5000:]
    assert (tmp_path / "run" / "checkpoints" / "latest").is_file()
    return result


def last_record(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])


def train_one_cycle_of_five(tmp_path: Path, source: Path, *migrate_sets: str) -> dict:
    """Convert and train a config with 5 D updates per G update for one cycle (5 iterations) of 2 images per step;
    its metrics record at the 5th iteration, which holds the G update."""
    one_cycle = [
        "generator.deepspeed.train_micro_batch_size_per_gpu=2",
        "discriminator.deepspeed.train_micro_batch_size_per_gpu=2",
        "run.log_every_iters=5",
    ]
    train_converted(tmp_path, source, *migrate_sets, *one_cycle, total_iters=5)
    last = last_record(tmp_path)
    assert last["iteration"] == 5 and last["g_updates"] == 1 and last["d_updates"] == 5
    return last


def test_converted_dcgan_trains(tmp_path) -> None:
    result = train_converted(tmp_path, FIXTURES / "dcgan_tiny_cifar10-32x32.py")
    assert "digits" in result.stdout  # the CIFAR10 dataset is not converted: the digits stand in, as reported


def test_converted_stylegan2_trains(tmp_path) -> None:
    """MMagic's StyleGAN2 FFHQ-256 config, converted and shrunk to 16x16 on the digits: the first iterations run
    R1 (D update 0) and the path-length penalty (G update 0) through the real entry point."""
    shrink = [
        "generator.model.out_size=16",
        "discriminator.model.in_size=16",
        "generator.model.style_channels=32",
        "generator.model.noise_size=32",
        "data={type: digits, conditional: false}",
    ]
    source = FIXTURES / "stylegan2" / "styleganv2" / "stylegan2_c2_8xb4-800kiters_ffhq-256x256.py"
    train_converted(tmp_path, source, *shrink)
    last = last_record(tmp_path)
    assert last["pl_mean"] > 0 and last["d_reg"] > 0  # both regularizers ran


def test_converted_sngan_projection_128_trains(tmp_path) -> None:
    """MMagic's SNGAN-proj ImageNet-128 config at its resolution and schedule (5 D updates per G update), narrowed
    to base_channels 4, 2 images per step and the digits' 10 classes: the 5th iteration's G update runs."""
    shrink = [
        "generator.model.base_channels=4",
        "discriminator.model.base_channels=4",
        "generator.model.num_classes=10",
        "discriminator.model.num_classes=10",
        "data={type: digits, conditional: true}",
    ]
    source = FIXTURES / "sngan_proj" / "sngan-proj_wReLUinplace_Glr2e-4_Dlr5e-5_ndisc5-2xb128_imagenet1k-128x128.py"
    last = train_one_cycle_of_five(tmp_path, source, *shrink)
    assert "g_loss" in last and "d_loss" in last


@pytest.mark.slow
def test_converted_wgan_gp_trains(tmp_path) -> None:
    """MMagic's WGAN-GP config (GroupNorm D, 5 D updates per G update, gradient penalty 10) at 16x16 on the digits:
    the penalty joins every D micro-step and the 5th iteration's G update runs."""
    shrink = [
        "generator.model.output_scale=16",
        "discriminator.model.input_scale=16",
        "data={type: digits, conditional: false}",
    ]
    source = FIXTURES / "wgan-gp" / "wgangp_GN_1xb64-160kiters_celeba-cropped-128x128.py"
    assert train_one_cycle_of_five(tmp_path, source, *shrink)["d_reg"] > 0
