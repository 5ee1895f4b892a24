"""`dsgan.train` with one fault injected from outside the library, for the tests that need a rank to misbehave:

    python tests/integration/fault_worker.py skip-d-microstep=RANK:UPDATE <dsgan train arguments>
    python tests/integration/fault_worker.py slow-checkpoint=SECONDS     <dsgan train arguments>
    python tests/integration/fault_worker.py augment-p=RANK:P            <dsgan train arguments>

skip-d-microstep: that rank skips the first micro-step of D update UPDATE (its engine counters fall behind the others').
slow-checkpoint: rank 0 waits before sealing each checkpoint (widens the window in which a kill lands mid-save).
augment-p: that rank starts with ADA's p = P instead of the value every other rank has.
"""

from __future__ import annotations

import os
import sys
import time

import torch

from dsgan import checkpoint, train
from dsgan.engines import Update
from dsgan.steps import D_STATS


def main() -> None:
    fault, argv = sys.argv[1], sys.argv[2:]
    kind, _, arg = fault.partition("=")
    if kind == "skip-d-microstep":
        rank, skipped = (int(x) for x in arg.split(":"))
        real_d_step = train.d_step

        done: list[bool] = []

        def d_step(engines, loss_cfg, real, labels, z, fake_y, d_update, *args):
            if int(os.environ.get("RANK", 0)) == rank and d_update == skipped and not done:
                done.append(True)  # only the first micro-step of that update
                return torch.zeros(len(D_STATS), device=real.device), Update(False, None)
            return real_d_step(engines, loss_cfg, real, labels, z, fake_y, d_update, *args)

        train.d_step = d_step
    elif kind == "slow-checkpoint":
        real_seal = checkpoint._seal

        def seal(*args, **kwargs):
            time.sleep(float(arg))
            return real_seal(*args, **kwargs)

        checkpoint._seal = seal
    elif kind == "augment-p":
        rank, p = arg.split(":")
        real_build = train.build

        def build(*args, **kwargs):
            run = real_build(*args, **kwargs)
            if run.env.rank == int(rank):
                run.augment.p = float(p)
            return run

        train.build = build
    else:
        raise SystemExit(f"unknown fault {fault!r}")
    train.exit_process(train.main(argv))


if __name__ == "__main__":
    main()
