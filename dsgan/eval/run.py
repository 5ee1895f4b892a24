"""Evaluation of a run: the extractor its config names, cached real-data statistics, the metrics, and the protocol
that says what the numbers are.

Shared by `dsgan eval` (one process, or `--reference-stats` on many) and periodic evaluation during training (every
rank calls it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from dsgan.config import Config, DigitsData
from dsgan.distributed import DistEnv
from dsgan.errors import ConfigError
from dsgan.eval.features import DigitsFeatures, build_extractor, reference_key
from dsgan.eval.fid import (
    FEATURE_METRICS,
    PUBLISHED,
    ReferenceStats,
    dataset_features,
    evaluate_generator,
    load_or_compute_reference,
)
from dsgan.models import Generator


class Evaluator:
    """A run's feature extractor and real-data statistics, built once and reused at every evaluation. Every rank
    constructs and calls it (the statistics and the samples are computed in shards and gathered)."""

    def __init__(self, cfg: Config, run_dir: Path, env: DistEnv) -> None:
        self.cfg, self.env = cfg, env
        g = cfg.generator.model
        self.extractor = build_extractor(cfg.eval.features, cfg.eval.inception_weights, g.output_scale, env.device)
        self.reference_path = cfg.eval.reference_stats or run_dir / "fid_reference.npz"
        self.reference_description = ""
        self.stats = self._reference()

    @property
    def name(self) -> str:
        return self.extractor.name

    def _reference(self) -> ReferenceStats:
        """Computed once (each rank a disjoint shard) and cached as an .npz whose key pins the extractor weights,
        preprocessing and dataset; the features too when a metric needs them."""
        from dsgan.data import build_dataset

        cfg, extractor = self.cfg, self.extractor
        g = cfg.generator.model
        compute: Callable[[], tuple[torch.Tensor | np.ndarray, torch.Tensor | np.ndarray | None]]
        identity: tuple[str, ...]
        if isinstance(extractor, DigitsFeatures):
            compute, identity = extractor.reference_features, ("digits", str(g.output_scale))
            self.reference_description = "the embedded digits (1797 images)"
        else:
            dataset = build_dataset(cfg.data, g.output_scale, g.out_channels, g.num_classes)
            shard = Subset(dataset, range(self.env.rank, len(dataset), self.env.world_size))
            workers = getattr(cfg.data, "num_workers", 0)
            loader = DataLoader(shard, batch_size=cfg.eval.batch_size, num_workers=workers)
            identity = (dataset.description,) if not isinstance(cfg.data, DigitsData) else ("digits",)
            compute = lambda: dataset_features(extractor, loader, len(dataset), self.env)  # noqa: E731
            self.reference_description = identity[0]
        keep_features = bool(FEATURE_METRICS & set(cfg.eval.metrics))
        key = reference_key(extractor, *identity)
        stats = load_or_compute_reference(self.reference_path, compute, key, self.env, keep_features)
        if stats.key == PUBLISHED:
            self.reference_description = f"published statistics {self.reference_path}"
            if stats.mu.shape != (extractor.feature_dim,):
                raise ConfigError(
                    f"eval.reference_stats={self.reference_path}: mu has shape {stats.mu.shape}, but "
                    f"{extractor.name} features are {extractor.feature_dim}-d: statistics of another network"
                )
        return stats

    def protocol(self, ema: bool) -> dict[str, object]:
        """What the numbers are: written beside every result (metrics.jsonl, `dsgan eval`'s output)."""
        cfg = self.cfg.eval
        return {
            "name": cfg.protocol_name,
            "metrics": [m for m in cfg.metrics if m != "is" or self.extractor.reports_inception_score],
            "num_samples": cfg.num_samples,
            "features": self.extractor.name,
            "preprocessing": self.extractor.preprocessing_id,
            "reference": self.reference_description,
            "reference_images": self.stats.count,
            "truncation": None,  # evaluation samples the untruncated prior
            "ema": ema,
            "seed": self.cfg.run.seed,
        }

    def __call__(self, generator: Generator) -> dict[str, float]:
        """The metrics of eval.metrics (see ``evaluate_generator``); with the digits extractor 'fid' is named 'fd8':
        not an FID, and named so that no log or dashboard can mistake it for one."""
        cfg = self.cfg
        metrics = evaluate_generator(
            generator,
            self.extractor,
            cfg.eval.num_samples,
            cfg.eval.batch_size,
            self.stats,
            cfg.run.seed,
            self.env,
            cfg.eval.metrics,
        )
        if isinstance(self.extractor, DigitsFeatures):
            return {("fd8" if k == "fid" else k): v for k, v in metrics.items()}
        return metrics
