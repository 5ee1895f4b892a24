"""EMA of G: closed form against start and interval, buffers, fp32 copy, state dict."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dsgan.config import EMA as EMAConfig
from dsgan.ema import EMA


class TinyG(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(2)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.bn(self.fc(z))


def set_params(module: nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.fill_(value)


@pytest.mark.parametrize(("start", "interval"), [(0, 1), (0, 3), (1, 1), (4, 1), (4, 2), (5, 3)])
def test_closed_form(start, interval):
    """G is w1 for the first `start` updates and w2 afterwards; e_0 = e0. The first `start` updates copy G; each
    later update due ((g_updates - start) % interval == 0) does e = (1 - m) e + m w2, so after n updates
    e_n = w2 + (1 - m)^k (e_base - w2) with k the number of due updates and e_base the last copy (w1, or e0)."""
    m, e0, w1, w2, n = 0.1, 1.0, -2.0, 3.0, 12
    g = TinyG()
    set_params(g, e0)
    ema = EMA(g, EMAConfig(momentum=m, start_g_updates=start, interval_g_updates=interval))
    for u in range(1, n + 1):
        set_params(g, w1 if u <= start else w2)
        ema.update(g, u)
    due = [u for u in range(start + 1, n + 1) if (u - start) % interval == 0]
    base = w1 if start else e0
    expected = w2 + (1 - m) ** len(due) * (base - w2)
    for p in ema.module.parameters():
        torch.testing.assert_close(p, torch.full_like(p, expected))


def test_buffers_copied_every_update_and_model_frozen():
    g = TinyG()
    ema = EMA(g, EMAConfig(momentum=0.5, interval_g_updates=2))
    assert not ema.module.training and not any(p.requires_grad for p in ema.module.parameters())
    g(torch.randn(8, 3))  # moves BatchNorm's running statistics
    ema.update(g, 1)  # not an averaging update, but buffers follow G
    for name, buf in g.named_buffers():
        assert torch.equal(dict(ema.module.named_buffers())[name], buf), name
    assert ema.module.fc.weight.data_ptr() != g.fc.weight.data_ptr()


def test_fp32_average_of_bf16_generator():
    g = TinyG()
    ema = EMA(g.to(torch.bfloat16), EMAConfig(momentum=1e-4))
    assert all(p.dtype == torch.float32 for p in ema.module.parameters())
    before = ema.module.fc.weight.clone()
    set_params(g, 1.0)
    ema.update(g, 1)
    # A bf16 average would round 1e-4 steps away; fp32 keeps them.
    torch.testing.assert_close(ema.module.fc.weight, before + 1e-4 * (1 - before))


def test_state_dict_round_trip():
    cfg = EMAConfig(momentum=0.3)
    g = TinyG()
    ema = EMA(g, cfg)
    set_params(g, 2.0)
    g(torch.randn(4, 3))
    ema.update(g, 1)
    restored = EMA(TinyG(), cfg)
    restored.load_state_dict(ema.state_dict())
    for (k, a), (_, b) in zip(ema.state_dict().items(), restored.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    z = torch.randn(4, 3)
    torch.testing.assert_close(restored.module(z), ema.module(z))
