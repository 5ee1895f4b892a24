"""Drives dsgan's own d_step/g_step on tiny BatchNorm-free networks, for equivalence tests.

    python engine_worker.py OUT_FILE CASE [CASE ...]      CASE = name:stage:precision:micro:accumulation

Each case trains 3 D updates and 3 G updates (schedule 1/1) on a fixed global batch of 32 per update, split into
micro-batches and ranks; rank 0 saves the final full G and D weights for each case.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

GLOBAL_BATCH = 32
UPDATES = 3
LR, BETAS, EPS = 1e-3, (0.5, 0.999), 1e-8


class TinyG(nn.Module):
    noise_size, num_classes, output_scale = 8, 4, 8

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(4, 8)
        self.fc = nn.Linear(16, 3 * 8 * 8)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = torch.cat([z.to(self.fc.weight.dtype), self.embed(y)], 1)
        return torch.tanh(self.fc(h)).view(-1, 3, 8, 8)


class TinyD(nn.Module):
    """Conv layers whose input needs no grad (DeepSpeed #5524), applied to real and fake (#8224), projection."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 4, stride=2, padding=1)
        self.fc = nn.Linear(128, 1)
        self.embed = nn.Embedding(4, 128)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = nn.functional.leaky_relu(self.conv1(x.to(self.conv1.weight.dtype)), 0.2)
        h = nn.functional.leaky_relu(self.conv2(h), 0.2).flatten(1)
        return self.fc(h).squeeze(1) + (self.embed(y) * h).sum(1)


def models() -> tuple[TinyG, TinyD]:
    torch.manual_seed(0)
    return TinyG(), TinyD()


def data() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    n = (UPDATES, GLOBAL_BATCH)
    return {
        "real": torch.rand(*n, 3, 8, 8, generator=gen) * 2 - 1,
        "labels": torch.randint(4, n, generator=gen),
        "d_z": torch.randn(*n, 8, generator=gen),
        "d_y": torch.randint(4, n, generator=gen),
        "g_z": torch.randn(*n, 8, generator=gen),
        "g_y": torch.randint(4, n, generator=gen),
    }


def plain_reference() -> dict[str, dict[str, torch.Tensor]]:
    """The same training written as a plain PyTorch loop: full batch of 32, one Adam step per update."""
    from dsgan.losses import d_loss, g_loss

    g, d = models()
    g_opt = torch.optim.Adam(g.parameters(), lr=LR, betas=BETAS, eps=EPS)
    d_opt = torch.optim.Adam(d.parameters(), lr=LR, betas=BETAS, eps=EPS)
    x = data()
    norms = {"G": [], "D": []}
    for u in range(UPDATES):
        with torch.no_grad():
            fake = g(x["d_z"][u], x["d_y"][u])
        loss, _ = d_loss("hinge", d(x["real"][u], x["labels"][u]), d(fake, x["d_y"][u]))
        d_opt.zero_grad()
        loss.backward()
        norms["D"].append(torch.nn.utils.get_total_norm([p.grad for p in d.parameters()]).item())
        d_opt.step()
        for p in d.parameters():
            p.requires_grad_(False)
        loss = g_loss("hinge", d(g(x["g_z"][u], x["g_y"][u]), x["g_y"][u]))
        g_opt.zero_grad()
        loss.backward()
        norms["G"].append(torch.nn.utils.get_total_norm([p.grad for p in g.parameters()]).item())
        g_opt.step()
        for p in d.parameters():
            p.requires_grad_(True)
    return {"G": g.state_dict(), "D": d.state_dict(), "grad_norms": norms}


def full_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Full fp32 weights on every rank, also when ZeRO-3 has partitioned them."""
    import deepspeed

    params = list(module.parameters())
    with deepspeed.zero.GatheredParameters(params) if hasattr(params[0], "ds_id") else _null():
        return {k: v.detach().float().clone() for k, v in module.state_dict().items()}


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def run_case(stage: int, precision: str, micro: int, acc: int, rank: int, world: int) -> dict:
    from dsgan.config import DeepSpeedConfig, Loss
    from dsgan.engines import build_engines
    from dsgan.schedule import Schedule
    from dsgan.steps import d_step, g_step

    assert micro * acc * world == GLOBAL_BATCH
    ds = DeepSpeedConfig.model_validate(
        {
            "train_micro_batch_size_per_gpu": micro,
            "gradient_accumulation_steps": acc,
            "optimizer": {
                "type": "Adam",
                "params": {"lr": LR, "betas": BETAS, "eps": EPS, "weight_decay": 0.0, "torch_adam": True},
            },
            "gradient_clipping": 0.0,  # DeepSpeed's default is 1.0
            "zero_optimization": {"stage": stage},
            "bf16": {"enabled": precision == "bf16", "immediate_grad_update": True, "check_grad_overflow": False},
        }
    )
    g, d = models()
    engines = build_engines(g, d, ds, ds, world)
    schedule = Schedule(1, 1, acc, acc)
    x = data()
    unchanged = True
    norms = {"G": [], "D": []}
    for it in range(UPDATES * acc):
        u, j = divmod(it, acc)
        sl = slice((rank * acc + j) * micro, (rank * acc + j + 1) * micro)
        g_before = full_state(engines["generator"].module)
        measure = (it + 1) % acc == 0  # both networks make an update at the end of this iteration
        _, d_update = d_step(
            engines, Loss(), x["real"][u, sl], x["labels"][u, sl], x["d_z"][u, sl], x["d_y"][u, sl], u, measure
        )
        g_after = full_state(engines["generator"].module)
        unchanged &= all(torch.equal(g_before[k], g_after[k]) for k in g_before if "running" not in k)
        d_before = full_state(engines["discriminator"].module)
        for k in range(schedule.plan(it).g_micro_steps):
            gs = slice((rank * acc + k) * micro, (rank * acc + k + 1) * micro)
            _, g_update, _ = g_step(engines, Loss(), x["g_z"][u, gs], x["g_y"][u, gs], measure)
        d_after = full_state(engines["discriminator"].module)
        unchanged &= all(torch.equal(d_before[k], d_after[k]) for k in d_before)
        if measure:
            norms["D"].append(float(d_update.grad_norm))
            norms["G"].append(float(g_update.grad_norm))
    return {
        "G": full_state(engines["generator"].module),
        "D": full_state(engines["discriminator"].module),
        "other_network_unchanged": unchanged,
        "grad_norms": norms,
        "g_updates": engines["generator"].global_steps,
        "d_updates": engines["discriminator"].global_steps,
    }


def main() -> None:
    import os

    from dsgan import distributed

    out, cases = Path(sys.argv[1]), sys.argv[2:]
    env = distributed.detect()
    distributed.init(env, timeout_seconds=120)
    results = {}
    for case in cases:
        name, stage, precision, micro, acc = case.split(":")
        results[name] = run_case(int(stage), precision, int(micro), int(acc), env.rank, env.world_size)
    if env.rank == 0:
        torch.save(results, out)
    os._exit(0)  # skip DeepSpeed/gloo teardown, which can stall on CPU


if __name__ == "__main__":
    main()
