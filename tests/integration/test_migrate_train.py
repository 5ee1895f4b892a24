"""A converted MMagic config trains: `dsgan migrate` a tiny 1.x DCGAN, then run the real `dsgan.train` entry point."""

from __future__ import annotations

import importlib.util

import pytest
from launch import REPO, launch

from dsgan.migrate import main_migrate

FIXTURE = REPO / "tests" / "fixtures" / "mmgen" / "v1" / "dcgan_tiny_cifar10-32x32.py"


@pytest.mark.skipif(
    importlib.util.find_spec("dsgan.train") is None, reason="the trainer (dsgan/train.py) is not in this tree yet"
)
def test_converted_dcgan_trains(tmp_path) -> None:
    out = tmp_path / "converted"
    assert main_migrate([str(FIXTURE), "--out", str(out)]) == 0
    sets = [
        "run.total_iters=4",
        "run.sample_every_iters=null",
        # torch's Adam: DeepSpeed's fused Adam needs a JIT build on CPU
        "generator.deepspeed.optimizer.params.torch_adam=true",
        "discriminator.deepspeed.optimizer.params.torch_adam=true",
    ]
    args = ["-m", "dsgan.train", "--config", str(out / "config.yaml"), "--run-dir", str(tmp_path / "run")]
    for s in sets:
        args += ["--set", s]
    (result,) = launch(args, world_size=1, timeout=300)
    assert result.returncode == 0, result.stdout[-5000:]
    assert "digits" in result.stdout  # the CIFAR10 dataset is not converted: the digits stand in, as reported
    assert (tmp_path / "run" / "checkpoints" / "latest").is_file()


STYLEGAN2 = REPO / "tests" / "fixtures" / "mmgen" / "v1" / "stylegan2" / "styleganv2"


def test_converted_stylegan2_trains(tmp_path) -> None:
    """MMagic's StyleGAN2 FFHQ-256 config, converted and shrunk to 16x16 on the digits: the first iterations run
    R1 (D update 0) and the path-length penalty (G update 0) through the real entry point."""
    pytest.importorskip("dsgan.models.stylegan2")
    out = tmp_path / "converted"
    shrink = [
        "generator.model.out_size=16",
        "discriminator.model.in_size=16",
        "generator.model.style_channels=32",
        "generator.model.noise_size=32",
        "data={type: digits, conditional: false}",
    ]
    fixture = STYLEGAN2 / "stylegan2_c2_8xb4-800kiters_ffhq-256x256.py"
    assert main_migrate([str(fixture), "--out", str(out), *(a for s in shrink for a in ("--set", s))]) == 0
    sets = [
        "run.total_iters=4",
        "run.sample_every_iters=null",
        "generator.deepspeed.optimizer.params.torch_adam=true",
        "discriminator.deepspeed.optimizer.params.torch_adam=true",
    ]
    args = ["-m", "dsgan.train", "--config", str(out / "config.yaml"), "--run-dir", str(tmp_path / "run")]
    for s in sets:
        args += ["--set", s]
    (result,) = launch(args, world_size=1, timeout=600)
    assert result.returncode == 0, result.stdout[-5000:]
    assert (tmp_path / "run" / "checkpoints" / "latest").is_file()
