"""Two gloo ranks evaluate the same sample set as one process: same FD8/FID, IS splits, KID, precision/recall,
density/coverage, the same reference features in dataset order, the same reference cache."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from inception_weights import random_inception_weights
from launch import launch
from PIL import Image
from runs import TINY, ok
from tiny import TinyGenerator

from dsgan.config import load_config
from dsgan.digits import DigitsFeatures, digits_pixels, digits_tensors
from dsgan.distributed import DistEnv
from dsgan.eval.fid import (
    ReferenceStats,
    dataset_features,
    evaluate_generator,
    load_or_compute_reference,
    read_reference,
)
from dsgan.eval.metrics import gather_features
from dsgan.eval.run import Evaluator

NUM_SAMPLES = 101  # odd: the ranks hold 51 and 50 samples, so the gather pads


class ProjectionFeatures:
    """Digits pixels plus fixed random logits, standing in for Inception so that IS (order-sensitive) is covered."""

    name = "test-projection"
    preprocessing_id = "digits-pixels"
    weights_sha256 = ""
    reports_inception_score = True

    def __init__(self) -> None:
        self.weight = torch.randn(64, 20, generator=torch.Generator().manual_seed(0)) / 8

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = digits_pixels(images)
        return features, features @ self.weight


def _reference() -> ReferenceStats:
    return ReferenceStats.of(*DigitsFeatures(16).reference_features(), "digits", keep_features=True)


def _evaluate(env: DistEnv) -> dict[str, float]:
    generator = TinyGenerator().train()
    ref = _reference()
    results = {}
    every = ("fid", "is", "kid", "pr", "dc", "ifid")
    for name, extractor in (("digits", DigitsFeatures(16)), ("projection", ProjectionFeatures())):
        out = evaluate_generator(generator, extractor, NUM_SAMPLES, 16, ref, 5, env, every)
        results.update({f"{name}_{k}": v for k, v in out.items()})
    assert generator.training
    # Real images sharded as Evaluator shards them (items rank, rank + W, ...; 13: unequal shards), in batches.
    images = digits_tensors(16, 3)[0][:13]
    shard = [images[i : i + 1] for i in range(env.rank, 13, env.world_size)]
    results["reference_features"] = dataset_features(DigitsFeatures(16), shard, 13, env)[0].tolist()
    return results


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    env = DistEnv(rank=rank, local_rank=rank, world_size=world_size, device=torch.device("cpu"))
    try:
        results = _evaluate(env)
        gathered = gather_features(torch.full((rank + 2, 3), float(rank)), env)
        results["gathered"] = gathered[:, 0].tolist()

        calls = []

        def compute():
            calls.append(1)
            return np.full((7, 2), rank, np.float64) + np.eye(7, 2), None

        cache = Path(out_dir) / "ref.npz"
        first = load_or_compute_reference(cache, compute, "k", env)
        second = load_or_compute_reference(cache, compute, "k", env)
        results["cache_calls"] = len(calls)
        results["cache_mu"] = [first.mu.tolist(), second.mu.tolist()]
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_match_one_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    single = _evaluate(DistEnv.single())
    for results in ranks:
        for key, value in single.items():
            exact = key == "reference_features"  # the same tensors, gathered in dataset order
            assert results[key] == (value if exact else pytest.approx(value, rel=1e-6)), key
        assert results["gathered"] == [0.0, 0.0, 1.0, 1.0, 1.0]  # rank order, unequal sizes
        # Rank 0 computed and wrote the cache, then everyone reused it; all ranks hold rank 0's numbers.
        assert results["cache_calls"] == 1
        assert results["cache_mu"] == [[1 / 7, 1 / 7], [1 / 7, 1 / 7]]
    assert {"digits_fid", "projection_fid", "projection_is_mean", "projection_is_std"} <= set(single)
    assert {f"digits_{k}" for k in ("kid", "precision", "recall", "density", "coverage", "ifid")} <= set(single)
    assert single["reference_features"] == DigitsFeatures(16)(digits_tensors(16, 3)[0][:13])[0].tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0.json", "rank1.json", "ref.npz"]


def test_reference_stats_command_on_two_ranks_equals_one_process(tmp_path):
    """`dsgan eval --reference-stats` launched on 2 ranks (an image folder, Inception with random weights): the
    cached file holds one process's statistics and features, in dataset order."""
    rng = np.random.default_rng(0)
    for i in range(11):  # 10 classes, 11 images: the ranks read 6 and 5
        folder = tmp_path / "data" / f"c{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    random_inception_weights(tmp_path / "inception.pth")
    sets = [
        f"data={{type: image_folder, root: {tmp_path / 'data'}, num_workers: 0}}",
        "eval.features=inception",
        f"eval.inception_weights={tmp_path / 'inception.pth'}",
        "eval.metrics=[fid, pr]",
        "eval.batch_size=4",
    ]
    args = ["-m", "dsgan.cli", "eval", "--reference-stats", "--config", TINY]
    for s in [*sets, f"run.dir={tmp_path / 'two'}"]:
        args += ["--set", s]
    out = ok(launch(args, world_size=2))
    assert "11 images" in out and "on 2 rank(s)" in out
    two = read_reference(tmp_path / "two" / "fid_reference.npz")
    one = Evaluator(load_config(TINY, [*sets, f"run.dir={tmp_path / 'one'}"]), tmp_path / "one", DistEnv.single())
    assert two.key == one.stats.key and two.count == one.stats.count == 11
    np.testing.assert_allclose(two.features, one.stats.features, rtol=1e-5, atol=1e-6)
    # Features agree to float32 round-off (batches of other sizes); the covariance's near-zero entries inherit it
    # in absolute terms, so they are compared on the covariance's own scale.
    np.testing.assert_allclose(two.sigma, one.stats.sigma, rtol=1e-5, atol=1e-5 * np.abs(one.stats.sigma).max())
