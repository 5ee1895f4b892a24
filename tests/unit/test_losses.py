"""GAN losses against hand-computed values; R1 and WGAN-GP against direct autograd on a tiny D."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dsgan.config import Loss
from dsgan.losses import d_loss, d_regularizer, g_loss, gradient_penalty, r1_penalty

REAL = torch.tensor([2.0, -1.0])
FAKE = torch.tensor([0.5, -3.0])


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


@pytest.mark.parametrize(
    ("loss_type", "real_term", "fake_term", "g_term"),
    [
        # relu(1 - [2, -1]) = [0, 2]; relu(1 + [0.5, -3]) = [1.5, 0]; G: -mean(fake)
        ("hinge", 1.0, 0.75, 1.25),
        # softplus(-D(x)), softplus(D(G(z))); G non-saturating softplus(-D(G(z)))
        (
            "vanilla",
            (softplus(-2) + softplus(1)) / 2,
            (softplus(0.5) + softplus(-3)) / 2,
            (softplus(-0.5) + softplus(3)) / 2,
        ),
        # D: mean D(G(z)) - mean D(x); G: -mean D(G(z))
        ("wgan", -0.5, -1.25, 1.25),
        # D: mean (D(x) - 1)^2 = (1 + 4) / 2, mean D(G(z))^2 = (0.25 + 9) / 2; G: mean (D(G(z)) - 1)^2 = (0.25 + 16) / 2
        ("lsgan", 2.5, 4.625, 8.125),
    ],
)
def test_losses_hand_computed(loss_type, real_term, fake_term, g_term):
    loss, parts = d_loss(loss_type, REAL, FAKE)
    torch.testing.assert_close(parts["d_loss_real"], torch.tensor(real_term))
    torch.testing.assert_close(parts["d_loss_fake"], torch.tensor(fake_term))
    torch.testing.assert_close(loss, torch.tensor(real_term + fake_term))
    torch.testing.assert_close(g_loss(loss_type, FAKE), torch.tensor(g_term))


def test_parts_detached_and_bf16_logits_reduced_in_fp32():
    real = REAL.clone().bfloat16().requires_grad_(True)
    loss, parts = d_loss("hinge", real, FAKE.bfloat16())
    assert loss.dtype == torch.float32 and loss.requires_grad
    assert not parts["d_loss_real"].requires_grad and not parts["d_loss_fake"].requires_grad
    assert g_loss("hinge", FAKE.bfloat16()).dtype == torch.float32


def test_unknown_loss_type():
    with pytest.raises(ValueError, match="unknown loss type"):
        d_loss("relativistic", REAL, FAKE)
    with pytest.raises(ValueError, match="unknown loss type"):
        g_loss("relativistic", FAKE)


class TinyD(nn.Module):
    """D(x, y) = tanh(<w, x>) + b[y]: grad_x D = (1 - tanh^2(<w, x>)) w, in closed form."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.linspace(-1, 1, 12).view(3, 2, 2) * 0.3)
        self.b = nn.Parameter(torch.tensor([0.1, -0.2]))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        out = torch.tanh((x.to(self.w.dtype) * self.w).flatten(1).sum(1))
        return out + self.b[y] if y is not None else out


def closed_form_grad(d: TinyD, x: torch.Tensor) -> torch.Tensor:
    s = (x * d.w).flatten(1).sum(1)
    return ((1 - torch.tanh(s) ** 2).view(-1, 1) * d.w.detach().flatten()).detach()


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(4, 3, 2, 2, generator=gen), torch.randint(2, (4,), generator=gen)


def test_r1_matches_closed_form_and_is_differentiable():
    d, (x, y) = TinyD(), batch()
    r1 = r1_penalty(d, x, y)
    torch.testing.assert_close(r1, closed_form_grad(d, x).pow(2).sum(1).mean())
    r1.backward()  # create_graph: the penalty trains D
    assert d.w.grad is not None and d.w.grad.abs().sum() > 0
    assert x.grad is None  # the caller's tensor is not touched


def test_gradient_penalty_matches_closed_form():
    d, (real, y) = TinyD(), batch(0)
    fake, _ = batch(1)
    gp = gradient_penalty(d, real, fake, y, torch.Generator().manual_seed(7))
    alpha = torch.rand(4, 1, 1, 1, generator=torch.Generator().manual_seed(7))
    x_hat = alpha * real + (1 - alpha) * fake
    torch.testing.assert_close(gp, (closed_form_grad(d, x_hat).norm(dim=1) - 1).pow(2).mean())
    gp.backward()
    assert d.w.grad.abs().sum() > 0


def test_penalties_under_bf16_parameters_and_outer_autocast():
    d, (x, y) = TinyD(), batch()
    expected = r1_penalty(d, x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(r1_penalty(d, x, y), expected)  # autocast is turned off inside
    d.w.data, d.b.data = d.w.data.bfloat16(), d.b.data.bfloat16()
    r1 = r1_penalty(d, x, y)
    assert r1.dtype == torch.float32 and torch.isfinite(r1)
    torch.testing.assert_close(r1, expected, rtol=3e-2, atol=0)


def test_d_regularizer_weights_and_lazy_interval():
    d, (real, y) = TinyD(), batch(0)
    fake, _ = batch(1)
    assert d_regularizer(Loss(), d, real, fake, y, 0) is None
    r1 = r1_penalty(d, real, y)
    cfg = Loss(r1_weight=10.0, r1_interval=4)
    torch.testing.assert_close(d_regularizer(cfg, d, real, fake, y, 8), 10.0 / 2 * 4 * r1)
    assert d_regularizer(cfg, d, real, fake, y, 9) is None
    torch.manual_seed(3)
    gp = gradient_penalty(d, real, fake, y)
    torch.manual_seed(3)
    both = d_regularizer(Loss(r1_weight=1.0, gp_weight=10.0), d, real, fake, y, 1)
    torch.testing.assert_close(both, 0.5 * r1 + 10.0 * gp)
