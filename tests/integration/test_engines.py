"""Real DeepSpeed engines on CPU (gloo): accumulation and data-parallel equivalence against a plain PyTorch loop,
for ZeRO stages 0-3, fp32 and bf16; and each phase leaves the other network untouched.

DeepSpeed has had stage-specific gradient bugs that hit GANs exactly (#8224: ZeRO-2 + bf16 with a submodule used twice
per step, as D on real and fake; #5524: ZeRO-3 hooks skipped for inputs that need no grad); these tests pin the
behaviour of the version in pyproject.toml so an upgrade cannot bring them back silently."""

import pytest
import torch
from engine_worker import plain_reference
from launch import REPO, launch
from runs import rel_diff, run_cases

WORKER = str(REPO / "tests" / "integration" / "engine_worker.py")


def assert_same(result: dict, reference: dict, tol: float, label: str) -> None:
    """Final weights, and the gradient norm the engine reports for each update (before it is applied)."""
    for net in ("G", "D"):
        for key, ref in reference[net].items():
            diff = rel_diff(result[net][key], ref)
            assert diff <= tol, f"{label}: {net}.{key} differs from the plain loop by {diff:.2e} (tolerance {tol})"
        got, want = result["grad_norms"][net], reference["grad_norms"][net]
        assert None not in got, f"{label}: {net} reports no gradient norm"
        assert got == pytest.approx(want, rel=tol), f"{label}: {net} gradient norms {got}, plain loop {want}"


@pytest.fixture(scope="module")
def reference():
    return plain_reference()


def test_accumulation_equivalence_fp32(tmp_path, reference):
    """acc=4 x micro-batch 8 == acc=1 x micro-batch 32 (== the plain loop), same data and noise."""
    res = run_cases(tmp_path, 1, ["acc4:0:fp32:8:4", "acc1:0:fp32:32:1"], WORKER)
    assert_same(res["acc4"], res["acc1"], 1e-5, "acc4 vs acc1")
    assert_same(res["acc1"], reference, 1e-5, "acc1 vs plain")
    assert res["acc4"]["d_updates"] == res["acc4"]["g_updates"] == 3


def test_data_parallel_equivalence_all_zero_stages(tmp_path, reference):
    """2 ranks x micro-batch 16 == 1 rank x 32, every ZeRO stage, fp32 (tight) and bf16 (bf16 rounding)."""
    cases = [f"z{s}-{p}:{s}:{p}:16:1" for s in range(4) for p in ("fp32", "bf16")]
    res = run_cases(tmp_path, 2, cases, WORKER)
    for case, result in res.items():
        tol = 1e-5 if case.endswith("fp32") else 3e-2
        assert_same(result, reference, tol, case)
        assert result["other_network_unchanged"], f"{case}: a phase changed the other network"
        assert result["d_updates"] == result["g_updates"] == 3
    for s in (2, 3):  # ZeRO 1-3 share DeepSpeed's bf16 optimizer (fp32 master weights): same numbers
        assert_same(res[f"z{s}-bf16"], res["z1-bf16"], 1e-4, f"bf16 stage {s} vs stage 1")


OMITTED = """
import os, sys
import deepspeed, torch
from dsgan import distributed
from dsgan.config import DeepSpeedConfig
from dsgan.engines import build_engine

distributed.init(distributed.detect(), timeout_seconds=120)
handed = []
initialize = deepspeed.initialize
deepspeed.initialize = lambda **kw: handed.append(kw["config"]) or initialize(**kw)
adam = {"type": "Adam", "params": {"lr": 1e-3, "torch_adam": True}}
written = {"train_micro_batch_size_per_gpu": 2, "optimizer": adam}
net = build_engine("generator", torch.nn.Linear(3, 1), DeepSpeedConfig.model_validate(written), 1)
group = net.engine.optimizer.param_groups[0]
torch.save({"written": written, "handed": handed, "betas": tuple(group["betas"]), "eps": group["eps"],
            "fp16": net.engine.fp16_enabled()}, sys.argv[1])
os._exit(0)
"""


def test_omitted_deepspeed_fields_reach_deepspeed_omitted(tmp_path):
    """A JSON without betas, eps or fp16 trains with DeepSpeed's (here torch's Adam's) defaults, not dsgan's."""
    out = tmp_path / "out.pt"
    (result,) = launch(["-c", OMITTED, str(out)], world_size=1, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:]
    got = torch.load(out, weights_only=False)
    assert got["handed"] == [{**got["written"], "train_batch_size": 2, "gradient_accumulation_steps": 1}]
    assert got["betas"] == (0.9, 0.999) and got["eps"] == 1e-8 and not got["fp16"]
