"""The embedded digits run against a plain PyTorch loop given the same wall-clock time.

    python benchmarks/digits_quality.py [--seconds S]

dsgan's default run (`deepspeed dsgan/train.py`: SN discriminator, TTUR, EMA of G) is timed; then a plain
conditional DCGAN loop as the issue describes it (hinge, Adam 2e-4 for both, betas (0.5, 0.999), batch 64, no
DeepSpeed, no EMA, same architecture without spectral norm, same data) trains for the same number of seconds.
Both are scored by `dsgan eval --digits`'s check: classifier accuracy on generated digits and FD8.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def plain_loop(seconds: float) -> tuple[torch.nn.Module, int]:
    from dsgan.config.models import DCGANDiscriminator, DCGANGenerator
    from dsgan.digits import digits_tensors
    from dsgan.losses import d_loss, g_loss
    from dsgan.models import build_discriminator, build_generator

    torch.manual_seed(0)
    g = build_generator(DCGANGenerator(output_scale=16))
    d = build_discriminator(DCGANDiscriminator(input_scale=16))
    g_opt = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    images, labels = digits_tensors(16, 3)
    iters, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        idx = torch.randint(len(images), (64,))
        real, y = images[idx], labels[idx]
        z, fake_y = torch.randn(64, g.noise_size), torch.randint(10, (64,))
        with torch.no_grad():
            fake = g(z, fake_y)
        loss, _ = d_loss("hinge", d(real, y), d(fake, fake_y))
        d_opt.zero_grad()
        loss.backward()
        d_opt.step()
        d.requires_grad_(False)
        loss = g_loss("hinge", d(g(torch.randn(64, g.noise_size), fake_y), fake_y))
        g_opt.zero_grad()
        loss.backward()
        g_opt.step()
        d.requires_grad_(True)
        iters += 1
    return g, iters


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=None, help="plain loop budget (default: dsgan's run time)")
    args = p.parse_args()
    from dsgan.checkpoint import load_generator
    from dsgan.digits import evaluate_digits

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run(
            ["deepspeed", str(REPO / "dsgan" / "train.py")],
            cwd=tmp,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        elapsed = time.perf_counter() - start
        ema, _, iters = load_generator(Path(tmp) / "runs" / "digits")
        raw, _, _ = load_generator(Path(tmp) / "runs" / "digits", use_ema=False)
        results = [
            (f"dsgan default, EMA G ({iters} it, {elapsed:.0f} s incl. start-up)", evaluate_digits(ema, "cpu")),
            ("dsgan default, G without EMA", evaluate_digits(raw, "cpu")),
        ]
    g, plain_iters = plain_loop(args.seconds or elapsed)
    results.append((f"plain loop ({plain_iters} it, {args.seconds or elapsed:.0f} s)", evaluate_digits(g, "cpu")))
    print(f"# digits quality, {torch.get_num_threads()} threads; targets: accuracy >= 0.90, FD8 <= 150")
    for name, r in results:
        print(f"{name:<52} accuracy {r.mean_accuracy:.3f}  FD8 {r.fd8:7.1f}  (real halves: {r.fd8_real_floor:.1f})")


if __name__ == "__main__":
    main()
