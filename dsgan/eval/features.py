"""Feature extractors for FID-style metrics: the option list is the union ``FeatureExtractor``.

- ``InceptionFeatures``: the TF FID Inception (pool3 2048-d, 1008 logits). Numbers comparable with papers.
- ``DigitsFeatures``: for the embedded digits data only, no weights to download. Images are averaged down to the
  digits' native 8x8, grayscale, on the digits' 0..16 scale: 64-d pixel features ("FD8", *not* comparable with any
  published FID), plus the logits of a logistic regression fitted on the real digits.

Both map images [B, C, H, W] in [-1, 1] to (features [B, D], logits [B, K]) float32 on the images' device.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import torch

from dsgan.digits import DigitsFeatures
from dsgan.errors import ConfigError
from dsgan.eval.inception import FEATURE_DIM, PREPROCESSING_ID, FIDInceptionV3, load_inception


class InceptionFeatures:
    """The TF FID Inception loaded from ``weights_path`` (see ``dsgan.eval.inception``)."""

    name = "tf-inception-2015-12-05/pool3"
    feature_dim = FEATURE_DIM
    reports_inception_score = True

    def __init__(self, weights_path: str | Path, device: torch.device | str = "cpu") -> None:
        self.weights_path = Path(weights_path)
        self.model: FIDInceptionV3 = load_inception(self.weights_path, device)
        self.preprocessing_id = PREPROCESSING_ID
        self.weights_sha256 = self.model.weights_sha256

    def to(self, device: torch.device | str) -> InceptionFeatures:
        self.model.to(device)
        return self

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(self.model.parameters()).device
        # cuDNN may use TF32 for fp32 convolutions on Ampere+ (PyTorch's default): ~1e-3 relative error per layer,
        # enough to move FID in the first decimal. Scoped off here, restored on exit.
        cudnn = torch.backends.cudnn
        # Keywords: the third positional parameter of cudnn.flags is benchmark_limit, not deterministic.
        with cudnn.flags(
            enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic, allow_tf32=False
        ):
            features, logits = self.model(images.to(device))
        return features.to(images.device), logits.to(images.device)


FeatureExtractor = InceptionFeatures | DigitsFeatures


def build_extractor(
    features: Literal["inception", "digits"],
    inception_weights: str | Path | None = None,
    resolution: int = 32,
    device: torch.device | str = "cpu",
) -> FeatureExtractor:
    """The extractor named by ``eval.features``; ``resolution`` is the generator's output scale."""
    match features:
        case "inception":
            if inception_weights is None:
                raise ConfigError("eval.features='inception' needs eval.inception_weights (a local file)")
            return InceptionFeatures(inception_weights, device)
        case "digits":
            return DigitsFeatures(resolution)
    raise ValueError(f"unknown feature extractor {features!r}")


def reference_key(extractor: FeatureExtractor, *dataset_identity: str) -> str:
    """Cache key for reference statistics: sha256 of (weights sha256, preprocessing id, extractor name, dataset).

    ``dataset_identity``: strings that pin the real data (root, resolution, image count) so that statistics of
    another dataset are not reused from a stale file.
    """
    parts = [extractor.weights_sha256, extractor.preprocessing_id, extractor.name, *dataset_identity]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()
