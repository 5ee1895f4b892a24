"""Two gloo ranks read one epoch of the digits through `make_loader`: together they see every image exactly once,
in the order a single process with the same global batch would."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from launch import free_port

from dsgan.config import DigitsData
from dsgan.data import StreamSampler, TensorImages, build_dataset, make_loader

BATCH_PER_RANK = 64  # G = 128 does not divide 1797: the last batch of the epoch spills into epoch 1
WORLD_SIZE = 2
SEED = 11


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        digits = build_dataset(DigitsData(), 8, 1, 10)
        # The real digits with each label replaced by its index, so a batch says which images it holds.
        indexed = TensorImages(digits.images, torch.arange(len(digits)), digits.description)
        sampler = StreamSampler(len(indexed), BATCH_PER_RANK, dist.get_rank(), dist.get_world_size(), SEED)
        batches = iter(make_loader(indexed, sampler, BATCH_PER_RANK, num_workers=2, pin_memory=True))
        seen: list[int] = []
        for _ in range(-(-len(indexed) // (BATCH_PER_RANK * WORLD_SIZE))):
            images, index = next(batches)
            assert torch.equal(images, digits.images[index])
            seen += index.tolist()
        gathered: list[list[int] | None] = [None] * WORLD_SIZE
        dist.all_gather_object(gathered, seen)
        if rank == 0:
            (Path(out_dir) / "indices.json").write_text(json.dumps(gathered))
    finally:
        dist.destroy_process_group()


def test_two_ranks_read_each_image_once_per_epoch(tmp_path):
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    per_rank = json.loads((tmp_path / "indices.json").read_text())
    batches = -(-1797 // (BATCH_PER_RANK * WORLD_SIZE))
    assert [len(seen) for seen in per_rank] == [batches * BATCH_PER_RANK] * WORLD_SIZE
    stream = [
        i for k in range(batches) for seen in per_rank for i in seen[k * BATCH_PER_RANK : (k + 1) * BATCH_PER_RANK]
    ]
    assert sorted(stream[:1797]) == list(range(1797))
    assert len(set(stream[1797:])) == len(stream) - 1797  # the spill into epoch 1 repeats nothing within it
    single = StreamSampler(1797, BATCH_PER_RANK * WORLD_SIZE, 0, 1, SEED)
    assert stream == [i for k in range(batches) for i in single.batch_indices(k)]
