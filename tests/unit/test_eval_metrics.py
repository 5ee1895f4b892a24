"""Frechet distance and Inception Score against closed forms and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from dsgan.distributed import DistEnv
from dsgan.eval import metrics
from dsgan.eval.metrics import feature_statistics, frechet_distance, gather_features, inception_score

pytestmark = pytest.mark.usefixtures("one_thread")


def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_fid_diagonal_gaussians_closed_form():
    rng = np.random.default_rng(0)
    d = 16
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = rng.uniform(0.1, 3, size=d), rng.uniform(0.1, 3, size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("d", [5, 64, 256])
def test_fid_full_covariances_match_scipy_sqrtm(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-6)


def test_fid_identical_and_shifted():
    rng = np.random.default_rng(1)
    s = _random_spd(rng, 32)
    mu = rng.normal(size=32)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-9 * np.trace(s)
    assert frechet_distance(mu, s, mu + 2.0, s) == pytest.approx(4.0 * 32, rel=1e-8)


def test_fid_rank_deficient_covariances_are_finite_and_non_negative():
    # Fewer samples than dimensions (the usual case for 2048-d features and small sample counts).
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(10, 50)), rng.normal(size=(12, 50)) + 0.5
    value = frechet_distance(*feature_statistics(a), *feature_statistics(b))
    assert np.isfinite(value) and value > 0
    assert abs(frechet_distance(*feature_statistics(a), *feature_statistics(a))) < 1e-8


def test_fid_torch_inputs_and_float32_promoted():
    rng = np.random.default_rng(3)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    s1, s2 = _random_spd(rng, 8), _random_spd(rng, 8)
    ref = frechet_distance(mu1, s1, mu2, s2)
    as_torch = [torch.from_numpy(x) for x in (mu1, s1, mu2, s2)]
    assert frechet_distance(*as_torch) == pytest.approx(ref, rel=1e-12)


def test_fid_non_finite_is_nan_with_warning():
    s = np.eye(4)
    with pytest.warns(UserWarning, match="non-finite"):
        assert math.isnan(frechet_distance(np.full(4, np.nan), s, np.zeros(4), s))


def test_fid_eps_fallback_when_sqrt_fails(monkeypatch):
    real = metrics._trace_sqrt_product
    calls = []

    def flaky(s1, s2):
        calls.append(s1.copy())
        if len(calls) == 1:
            raise np.linalg.LinAlgError("did not converge")
        return real(s1, s2)

    monkeypatch.setattr(metrics, "_trace_sqrt_product", flaky)
    s = np.diag([1.0, 2.0, 3.0])
    with pytest.warns(UserWarning, match="adding"):
        value = frechet_distance(np.zeros(3), s, np.ones(3), s)
    assert value == pytest.approx(3.0, abs=1e-5)
    np.testing.assert_allclose(np.diag(calls[1]) - np.diag(s), metrics.SINGULAR_EPS)


def test_fid_shape_mismatch():
    with pytest.raises(ValueError, match="do not match"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_feature_statistics_float64_unbiased():
    x = torch.randn(100, 7, generator=torch.Generator().manual_seed(0))
    mu, sigma = feature_statistics(x)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    ref = x.double().numpy()
    np.testing.assert_allclose(mu, ref.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(ref, rowvar=False), rtol=1e-12)
    with pytest.raises(ValueError):
        feature_statistics(np.zeros((1, 3)))


def test_is_uniform_logits_is_one():
    mean, std = inception_score(np.zeros((50, 1008)), splits=10)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_is_confident_distinct_classes_is_class_count():
    k, splits = 7, 3
    logits = np.full((k * splits, 1008), -1e4)
    logits[np.arange(k * splits), np.tile(np.arange(k), splits)] = 1e4  # every split holds each class once
    mean, std = inception_score(torch.from_numpy(logits).float(), splits=splits)
    assert mean == pytest.approx(k, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)


def test_is_hand_computed_two_samples():
    # p1 = (0.5, 0.5), p2 = (0.8, 0.2): marginal (0.65, 0.35).
    logits = np.log(np.array([[0.5, 0.5], [0.8, 0.2]]))
    kl1 = 0.5 * math.log(0.5 / 0.65) + 0.5 * math.log(0.5 / 0.35)
    kl2 = 0.8 * math.log(0.8 / 0.65) + 0.2 * math.log(0.2 / 0.35)
    mean, std = inception_score(logits, splits=1)
    assert mean == pytest.approx(math.exp((kl1 + kl2) / 2), rel=1e-12) and std == 0.0


def test_is_splits_in_sample_order_and_population_std():
    # Split 0: two distinct confident classes (IS 2); split 1: the same class twice (IS 1).
    logits = np.full((4, 10), -1e4)
    logits[[0, 1, 2, 3], [0, 1, 5, 5]] = 1e4
    mean, std = inception_score(logits, splits=2)
    assert mean == pytest.approx(1.5) and std == pytest.approx(0.5)  # np.std, ddof 0
    with pytest.raises(ValueError):
        inception_score(logits, splits=5)


def test_gather_features_identity_on_one_process():
    x = torch.randn(5, 3)
    assert gather_features(x, DistEnv.single()) is x
