"""Evaluation of a run: the extractor its config names, cached real-data statistics, and the metrics.

Shared by `dsgan eval` (one process) and periodic evaluation during training (every rank calls it).
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import DataLoader, Subset

from dsgan.config import Config, DigitsData
from dsgan.distributed import DistEnv
from dsgan.eval.features import DigitsFeatures, build_extractor, reference_key
from dsgan.eval.fid import ReferenceStats, dataset_statistics, evaluate_generator, load_or_compute_reference
from dsgan.models import Generator


class Evaluator:
    """A run's feature extractor and real-data statistics, built once and reused at every evaluation. Every rank
    constructs and calls it (the statistics and the samples are computed in shards and gathered)."""

    def __init__(self, cfg: Config, run_dir: Path, env: DistEnv) -> None:
        self.cfg, self.env = cfg, env
        g = cfg.generator.model
        self.extractor = build_extractor(cfg.eval.features, cfg.eval.inception_weights, g.output_scale, env.device)
        self.stats = self._reference(run_dir)

    @property
    def name(self) -> str:
        return self.extractor.name

    def _reference(self, run_dir: Path) -> ReferenceStats:
        """Computed once (each rank a disjoint shard) and cached as an .npz whose key pins the extractor weights,
        preprocessing and dataset."""
        from dsgan.data import build_dataset

        cfg, extractor = self.cfg, self.extractor
        g = cfg.generator.model
        if isinstance(extractor, DigitsFeatures):
            identity: tuple[str, ...]
            compute, identity = extractor.reference_statistics, ("digits", str(g.output_scale))
        else:
            dataset = build_dataset(cfg.data, g.output_scale, g.out_channels, g.num_classes)
            shard = Subset(dataset, range(self.env.rank, len(dataset), self.env.world_size))
            workers = getattr(cfg.data, "num_workers", 0)
            loader = DataLoader(shard, batch_size=cfg.eval.batch_size, num_workers=workers)
            identity = (dataset.description,) if not isinstance(cfg.data, DigitsData) else ("digits",)
            compute = lambda: dataset_statistics(extractor, loader, self.env)  # noqa: E731
        path = cfg.eval.reference_stats or run_dir / "fid_reference.npz"
        return load_or_compute_reference(path, compute, reference_key(extractor, *identity), self.env)

    def __call__(self, generator: Generator) -> dict[str, float]:
        """{'fid', and 'is_mean'/'is_std' with Inception}; with the digits extractor {'fd8'}: not an FID, and named
        so that no log or dashboard can mistake it for one."""
        cfg = self.cfg
        metrics = evaluate_generator(
            generator,
            self.extractor,
            cfg.eval.num_samples,
            cfg.eval.batch_size,
            self.stats,
            cfg.run.seed,
            self.env,
        )
        if isinstance(self.extractor, DigitsFeatures):
            metrics["fd8"] = metrics.pop("fid")
        return metrics
