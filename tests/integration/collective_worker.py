"""Runs dsgan.train.main with torch.distributed's collectives wrapped to count the calls that dsgan itself makes
(DeepSpeed's own gradient collectives are called from deepspeed/ and are not counted).

    python collective_worker.py OUT.json -- <dsgan train arguments>
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

COLLECTIVES = (
    "all_reduce",
    "all_gather",
    "all_gather_into_tensor",
    "all_gather_object",
    "broadcast",
    "broadcast_object_list",
    "reduce",
    "reduce_scatter_tensor",
    "barrier",
    "gather",
    "scatter",
)
DSGAN = str(Path(__file__).resolve().parents[2] / "dsgan")


def main() -> None:
    out = Path(sys.argv[1])
    argv = sys.argv[sys.argv.index("--") + 1 :]
    counts: dict[str, int] = {}

    def wrap(name: str, fn):
        def counted(*args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(DSGAN):
                key = f"{Path(caller).stem}.{name}"
                counts[key] = counts.get(key, 0) + 1
            return fn(*args, **kwargs)

        return counted

    for name in COLLECTIVES:
        setattr(dist, name, wrap(name, getattr(dist, name)))
    from dsgan.train import main as train_main

    code = train_main(argv)
    if dist.get_rank() == 0:
        out.write_text(json.dumps(counts))
    sys.exit(code)


if __name__ == "__main__":
    main()
