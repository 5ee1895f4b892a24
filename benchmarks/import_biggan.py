"""Import time of the seed's BigGAN-128 (158M parameters): a BigGAN-PyTorch weights folder (G.pth, D.pth, G_ema.pth,
written from a dsgan model by the inverse map) through `dsgan migrate --checkpoint`, then `dsgan sample`'s load.

    python benchmarks/import_biggan.py [--keep DIR]

Prints the files' sizes and the seconds of each step (one process, CPU).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from dsgan.checkpoint import load_generator
from dsgan.cli import main
from dsgan.config import load_config
from dsgan.migrate.layouts import Layout, layout
from dsgan.migrate.weights import export_network
from dsgan.models import build_discriminator, build_generator

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "biggan128.yaml"


def write_biggan_pytorch_folder(folder: Path) -> None:
    cfg = load_config(CONFIG)
    torch.manual_seed(0)
    g, d = build_generator(cfg.generator.model), build_discriminator(cfg.discriminator.model)
    for name, module in (("G", g), ("G_ema", g), ("D", d)):
        lay = layout(module, "biggan-pytorch", "ajbrock")
        assert isinstance(lay, Layout)
        torch.save(export_network(module.state_dict(), lay), folder / f"{name}.pth")


def main_benchmark() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        source = root / "biggan_pytorch"
        source.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        write_biggan_pytorch_folder(source)
        sizes = ", ".join(f"{p.name} {p.stat().st_size / 2**20:.0f} MiB" for p in sorted(source.glob("*.pth")))
        print(f"source written in {time.perf_counter() - start:.1f} s ({sizes})")
        start = time.perf_counter()
        out = root / "imported"
        assert main(["migrate", "--checkpoint", str(source), "--config", str(CONFIG), "--out", str(out)]) == 0
        print(f"dsgan migrate --checkpoint: {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        load_generator(out)
        print(f"load_generator (dsgan sample / eval): {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main_benchmark()
