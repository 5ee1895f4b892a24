"""StyleGAN2's lazy regularizers: the path-length penalty against a closed form, and which micro-steps carry R1 and
the path-length penalty under every D/G schedule (replayed with plain counters, and against MMagic's rule)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dsgan.config import Loss
from dsgan.config import models as c
from dsgan.distributed import DistEnv
from dsgan.losses import d_regularizer, path_length_penalty, r1_penalty
from dsgan.schedule import Schedule
from dsgan.steps import PathLength, sample_latents

NUM_LATENTS, STYLE, SIZE = 3, 4, 5


class LinearSynthesis(nn.Module):
    """images[b] = sum_l A_l w[b, l] with w = z reshaped into NUM_LATENTS style codes: J_w^T u = (A_l^T u)_l."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(()))
        self.A = nn.Parameter(
            torch.randn(NUM_LATENTS, 1 * SIZE * SIZE, STYLE, generator=torch.Generator().manual_seed(0))
        )

    def style_codes(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return z.view(-1, NUM_LATENTS, STYLE) * self.gain  # in the graph of a parameter, as mapped style codes are

    def forward(self, w: torch.Tensor, y: torch.Tensor | None, input_is_latent: bool) -> torch.Tensor:
        assert input_is_latent
        return torch.einsum("lps,bls->bp", self.A, w).view(-1, 1, SIZE, SIZE)


def test_path_length_penalty_closed_form():
    g = LinearSynthesis()
    z = torch.randn(6, NUM_LATENTS * STYLE, generator=torch.Generator().manual_seed(1))
    mean, decay = torch.tensor(0.7), 0.01
    penalty, path_mean = path_length_penalty(g, z, None, mean, decay, torch.Generator().manual_seed(2))

    u = torch.randn(6, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(2)) / SIZE  # / sqrt(H W)
    jt_u = torch.einsum("lps,bp->bls", g.A.detach(), u.flatten(1))  # [B, L, S]: J^T u per style code
    lengths = jt_u.pow(2).sum(2).mean(1).sqrt()
    a = 0.7 + decay * (lengths.mean() - 0.7)
    torch.testing.assert_close(path_mean, a)
    torch.testing.assert_close(penalty, (lengths - a).pow(2).mean())
    penalty.backward()  # differentiable w.r.t. G's parameters (the double backward the trainer relies on)
    assert g.A.grad is not None and g.A.grad.abs().sum() > 0


def test_path_length_penalty_is_fp32_under_autocast():
    g, z = LinearSynthesis(), torch.randn(2, NUM_LATENTS * STYLE)
    expected, _ = path_length_penalty(g, z, None, torch.tensor(0.0), 0.01, torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, _ = path_length_penalty(g, z, None, torch.tensor(0.0), 0.01, torch.Generator().manual_seed(0))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected)


class SumD(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return self.conv(x).flatten(1).sum(1)


CASES = [(1, 1, 1, 1), (1, 1, 4, 2), (2, 3, 2, 4), (5, 1, 1, 1), (1, 2, 3, 1), (3, 2, 2, 3)]


def regularized_micro_steps(s: Schedule, interval: int, iters: int) -> tuple[list[int], list[tuple[int, int]]]:
    """Replays the schedule with plain counters: the D micro-batches (by iteration) and G micro-batches (by
    iteration, index in the phase) that belong to every `interval`-th update of their network, counted from 0."""
    d_reg, g_reg, g_calls = [], [], 0
    for it in range(iters):  # one D micro-batch per iteration
        if (it // s.d_accumulation) % interval == 0:
            d_reg.append(it)
        for k in range(s.plan(it).g_micro_steps):
            if (g_calls // s.g_accumulation) % interval == 0:
                g_reg.append((it, k))
            g_calls += 1
    return d_reg, g_reg


@pytest.mark.parametrize("d_steps,g_steps,acc_d,acc_g", CASES)
@pytest.mark.parametrize("interval", [1, 4, 16])
def test_regularized_updates_for_every_schedule(d_steps, g_steps, acc_d, acc_g, interval):
    s, iters = Schedule(d_steps, g_steps, acc_d, acc_g), 200
    expected_d, expected_g = regularized_micro_steps(s, interval, iters)
    pl = PathLength(Loss(pl_weight=2.0, pl_interval=interval), c.StyleGAN2Generator(), 0, DistEnv.single("cpu"), 0.0)
    got_g = [(it, k) for it in range(iters) for k in range(s.plan(it).g_micro_steps) if pl.due(s, it, k)]
    assert got_g == expected_g
    # whole updates: every regularized G update has all of its micro-batches regularized
    assert len(got_g) % acc_g == 0 and got_g
    # R1 runs on the micro-steps of D update `schedule.d_updates(it)` (d_step's argument in the trainer)
    cfg, d, x = Loss(r1_weight=1.0, r1_interval=interval), SumD(), torch.randn(2, 1, 2, 2)
    got_d = [it for it in range(iters) if d_regularizer(cfg, d, x, x, None, s.d_updates(it)) is not None]
    assert got_d == expected_d


@pytest.mark.parametrize("interval", [4, 16])
def test_one_to_one_schedule_regularizes_where_mmagic_does(interval):
    """MMagic's StyleGAN2: R1 when `iter % r1_interval == 0`, path length when `iter % g_reg_interval == 0` (both in
    iterations). With D and G each one update of one micro-batch per iteration, the update rule is the same."""
    d_reg, g_reg = regularized_micro_steps(Schedule(1, 1, 1, 1), interval, 100)
    mmagic = [it for it in range(100) if it % interval == 0]
    assert d_reg == mmagic and [it for it, _ in g_reg] == mmagic


def test_path_length_batch_is_shrunk_seeded_and_apart_from_g_noise():
    model, env = c.StyleGAN2Generator(out_size=8, style_channels=8), DistEnv.single("cpu")
    pl = PathLength(Loss(pl_weight=2.0, pl_batch_shrink=2), model, 5, env, 0.25)
    (z, y, probe), mean = pl.batch(3, 0, 8)
    assert z.shape == (4, 8) and y is None and mean.item() == 0.25
    (z_again, _, probe_again), _ = pl.batch(3, 0, 8)
    assert torch.equal(z, z_again) and torch.equal(
        torch.randn(3, generator=probe), torch.randn(3, generator=probe_again)
    )
    g_noise, _ = sample_latents(model, 5, env, 3, 1, 8)
    assert not torch.equal(z, g_noise[:4])
    assert pl.batch(3, 0, 1)[0].z.shape == (1, 8)  # never an empty batch
    pl.update(torch.tensor(0.5))
    assert math.isclose(pl.mean.item(), 0.5)


def test_penalties_run_partial_precision_layers_in_fp32():
    """R1 and path length of a StyleGAN2 with its top scale in bf16 equal those of the same weights in fp32."""
    small = {"channel_multiplier": 1, "channel_max": 16}
    reduced = {"num_fp16_scales": 1, "reduced_dtype": "bfloat16"}
    d32 = c.StyleGAN2Discriminator(in_size=8, **small).build()
    d16 = c.StyleGAN2Discriminator(in_size=8, **small, **reduced).build()
    d16.load_state_dict(d32.state_dict())
    x = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(r1_penalty(d16, x, None), r1_penalty(d32, x, None), rtol=0, atol=0)
    g_cfg = c.StyleGAN2Generator(out_size=8, style_channels=8, num_mlps=1, fixed_noise=True, **small)
    g32, g16 = g_cfg.build(), g_cfg.model_copy(update=reduced).build()
    g16.load_state_dict(g32.state_dict())
    z, args = torch.randn(2, 8), (torch.tensor(0.5), 0.01)
    a = path_length_penalty(g32.eval(), z, None, *args, torch.Generator().manual_seed(0))
    b = path_length_penalty(g16.eval(), z, None, *args, torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(g16(z), g32(z))  # outside the penalties the top scale is bf16
