"""Trains a small StyleGAN2 through dsgan's own d_step/g_step (R1 and path length included) on DeepSpeed engines,
and the same training as a plain PyTorch loop, for equivalence tests.

    python stylegan2_worker.py OUT_FILE CASE [CASE ...]      CASE = name:stage:precision:micro:accumulation

Each case makes UPDATES D updates and UPDATES G updates (schedule 1/1) on a fixed global batch of GLOBAL_BATCH images
per update, split into micro-batches and ranks. R1 and the path-length penalty run on updates 0 and 2 (interval 2),
so every case crosses both regularizers. Rank 0 saves the final full G and D weights and the path-length mean.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dsgan.config import Loss  # noqa: E402
from dsgan.config import models as c  # noqa: E402

GLOBAL_BATCH, UPDATES, SIZE = 8, 4, 16
LR, BETAS, EPS = 2e-3, (0.0, 0.99), 1e-8
LOSS = Loss(type="vanilla", r1_weight=1.0, r1_interval=2, pl_weight=2.0, pl_interval=2, pl_batch_shrink=2)
# No randomness inside the forward (fixed noise buffers, no style mixing): both sides see the same function.
G_CFG = c.StyleGAN2Generator(
    out_size=SIZE,
    style_channels=32,
    num_mlps=2,
    channel_multiplier=1,
    channel_max=32,
    fixed_noise=True,
    default_style_mode="single",
)
D_CFG = c.StyleGAN2Discriminator(in_size=SIZE, channel_multiplier=1, channel_max=32, mbstd_cfg={"group_size": 2})


def models(partial_bf16: bool = False) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    reduced = {"num_fp16_scales": 1, "reduced_dtype": "bfloat16"} if partial_bf16 else {}
    return G_CFG.model_copy(update=reduced).build(), D_CFG.model_copy(update=reduced).build()


def data() -> dict[str, torch.Tensor]:
    """Per update: reals, D's and G's noise, and the path-length batches (half size) with their probes."""
    gen = torch.Generator().manual_seed(1)
    n = (UPDATES, GLOBAL_BATCH)
    return {
        "real": torch.rand(*n, 3, SIZE, SIZE, generator=gen) * 2 - 1,
        "d_z": torch.randn(*n, 32, generator=gen),
        "g_z": torch.randn(*n, 32, generator=gen),
        "pl_z": torch.randn(*n, 32, generator=gen),  # the first half of each micro-batch's slice is used
        "probe_seed": torch.randint(2**62, n, generator=gen),
    }


def regularized(update: int) -> bool:
    return update % 2 == 0


def micro_slices(micro: int, acc: int, world: int) -> list[list[slice]]:
    """[j][r]: the global-batch slice of micro-step j on rank r (rank-major, as the engines split it)."""
    return [[slice((r * acc + j) * micro, (r * acc + j + 1) * micro) for r in range(world)] for j in range(acc)]


def pl_inputs(x: dict, u: int, sl: slice) -> tuple[torch.Tensor, torch.Generator]:
    half = slice(sl.start, sl.start + (sl.stop - sl.start) // LOSS.pl_batch_shrink)
    probe = torch.Generator().manual_seed(int(x["probe_seed"][u, sl.start]))
    return x["pl_z"][u, half], probe


def plain_reference(micro: int, acc: int, world: int, partial_bf16: bool = False) -> dict:
    """The same training as a plain loop in one process: each update sums the per-micro-batch losses of every
    (rank, micro-step) divided by their number (what DeepSpeed's accumulation and gradient averaging compute),
    with R1 and the path-length penalty written out here, independently of dsgan.losses.

    In float64 (the fp32 models and data, cast; the models still round to fp32 where they make a block's output or
    input full precision: each ToRGB's output, each D block's input), so that little of the loop's own round-off
    counts against the engines. In fp32 it is not small here: one pre-activation of G's last leaky ReLU in the third
    G update lies 9e-8 from zero and takes the other slope than in this loop; the gradient jumps at that kink, and
    G's biases end 5e-5 (relative) from this loop's, the engines' 6e-6 (measured). With `partial_bf16`, fp32: its
    bf16 layers stay bf16."""
    g, d = models(partial_bf16)
    x, parts, pl_mean = data(), world * acc, 0.0
    if not partial_bf16:
        g, d = g.double(), d.double()
        x = {k: v.double() if v.is_floating_point() else v for k, v in x.items()}
    g_opt = torch.optim.Adam(g.parameters(), lr=LR, betas=BETAS, eps=EPS)
    d_opt = torch.optim.Adam(d.parameters(), lr=LR, betas=BETAS, eps=EPS)
    for u in range(UPDATES):
        d_opt.zero_grad()
        for row in micro_slices(micro, acc, world):
            for sl in row:
                real = x["real"][u, sl]
                with torch.no_grad():
                    fake = g(x["d_z"][u, sl])
                loss = F.softplus(d(fake)).mean() + F.softplus(-d(real)).mean()
                if regularized(u):
                    real = real.detach().requires_grad_(True)
                    (grad,) = torch.autograd.grad(d(real).sum(), real, create_graph=True)
                    loss = loss + LOSS.r1_weight / 2 * LOSS.r1_interval * grad.pow(2).flatten(1).sum(1).mean()
                (loss / parts).backward()
        d_opt.step()
        d.requires_grad_(False)
        g_opt.zero_grad()
        for row in micro_slices(micro, acc, world):
            means = []
            for sl in row:
                loss = F.softplus(-d(g(x["g_z"][u, sl]))).mean()
                if regularized(u):
                    z, probe = pl_inputs(x, u, sl)
                    images, w = g(z, None, return_latents=True)
                    u_img = torch.randn(images.shape, generator=probe) / SIZE
                    (jt_u,) = torch.autograd.grad((images * u_img).sum(), w, create_graph=True)
                    lengths = jt_u.pow(2).sum(2).mean(1).sqrt()
                    a = pl_mean + LOSS.pl_decay * (lengths.mean() - pl_mean)
                    loss = loss + LOSS.pl_weight * LOSS.pl_interval * (lengths - a).pow(2).mean()
                    means.append(a.item())
                (loss / parts).backward()
            if means:
                pl_mean = sum(means) / len(means)
        g_opt.step()
        d.requires_grad_(True)
    return {"G": g.state_dict(), "D": d.state_dict(), "pl_mean": pl_mean}


def full_state(module: nn.Module) -> dict[str, torch.Tensor]:
    import deepspeed

    params = list(module.parameters())
    gathered = hasattr(params[0], "ds_id")
    with deepspeed.zero.GatheredParameters(params) if gathered else torch.no_grad():
        return {k: v.detach().float().clone() for k, v in module.state_dict().items()}


def run_case(stage: int, precision: str, micro: int, acc: int, env) -> dict:
    from dsgan.config import DeepSpeedConfig
    from dsgan.engines import build_engines
    from dsgan.steps import PathLength, PathLengthBatch, d_step, g_step

    assert micro * acc * env.world_size == GLOBAL_BATCH
    ds = DeepSpeedConfig.model_validate(
        {
            "train_micro_batch_size_per_gpu": micro,
            "gradient_accumulation_steps": acc,
            "optimizer": {
                "type": "Adam",
                "params": {"lr": LR, "betas": BETAS, "eps": EPS, "weight_decay": 0.0, "torch_adam": True},
            },
            "gradient_clipping": 0.0,
            "zero_optimization": {"stage": stage},
            "bf16": {"enabled": precision == "bf16", "immediate_grad_update": True, "check_grad_overflow": False},
        }
    )
    g, d = models(precision == "partial-bf16")
    engines = build_engines(g, d, ds, ds, env.world_size)
    path_length = PathLength(LOSS, G_CFG, 0, env, 0.0)
    x = data()
    r = env.rank
    for u in range(UPDATES):
        for row in micro_slices(micro, acc, env.world_size):
            d_step(engines, LOSS, x["real"][u, row[r]], None, x["d_z"][u, row[r]], None, u)
        for j, row in enumerate(micro_slices(micro, acc, env.world_size)):
            sl = row[r]
            pl = None
            if regularized(u):
                z, probe = pl_inputs(x, u, sl)
                pl = (PathLengthBatch(z, None, probe), path_length.mean)
            _, update, path_mean = g_step(engines, LOSS, x["g_z"][u, sl], None, False, pl)
            assert update.stepped == (j == acc - 1)
            if path_mean is not None:
                path_length.update(path_mean)
    return {
        "G": full_state(engines["generator"].module),
        "D": full_state(engines["discriminator"].module),
        "pl_mean": path_length.mean.item(),
        "d_updates": engines["discriminator"].global_steps,
        "g_updates": engines["generator"].global_steps,
    }


def main() -> None:
    import os

    from dsgan import distributed

    out, cases = Path(sys.argv[1]), sys.argv[2:]
    env = distributed.detect()
    distributed.init(env, timeout_seconds=300)
    torch.set_num_threads(1)
    results = {}
    for case in cases:
        name, stage, precision, micro, acc = case.split(":")
        results[name] = run_case(int(stage), precision, int(micro), int(acc), env)
    if env.rank == 0:
        torch.save(results, out)
    os._exit(0)  # skip DeepSpeed/gloo teardown, which can stall on CPU


if __name__ == "__main__":
    main()
