"""StyleGAN2 with its lazy R1 and path-length penalties through dsgan's d_step/g_step on DeepSpeed engines (2 gloo
ranks) against the same training as a plain PyTorch loop: every ZeRO stage, fp32 and bf16, accumulation, partial bf16.
"""

from __future__ import annotations

import math

import pytest
import torch
from launch import REPO
from runs import rel_diff, run_cases
from stylegan2_worker import LR, plain_reference

WORKER = str(REPO / "tests" / "integration" / "stylegan2_worker.py")


def assert_same(result: dict, reference: dict, tol: float, label: str) -> None:
    """Every tensor within `tol` of the plain loop's, and the path-length mean. Relative to the tensor's norm, or to
    that of one Adam step of every value (lr each with beta1 = 0) where that is larger: a zero-initialised scalar
    (a noise weight) whose few steps of +-lr nearly cancel ends up ~40x smaller than one step, and its relative
    difference would measure round-off magnified by that cancellation, not the training."""
    for net in ("G", "D"):
        for key, ref in reference[net].items():
            diff = rel_diff(result[net][key], ref, LR * math.sqrt(ref.numel()))
            assert diff <= tol, f"{label}: {net}.{key} differs from the plain loop by {diff:.2e} (tolerance {tol})"
    assert result["pl_mean"] == pytest.approx(reference["pl_mean"], rel=tol), label
    assert reference["pl_mean"] > 0  # the path-length penalty ran


def assert_close_bf16(result: dict, reference: dict, label: str) -> None:
    """bf16 parameters: each network within 1% of the plain fp32 loop as a whole, and each tensor of more than 64
    values within 5%. Small tensors are left to the whole-network check: with beta1 = 0 each Adam step is
    ~lr * sign(grad), and the near-zero gradients of zero-initialised scalars (noise weights, biases) flip sign
    under bf16 rounding."""
    for net in ("G", "D"):
        got = torch.cat([result[net][k].flatten().float() for k in reference[net]])
        want = torch.cat([ref.flatten().float() for ref in reference[net].values()])
        assert rel_diff(got, want) <= 1e-2, f"{label}: {net} differs from the plain loop by {rel_diff(got, want):.2e}"
        for key, ref in reference[net].items():
            diff = rel_diff(result[net][key], ref)
            assert ref.numel() <= 64 or diff <= 5e-2, f"{label}: {net}.{key} differs by {diff:.2e}"
    assert result["pl_mean"] == pytest.approx(reference["pl_mean"], rel=5e-2), label


def test_stylegan2_regularized_training_equals_plain_loop_at_every_zero_stage(tmp_path):
    """2 ranks x micro-batch 4 == the plain loop, ZeRO 0-3, fp32 (tight) and bf16 (bf16 rounding), across the R1 and
    path-length updates; accumulation 2 x micro-batch 2 at ZeRO 0 and 3; partial bf16 (the highest scale in bf16
    inside an fp32 engine) against the plain loop of the same model. The plain loop runs in float64; fp32's 1e-4 leaves
    room for the engines to cross one leaky-ReLU kink by round-off (5e-5, see plain_reference)."""
    cases = [f"z{s}-{p}:{s}:{p}:4:1" for s in range(4) for p in ("fp32", "bf16")]
    cases += ["acc2-z0:0:fp32:2:2", "acc2-z3:3:fp32:2:2", "partial:0:partial-bf16:4:1"]
    res = run_cases(tmp_path, 2, cases, WORKER, timeout=900)
    ref, ref_acc, ref_partial = plain_reference(4, 1, 2), plain_reference(2, 2, 2), plain_reference(4, 1, 2, True)
    for case, result in res.items():
        assert result["d_updates"] == result["g_updates"] == 4, case
        if case.startswith("acc2"):
            assert_same(result, ref_acc, 1e-4, case)
        elif case == "partial":
            assert_close_bf16(result, ref_partial, case)  # bf16 layers round the two sides' sums differently
        elif case.endswith("fp32"):
            assert_same(result, ref, 1e-4, case)
        else:
            assert_close_bf16(result, ref, case)
