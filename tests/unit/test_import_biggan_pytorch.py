"""BigGAN-PyTorch's own modules against the import: given BIGGAN_PYTORCH_SRC (a checkout of ajbrock/BigGAN-PyTorch),
its `BigGAN.Generator` / `BigGAN.Discriminator` at 128x128 (attention at 64, hierarchical z, shared embedding) are
saved as `G.pth` / `D.pth`, imported by `dsgan migrate`'s reader, and dsgan's models must give their images and logits.

Each spectral-norm `u0` is set to its weight's top left singular vector first: BigGAN-PyTorch estimates sigma as
|W v| and dsgan as u.Wv from the same u, equal (to sigma itself) once u has converged, as in a trained model.
Skipped without the checkout; its code is imported from there, never copied here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from dsgan.config import load_config
from dsgan.migrate.weights import convert, load_source
from dsgan.models import build_discriminator, build_generator

SRC = os.environ.get("BIGGAN_PYTORCH_SRC")
pytestmark = pytest.mark.skipif(not SRC, reason="set BIGGAN_PYTORCH_SRC to a checkout of ajbrock/BigGAN-PyTorch")
REPO = Path(__file__).resolve().parents[2]
SIZE = ["generator.model.base_channels=8", "discriminator.model.base_channels=8", "generator.model.shared_dim=16"]
CLASSES = ["generator.model.num_classes=5", "discriminator.model.num_classes=5"]


def _their_models() -> tuple[torch.nn.Module, torch.nn.Module]:
    assert SRC is not None
    sys.path.insert(0, SRC)
    try:
        import BigGAN  # type: ignore[import-not-found]
    finally:
        sys.path.remove(SRC)
    torch.manual_seed(0)
    g = BigGAN.Generator(
        G_ch=8,
        dim_z=120,
        resolution=128,
        G_attn="64",
        n_classes=5,
        shared_dim=16,
        hier=True,
        SN_eps=1e-6,
        no_optim=True,
    )
    d = BigGAN.Discriminator(D_ch=8, resolution=128, D_attn="64", n_classes=5, SN_eps=1e-6)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in (g, d):
            for name, t in module.state_dict().items():
                if name.endswith("stored_var"):
                    t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
                elif name.endswith(("stored_mean", "gamma")) or name.endswith("bias"):
                    t.copy_(torch.randn(t.shape, generator=gen) * 0.2)
            for m in module.modules():
                if hasattr(m, "u0"):
                    u, _, _ = torch.linalg.svd(m.weight.flatten(1), full_matrices=False)
                    m.u0.copy_(u[:, 0].view(1, -1))
    return g.eval(), d.eval()


def test_biggan_pytorch_modules_give_the_same_images_and_logits(tmp_path: Path) -> None:
    g_ref, d_ref = _their_models()
    torch.save(g_ref.state_dict(), tmp_path / "G.pth")
    torch.save(d_ref.state_dict(), tmp_path / "D.pth")
    cfg = load_config(REPO / "configs" / "biggan128.yaml", [*SIZE, *CLASSES])
    imported = convert(load_source(tmp_path), cfg)
    assert not [row for row in imported.rows if row[2].startswith("unexpected")]
    assert any(n.startswith("generator: spectral norm: dsgan's sigma is within") for n in imported.notes)
    g, d = build_generator(cfg.generator.model), build_discriminator(cfg.discriminator.model)
    g.load_state_dict(imported.weights["generator"])
    d.load_state_dict(imported.weights["discriminator"])
    z = torch.randn(3, 120, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 3, 4])
    with torch.no_grad():
        images_ref = g_ref(z, g_ref.shared(y))
        images = g.eval()(z, y)
        torch.testing.assert_close(images, images_ref, rtol=1e-4, atol=1e-5)
        logits_ref = d_ref(images_ref, y).squeeze(1)
        torch.testing.assert_close(d.eval()(images_ref, y), logits_ref, rtol=1e-4, atol=1e-4)
