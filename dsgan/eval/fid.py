"""FID of a generator: cached reference statistics and data-parallel sample generation.

The sample set depends only on (seed, num_samples), never on the world size: sample i's noise comes from its own
RNG seeded by (seed, i) and its label is i mod num_classes; rank r generates the samples i with
i % world_size == r, and the gathered features are put back in sample order. So a 1-GPU and an 8-GPU evaluation
of the same checkpoint score the same images (the Inception Score splits included).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from dsgan.atomic import write_atomic
from dsgan.distributed import DistEnv, broadcast_object
from dsgan.eval.metrics import feature_statistics, frechet_distance, gather_features, inception_score
from dsgan.samples import generate

if TYPE_CHECKING:
    from dsgan.eval.features import FeatureExtractor
    from dsgan.models import Generator

IS_SPLITS = 10


@dataclass(frozen=True)
class ReferenceStats:
    """Feature mean/covariance of the real data (float64), how many images, and the cache key they belong to."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int
    key: str


def read_reference(path: Path) -> ReferenceStats | None:
    """The cached statistics, or None if the file is absent or unreadable (a torn or foreign file is recomputed)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            return ReferenceStats(f["mu"], f["sigma"], int(f["count"]), str(f["key"]))
    except Exception as e:  # any unreadable cache is simply stale
        warnings.warn(f"ignoring unreadable reference statistics {path}: {e}", stacklevel=2)
        return None


def write_reference(path: Path, stats: ReferenceStats) -> None:
    def write(f: Path) -> None:
        with f.open("wb") as out:  # a file object: np.savez would add ".npz" to the temporary name
            np.savez(out, mu=stats.mu, sigma=stats.sigma, count=np.int64(stats.count), key=np.str_(stats.key))

    write_atomic(path, write)


def load_or_compute_reference(
    path: str | Path, compute_fn: Callable[[], tuple[np.ndarray, np.ndarray, int]], key: str, env: DistEnv
) -> ReferenceStats:
    """Reference statistics from ``path`` if its key matches ``key``; else ``compute_fn() -> (mu, sigma, count)``,
    written back atomically.

    Under a process group every rank must call this: rank 0 alone reads and writes the file (no shared filesystem
    is assumed) and broadcasts its decision and result; ``compute_fn`` runs on every rank, so it may use
    collectives (e.g. ``dataset_statistics``).
    """
    path = Path(path)
    cached = read_reference(path) if env.is_main else None
    if cached is not None and cached.key != key:
        cached = None
    cached = broadcast_object(cached, env)
    if cached is not None:
        return cached
    mu, sigma, count = compute_fn()
    stats = broadcast_object(
        ReferenceStats(np.asarray(mu, np.float64), np.asarray(sigma, np.float64), int(count), key), env
    )
    if env.is_main:
        write_reference(path, stats)
    return stats


def dataset_statistics(
    extractor: FeatureExtractor, batches: Iterable[torch.Tensor | Sequence[torch.Tensor]], env: DistEnv
) -> tuple[np.ndarray, np.ndarray, int]:
    """(mu, sigma, count) of the real images in ``batches`` ([B, C, H, W] in [-1, 1], or (images, labels) pairs),
    gathered over ranks. Each rank must iterate a disjoint shard: a sampler that pads the last batch with
    repeated images counts those twice."""
    parts = []
    for batch in batches:
        images = batch if isinstance(batch, torch.Tensor) else batch[0]
        parts.append(extractor(images.to(env.device))[0])
    features = gather_features(torch.cat(parts), env)
    mu, sigma = feature_statistics(features)
    return mu, sigma, features.shape[0]


def sample_noise(indices: Sequence[int], seed: int, noise_size: int) -> torch.Tensor:
    """Noise [len(indices), noise_size] on the CPU; row j depends only on (seed, indices[j])."""
    rows = []
    for i in indices:
        state = np.random.SeedSequence([seed % 2**64, i]).generate_state(2, np.uint32)
        rng = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
        rows.append(torch.randn(noise_size, generator=rng))
    return torch.stack(rows)


def sample_labels(indices: Sequence[int], num_classes: int) -> torch.Tensor | None:
    """Label of sample i: i mod num_classes (balanced classes, independent of the split); None if unconditional."""
    if num_classes == 0:
        return None
    return torch.tensor([i % num_classes for i in indices], dtype=torch.long)


def evaluate_generator(
    generator: Generator,
    extractor: FeatureExtractor,
    num_samples: int,
    batch_size: int,
    reference_stats: ReferenceStats,
    seed: int,
    env: DistEnv,
) -> dict[str, float]:
    """{"fid"} (and {"is_mean", "is_std"} for the Inception extractor) of ``num_samples`` generated images.

    Every rank must call this (features are gathered) and every rank gets the same result. ``batch_size`` is per
    rank. With ``DigitsFeatures`` "fid" is FD8 in the digits' pixel space, not an Inception FID.
    """
    rank, world_size = env.rank, env.world_size
    if num_samples < max(2, world_size):
        raise ValueError(f"eval.num_samples={num_samples} must be at least max(2, world_size={world_size})")
    local = list(range(rank, num_samples, world_size))
    features, logits = [], []
    # The same number of forwards on every rank, although the shards differ by up to one sample: a ZeRO-3
    # generator gathers its parameters collectively in every forward. A rank short of a batch runs one on
    # sample 0 and drops it.
    for start in range(0, -(-num_samples // world_size), batch_size):  # the largest shard
        chunk = local[start : start + batch_size] or [0]
        z, y = sample_noise(chunk, seed, generator.noise_size), sample_labels(chunk, generator.num_classes)
        images = generate(generator, z, y, env.device)
        if start < len(local):
            f, lg = extractor(images)
            features.append(f)
            logits.append(lg)
    # Gathered rows are rank 0's samples, then rank 1's, ...: put them back in sample order.
    order = torch.tensor([i for r in range(world_size) for i in range(r, num_samples, world_size)])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(num_samples)
    all_features = gather_features(torch.cat(features), env).cpu()[inverse]
    all_logits = gather_features(torch.cat(logits), env).cpu()[inverse] if extractor.reports_inception_score else None
    # Rank 0 alone does the float64 linear algebra and broadcasts the numbers: with every rank of a node running
    # 2048x2048 decompositions, their all-core BLAS pools compete and spin (one FID took 64 s instead of 6 s when its
    # BLAS threads competed with one other busy process on 2 cores).
    result = _metrics(all_features, all_logits, reference_stats) if env.is_main else {}
    return broadcast_object(result, env)


def _metrics(features: torch.Tensor, logits: torch.Tensor | None, reference: ReferenceStats) -> dict[str, float]:
    mu, sigma = feature_statistics(features)
    result = {"fid": frechet_distance(mu, sigma, reference.mu, reference.sigma)}
    if logits is not None:
        result["is_mean"], result["is_std"] = inception_score(logits, splits=min(IS_SPLITS, len(logits)))
    return result
