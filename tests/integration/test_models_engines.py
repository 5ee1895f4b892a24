"""BigGAN inside DeepSpeed engines on 2 CPU ranks (gloo): bf16 and autocast at ZeRO 0-3, spectral-norm `u` equal
across ranks, R1 through the D module inside a D engine step, and the EMA of a ZeRO-3 G equal to that of a ZeRO-0 G.
The first two with ADA ('bgc', p = 0.5) on every image D sees, R1's reals included.

Each test spawns 2 ranks that run the assertions themselves; a failing rank's traceback is re-raised here. The steps
are dsgan's own `d_step` and `g_step`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from launch import free_port
from torch import nn

from dsgan.augment import AugmentPipe
from dsgan.config import EMA as EMAConfig
from dsgan.config import Ada, DeepSpeedConfig, Loss
from dsgan.config import models as c
from dsgan.distributed import DistEnv
from dsgan.ema import EMA
from dsgan.engines import EngineDict, NetworkEngine
from dsgan.models import build_discriminator, build_generator
from dsgan.models.layers import SpectralNorm
from dsgan.steps import D_STATS, d_step, g_step

WORLD, BATCH, CLASSES = 2, 2, 4
HINGE = Loss()


def noise_size(scale: int) -> int:
    return 4 * {32: 4, 64: 5}[scale]  # divisible by the number of noise chunks


def models(scale: int) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)  # identical initial weights on every rank and for every ZeRO stage
    g = build_generator(
        c.BigGANGenerator(
            output_scale=scale, noise_size=noise_size(scale), num_classes=CLASSES, base_channels=8, shared_dim=8
        )
    )
    d = build_discriminator(c.BigGANDiscriminator(input_scale=scale, num_classes=CLASSES, base_channels=8))
    return g, d


def engine(name: str, model: nn.Module, stage: int, precision: str, sgd_lr: float | None = None) -> NetworkEngine:
    """Adam, or plain SGD where results must match across ZeRO stages: Adam divides by sqrt(v), which turns the
    rounding noise of a zero gradient (a conv bias before BatchNorm) into full-size steps that differ per stage."""
    import deepspeed

    cfg = {
        "train_micro_batch_size_per_gpu": BATCH,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": stage},
        "steps_per_print": 10**9,
    }
    optimizer = None
    if sgd_lr is None:
        cfg["optimizer"] = {"type": "Adam", "params": {"lr": 1e-4, "torch_adam": True}}
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=sgd_lr)
        cfg["zero_allow_untested_optimizer"] = True
    if precision == "bf16":
        cfg["bf16"] = {"enabled": True}
    elif precision == "autocast":
        cfg["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
    eng, *_ = deepspeed.initialize(
        model=model, model_parameters=list(model.parameters()), optimizer=optimizer, config=cfg
    )
    # NetworkEngine reads precision and ZeRO stage from its config; with a client optimizer (SGD) the config names
    # none, so the description states DeepSpeed's Adam only to be complete (DeepSpeed was handed `cfg` as is).
    described = cfg if "optimizer" in cfg else {**cfg, "optimizer": {"type": "Adam", "params": {"lr": sgd_lr}}}
    return NetworkEngine(name, eng, DeepSpeedConfig.model_validate(described))


def gathered(module: nn.Module) -> contextlib.AbstractContextManager:
    params = list(module.parameters())
    if hasattr(params[0], "ds_id"):
        import deepspeed

        return deepspeed.zero.GatheredParameters(params)
    return contextlib.nullcontext()


def full_params(module: nn.Module) -> dict[str, torch.Tensor]:
    with gathered(module):
        return {n: p.detach().float().clone() for n, p in module.named_parameters()}


def batch(rank: int, it: int, scale: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(1000 * it + rank)
    real = torch.rand(BATCH, 3, scale, scale, generator=gen) * 2 - 1
    labels = torch.randint(CLASSES, (BATCH,), generator=gen)
    z = torch.randn(2, BATCH, noise_size(scale), generator=gen)
    fake_y = torch.randint(CLASSES, (2, BATCH), generator=gen)
    return real, labels, z, fake_y


def augmentation(rank: int) -> AugmentPipe:
    """ADA with every 'bgc' op at p = 0.5 (fixed), drawn per rank and iteration as in the trainer."""
    env = DistEnv(rank=rank, local_rank=rank, world_size=WORLD, device=torch.device("cpu"))
    return AugmentPipe(Ada(target=None, initial_p=0.5), 0, env, BATCH * WORLD, None, (0.0, 0))


def train(
    g_eng,
    d_eng,
    rank: int,
    scale: int,
    iters: int,
    loss_cfg: Loss = HINGE,
    ema: EMA | None = None,
    augment: AugmentPipe | None = None,
) -> None:
    """`iters` x (one D update, one G update), through dsgan's step functions; D's inputs through `augment`."""
    engines = EngineDict(g_eng, d_eng)
    for it in range(iters):
        real, labels, z, fake_y = batch(rank, it, scale)
        real_view, fake_view = augment.d_views(it) if augment else (None, None)
        d_stats, _ = d_step(engines, loss_cfg, real, labels, z[0], fake_y[0], it, False, real_view, fake_view)
        assert torch.isfinite(d_stats).all(), d_stats
        if loss_cfg.r1_weight:
            assert d_stats[D_STATS.index("d_reg")] > 0  # the R1 term was computed and added
        g_view = augment.g_view(it, 0) if augment else None
        g_stats, update, _ = g_step(engines, loss_cfg, z[1], fake_y[1], view=g_view)
        loss = g_stats[0]
        assert torch.isfinite(loss) and update.stepped
        if ema is not None:
            ema.update(g_eng.module, g_eng.global_steps)


def same_on_all_ranks(t: torch.Tensor) -> bool:
    out = [torch.empty_like(t) for _ in range(WORLD)]
    dist.all_gather(out, t.contiguous())
    return all(torch.equal(out[0], o) for o in out[1:])


def spectral_u(module: nn.Module) -> torch.Tensor:
    return torch.cat([m.u for m in module.modules() if isinstance(m, SpectralNorm)])


def check_trained(g_eng, d_eng, before: dict[str, dict[str, torch.Tensor]]) -> None:
    """u equal across ranks and moved; parameters updated (D's first layer included: its input needs no grad,
    DeepSpeed #5524) and equal across ranks."""
    for name, eng in (("generator", g_eng), ("discriminator", d_eng)):
        u = spectral_u(eng.module)
        assert same_on_all_ranks(u), f"{name}: spectral-norm u differs across ranks"
        after = full_params(eng.module)
        first = "fc.weight" if name == "generator" else "blocks.0.conv1.weight"
        assert not torch.equal(after[first], before[name][first]), f"{name}.{first} was not updated"
        assert same_on_all_ranks(torch.cat([p.flatten() for p in after.values()])), f"{name}: ranks diverged"


# ---- scenarios, run on every rank


def scenario_precisions(rank: int) -> None:
    for scale, stage, precision in ((32, 0, "bf16"), (32, 3, "bf16"), (64, 3, "bf16"), (32, 2, "autocast")):
        g, d = models(scale)
        u0 = spectral_u(g)
        g_eng, d_eng = engine("generator", g, stage, precision), engine("discriminator", d, stage, precision)
        before = {"generator": full_params(g_eng.module), "discriminator": full_params(d_eng.module)}
        train(g_eng, d_eng, rank, scale, iters=2, augment=augmentation(rank))
        check_trained(g_eng, d_eng, before)
        assert not torch.equal(spectral_u(g_eng.module), u0)
        assert g_eng.module.attention is not None or scale == 32


def scenario_r1(rank: int) -> None:
    for stage in (0, 2):
        g, d = models(32)
        g_eng, d_eng = engine("generator", g, stage, "bf16"), engine("discriminator", d, stage, "bf16")
        before = {"generator": full_params(g_eng.module), "discriminator": full_params(d_eng.module)}
        train(g_eng, d_eng, rank, 32, iters=2, loss_cfg=Loss(r1_weight=10.0), augment=augmentation(rank))
        check_trained(g_eng, d_eng, before)


def scenario_ema(rank: int) -> None:
    states = {}
    for stage in (0, 3):
        g, d = models(32)
        g_eng, d_eng = (
            engine("generator", g, stage, "fp32", sgd_lr=0.1),
            engine("discriminator", d, stage, "fp32", sgd_lr=0.1),
        )
        ema = EMA(g_eng.module, EMAConfig(momentum=0.5))  # built from the partitioned G at ZeRO-3
        train(g_eng, d_eng, rank, 32, iters=3, ema=ema)
        assert same_on_all_ranks(torch.cat([p.flatten() for p in ema.module.parameters()]))
        states[stage] = ema.state_dict()
    initial = models(32)[0].state_dict()
    for k, v in states[0].items():
        torch.testing.assert_close(states[3][k], v, rtol=1e-5, atol=1e-6, msg=k)
    assert not torch.equal(states[0]["fc.weight"], initial["fc.weight"])
    z, y = batch(rank, 0, 32)[2:]
    ema.module(z[0], y[0])  # the copy carries no ZeRO-3 hooks


def worker(rank: int, port: int, scenario: Callable[[int], None]) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo")
    scenario(rank)  # a failure raises here and mp.spawn reports it
    dist.barrier()
    # Skip interpreter teardown: DeepSpeed's and gloo's threads can abort it ("terminate called without an active
    # exception", SIGABRT), failing a test whose assertions all passed.
    os._exit(0)


def spawn(scenario: Callable[[int], None]) -> None:
    mp.spawn(worker, args=(free_port(), scenario), nprocs=WORLD, join=True)


def test_biggan_trains_in_bf16_and_autocast_engines_at_zero_0_to_3():
    spawn(scenario_precisions)


def test_r1_through_d_module_inside_d_engine_step_at_zero_0_and_2():
    spawn(scenario_r1)


def test_zero3_ema_equals_zero0_ema():
    spawn(scenario_ema)
