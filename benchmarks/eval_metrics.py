"""One evaluation's cost, split into sampling, Inception and metric arithmetic; the FID square root before and after.

    python benchmarks/eval_metrics.py [--samples 10000] [--reference 10000] [--baseline /path/to/older/checkout]

- metric arithmetic: every metric (FID, IS, KID, precision/recall, density/coverage) of `--samples` generated
  against `--reference` real 2048-d features, as `evaluate_generator` runs it on rank 0 (`_metrics`), after the
  reference's own part (moments, k-NN radii), which is computed once and cached. The features
  are synthetic but Inception-like (non-negative, correlated, full-rank covariances); the arithmetic does not
  depend on their values.
- FID alone: dsgan's Frechet distance, scipy's `sqrtm` (pytorch-fid's method), and `--baseline`'s
  `dsgan/eval/metrics.py` (an older checkout's, loaded from its file) on the same statistics, with their differences.
- Inception: the TF FID Inception (random weights: the cost does not depend on them) on a batch of 32x32 images
  resized to 299, per image; `--inception-images` of them, extrapolated to `--samples`.
- sampling: the default run's generator (the digits DCGAN) producing `--samples` images through `generate`.

Threads: `--threads` (default 1) for torch and the BLAS pools: on a shared machine, all-core pools spin against
other processes and time contention rather than work (2 threads under load ran this 10x slower than 1). Each row
is the best of `--trials`.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import scipy.linalg
import torch
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dsgan.config import load_config  # noqa: E402
from dsgan.eval.fid import ReferenceStats, _metrics, sample_labels, sample_noise  # noqa: E402
from dsgan.eval.inception import FIDInceptionV3  # noqa: E402
from dsgan.eval.metrics import feature_statistics, frechet_distance  # noqa: E402
from dsgan.models import build_generator  # noqa: E402
from dsgan.samples import generate  # noqa: E402

DIM = 2048
T = TypeVar("T")


def best_seconds(fn: Callable[[], T], trials: int) -> tuple[float, str, T]:
    """Wall seconds of the best trial, its CPU seconds as text (with one thread: the work itself, whatever else the
    machine runs), and fn's result."""
    runs = []
    for _ in range(trials):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        runs.append((time.perf_counter() - wall, time.process_time() - cpu, result))
    wall, cpu, result = min(runs, key=lambda run: run[0])
    return wall, f"(CPU {cpu:.2f} s)", result


def inception_like(count: int, seed: int, shift: float) -> torch.Tensor:
    """Non-negative features with correlated dimensions: ReLU of a random linear mix of Gaussians."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(256, DIM, generator=g) / 16
    return torch.relu(torch.randn(count, 256, generator=torch.Generator().manual_seed(seed + 1)) @ mix + shift)


def load_baseline(checkout: Path) -> Callable[..., float]:
    spec = importlib.util.spec_from_file_location("baseline_metrics", checkout / "dsgan" / "eval" / "metrics.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.frechet_distance


def scipy_fid(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--reference", type=int, default=10_000)
    parser.add_argument("--inception-images", type=int, default=32)
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--baseline", type=Path, help="an older checkout whose FID to time (e.g. the main branch)")
    parser.add_argument("--no-scipy", action="store_true", help="skip scipy's sqrtm (~25 s per call on one core)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        run(args)


def run(args: argparse.Namespace) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")

    gen, real = inception_like(args.samples, 0, 0.05), inception_like(args.reference, 10, 0.0)
    logits = torch.randn(args.samples, 1008, generator=torch.Generator().manual_seed(2))
    seconds, cpu, stats = best_seconds(
        lambda: ReferenceStats.of(real, None, "bench", keep_features=True, device=device), 1
    )
    print(f"reference, once (moments, k-NN radii): {seconds:.1f} s {cpu}")
    (mu, sigma), rows = feature_statistics(gen), []

    seconds, cpu, fid_new = best_seconds(
        lambda: frechet_distance(mu, sigma, stats.mu, stats.sigma, device), args.trials
    )
    rows.append(("FID, Cholesky + eigvalsh (this code)", seconds, fid_new, cpu))
    if args.baseline:
        before = load_baseline(args.baseline)
        seconds, cpu, value = best_seconds(lambda: before(mu, sigma, stats.mu, stats.sigma), args.trials)
        rows.append((f"FID, {args.baseline}'s code", seconds, value, cpu))
    if not args.no_scipy:
        seconds, cpu, value = best_seconds(lambda: scipy_fid(mu, sigma, stats.mu, stats.sigma), args.trials)
        rows.append(("FID, scipy.linalg.sqrtm (pytorch-fid)", seconds, value, cpu))
    for name, seconds, value, cpu_text in rows:
        print(f"{name:45s} {seconds:8.2f} s {cpu_text}  FID {value:.10f}   diff {value - fid_new:+.2e}")

    only = {
        "moments (mean, covariance)": lambda: feature_statistics(gen),
        "FID + IS": lambda: _metrics(gen, logits, None, stats, ("fid", "is"), 0, device),
        "KID (100 subsets of 1000, float64)": lambda: _metrics(gen, None, None, stats, ("kid",), 0, device),
        "precision/recall + density/coverage": lambda: _metrics(gen, None, None, stats, ("pr", "dc"), 0, device),
    }
    total = 0.0
    for name, fn in only.items():
        seconds, cpu, _ = best_seconds(fn, args.trials)
        total += seconds if name != "moments (mean, covariance)" else 0.0  # FID + IS includes them
        print(f"metric arithmetic, {name:40s} {seconds:8.2f} s {cpu}")
    print(f"metric arithmetic, all metrics ({args.samples} x {args.reference} x {DIM}): {total:.1f} s")

    inception = FIDInceptionV3().to(device).eval()
    images = torch.rand(args.inception_images, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        inception(images[:2].to(device))  # warm-up
        seconds, cpu, _ = best_seconds(lambda: inception(images.to(device)), args.trials)
    per_image = seconds / args.inception_images
    print(f"Inception: {per_image * 1e3:.1f} ms/image {cpu} -> {per_image * args.samples:.0f} s for {args.samples}")

    cfg = load_config(None)
    generator = build_generator(cfg.generator.model).to(device)

    def sample_all() -> None:
        for start in range(0, args.samples, 100):
            idx = range(start, min(start + 100, args.samples))
            z, y = sample_noise(idx, 0, generator.noise_size), sample_labels(idx, generator.num_classes)
            generate(generator, z, y, device)

    seconds, cpu, _ = best_seconds(sample_all, args.trials)
    print(f"sampling: {args.samples} images of the default run's generator (noise, labels, G): {seconds:.1f} s {cpu}")


if __name__ == "__main__":
    main()
