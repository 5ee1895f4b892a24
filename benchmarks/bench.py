"""dsgan's cost against hand-written loops, measured side by side in one run.

    python benchmarks/bench.py            # the CPU suite (< 10 minutes on 2 cores)
    python benchmarks/bench.py --gpu      # BigGAN-128 on a GPU (bf16 and fp16), dsgan vs the plain loop
    python benchmarks/bench.py --profile --model biggan32-ch32 --precision bf16 --batch 16
                                          # operator-level account of one row: what each side runs per step

Each side of a row runs in its own processes (`worker` mode: DeepSpeed, gloo and the plain loop never share a
process), built and warmed up once; the two then run short timed blocks in alternation (A B, B A, A B, ...), each
pair of adjacent blocks giving one ratio, so that both sides see the same machine load. A row reports the median
ratio with its min and max; when that spread is wider than the median's distance to the target, the row is
"inconclusive" rather than "meets" or "BELOW". Beside the images/s ratio, the same for the ratio of CPU seconds
that the two sides' processes spent on the same steps: other processes on the machine stretch wall-clock far more
than CPU time. Each rank runs one torch thread unless --threads says otherwise: with more, a thread that finishes
its share waits (spinning) for a descheduled sibling, and on a shared machine both ratios become noise. The header
records the machine, threads, allocator and load average.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import queue
import statistics
import sys
import threading
import time
from collections.abc import Callable
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

Step = Callable[[int], None]

STEADY_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(2**25), "MALLOC_TRIM_THRESHOLD_": str(2**28)}
"""The timed workers' glibc allocator: fixed thresholds, the same for both sides. With glibc's dynamic ones, large
freed tensors go back to the kernel and the next ones fault in fresh zeroed pages (4-5% of a single-thread CPU
step), by an amount fixed at each launch by its allocation history: 17k-30k page faults per BigGAN-32 step and
5k-16k per DCGAN-32 step across launches of the same side, a bias of a few percent on whichever side drew more.
(--dynamic-malloc measures as a plain launch runs.)"""


# ---------------------------------------------------------------------------------------------------------------
# worker side: one process (or one rank) builds one loop, then runs timed blocks of it on command


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


def dsgan_step(args: argparse.Namespace, device: torch.device, world: int) -> tuple[Step, list[nn.Module]]:
    """dsgan's D and G micro-steps through its two engines (the trainer's calls); also the engines' modules."""
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

    return step, [engines["generator"].module, engines["discriminator"].module]


def plain_step(args: argparse.Namespace, device: torch.device, world: int) -> tuple[Step, list[nn.Module]]:
    """The hand-written loop: same models, data, precision (autocast for bf16/fp16 with fp32 master weights, as
    DeepSpeed keeps them), plain torch.optim.Adam; DDP when world > 1."""
    from dsgan.losses import d_loss, g_loss

    g, d = build_models(args.model)
    g, d = g.to(device), d.to(device)
    g_opt = torch.optim.Adam(g.parameters(), lr=1e-4, betas=(0.0, 0.999))
    d_opt = torch.optim.Adam(d.parameters(), lr=1e-4, betas=(0.0, 0.999))
    modules, d_train = [g, d], d
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        g, d_train = DDP(g), DDP(d, broadcast_buffers=False)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    data = batches(modules[0], args.batch, 4, device)

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

    return step, modules


def timed(step: Step, first: int, iters: int, device: torch.device) -> tuple[float, float]:
    """Run steps first .. first + iters - 1; their wall-clock and this process's CPU seconds (all threads)."""
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(first, first + iters):
        step(i)
    sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def worker(args: argparse.Namespace) -> None:
    """Build, warm up, print READY; then for each line "N" on stdin run N steps and print BLOCK wall cpu; on "quit"
    (or end of input) print RESULT. Every rank reads the same commands; rank 0 prints."""
    from dsgan import distributed

    env = distributed.detect()
    distributed.init(env, timeout_seconds=900)
    torch.set_num_threads(args.threads if args.threads > 0 else max(1, (os.cpu_count() or 1) // env.world_size))
    step, modules = (dsgan_step if args.side == "dsgan" else plain_step)(args, env.device, env.world_size)

    def say(tag: str, payload: object) -> None:
        if env.rank == 0:
            print(f"{tag} {json.dumps(payload)}", flush=True)

    if args.profile_steps:
        say("PROFILE", profile(step, modules, args.warmup, args.profile_steps))
        os._exit(0)
    timed(step, 0, args.warmup, env.device)
    say("READY", None)
    iteration = args.warmup
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        iters = int(line)
        wall, cpu = timed(step, iteration, iters, env.device)
        iteration += iters
        say("BLOCK", {"images_per_s": iters * args.batch * env.world_size / wall, "cpu_s": cpu, "wall_s": wall})
    state = model_state_bytes() if args.side == "dsgan" else None
    say("RESULT", {"state_bytes": state, "max_memory": _max_memory(env.device)})
    os._exit(0)


def profile(step: Step, modules: list[nn.Module], warmup: int, steps: int) -> dict:
    """What one side runs per step: module calls; the hooks on the networks' modules and parameters; every operator's
    count and self CPU time per step (`ops`, by name, over `steps` steps); and, from one more step traced with Python
    stacks, the Python calls and each operator by name, input shapes and the innermost dsgan/DeepSpeed/benchmark
    frame that called it (`sites`; "autograd" for backward ops). Counts do not depend on the machine's load; times
    do."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for i in range(warmup):
        step(i)
    calls: collections.Counter[str] = collections.Counter()
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: calls.update([type(m).__name__]))
    step(warmup)
    handle.remove()
    submodules = [m for module in modules for m in module.modules()]
    params = [p for module in modules for p in module.parameters()]
    hooks = {
        "module forward pre/post": sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in submodules),
        "module backward": sum(len(m._backward_hooks) + len(m._backward_pre_hooks) for m in submodules),
        "parameter post-accumulate-grad": sum(len(p._post_accumulate_grad_hooks or {}) for p in params),
        "parameter grad": sum(len(p._backward_hooks or {}) for p in params),
    }
    # Times without Python tracing (which slows every call), then one step with stacks for who called each op.
    with torch_profile(activities=[ProfilerActivity.CPU]) as timing:
        for i in range(warmup + 1, warmup + 1 + steps):
            step(i)
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_stack=True) as stacks:
        step(warmup + 1 + steps)
    ops = {e.key: (e.count / steps, e.self_cpu_time_total / 1000 / steps) for e in timing.key_averages()}
    sites: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    python_calls = 0
    for event in stacks.events():
        if _is_python(event):
            python_calls += 1
        else:
            site = sites[f"{event.name} {event.input_shapes} @ {_origin(event)}"]
            site[0] += 1
            site[1] += event.self_cpu_time_total / 1000
    return {"module_calls": dict(calls), "hooks": hooks, "python_calls": python_calls, "ops": ops, "sites": sites}


def _is_python(event) -> bool:
    return ".py(" in event.name or event.name.startswith("<built-in")


def _origin(event) -> str:
    """The innermost Python frame in dsgan, DeepSpeed or this script above an op: who asked for it ("autograd" for
    the backward engine's ops, which have no Python caller)."""
    parent, python = event.cpu_parent, False
    while parent is not None:
        if _is_python(parent):
            python = True
            for root in ("dsgan/", "deepspeed/", "benchmarks/"):
                if root in parent.name:
                    path, function = parent.name.split(root, 1)[1].split(": ", 1)
                    return f"{root}{path.split('(')[0]}:{function}"
        parent = parent.cpu_parent
    return "torch" if python else "autograd"


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


def worker_args(side: str, **kw) -> list[str]:
    return [str(Path(__file__)), "--worker", "--side", side] + [f"--{k.replace('_', '-')}={v}" for k, v in kw.items()]


class Side:
    """One side of a row: its processes (one per rank, the tests' launcher: torchrun-style environment), built and
    warmed up once, then idle on stdin until asked to run a block."""

    def __init__(self, side: str, world: int, env: dict[str, str] | None = None, **kw) -> None:
        from tests.launch import start

        self.name = f"{side} x{world}"
        self.procs = start(worker_args(side, **kw), world_size=world, env=env, stdin_pipe=True)
        self.output: list[list[str]] = [[] for _ in self.procs]
        self.lines: queue.Queue[str | None] = queue.Queue()
        for rank in range(world):
            threading.Thread(target=self._drain, args=(rank,), daemon=True).start()

    def _drain(self, rank: int) -> None:
        # Every rank's pipe is read, so that none blocks on a full pipe; rank 0's lines are the protocol.
        for line in self.procs[rank].stdout:
            self.output[rank].append(line)
            if rank == 0:
                self.lines.put(line)
        if rank == 0:
            self.lines.put(None)

    def expect(self, tag: str) -> dict | None:
        while True:
            try:
                line = self.lines.get(timeout=1800)
            except queue.Empty:
                line = None
            if line is None:
                tail = "".join(line for rank in self.output for line in rank[-40:])
                raise RuntimeError(f"{self.name} stopped before {tag}:\n{tail}")
            if line.startswith(tag + " "):
                return json.loads(line[len(tag) + 1 :])

    def send(self, command: str) -> None:
        for p in self.procs:
            p.stdin.write(command + "\n")
            p.stdin.flush()

    def block(self, iters: int) -> dict:
        self.send(str(iters))
        return self.expect("BLOCK")

    def close(self) -> dict:
        self.send("quit")
        result = self.expect("RESULT")
        for p in self.procs:
            p.wait()
        return result

    def __enter__(self) -> Side:
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def one_shot(side: str, world: int, **kw) -> dict:
    """Build, run `warmup` steps, report memory: for the memory rows and the largest-batch search."""
    with Side(side, world, **kw) as s:
        s.expect("READY")
        return s.close()


def verdict(ratios: list[float], target: float) -> str:
    """'meets' or 'BELOW' by the median ratio, unless the ratios' spread (max - min) is wider than the median's
    distance to the target: then the machine's noise decides, and the row says so."""
    median = statistics.median(ratios)
    if max(ratios) - min(ratios) > abs(median - target):
        return "inconclusive"
    return "meets" if median >= target else "BELOW"


def compare(label: str, target: float | None, opts: argparse.Namespace, a: tuple, b: tuple, **kw) -> list[float]:
    """Alternate timed blocks of sides a and b (order flipping each round) and print a's images/s over b's and the
    ratio of CPU seconds (b's over a's, for the same steps), each as median [min, max] over the rounds with its
    verdict against `target`, and the load average before and after. Returns the images/s ratios (none for a row
    that --only leaves out)."""
    if opts.only not in label:
        return []
    load = os.getloadavg()[0]
    env = None if opts.dynamic_malloc else STEADY_MALLOC
    with Side(*a, env, threads=opts.threads, **kw) as side_a, Side(*b, env, threads=opts.threads, **kw) as side_b:
        sides = (side_a, side_b)
        for s in sides:
            s.expect("READY")
        # One step of each, alone, sizes the blocks (the warm-ups above ran concurrently).
        seconds_per_iter = max(s.block(1)["wall_s"] for s in sides)
        iters = max(1, round(opts.block_seconds / seconds_per_iter))
        rates: dict[Side, list[float]] = {s: [] for s in sides}
        cpu: dict[Side, list[float]] = {s: [] for s in sides}
        for r in range(opts.rounds):
            for s in sides if r % 2 == 0 else sides[::-1]:
                result = s.block(iters)
                rates[s].append(result["images_per_s"])
                cpu[s].append(result["cpu_s"])
        for s in sides:
            s.close()
    ratios = [x / y for x, y in zip(rates[side_a], rates[side_b], strict=True)]
    cpu_ratios = [y / x for x, y in zip(cpu[side_a], cpu[side_b], strict=True)]

    def spread(xs: list[float]) -> str:
        judged = f" {verdict(xs, target)}" if target is not None else ""
        return f"{statistics.median(xs):5.3f} [{min(xs):5.3f}, {max(xs):5.3f}]{judged}"

    print(
        f"{label:<40} {statistics.median(rates[side_a]):8.1f} vs {statistics.median(rates[side_b]):8.1f} img/s"
        f"  ratio {spread(ratios)}  cpu {spread(cpu_ratios)}  target {target}  ({opts.rounds} x {iters} it,"
        f" load {load:.1f} -> {os.getloadavg()[0]:.1f})",
        flush=True,
    )
    return ratios


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = [x.split(":", 1)[1].strip() for x in cpuinfo.read_text().splitlines() if x.startswith("model name")]
    cpu = names[0] if names else platform.processor() or platform.machine()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores; torch {torch.__version__},"
        f" DeepSpeed {importlib.metadata.version('deepspeed')};"
        f" {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; load average {load} (1, 5, 15 min)"
    )


def cpu_suite(opts: argparse.Namespace) -> None:
    print(f"# dsgan benchmarks, CPU: {machine()}", flush=True)
    malloc = "glibc's dynamic thresholds" if opts.dynamic_malloc else f"fixed glibc thresholds {STEADY_MALLOC}"
    print(f"# threads per rank: {opts.threads if opts.threads > 0 else 'cores / ranks'}; allocator: {malloc}")
    print("# images/s (medians); ratio and cpu: median [min, max] over the rounds, verdict against the target")
    for model, batch in (("dcgan32", 64), ("biggan32-ch32", 16)):
        for precision in ("fp32", "bf16"):
            compare(
                f"1 rank {model} {precision}: dsgan / plain",
                0.97,
                opts,
                ("dsgan", 1),
                ("plain", 1),
                model=model,
                batch=batch,
                precision=precision,
                zero=0,
                warmup=3,
            )
    common = {"model": "dcgan32", "batch": 64, "precision": "fp32", "zero": 0, "warmup": 3}
    compare("2 ranks dcgan32 fp32: dsgan / DDP", 1.0, opts, ("dsgan", 2), ("plain", 2), **common)
    ratios = compare("dsgan dcgan32 (64/rank): 2 ranks / 1", None, opts, ("dsgan", 2), ("dsgan", 1), **common)
    if ratios:
        efficiency = statistics.median(ratios) / 2
        print(f"{'':<40} scaling efficiency {efficiency:5.3f} (2 ranks share {os.cpu_count()} cores here)")
    if opts.only:
        return
    print("peak memory per rank, biggan32-ch32, 2 ranks (params + grads + optimizer state held by rank 0; RSS):")
    for stage in range(4):
        r = one_shot("dsgan", 2, model="biggan32-ch32", batch=8, precision="fp32", zero=stage, warmup=2)
        tensors, rss = r["state_bytes"] / 2**20, r["max_memory"] / 2**20
        print(f"  ZeRO-{stage}: tensors {tensors:8.1f} MiB   peak RSS {rss:8.1f} MiB", flush=True)


def gpu_suite(opts: argparse.Namespace) -> None:
    print(f"# BigGAN-128 (the seed's config), {torch.cuda.get_device_name()}; {machine()}")
    for precision in ("bf16", "fp16"):
        compare(
            f"1 GPU biggan128 {precision} batch 32: dsgan / plain",
            0.97,
            opts,
            ("dsgan", 1),
            ("plain", 1),
            model="biggan128",
            batch=32,
            precision=precision,
            zero=0,
            warmup=5,
        )
    batch = 32
    while True:
        try:
            one_shot("dsgan", 1, model="biggan128", batch=batch * 2, precision="bf16", zero=0, warmup=2)
            batch *= 2
        except RuntimeError:
            break
    print(f"largest bf16 micro-batch that fits (powers of 2): {batch}")


def profile_row(opts: argparse.Namespace) -> None:
    """Both sides of one row under torch.profiler (rank 0's ops), one after the other (op counts do not depend on
    load): module calls, hooks, and the operators whose count per step differs, with where they come from."""
    from tests.launch import launch

    row = {"model": opts.model, "batch": opts.batch, "precision": opts.precision, "zero": 0, "warmup": 3}
    row["threads"] = opts.threads
    profiles = {}
    for side in ("dsgan", "plain"):
        result = launch(worker_args(side, profile_steps=opts.profile_steps, **row), opts.ranks, timeout=1800)[0]
        line = next((x for x in result.stdout.splitlines() if x.startswith("PROFILE ")), None)
        if result.returncode != 0 or line is None:
            raise RuntimeError(result.stdout[-3000:])
        profiles[side] = json.loads(line[len("PROFILE ") :])
    row_name = f"{opts.ranks} rank(s) {opts.model} {opts.precision} batch {opts.batch}"
    print(f"# operator profile, {row_name}, per step (rank 0); {machine()}")
    for what in ("module_calls", "hooks"):
        for side, prof in profiles.items():
            print(f"{what} {side}: {sum(prof[what].values())} {prof[what]}")
    print("Python calls (traced): " + ", ".join(f"{side} {prof['python_calls']}" for side, prof in profiles.items()))
    by_name = {side: prof["ops"] for side, prof in profiles.items()}
    for side, ops in by_name.items():
        print(f"{side}: {sum(c for c, _ in ops.values()):.0f} ops, {sum(t for _, t in ops.values()):.1f} ms self CPU")
    print(f"{'operator (count differs)':<44} {'dsgan':>8} {'plain':>8} {'dsgan ms':>9} {'plain ms':>9}")
    names = sorted(set(by_name["dsgan"]) | set(by_name["plain"]))
    for name in names:
        (cd, td), (cp, tp) = by_name["dsgan"].get(name, (0, 0)), by_name["plain"].get(name, (0, 0))
        if round(cd, 2) != round(cp, 2):
            print(f"{name[:44]:<44} {cd:8.2f} {cp:8.2f} {td:9.2f} {tp:9.2f}")
    print(f"where the differing counts come from (up to {opts.top * 3}; operator, input shapes: surplus, callers):")
    by_shape = {side: _sum_by(prof["sites"], lambda key: key.split(" @ ")[0]) for side, prof in profiles.items()}
    surplus: dict[str, list[float]] = {"dsgan": [0, 0.0], "plain": [0, 0.0]}
    rows = []
    for key in set(by_shape["dsgan"]) | set(by_shape["plain"]):
        diff = by_shape["dsgan"].get(key, (0, 0.0))[0] - by_shape["plain"].get(key, (0, 0.0))[0]
        if diff:
            side = "dsgan" if diff > 0 else "plain"
            count, ms = by_shape[side][key]
            surplus[side][0] += abs(diff)
            surplus[side][1] += ms * abs(diff) / count  # the surplus calls' share of this key's self CPU
            rows.append((-abs(diff), key, side))
    for minus_diff, key, side in sorted(rows)[: opts.top * 3]:
        callers = sorted({k.split(" @ ")[1] for k in profiles[side]["sites"] if k.startswith(key + " @ ")})
        print(f"  {side} {-minus_diff:+4.0f}  {key[:70]}  {', '.join(callers)[:150]}")
    for side, (count, ms) in surplus.items():
        total = sum(ms for _, ms in by_shape[side].values())
        share = 100 * ms / total
        print(f"surplus ops on the {side} side: {count:.0f} calls, {ms:.2f} ms self CPU ({share:.2f}% of its ops)")
    print(f"top {opts.top} operators by self CPU (ms per step; load-dependent):")

    def self_ms(name: str) -> float:
        return max(by_name["dsgan"].get(name, (0, 0))[1], by_name["plain"].get(name, (0, 0))[1])

    for name in sorted(names, key=self_ms, reverse=True)[: opts.top]:
        (cd, td), (cp, tp) = by_name["dsgan"].get(name, (0, 0)), by_name["plain"].get(name, (0, 0))
        print(f"  {name[:44]:<44} {cd:8.2f} {cp:8.2f} {td:9.2f} {tp:9.2f}")


def _sum_by(sites: dict[str, list[float]], key: Callable[[str], str]) -> dict[str, tuple[float, float]]:
    """(count, self CPU ms) summed over the call sites that `key` maps together."""
    out: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    for k, (count, ms) in sites.items():
        out[key(k)][0] += count
        out[key(k)][1] += ms
    return {k: (c, ms) for k, (c, ms) in out.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--profile", action="store_true", help="operator-level account of one row (see --model, --ranks)")
    p.add_argument("--rounds", type=int, default=9, help="alternations of the two sides per row (ratios reported)")
    p.add_argument("--block-seconds", type=float, default=2.0, help="about how long each timed block runs")
    p.add_argument("--profile-steps", type=int, default=0, help="with --profile: steps profiled per side")
    p.add_argument("--ranks", type=int, default=1, help="with --profile: ranks per side (2: dsgan vs DDP)")
    p.add_argument("--top", type=int, default=15, help="with --profile: operators listed by self CPU")
    p.add_argument("--only", default="", help="run only the rows whose label contains this (e.g. 'biggan')")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per rank; 0: cores / ranks, the machine's full rate, meaningful on an idle machine only"
        " (a thread that finishes its share waits for a descheduled sibling)",
    )
    p.add_argument(
        "--dynamic-malloc",
        action="store_true",
        help="timed workers keep glibc's dynamic allocator thresholds (see STEADY_MALLOC)",
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--side", choices=("dsgan", "plain"), help=argparse.SUPPRESS)
    p.add_argument("--model", choices=sorted(MODELS), default="biggan32-ch32")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    p.add_argument("--zero", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--warmup", type=int, default=3, help=argparse.SUPPRESS)
    opts = p.parse_args()
    if opts.worker:
        worker(opts)
    elif opts.profile:
        opts.profile_steps = opts.profile_steps or 3
        profile_row(opts)
    elif opts.gpu:
        gpu_suite(opts)
    else:
        cpu_suite(opts)


if __name__ == "__main__":
    main()
