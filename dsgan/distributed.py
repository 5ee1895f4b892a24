"""Process-group setup and the one per-update agreement collective.

Launch styles: the `deepspeed` launcher (sets RANK/LOCAL_RANK/WORLD_SIZE and appends `--local_rank`), torchrun,
`srun` (via slurm/ scripts that export RANK etc. from SLURM_PROCID/...), or a plain single process (no variables:
world size 1 on 127.0.0.1).
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from dsgan.errors import CollectiveError, ConfigError, RankDisagreementError

log = logging.getLogger("dsgan")

T = TypeVar("T")


@dataclass(frozen=True)
class DistEnv:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def single(cls, device: torch.device | str = "cpu") -> DistEnv:
        """One process, no process group (`dsgan eval`, `dsgan sample`, tests)."""
        return cls(rank=0, local_rank=0, world_size=1, device=torch.device(device))


def detect(local_rank_arg: int | None = None) -> DistEnv:
    """Read the launcher's environment without starting anything (configs are validated before init)."""
    rank, world_size = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1, minimum=1)
    local_rank = _env_int("LOCAL_RANK", local_rank_arg if local_rank_arg is not None else 0)
    if rank >= world_size:
        raise ConfigError(f"RANK={rank} with WORLD_SIZE={world_size}: ranks count from 0 to WORLD_SIZE - 1")
    device = cuda_device(local_rank, torch.cuda.device_count()) if torch.cuda.is_available() else torch.device("cpu")
    return DistEnv(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def _env_int(name: str, default: int, minimum: int = 0) -> int:
    """A launcher variable; set by hand (or by a wrapper script) it can be anything."""
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ConfigError(f"{name}={text!r} in the environment: expected an integer >= {minimum}")
    return value


def cuda_device(local_rank: int, visible: int) -> torch.device:
    """This process's GPU: the only one it sees (a launcher that gives each task its own CUDA_VISIBLE_DEVICES),
    else the one at its LOCAL_RANK; `init` refuses a LOCAL_RANK past the GPUs it sees. (Wrapping it around, as
    `local_rank % visible`, put two ranks on one GPU: NCCL's "Duplicate GPU detected" at the first collective.)"""
    return torch.device("cuda", 0 if visible == 1 else local_rank)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init(env: DistEnv, timeout_seconds: float) -> None:
    """Start the process group (nccl on GPU, gloo on CPU). `timeout_seconds` bounds every collective, so a dead
    or diverged rank turns into an error instead of a hang."""
    import deepspeed

    if env.world_size == 1:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        os.environ.setdefault("LOCAL_RANK", "0")
    if env.device.type == "cuda":
        if (visible := torch.cuda.device_count()) <= (env.device.index or 0):
            raise ConfigError(
                f"LOCAL_RANK={env.local_rank} but this node shows {visible} GPUs (CUDA_VISIBLE_DEVICES="
                f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): start one process per GPU "
                "(`--nproc-per-node`, `--num_gpus`, or as many SLURM tasks per node as GPUs)"
            )
        torch.cuda.set_device(env.device)
    if env.is_main and env.world_size > 1:
        log.info(
            "waiting for %d ranks at %s:%s (up to run.collective_timeout_seconds=%g)",
            env.world_size,
            os.environ.get("MASTER_ADDR"),
            os.environ.get("MASTER_PORT"),
            timeout_seconds,
        )
    try:
        deepspeed.init_distributed(
            dist_backend="nccl" if env.device.type == "cuda" else "gloo",
            timeout=datetime.timedelta(seconds=timeout_seconds),
            verbose=False,
        )
    except RuntimeError as exc:  # torch's DistNetworkError and DistStoreError included
        if "clients joined" in str(exc):  # the store's rendezvous timed out on rank 0
            raise CollectiveError(
                f"only some of the {env.world_size} ranks (WORLD_SIZE) joined within "
                f"run.collective_timeout_seconds={timeout_seconds:g} ({' '.join(str(exc).split())}): start every rank "
                "(`deepspeed --num_gpus`, `torchrun --nproc-per-node`, `srun -n`) or set WORLD_SIZE to the number "
                "started"
            ) from None
        if "EADDRINUSE" not in str(exc):
            raise
        where = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
        raise ConfigError(
            f"MASTER_ADDR:MASTER_PORT = {where} is already in use by another process: rank 0 cannot listen there. "
            "Choose a free port (MASTER_PORT, `deepspeed --master_port`, `torchrun --master-port`)"
        ) from None


def agree(counters: dict[str, int], expected: dict[str, int], flags: torch.Tensor, env: DistEnv) -> list[bool]:
    """All-gather every rank's `counters` + `flags` (one small collective; its result is the only host sync) and
    check that every rank's counters equal `expected`, name by name. Returns, per flag, whether any rank raised it.

    `flags` is a small int64 tensor on the device (e.g. "stop requested", "non-finite loss seen"), so that
    checking a loss for NaN costs no extra device-to-host copy.
    """
    if counters.keys() != expected.keys():
        raise ValueError(f"counters {sorted(counters)} and expected {sorted(expected)} name different fields")
    names = list(expected)
    values = [counters[k] for k in names]
    local = torch.cat([torch.tensor(values, dtype=torch.int64, device=env.device), flags.to(torch.int64).view(-1)])
    if env.world_size > 1:
        parts = [torch.empty_like(local) for _ in range(env.world_size)]
        dist.all_gather(parts, local)
        rows = torch.stack(parts).tolist()
    else:
        rows = [local.tolist()]
    want = [expected[k] for k in names]
    if any(row[: len(names)] != want for row in rows):
        lines = [
            f"  rank {r}: " + ", ".join(f"{k}={v}" for k, v in zip(names, row, strict=False))
            for r, row in enumerate(rows)
        ]
        raise RankDisagreementError(
            "ranks disagree on the training schedule (expected "
            + ", ".join(f"{k}={v}" for k, v in expected.items())
            + "):\n"
            + "\n".join(lines)
            + "\nNo optimizer step was taken past this point. This is a bug or a rank that skipped work: "
            "check the log of the ranks listed above."
        )
    return [any(row[len(names) + i] for row in rows) for i in range(flags.numel())]


def broadcast_object(obj: T, env: DistEnv) -> T:
    """Rank 0's `obj` on every rank (the others' argument is ignored): the one object broadcast."""
    if env.world_size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(flag: bool, env: DistEnv) -> bool:
    """Whether `flag` is set on any rank (collective: every rank calls it)."""
    if env.world_size == 1:
        return flag
    t = torch.tensor([int(flag)], device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier(env: DistEnv) -> None:
    if env.world_size > 1:
        dist.barrier()


def is_collective_failure(exc: BaseException) -> bool:
    """A failed or timed-out collective: what the survivors of a dead or stuck rank see. NCCL raises
    torch.distributed's own errors; gloo raises plain RuntimeErrors that name it."""
    return isinstance(exc, dist.DistError) or (isinstance(exc, RuntimeError) and "gloo" in str(exc))
