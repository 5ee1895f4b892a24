"""Metric arithmetic: Frechet distance, feature statistics, Inception Score, and the cross-rank gather.

All statistics are float64 numpy: a 2048x2048 covariance accumulated in float32 loses the digits that FID's
trace difference depends on.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.distributed as dist
from scipy.special import logsumexp

from dsgan.distributed import DistEnv

ArrayLike = np.ndarray | torch.Tensor

SINGULAR_EPS = 1e-6
"""Added to both covariance diagonals when the square root fails (pytorch-fid's ``eps``)."""


def _as_float64(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def feature_statistics(features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of features [N, D] in float64; covariance with the unbiased 1/(N-1), as pytorch-fid and
    the TF FID code (``np.cov(rowvar=False)``)."""
    x = _as_float64(features)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"feature_statistics needs features [N >= 2, D], got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(sigma)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T  # tiny negative eigenvalues are rounding: clip to 0


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr(sqrt(sigma1 @ sigma2)) as the sum of the singular values of sqrt(S1) sqrt(S2).

    sigma1 @ sigma2 is not symmetric, so scipy's general ``sqrtm`` (Schur form) returns complex rounding noise and
    fails on singular products. But S1 S2 is similar to the symmetric PSD sqrt(S1) S2 sqrt(S1) = A A^T with
    A = sqrt(S1) sqrt(S2), so tr sqrt(S1 S2) = sum of the singular values of A. Symmetric square roots (eigh) and
    an SVD are stable and real, and stay exact for rank-deficient covariances (fewer samples than dimensions):
    the SVD resolves zero singular values to ~1e-16 |A|, where taking square roots of the eigenvalues of A A^T
    would turn their rounding into ~1e-8 each.
    """
    a = _psd_sqrt(sigma1) @ _psd_sqrt(sigma2)
    return float(np.linalg.svd(a, compute_uv=False).sum())


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """d^2 = |mu1 - mu2|^2 + tr(S1 + S2 - 2 sqrt(S1 S2)) (Dowson & Landau 1982; FID, Heusel et al. 2017).

    Returns NaN (with a warning) for non-finite statistics, e.g. from a diverged generator, so that a training run
    logs it instead of crashing. If the square root fails, eps*I is added to both covariances with a warning, as
    pytorch-fid does.
    """
    mu1, mu2, sigma1, sigma2 = (_as_float64(a) for a in (mu1, mu2, sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"statistics do not match: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}"
        )
    if not all(np.isfinite(a).all() for a in (mu1, mu2, sigma1, sigma2)):
        warnings.warn("non-finite feature statistics (diverged generator?); Frechet distance is NaN", stacklevel=2)
        return float("nan")
    diff = mu1 - mu2
    try:
        tr_covmean = _trace_sqrt_product(sigma1, sigma2)
    except np.linalg.LinAlgError:
        tr_covmean = float("nan")
    if not np.isfinite(tr_covmean):
        warnings.warn(
            f"Frechet distance: covariance square root failed; adding {SINGULAR_EPS} to the diagonals",
            stacklevel=2,
        )
        offset = np.eye(sigma1.shape[0]) * SINGULAR_EPS
        tr_covmean = _trace_sqrt_product(sigma1 + offset, sigma2 + offset)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def inception_score(logits: ArrayLike, splits: int = 10) -> tuple[float, float]:
    """(mean, std) over ``splits`` equal parts of exp(E_x KL(p(y|x) || p(y))) (Salimans et al. 2016).

    As the reference code (openai/improved-gan ``inception_score/model.py``, reproduced by stylegan2-ada): the
    softmax runs over all 1008 outputs of the TF graph (not the first 1000), from logits computed without the fc
    bias (see ``FIDInceptionV3``); split i is samples [i*N//splits, (i+1)*N//splits) in sample order; std is the
    population std (ddof 0). Computed with log-softmax in float64, so confident (near one-hot) rows stay finite.
    """
    x = _as_float64(logits)
    n = x.shape[0]
    if x.ndim != 2 or n < splits or splits < 1:
        raise ValueError(f"inception_score needs logits [N >= splits={splits}, C], got shape {x.shape}")
    log_p = x - logsumexp(x, axis=1, keepdims=True)
    scores = []
    for i in range(splits):
        part = log_p[i * n // splits : (i + 1) * n // splits]
        # log of the split's marginal p(y), also in log space: a class no sample predicts stays finite.
        log_marginal = logsumexp(part, axis=0, keepdims=True) - np.log(len(part))
        kl = (np.exp(part) * (part - log_marginal)).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


def _comm_device(local: torch.Tensor) -> torch.device:
    # NCCL moves only CUDA tensors; gloo moves CPU tensors (and CUDA ones through the host).
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return local.device


def gather_features(local: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Concatenate every rank's ``local`` [n_r, ...] along dim 0 in rank order; identity on one process.

    Ranks may hold different counts (N not divisible by the world size): sizes are exchanged first and each rank
    pads to the largest, because ``all_gather`` needs equal shapes. Every rank gets the full result.
    """
    if env.world_size == 1:
        return local
    device = _comm_device(local)
    world_size = env.world_size
    size = torch.tensor([local.shape[0]], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world_size)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    padded = torch.zeros((max(counts), *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: local.shape[0]] = local.to(device)
    parts = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)]).to(local.device)
