"""The full FID pipeline on CPU at 299x299 with random Inception weights saved to a file (about 10 s)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from inception_weights import random_inception_weights
from tiny import TinyGenerator

from dsgan.distributed import DistEnv
from dsgan.eval.features import InceptionFeatures, reference_key
from dsgan.eval.fid import dataset_features, evaluate_generator, load_or_compute_reference

pytestmark = pytest.mark.usefixtures("one_thread")


def test_full_pipelinerandom_inception_weights(tmp_path):
    """load_inception from a file -> cached reference statistics -> evaluate_generator, on CPU at 299x299."""
    random_inception_weights(tmp_path / "inception.pth")
    extractor = InceptionFeatures(tmp_path / "inception.pth")
    real = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    calls = []

    def compute():
        calls.append(1)
        return dataset_features(extractor, [real[:4], (real[4:], torch.zeros(4))], 8, DistEnv.single())

    cache = tmp_path / "ref" / "fid_reference.npz"
    key = reference_key(extractor, "random-real", "32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rank-deficient covariances must not need the eps fallback
        ref = load_or_compute_reference(cache, compute, key, DistEnv.single())
        assert calls == [1] and ref.count == 8 and ref.mu.shape == (2048,) and ref.sigma.shape == (2048, 2048)
        again = load_or_compute_reference(cache, compute, key, DistEnv.single())
        assert calls == [1]  # reused, not recomputed
        np.testing.assert_array_equal(again.sigma, ref.sigma)

        generator = TinyGenerator(num_classes=3, output_scale=32).train()
        result = evaluate_generator(
            generator,
            extractor,
            num_samples=12,
            batch_size=5,
            reference_stats=ref,
            seed=3,
            env=DistEnv.single(),
        )
    assert generator.training
    assert set(result) == {"fid", "is_mean", "is_std"}
    assert np.isfinite(result["fid"]) and result["fid"] > 0
    assert result["is_mean"] >= 1.0 and result["is_std"] >= 0.0

    # Another extractor identity (weights, preprocessing or dataset) -> recomputed and the file replaced.
    other = reference_key(extractor, "another-dataset", "32")
    assert other != key
    fresh = load_or_compute_reference(cache, compute, other, DistEnv.single())
    assert calls == [1, 1] and fresh.key == other
    assert load_or_compute_reference(cache, compute, other, DistEnv.single()).key == other and calls == [1, 1]
    assert sorted(p.name for p in cache.parent.iterdir()) == ["fid_reference.npz"]  # no temp files left
