"""The real entry point on a packed dataset (made by `dsgan prepare-data` from an NVlabs zip) with `data.xflip`:
a run stopped mid-epoch and resumed ends bit-identical to an uninterrupted one, on 1 and 2 ranks. (Measured on 2 shared,
heavily loaded cores: 1 rank 42 s; 2 ranks 87 s, so `slow`.)"""

from __future__ import annotations

import pytest
from images import dataset_tool_zip, noise_folder
from runs import ok, train
from test_train import MID_CYCLE, assert_identical, final_state

from dsgan.cli import main as cli_main


@pytest.mark.parametrize("world", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_xflip_run_stopped_mid_epoch_resumes_bit_exact(tmp_path, world):
    # 12 images; 8 per rank per iteration: the stop at iteration 10 is at stream position 80 (1 rank) or 160
    # (2 ranks), inside the 7th or 14th epoch, and each epoch draws new flips.
    zipped = dataset_tool_zip(noise_folder(tmp_path / "src", per_class=6), tmp_path / "d.zip")
    assert (
        cli_main(["prepare-data", str(zipped), str(tmp_path / "packed"), "--resolution", "16", "--workers", "1"]) == 0
    )
    sets = [
        *MID_CYCLE,
        "data.type=packed",
        f"data.root={tmp_path / 'packed'}",
        "data.xflip=true",
        "data.num_workers=1",
        "generator.model.num_classes=2",
        "discriminator.model.num_classes=2",
    ]
    straight, split = tmp_path / "straight", tmp_path / "split"
    ok(train(straight, world, *sets, "run.total_iters=16"))
    ok(train(split, world, *sets, "run.total_iters=10"))  # 10 = 2.5 D/G cycles, mid-epoch
    out = ok(train(split, world, *sets, "run.total_iters=16"))
    assert "resumed from" in out and "step-00000010" in out and "packed dataset" in out
    assert_identical(final_state(straight), final_state(split))
