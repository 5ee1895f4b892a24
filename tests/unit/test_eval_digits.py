"""The digits check and its documented scale: FD8 floor ~16 raw (~7 through the data path), class means ~451 raw."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from dsgan.digits import DigitsFeatures, digits_pixels, digits_real, evaluate_digits
from dsgan.eval.metrics import feature_statistics, frechet_distance


def _fd(a: np.ndarray, b: np.ndarray) -> float:
    return frechet_distance(*feature_statistics(a), *feature_statistics(b))


class ClassMeanGenerator(nn.Module):
    """Ignores the noise: returns the mean real image of the requested class at 32x32 in [-1, 1]."""

    noise_size = 4
    num_classes = 10
    output_scale = 32

    def __init__(self, means_8x8: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("means", means_8x8 / 8 - 1)  # [10, 8, 8] on 0..16 -> [-1, 1]
        self.anchor = nn.Parameter(torch.zeros(()))  # so the module has a parameter (dtype, mode handling)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = self.means[y].unsqueeze(1) + 0 * self.anchor
        return F.interpolate(x, size=(32, 32), mode="nearest").expand(-1, 3, -1, -1)


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return d.data.astype(np.float64), d.target


def test_raw_scale_real_halves_and_class_means(digits):
    """The numbers in the digits.py docstring, in sklearn's raw 8x8 arrays."""
    x, y = digits
    perm = np.random.default_rng(0).permutation(len(x))
    assert 10 < _fd(x[perm[: len(x) // 2]], x[perm[len(x) // 2 :]]) < 25  # measured 16.3
    class_means = np.stack([x[y == k].mean(0) for k in range(10)])
    assert 350 < _fd(class_means[y], x) < 550  # measured 451.4


def test_digits_pixels_inverts_nearest_upsampling(digits):
    x, _ = digits
    images = torch.from_numpy(x[:20].reshape(20, 1, 8, 8)).float() / 8 - 1
    up = F.interpolate(images, size=(32, 32), mode="nearest").expand(-1, 3, -1, -1)
    np.testing.assert_allclose(digits_pixels(up).numpy(), x[:20], atol=1e-5)


def test_class_mean_generator_check(digits):
    x, y = digits
    means = torch.from_numpy(np.stack([x[y == k].mean(0) for k in range(10)]).reshape(10, 8, 8)).float()
    generator = ClassMeanGenerator(means).train()
    report = evaluate_digits(generator, "cpu", seed=0)
    assert generator.training  # mode restored
    assert report.mean_accuracy > 0.9 and min(report.accuracy_per_class) > 0.8
    # Whichever upsampling the data path uses, real-vs-real is far below the class-mean collapse.
    assert 5 < report.fd8_real_floor < 25  # measured 6.9 (bilinear data path), 16.3 (raw / nearest)
    assert 150 < report.fd8 < 550  # measured 233 (bilinear data path), 451 (raw / nearest)
    assert report.fd8 > 10 * report.fd8_real_floor
    assert sum(report.predicted_fraction) == pytest.approx(1.0)
    text = report.format()
    assert "FD8" in text and "not an FID" in text


def test_real_digits_through_the_data_path_score_zero():
    real = digits_real(32)
    assert frechet_distance(*feature_statistics(real.features), real.mu, real.sigma) == pytest.approx(0, abs=1e-6)


def test_unconditional_generator_has_no_accuracy(digits):
    class Unconditional(nn.Module):
        noise_size, num_classes, output_scale = 8, 0, 16

        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 3 * 16 * 16)

        def forward(self, z, y):
            assert y is None
            return torch.tanh(self.fc(z)).view(-1, 3, 16, 16)

    report = evaluate_digits(Unconditional(), "cpu")
    assert report.accuracy_per_class is None and report.mean_accuracy is None
    assert np.isfinite(report.fd8) and report.fd8 > 0
    assert "unconditional" in report.format()


def test_digits_features_shapes_and_determinism():
    extractor = DigitsFeatures(32)
    images = torch.rand(6, 3, 32, 32) * 2 - 1
    f1, l1 = extractor(images)
    f2, l2 = DigitsFeatures(32)(images)
    assert f1.shape == (6, 64) and l1.shape == (6, 10)
    assert torch.equal(f1, f2) and torch.equal(l1, l2)
    features, labels = extractor.reference_features()
    assert features.shape == (1797, 64) and labels.shape == (1797,) and extractor.feature_dim == 64
