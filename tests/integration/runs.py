"""The real entry point on configs/tiny_cpu.yaml, as the integration tests run it, the check of its results, and the
comparison of two runs' final checkpoints (exact resume); the equivalence workers' launch and their tensors' distance
from a reference."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from launch import REPO, launch, start

TINY = str(REPO / "configs" / "tiny_cpu.yaml")
STYLEGAN2_TINY = str(REPO / "tests" / "fixtures" / "stylegan2_tiny.yaml")
FAULT_WORKER = Path(__file__).with_name("fault_worker.py")


def _train_args(run_dir: Path, sets: tuple[str, ...] | list[str], fault: str | None, config: str = TINY) -> list[str]:
    entry = [str(FAULT_WORKER), fault] if fault else ["-m", "dsgan.train"]
    args = [*entry, "--config", config, "--run-dir", str(run_dir)]
    for s in sets:
        args += ["--set", s]
    return args


def train(
    run_dir: Path,
    world: int,
    *sets: str,
    fault: str | None = None,
    env: dict | None = None,
    timeout: float = 300,
    config: str = TINY,
) -> list:
    """`python -m dsgan.train --config config` on `world` ranks; with `fault`, through fault_worker.py (see there)."""
    return launch(_train_args(run_dir, sets, fault, config), world_size=world, timeout=timeout, env=env)


def start_train(run_dir: Path, world: int, sets: list[str], fault: str | None = None) -> list[subprocess.Popen]:
    """`train` without waiting, for the tests that signal or kill ranks mid-run."""
    return start(_train_args(run_dir, sets, fault), world)


def ok(results: list, code: int = 0) -> str:
    for r in results:
        assert r.returncode == code, f"exit {r.returncode}, expected {code}:\n{r.stdout[-5000:]}"
    return results[0].stdout


# A cycle of 4 iterations (D: 2 updates of 2 micro-batches, then G: 1 update of 2), so that checkpoint boundaries
# (every 2 iterations) fall in the middle of cycles.
MID_CYCLE = [
    "schedule.discriminator_steps=2",
    "discriminator.deepspeed.gradient_accumulation_steps=2",
    "generator.deepspeed.gradient_accumulation_steps=2",
    "run.sample_every_iters=null",
]


def final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the newest checkpoint: both engines' weights and optimizer states (all ranks' files), EMA."""
    ckpt = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text()
    out = {}
    for f in sorted(ckpt.rglob("*.pt")):
        if f.name.startswith("rng-"):
            continue
        _flatten(str(f.relative_to(ckpt)), torch.load(f, weights_only=False), out)
    return out


def _flatten(prefix: str, obj: object, out: dict) -> None:
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if k not in ("config", "wandb_run_id", "ds_config", "ds_version"):
                _flatten(f"{prefix}/{k}", v, out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _flatten(f"{prefix}/{i}", v, out)
    elif isinstance(obj, (int, float)):
        out[prefix] = torch.tensor(obj)


def assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:5]}"


def run_cases(tmp_path: Path, world: int, cases: list[str], worker: str, timeout: float = 600) -> dict:
    """`worker OUT CASE...` on `world` ranks; what rank 0 saved."""
    out = tmp_path / "out.pt"
    results = launch([worker, str(out), *cases], world_size=world, timeout=timeout)
    for r in results:
        assert r.returncode == 0, r.stdout[-4000:]
    return torch.load(out, weights_only=False)


def rel_diff(a: torch.Tensor, b: torch.Tensor, scale: float = 0.0) -> float:
    """|a - b| / |b| (Frobenius norms, in float64), the denominator at least `scale`: the size of change a
    comparison resolves, for a reference that can be (near) zero."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(max(scale, 1e-12))).item()


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """`folder` as a tmpfs of `size` (e.g. "700k"), a disk that fills up; skips the test where mounting is not
    allowed."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)
