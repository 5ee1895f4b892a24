"""fp16 needs a GPU (DeepSpeed refuses fp16 on CPU): each engine's own loss scaler, on CUDA; StyleGAN2 in fp16 engines
and in partial fp16 (its top scales in fp16 inside fp32 engines, MMagic/NVlabs' mixed precision); ADA on fp16 fakes."""

from __future__ import annotations

import json

import pytest
from runs import STYLEGAN2_TINY, ok, train
from tiny import BIGGAN32_10

from dsgan.errors import EXIT_NONFINITE

pytestmark = pytest.mark.gpu

FP16 = ("generator.deepspeed.fp16.enabled=true", "discriminator.deepspeed.fp16.enabled=true")


def test_fp16_engines_each_keep_a_loss_scaler(tmp_path):
    ok(train(tmp_path, 1, "run.total_iters=16", "run.log_every_iters=8", *FP16))
    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["g_loss_scale"] > 0 and last["d_loss_scale"] > 0
    assert {"g_skipped_steps", "d_skipped_steps"} <= last.keys()


def test_biggan_fp16_resumes(tmp_path):
    biggan = (*BIGGAN32_10, "generator.model.base_channels=16", "discriminator.model.base_channels=16")
    ok(train(tmp_path, 1, "run.total_iters=8", *FP16, *biggan))
    assert "resumed from" in ok(train(tmp_path, 1, "run.total_iters=16", *FP16, *biggan))


def test_fp16_collapse_is_a_nonfinite_loss_error(tmp_path):
    """An R1 weight that overflows fp16 at every step drives the loss scale to its minimum: exit 3, no traceback."""
    collapse = ("discriminator.deepspeed.fp16.initial_scale_power=1", "discriminator.deepspeed.fp16.hysteresis=1")
    out = ok(train(tmp_path, 1, "run.total_iters=16", "loss.r1_weight=1e30", *FP16, *collapse), EXIT_NONFINITE)
    assert "loss scaler overflowed at its minimum scale" in out and "Traceback" not in out


@pytest.mark.parametrize(
    "precision",
    [
        FP16,
        ("generator.model.num_fp16_scales=2", "discriminator.model.num_fp16_scales=2"),  # reduced_dtype float16
    ],
)
def test_stylegan2_fp16_trains_with_both_regularizers_and_resumes(tmp_path, precision):
    ok(train(tmp_path, 1, "run.total_iters=8", *precision, config=STYLEGAN2_TINY))
    out = ok(train(tmp_path, 1, "run.total_iters=12", *precision, config=STYLEGAN2_TINY))
    assert "resumed from" in out
    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["pl_mean"] > 0 and last["g_loss"] == last["g_loss"]  # path length ran; no NaN


def test_stylegan2_fp16_with_ada_trains_and_resumes(tmp_path):
    """ADA on fp16 fakes (augmented in fp32, handed back in fp16), R1 through it, on CUDA; p continues on resume."""
    ada = ("augment.type=ada", "augment.initial_p=0.5", "augment.ada_kimg=1")
    ok(train(tmp_path, 1, "run.total_iters=8", *FP16, *ada, config=STYLEGAN2_TINY))
    out = ok(train(tmp_path, 1, "run.total_iters=12", *FP16, *ada, config=STYLEGAN2_TINY))
    assert "resumed from" in out
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= r["aug/p"] <= 1 for r in records) and records[-1]["d_loss"] == records[-1]["d_loss"]
