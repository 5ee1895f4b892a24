"""StyleGAN2 through the real entry point: exact resume mid-cycle with style mixing, random noise injection, lazy R1
and path length (its running mean included), on 1 rank with ADA on D's inputs (R1 on the augmented reals, p moving)
and on 2 ranks."""

from __future__ import annotations

import pytest
import torch
from runs import MID_CYCLE, STYLEGAN2_TINY, assert_identical, final_state, ok, train

ADA = ["augment.type=ada", "augment.initial_p=0.5", "augment.ada_kimg=1", "augment.interval_iters=2"]


@pytest.mark.parametrize(
    "world,stage,augment", [(1, 0, ADA), (2, 2, [])], ids=["1rank-ada", "2ranks-zero2"]
)  # ZeRO-3: test_stylegan2_engines.py
def test_stylegan2_resume_mid_cycle_is_bit_exact(tmp_path, world, stage, augment):
    sets = [
        *MID_CYCLE,
        *augment,
        f"generator.deepspeed.zero_optimization.stage={stage}",
        f"discriminator.deepspeed.zero_optimization.stage={stage}",
    ]
    straight, split = tmp_path / "straight", tmp_path / "split"
    ok(train(straight, world, *sets, "run.total_iters=16", config=STYLEGAN2_TINY, timeout=600))
    ok(train(split, world, *sets, "run.total_iters=10", config=STYLEGAN2_TINY, timeout=600))  # stops mid-cycle
    out = ok(train(split, world, *sets, "run.total_iters=16", config=STYLEGAN2_TINY, timeout=600))
    assert "resumed from" in out and "step-00000010" in out
    a, b = final_state(straight), final_state(split)
    assert a["trainer.pt/pl_mean"] > 0  # the path-length penalty ran and its mean was checkpointed
    assert_identical(a, b)
    assert torch.equal(a["trainer.pt/iteration"], torch.tensor(16))
    if augment:  # p was adjusted (from 0.5) and checkpointed
        assert a["trainer.pt/augment_p"] != 0.5
