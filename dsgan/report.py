"""`dsgan report RUN_DIR`: one PNG of a run's curves over kimg beside its latest sample grid, from the local files
only (`metrics.jsonl`, `eval_metrics.jsonl`, `samples/`): offline, for runs without wandb, and on a run still
training (a line being written is left out, see `tracking.read_records`).

Drawn with matplotlib (Agg, no display): readable curves need axes, ticks, log scales and legends, which hand-drawn
PIL plots would reimplement badly; it is the plotting library every reader of this PNG already knows.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dsgan.atomic import write_atomic
from dsgan.errors import ConfigError
from dsgan.tracking import EVAL_METRICS_FILE, METRICS_FILE, read_records

PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("losses", ("d_loss", "d_loss_real", "d_loss_fake", "g_loss", "d_reg", "g_reg")),
    ("discriminator outputs", ("d_real_mean", "d_fake_mean")),
    ("learning rate", ("g_lr", "d_lr")),
)
"""The training curves: panel title and the metrics.jsonl keys it draws (those the run logged)."""
LABELS = {"d_real_mean": "D(x)", "d_fake_mean": "D(G(z))"}
LOSS_SCALES = ("g_loss_scale", "d_loss_scale")
"""fp16 runs only: drawn on the learning-rate panel's second axis."""
MAX_METRICS = 6
"""Evaluation metrics drawn, one small axis each (the first ones in name order; the rest are left out)."""


@dataclass
class Curves:
    """What the report draws, as numbers: each key's (kimg, value) points, in the order logged."""

    series: dict[str, tuple[np.ndarray, np.ndarray]]
    last_iteration: int
    last_kimg: float
    last_time: float | None


def curves(run_dir: Path) -> Curves:
    """The run's training records and evaluation records (the trainer's own and `dsgan eval --watch`'s) as series
    over kimg. Evaluation records logged without kimg (the trainer's) take it from the training records by linear
    interpolation in the iteration: kimg grows linearly with it between two logging intervals."""
    train = [r for r in read_records(run_dir / METRICS_FILE) if isinstance(r.get("iteration"), int | float)]
    evals = [r for r in read_records(run_dir / EVAL_METRICS_FILE) if "skipped" not in r]
    timed = [r for r in train if "kimg" in r]
    if not timed:
        raise ConfigError(
            f"{run_dir / METRICS_FILE}: no complete logging record yet (is {run_dir} a dsgan run dir? the first "
            "record comes after run.log_every_iters iterations)"
        )
    iters = np.array([r["iteration"] for r in timed], dtype=np.float64)
    kimgs = np.array([r["kimg"] for r in timed], dtype=np.float64)

    def kimg(record: dict[str, Any]) -> float:
        return float(record["kimg"]) if "kimg" in record else float(np.interp(record["iteration"], iters, kimgs))

    series: dict[str, tuple[list[float], list[float]]] = {}
    for record in sorted(train + evals, key=lambda r: r["iteration"]):
        x = kimg(record)
        for key, value in record.items():
            if key in ("iteration", "time", "kimg") or not isinstance(value, int | float):
                continue
            xs, ys = series.setdefault(key, ([], []))
            xs.append(x)
            ys.append(float(value))
    last = max(train + evals, key=lambda r: r["iteration"])
    return Curves(
        {k: (np.array(xs), np.array(ys)) for k, (xs, ys) in series.items()},
        int(last["iteration"]),
        kimg(last),
        last.get("time"),
    )


def latest_grid(run_dir: Path) -> Path | None:
    """The newest sample grid the trainer wrote (`samples/iter_NNNNNNNN.png`: the name sorts by iteration)."""
    grids = sorted(p for p in (run_dir / "samples").glob("iter_*.png") if re.fullmatch(r"iter_\d+\.png", p.name))
    return grids[-1] if grids else None


def report(run_dir: Path, out: Path) -> Path:
    """Write the report PNG to `out` (atomically: a browser or a sync may read it while a new one is drawn)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a cluster node
    import matplotlib.pyplot as plt
    from PIL import Image

    data = curves(run_dir)
    metrics = sorted(k for k in data.series if k.startswith("eval/"))[:MAX_METRICS]
    fig = plt.figure(figsize=(16, 9), dpi=100)
    outer = fig.add_gridspec(2, 3, width_ratios=(1, 1, 1.1), wspace=0.28, hspace=0.3)
    for (title, keys), cell in zip(PANELS, (outer[0, 0], outer[0, 1], outer[1, 0]), strict=True):
        ax = fig.add_subplot(cell)
        _draw(ax, data, keys, title)
        if title == "learning rate" and any(k in data.series for k in LOSS_SCALES):
            scale_ax = ax.twinx()
            scale_ax.set_prop_cycle(color=["tab:green", "tab:red"])  # not the learning rates' colours
            _draw(scale_ax, data, LOSS_SCALES, None, linestyle="--")
            scale_ax.legend(fontsize=8, loc="lower right")
            scale_ax.set_yscale("log", base=2)
            scale_ax.set_ylabel("fp16 loss scale")
            ax.set_title("learning rate / loss scale")
    if metrics:
        cells = outer[1, 1].subgridspec(len(metrics), 1, hspace=0.15)
        for i, key in enumerate(metrics):
            ax = fig.add_subplot(cells[i])
            _draw(ax, data, (key,), "evaluation" if i == 0 else None, marker="o")
            if i < len(metrics) - 1:
                ax.tick_params(labelbottom=False)
                ax.set_xlabel("")
    else:
        ax = fig.add_subplot(outer[1, 1])
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no evaluation yet\n(eval.every_iters, or dsgan eval --watch)", ha="center", va="center")
    ax = fig.add_subplot(outer[:, 2])
    ax.set_axis_off()
    if (grid := latest_grid(run_dir)) is not None:
        with Image.open(grid) as image:
            pixels = np.asarray(image.convert("RGB"))
        ax.imshow(pixels, interpolation="nearest")
        ax.set_title(f"samples, iteration {int(grid.stem[5:])}")
    else:
        ax.text(0.5, 0.5, "no sample grid yet", ha="center", va="center")
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(data.last_time)) if data.last_time else "unknown time"
    fig.suptitle(
        f"{run_dir.resolve().name}: iteration {data.last_iteration}, {data.last_kimg:.1f} kimg (last record {when})"
    )
    write_atomic(out, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
    return out


def _draw(ax: Any, data: Curves, keys: tuple[str, ...], title: str | None, **style: Any) -> None:
    drawn = [k for k in keys if k in data.series]
    for key in drawn:
        xs, ys = data.series[key]
        ax.plot(xs, ys, label=LABELS.get(key, key), **style)
    if title:
        ax.set_title(title)
    ax.set_xlabel("kimg")
    ax.grid(alpha=0.3)
    if not drawn:
        ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    elif len(drawn) > 1 or keys[0].startswith("eval/"):
        ax.legend(fontsize=8, loc="best")
    if all(np.all(data.series[k][1] > 0) for k in drawn) and drawn and _spans_decades(data, drawn):
        ax.set_yscale("log")


def _spans_decades(data: Curves, keys: list[str]) -> bool:
    """A log axis where the values span more than two decades (an LR warm-up, a falling FID)."""
    values = np.concatenate([data.series[k][1] for k in keys])
    return math.log10(values.max() / values.min()) > 2
