"""dsgan's StyleGAN2 G/D against NVlabs' stylegan2-ada-pytorch G/D, one training step, side by side in one process.

    python benchmarks/stylegan2_step.py --nvlabs /path/to/checkout                    # 32px, batch 4
    NVLABS_STYLEGAN2_ADA=/path/to/checkout python benchmarks/stylegan2_step.py --resolution 64 --json out.json  # 64px
    python benchmarks/stylegan2_step.py --nvlabs ... --variants step,r1,pl,sample --profile 2
    python benchmarks/stylegan2_step.py --nvlabs ... --channel-max 128 --w-dim 128   # narrow models: seconds

A model-level comparison: both sides train with plain torch.optim.Adam (no DeepSpeed), the same batch, inputs,
resolution, channels per resolution, mapping depth and thread count. NVlabs' code is not part of dsgan: it is read
from the path given (a checkout or `git archive` of NVlabs/stylegan2-ada-pytorch); without one the benchmark skips.
Its custom ops run their pure-PyTorch reference implementation (impl='ref'; the CUDA plugins are switched off and
the calls are counted, so the output shows which implementation ran).

One "step" = a D update (G forward under no_grad for the fakes, D on reals and fakes, non-saturating logistic loss,
backward, Adam) + a G update (G forward, D forward with D frozen, loss, backward, Adam). Variants `r1` and `pl` add
the lazy regularizers to that step (R1 on the reals in the D update; path length in the G update, on
batch // pl_batch_shrink samples, NVlabs' and MMagic's formula), i.e. the cost of a step at which they fall due.
`sample` is G's forward alone in eval mode (no_grad), for sampling throughput.

Timing: warm-up steps, then rounds in which each side runs `--steps` steps, the order of the sides flipping every
round (AB BA AB ...) so that a change in machine load falls on both; the median over all timed steps is reported,
with the ratio NVlabs / dsgan (>= 1.0: dsgan at least as fast).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
# After PYTHONPATH's entries, before site-packages: `PYTHONPATH=/other/checkout` measures that checkout's dsgan
# (an editable install elsewhere would otherwise win), and without it this checkout's dsgan is measured.
_pythonpath = {os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}
sys.path.insert(1 + max((i for i, p in enumerate(sys.path) if os.path.abspath(p) in _pythonpath), default=0), str(REPO))

# Regularizer settings of StyleGAN2 config F (NVlabs' and MMagic's defaults). Their values do not change the cost;
# they are here so that both sides compute the same thing.
R1_GAMMA, R1_INTERVAL = 10.0, 16
PL_WEIGHT, PL_INTERVAL, PL_DECAY, PL_BATCH_SHRINK = 2.0, 4, 0.01, 2
ADAM = {"lr": 0.002, "betas": (0.0, 0.99), "eps": 1e-8}


def mmagic_channels(res: int, cm: int, cmax: int) -> int:
    """Channels at resolution `res` in MMagic's StyleGAN2 (which dsgan follows): 512 up to 32px, then halving;
    dsgan caps them at `channel_max` (512, MMagic's table, unless set lower for narrow models)."""
    return min(512 if res <= 32 else 16384 // res * cm, cmax)


def nvlabs_channel_args(cm: int, cmax: int) -> dict[str, int]:
    """NVlabs' channels are min(channel_base // res, channel_max): base 16384 * cm gives MMagic's table at every
    resolution (512 up to 32px since 16384 // 32 = 512; 256 * cm at 64px; halving above), and the same cap."""
    return {"channel_base": 16384 * cm, "channel_max": cmax}


# ---------------------------------------------------------------------------------------------------------------
# the two sides behind one interface


@dataclass
class Side:
    name: str
    g: nn.Module
    d: nn.Module
    generate: Callable[[torch.Tensor], torch.Tensor]  # z -> images
    generate_with_ws: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # z -> (images, w+ [B, n, C])
    discriminate: Callable[[torch.Tensor], torch.Tensor]  # images -> logits [B]
    source: str
    opt_g: torch.optim.Optimizer = field(init=False)
    opt_d: torch.optim.Optimizer = field(init=False)
    pl_mean: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.opt_g = torch.optim.Adam(self.g.parameters(), **ADAM)
        self.opt_d = torch.optim.Adam(self.d.parameters(), **ADAM)
        self.pl_mean = torch.zeros((), device=next(self.g.parameters()).device)

    def params(self) -> tuple[int, int]:
        return sum(p.numel() for p in self.g.parameters()), sum(p.numel() for p in self.d.parameters())


def _git_rev(path: Path) -> str:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--", "dsgan"], capture_output=True)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    return "no git"


def build_dsgan(args: argparse.Namespace, device: torch.device) -> Side:
    from dsgan.config.models import StyleGAN2Discriminator, StyleGAN2Generator

    # channel_max only when narrowed: model versions before the field existed still run at the default.
    narrow = {"channel_max": args.channel_max} if args.channel_max != 512 else {}
    g_cfg = StyleGAN2Generator(
        out_size=args.resolution,
        style_channels=args.w_dim,
        noise_size=args.w_dim,
        num_mlps=args.mapping_layers,
        channel_multiplier=args.channel_multiplier,
        **narrow,
        # NVlabs mixes styles in its loss, not in G: without mixing on either side both run one mapping pass.
        default_style_mode="single",
        num_fp16_scales=0,
    )
    d_cfg = StyleGAN2Discriminator(
        in_size=args.resolution,
        channel_multiplier=args.channel_multiplier,
        **narrow,
        mbstd_cfg={"group_size": args.mbstd_group, "channel_groups": 1},
        num_fp16_scales=0,
    )
    torch.manual_seed(0)
    g, d = g_cfg.build().to(device), d_cfg.build().to(device)
    import dsgan

    src = Path(dsgan.__file__).resolve().parents[1]
    return Side(
        name="dsgan",
        g=g,
        d=d,
        generate=lambda z: g(z, None),
        generate_with_ws=lambda z: g(z, None, return_latents=True),
        discriminate=lambda x: d(x, None).flatten(),
        source=f"{src} ({_git_rev(src)})",
    )


@dataclass
class RefCalls:
    """How often NVlabs' ops ran their reference (pure PyTorch) and their CUDA implementations."""

    counts: Counter[str] = field(default_factory=Counter)

    def describe(self) -> str:
        c = self.counts
        return (
            f"impl=ref (bias_act ref x{c['bias_act_ref']}, upfirdn2d ref x{c['upfirdn2d_ref']}; "
            f"CUDA plugins x{c['bias_act_cuda'] + c['upfirdn2d_cuda']})"
        )


def import_nvlabs(path: Path) -> tuple[type, type, RefCalls]:
    """NVlabs' Generator and Discriminator, with their custom ops held to the reference implementation.

    The ops pick their CUDA plugin when the input is on a GPU and the plugin compiles (`_init()`); on a CPU they use
    the reference code already. `_init` is replaced in this process only (nothing in the checkout is edited) so
    that a GPU run measures the same pure-PyTorch code, and the implementations are wrapped to count calls.
    """
    sys.path.insert(0, str(path))
    networks = importlib.import_module("training.networks")
    bias_act = importlib.import_module("torch_utils.ops.bias_act")
    upfirdn2d = importlib.import_module("torch_utils.ops.upfirdn2d")
    calls = RefCalls()
    for mod, prefix in ((bias_act, "bias_act"), (upfirdn2d, "upfirdn2d")):
        mod._init = lambda: False  # no plugin: every call takes the `impl == 'ref'` path

        for kind in ("ref", "cuda"):
            orig = getattr(mod, f"_{prefix}_{kind}")

            def counted(*a, _orig=orig, _key=f"{prefix}_{kind}", **kw):
                calls.counts[_key] += 1
                return _orig(*a, **kw)

            setattr(mod, f"_{prefix}_{kind}", counted)
    return networks.Generator, networks.Discriminator, calls


def build_nvlabs(args: argparse.Namespace, device: torch.device, gen_cls: type, disc_cls: type) -> Side:
    ch = nvlabs_channel_args(args.channel_multiplier, args.channel_max)
    torch.manual_seed(0)
    g = gen_cls(
        z_dim=args.w_dim,
        c_dim=0,
        w_dim=args.w_dim,
        img_resolution=args.resolution,
        img_channels=3,
        mapping_kwargs={"num_layers": args.mapping_layers},
        synthesis_kwargs={**ch, "num_fp16_res": 0, "conv_clamp": None},  # architecture 'skip' (default)
    ).to(device)
    d = disc_cls(
        c_dim=0,
        img_resolution=args.resolution,
        img_channels=3,
        **ch,
        num_fp16_res=0,
        conv_clamp=None,
        epilogue_kwargs={"mbstd_group_size": args.mbstd_group},  # architecture 'resnet' (default)
    ).to(device)

    def with_ws(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ws = g.mapping(z, None)  # [B, num_ws, w_dim], the broadcast w; NVlabs' path length differentiates this
        return g.synthesis(ws), ws

    return Side(
        name="NVlabs",
        g=g,
        d=d,
        generate=lambda z: g(z, None),
        generate_with_ws=with_ws,
        discriminate=lambda x: d(x, None).flatten(),
        source=str(args.nvlabs),
    )


# ---------------------------------------------------------------------------------------------------------------
# one training step, written once for both sides


@dataclass
class Inputs:
    real: torch.Tensor
    z_d: torch.Tensor
    z_g: torch.Tensor
    z_pl: torch.Tensor
    pl_noise_seed: int


def make_inputs(i: int, args: argparse.Namespace, device: torch.device) -> Inputs:
    """Step i's inputs, the same for both sides (seeded by i)."""
    gen = torch.Generator().manual_seed(i)
    b, r, w = args.batch, args.resolution, args.w_dim
    return Inputs(
        real=(torch.rand(b, 3, r, r, generator=gen) * 2 - 1).to(device),
        z_d=torch.randn(b, w, generator=gen).to(device),
        z_g=torch.randn(b, w, generator=gen).to(device),
        z_pl=torch.randn(max(1, b // PL_BATCH_SHRINK), w, generator=gen).to(device),
        pl_noise_seed=i,
    )


def d_update(s: Side, x: Inputs, r1: bool) -> None:
    with torch.no_grad():
        fake = s.generate(x.z_d)
    loss = F.softplus(s.discriminate(fake)).mean() + F.softplus(-s.discriminate(x.real)).mean()
    if r1:  # a separate pass on the reals (NVlabs' Dreg phase, dsgan's r1_penalty), scaled by the interval
        real = x.real.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(s.discriminate(real).sum(), real, create_graph=True)
        loss = loss + R1_GAMMA / 2 * R1_INTERVAL * grad.square().sum([1, 2, 3]).mean()
    s.opt_d.zero_grad(set_to_none=True)
    loss.backward()
    s.opt_d.step()


def g_update(s: Side, x: Inputs, pl: bool) -> None:
    s.d.requires_grad_(False)  # D frozen: no weight gradients computed for it in G's backward
    loss = F.softplus(-s.discriminate(s.generate(x.z_g))).mean()
    if pl:  # path length: E ||J_w^T y||, y ~ N(0, I) / sqrt(H W), pulled towards its running mean
        img, ws = s.generate_with_ws(x.z_pl)
        gen = torch.Generator(device=img.device).manual_seed(x.pl_noise_seed)
        noise = torch.randn(img.shape, generator=gen, device=img.device) / math.sqrt(img.shape[2] * img.shape[3])
        (grad,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
        lengths = grad.square().sum(2).mean(1).sqrt()
        s.pl_mean.lerp_(lengths.mean().detach(), PL_DECAY)
        loss = loss + (lengths - s.pl_mean).square().mean() * PL_WEIGHT * PL_INTERVAL
    s.opt_g.zero_grad(set_to_none=True)
    loss.backward()
    s.opt_g.step()
    s.d.requires_grad_(True)


def run_variant(variant: str, s: Side, x: Inputs) -> None:
    if variant == "sample":
        with torch.no_grad():
            s.generate(x.z_d)
        return
    d_update(s, x, r1=variant == "r1")
    g_update(s, x, pl=variant == "pl")


@contextlib.contextmanager
def mode(variant: str, sides: list[Side]) -> Iterator[None]:
    """Sampling in eval mode (no w_avg update, eval style mode; NVlabs' eval forward fuses the modulation into
    grouped convolutions); the training variants in train mode."""
    for s in sides:
        s.g.train(variant != "sample")
        s.d.train(variant != "sample")
    yield
    for s in sides:
        s.g.train()
        s.d.train()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(variant: str, sides: list[Side], args: argparse.Namespace, device: torch.device) -> dict[str, list[float]]:
    """Seconds per step of each side: warm-up, then rounds with the sides' order flipping every round."""
    times: dict[str, list[float]] = {s.name: [] for s in sides}
    step = 0
    with mode(variant, sides):
        for s in sides:
            for i in range(args.warmup):
                run_variant(variant, s, make_inputs(10_000 + i, args, device))
        for r in range(args.rounds):
            for s in sides if r % 2 == 0 else sides[::-1]:
                for i in range(args.steps):
                    x = make_inputs(step + i, args, device)  # round r: the same inputs on both sides
                    sync(device)
                    t = time.perf_counter()
                    run_variant(variant, s, x)
                    sync(device)
                    times[s.name].append(time.perf_counter() - t)
            step += args.steps
    return times


# ---------------------------------------------------------------------------------------------------------------
# profile: where each side spends its time


def label_forwards(modules: list[nn.Module]) -> list[torch.utils.hooks.RemovableHandle]:
    """Wrap each module's forward in a profiler range named `fwd::<class>` (the profiler names ops, not modules)."""
    from torch.profiler import record_function

    stack: list[record_function] = []

    def pre(mod: nn.Module, _inp: object) -> None:
        rf = record_function(f"fwd::{type(mod).__name__}")
        rf.__enter__()
        stack.append(rf)

    def post(_mod: nn.Module, _inp: object, _out: object) -> None:
        stack.pop().__exit__(None, None, None)

    return [h for m in modules for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]


def profile(sides: list[Side], args: argparse.Namespace, device: torch.device) -> None:
    """Self time per aten op, and forward time per module class (inclusive of children, so nested classes overlap),
    over `--profile` plain steps of each side."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for s in sides:
        handles = label_forwards([m for m in [*s.g.modules(), *s.d.modules()] if m is not s.g and m is not s.d])
        run_variant("step", s, make_inputs(0, args, device))
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with torch_profile(activities=acts) as prof:
            for i in range(args.profile):
                run_variant("step", s, make_inputs(i, args, device))
            sync(device)
        for h in handles:
            h.remove()
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events) / 1e6 / args.profile
        print(f"\n## profile {s.name}: {total:.3f} s/step of op self time (profiler overhead included)")
        ops = sorted((e for e in events if not e.key.startswith("fwd::")), key=lambda e: -e.self_cpu_time_total)
        print(f"{'op (self CPU time)':<58} {'s/step':>8} {'share':>6} {'calls/step':>10}")
        for e in ops[: args.profile_top]:
            sec = e.self_cpu_time_total / 1e6 / args.profile
            print(f"{e.key[:58]:<58} {sec:8.3f} {sec / total:6.1%} {e.count / args.profile:10.0f}")
        mods = sorted((e for e in events if e.key.startswith("fwd::")), key=lambda e: -e.cpu_time_total)
        print(f"{'module forward (inclusive)':<58} {'s/step':>8} {'calls/step':>10}")
        for e in mods[: args.profile_top]:
            print(f"{e.key[5:][:58]:<58} {e.cpu_time_total / 1e6 / args.profile:8.3f} {e.count / args.profile:10.0f}")


# ---------------------------------------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nvlabs", type=Path, default=os.environ.get("NVLABS_STYLEGAN2_ADA"))
    p.add_argument("--resolution", type=int, default=32, choices=(8, 16, 32, 64, 128, 256))
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--channel-multiplier", type=int, default=2, help="MMagic's; channels above 32px (512 up to it)")
    p.add_argument("--channel-max", type=int, default=512, help="cap on every layer's channels (narrow models)")
    p.add_argument("--w-dim", type=int, default=512, help="z and w width (dsgan style_channels, NVlabs w_dim)")
    p.add_argument("--mapping-layers", type=int, default=8)
    p.add_argument("--mbstd-group", type=int, default=4)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--variants", default="step,sample", help="comma list of step, r1, pl, sample")
    p.add_argument("--warmup", type=int, default=2, help="steps per side before timing")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--steps", type=int, default=2, help="timed steps per side per round")
    p.add_argument("--sample-batch", type=int, default=16)
    p.add_argument("--profile", type=int, default=0, help="profile this many steps of each side afterwards")
    p.add_argument("--profile-top", type=int, default=15)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    if unknown := set(variants) - {"step", "r1", "pl", "sample"}:
        p.error(f"unknown variants {sorted(unknown)}")
    if args.batch % args.mbstd_group and args.batch > args.mbstd_group:
        p.error(f"--batch {args.batch} is not a multiple of the minibatch-stddev group {args.mbstd_group}")

    if args.nvlabs is None or not (args.nvlabs / "training" / "networks.py").is_file():
        print(
            "SKIP: NVlabs stylegan2-ada-pytorch not found: pass --nvlabs PATH or set NVLABS_STYLEGAN2_ADA to a checkout"
            f" (or `git archive`) of https://github.com/NVlabs/stylegan2-ada-pytorch (got {args.nvlabs})"
        )
        return 0
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gen_cls, disc_cls, calls = import_nvlabs(args.nvlabs.resolve())
    sides = []
    try:
        sides.append(build_dsgan(args, device))
    except ImportError as e:  # the model module not there yet (or broken): NVlabs alone, said plainly
        print(f"NOTE: dsgan's StyleGAN2 is not importable ({e}); measuring NVlabs alone")
    sides.append(build_nvlabs(args, device, gen_cls, disc_cls))

    chans = {r: mmagic_channels(r, args.channel_multiplier, args.channel_max) for r in (2**k for k in range(2, 11))}
    chans = {r: c for r, c in chans.items() if r <= args.resolution}
    print(
        f"# StyleGAN2 {args.resolution}px, batch {args.batch} (sample batch {args.sample_batch}), fp32, "
        f"{args.device}: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{args.threads} threads, torch {torch.__version__}"
    )
    print(
        f"# channels per resolution {chans} (dsgan channel_multiplier {args.channel_multiplier}, channel_max "
        f"{args.channel_max}; NVlabs {nvlabs_channel_args(args.channel_multiplier, args.channel_max)}); "
        f"z = w = {args.w_dim}, {args.mapping_layers} mapping layers, mbstd group {args.mbstd_group}, "
        "G 'skip' / D 'resnet', no style mixing, no fp16, no conv clamp"
    )
    print(f"# Adam {ADAM}; warm-up {args.warmup}, {args.rounds} rounds x {args.steps} steps per side, order flipping")
    for s in sides:
        g_n, d_n = s.params()
        print(f"# {s.name:<7} G {g_n:>11,} params  D {d_n:>11,} params   {s.source}")

    load_start = os.getloadavg()  # the machine may be shared: say how busy it was
    print(f"# load average (1, 5, 15 min) at start: {', '.join(f'{x:.2f}' for x in load_start)}")
    results: dict[str, dict[str, float]] = {}
    print(
        f"\n{'variant':<10} "
        + " ".join(f"{s.name + ' s/step':>16}" for s in sides)
        + f" {'NVlabs/dsgan':>13}  target >= 1.0"
    )
    for v in variants:
        run_args = argparse.Namespace(**{**vars(args), "batch": args.sample_batch}) if v == "sample" else args
        times = measure(v, sides, run_args, device)
        med = {name: statistics.median(t) for name, t in times.items()}
        spread = {name: (max(t) - min(t)) / statistics.median(t) for name, t in times.items()}
        ratio = med["NVlabs"] / med["dsgan"] if "dsgan" in med else float("nan")
        cells = " ".join(f"{med[s.name]:9.3f} ({spread[s.name]:4.0%})" for s in sides)
        extra = "   img/s " + " / ".join(f"{run_args.batch / med[s.name]:.1f}" for s in sides) if v == "sample" else ""
        verdict = "" if math.isnan(ratio) else "  meets" if ratio >= 1.0 else "  BELOW"
        print(f"{v:<10} {cells} {ratio:13.3f}{verdict}{extra}", flush=True)
        results[v] = {**{f"{n}_s_per_step": m for n, m in med.items()}, "ratio_nvlabs_over_dsgan": ratio}
        results[v].update({f"{n}_times": t for n, t in times.items()})
    print("(median; in brackets the range of the timed steps over the median)")
    load_end = os.getloadavg()
    print(f"# load average at end: {', '.join(f'{x:.2f}' for x in load_end)} (this benchmark itself adds ~1 per core)")
    print(f"# NVlabs ops: {calls.describe()}")
    if calls.counts["bias_act_cuda"] + calls.counts["upfirdn2d_cuda"]:
        raise RuntimeError("NVlabs ran its CUDA plugins: the comparison is meant against its reference ops")

    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                    "torch": torch.__version__,
                    "cores": os.cpu_count(),
                    "load_average": {"start": load_start, "end": load_end},
                    "params": {s.name: dict(zip(("G", "D"), s.params(), strict=True)) for s in sides},
                    "sources": {s.name: s.source for s in sides},
                    "nvlabs_ops": dict(calls.counts),
                    "results": results,
                },
                indent=1,
            )
        )
    if args.profile:
        profile(sides, args, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
