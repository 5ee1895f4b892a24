"""A generator's metrics (FID, IS, KID, precision/recall, density/coverage) from one pass of features: cached
reference statistics and data-parallel sample generation.

The sample set depends only on (seed, num_samples), never on the world size: sample i's noise comes from its own
RNG seeded by (seed, i) and its label is i mod num_classes; rank r generates the samples i with
i % world_size == r, and the gathered features are put back in sample order. So a 1-GPU and an 8-GPU evaluation
of the same checkpoint score the same images (the Inception Score splits and KID's subsets included). Real images
are sharded and put back in dataset order the same way.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from dsgan.atomic import write_atomic
from dsgan.distributed import DistEnv, broadcast_object
from dsgan.errors import ConfigError
from dsgan.eval.metrics import (
    feature_statistics,
    frechet_distance,
    gather_features,
    inception_score,
    kernel_inception_distance,
    manifold_metrics,
    per_class_frechet_distance,
    reference_radii,
)
from dsgan.samples import generate

if TYPE_CHECKING:
    from dsgan.eval.features import FeatureExtractor
    from dsgan.models import Generator

log = logging.getLogger("dsgan.eval")

IS_SPLITS = 10
PROGRESS_EVERY_SECONDS = 30.0
"""A long pass of features (50k samples, a large dataset) logs a line with its rate and ETA this often."""
FEATURE_METRICS = frozenset({"kid", "pr", "dc", "ifid"})
"""Metrics that need the reference features themselves, not only their mean and covariance."""
PUBLISHED = "published"
"""The key of a statistics file holding only ``mu`` and ``sigma`` (pytorch-fid's ``--save-stats``, NVlabs' .npz)."""


@dataclass(frozen=True)
class ReferenceStats:
    """Feature mean/covariance of the real data (float64), how many images, the cache key they belong to, and, when
    a metric needs them (KID, precision/recall, density/coverage, per-class FID), the features themselves (float32
    [count, D], dataset order), their labels and their k-NN radii (``reference_radii``). A published file has key
    ``PUBLISHED``, no count, no features."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int | None
    key: str
    features: np.ndarray | None = None
    pr_radius: np.ndarray | None = None
    dc_radius: np.ndarray | None = None
    labels: np.ndarray | None = None

    @classmethod
    def of(
        cls,
        features: torch.Tensor | np.ndarray,
        labels: torch.Tensor | np.ndarray | None,
        key: str,
        keep_features: bool,
        device: torch.device | str = "cpu",
    ) -> ReferenceStats:
        mu, sigma = feature_statistics(features)
        if not keep_features:
            return cls(mu, sigma, len(features), key)
        kept = torch.as_tensor(features).float().cpu()
        pr_radius, dc_radius = (r.cpu().numpy() for r in reference_radii(kept.to(device)))
        kept_labels = None if labels is None else torch.as_tensor(labels).long().cpu().numpy()
        return cls(mu, sigma, len(features), key, kept.numpy(), pr_radius, dc_radius, kept_labels)


def read_reference(path: Path) -> ReferenceStats | None:
    """The cached statistics, a published ``mu``/``sigma`` file (key ``PUBLISHED``), or None if the file is absent
    or unreadable (a torn or foreign file is recomputed). Never unpickles."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            if "key" not in f:
                return ReferenceStats(f["mu"], f["sigma"], None, PUBLISHED)
            kept = [f.get(name) for name in ("features", "pr_radius", "dc_radius", "labels")]
            return ReferenceStats(f["mu"], f["sigma"], int(f["count"]), str(f["key"]), *kept)
    except Exception as e:  # any unreadable cache is simply stale
        warnings.warn(f"ignoring unreadable reference statistics {path}: {e}", stacklevel=2)
        return None


def write_reference(path: Path, stats: ReferenceStats) -> None:
    assert stats.count is not None, "published statistics are read, never written"
    arrays: dict[str, np.ndarray] = {"mu": stats.mu, "sigma": stats.sigma}
    arrays.update(count=np.asarray(stats.count, np.int64), key=np.asarray(stats.key))
    for name in ("features", "pr_radius", "dc_radius", "labels"):
        if (value := getattr(stats, name)) is not None:
            arrays[name] = value

    def write(f: Path) -> None:
        with f.open("wb") as out:  # a file object: np.savez would add ".npz" to the temporary name
            np.savez(out, allow_pickle=False, **arrays)

    write_atomic(path, write)


def load_or_compute_reference(
    path: str | Path,
    compute_features: Callable[[], tuple[torch.Tensor | np.ndarray, torch.Tensor | np.ndarray | None]],
    key: str,
    env: DistEnv,
    keep_features: bool = False,
) -> ReferenceStats:
    """Reference statistics from ``path`` if its key matches ``key`` (and it holds the features, when
    ``keep_features``); else from ``compute_features() -> (features [N, D], labels [N] or None)``, written back
    atomically.

    A published file (``mu`` and ``sigma`` only) is used as it is, with a warning, and never overwritten; asking it
    for features is a ConfigError. Under a process group every rank must call this: rank 0 alone reads and writes
    the file (no shared filesystem is assumed) and broadcasts its decision and result; ``compute_features`` runs on
    every rank, so it may use collectives (e.g. ``dataset_features``).
    """
    path = Path(path)
    cached = read_reference(path) if env.is_main else None
    if (
        cached is not None
        and cached.key != PUBLISHED
        and (cached.key != key or (keep_features and cached.features is None))
    ):
        cached = None  # stale, or without the features asked for
    cached = broadcast_object(cached, env)
    if cached is not None and cached.key == PUBLISHED:
        if keep_features:  # on every rank: no rank is left waiting in a collective
            raise ConfigError(
                f"{path} holds only mu and sigma (a published statistics file): KID, precision/recall, "
                "density/coverage and per-class FID need the reference features. Evaluate only fid/is with it, or "
                "point eval.reference_stats at a new path to compute the statistics from the data"
            )
        if env.is_main:
            warnings.warn(
                f"{path}: published statistics (mu and sigma only), used as the FID reference as they are. Their "
                "preprocessing (resize, crop, flips, image count) is yours to match: dsgan cannot check it",
                stacklevel=2,
            )
    if cached is not None:
        return cached
    features, labels = compute_features()  # on every rank: it may use collectives
    stats = ReferenceStats.of(features, labels, key, keep_features, env.device) if env.is_main else None
    stats = broadcast_object(stats, env)
    assert stats is not None  # rank 0's
    if env.is_main:
        write_reference(path, stats)
    return stats


class _Progress:
    """Rank 0 logs how far a pass over ``total`` images is, at most every ``PROGRESS_EVERY_SECONDS``: a short
    evaluation logs nothing; a 50k-sample one says when it will end."""

    def __init__(self, what: str, total: int, env: DistEnv) -> None:
        self.what, self.total, self.env = what, total, env
        self.start_s = self.last_s = time.monotonic()

    def update(self, local_done: int) -> None:
        now = time.monotonic()
        if not self.env.is_main or now - self.last_s < PROGRESS_EVERY_SECONDS:
            return
        self.last_s = now
        done = min(local_done * self.env.world_size, self.total)  # rank 0's shard is as large as any
        rate = done / (now - self.start_s)
        eta = round((self.total - done) / rate) if rate > 0 else 0
        log.info(
            "%s: %d/%d images (%.0f%%), %.0f images/s, ETA %d:%02d:%02d",
            self.what,
            done,
            self.total,
            100 * done / self.total,
            rate,
            eta // 3600,
            eta // 60 % 60,
            eta % 60,
        )


def _index_order(local: torch.Tensor, total: int, env: DistEnv) -> torch.Tensor:
    """Gather rows held as rank r's items r, r + W, r + 2W, ... back into item order 0..total-1 on every rank."""
    world_size = env.world_size
    order = torch.tensor([i for r in range(world_size) for i in range(r, total, world_size)])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(total)
    return gather_features(local, env).cpu()[inverse]


def dataset_features(
    extractor: FeatureExtractor, batches: Iterable[torch.Tensor | Sequence[torch.Tensor]], total: int, env: DistEnv
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Features [total, D] of the real images and their labels (None for bare image batches), in dataset order on
    every rank. ``batches`` ([B, C, H, W] in [-1, 1], or (images, labels) pairs) are this rank's shard: items rank,
    rank + W, ... of ``total`` (so the result, and a cap such as precision/recall's first 200k, do not depend on the
    world size)."""
    parts, labels, done, progress = [], [], 0, _Progress("reference features", total, env)
    for batch in batches:
        images = batch if isinstance(batch, torch.Tensor) else batch[0]
        parts.append(extractor(images.to(env.device))[0].cpu())
        if not isinstance(batch, torch.Tensor):
            labels.append(torch.as_tensor(batch[1]).long().cpu())
        done += len(images)
        progress.update(done)
    features = _index_order(torch.cat(parts), total, env)
    return features, _index_order(torch.cat(labels), total, env) if len(labels) == len(parts) else None


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
    metrics: Collection[str] = ("fid", "is"),
) -> dict[str, float]:
    """The ``metrics`` of ``num_samples`` generated images, all from one pass of features: "fid" -> {"fid"},
    "is" -> {"is_mean", "is_std"} (Inception extractor only), "kid" -> {"kid"}, "pr" -> {"precision", "recall"},
    "dc" -> {"density", "coverage"}, "ifid" -> {"ifid"} (per-class FID of a conditional generator).

    Every rank must call this (features are gathered) and every rank gets the same result. ``batch_size`` is per
    rank; ``seed`` also draws KID's subsets. With ``DigitsFeatures`` "fid" is FD8 in the digits' pixel space, not an
    Inception FID.
    """
    rank, world_size = env.rank, env.world_size
    if num_samples < max(2, world_size):
        raise ValueError(f"eval.num_samples={num_samples} must be at least max(2, world_size={world_size})")
    local = list(range(rank, num_samples, world_size))
    features, logits = [], []
    progress = _Progress("evaluation samples", num_samples, env)
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
            progress.update(start + len(chunk))
    all_features = _index_order(torch.cat(features), num_samples, env)
    wants_is = "is" in metrics and extractor.reports_inception_score
    all_logits = _index_order(torch.cat(logits), num_samples, env) if wants_is else None
    # Rank 0 alone does the metric arithmetic and broadcasts the numbers: with every rank of a node running
    # 2048x2048 decompositions, their all-core BLAS pools compete and spin (one FID took 64 s instead of 6 s when its
    # BLAS threads competed with one other busy process on 2 cores).
    labels = sample_labels(range(num_samples), generator.num_classes)
    result = (
        _metrics(all_features, all_logits, labels, reference_stats, metrics, seed, env.device) if env.is_main else {}
    )
    return broadcast_object(result, env)


def _metrics(
    features: torch.Tensor,
    logits: torch.Tensor | None,
    labels: torch.Tensor | None,
    reference: ReferenceStats,
    metrics: Collection[str],
    seed: int,
    device: torch.device,
) -> dict[str, float]:
    result = {}
    if "fid" in metrics:
        mu, sigma = feature_statistics(features)
        result["fid"] = frechet_distance(mu, sigma, reference.mu, reference.sigma, device)
    if logits is not None:
        result["is_mean"], result["is_std"] = inception_score(logits, splits=min(IS_SPLITS, len(logits)))
    if FEATURE_METRICS & set(metrics):
        assert reference.features is not None, "load_or_compute_reference(keep_features=True) keeps them"
        gen, real = features.to(device), torch.from_numpy(reference.features).to(device)
        if "kid" in metrics:
            result["kid"] = kernel_inception_distance(gen, real, seed)
        if "pr" in metrics or "dc" in metrics:
            radii = None
            if reference.pr_radius is not None and reference.dc_radius is not None:
                radii = torch.from_numpy(reference.pr_radius), torch.from_numpy(reference.dc_radius)
            result.update(manifold_metrics(gen, real, "pr" in metrics, "dc" in metrics, radii))
        if "ifid" in metrics:
            assert labels is not None and reference.labels is not None, "a conditional generator and dataset"
            result["ifid"] = per_class_frechet_distance(features, labels, reference.features, reference.labels, device)
    return result
