"""Train a GAN with two DeepSpeed engines in MMagic's D/G alternation.

    deepspeed --num_gpus 2 dsgan/train.py --config configs/tiny_cpu.yaml   # DeepSpeed launcher
    torchrun --nproc-per-node 2 -m dsgan.train --config ...                # or srun (slurm/), or one process
    dsgan train --config ...

No config = the embedded default (a conditional DCGAN on scikit-learn's digits). To resume, run the same command
again: the newest complete checkpoint in the run directory is loaded.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from typing import IO, cast

if __package__ in (None, ""):  # `deepspeed dsgan/train.py` runs this file as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import yaml

from dsgan import checkpoint, distributed
from dsgan.augment import AugmentPipe
from dsgan.checkpoint import TrainerState
from dsgan.cli import add_train_arguments
from dsgan.config import Config, config_hash, load_config
from dsgan.data import StreamSampler, build_dataset, dataset_summary, make_loader
from dsgan.distributed import DistEnv
from dsgan.ema import EMA
from dsgan.engines import EngineDict, build_engines
from dsgan.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PREEMPTED,
    CheckpointError,
    ConfigError,
    NonFiniteLossError,
    user_error,
)
from dsgan.eval.run import Evaluator
from dsgan.models import Generator, build_discriminator, build_generator, freeze_input_blocks
from dsgan.samples import fixed_noise, generate, save_grid
from dsgan.schedule import Schedule
from dsgan.steps import D_STATS, IntervalStats, PathLength, d_step, g_step, sample_latents, step_seed
from dsgan.tracking import Tracker, progress_line

log = logging.getLogger("dsgan")

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)


@dataclass
class Run:
    """Everything the loop needs, built once in `build` (order: config -> data -> run dir -> distributed -> seed ->
    models -> EMA -> engines -> checkpoint -> data stream -> tracker)."""

    cfg: Config
    env: DistEnv
    schedule: Schedule
    engines: EngineDict
    ema: EMA | None
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]]
    tracker: Tracker
    state: TrainerState
    """Iteration, images consumed, best score...: what a checkpoint restores."""
    total_iters: int
    stop_requested: list[int]
    """Signals received (the handlers append, from before `build`); the ranks agree on it at each D update."""
    start_iteration: int
    run_dir_lock: IO[str] | None
    """Rank 0's lock on the run dir (see checkpoint.hold_run_dir), held until the process exits."""
    path_length: PathLength
    """The path-length regularizer's running mean (trainer state) and timing."""
    augment: AugmentPipe
    """The augmentation of D's inputs and ADA's p (trainer state)."""
    evaluator: Evaluator | None = None
    """Built at the first evaluation."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="dsgan train", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_train_arguments(p)
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


# ----------------------------------------------------------------------------------------------------------------


def build(cfg: Config, env: DistEnv, resume: Path | None, stop_requested: list[int]) -> Run:
    g_model, d_model = cfg.generator.model, cfg.discriminator.model
    # Data and run dir first: a bad path fails before any process group or engine exists.
    dataset = build_dataset(cfg.data, g_model.output_scale, g_model.out_channels, g_model.num_classes)
    _check_writable(cfg.run.dir)
    if resume is not None and (problem := checkpoint.not_a_checkpoint(resume)):
        raise CheckpointError(f"--resume {resume}: {problem}")
    distributed.init(env, cfg.run.collective_timeout_seconds)
    lock = checkpoint.hold_run_dir(cfg.run.dir, env)
    log.info("dsgan: %d rank(s) on %s; %s", env.world_size, env.device.type, dataset_summary(dataset))

    # Same seed on every rank: identical initial weights and spectral-norm vectors (DeepSpeed broadcasts neither).
    torch.manual_seed(cfg.run.seed)
    generator, discriminator = build_generator(g_model), build_discriminator(d_model)
    # Imported or fine-tuning weights go in before the engines copy them; frozen D blocks stay out of D's optimizer.
    resume_from = checkpoint.resolve_resume(cfg.run.dir, resume, env)
    initial = checkpoint.initial_weights(cfg, resume_from, generator, discriminator)
    freeze_input_blocks(discriminator, cfg.init.freeze_d_blocks if cfg.init else 0)
    ema = EMA(generator, cfg.ema) if cfg.ema else None  # copied before ZeRO-3 partitions G
    # Randomness inside forwards (StyleGAN2's noise injection and style mixing, WGAN-GP's interpolation) differs per
    # rank from here on; a checkpoint carries each rank's RNG state, so resume continues it.
    torch.manual_seed(step_seed(cfg.run.seed, env.rank, -1, 0))
    engines = build_engines(
        generator, discriminator, cfg.generator.deepspeed, cfg.discriminator.deepspeed, env.world_size
    )
    if ema is not None:
        ema.module.to(env.device)
    state = checkpoint.resume(cfg, env, engines, ema, resume_from, initial)

    micro = cfg.discriminator.deepspeed.train_micro_batch_size_per_gpu
    sampler = StreamSampler(
        len(dataset), micro, env.rank, env.world_size, cfg.run.seed, state.images_consumed, cfg.data.xflip
    )
    num_workers = getattr(cfg.data, "num_workers", 0)
    batches = iter(make_loader(dataset, sampler, micro, num_workers, getattr(cfg.data, "pin_memory", False)))

    if env.is_main:  # the run dir exists: _check_writable made it
        (cfg.run.dir / "config.resolved.yaml").write_text(yaml.safe_dump(state.config, sort_keys=False))
    tracker = Tracker(cfg.tracking.wandb, cfg.run.dir, state.config, env.is_main, state.iteration)
    total_iters = cfg.total_iters_for(env.world_size)
    schedule = Schedule.of(cfg)
    path_length = PathLength(cfg.loss, g_model, cfg.run.seed, env, state.pl_mean)
    images_per_iter = cfg.images_per_iter(env.world_size)
    augment = AugmentPipe(cfg.augment, cfg.run.seed, env, images_per_iter, state.augment_p, state.augment_signs)
    return Run(
        cfg,
        env,
        schedule,
        engines,
        ema,
        batches,
        tracker,
        state,
        total_iters,
        stop_requested,
        state.iteration,
        lock,
        path_length,
        augment,
    )


# ----------------------------------------------------------------------------------------------------------------


def train(run: Run) -> int:
    cfg, env, schedule, state = run.cfg, run.env, run.schedule, run.state
    g, d = run.engines["generator"], run.engines["discriminator"]
    g_model = cfg.generator.model
    fp16 = {"generator": g.ds_cfg.fp16.enabled, "discriminator": d.ds_cfg.fp16.enabled}
    images_per_iter = cfg.images_per_iter(env.world_size)
    log.info("schedule: %s; %d images/iteration", "; ".join(schedule.describe(run.total_iters)), images_per_iter)

    # Device-side accumulators: summed every micro-step, read only when logging or agreeing (no per-step sync).
    stats = IntervalStats(env.device)
    cfg_hash = int(config_hash(cfg), 16) % (2**62)  # once: it is compared at every agreement
    nonfinite = torch.zeros(1, dtype=torch.int64, device=env.device)
    interval_start, interval_iter = time.perf_counter(), state.iteration
    stop = False
    if state.iteration >= run.total_iters:
        log.info("run already complete (%d/%d iterations)", state.iteration, run.total_iters)

    while state.iteration < run.total_iters:
        it = state.iteration
        plan = schedule.plan(it)
        # Gradient norms only in the cycle before a log line, which holds each network's last update before it.
        next_log = min(run.total_iters, (it // cfg.run.log_every_iters + 1) * cfg.run.log_every_iters)
        measure = next_log - it <= schedule.cycle_iters

        # --- agreement: before the collectives of a D update, every rank must be at the same place
        if plan.d_update:
            stop = _agree(run, cfg_hash, nonfinite)  # a signal on any rank: finish this update, save, exit

        # --- fetch
        real, real_labels = next(run.batches)
        real = real.to(env.device, non_blocking=True)
        labels = real_labels.to(env.device, non_blocking=True) if g_model.num_classes else None

        # --- D phase: one micro-batch; fakes without G's graph; D sees both (and R1 the reals) augmented
        z, fake_y = sample_latents(g_model, cfg.run.seed, env, it, 0, real.shape[0])
        real_view, fake_view = run.augment.d_views(it)
        d_stats, d_update = d_step(
            run.engines, cfg.loss, real, labels, z, fake_y, schedule.d_updates(it), measure, real_view, fake_view
        )
        run.augment.observe(d_stats[D_STATS.index("d_real_sign")], real.shape[0])
        if not fp16["discriminator"]:
            nonfinite |= ~torch.isfinite(d_stats[0])
        stats.add_d(d_stats, d_update)

        # --- G phase: D as a frozen module, never through its engine; path length on its own, smaller batch
        for k in range(plan.g_micro_steps):
            z, fake_y = sample_latents(g_model, cfg.run.seed, env, it, 1 + k, real.shape[0])
            pl = run.path_length.batch(it, k, real.shape[0]) if run.path_length.due(schedule, it, k) else None
            g_stats, g_update, path_mean = g_step(
                run.engines, cfg.loss, z, fake_y, measure, pl, run.augment.g_view(it, k)
            )
            if path_mean is not None:
                run.path_length.update(path_mean)
            if not fp16["generator"]:
                nonfinite |= ~torch.isfinite(g_stats).all()
            stats.add_g(g_stats, g_update)
            # --- EMA: once per G optimizer update
            if g_update.stepped and run.ema is not None:
                run.ema.update(g.module, g.global_steps)

        # --- counters
        state.iteration = it + 1
        state.images_consumed += images_per_iter

        # --- ADA: p towards r_t = target, from all ranks' signs since the last adjustment (the interval's one sync)
        if run.augment.adjust_due(state.iteration):
            run.augment.adjust()

        # --- log
        if state.iteration % cfg.run.log_every_iters == 0 or state.iteration == run.total_iters:
            _log(run, stats.reduce(env), state.iteration - interval_iter, time.perf_counter() - interval_start)
            interval_start, interval_iter = time.perf_counter(), state.iteration

        # --- snapshot: fixed-noise sample grid
        every = cfg.run.sample_every_iters
        if (every and state.iteration % every == 0) or state.iteration == run.total_iters:
            _write_samples(run)

        # --- evaluate (every rank), keeping the best checkpoint by FID
        best = bool(cfg.eval.every_iters and state.iteration % cfg.eval.every_iters == 0 and _evaluate(run))

        # --- checkpoint (only where both networks are on an optimizer-update boundary)
        every = cfg.checkpoint.every_iters
        due = stop or best or (every and state.iteration % every == 0) or state.iteration == run.total_iters
        if due and schedule.is_boundary(state.iteration):
            stop = _agree(run, cfg_hash, nonfinite)  # never save a NaN or a diverged state
            _save(run, best)
            if stop:
                log.warning(
                    "stopped by a signal at iteration %d; checkpoint saved; exit %d (rerun to resume)",
                    state.iteration,
                    EXIT_PREEMPTED,
                )
                run.tracker.close()
                return EXIT_PREEMPTED

    log.info("done: %d iterations; run dir %s", state.iteration, cfg.run.dir)
    run.tracker.close()
    return EXIT_OK


def _agree(run: Run, cfg_hash: int, nonfinite: torch.Tensor) -> bool:
    """One all-gather: the engines' own counters and the config hash against the schedule, plus the stop and NaN
    flags. Returns stop."""
    it = run.state.iteration
    g, d = run.engines["generator"], run.engines["discriminator"]
    # ADA's p: each rank's own as expected, so that any difference between ranks is a disagreement
    expected = {**run.schedule.fingerprint(it, run.start_iteration), "config_hash": cfg_hash}
    expected["augment_p_bits"] = run.augment.p_bits
    counters = {
        "iteration": it,
        "d_micro_steps": d.micro_steps,
        "d_updates": d.global_steps,
        "g_micro_steps": g.micro_steps,
        "config_hash": cfg_hash,
        "augment_p_bits": run.augment.p_bits,
    }
    flags = torch.cat([torch.tensor([int(bool(run.stop_requested))], device=run.env.device), nonfinite])
    stop, bad = distributed.agree(counters, expected, flags, run.env)
    if bad:
        raise NonFiniteLossError(
            f"non-finite loss before iteration {it} (fp32/bf16 runs stop on NaN/inf; fp16 overflows are skipped "
            "by the loss scaler instead). No checkpoint was written after it: lower the learning rates, check the "
            "data, or enable gradient_clipping, then rerun the same command to resume from the last good one."
        )
    return stop


def _log(run: Run, interval: dict[str, float], iters: int, elapsed: float) -> None:
    """Logging iterations only: the interval's statistics (their one all-reduce) and the engines' numbers."""
    env, g, d = run.env, run.engines["generator"], run.engines["discriminator"]
    images_per_iter = run.cfg.images_per_iter(env.world_size)
    metrics = {
        **interval,
        "kimg": run.state.images_consumed / 1000,
        "images_per_second": iters * images_per_iter / elapsed,
        "seconds_per_iter": elapsed / iters,
        "g_updates": g.global_steps,
        "d_updates": d.global_steps,
        "g_lr": g.lr,
        "d_lr": d.lr,
        "g_skipped_steps": g.skipped_steps,
        "d_skipped_steps": d.skipped_steps,
    }
    for name, net in (("g", g), ("d", d)):
        if (scale := net.loss_scale) is not None:
            metrics[f"{name}_loss_scale"] = scale
    if run.cfg.loss.pl_weight > 0:
        metrics["pl_mean"] = run.path_length.mean.item()
    metrics |= run.augment.metrics()
    if run.ema is not None:
        metrics["ema_momentum"] = run.ema.cfg.momentum
        metrics["ema_active"] = float(g.global_steps > run.ema.cfg.start_g_updates)
    metrics["max_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # this rank's host memory
    if env.device.type == "cuda":
        metrics["max_memory_gib"] = torch.cuda.max_memory_allocated(env.device) / 2**30
    run.tracker.log(metrics, run.state.iteration)
    eta = (run.total_iters - run.state.iteration) * elapsed / iters
    log.info(progress_line(metrics, run.state.iteration, run.total_iters, eta))


def _sampled_generator(run: Run) -> Generator:
    """What snapshots and evaluations sample: the EMA of G when kept, else G's module (ZeRO-3: partitioned)."""
    return run.ema.module if run.ema is not None else cast(Generator, run.engines["generator"].module)


def _write_samples(run: Run) -> None:
    """Every rank runs the forward (ZeRO-3 gathers G's weights collectively); rank 0 writes the PNG."""
    g_model = run.cfg.generator.model
    rows = g_model.num_classes or 8
    z, y = fixed_noise(g_model.num_classes, 10 if g_model.num_classes else 8, g_model.noise_size, run.cfg.run.seed)
    model = _sampled_generator(run)
    with run.engines["generator"].optim_context():
        images = generate(model, z, y, run.env.device).cpu()
    if run.env.is_main:
        path = run.cfg.run.dir / "samples" / f"iter_{run.state.iteration:08d}.png"
        save_grid(images, path, nrow=len(images) // rows)
        run.tracker.log_image("samples", path, run.state.iteration)


def _evaluate(run: Run) -> bool:
    """eval.metrics of the EMA G (else G) on every rank, logged with their protocol; True when the best so far."""
    env = run.env
    if run.evaluator is None:
        run.evaluator = Evaluator(run.cfg, run.cfg.run.dir, env)
    model = _sampled_generator(run)
    start = time.perf_counter()
    with run.engines["generator"].optim_context():
        metrics = run.evaluator(model)
    log.info(
        "eval at iteration %d (%s, %d samples, %.0f s): %s",
        run.state.iteration,
        run.evaluator.name,
        run.cfg.eval.num_samples,
        time.perf_counter() - start,
        ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()),
    )
    protocol = run.evaluator.protocol(ema=run.ema is not None)
    run.tracker.log({**{f"eval/{k}": v for k, v in metrics.items()}, "eval/protocol": protocol}, run.state.iteration)
    score = checkpoint.ranking_score(metrics)
    if score is not None and score < run.state.best_score:
        run.state.best_score = score
        return True
    return False


def _save(run: Run, best: bool = False) -> None:
    state = dataclasses.replace(
        run.state,
        ema=run.ema.state_dict() if run.ema is not None else None,
        wandb_run_id=run.tracker.wandb_run_id,
        pl_mean=run.path_length.mean.item(),
        **run.augment.state(),
    )
    ckpt = run.cfg.checkpoint
    path = checkpoint.save(
        run.cfg.run.dir, state, run.engines, run.env, ckpt.keep_last, ckpt.milestone_every_iters, best
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


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """`dsgan train` with parsed arguments (see dsgan.cli.add_train_arguments); returns the exit code."""
    try:
        env = distributed.detect(args.local_rank)
    except ConfigError as exc:  # before logging: its format needs the rank
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    setup_logging(env)
    overrides = list(args.set) + ([f"run.dir={args.run_dir}"] if args.run_dir else [])
    stop_requested: list[int] = []
    _install_signal_handlers(stop_requested)
    try:
        cfg = load_config(args.config, overrides, world_size=env.world_size, device=env.device.type)
        return train(build(cfg, env, args.resume, stop_requested))
    except KeyboardInterrupt:  # raised by the handler at a second Ctrl-C
        log.error(
            "stopped at once by a second Ctrl-C, without a checkpoint; the last complete one is intact: rerun the "
            "same command to resume from it"
        )
        return EXIT_INTERRUPTED
    except Exception as exc:
        if (known := user_error(exc, env.rank, env.world_size)) is None:
            raise
        log.error("error: %s", known[1])
        return known[0]


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
