"""dsgan's cost against hand-written loops, measured side by side in one run.

    python benchmarks/bench.py            # the CPU suite (< 10 minutes on 2 cores)
    python benchmarks/bench.py --gpu      # BigGAN-128 on a GPU (bf16 and fp16), dsgan vs the plain loop

Each measurement launches fresh processes (`worker` mode) so that DeepSpeed, gloo and the plain loops never share
a process; trials of the two sides alternate, and the best of the trials is reported (least disturbed by noise).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODELS = {
    "dcgan32": (
        {"type": "DCGANGenerator", "output_scale": 32, "noise_size": 64, "num_classes": 10, "base_channels": 64},
        {"type": "DCGANDiscriminator", "input_scale": 32, "num_classes": 10, "base_channels": 64},
    ),
    "biggan32-ch32": (
        {"type": "BigGANGenerator", "output_scale": 32, "num_classes": 10, "base_channels": 32},
        {"type": "BigGANDiscriminator", "input_scale": 32, "num_classes": 10, "base_channels": 32},
    ),
    "biggan128": ({"type": "BigGANGenerator"}, {"type": "BigGANDiscriminator"}),
}


# ---------------------------------------------------------------------------------------------------------------
# worker side: one process (or one rank) runs one loop and prints a JSON line


def build_models(name: str) -> tuple[nn.Module, nn.Module]:
    from pydantic import TypeAdapter

    from dsgan.config import DiscriminatorModel, GeneratorModel
    from dsgan.models import build_discriminator, build_generator

    g_cfg, d_cfg = MODELS[name]
    torch.manual_seed(0)
    return (
        build_generator(TypeAdapter(GeneratorModel).validate_python(g_cfg)),
        build_discriminator(TypeAdapter(DiscriminatorModel).validate_python(d_cfg)),
    )


def batches(g: nn.Module, batch: int, n: int, device: torch.device) -> list[tuple]:
    gen = torch.Generator().manual_seed(0)
    s = g.output_scale
    out = []
    for _ in range(n):
        y = torch.randint(g.num_classes, (batch,), generator=gen)
        out.append(
            tuple(
                t.to(device)
                for t in (
                    torch.rand(batch, 3, s, s, generator=gen) * 2 - 1,
                    y,
                    torch.randn(batch, g.noise_size, generator=gen),
                    y,
                    torch.randn(batch, g.noise_size, generator=gen),
                )
            )
        )
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_dsgan(args: argparse.Namespace, device: torch.device, world: int) -> float:
    from dsgan.config import DeepSpeedConfig, Loss
    from dsgan.engines import build_engines
    from dsgan.steps import d_step, g_step

    g, d = build_models(args.model)
    ds = DeepSpeedConfig.model_validate(
        {
            "train_micro_batch_size_per_gpu": args.batch,
            "optimizer": {
                "type": "Adam",
                "params": {"lr": 1e-4, "betas": [0.0, 0.999], "eps": 1e-8, "weight_decay": 0.0, "torch_adam": True},
            },
            "gradient_clipping": 0.0,  # DeepSpeed's default is 1.0
            "zero_optimization": {"stage": args.zero},
            "bf16": {"enabled": args.precision == "bf16", "immediate_grad_update": True, "check_grad_overflow": False},
            "fp16": {"enabled": args.precision == "fp16"},
        }
    )
    engines = build_engines(g, d, ds, ds, world)
    data = batches(g, args.batch, 4, device)
    loss_cfg = Loss()

    def step(i: int) -> None:
        real, labels, z, y, gz = data[i % len(data)]
        # No gradient norms, as in the trainer between log lines (it measures in the cycle before one).
        d_step(engines, loss_cfg, real, labels, z, y, i)
        g_step(engines, loss_cfg, gz, y)

    return timed(step, args, device)


def run_plain(args: argparse.Namespace, device: torch.device, world: int) -> float:
    """The hand-written loop: same models, data, precision (autocast for bf16/fp16 with fp32 master weights, as
    DeepSpeed keeps them), plain torch.optim.Adam; DDP when world > 1."""
    from dsgan.losses import d_loss, g_loss

    g, d = build_models(args.model)
    g, d = g.to(device), d.to(device)
    g_opt = torch.optim.Adam(g.parameters(), lr=1e-4, betas=(0.0, 0.999))
    d_opt = torch.optim.Adam(d.parameters(), lr=1e-4, betas=(0.0, 0.999))
    d_train = d
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        g, d_train = DDP(g), DDP(d, broadcast_buffers=False)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    data = batches(g.module if world > 1 else g, args.batch, 4, device)

    def autocast():
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

    def step(i: int) -> None:
        real, labels, z, y, gz = data[i % len(data)]
        with torch.no_grad(), autocast():
            fake = g(z, y)
        with autocast():
            if world > 1:  # DDP allows one forward per backward: real and fake in one batch
                logits = d_train(torch.cat([real, fake]), torch.cat([labels, y]))
                loss, _ = d_loss("hinge", logits[: len(real)], logits[len(real) :])
            else:  # exactly dsgan's computation: two D forwards
                loss, _ = d_loss("hinge", d(real, labels), d(fake, y))
        d_opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(d_opt)
        d.requires_grad_(False)
        with autocast():
            loss = g_loss("hinge", d(g(gz, y), y))
        g_opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(g_opt)
        scaler.update()
        d.requires_grad_(True)

    return timed(step, args, device)


def timed(step, args: argparse.Namespace, device: torch.device) -> float:
    for i in range(args.warmup):
        step(i)
    sync(device)
    start = time.perf_counter()
    for i in range(args.iters):
        step(i)
    sync(device)
    return args.iters * args.batch / (time.perf_counter() - start)


def worker(args: argparse.Namespace) -> None:
    from dsgan import distributed

    env = distributed.detect()
    distributed.init(env, timeout_seconds=600)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // env.world_size))
    run = run_dsgan if args.side == "dsgan" else run_plain
    images_per_s = run(args, env.device, env.world_size)
    state = model_state_bytes() if args.side == "dsgan" else None
    if env.rank == 0:
        print(
            "RESULT "
            + json.dumps(
                {
                    "images_per_s": images_per_s * env.world_size,
                    "state_bytes": state,
                    "max_memory": _max_memory(env.device),
                }
            ),
            flush=True,
        )
    os._exit(0)


def model_state_bytes() -> int:
    """Bytes of parameters, gradients and optimizer state that this rank holds (what ZeRO partitions)."""
    import gc

    seen, total = set(), 0
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and not obj.is_meta and obj.numel():
            with contextlib.suppress(RuntimeError):  # tensors without storage
                storage = obj.untyped_storage()
                if storage.data_ptr() not in seen:  # views into DeepSpeed's flat buffers count once
                    seen.add(storage.data_ptr())
                    total += storage.nbytes()
    return total


def _max_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---------------------------------------------------------------------------------------------------------------
# driver side


def measure(side: str, world: int, **kw) -> dict:
    from tests.launch import launch  # the same launcher the tests use: torchrun-style environment

    args = [str(Path(__file__)), "--worker", "--side", side] + [f"--{k.replace('_', '-')}={v}" for k, v in kw.items()]
    results = launch(args, world_size=world, timeout=900)
    for r in results:
        if r.returncode != 0:
            raise RuntimeError(r.stdout[-3000:])
    line = next(x for x in results[0].stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def best_of(trials: int, side: str, world: int, **kw) -> dict:
    return max((measure(side, world, **kw) for _ in range(trials)), key=lambda r: r["images_per_s"])


def compare(label: str, target: float, trials: int, a: tuple, b: tuple, **kw) -> None:
    """Alternate trials of two sides; print images/s of each and the ratio against its target."""
    ra, rb = [], []
    for _ in range(trials):
        ra.append(measure(a[0], a[1], **kw)["images_per_s"])
        rb.append(measure(b[0], b[1], **kw)["images_per_s"])
    ratio = max(ra) / max(rb)
    verdict = "meets" if ratio >= target else "BELOW"
    print(
        f"{label:<44} {max(ra):9.1f} vs {max(rb):9.1f} img/s  ratio {ratio:5.3f}  target >= {target}  {verdict}",
        flush=True,
    )


def cpu_suite(trials: int) -> None:
    print(
        f"# dsgan benchmarks, CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}",
        flush=True,
    )
    common = {"iters": 30, "warmup": 5}
    for model, batch in (("dcgan32", 64), ("biggan32-ch32", 16)):
        for precision in ("fp32", "bf16"):
            compare(
                f"1 rank {model} {precision}: dsgan / plain",
                0.97,
                trials,
                ("dsgan", 1),
                ("plain", 1),
                model=model,
                batch=batch,
                precision=precision,
                zero=0,
                **common,
            )
    compare(
        "2 ranks dcgan32 fp32: dsgan / DDP",
        1.0,
        trials,
        ("dsgan", 2),
        ("plain", 2),
        model="dcgan32",
        batch=64,
        precision="fp32",
        zero=0,
        **common,
    )
    one = best_of(trials, "dsgan", 1, model="dcgan32", batch=64, precision="fp32", zero=0, **common)
    two = best_of(trials, "dsgan", 2, model="dcgan32", batch=64, precision="fp32", zero=0, **common)
    eff = two["images_per_s"] / (2 * one["images_per_s"])
    print(
        f"{'scaling 1 -> 2 ranks dcgan32 (64/rank)':<44} {one['images_per_s']:9.1f} -> {two['images_per_s']:9.1f}"
        f" img/s  efficiency {eff:5.3f}  (2 ranks share {os.cpu_count()} cores here)",
        flush=True,
    )
    print("peak memory per rank, biggan32-ch32, 2 ranks (params + grads + optimizer state held by rank 0; RSS):")
    for stage in range(4):
        r = measure("dsgan", 2, model="biggan32-ch32", batch=8, precision="fp32", zero=stage, iters=2, warmup=1)
        tensors, rss = r["state_bytes"] / 2**20, r["max_memory"] / 2**20
        print(f"  ZeRO-{stage}: tensors {tensors:8.1f} MiB   peak RSS {rss:8.1f} MiB", flush=True)


def gpu_suite(trials: int) -> None:
    print(f"# BigGAN-128 (the seed's config), {torch.cuda.get_device_name()}, torch {torch.__version__}")
    for precision in ("bf16", "fp16"):
        compare(
            f"1 GPU biggan128 {precision} batch 32: dsgan / plain",
            0.97,
            trials,
            ("dsgan", 1),
            ("plain", 1),
            model="biggan128",
            batch=32,
            precision=precision,
            zero=0,
            iters=20,
            warmup=5,
        )
    batch = 32
    while True:
        try:
            measure("dsgan", 1, model="biggan128", batch=batch * 2, precision="bf16", zero=0, iters=2, warmup=1)
            batch *= 2
        except RuntimeError:
            break
    print(f"largest bf16 micro-batch that fits (powers of 2): {batch}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--trials", type=int, default=2)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--side", choices=("dsgan", "plain"))
    p.add_argument("--model", choices=sorted(MODELS), default="dcgan32")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    p.add_argument("--zero", type=int, default=0)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    args = p.parse_args()
    if args.worker:
        worker(args)
    elif args.gpu:
        gpu_suite(args.trials)
    else:
        cpu_suite(args.trials)


if __name__ == "__main__":
    main()
