"""Experiment tracking: a local JSONL log that always works, and wandb on global rank 0 (the only wandb import).

The wandb run id lives in `<run dir>/wandb_run_id`, so a resumed or requeued job continues the same wandb run;
the step metric is the iteration, which continues where the checkpoint left off. wandb failures (no network,
bad key, a crash inside wandb) are warnings: training and the local log go on.

`dsgan eval --watch` logs beside the trainer, as a second writer of the same wandb run, and into its own local file
(`eval_metrics.jsonl`): the trainer rewrites `metrics.jsonl` when it resumes, and appends from two processes, on
two nodes of a network filesystem, can overwrite each other (NFS does not make O_APPEND atomic across clients).
Readers (`dsgan report`) merge the two files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from dsgan.atomic import write_atomic
from dsgan.config import Wandb

if TYPE_CHECKING:
    import wandb

log = logging.getLogger("dsgan")

METRICS_FILE = "metrics.jsonl"
EVAL_METRICS_FILE = "eval_metrics.jsonl"
"""Written by `dsgan eval --watch` alone: one record per checkpoint it evaluated or found corrupt."""
RUN_ID_FILE = "wandb_run_id"
WATCH_LABEL = "dsgan-eval-watch"


class Tracker:
    """Rank 0 writes; other ranks hold a Tracker that does nothing, so call sites need no rank checks."""

    def __init__(
        self,
        cfg: Wandb,
        run_dir: Path,
        resolved_config: dict[str, Any],
        is_main: bool,
        start_iteration: int = 0,
        beside_trainer: bool = False,
        trainer_run_id: str | None = None,
    ) -> None:
        """`start_iteration`: where this process continues the run (its checkpoint's iteration, 0 when fresh); the
        log's records after it are dropped. `beside_trainer`: a process that logs while the trainer owns the run
        (`dsgan eval --watch`) logs locally into EVAL_METRICS_FILE and to wandb only into the trainer's run
        (`trainer_run_id`, None when it has none), as a secondary writer that neither creates nor finishes it."""
        self.is_main = is_main
        self.run_dir = run_dir
        self._wandb: wandb.Run | None = None
        if not is_main:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / (EVAL_METRICS_FILE if beside_trainer else METRICS_FILE)
        _drop_records_after(path, start_iteration)
        self._jsonl = path.open("a", buffering=1)
        mode = os.environ.get("WANDB_MODE", cfg.mode)
        if mode != "disabled" and not beside_trainer:
            self._start_wandb(cfg, mode, resolved_config, None)
        elif mode != "disabled" and trainer_run_id is not None:
            self._start_wandb(cfg, mode, None, trainer_run_id)

    def _start_wandb(self, cfg: Wandb, mode: str, resolved_config: dict[str, Any] | None, joined: str | None) -> None:
        """`joined`: the id of a run that another process writes (then `resolved_config` is None: that process
        owns the config); online, wandb's shared mode lets both write it."""
        id_file = self.run_dir / RUN_ID_FILE
        try:
            import wandb

            run_id = joined or (id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4))
            settings = None
            if joined is not None and mode == "online":
                mode = "shared"
                settings = wandb.Settings(x_primary=False, x_label=WATCH_LABEL, x_update_finish_state=False)
            self._wandb = wandb.init(
                project=cfg.project,
                entity=cfg.entity,
                name=cfg.name,
                group=cfg.group,
                tags=cfg.tags,
                mode=cast(Any, mode),  # WANDB_MODE as set: wandb checks it, and takes more values than init's type
                id=run_id,
                resume="allow" if settings is None else None,  # a shared-mode writer joins the running run as is
                dir=str(self.run_dir),
                config=resolved_config,
                settings=settings,
            )
            self._wandb.define_metric("iteration")
            self._wandb.define_metric("*", step_metric="iteration")
            if joined is None:
                id_file.write_text(run_id)
        except Exception as exc:  # wandb must never stop training
            log.warning(
                "wandb disabled for this run: %s: %s (the local %s log continues)",
                type(exc).__name__,
                " ".join(str(exc).split()),  # one line: wandb's own errors (pydantic's) span several
                METRICS_FILE,
            )
            self._wandb = None

    @property
    def wandb_run_id(self) -> str | None:
        return self._wandb.id if self._wandb is not None else None

    def log(self, metrics: Mapping[str, float | dict[str, object]], iteration: int) -> None:
        """One record; values are numbers, or a dict of settings (an evaluation's protocol) kept beside them."""
        if not self.is_main:
            return
        record = {"iteration": iteration, "time": time.time(), **metrics}
        self._jsonl.write(json.dumps(record) + "\n")
        if (run := self._wandb) is not None:
            self._guarded(lambda: run.log({"iteration": iteration, **metrics}))

    def log_image(self, key: str, path: Path, iteration: int) -> None:
        if self.is_main and (run := self._wandb) is not None:
            import wandb

            self._guarded(lambda: run.log({"iteration": iteration, key: wandb.Image(str(path))}))

    def _guarded(self, fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception as exc:
            log.warning("wandb call failed, continuing without wandb: %s", exc)
            self._wandb = None

    def close(self) -> None:
        if not self.is_main:
            return
        self._jsonl.close()
        if self._wandb is not None:
            self._guarded(self._wandb.finish)


def _drop_records_after(path: Path, iteration: int) -> None:
    """Keep the local log one consistent history: records past the checkpoint a run resumes from (or all of them, for
    a run that starts over) belong to an abandoned continuation, which this run is about to redo."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if _iteration(line) <= iteration]
    if len(kept) == len(lines):
        return
    write_atomic(path, lambda f: f.write_text("".join(kept)))
    log.warning(
        "%s: dropped %d record(s) after iteration %d (written by an earlier process that did not reach a checkpoint "
        "past it, or a last line cut short by a kill)",
        path,
        len(lines) - len(kept),
        iteration,
    )


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL log that a process may be appending to right now: an unfinished last line (no newline
    yet, or torn by a kill) is left out, and so is any other line that is not a JSON object; [] without the file."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines(keepends=True):
        try:
            record = json.loads(line) if line.endswith("\n") else None
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            records.append(record)
    return records


def _iteration(line: str) -> float:
    try:
        return json.loads(line)["iteration"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf  # a torn last line (killed mid-write) goes too


def hms(seconds: float) -> str:
    """A duration as H:MM:SS, hours past 24 for long jobs: the ETA of training and of `dsgan prepare-data`."""
    minutes, whole_seconds = divmod(round(seconds), 60)
    return f"{minutes // 60:d}:{minutes % 60:02d}:{whole_seconds:02d}"


def progress_line(metrics: dict[str, float], iteration: int, total_iters: int, eta_seconds: float) -> str:
    """The console's view of one logging interval; G's loss reads "-" for an interval without a G step; ADA's p
    shows when it is kept."""
    g = f"{metrics['g_loss']:.3f}" if "g_loss" in metrics else "-"
    eta = hms(eta_seconds)
    return (
        f"it {iteration}/{total_iters} ({100 * iteration / total_iters:.0f}%) | kimg {metrics['kimg']:.1f} | "
        f"D {metrics['d_loss']:.3f} (real {metrics['d_loss_real']:.3f} fake {metrics['d_loss_fake']:.3f}) G {g} | "
        f"D(x) {metrics['d_real_mean']:.2f} D(G(z)) {metrics['d_fake_mean']:.2f} | "
        + (f"aug p {metrics['aug/p']:.3f} | " if "aug/p" in metrics else "")
        + f"{metrics['images_per_second']:.0f} img/s | ETA {eta}"
    )
