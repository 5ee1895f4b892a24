"""Quality check for the embedded digits run: does the generator draw the requested digits, with real variety?

One sample per real digits image (1797), with that image's label and fixed noise, compared in the digits' own
64-pixel space (``dsgan.eval.features.digits_pixels``):

- classifier accuracy: a logistic regression fitted on the real digits labels each sample; per class, the fraction
  classified as the label it was generated for (conditional generators only);
- FD8: the Frechet distance between the samples' and the real digits' 8x8 pixels. Not an Inception FID and not
  comparable with one; it is meaningful only next to its own scale:

    measured in sklearn's raw 8x8 arrays (0..16):           random real half vs the other half ~16,
                                                             each sample = its class's mean image ~451;
    measured as the trainer shows the digits (the data path upsamples bilinearly, then we pool back to 8x8):
                                                             real half vs half ~7, class means ~206
                                                             (~233 for the sharp raw class means above).

  The check compares with the second (what the generator is trained to reproduce): the blurred training view sits
  at FD8 ~150 from the raw arrays, so against those even a perfect generator would score ~150. (With a
  nearest-neighbour upsampling data path the two views coincide.) ``fd8_real_floor`` reports the half-vs-half value
  for the current data path next to every result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dsgan.eval.features import DIGITS_MAX, digits_classifier, digits_pixels, digits_real
from dsgan.eval.fid import sample_noise
from dsgan.eval.metrics import feature_statistics, frechet_distance
from dsgan.samples import generate

NUM_CLASSES = 10


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
    generator: nn.Module, device: torch.device | str, seed: int = 0, batch_size: int = 256
) -> DigitsReport:
    """Run the check on one process (1797 samples at 16..64 px take seconds). The generator is put in eval() for
    the duration and restored after."""
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
