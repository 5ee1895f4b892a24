"""Feature extractors for FID-style metrics: the option list is the union ``FeatureExtractor``.

- ``InceptionFeatures``: the TF FID Inception (pool3 2048-d, 1008 logits). Numbers comparable with papers.
- ``DigitsFeatures``: for the embedded digits data only, no weights to download. Images are averaged down to the
  digits' native 8x8, grayscale, on the digits' 0..16 scale: 64-d pixel features ("FD8", *not* comparable with any
  published FID), plus the logits of a logistic regression fitted on the real digits.

Both map images [B, C, H, W] in [-1, 1] to (features [B, D], logits [B, K]) float32 on the images' device.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from dsgan.errors import ConfigError
from dsgan.eval.inception import PREPROCESSING_ID, FIDInceptionV3, load_inception
from dsgan.eval.metrics import feature_statistics

DIGITS_SIZE = 8
DIGITS_MAX = 16.0  # sklearn's digits are 4x4-block counts of an 32x32 bitmap: integers 0..16


class InceptionFeatures:
    """The TF FID Inception loaded from ``weights_path`` (see ``dsgan.eval.inception``)."""

    name = "tf-inception-2015-12-05/pool3"
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
        with cudnn.flags(cudnn.enabled, cudnn.benchmark, cudnn.deterministic, allow_tf32=False):
            features, logits = self.model(images.to(device))
        return features.to(images.device), logits.to(images.device)


@dataclass(frozen=True)
class DigitsReal:
    """The real digits as the trainer shows them to D, brought back to 8x8 (see ``digits_real``)."""

    features: np.ndarray  # [1797, 64] float64, 0..16
    labels: np.ndarray  # [1797] int64
    mu: np.ndarray = field(repr=False)
    sigma: np.ndarray = field(repr=False)


def digits_pixels(images: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] in [-1, 1] -> [B, 64] float32 in 0..16: grayscale (mean over channels), 8x8 block average
    (the inverse of an integer upsampling), then the digits' scale. Exact for nearest-upsampled digits."""
    if images.ndim != 4:
        raise ValueError(f"expected images [B, C, H, W], got shape {tuple(images.shape)}")
    x = images.float().clamp(-1, 1).mean(dim=1, keepdim=True)
    x = F.adaptive_avg_pool2d(x, DIGITS_SIZE).flatten(1)
    return (x + 1) * (DIGITS_MAX / 2)


@functools.cache
def digits_real(resolution: int) -> DigitsReal:
    """Real digits through the training data path (``dsgan.data.digits_tensors`` at ``resolution``) and back.

    The reference is what the generator is trained to reproduce, not sklearn's raw arrays: the data path upsamples
    bilinearly, which blurs; pooled back, the training images sit at FD8 ~150 from the raw arrays, so a perfect
    generator would look poor against them. Cached per process: it is deterministic and small.
    """
    from dsgan.data import digits_tensors

    images, labels = digits_tensors(resolution, 3)
    feats = digits_pixels(images).double().numpy()
    mu, sigma = feature_statistics(feats)
    return DigitsReal(feats, labels.numpy().astype(np.int64), mu, sigma)


@functools.cache
def digits_classifier(resolution: int):  # -> sklearn LogisticRegression
    """Multinomial logistic regression on the real digits' 64 pixels (scaled to 0..1), fitted once per process.

    lbfgs on a fixed dataset is deterministic; ~98% accuracy on the training digits, so a class-conditional
    generator whose samples it classifies as the requested label is drawing recognisable digits of that class.
    """
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    real = digits_real(resolution)
    # One BLAS thread: a 1797x64 fit gains nothing from threads, and beside torch's OpenMP pool the two BLAS pools
    # oversubscribe the cores (measured 7.5 s instead of 0.1 s on 2 cores).
    with threadpool_limits(1):
        return LogisticRegression(max_iter=5000).fit(real.features / DIGITS_MAX, real.labels)


class DigitsFeatures:
    """64-d pixel features ("FD8") and classifier logits for the embedded digits; no weights file.

    ``resolution`` is the generator's output size: the real reference is built through the same data path.
    """

    name = "digits-8x8-pixels (FD8; not comparable to FID)"
    reports_inception_score = False
    weights_sha256 = ""

    def __init__(self, resolution: int = 32) -> None:
        self.resolution = resolution
        self.preprocessing_id = (
            f"gray=mean;pool=avg,{DIGITS_SIZE}x{DIGITS_SIZE};scale=0..{DIGITS_MAX:g};"
            f"reference=dsgan.data.digits_tensors({resolution})"
        )

    def to(self, device: torch.device | str) -> DigitsFeatures:
        return self

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = digits_pixels(images)
        pixels = features.cpu().double().numpy() / DIGITS_MAX
        if np.isfinite(pixels).all():
            scores = digits_classifier(self.resolution).decision_function(pixels)
        else:  # a diverged generator: let the metrics report NaN rather than sklearn raise on NaN input
            scores = np.full((len(pixels), len(digits_classifier(self.resolution).classes_)), np.nan)
        logits = torch.from_numpy(scores).to(device=images.device, dtype=torch.float32)
        return features, logits

    def reference_statistics(self) -> tuple[np.ndarray, np.ndarray, int]:
        real = digits_real(self.resolution)
        return real.mu, real.sigma, len(real.features)


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
