"""Evaluation of a run: the extractor its config names, cached real-data statistics, and the metrics.

Shared by `dsgan eval` (one process) and periodic evaluation during training (every rank calls it).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from dsgan.config import Config, DigitsData
from dsgan.eval.features import DigitsFeatures, FeatureExtractor, build_extractor, reference_key
from dsgan.eval.fid import ReferenceStats, dataset_statistics, evaluate_generator, load_or_compute_reference


def make_extractor(cfg: Config, device: torch.device) -> FeatureExtractor:
    return build_extractor(cfg.eval.features, cfg.eval.inception_weights, cfg.generator.model.output_scale, device)


def reference(
    cfg: Config, extractor: FeatureExtractor, run_dir: Path, rank: int, world_size: int, device: torch.device
) -> ReferenceStats:
    """Real-data statistics, computed once (each rank a disjoint shard) and cached as an .npz whose key pins the
    extractor weights, preprocessing and dataset."""
    from dsgan.data import build_dataset

    g = cfg.generator.model
    if isinstance(extractor, DigitsFeatures):
        compute, identity = extractor.reference_statistics, ("digits", str(g.output_scale))
    else:
        dataset = build_dataset(cfg.data, g.output_scale, g.out_channels, g.num_classes)
        shard = Subset(dataset, range(rank, len(dataset), world_size))
        loader = DataLoader(shard, batch_size=cfg.eval.batch_size, num_workers=getattr(cfg.data, "num_workers", 0))
        identity = (dataset.description,) if not isinstance(cfg.data, DigitsData) else ("digits",)
        compute = lambda: dataset_statistics(extractor, loader, device)  # noqa: E731
    path = cfg.eval.reference_stats or run_dir / "fid_reference.npz"
    return load_or_compute_reference(path, compute, reference_key(extractor, *identity))


def evaluate(
    cfg: Config,
    generator: nn.Module,
    extractor: FeatureExtractor,
    stats: ReferenceStats,
    rank: int,
    world_size: int,
    device: torch.device,
) -> dict[str, float]:
    """{'fid', and 'is_mean'/'is_std' with Inception}; with the digits extractor {'fd8'}: not an FID, and named
    so that no log or dashboard can mistake it for one."""
    metrics = evaluate_generator(
        generator, extractor, cfg.eval.num_samples, cfg.eval.batch_size, stats, cfg.run.seed, rank, world_size, device
    )
    if isinstance(extractor, DigitsFeatures):
        metrics["fd8"] = metrics.pop("fid")
    return metrics
