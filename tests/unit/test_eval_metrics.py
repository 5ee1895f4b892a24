"""Frechet distance and Inception Score against closed forms and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from dsgan.distributed import DistEnv
from dsgan.errors import DataError
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

    def flaky(s1, s2, device):
        calls.append(s1.copy())
        if len(calls) == 1:
            raise torch.linalg.LinAlgError("did not converge")
        return real(s1, s2, device)

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


def test_fid_inception_like_matches_scipy_sqrtm_tightly():
    # Non-negative features (post-ReLU averages, like Inception's pool3), full-rank covariances. At 2048-d scipy's
    # sqrtm takes ~25 s on one core: benchmarks/eval_metrics.py compares there; 320-d keeps this test fast.
    rng = np.random.default_rng(4)
    d = 320
    a = np.maximum(rng.normal(size=(3 * d, d)), 0)
    b = np.maximum(rng.normal(size=(3 * d, d)) * 1.1 + 0.05, 0)
    (mu1, s1), (mu2, s2) = feature_statistics(a), feature_statistics(b)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)


def test_fid_one_rank_deficient_covariance_matches_scipy():
    # 40 generated samples in 64-d (rank 39) against a full-rank reference: the Cholesky path on the reference.
    rng = np.random.default_rng(5)
    few, many = rng.normal(size=(40, 64)), rng.normal(size=(500, 64)) * 1.2
    (mu1, s1), (mu2, s2) = feature_statistics(few), feature_statistics(many)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-7)


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD^2 estimator written out pair by pair (Gretton et al. 2012, eq. 3) with KID's kernel."""
    d = x.shape[1]

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return (float(np.dot(a, b)) / d + 1) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_one_whole_subset_is_the_mmd_formula():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(30, 8)), rng.normal(size=(30, 8)) + 0.3
    expected = _mmd2_unbiased(x, y)
    # Subsets of all 30 rows are permutations: every subset gives the full-set estimate.
    value = metrics.kernel_inception_distance(torch.from_numpy(x).float(), torch.from_numpy(y).float(), seed=0)
    assert value == pytest.approx(expected, rel=1e-5)  # float32 features, float64 arithmetic
    assert value > 0


def test_kid_subsets_average_and_reproducible():
    rng = np.random.default_rng(7)
    x, y = torch.from_numpy(rng.normal(size=(50, 4))), torch.from_numpy(rng.normal(size=(70, 4)))
    value = metrics.kernel_inception_distance(x, y, seed=3, num_subsets=4, max_subset_size=10)
    # The same draws, spelled out: 4 subsets of 10 rows of each set, in NVlabs' order (generated, then reference).
    draw = np.random.default_rng(3)
    per_subset = []
    for _ in range(4):
        xs = x.numpy()[draw.choice(50, 10, replace=False)]
        ys = y.numpy()[draw.choice(70, 10, replace=False)]
        per_subset.append(_mmd2_unbiased(xs, ys))
    assert value == pytest.approx(np.mean(per_subset), rel=1e-10)
    assert metrics.kernel_inception_distance(x, y, seed=3, num_subsets=4, max_subset_size=10) == value
    # Same distribution: unbiased, so near 0 (either sign), far below a shifted set's.
    same = metrics.kernel_inception_distance(x, x[torch.randperm(50)], seed=0, num_subsets=20, max_subset_size=50)
    assert abs(same) < 0.1 * metrics.kernel_inception_distance(x, y + 1.0, seed=0, num_subsets=20)


def _brute_force_prdc(gen: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """The definitions, with distances from explicit differences (no Gram-matrix trick) and sorted neighbours."""

    def dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    def kth(points: np.ndarray, k: int) -> np.ndarray:
        return np.array([sorted(dist(p[None], points)[0])[k] for p in points])  # [0] is the point itself

    r3, r5, g3 = kth(real, 3), kth(real, 5), kth(gen, 3)
    d = dist(real, gen)  # [real, gen]
    return {
        "precision": np.mean([any(d[i, j] <= r3[i] for i in range(len(real))) for j in range(len(gen))]),
        "recall": np.mean([any(d[i, j] <= g3[j] for j in range(len(gen))) for i in range(len(real))]),
        "density": np.mean([sum(d[i, j] < r5[i] for i in range(len(real))) / 5 for j in range(len(gen))]),
        "coverage": np.mean([min(d[i, :]) < r5[i] for i in range(len(real))]),
    }


@pytest.mark.parametrize("block", [1024, 7])
def test_precision_recall_density_coverage_brute_force(monkeypatch, block):
    monkeypatch.setattr(metrics, "ROWS_PER_BLOCK", block)  # blocks: one, and many with a ragged last one
    rng = np.random.default_rng(8)
    real = rng.normal(size=(60, 6))
    gen = np.concatenate([rng.normal(size=(30, 6)) * 0.5, rng.normal(size=(20, 6)) + 3.0])  # narrow + off-manifold
    expected = _brute_force_prdc(gen, real)
    value = metrics.manifold_metrics(torch.from_numpy(gen).float(), torch.from_numpy(real).float(), True, True)
    assert value == pytest.approx(expected, abs=1e-12)
    assert 0 < value["precision"] < 1 and 0 < value["recall"] < 1 and value["density"] > 0
    cached = metrics.reference_radii(torch.from_numpy(real).float())
    assert metrics.manifold_metrics(torch.from_numpy(gen).float(), torch.from_numpy(real), True, True, cached) == value
    only_dc = metrics.manifold_metrics(torch.from_numpy(gen).float(), torch.from_numpy(real).float(), False, True)
    assert only_dc == {k: expected[k] for k in ("density", "coverage")}


def test_knn_metrics_use_the_first_reference_points_only(monkeypatch):
    # NVlabs' cap on the reference set for precision/recall (200k), for density/coverage too: the first points.
    monkeypatch.setattr(metrics, "KNN_MAX_REFERENCE", 40)
    rng = np.random.default_rng(9)
    real, gen = rng.normal(size=(60, 5)), rng.normal(size=(30, 5))
    value = metrics.manifold_metrics(torch.from_numpy(gen).float(), torch.from_numpy(real).float(), True, True)
    assert value == pytest.approx(_brute_force_prdc(gen, real[:40]), abs=1e-12)
    assert value != pytest.approx(_brute_force_prdc(gen, real), abs=1e-12)


def test_per_class_fid_is_the_mean_of_scipy_fids_per_class():
    rng = np.random.default_rng(10)
    labels, real_labels = np.arange(90) % 3, np.repeat([2, 0, 1], 40)  # any order, any class sizes
    gen = rng.normal(size=(90, 6)) + labels[:, None] * 0.3
    real = rng.normal(size=(120, 6)) * 1.1 + real_labels[:, None] * 0.2
    expected = []
    for c in range(3):
        (m1, s1), (m2, s2) = feature_statistics(gen[labels == c]), feature_statistics(real[real_labels == c])
        covmean = scipy.linalg.sqrtm(s1 @ s2).real
        expected.append(np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * covmean))
    value = metrics.per_class_frechet_distance(gen, labels, real, real_labels)
    assert value == pytest.approx(np.mean(expected), rel=1e-10)
    with pytest.raises(DataError, match="class 3 has 1 generated and 0 real images"):
        metrics.per_class_frechet_distance(np.vstack([gen, gen[:1]]), np.append(labels, 3), real, real_labels)
