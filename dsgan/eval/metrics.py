"""Metric arithmetic: Frechet distance, feature statistics, Inception Score, KID, precision/recall,
density/coverage, and the cross-rank gather.

Moments, the FID square root and KID are float64: a 2048x2048 covariance accumulated in float32 loses the digits
that FID's trace difference depends on, and KID is a small difference of large kernel sums. The k-NN metrics compare
float32 distances (they only decide which ball holds which point).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.distributed as dist
from scipy.special import logsumexp

from dsgan.distributed import DistEnv
from dsgan.errors import DataError

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


def _psd_sqrt(sigma: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(sigma)
    return (v * w.clamp(min=0).sqrt()) @ v.T  # tiny negative eigenvalues are rounding: clip to 0


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray, device: torch.device | str = "cpu") -> float:
    """tr(sqrt(sigma1 @ sigma2)) in float64, from one Cholesky factorization and one symmetric eigenvalue solve.

    sigma1 @ sigma2 is not symmetric, so scipy's general ``sqrtm`` (Schur form, ~25 s at 2048-d on one core) returns
    complex rounding noise. With S1 = L L^T, S1 S2 is similar to the symmetric PSD L^T S2 L, so tr sqrt(S1 S2) is
    the sum of the square roots of its eigenvalues: ``eigvalsh`` needs no eigenvectors and is several times cheaper
    than ``sqrtm`` or two symmetric square roots. When neither covariance factors (both rank-deficient: fewer samples
    than dimensions), it falls back to the singular values of sqrt(S1) sqrt(S2), whose zero singular values resolve
    to ~1e-16 |A| where square roots of near-zero eigenvalues would turn their rounding into ~1e-8 each.
    """
    s1, s2 = torch.from_numpy(sigma1).to(device), torch.from_numpy(sigma2).to(device)
    for a, b in ((s1, s2), (s2, s1)):  # tr sqrt(S1 S2) = tr sqrt(S2 S1)
        factor, info = torch.linalg.cholesky_ex(a)
        if info.item() == 0:
            eigenvalues = torch.linalg.eigvalsh(factor.T @ b @ factor)
            return float(eigenvalues.clamp(min=0).sqrt().sum())  # negative eigenvalues are rounding
    return float(torch.linalg.svdvals(_psd_sqrt(s1) @ _psd_sqrt(s2)).sum())


def frechet_distance(
    mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike, device: torch.device | str = "cpu"
) -> float:
    """d^2 = |mu1 - mu2|^2 + tr(S1 + S2 - 2 sqrt(S1 S2)) (Dowson & Landau 1982; FID, Heusel et al. 2017).

    Returns NaN (with a warning) for non-finite statistics, e.g. from a diverged generator, so that a training run
    logs it instead of crashing. If the square root fails, eps*I is added to both covariances with a warning, as
    pytorch-fid does. ``device`` runs the float64 linear algebra there (a GPU's takes milliseconds at 2048-d).
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
        tr_covmean = _trace_sqrt_product(sigma1, sigma2, device)
    except (np.linalg.LinAlgError, torch.linalg.LinAlgError):
        tr_covmean = float("nan")
    if not np.isfinite(tr_covmean):
        warnings.warn(
            f"Frechet distance: covariance square root failed; adding {SINGULAR_EPS} to the diagonals",
            stacklevel=2,
        )
        offset = np.eye(sigma1.shape[0]) * SINGULAR_EPS
        tr_covmean = _trace_sqrt_product(sigma1 + offset, sigma2 + offset, device)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def per_class_frechet_distance(
    features: ArrayLike,
    labels: ArrayLike,
    reference: ArrayLike,
    reference_labels: ArrayLike,
    device: torch.device | str = "cpu",
) -> float:
    """Intra-FID (Miyato & Koyama 2018; StudioGAN's IFID): the mean over the generated classes of the Frechet
    distance between a class's generated and real features. Each class needs 2 of each: a covariance."""
    gen, real = _as_float64(features), _as_float64(reference)
    gen_labels, real_labels = np.asarray(labels), np.asarray(reference_labels)
    scores = []
    for c in np.unique(gen_labels):
        gen_c, real_c = gen[gen_labels == c], real[real_labels == c]
        if len(gen_c) < 2 or len(real_c) < 2:
            raise DataError(
                f"per-class FID: class {c} has {len(gen_c)} generated and {len(real_c)} real images, 2 of each are "
                "needed (raise eval.num_samples to 2 per class or more, or drop ifid from eval.metrics)"
            )
        scores.append(frechet_distance(*feature_statistics(gen_c), *feature_statistics(real_c), device))
    return float(np.mean(scores))


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


KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


def kernel_inception_distance(
    features: torch.Tensor,
    reference: torch.Tensor,
    seed: int,
    num_subsets: int = KID_SUBSETS,
    max_subset_size: int = KID_SUBSET_SIZE,
) -> float:
    """KID (Binkowski et al. 2018): the unbiased MMD^2 with the kernel k(x, y) = (x.y / d + 1)^3, averaged over
    ``num_subsets`` random subsets of min(n_generated, n_reference, max_subset_size) rows of each set, as NVlabs'
    ``metrics/kernel_inception_distance.py`` (kid50k_full: 100 subsets of 1000). The subsets are drawn from a
    generator seeded with ``seed``, so the number is reproducible. float64 on the features' device: the estimate
    is a difference of sums of ~1e6 kernel values each."""
    dim = features.shape[1]
    m = min(len(features), len(reference), max_subset_size)
    if m < 2:
        raise ValueError(f"KID needs >= 2 generated and >= 2 reference features, got {len(features)}, {len(reference)}")
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = features[torch.from_numpy(rng.choice(len(features), m, replace=False))].double()
        y = reference[torch.from_numpy(rng.choice(len(reference), m, replace=False))].double()
        within = (x @ x.T / dim + 1) ** 3 + (y @ y.T / dim + 1) ** 3
        across = (x @ y.T / dim + 1) ** 3
        total += float((within.sum() - within.diagonal().sum()) / (m - 1) - across.sum() * 2 / m)
    return total / num_subsets / m


PR_NEIGHBOURS = 3
"""Improved precision and recall (Kynkaanniemi et al. 2019): k of the k-NN balls, NVlabs' pr50k3."""
DC_NEIGHBOURS = 5
"""Density and coverage (Naeem et al. 2020): k of the k-NN balls, the paper's and StudioGAN's default."""
KNN_MAX_REFERENCE = 200_000
"""The k-NN metrics compare with at most the first 200k real images (dataset order), as NVlabs' pr50k3_full: the
reference's own k-NN radii cost N^2 distances (ImageNet's 1.28M would be 40x 200k's)."""
ROWS_PER_BLOCK = 1024
"""Distance rows per block: 1024 x 50k float32 distances are 200 MB, at any dataset size."""


def _neighbour_radii(points: torch.Tensor, ks: tuple[int, ...]) -> list[torch.Tensor]:
    """Per point, the distance to its k-th nearest other point, for each k in ``ks`` (a point is its own nearest
    at distance 0, hence the k + 1 smallest)."""
    kths: list[list[torch.Tensor]] = [[] for _ in ks]
    for block in points.split(ROWS_PER_BLOCK):
        nearest = torch.cdist(block, points).topk(max(ks) + 1, dim=1, largest=False).values
        for out, k in zip(kths, ks, strict=True):
            out.append(nearest[:, k])
    return [torch.cat(parts) for parts in kths]


def reference_radii(reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The k-NN radii of the first ``KNN_MAX_REFERENCE`` reference points that ``manifold_metrics`` needs:
    precision/recall's (k=3) and density/coverage's (k=5), from one pass. They depend on the reference alone and
    are its costliest part, so they are cached with the reference features."""
    pr_radius, dc_radius = _neighbour_radii(reference[:KNN_MAX_REFERENCE].float(), (PR_NEIGHBOURS, DC_NEIGHBOURS))
    return pr_radius, dc_radius


def manifold_metrics(
    features: torch.Tensor,
    reference: torch.Tensor,
    precision_recall: bool,
    density_coverage: bool,
    radii: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, float]:
    """Improved precision/recall (k=3) and density/coverage (k=5) of generated ``features`` against the first
    ``KNN_MAX_REFERENCE`` ``reference`` features, from one pass over the reference-generated distances; ``radii``:
    ``reference_radii(reference)``, computed here when not given.

    - precision: the fraction of generated points inside some reference point's k-NN ball (``<=``, as NVlabs'
      ``metrics/precision_recall.py``); recall: the fraction of reference points inside some generated point's ball.
    - density: the mean over generated points of (number of reference balls holding it) / k; coverage: the
      fraction of reference points whose ball holds a generated point (strict ``<``, as Naeem et al.'s ``prdc``).

    Distances in float32 on the features' device (NVlabs: float16): they only decide memberships.
    """
    gen, real = features.float(), reference[:KNN_MAX_REFERENCE].float()
    real_pr_radius, real_dc_radius = (r.to(gen.device) for r in radii or reference_radii(real))
    gen_pr_radius = _neighbour_radii(gen, (PR_NEIGHBOURS,))[0] if precision_recall else gen[:0, 0]
    in_real_ball = torch.zeros(len(gen), dtype=torch.bool, device=gen.device)  # precision
    in_gen_ball = torch.zeros(len(real), dtype=torch.bool, device=gen.device)  # recall
    balls_holding = torch.zeros(len(gen), dtype=torch.float64, device=gen.device)  # density
    covered = torch.zeros(len(real), dtype=torch.bool, device=gen.device)  # coverage
    for start in range(0, len(real), ROWS_PER_BLOCK):
        rows = slice(start, start + ROWS_PER_BLOCK)
        distance = torch.cdist(real[rows], gen)
        if precision_recall:
            in_real_ball |= (distance <= real_pr_radius[rows, None]).any(dim=0)
            in_gen_ball[rows] = (distance <= gen_pr_radius[None, :]).any(dim=1)
        if density_coverage:
            inside = distance < real_dc_radius[rows, None]
            balls_holding += inside.sum(dim=0)
            covered[rows] = inside.any(dim=1)
    out = {}
    if precision_recall:
        out["precision"] = in_real_ball.double().mean().item()
        out["recall"] = in_gen_ball.double().mean().item()
    if density_coverage:
        out["density"] = (balls_holding.mean() / DC_NEIGHBOURS).item()
        out["coverage"] = covered.double().mean().item()
    return out


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
