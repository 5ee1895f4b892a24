"""StyleGAN2 through the real entry point: exact resume mid-cycle with style mixing, random noise injection, lazy R1
and path length (its running mean included), on 1 and 2 ranks."""

from __future__ import annotations

import pytest
import torch
from runs import MID_CYCLE, STYLEGAN2_TINY, assert_identical, final_state, ok, train


@pytest.mark.parametrize("world,stage", [(1, 0), (2, 2)])  # ZeRO-3: test_stylegan2_engines.py
def test_stylegan2_resume_mid_cycle_is_bit_exact(tmp_path, world, stage):
    sets = [
        *MID_CYCLE,
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
