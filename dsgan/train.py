"""Train a GAN with two DeepSpeed engines in MMagic's D/G alternation.

    deepspeed --num_gpus 2 dsgan/train.py --config configs/tiny_cpu.yaml   # DeepSpeed launcher
    torchrun --nproc-per-node 2 -m dsgan.train --config ...                # or srun (slurm/), or one process
    dsgan train --config ...

No config = the embedded default (a conditional DCGAN on scikit-learn's digits). To resume, run the same command
again: the newest complete checkpoint in the run directory is loaded.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # `deepspeed dsgan/train.py` runs this file as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import yaml

from dsgan import checkpoint, distributed
from dsgan.config import Config, config_hash, load_config
from dsgan.coordinator import Schedule
from dsgan.data import StreamSampler, build_dataset, dataset_summary, make_loader
from dsgan.distributed import DistEnv
from dsgan.ema import EMA
from dsgan.engines import EngineDict, build_engines
from dsgan.errors import (
    EXIT_COLLECTIVE,
    EXIT_NONFINITE,
    EXIT_OK,
    EXIT_PREEMPTED,
    ConfigError,
    DsganError,
    NonFiniteLossError,
)
from dsgan.eval.run import Evaluator
from dsgan.models import build_discriminator, build_generator
from dsgan.samples import fixed_noise, save_grid
from dsgan.steps import D_STATS, d_step, g_step
from dsgan.tracking import Tracker, progress_line

log = logging.getLogger("dsgan")

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)
AGREEMENT_FIELDS = ["iteration", "d_micro_steps", "d_updates", "g_micro_steps", "config_hash"]


@dataclass
class Run:
    """Everything the loop needs, built once in `build` (order: config -> distributed -> seed -> models ->
    EMA -> engines -> data -> checkpoint -> tracker)."""

    cfg: Config
    env: DistEnv
    schedule: Schedule
    engines: EngineDict
    ema: EMA | None
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]]
    tracker: Tracker
    total_iters: int
    stop_requested: list[int]
    """Signals received (the handlers append, from before `build`); the ranks agree on it at each D update."""
    iteration: int = 0
    start_iteration: int = 0
    start_batch: int = 0
    """Global data batches consumed before this process started (the data stream's position)."""
    best_fid: float = float("inf")
    evaluator: Evaluator | None = None
    """Built at the first evaluation."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="dsgan train", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", type=Path, help="run config (YAML/JSON/TOML); default: the embedded digits run")
    p.add_argument("--run-dir", type=Path, help="overrides run.dir")
    p.add_argument("--resume", type=Path, help="resume from this checkpoint dir instead of the newest in the run dir")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def setup_logging(env: DistEnv) -> None:
    logging.basicConfig(
        level=logging.INFO if env.is_main else logging.WARNING,
        format=f"%(asctime)s [rank {env.rank}] %(levelname)s %(message)s" if env.world_size > 1 else "%(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stdout,
        force=True,
    )
    for noisy in ("DeepSpeed", "deepspeed", "torch.distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def step_seed(seed: int, rank: int, iteration: int, micro: int) -> int:
    """Noise and fake labels come from (seed, rank, iteration, micro-step): resume needs no RNG state, and each
    rank draws different noise."""
    return (seed * 0x9E3779B1 + rank * 0x85EBCA77 + iteration * 0xC2B2AE3D + micro * 0x27D4EB2F) % (2**63)


def sample_latents(run: Run, iteration: int, micro: int, batch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    g_model = run.cfg.generator.model
    gen = torch.Generator(run.env.device).manual_seed(step_seed(run.cfg.run.seed, run.env.rank, iteration, micro))
    z = torch.randn(batch, g_model.noise_size, generator=gen, device=run.env.device)
    y = None
    if g_model.num_classes:
        y = torch.randint(g_model.num_classes, (batch,), generator=gen, device=run.env.device)
    return z, y


# ----------------------------------------------------------------------------------------------------------------


def build(cfg: Config, env: DistEnv, resume: Path | None, stop_requested: list[int]) -> Run:
    g_model, d_model = cfg.generator.model, cfg.discriminator.model
    # Data and run dir first: a bad path fails before any process group or engine exists.
    dataset = build_dataset(cfg.data, g_model.output_scale, g_model.out_channels, g_model.num_classes)
    _check_writable(cfg.run.dir)
    distributed.init(env, cfg.run.collective_timeout_seconds)
    log.info("dsgan: %d rank(s) on %s; %s", env.world_size, env.device.type, dataset_summary(dataset))

    run_dir = cfg.run.dir
    ckpt = checkpoint.resolve_resume(run_dir, resume, env)
    state = checkpoint.read_trainer_state(ckpt) if ckpt else None
    if state is not None:
        checkpoint.check_compatible(state["config"], cfg, state["world_size"], env.world_size)

    # Same seed on every rank: identical initial weights and spectral-norm vectors (DeepSpeed broadcasts neither).
    torch.manual_seed(cfg.run.seed)
    generator, discriminator = build_generator(g_model), build_discriminator(d_model)
    ema = EMA(generator, cfg.ema) if cfg.ema else None  # copied before ZeRO-3 partitions G
    engines = build_engines(
        generator, discriminator, cfg.generator.deepspeed, cfg.discriminator.deepspeed, env.world_size
    )
    if ema is not None:
        ema.module.to(env.device)

    iteration = 0
    if ckpt is not None:
        checkpoint.load(ckpt, engines, env)
        for net in engines.values():
            net.apply_config_optimizer_settings()
        if ema is not None:
            ema.load_state_dict(state["ema"])
        iteration = state["iteration"]
        log.info("resumed from %s at iteration %d", ckpt, iteration)
    best_fid = state.get("best_fid", float("inf")) if state is not None else float("inf")

    schedule = Schedule(
        cfg.schedule.discriminator_steps,
        cfg.schedule.generator_steps,
        cfg.discriminator.deepspeed.gradient_accumulation_steps,
        cfg.generator.deepspeed.gradient_accumulation_steps,
    )
    micro = cfg.discriminator.deepspeed.train_micro_batch_size_per_gpu
    start_batch = iteration
    if state is not None:  # the data position is stored in images, so a new world size or batch continues it
        start_batch, rest = divmod(state["samples_consumed"], cfg.images_per_iter(env.world_size))
        if rest:
            raise ConfigError(
                f"cannot continue the data stream: {state['samples_consumed']} images consumed is not a multiple of "
                f"the new global batch {cfg.images_per_iter(env.world_size)} (micro-batch x world size)"
            )
    sampler = StreamSampler(len(dataset), micro, env.rank, env.world_size, cfg.run.seed, start_batch=start_batch)
    num_workers = getattr(cfg.data, "num_workers", 0)
    batches = iter(make_loader(dataset, sampler, micro, num_workers, getattr(cfg.data, "pin_memory", False)))

    resolved = cfg.model_dump(mode="json")
    if env.is_main:  # the run dir exists: _check_writable made it
        (run_dir / "config.resolved.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    tracker = Tracker(cfg.tracking.wandb, run_dir, resolved, env.is_main)
    return Run(
        cfg,
        env,
        schedule,
        engines,
        ema,
        batches,
        tracker,
        cfg.total_iters_for(env.world_size),
        stop_requested,
        iteration=iteration,
        start_iteration=iteration,
        start_batch=start_batch,
        best_fid=best_fid,
    )


# ----------------------------------------------------------------------------------------------------------------


def train(run: Run) -> int:
    cfg, env, schedule = run.cfg, run.env, run.schedule
    g, d = run.engines["generator"], run.engines["discriminator"]
    conditional = cfg.generator.model.num_classes > 0
    fp16 = {"generator": g.ds_cfg.fp16.enabled, "discriminator": d.ds_cfg.fp16.enabled}
    cfg_hash = int(config_hash(cfg), 16) % (2**62)
    skip_hook = _test_skip_hook(env)
    log.info(
        "schedule: D %d update(s) x %d micro-batch(es), then G %d update(s) x %d micro-batch(es); %d iterations, "
        "%d images/iteration",
        schedule.discriminator_steps,
        schedule.d_accumulation,
        schedule.generator_steps,
        schedule.g_accumulation,
        run.total_iters,
        cfg.images_per_iter(env.world_size),
    )

    # Device-side accumulators: summed every micro-step, reduced and read only when logging (no per-step sync).
    stats = torch.zeros(len(D_STATS) + 1, device=env.device)  # D_STATS, then g_loss
    nonfinite = torch.zeros(1, dtype=torch.int64, device=env.device)
    interval_start, interval_iter = time.perf_counter(), run.iteration
    g_micro_in_interval = 0
    stop = False
    if run.iteration >= run.total_iters:
        log.info("run already complete (%d/%d iterations)", run.iteration, run.total_iters)

    while run.iteration < run.total_iters:
        it = run.iteration
        plan = schedule.plan(it)
        # Gradient norms only in the cycle before a log line, which holds each network's last update before it.
        next_log = min(run.total_iters, (it // cfg.run.log_every_iters + 1) * cfg.run.log_every_iters)
        g.measure_grad_norm = d.measure_grad_norm = next_log - it <= schedule.cycle_iters

        # --- agreement: before the collectives of a D update, every rank must be at the same place
        if plan.d_update:
            stop = _agree(run, cfg_hash, nonfinite, it)  # a signal on any rank: finish this update, save, exit

        # --- fetch
        real, labels = next(run.batches)
        real = real.to(env.device, non_blocking=True)
        labels = labels.to(env.device, non_blocking=True) if conditional else None

        # --- D phase: one micro-batch; fakes without G's graph
        if skip_hook != it:
            z, fake_y = sample_latents(run, it, 0, real.shape[0])
            d_stats = d_step(run.engines, cfg.loss, real, labels, z, fake_y, it)
            if not fp16["discriminator"]:
                nonfinite |= ~torch.isfinite(d_stats[0])
            stats[:-1] += d_stats

        # --- G phase: D as a frozen module, never through its engine
        for k in range(plan.g_micro_steps):
            z, fake_y = sample_latents(run, it, 1 + k, real.shape[0])
            loss, stepped = g_step(run.engines, cfg.loss.type, z, fake_y)
            if not fp16["generator"]:
                nonfinite |= ~torch.isfinite(loss)
            stats[-1] += loss
            g_micro_in_interval += 1
            # --- EMA: once per G optimizer update
            if stepped and run.ema is not None:
                run.ema.update(g.module, g.global_steps)

        # --- counters
        run.iteration = it + 1

        # --- log
        if run.iteration % cfg.run.log_every_iters == 0 or run.iteration == run.total_iters:
            elapsed = time.perf_counter() - interval_start
            _log(run, stats, run.iteration - interval_iter, g_micro_in_interval, elapsed)
            stats.zero_()
            interval_start, interval_iter, g_micro_in_interval = time.perf_counter(), run.iteration, 0

        # --- snapshot: fixed-noise sample grid
        every = cfg.run.sample_every_iters
        if (every and run.iteration % every == 0) or run.iteration == run.total_iters:
            _write_samples(run)

        # --- evaluate (every rank), keeping the best checkpoint by FID
        best = bool(cfg.eval.every_iters and run.iteration % cfg.eval.every_iters == 0 and _evaluate(run))

        # --- checkpoint (only where both networks are on an optimizer-update boundary)
        every = cfg.checkpoint.every_iters
        due = stop or best or (every and run.iteration % every == 0) or run.iteration == run.total_iters
        if due and schedule.is_boundary(run.iteration):
            stop = _agree(run, cfg_hash, nonfinite, run.iteration)  # never save a NaN or a diverged state
            _save(run, best)
            if stop:
                log.warning(
                    "stopped by a signal at iteration %d; checkpoint saved; exit %d (rerun to resume)",
                    run.iteration,
                    EXIT_PREEMPTED,
                )
                run.tracker.close()
                return EXIT_PREEMPTED

    log.info("done: %d iterations; run dir %s", run.iteration, cfg.run.dir)
    run.tracker.close()
    return EXIT_OK


def _agree(run: Run, cfg_hash: int, nonfinite: torch.Tensor, it: int) -> bool:
    """One all-gather: schedule counters from the engines themselves, plus stop and NaN flags. Returns stop."""
    g, d = run.engines["generator"], run.engines["discriminator"]
    expected = [*run.schedule.fingerprint(it), cfg_hash]
    state = [it, d.micro_steps, d.global_steps, g.micro_steps, cfg_hash]
    # Engine counters start at 0 for this process (DeepSpeed restores global_steps, not micro_steps).
    expected[1] -= run.start_iteration
    expected[3] -= run.schedule.g_micro_steps(run.start_iteration)
    flags = torch.cat([torch.tensor([int(bool(run.stop_requested))], device=run.env.device), nonfinite])
    stop, bad = distributed.agree(state, expected, AGREEMENT_FIELDS, flags, run.env)
    if bad:
        raise NonFiniteLossError(
            f"non-finite loss before iteration {it} (fp32/bf16 runs stop on NaN/inf; fp16 overflows are skipped "
            "by the loss scaler instead). No checkpoint was written after it: lower the learning rates, check the "
            "data, or enable gradient_clipping, then rerun the same command to resume from the last good one."
        )
    return stop


def _log(run: Run, stats: torch.Tensor, iters: int, g_micro: int, elapsed: float) -> None:
    """The only cross-rank reduction outside the coordinator's agreement, and only on logging iterations."""
    env, g, d = run.env, run.engines["generator"], run.engines["discriminator"]
    if env.world_size > 1:
        torch.distributed.all_reduce(stats)
        stats /= env.world_size
    *d_sums, g_sum = stats.tolist()
    images = iters * run.cfg.images_per_iter(env.world_size)
    metrics = {
        **{key: value / iters for key, value in zip(D_STATS, d_sums, strict=True)},
        "kimg": run.iteration * run.cfg.images_per_iter(env.world_size) / 1000,
        "images_per_second": images / elapsed,
        "seconds_per_iter": elapsed / iters,
        "g_updates": g.global_steps,
        "d_updates": d.global_steps,
        "g_lr": g.lr,
        "d_lr": d.lr,
        "g_skipped_steps": g.skipped_steps,
        "d_skipped_steps": d.skipped_steps,
    }
    if g_micro:  # absent, not NaN, from an interval without a G step (D-only stretches of a long D phase)
        metrics["g_loss"] = g_sum / g_micro
    for name, net in (("g", g), ("d", d)):
        if (norm := net.grad_norm) is not None:
            metrics[f"{name}_grad_norm"] = norm
        if (scale := net.loss_scale) is not None:
            metrics[f"{name}_loss_scale"] = scale
    if run.ema is not None:
        metrics["ema_momentum"] = run.cfg.ema.momentum
        metrics["ema_active"] = float(g.global_steps > run.cfg.ema.start_g_updates)
    metrics["max_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # this rank's host memory
    if env.device.type == "cuda":
        metrics["max_memory_gib"] = torch.cuda.max_memory_allocated(env.device) / 2**30
    run.tracker.log(metrics, run.iteration)
    eta = (run.total_iters - run.iteration) * elapsed / iters
    log.info(progress_line(metrics, run.iteration, run.total_iters, eta))


def _write_samples(run: Run) -> None:
    """Every rank runs the forward (ZeRO-3 gathers G's weights collectively); rank 0 writes the PNG."""
    g_model = run.cfg.generator.model
    rows = g_model.num_classes or 8
    z, y = fixed_noise(g_model.num_classes, 10 if g_model.num_classes else 8, g_model.noise_size, run.cfg.run.seed)
    model = run.ema.module if run.ema is not None else run.engines["generator"].module
    was_training = model.training
    model.eval()
    with torch.no_grad(), run.engines["generator"].optim_context():
        images = model(z.to(run.env.device), None if y is None else y.to(run.env.device)).float().cpu()
    model.train(was_training)
    if run.env.is_main:
        path = run.cfg.run.dir / "samples" / f"iter_{run.iteration:08d}.png"
        save_grid(images, path, nrow=len(images) // rows)
        run.tracker.log_image("samples", path, run.iteration)


def _evaluate(run: Run) -> bool:
    """FID (FD8 for the digits extractor) of the EMA G (else G) on every rank; True when it is the best so far."""
    env = run.env
    if run.evaluator is None:
        run.evaluator = Evaluator(run.cfg, run.cfg.run.dir, env.rank, env.world_size, env.device)
    model = run.ema.module if run.ema is not None else run.engines["generator"].module
    start = time.perf_counter()
    with run.engines["generator"].optim_context():
        metrics = run.evaluator(model)
    log.info(
        "eval at iteration %d (%s, %d samples, %.0f s): %s",
        run.iteration,
        run.evaluator.name,
        run.cfg.eval.num_samples,
        time.perf_counter() - start,
        ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()),
    )
    run.tracker.log({f"eval/{k}": v for k, v in metrics.items()}, run.iteration)
    score = metrics.get("fid", metrics.get("fd8"))
    if score < run.best_fid:
        run.best_fid = score
        return True
    return False


def _save(run: Run, best: bool = False) -> None:
    ema_state = run.ema.state_dict() if run.ema is not None else None
    trainer_state = {
        "best_fid": run.best_fid,
        "config": run.cfg.model_dump(mode="json"),
        "config_hash": config_hash(run.cfg),
        "ema": ema_state,
        "samples_consumed": (run.start_batch + run.iteration - run.start_iteration)
        * run.cfg.images_per_iter(run.env.world_size),
        "wandb_run_id": run.tracker.wandb_run_id,
    }
    path = checkpoint.save(
        run.cfg.run.dir,
        run.iteration,
        run.engines,
        trainer_state,
        run.env,
        run.cfg.checkpoint.keep_last,
        run.cfg.checkpoint.milestone_every_iters,
        best=best,
    )
    log.info("checkpoint %s%s", path, " (best evaluation score so far)" if best else "")


def _install_signal_handlers(stop_requested: list[int]) -> None:
    """SIGUSR1 (SLURM's warning before the time limit), SIGTERM (preemption) and SIGINT only raise a flag; the
    ranks agree on it at the next D update, finish it, checkpoint, and exit with EXIT_PREEMPTED. Installed before
    anything is built, so that a signal during start-up also ends in a checkpoint and a requeue."""

    def handler(signum: int, _frame) -> None:
        stop_requested.append(signum)
        if signum == signal.SIGINT and len(stop_requested) > 1:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once

    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)


def _check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=run_dir).close()
    except OSError as exc:
        raise ConfigError(f"run.dir={run_dir}: cannot create or write to it ({exc.strerror or exc})") from None


def _test_skip_hook(env: DistEnv) -> int | None:
    """Test-only fault injection: DSGAN_TEST_SKIP_D_MICROSTEP=RANK:ITER makes that rank skip one D micro-step."""
    spec = os.environ.get("DSGAN_TEST_SKIP_D_MICROSTEP")
    if not spec:
        return None
    rank, it = (int(x) for x in spec.split(":"))
    return it if rank == env.rank else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = distributed.detect(args.local_rank)
    setup_logging(env)
    overrides = list(args.set) + ([f"run.dir={args.run_dir}"] if args.run_dir else [])
    stop_requested: list[int] = []
    _install_signal_handlers(stop_requested)
    try:
        cfg = load_config(args.config, overrides, world_size=env.world_size, device=env.device.type)
        return train(build(cfg, env, args.resume, stop_requested))
    except DsganError as exc:
        log.error("error: %s", exc)
        return exc.exit_code
    except RuntimeError as exc:
        if env.world_size == 1 or not distributed.is_collective_failure(exc):
            raise
        log.error(
            "error: a collective failed on rank %d (%s). Another rank died or stopped taking part (its log has the "
            "first error), or none answered within run.collective_timeout_seconds. The last complete checkpoint is "
            "intact: rerun the same command to resume.",
            env.rank,
            str(exc).strip().splitlines()[-1][:300],
        )
        return EXIT_COLLECTIVE
    except Exception as exc:  # DeepSpeed raises a bare Exception when fp16 training collapses
        if "loss scale already at minimum" not in str(exc):
            raise
        log.error(
            "error: fp16 training diverged: the loss scaler overflowed at its minimum scale (%s). Lower the learning "
            "rates, enable gradient_clipping, or use bf16; the last checkpoint is intact.",
            exc,
        )
        return EXIT_NONFINITE


def exit_process(code: int) -> None:
    """Exit with `code`, skipping interpreter teardown: with DeepSpeed's and gloo's threads alive, teardown can abort
    ("terminate called without an active exception", SIGABRT) and replace the exit code that launchers and the
    SLURM scripts act on (75 = requeue) with -6."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_process(main())
