"""evaluate_generator's sample set and mode handling, and the reference-statistics cache (no process group)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from tiny import TinyGenerator
from torch import nn

from dsgan.digits import DigitsFeatures
from dsgan.distributed import DistEnv
from dsgan.errors import ConfigError
from dsgan.eval import fid, metrics
from dsgan.eval.features import reference_key
from dsgan.eval.fid import (
    PUBLISHED,
    ReferenceStats,
    evaluate_generator,
    load_or_compute_reference,
    read_reference,
    sample_labels,
    sample_noise,
)
from dsgan.samples import eval_mode, generate

ONE = DistEnv.single()


def _reference() -> ReferenceStats:
    return ReferenceStats.of(*DigitsFeatures(16).reference_features(), "digits", keep_features=True)


def _evaluate(generator: nn.Module, num_samples: int, batch_size: int, seed: int = 0) -> dict[str, float]:
    return evaluate_generator(generator, DigitsFeatures(16), num_samples, batch_size, _reference(), seed, ONE)


def test_noise_depends_only_on_seed_and_index():
    full = sample_noise(range(10), seed=7, noise_size=5)
    assert torch.equal(sample_noise([3, 8], seed=7, noise_size=5), full[[3, 8]])
    assert not torch.equal(sample_noise([3], seed=8, noise_size=5), full[[3]])
    assert not torch.equal(full[0], full[1])
    assert torch.equal(sample_labels([0, 1, 11, 23], 10), torch.tensor([0, 1, 1, 3]))
    assert sample_labels([0, 1], 0) is None


def test_result_independent_of_batch_size_and_train_mode():
    generator = TinyGenerator(dropout=0.5).train()
    generator.dropout.eval()  # a submodule in its own mode must keep it
    a = _evaluate(generator, 60, batch_size=7)
    b = _evaluate(generator, 60, batch_size=60)
    assert set(a) == {"fid"}  # no IS from the digits features
    assert a["fid"] == pytest.approx(b["fid"], rel=1e-9)
    assert generator.training and generator.bn.training and not generator.dropout.training
    assert _evaluate(generator, 60, batch_size=7, seed=1)["fid"] != a["fid"]


def test_eval_mode_restores_after_error_and_disables_grad():
    generator = TinyGenerator(dropout=0.5).train()
    with pytest.raises(RuntimeError), eval_mode(generator):
        assert not generator.training and not torch.is_grad_enabled()
        raise RuntimeError
    assert generator.training and torch.is_grad_enabled()


def test_needs_two_samples():
    with pytest.raises(ValueError, match="num_samples"):
        _evaluate(TinyGenerator(), 1, 5)


def test_reference_cache_reuse_mismatch_and_corrupt(tmp_path):
    path = tmp_path / "stats.npz"
    calls = []

    def compute():
        calls.append(1)
        return np.random.default_rng(len(calls)).normal(size=(30, 4)), None

    extractor = DigitsFeatures(32)
    key = reference_key(extractor, "digits", "32")
    assert key != reference_key(DigitsFeatures(16), "digits", "32")  # the preprocessing id names the data path
    first = load_or_compute_reference(path, compute, key, ONE)
    second = load_or_compute_reference(path, compute, key, ONE)
    assert len(calls) == 1 and np.array_equal(first.mu, second.mu) and second.count == 30
    third = load_or_compute_reference(path, compute, "other", ONE)
    assert len(calls) == 2 and read_reference(path).key == "other"
    assert not np.array_equal(third.mu, first.mu)

    path.write_bytes(b"torn")
    with pytest.warns(UserWarning, match="unreadable"):
        load_or_compute_reference(path, compute, "other", ONE)
    assert len(calls) == 3 and read_reference(path).key == "other"
    assert [p.name for p in tmp_path.iterdir()] == ["stats.npz"]


def test_reference_features_kept_when_asked_and_recomputed_when_missing(tmp_path):
    path = tmp_path / "stats.npz"
    calls = []
    data = torch.from_numpy(np.random.default_rng(0).normal(size=(30, 4)))

    def compute():
        calls.append(1)
        return data, torch.arange(30) % 3

    plain = load_or_compute_reference(path, compute, "k", ONE)
    assert plain.features is None and len(calls) == 1
    # A cache without features cannot serve KID/PR/DC: recomputed once, then reused with them.
    kept = load_or_compute_reference(path, compute, "k", ONE, keep_features=True)
    again = load_or_compute_reference(path, compute, "k", ONE, keep_features=True)
    assert len(calls) == 2 and again.features.dtype == np.float32 and again.features.shape == (30, 4)
    np.testing.assert_array_equal(again.features, data.float().numpy())
    np.testing.assert_array_equal(again.labels, np.arange(30) % 3)
    # The reference's k-NN radii (precision/recall, density/coverage) are kept with them, computed once.
    radii = metrics.reference_radii(data.float())
    np.testing.assert_array_equal(again.pr_radius, radii[0].numpy())
    np.testing.assert_array_equal(again.dc_radius, radii[1].numpy())
    np.testing.assert_allclose(kept.mu, data.numpy().mean(0), rtol=1e-12)
    assert load_or_compute_reference(path, compute, "k", ONE).features is not None and len(calls) == 2


def test_published_mu_sigma_file_is_the_fid_reference(tmp_path):
    # pytorch-fid's --save-stats writes exactly these two arrays.
    path = tmp_path / "published.npz"
    ref = ReferenceStats.of(*DigitsFeatures(16).reference_features(), "digits", keep_features=False)
    np.savez(path, mu=ref.mu, sigma=ref.sigma)
    before = path.read_bytes()

    def compute():
        raise AssertionError("a published file is never recomputed")

    with pytest.warns(UserWarning, match="preprocessing .* is yours to match"):
        published = load_or_compute_reference(path, compute, "any key", ONE)
    assert published.key == PUBLISHED and published.count is None and published.features is None
    assert path.read_bytes() == before  # never overwritten
    generator = TinyGenerator()
    with_published = evaluate_generator(generator, DigitsFeatures(16), 40, 20, published, 0, ONE)
    assert with_published == evaluate_generator(generator, DigitsFeatures(16), 40, 20, ref, 0, ONE)
    with pytest.raises(ConfigError, match="only mu and sigma.*need the reference features"):
        load_or_compute_reference(path, compute, "any key", ONE, keep_features=True)


def test_every_metric_from_one_pass_of_features():
    generator = TinyGenerator()
    ref = _reference()
    every = evaluate_generator(generator, DigitsFeatures(16), 60, 25, ref, 0, ONE, ("fid", "kid", "pr", "dc", "ifid"))
    assert set(every) == {"fid", "kid", "precision", "recall", "density", "coverage", "ifid"}
    # Each equals the metric computed alone from the same generated features.
    z, y = sample_noise(range(60), 0, generator.noise_size), sample_labels(range(60), generator.num_classes)
    gen = DigitsFeatures(16)(generate(generator, z, y, "cpu"))[0]
    real = torch.from_numpy(ref.features)
    assert every["kid"] == pytest.approx(metrics.kernel_inception_distance(gen, real, seed=0), rel=1e-9)
    assert {k: every[k] for k in ("precision", "recall", "density", "coverage")} == pytest.approx(
        metrics.manifold_metrics(gen, real, True, True), abs=1e-12
    )
    assert every["fid"] == _evaluate(generator, 60, 60)["fid"]
    # Per-class FID: sample i has label i mod 10 (6 per class), the real digits their own.
    ifid = metrics.per_class_frechet_distance(gen, y, ref.features, ref.labels)
    assert every["ifid"] == pytest.approx(ifid, rel=1e-12) and every["ifid"] > every["fid"]


def test_long_passes_log_progress_with_eta(monkeypatch, caplog):
    monkeypatch.setattr(fid, "PROGRESS_EVERY_SECONDS", 0.0)
    with caplog.at_level(logging.INFO, logger="dsgan.eval"):
        _evaluate(TinyGenerator(), 30, batch_size=10)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and lines[0].startswith("evaluation samples: 10/30 images (33%)") and "ETA 0:00:" in lines[0]
    assert lines[-1].startswith("evaluation samples: 30/30 images (100%)")
    caplog.clear()
    monkeypatch.setattr(fid, "PROGRESS_EVERY_SECONDS", 3600.0)
    with caplog.at_level(logging.INFO, logger="dsgan.eval"):
        _evaluate(TinyGenerator(), 30, batch_size=10)
    assert not caplog.records  # a short evaluation says nothing
