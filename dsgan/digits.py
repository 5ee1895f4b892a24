"""Everything about the embedded default data, scikit-learn's 8x8 digits: the training tensors, the 8x8 pixel
features and classifier that evaluate a generator of them, and the quality check `dsgan eval --digits` prints.

The check draws one sample per real digits image (1797), with that image's label and fixed noise, and compares in
the digits' own 64-pixel space (``digits_pixels``):

- classifier accuracy: a logistic regression fitted on the real digits labels each sample; per class, the fraction
  classified as the label it was generated for (conditional generators only);
- FD8: the Frechet distance between the samples' and the real digits' 8x8 pixels. Not an Inception FID and not
  comparable with one; it is meaningful only next to its own scale, on sklearn's 0..16 arrays (which is also what
  the trainer shows D, pooled back: the data path replicates pixels): a random real half vs the other half ~16-20
  (``fd8_real_floor`` reports it next to every result), each sample = its class's mean image ~451.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from dsgan.eval.fid import sample_noise
from dsgan.eval.metrics import feature_statistics, frechet_distance
from dsgan.samples import generate

if TYPE_CHECKING:
    from dsgan.models import Generator

NUM_CLASSES = 10
DIGITS_SIZE = 8
DIGITS_MAX = 16.0  # sklearn's digits are 4x4-block counts of an 32x32 bitmap: integers 0..16


def digits_tensors(resolution: int, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits (values 0..16, shipped inside the package, no download) in [-1, 1], upscaled by
    pixel replication; grey is replicated to `channels`. Average-pooling back to 8x8 gives the original digits
    exactly, so FD8 (generated samples pooled to 8x8 vs the real digits) measures the generator alone. Bilinear
    upscaling would not round-trip: it alone puts the data ~150 FD8 away from the real digits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 8 - 1
    x = F.interpolate(x, size=(resolution, resolution), mode="nearest")
    return x.expand(-1, channels, -1, -1).contiguous(), torch.tensor(digits.target, dtype=torch.long)


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
    """Real digits through the training data path (``digits_tensors`` at ``resolution``) and back.

    The reference is what the generator is trained to reproduce. The data path upsamples by pixel replication, so
    pooled back these are sklearn's raw arrays exactly (tests/unit/test_data.py checks it). Cached per process: it
    is deterministic and small.
    """
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
    feature_dim = DIGITS_SIZE * DIGITS_SIZE
    reports_inception_score = False
    weights_sha256 = ""

    def __init__(self, resolution: int = 32) -> None:
        self.resolution = resolution
        self.preprocessing_id = (
            f"gray=mean;pool=avg,{DIGITS_SIZE}x{DIGITS_SIZE};scale=0..{DIGITS_MAX:g};"
            f"reference=dsgan.data.digits_tensors({resolution})"  # the cache key: unchanged since the move
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

    def reference_features(self) -> tuple[np.ndarray, np.ndarray]:
        """The real digits' features and labels, the reference of every metric."""
        real = digits_real(self.resolution)
        return real.features, real.labels


@dataclass(frozen=True)
class DigitsReport:
    accuracy_per_class: list[float] | None
    """Per digit 0..9, fraction of its samples classified as that digit; None for an unconditional generator."""
    mean_accuracy: float | None
    """Mean of ``accuracy_per_class`` (classes weighted equally)."""
    fd8: float
    """Frechet distance to the real digits in 8x8 pixel space (see the module docstring for its scale)."""
    fd8_real_floor: float
    """FD8 between two random halves of the real digits: what sampling noise alone gives."""
    predicted_fraction: list[float]
    """Per digit, fraction of all samples classified as it: a collapsed generator piles onto a few digits."""

    def format(self) -> str:
        acc = (
            "n/a (unconditional)"
            if self.accuracy_per_class is None
            else f"{self.mean_accuracy:.3f} ("
            + " ".join(f"{k}:{a:.2f}" for k, a in enumerate(self.accuracy_per_class))
            + ")"
        )
        mix = " ".join(f"{k}:{p:.2f}" for k, p in enumerate(self.predicted_fraction))
        return (
            f"digits check: FD8 {self.fd8:.1f} (real half vs half {self.fd8_real_floor:.1f}; 8x8 pixels, not an FID) "
            f"| classifier accuracy {acc} | predicted classes {mix}"
        )


def _real_floor(features: np.ndarray, seed: int) -> float:
    perm = np.random.default_rng(seed).permutation(len(features))
    half = len(features) // 2
    a, b = features[perm[:half]], features[perm[half:]]
    return frechet_distance(*feature_statistics(a), *feature_statistics(b))


def evaluate_digits(
    generator: Generator, device: torch.device | str, seed: int = 0, batch_size: int = 256
) -> DigitsReport:
    """Run the check on one process (1797 samples at 16..64 px take seconds)."""
    resolution = int(generator.output_scale)
    real = digits_real(resolution)
    labels = torch.from_numpy(real.labels)
    conditional = generator.num_classes > 0
    if conditional and generator.num_classes != NUM_CLASSES:
        raise ValueError(
            f"the digits check needs num_classes 0 or 10, got generator.num_classes={generator.num_classes}"
        )
    indices = list(range(len(labels)))
    parts = []
    for start in range(0, len(indices), batch_size):
        z = sample_noise(indices[start : start + batch_size], seed, generator.noise_size)
        y = labels[start : start + batch_size] if conditional else None
        parts.append(digits_pixels(generate(generator, z, y, device)).cpu())
    feats = torch.cat(parts).double().numpy()
    fd8 = frechet_distance(*feature_statistics(feats), real.mu, real.sigma)
    if np.isfinite(feats).all():
        predicted = digits_classifier(resolution).predict(feats / DIGITS_MAX)
    else:
        predicted = np.full(len(feats), -1)
    fraction = [float((predicted == k).mean()) for k in range(NUM_CLASSES)]
    per_class = mean = None
    if conditional:
        per_class = [float((predicted[real.labels == k] == k).mean()) for k in range(NUM_CLASSES)]
        mean = float(np.mean(per_class))
    return DigitsReport(per_class, mean, fd8, _real_floor(real.features, seed), fraction)
