"""`dsgan eval --watch` on checkpoints made without engines (a sealed trainer state whose EMA is G): what it
evaluates, skips, remembers and marks best, and `eval.every_iters: 0`. With a concurrently running 2-rank job:
tests/integration/test_watch.py."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from dsgan import checkpoint
from dsgan.checkpoint import TRAINER, TrainerState, hold_run_dir, load_generator
from dsgan.cli import main
from dsgan.config import Config, load_config
from dsgan.distributed import DistEnv
from dsgan.ema import EMA
from dsgan.errors import EXIT_CONFIG, EXIT_RUN_DIR_BUSY, ConfigError
from dsgan.eval.run import Evaluator
from dsgan.eval.watch import LOCK, Watcher
from dsgan.models import build_generator
from dsgan.tracking import EVAL_METRICS_FILE, read_records

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny_cpu.yaml"
CPU = torch.device("cpu")


def tiny_config(run_dir: Path, total_iters: int) -> Config:
    return load_config(TINY, [f"run.dir={run_dir}", f"run.total_iters={total_iters}", "eval.num_samples=64"])


def seal(run_dir: Path, iteration: int, cfg: Config) -> Path:
    """A published checkpoint as the trainer writes it, without engine files: its EMA (what `--watch` loads) is a
    generator initialised from seed `iteration`, so every checkpoint scores differently."""
    torch.manual_seed(iteration)
    ema = EMA(build_generator(cfg.generator.model), cfg.ema or pytest.fail("the tiny config keeps an EMA"))
    state = TrainerState(
        config=cfg.model_dump(mode="json"),
        world_size=2,
        iteration=iteration,
        images_consumed=16 * iteration,
        ema=ema.state_dict(),
    )
    root = run_dir / checkpoint.CHECKPOINTS
    tmp = root / (checkpoint.step_name(iteration) + ".tmp")
    tmp.mkdir(parents=True)
    torch.save(dataclasses.asdict(state), tmp / TRAINER)
    final = root / checkpoint.step_name(iteration)
    checkpoint._seal(tmp, final, iteration, best=False)
    return final


def corrupt(ckpt: Path) -> None:
    data = bytearray((ckpt / TRAINER).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (ckpt / TRAINER).write_bytes(bytes(data))


def watcher(run_dir: Path) -> Watcher:
    return Watcher(run_dir, lambda cfg: cfg, use_ema=True, device=CPU)


def fd8(ckpt: Path) -> float:
    """What `dsgan eval --checkpoint` reports for it."""
    generator, cfg, _ = load_generator(ckpt)
    return Evaluator(cfg, ckpt.parent.parent, DistEnv.single(CPU))(generator)["fd8"]


def test_evaluates_published_checkpoints_skips_tmp_and_corrupt_marks_best(tmp_path, caplog, one_thread):
    cfg = tiny_config(tmp_path, 24)
    good = [seal(tmp_path, it, cfg) for it in (8, 24)]
    bad = seal(tmp_path, 16, cfg)
    corrupt(bad)
    # A complete copy, still under its temporary name (a save in progress): never read.
    shutil.copytree(good[0], tmp_path / "checkpoints" / "step-00000020.tmp")
    caplog.set_level(logging.INFO, logger="dsgan")
    w = watcher(tmp_path)
    assert w.poll() == 3 and w.finished()
    assert "step-00000016: cannot be read (trainer.pt checksum mismatch (corrupt))" in caplog.text
    assert w.poll() == 1  # the corrupt one again, now recorded as such
    w.close()

    records = read_records(tmp_path / EVAL_METRICS_FILE)
    assert [r["checkpoint"] for r in records] == ["step-00000008", "step-00000024", "step-00000016"]
    assert records[2]["skipped"] == "trainer.pt checksum mismatch (corrupt)" and "eval/fd8" not in records[2]
    expected = {path.name: fd8(path) for path in good}
    for r in records[:2]:
        assert r["eval/fd8"] == pytest.approx(expected[r["checkpoint"]], rel=1e-9)
        assert r["iteration"] == int(r["checkpoint"][5:]) and r["kimg"] == 16 * r["iteration"] / 1000
        assert r["total_iters"] == 24
    assert (tmp_path / "checkpoints" / "best").read_text() == min(expected, key=expected.__getitem__)
    assert "20.tmp" not in caplog.text


def test_restart_evaluates_nothing_twice_and_drops_a_torn_line(tmp_path, one_thread):
    cfg = tiny_config(tmp_path, 16)
    seal(tmp_path, 8, cfg)
    w = watcher(tmp_path)
    assert w.poll() == 1 and not w.finished()
    w.close()
    log = tmp_path / EVAL_METRICS_FILE
    before = log.read_text()
    with log.open("a") as f:
        f.write('{"iteration": 12, "eval/fd8": 1')  # killed mid-write

    w = watcher(tmp_path)
    assert w.poll() == 0 and not w.finished()
    assert w.best_score == json.loads(before)["eval/fd8"]  # the score of the checkpoint `best` names
    seal(tmp_path, 16, cfg)
    assert w.poll() == 1 and w.finished()
    w.close()
    lines = log.read_text().splitlines()
    assert lines[0] == before.strip() and [json.loads(line)["iteration"] for line in lines] == [8, 16]

    # A run resumed from an older checkpoint writes step-16 again, other contents: evaluated again.
    shutil.rmtree(tmp_path / "checkpoints" / "step-00000016")
    again = seal(tmp_path, 16, cfg.model_copy(update={"run": cfg.run.model_copy(update={"seed": 1})}))
    w = watcher(tmp_path)
    assert w.poll() == 1 and w.poll() == 0
    w.close()
    records = read_records(log)
    assert [r["checkpoint"] for r in records] == ["step-00000008", "step-00000016", "step-00000016"]
    assert records[1]["manifest_sha256"] != records[2]["manifest_sha256"]
    assert records[2]["eval/fd8"] == pytest.approx(fd8(again), rel=1e-9)


def test_a_checkpoint_pruned_while_read_is_skipped_with_a_note(tmp_path, caplog, one_thread):
    cfg = tiny_config(tmp_path, 16)
    ckpt = seal(tmp_path, 8, cfg)
    (ckpt / TRAINER).unlink()  # the trainer's rmtree, half done
    w = watcher(tmp_path)
    assert w.poll() == 1
    shutil.rmtree(ckpt)  # ... and done
    seal(tmp_path, 16, cfg)
    assert w.poll() == 1 and w.finished()
    w.close()
    assert "step-00000008: cannot be read (missing file trainer.pt); trying again at the next poll" in caplog.text
    assert [r["checkpoint"] for r in read_records(tmp_path / EVAL_METRICS_FILE)] == ["step-00000016"]


def test_eval_every_iters_zero_means_never_during_training(tmp_path):
    assert tiny_config(tmp_path, 8).eval.every_iters is None
    assert load_config(TINY, [f"run.dir={tmp_path}", "eval.every_iters=0"]).eval.every_iters == 0
    with pytest.raises(ConfigError, match="eval.every_iters"):
        load_config(TINY, [f"run.dir={tmp_path}", "eval.every_iters=-1"])
    assert math.isinf(watcher(tmp_path).best_score)


def test_command_line_errors(tmp_path, capsys):
    assert main(["eval", "--watch", str(tmp_path / "missing")]) == EXIT_CONFIG
    assert "--watch " in capsys.readouterr().err
    first = hold_run_dir(tmp_path, DistEnv.single(CPU), LOCK)  # a watcher of this run dir, running
    assert main(["eval", "--watch", str(tmp_path)]) == EXIT_RUN_DIR_BUSY
    assert f"pid {os.getpid()}" in capsys.readouterr().err
    assert first is not None
    first.close()
