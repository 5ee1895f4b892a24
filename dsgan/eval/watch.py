"""`dsgan eval --watch RUN_DIR`: evaluate each new checkpoint of a run while it trains, in another process (another
GPU or node), so that training can run with `eval.every_iters: 0` and lose no time to evaluation.

Only published checkpoints are read (`checkpoint.complete_steps`: never a `step-N.tmp` being written), each verified
against its manifest first. The trainer keeps pruning while the watcher works: a checkpoint removed before or while
it is read is skipped with a note; one that does not verify is skipped as corrupt and recorded. Results go to the
trainer's wandb run and to `eval_metrics.jsonl` (see dsgan/tracking.py for why not `metrics.jsonl`), one record per
checkpoint (its name and its manifest's hash), which is also the watcher's memory: a restarted watcher evaluates
nothing twice. The best score so far names its checkpoint in `checkpoints/best`, which the trainer never prunes.
The watcher exits when it has seen the run's final checkpoint (the one at the run's length, which the trainer always
writes), or on SIGINT, SIGTERM or SIGUSR1.
"""

from __future__ import annotations

import hashlib
import logging
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path

import torch

from dsgan import checkpoint
from dsgan.config import Config
from dsgan.distributed import DistEnv
from dsgan.errors import EXIT_OK, EXIT_PREEMPTED, CheckpointError
from dsgan.eval.run import Evaluator
from dsgan.tracking import EVAL_METRICS_FILE, Tracker, read_records

log = logging.getLogger("dsgan")

LOCK = "eval_watch.lock"
"""Held (flock) by the one watcher of a run dir: two would evaluate, record and mark `best` twice."""


def score(record: dict) -> float | None:
    """A record's score for `best` (lower is better), as training ranks its evaluations."""
    return checkpoint.ranking_score({k.removeprefix("eval/"): v for k, v in record.items()})


def manifest_digest(ckpt: Path) -> str | None:
    """The identity of a checkpoint's contents: its manifest lists every file's sha256. None without one."""
    try:
        return hashlib.sha256((ckpt / checkpoint.MANIFEST).read_bytes()).hexdigest()
    except OSError:
        return None


class Watcher:
    """One run dir's watcher. `configure(cfg)` turns a checkpoint's config into the evaluation config (the command
    line's overrides); the evaluator and the wandb connection are built at the first checkpoint, from its config."""

    def __init__(
        self, run_dir: Path, configure: Callable[[Config], Config], use_ema: bool, device: torch.device
    ) -> None:
        self.run_dir, self.configure, self.use_ema, self.device = run_dir, configure, use_ema, device
        self.root = run_dir / checkpoint.CHECKPOINTS
        records = read_records(run_dir / EVAL_METRICS_FILE)
        self.records = {r["checkpoint"]: r for r in records if isinstance(r.get("checkpoint"), str)}
        marker = self.root / "best"
        best = self.records.get(marker.read_text()) if marker.is_file() else None
        best_score = score(best) if best is not None else None
        self.best_score = math.inf if best_score is None else best_score
        """The score of the checkpoint `best` names (lower is better)."""
        self.evaluator: Evaluator | None = None
        self.tracker: Tracker | None = None
        self.failed: set[str] = set()
        """Checkpoints that could not be read once (see `_unreadable`)."""
        self.unlogged: list[dict] = []
        """Records made before the tracker exists (corrupt checkpoints ahead of the first good one)."""

    def finished(self) -> bool:
        """The newest checkpoint seen is the run's last: the trainer writes one at the run's length, always."""
        seen = [r for r in self.records.values() if "total_iters" in r]
        newest = max(seen, key=lambda r: r["iteration"], default=None)
        return newest is not None and newest["iteration"] >= newest["total_iters"]

    def poll(self) -> int:
        """Evaluate every published checkpoint not seen yet, oldest first; returns how many were new."""
        new = [p for _, p in sorted(checkpoint.complete_steps(self.root)) if not self._seen(p)]
        for path in new:
            self._checkpoint(path)
        return len(new)

    def _seen(self, path: Path) -> bool:
        """Recorded under its name, and not written again since (a run resumed from an older checkpoint writes
        its names again, with other weights). A manifest that cannot be read (being pruned) counts as the same."""
        record = self.records.get(path.name)
        digest = manifest_digest(path)
        return record is not None and (digest is None or record.get("manifest_sha256") == digest)

    def _checkpoint(self, path: Path) -> None:
        start = time.perf_counter()
        digest = manifest_digest(path)
        try:
            problem = checkpoint.verify(path)
            if problem is None:
                state = checkpoint.read_trainer_state(path)
                generator, cfg = checkpoint.checkpoint_generator(path, state, self.use_ema)
        except (OSError, CheckpointError, RuntimeError) as exc:  # RuntimeError: torch.load of a file cut short
            problem = f"{type(exc).__name__}: {exc}"
        if problem is not None:
            self._unreadable(path, problem)
            return
        # G is in memory: from here on the trainer may prune the checkpoint without harm.
        if self.evaluator is None:
            cfg = self.configure(cfg)
            log.info("evaluating with %s, %d samples per checkpoint", cfg.eval.features, cfg.eval.num_samples)
            self.evaluator = Evaluator(cfg, self.run_dir, DistEnv.single(self.device))
            self.tracker = Tracker(
                cfg.tracking.wandb,
                self.run_dir,
                {},
                is_main=True,
                start_iteration=max((r["iteration"] for r in self.records.values()), default=0),
                beside_trainer=True,
                trainer_run_id=state.wandb_run_id,
            )
        metrics = self.evaluator(generator.to(self.device))
        record = {
            "iteration": state.iteration,
            "kimg": state.images_consumed / 1000,
            "total_iters": cfg.total_iters_for(state.world_size),
            "manifest_sha256": digest,
            **{f"eval/{k}": v for k, v in metrics.items()},
            "eval/protocol": self.evaluator.protocol(ema=self.use_ema and state.ema is not None),
        }
        self._record(path, record)
        log.info(
            "%s (iteration %d/%d, %.1f kimg, %.0f s): %s",
            path.name,
            record["iteration"],
            record["total_iters"],
            record["kimg"],
            time.perf_counter() - start,
            ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()),
        )
        if (value := score(record)) is not None and value < self.best_score and self._mark_best(path):
            self.best_score = value

    def _unreadable(self, path: Path, problem: str) -> None:
        """A checkpoint that failed to verify or load is corrupt only if it fails again at the next poll: one being
        pruned (files vanishing mid-read) is gone by then, and is only noted."""
        if not path.is_dir():
            log.warning("%s: removed while it was read (pruned by the trainer); skipped", path.name)
        elif path.name in self.failed:
            log.warning("%s: skipped, does not verify: %s", path.name, problem)
            self._record(
                path, {"iteration": int(path.name[5:]), "skipped": problem, "manifest_sha256": manifest_digest(path)}
            )
        else:
            log.warning("%s: cannot be read (%s); trying again at the next poll", path.name, problem)
            self.failed.add(path.name)

    def _record(self, path: Path, record: dict) -> None:
        self.records[path.name] = {**record, "checkpoint": path.name}
        self.unlogged.append(self.records[path.name])
        while self.tracker is not None and self.unlogged:
            logged = self.unlogged.pop(0)
            self.tracker.log({k: v for k, v in logged.items() if k != "iteration"}, logged["iteration"])

    def _mark_best(self, path: Path) -> bool:
        """Name it in `best`, so that the trainer stops pruning it. False if the trainer pruned it between its
        evaluation and the marking: the marker goes back to the checkpoint it named, which stays the one to beat."""
        marker = self.root / "best"
        before = marker.read_text() if marker.is_file() else None
        checkpoint.mark_best(path)
        if path.is_dir():
            log.info("%s: best so far; named in %s", path.name, marker)
            return True
        if before is not None:
            checkpoint.mark_best(self.root / before)
        else:
            marker.unlink(missing_ok=True)
        log.warning(
            "%s, the best so far, was pruned by the trainer before it could be kept (raise checkpoint.keep_last so "
            "that the watcher keeps up); its scores stay in %s",
            path.name,
            EVAL_METRICS_FILE,
        )
        return False

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.close()


def watch(watcher: Watcher, poll_seconds: float) -> int:
    """Poll until the run's final checkpoint has been seen (exit 0) or a signal stops it (exit 75, as training:
    rerun the same command to continue, nothing is evaluated twice)."""
    # SIGTERM (preemption) and SIGUSR1 (SLURM's warning before the time limit) stop it as Ctrl-C does.
    previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        waiting = False
        while not watcher.finished():
            if watcher.poll():
                waiting = False
            elif not waiting:
                log.info("waiting for new checkpoints in %s (every %g s)", watcher.root, poll_seconds)
                waiting = True
            if not watcher.finished():
                time.sleep(poll_seconds)
    except KeyboardInterrupt:
        log.warning("stopped by a signal; %d checkpoint(s) recorded; rerun to continue", len(watcher.records))
        return EXIT_PREEMPTED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        watcher.close()
    log.info("run finished: its last checkpoint is evaluated (%s)", watcher.run_dir / EVAL_METRICS_FILE)
    return EXIT_OK
