"""evaluate_generator's sample set and mode handling, and the reference-statistics cache (no process group)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import TinyGenerator
from torch import nn

from dsgan.digits import DigitsFeatures
from dsgan.distributed import DistEnv
from dsgan.eval.features import reference_key
from dsgan.eval.fid import (
    ReferenceStats,
    evaluate_generator,
    load_or_compute_reference,
    read_reference,
    sample_labels,
    sample_noise,
)
from dsgan.samples import eval_mode

ONE = DistEnv.single()


def _reference() -> ReferenceStats:
    mu, sigma, count = DigitsFeatures(16).reference_statistics()
    return ReferenceStats(mu, sigma, count, "digits")


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
        x = np.random.default_rng(len(calls)).normal(size=(30, 4))
        return x.mean(0), np.cov(x, rowvar=False), 30

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
