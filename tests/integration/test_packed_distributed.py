"""Two gloo ranks read image_folder, packed and nvlabs_zip versions of one folder from a mid-epoch stream position,
xflip on: every rank gets the same tensors from all three, and together they read the single-process stream."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from images import dataset_tool_zip, noise_folder
from launch import free_port

from dsgan.config import ImageFolderData, NvlabsZipData, PackedData
from dsgan.data import StreamSampler, build_dataset, make_loader
from dsgan.prepare import prepare

BATCH_PER_RANK, WORLD_SIZE, SEED, START_IMAGE, BATCHES = 3, 2, 4, 7, 4  # 24 positions over 3 epochs of 10 images


def _worker(rank: int, port: int, root: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        base = Path(root)
        configs = [
            ImageFolderData(root=base / "src", xflip=True),
            PackedData(root=base / "packed", xflip=True),
            NvlabsZipData(path=base / "d.zip", xflip=True),
        ]
        reads = []
        for cfg in configs:
            dataset = build_dataset(cfg, 16, 3, 2)
            sampler = StreamSampler(len(dataset), BATCH_PER_RANK, rank, WORLD_SIZE, SEED, START_IMAGE, xflip=True)
            batches = iter(make_loader(dataset, sampler, BATCH_PER_RANK, num_workers=1, pin_memory=False))
            reads.append([next(batches) for _ in range(BATCHES)])
        for (images, labels), *others in zip(*reads, strict=True):
            assert all(torch.equal(images, i) and torch.equal(labels, label) for i, label in others)
        gathered: list[list[int] | None] = [None] * WORLD_SIZE
        dist.all_gather_object(gathered, [i for k in range(BATCHES) for i in sampler.batch_indices(k)])
        if rank == 0:
            (base / "indices.json").write_text(json.dumps(gathered))
    finally:
        dist.destroy_process_group()


def test_two_ranks_read_the_same_stream_through_every_data_type(tmp_path):
    src = noise_folder(tmp_path / "src")
    prepare(src, tmp_path / "packed", 16)
    dataset_tool_zip(src, tmp_path / "d.zip")
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    per_rank = json.loads((tmp_path / "indices.json").read_text())
    stream = [i for k in range(BATCHES) for seen in per_rank for i in seen[k * 3 : (k + 1) * 3]]
    single = StreamSampler(10, BATCH_PER_RANK * WORLD_SIZE, 0, 1, SEED, START_IMAGE, xflip=True)
    assert stream == [i for k in range(BATCHES) for i in single.batch_indices(k)]
    assert any(i >= 10 for i in stream) and any(i < 10 for i in stream)
