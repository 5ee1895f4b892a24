"""Augmentation in real runs: bit-exact resume with ADA (p and its half-collected signs are trainer state) and
DiffAugment, at 1 and 2 ranks, the ranks agreeing on p at every D update; ADA's p rising on data D memorises and
staying near 0 on data it cannot."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from runs import MID_CYCLE, assert_identical, final_state, ok, train

from dsgan.errors import EXIT_RANK_MISMATCH

# ADA at a speed that moves p every adjustment (0.032 per 4 iterations of 8 images a rank), every op of 'bgc' on
# from the start, and R1 through the augmentation; stopped at 10 iterations, mid-way through an ADA interval.
ADA = ["augment.type=ada", "augment.initial_p=0.5", "augment.ada_kimg=1", "loss.r1_weight=1.0"]
DIFFAUGMENT = ["augment.type=diffaugment", "loss.r1_weight=1.0"]


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "world,stage,augment",
    [
        pytest.param(1, 0, ADA, id="ada-1rank"),
        pytest.param(2, 2, ADA, id="ada-2ranks-zero2"),
        pytest.param(1, 0, DIFFAUGMENT, id="diffaugment-1rank", marks=pytest.mark.slow),  # the same views as ADA's
    ],
)
def test_resume_with_augmentation_is_bit_exact(tmp_path, world, stage, augment):
    sets = [
        *MID_CYCLE,
        *augment,
        f"generator.deepspeed.zero_optimization.stage={stage}",
        f"discriminator.deepspeed.zero_optimization.stage={stage}",
        "run.log_every_iters=4",
    ]
    straight, split = tmp_path / "straight", tmp_path / "split"
    ok(train(straight, world, *sets, "run.total_iters=16"))
    ok(train(split, world, *sets, "run.total_iters=10"))
    out = ok(train(split, world, *sets, "run.total_iters=16"))
    assert "resumed from" in out and "step-00000010" in out
    assert_identical(final_state(straight), final_state(split))  # weights, optimizers, EMA, p and the signs
    if augment is ADA:
        # p moved at every adjustment (the ranks agreed on it at every D update, or the run would have exited 4)
        p = [r["aug/p"] for r in records(straight)]
        assert all(a != b for a, b in zip([0.5, *p], p, strict=False)) and all(0 <= x <= 1 for x in p), p
        resumed = {r["iteration"]: r["aug/p"] for r in records(split)}  # (it also logged at 10, where it stopped)
        assert [resumed[r["iteration"]] for r in records(straight)] == p
        trainer = torch.load(split / "checkpoints" / "step-00000016" / "trainer.pt", weights_only=True)
        assert trainer["augment_p"] == p[-1]


def test_ranks_that_disagree_on_p_stop_at_the_first_d_update(tmp_path):
    """p is compared at every agreement: a rank whose p differs (here from the start) ends the run with exit 4."""
    sets = ["augment.type=ada", "augment.target=null", "augment.initial_p=0.25", "run.total_iters=8"]
    res = train(tmp_path, 2, *sets, fault="augment-p=1:0.5", timeout=120)
    assert [r.returncode for r in res] == [EXIT_RANK_MISMATCH] * 2, res[0].stdout[-3000:]
    bits = {p: struct.unpack("<q", struct.pack("<d", p))[0] for p in (0.25, 0.5)}
    out = res[0].stdout
    assert (
        "rank 0: iteration=0" in out and f"augment_p_bits={bits[0.25]}" in out and f"augment_p_bits={bits[0.5]}" in out
    )
    assert not (tmp_path / "checkpoints").exists()


def flat_colours(root: Path, colours: np.ndarray) -> Path:
    """16x16 images of one colour each: a distribution G learns in a few hundred iterations, so that D can only
    keep winning by memorising the images, which it can when there are few."""
    root.mkdir()
    for i, colour in enumerate(colours):
        Image.fromarray(np.broadcast_to(colour, (16, 16, 3)).copy()).save(root / f"{i:05d}.png")
    return root


@pytest.mark.slow
def test_ada_p_rises_when_d_memorises_the_data_and_stays_near_zero_otherwise(tmp_path):
    """4 images vs 2000 (300 iterations each, 20-45 s on 2 shared cores), R1 as with StyleGAN2: D memorises the 4
    colours and r_t stays near 1, so p climbs; with 2000, r_t is near 1 only while G is still noise, then falls
    below the target, and p returns to 0 and stays about there."""
    sets = [
        "data.type=image_folder",
        "data.num_workers=0",
        "data.conditional=false",
        "generator.model.num_classes=0",
        "discriminator.model.num_classes=0",
        "loss.r1_weight=1.0",
        "run.total_iters=300",
        "run.log_every_iters=20",
        "run.sample_every_iters=null",
        "checkpoint.every_iters=null",
        "augment.type=ada",
        "augment.ada_kimg=5",
    ]
    colours = np.random.default_rng(0).integers(0, 256, (2004, 3)).astype(np.uint8)
    p = {}
    for name, subset in (("few", colours[:4]), ("many", colours[4:])):
        data = flat_colours(tmp_path / f"data_{name}", subset)
        ok(train(tmp_path / name, 1, *sets, f"data.root={data}"))
        p[name] = [r["aug/p"] for r in records(tmp_path / name)]
    second_half = {name: np.mean(values[len(values) // 2 :]) for name, values in p.items()}
    assert second_half["few"] > 0.1 and p["few"][-1] > 0.15, p  # measured: 0.15, 0.24
    assert all(b >= a for a, b in zip(p["few"][-5:], p["few"][-4:], strict=False)), p  # still climbing
    assert second_half["many"] < 0.02, p  # measured: 0.005
