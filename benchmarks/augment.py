"""What D's augmentation costs: milliseconds per batch for the augmentation's forward and backward (DiffAugment's
default policy, ADA 'bgc' at p = 1 and at p = 0.2), beside one StyleGAN2 D's forward and backward on the same batch.

    python benchmarks/augment.py [--batch 32] [--resolutions 32 64] [--channel-max 32] [--device cpu|cuda]

Each row alternates the candidates for `--rounds` rounds of `--steps` calls and reports the median call; the D is
narrowed by `--channel-max` (NVlabs' name) so that CPU runs stay short. The augmentation is timed through
`AugmentPipe.view`, the trainer's own entry (fp32, a fresh draw per call).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dsgan.augment import AugmentPipe  # noqa: E402
from dsgan.config import Ada, DiffAugment  # noqa: E402
from dsgan.config.models import StyleGAN2Discriminator  # noqa: E402
from dsgan.distributed import DistEnv  # noqa: E402
from dsgan.models import build_discriminator  # noqa: E402


def timed(fn: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def row(resolution: int, args: argparse.Namespace, env: DistEnv) -> dict[str, float]:
    """Median milliseconds per call of each candidate at one resolution."""
    device = env.device
    x = torch.randn(args.batch, 3, resolution, resolution, device=device)
    d = build_discriminator(
        StyleGAN2Discriminator(in_size=resolution, channel_multiplier=1, channel_max=args.channel_max)
    ).to(device)
    pipes = {
        "diffaugment": AugmentPipe(DiffAugment(), 0, env, args.batch, None, (0.0, 0)),
        "ada p=1": AugmentPipe(Ada(), 0, env, args.batch, 1.0, (0.0, 0)),
        "ada p=0.2": AugmentPipe(Ada(), 0, env, args.batch, 0.2, (0.0, 0)),
    }
    calls = [0]

    def augmentation(pipe: AugmentPipe) -> Callable[[], None]:
        def step() -> None:
            calls[0] += 1  # a new iteration each call: fresh parameters
            view = pipe.view(calls[0], 0)
            assert view is not None
            view(x.clone().requires_grad_(True)).square().sum().backward()

        return step

    def d_step() -> None:
        d(x.clone().requires_grad_(True), None).sum().backward()

    steps = {name: augmentation(pipe) for name, pipe in pipes.items()} | {"d": d_step}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for fn in steps.values():  # warm-up
        fn()
    for round_index in range(args.rounds):
        for name in list(steps) if round_index % 2 == 0 else list(reversed(steps)):
            times[name] += [timed(steps[name], device) for _ in range(args.steps)]
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--channel-max", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    env = DistEnv.single(args.device)
    print(f"torch {torch.__version__}, {env.device}, {torch.get_num_threads()} threads, batch {args.batch}")
    print("| resolution | DiffAugment (ms) | ADA bgc p=1 (ms) | ADA bgc p=0.2 (ms) | D fwd+bwd (ms) |")
    print("|---:|---:|---:|---:|---:|")
    for resolution in args.resolutions:
        ms = row(resolution, args, env)
        print(
            f"| {resolution} | {ms['diffaugment']:.1f} | {ms['ada p=1']:.1f} | {ms['ada p=0.2']:.1f} | {ms['d']:.1f} |"
        )


if __name__ == "__main__":
    main()
