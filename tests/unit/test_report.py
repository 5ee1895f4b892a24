"""`dsgan report`: the curves it draws are the logged numbers over kimg, a line still being written is left out, and
the PNG has every panel drawn. (From a real run's files: tests/integration/test_watch_job.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dsgan.cli import main
from dsgan.errors import EXIT_CONFIG, ConfigError
from dsgan.report import curves, report
from dsgan.samples import save_grid
from dsgan.tracking import EVAL_METRICS_FILE, METRICS_FILE


def write_jsonl(path: Path, records: list[dict], tail: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def training_records() -> list[dict]:
    return [
        {
            "iteration": 4 * k,
            "time": 1.7e9 + k,
            "kimg": 0.032 * k,
            "d_loss": 2.0 - 0.1 * k,
            "g_loss": 0.5 + 0.05 * k,
            "d_real_mean": 0.1 * k,
            "d_fake_mean": -0.1 * k,
            "g_lr": 2e-4,
            "d_lr": 1e-4 * k,
            "g_loss_scale": 2.0**k,
        }
        for k in range(1, 11)
    ]


def make_run(run_dir: Path) -> None:
    trainer_eval = {"iteration": 20, "time": 1.7e9, "eval/fd8": 100.0}  # the trainer logs eval without kimg
    write_jsonl(run_dir / METRICS_FILE, [*training_records(), trainer_eval], tail='{"iteration": 44, "kimg": 0.35')
    watched = [
        {"iteration": 32, "kimg": 0.256, "total_iters": 40, "eval/fd8": 80.0, "checkpoint": "step-00000032"},
        {"iteration": 36, "checkpoint": "step-00000036", "skipped": "trainer.pt checksum mismatch (corrupt)"},
        {"iteration": 40, "kimg": 0.32, "total_iters": 40, "eval/fd8": 70.0, "checkpoint": "step-00000040"},
    ]
    write_jsonl(run_dir / EVAL_METRICS_FILE, watched)
    images = torch.rand(20, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for iteration in (20, 40):
        save_grid(images, run_dir / "samples" / f"iter_{iteration:08d}.png", nrow=5)


def test_curves_are_the_logged_numbers_over_kimg(tmp_path):
    make_run(tmp_path)
    data = curves(tmp_path)
    kimg = np.array([0.032 * k for k in range(1, 11)])
    for key in ("d_loss", "g_loss", "d_real_mean", "d_lr", "g_loss_scale"):
        xs, ys = data.series[key]
        np.testing.assert_allclose(xs, kimg)
        np.testing.assert_allclose(ys, [r[key] for r in training_records()])
    xs, ys = data.series["eval/fd8"]  # the trainer's at iteration 20 = 0.16 kimg, then the watcher's two
    np.testing.assert_allclose(xs, [0.16, 0.256, 0.32])
    np.testing.assert_allclose(ys, [100.0, 80.0, 70.0])
    assert data.last_iteration == 40 and data.last_kimg == pytest.approx(0.32)  # not the half-written 44


def test_report_png_has_every_panel_drawn(tmp_path):
    make_run(tmp_path)
    out = report(tmp_path, tmp_path / "report.png")
    with Image.open(out) as image:
        assert image.size == (1600, 900)
        pixels = np.asarray(image.convert("L"))
    # The 2x3 layout: losses, D outputs, samples (spanning both rows) / learning rate, evaluation.
    for rows, cols in (((100, 420), (150, 530)), ((100, 420), (600, 980)), ((480, 830), (150, 530))):
        assert (pixels[slice(*rows), slice(*cols)] < 200).mean() > 0.01, (rows, cols)
    assert (pixels[480:830, 600:980] < 200).mean() > 0.01
    grid = pixels[150:750, 1050:1500]
    assert grid.std() > 20  # the random sample grid, not a blank area


def test_a_run_without_records_is_a_clear_error(tmp_path, capsys):
    (tmp_path / METRICS_FILE).write_text('{"iteration": 4, "kimg"')  # the first line, still being written
    with pytest.raises(ConfigError, match="no complete logging record yet"):
        curves(tmp_path)
    assert main(["report", str(tmp_path / "missing")]) == EXIT_CONFIG
    assert "missing: no such run directory" in capsys.readouterr().err
