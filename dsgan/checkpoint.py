"""Atomic, verifiable, complete checkpoints; "rerun the same command to resume".

Layout of `<run dir>/checkpoints/`:
    step-00001200/              one checkpoint (the iteration count in the name)
        generator/ discriminator/   DeepSpeed `save_checkpoint` with one tag per network: weights, optimizer,
                                    fp16 loss scaler, LR scheduler, ZeRO partitions (one file per rank)
        trainer.pt              the TrainerState: iteration, images consumed, best score, EMA weights, wandb run id,
                                resolved config, world size, path-length mean, ADA's p
        rng-rank{R}.pt          python/numpy/torch/cuda RNG states of each rank
        manifest.json           size and sha256 of every file above; written last
    step-00000000/              a weights-only checkpoint (`dsgan migrate --checkpoint`): `weights.pt` (G's and D's
                                state dicts), trainer.pt (iteration 0, the EMA) and the manifest, no engines. A run
                                that finds it starts from its weights with a fresh optimizer (`initial_weights`)
    latest                      name of the newest complete checkpoint (a hint; the manifest decides)
    best                        name of the checkpoint with the lowest FID so far (never pruned)

A checkpoint is written to `step-N.tmp`, completed with its manifest, then renamed: a kill at any moment leaves
either the previous checkpoint or the new one, never a half-written one that looks complete. On load the newest
checkpoint whose manifest verifies is used; any newer one that fails is named in a warning. dsgan's own files hold
only tensors and plain Python values and are read with `torch.load(weights_only=True)` onto the CPU (so a GPU run's
checkpoint loads on a CPU-only machine): none of them is unpickled
(the engines' files are read by DeepSpeed's own `load_checkpoint`).
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import math
import os
import random
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import ValidationError

from dsgan.atomic import write_atomic
from dsgan.config import Config, DeepSpeedConfig
from dsgan.config.load import format_errors
from dsgan.distributed import DistEnv, any_rank, barrier, broadcast_object
from dsgan.engines import EngineDict
from dsgan.errors import CheckpointError, CheckpointWriteError, ConfigError, RunDirBusyError, short_reason

if TYPE_CHECKING:
    from dsgan.ema import EMA
    from dsgan.models import Generator

log = logging.getLogger("dsgan")

CHECKPOINTS = "checkpoints"
MANIFEST = "manifest.json"
TRAINER = "trainer.pt"
WEIGHTS = "weights.pt"

# Fields that must match to resume; anything else (lr, length, intervals, logging, data root) may change.
RESUME_INVARIANTS = (
    # The seed orders the data and draws the noise: a new one mid-run repeats some images of the epoch and skips
    # others, and is most often a new experiment pointed at an old run dir by mistake.
    "run.seed",
    "generator.model",
    "discriminator.model",
    "schedule",
    "loss.type",
    "generator.deepspeed.gradient_accumulation_steps",
    "discriminator.deepspeed.gradient_accumulation_steps",
    "generator.deepspeed.fp16.enabled",
    "discriminator.deepspeed.fp16.enabled",
    "generator.deepspeed.bf16.enabled",
    "discriminator.deepspeed.bf16.enabled",
    "generator.deepspeed.zero_optimization.stage",
    "discriminator.deepspeed.zero_optimization.stage",
    "generator.deepspeed.optimizer.type",
    "discriminator.deepspeed.optimizer.type",
    "ema",
    "init.freeze_d_blocks",
)


@dataclass
class TrainerState:
    """Everything the trainer keeps across a restart besides the engines' own state (weights, optimizer, loss scaler,
    LR scheduler) and the RNG: saved field by field in `trainer.pt`, restored by `resume`. New trainer state (an
    augmentation probability) is a new field here."""

    config: dict[str, Any]
    """The resolved run config (JSON form): what `check_compatible` compares a resumed run's config with."""
    world_size: int
    iteration: int = 0
    images_consumed: int = 0
    """Real images read from the data stream, summed over ranks: the stream's position (see dsgan/data.py), kept in
    images so that a new world size or batch size continues it."""
    best_score: float = math.inf
    """The lowest evaluation score (FID; FD8 for the digits) so far: the `best` checkpoint's."""
    ema: dict[str, torch.Tensor] | None = None
    """The EMA generator's state dict, filled at save time (the live EMA is `dsgan.ema.EMA`)."""
    wandb_run_id: str | None = None
    pl_mean: float = 0.0
    """The running mean of StyleGAN2's path length (dsgan.steps.PathLength), the same on every rank."""
    augment_p: float | None = None
    """ADA's augmentation probability (dsgan.augment.AugmentPipe), the same on every rank; None until an ADA run
    saves it (a fresh ADA run starts at augment.initial_p)."""
    augment_signs: tuple[float, int] = (0.0, 0)
    """ADA: the sum of sign(D(real)) over all ranks since p's last adjustment, and the number of logits summed."""


LOCK = "dsgan.lock"


def hold_run_dir(run_dir: Path, env: DistEnv, name: str = LOCK) -> IO[str] | None:
    """One writer per run dir: rank 0 takes an exclusive `flock` on `<run dir>/dsgan.lock` for the life of the
    process (the kernel drops it when the process dies, so a killed or preempted job never blocks its requeue), and
    every rank of a job that finds it taken stops with a message naming the holder. Collective: call it on every
    rank, after the process group is up. Returns the open lock file on rank 0: keep it for as long as the run.
    `name`: another lock file, for another kind of writer (`dsgan eval --watch`)."""
    problem, lock = None, None
    if env.is_main:
        lock = (run_dir / name).open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            problem = (
                f"run.dir={run_dir} is in use by another dsgan job ({holder}, holding {name}); wait for it or use "
                "another run.dir"
            )
            lock.close()
            lock = None
        else:
            lock.truncate(0)
            lock.write(
                f"host {socket.gethostname()}, pid {os.getpid()}, SLURM job {os.environ.get('SLURM_JOB_ID', '-')}"
            )
            lock.flush()
    problem = broadcast_object(problem, env)
    if problem:
        raise RunDirBusyError(problem)
    return lock


def step_name(iteration: int) -> str:
    return f"step-{iteration:08d}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _rng_state() -> dict[str, Any]:
    """This rank's RNG states as tensors and plain values (loadable with weights_only=True)."""
    state = np.random.get_state()
    assert isinstance(state, tuple)  # the legacy form, which the global RandomState (MT19937) always has
    kind, keys, pos, has_gauss, gauss = state
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
        # This rank's device only (set_device made it current): a node that shows the resumed job fewer GPUs (one per
        # task under srun, all of them under the deepspeed launcher) could not take back another device's state.
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save(
    run_dir: Path,
    state: TrainerState,
    engines: EngineDict,
    env: DistEnv,
    keep_last: int,
    milestone_every: int | None,
    best: bool = False,
) -> Path:
    """Collective: every rank must call it (DeepSpeed writes each rank's ZeRO partition). `best` marks it as the
    best by evaluation score: named in `checkpoints/best` and never pruned."""
    root = run_dir / CHECKPOINTS
    final = root / step_name(state.iteration)
    tmp = root / (step_name(state.iteration) + ".tmp")
    if env.is_main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # leftover of a killed save
    barrier(env)
    problem = None
    try:
        for name, net in engines.items():
            net.engine.save_checkpoint(str(tmp), tag=name, save_latest=False)
        rng = _rng_state()
        write_atomic(tmp / f"rng-rank{env.rank}.pt", lambda f: torch.save(rng, f))
        if env.is_main:
            trainer = dataclasses.asdict(state)
            write_atomic(tmp / TRAINER, lambda f: torch.save(trainer, f))
    except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as a RuntimeError
        problem = exc
    if not any_rank(problem is not None, env) and env.is_main:
        try:
            _seal(tmp, final, state.iteration, best)
        except OSError as exc:
            problem = exc
    if any_rank(problem is not None, env):
        if env.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        barrier(env)
        raise CheckpointWriteError(_write_failure(root, final.name, problem))
    if env.is_main:
        _prune(root, keep_last, milestone_every)
    barrier(env)
    return final


def _write_failure(root: Path, name: str, problem: BaseException | None) -> str:
    why = (
        str(problem).strip().splitlines()[-1][:200] if problem is not None else "another rank could not write its part"
    )
    kept = (root / "latest").read_text() if (root / "latest").is_file() else "none"
    free_mib = shutil.disk_usage(root).free / 2**20
    return (
        f"could not write checkpoint {name} in {root} ({why}; {free_mib:.0f} MiB free there). Its partial files "
        f"were removed; the earlier checkpoints are intact (latest: {kept}). Free space (or lower "
        "checkpoint.keep_last) and rerun the same command to resume."
    )


def _seal(tmp: Path, final: Path, iteration: int, best: bool) -> None:
    """Rank 0, once every rank's files are in `tmp`: the manifest, the rename that publishes the checkpoint, and
    the `latest` (and `best`) markers."""
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    manifest = {
        "iteration": iteration,
        "files": {str(p.relative_to(tmp)): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files},
    }
    write_atomic(tmp / MANIFEST, lambda f: f.write_text(json.dumps(manifest, indent=1)))
    if final.exists():  # same iteration saved before (e.g. end of run after a signal save)
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_atomic(final.parent / "latest", lambda f: f.write_text(final.name))
    if best:
        mark_best(final)


def ranking_score(metrics: dict[str, Any]) -> float | None:
    """What `best` is chosen by, lower is better: FID, or FD8 for the digits extractor; None without either."""
    value = metrics.get("fd8", metrics.get("fid"))
    return float(value) if value is not None else None


def mark_best(ckpt: Path) -> None:
    """Name `ckpt` in `checkpoints/best`, which pruning reads: that checkpoint is never pruned. Written by the
    trainer's own evaluation and by `dsgan eval --watch`."""
    write_atomic(ckpt.parent / "best", lambda f: f.write_text(ckpt.name))


def _prune(root: Path, keep_last: int, milestone_every: int | None) -> None:
    best = (root / "best").read_text() if (root / "best").is_file() else None
    steps = sorted(complete_steps(root))
    for iteration, path in steps[:-keep_last]:
        if (milestone_every and iteration % milestone_every == 0) or path.name == best:
            continue
        shutil.rmtree(path, ignore_errors=True)


def complete_steps(root: Path) -> list[tuple[int, Path]]:
    """(iteration, path) of every published checkpoint in `root`: never a `.tmp` being written or a `.corrupt` one
    set aside (a published one may still fail `verify`)."""
    out = []
    for path in root.glob("step-*"):
        if path.is_dir() and not path.name.endswith(".tmp") and path.name[5:].isdigit():
            out.append((int(path.name[5:]), path))
    return out


def verify(path: Path) -> str | None:
    """None if `path` is a complete checkpoint matching its manifest and its trainer state reads, else the reason it
    is not."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        return "no manifest (incomplete write)"
    try:
        files = json.loads(manifest_path.read_text())["files"]
        entries = [(str(rel), int(meta["size"]), str(meta["sha256"])) for rel, meta in files.items()]
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "manifest is not valid JSON"
    except (KeyError, TypeError, ValueError, AttributeError):
        return "manifest is not a dsgan manifest (no files with sizes and checksums)"
    for rel, size, sha256 in entries:
        f = path / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            return f"manifest names a file outside the checkpoint: {rel}"
        if not f.is_file():
            return f"missing file {rel}"
        if f.stat().st_size != size:
            return f"{rel} has {f.stat().st_size} bytes, manifest says {size} (truncated?)"
        if _sha256(f) != sha256:
            return f"{rel} checksum mismatch (corrupt)"
    if TRAINER not in {rel for rel, _, _ in entries}:
        return f"manifest does not list {TRAINER}"
    try:
        read_trainer_state(path)
    except CheckpointError as exc:
        return str(exc)
    return None


def find_resumable(run_dir: Path, set_aside: bool = False) -> Path | None:
    """Newest verified checkpoint in the run dir, warning about each newer one that is skipped. With `set_aside`
    (training), a skipped one is renamed `step-N.corrupt` once an older good one is found, so that pruning never
    counts it (and never deletes a good one in its place); and when checkpoints exist but none verifies, this is
    an error rather than a silent restart from iteration 0."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return None
    bad: list[tuple[Path, str]] = []
    for _, path in sorted(complete_steps(root), reverse=True):
        problem = verify(path)
        if problem is None:
            for skipped, _ in bad if set_aside else ():
                os.replace(skipped, skipped.with_name(skipped.name + ".corrupt"))
                log.warning("renamed %s to %s.corrupt", skipped, skipped.name)
            return path
        log.warning("skipping checkpoint %s: %s", path, problem)
        bad.append((path, problem))
    if bad and set_aside:
        raise CheckpointError(
            f"{root}: no checkpoint verifies ({'; '.join(f'{p.name}: {why}' for p, why in bad)}). Nothing was "
            "changed. To start this run over from iteration 0, move that directory away; to keep the run, restore "
            "a good checkpoint into it."
        )
    return None


def not_a_checkpoint(path: Path) -> str | None:
    """Why `path` (given by the user) is not a checkpoint directory at all, or None; cheap (no checksums), so that
    `--resume` can be checked before anything starts. `verify` checks the contents."""
    if not path.is_dir():
        return "no such directory" if not path.exists() else "not a directory"
    if (path / CHECKPOINTS).is_dir() or path.name == CHECKPOINTS:
        return (
            f"a run directory (or its {CHECKPOINTS}/), not a checkpoint: name one of its step-N directories, or leave "
            "out --resume to take its newest complete checkpoint"
        )
    if not (path / MANIFEST).is_file():
        return f"not a checkpoint directory (no {MANIFEST})"
    return None


def resolve_resume(run_dir: Path, explicit: Path | None, env: DistEnv) -> Path | None:
    """Rank 0 chooses (and verifies) the checkpoint, every rank gets the same answer."""
    choice: str | None = None
    error: str | None = None
    if env.is_main:
        if explicit is not None:
            problem = not_a_checkpoint(explicit) or verify(explicit)
            if problem:
                error = f"--resume {explicit}: {problem}"
            else:
                choice = str(explicit)
        else:
            try:
                found = find_resumable(run_dir, set_aside=True)
                choice = str(found) if found else None
            except CheckpointError as exc:  # every rank raises it, below
                error = str(exc)
    choice, error = broadcast_object((choice, error), env)
    if error:
        raise CheckpointError(error)
    return Path(choice) if choice else None


def check_compatible(saved: dict[str, Any], cfg: Config, saved_world: int, world_size: int) -> None:
    """Refuse a resume that cannot be exact, listing every difference."""
    current = cfg.model_dump(mode="json")
    diffs = []
    for key in RESUME_INVARIANTS:
        old, new = _get(saved, key), _get(current, key)
        if old != new:
            diffs.append(f"  {key}: checkpoint has {json.dumps(old)}, config has {json.dumps(new)}")
    stages = [cfg.generator.deepspeed.zero_optimization.stage, cfg.discriminator.deepspeed.zero_optimization.stage]
    if saved_world != world_size and max(stages) > 0:
        diffs.append(f"  world size: checkpoint has {saved_world}, now {world_size} (ZeRO partitions need the same)")
    if diffs:
        raise ConfigError(
            "cannot resume from this checkpoint: the config changed in ways that break an exact resume:\n"
            + "\n".join(diffs)
            + "\nStart a new run directory, or restore these settings."
        )


def _get(tree: dict[str, Any], dotted: str) -> Any:
    """The value at `dotted` as the run reads it. A DeepSpeed key left out of the JSON is not in the dumped config;
    its value is what DeepSpeedConfig reads for it (an absent `fp16.enabled` is false, as in DeepSpeed)."""
    network, _, rest = dotted.partition(".")
    if rest.startswith("deepspeed."):
        node: Any = DeepSpeedConfig.model_validate(tree[network]["deepspeed"])
        for part in rest.removeprefix("deepspeed.").split("."):
            node = getattr(node, part)
        return node
    node = tree
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def read_trainer_state(path: Path) -> TrainerState:
    """The trainer state on the CPU: a GPU run saves the EMA where it lives (cuda:0 on rank 0). Without
    map_location a CPU-only machine cannot read it at all, and every rank of a GPU job would load it onto GPU 0."""
    try:
        saved = torch.load(path / TRAINER, map_location="cpu", weights_only=True)
        return TrainerState(**saved)
    except Exception as exc:
        raise CheckpointError(f"{path / TRAINER}: cannot read a trainer state: {short_reason(exc)}") from None


def load(path: Path, engines: EngineDict, env: DistEnv) -> None:
    """Load both engines (optimizer, scaler, scheduler, ZeRO partitions) and this rank's RNG states."""
    for name, net in engines.items():
        loaded, _ = net.engine.load_checkpoint(
            str(path), tag=name, load_optimizer_states=True, load_lr_scheduler_states=True
        )
        if loaded is None:
            raise CheckpointError(f"{path}: DeepSpeed could not load the {name} engine")
    rng_file = path / f"rng-rank{env.rank}.pt"
    if rng_file.is_file():
        _set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=True))


def save_weights(
    run_dir: Path,
    cfg: Config,
    weights: dict[str, dict[str, torch.Tensor]],
    ema: dict[str, torch.Tensor] | None,
    pl_mean: float = 0.0,
) -> Path:
    """A weights-only checkpoint at iteration 0 (one process, no engines): `weights` maps "generator" and
    "discriminator" to state dicts. Atomic and verified like a training checkpoint; `load_generator` samples from
    it and training starts from it (`initial_weights`)."""
    root = run_dir / CHECKPOINTS
    final, tmp = root / step_name(0), root / (step_name(0) + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = TrainerState(config=cfg.model_dump(mode="json"), world_size=1, ema=ema, pl_mean=pl_mean)
    write_atomic(tmp / WEIGHTS, lambda f: torch.save(weights, f))
    write_atomic(tmp / TRAINER, lambda f: torch.save(dataclasses.asdict(state), f))
    _seal(tmp, final, 0, best=False)
    return final


def network_weights(path: Path, cfg: Config, name: str) -> dict[str, torch.Tensor]:
    """One network's weights (fp32) from a checkpoint dir: weights-only, ZeRO-3 partitions, or the engine's
    module file."""
    if (path / WEIGHTS).is_file():
        weights = torch.load(path / WEIGHTS, map_location="cpu", weights_only=True)[name]
    elif getattr(cfg, name).deepspeed.zero_optimization.stage == 3:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        weights = get_fp32_state_dict_from_zero_checkpoint(str(path), tag=name)
    else:
        weights = torch.load(path / name / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=True)
        weights = weights["module"]
    return {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}


def load_weights(module: torch.nn.Module, weights: dict[str, torch.Tensor], what: str) -> None:
    """`load_state_dict(strict=True)` with one message listing every missing, unexpected and mis-shaped tensor."""
    own = module.state_dict()
    problems = [f"{k}: missing from the checkpoint" for k in own if k not in weights]
    problems += [f"{k}: not in the model" for k in weights if k not in own]
    problems += [
        f"{k}: checkpoint has {list(v.shape)}, the model has {list(own[k].shape)}"
        for k, v in weights.items()
        if k in own and v.shape != own[k].shape
    ]
    if problems:
        raise misfit(f"{what}: the weights do not fit the configured model", problems, "the checkpoint's model config")
    module.load_state_dict(weights)


def misfit(what: str, problems: list[str], use: str) -> ConfigError:
    """One error for every tensor that does not fit (the first ten named), and the fix."""
    listed = "; ".join(problems[:10]) + ("; ..." if len(problems) > 10 else "")
    return ConfigError(f"{what} ({len(problems)} problems): {listed}. Use {use}.")


def initial_weights(
    cfg: Config, path: Path | None, generator: torch.nn.Module, discriminator: torch.nn.Module
) -> TrainerState | None:
    """Where a run starts from weights rather than continuing a training checkpoint: a weights-only checkpoint in
    the run dir, or `init.checkpoint` while the run dir has no checkpoint (`path` is what `resolve_resume` chose).
    Loads G and D before the engines exist (DeepSpeed's optimizer and ZeRO partitions copy the weights they start
    from) and returns that checkpoint's trainer state (EMA, path-length mean) for `resume`; None otherwise."""
    if path is not None and not (path / WEIGHTS).is_file():
        return None
    source = path if path is not None else cfg.init.checkpoint if cfg.init is not None else None
    if source is None:
        return None
    problem = verify(source) if source.is_dir() else "not a checkpoint directory"
    if problem:
        raise CheckpointError(f"init.checkpoint={source}: {problem}")
    saved = read_trainer_state(source)
    saved_cfg = Config.model_validate(saved.config)
    for name, module in (("generator", generator), ("discriminator", discriminator)):
        load_weights(module, network_weights(source, saved_cfg, name), f"{source} ({name})")
    log.info("starting from the weights of %s (optimizer state fresh)", source)
    return saved


def resume(
    cfg: Config,
    env: DistEnv,
    engines: EngineDict,
    ema: EMA | None,
    path: Path | None,
    initial: TrainerState | None = None,
) -> TrainerState:
    """The trainer state to start from. With a training checkpoint (`path`, from `resolve_resume`): check that the
    config can continue it exactly, load both engines and this rank's RNG, re-apply the config's optimizer settings,
    and load the EMA. Started from weights (`initial`, from `initial_weights`): its EMA (or G's copy) and
    path-length mean, at iteration 0. Otherwise: a fresh state."""
    fresh = TrainerState(config=cfg.model_dump(mode="json"), world_size=env.world_size)
    if initial is not None:
        if ema is not None and initial.ema is not None:
            load_weights(ema.module, initial.ema, "the checkpoint's EMA")
        return dataclasses.replace(fresh, pl_mean=initial.pl_mean)
    if path is None:
        return fresh
    saved = read_trainer_state(path)
    check_compatible(saved.config, cfg, saved.world_size, env.world_size)
    load(path, engines, env)
    for net in engines.values():
        net.apply_config_optimizer_settings()
    if ema is not None:
        assert saved.ema is not None  # check_compatible: the saved config kept an EMA too, and save stores it
        ema.load_state_dict(saved.ema)
    log.info("resumed from %s at iteration %d", path, saved.iteration)
    return dataclasses.replace(saved, config=fresh.config, world_size=env.world_size, ema=None)


def load_generator(path: Path, use_ema: bool = True) -> tuple[Generator, Config, int]:
    """G from a run dir (its newest verified checkpoint) or a checkpoint dir, without DeepSpeed engines or a
    process group, for sampling and evaluation. EMA weights by default when the run kept them.
    Returns (generator in eval mode, the run's config, iteration)."""
    if not path.is_dir():
        raise CheckpointError(f"{path}: {not_a_checkpoint(path)}")
    ckpt = path if (path / MANIFEST).is_file() else find_resumable(path)
    if ckpt is None:
        raise CheckpointError(f"{path}: no complete checkpoint (neither a checkpoint dir nor a run dir with one)")
    if problem := verify(ckpt):
        raise CheckpointError(f"{ckpt}: {problem}")
    state = read_trainer_state(ckpt)
    generator, cfg = checkpoint_generator(ckpt, state, use_ema)
    return generator, cfg, state.iteration


def checkpoint_generator(ckpt: Path, state: TrainerState, use_ema: bool) -> tuple[Generator, Config]:
    """G of a verified checkpoint whose trainer state is `state`: its EMA when kept and `use_ema`, else G's trained
    weights (a weights-only checkpoint's too); in eval mode, float32. Returns (generator, the run's config)."""
    from dsgan.models import build_generator

    try:
        cfg = Config.model_validate(state.config)
    except ValidationError as exc:  # e.g. written by a dsgan whose schema has since changed
        problems = format_errors(exc, {"run": f"{ckpt / TRAINER} (its config)"})
        raise CheckpointError(f"the run config saved in the checkpoint does not validate:\n{problems}") from None
    with torch.device("meta"):  # every tensor is loaded below: skip the initialisation (~25 s for BigGAN-128's G)
        generator = build_generator(cfg.generator.model)
    if use_ema and cfg.ema is not None and state.ema is not None:
        generator.load_state_dict(state.ema, assign=True)
    else:
        generator.load_state_dict(network_weights(ckpt, cfg, "generator"), assign=True)
    return generator.float().eval(), cfg
