"""The migration report (every source key and what became of it) and `--diff` (what two configs mean for training).

The diff compares the *converted* dsgan configs, so two sources that spell the same training differently (0.x
disc_steps=8 with accumulation 8 vs 1.x discriminator_steps=1 with accumulative_counts=8) show no difference.
"""

from __future__ import annotations

from typing import Any

from dsgan.config import Config, DeepSpeedConfig
from dsgan.migrate.convert import Migration
from dsgan.migrate.ledger import Kind, leaves, show
from dsgan.migrate.training import DS_FILES
from dsgan.schedule import Schedule

_SECTIONS: tuple[tuple[Kind, str, str], ...] = (
    ("converted", "Converted", "became"),
    ("ignored", "Ignored", "why"),
    ("unsupported", "Not converted (unsupported)", "why"),
)


def render_report(m: Migration) -> str:
    cfg = m.config
    lines = [
        f"# Migration report: {m.source.path.name}",
        "",
        f"- Source: `{m.source.path}`, detected as **{m.version_name}** (evidence: {', '.join(m.evidence)})",
        "- Files read: " + ", ".join(f"`{p}`" for p in m.source.files),
        f"- Output: `config.yaml`, `{DS_FILES['generator']}`, `{DS_FILES['discriminator']}` (validated with "
        "dsgan.config.load_config)",
    ]
    if m.overrides:
        lines.append("- Overrides applied after the conversion: " + ", ".join(f"`{o}`" for o in m.overrides))
    lines += ["", "## Schedule as dsgan runs it", "", *(f"- {line}" for line in schedule_lines(cfg)), ""]
    lines += ["## Differences in meaning that apply to this config", ""]
    lines += [f"- {note}" for note in m.ledger.notes] or ["- none"]
    rows: dict[Kind, list[str]] = {kind: [] for kind, _, _ in _SECTIONS}
    for path, value in leaves(m.source.values):
        kind, text = m.ledger.classify(path)
        rows[kind].append(f"| `{path}` | `{_cell(show(value))}` | {_cell(text)} |")
    total = sum(len(r) for r in rows.values())
    lines += ["", f"## Source keys ({total} leaves)", ""]
    for kind, title, column in _SECTIONS:
        lines += [f"### {title} ({len(rows[kind])})", ""]
        if rows[kind]:
            lines += [f"| source key | value | {column} |", "|---|---|---|", *rows[kind]]
        else:
            lines.append("none")
        lines.append("")
    lines += ["## dsgan settings that do not come from the source", ""]
    lines += [f"- {d}" for d in m.ledger.defaults]
    lines.append("- checkpoint, tracking and eval sections not listed above: dsgan's defaults")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def schedule_lines(cfg: Config) -> list[str]:
    d, g = cfg.discriminator.deepspeed, cfg.generator.deepspeed
    run = cfg.run
    return [
        *Schedule.of(cfg).describe(run.total_iters),
        *([] if run.total_images is None else [f"{run.total_images} images (iterations depend on the world size)"]),
        f"per-GPU micro-batch {d.train_micro_batch_size_per_gpu}; effective batch = micro-batch x accumulation x "
        f"world size (G {g.train_micro_batch_size_per_gpu * g.gradient_accumulation_steps} x W, D "
        f"{d.train_micro_batch_size_per_gpu * d.gradient_accumulation_steps} x W)",
    ]


# ----------------------------------------------------------------------------------------------------------------
# --diff


def _stated(value: object) -> object:
    """A DeepSpeed value as the JSON states it; one it leaves out is DeepSpeed's default, which dsgan does not know."""
    return "(DeepSpeed's default)" if value is None else value


def _precision(ds: DeepSpeedConfig) -> str:
    if ds.fp16.enabled:
        if ds.fp16.loss_scale:
            return f"fp16, static loss scale {ds.fp16.loss_scale:g}"
        return (
            f"fp16, dynamic loss scale from 2**{_stated(ds.fp16.initial_scale_power)}, window "
            f"{_stated(ds.fp16.loss_scale_window)}, hysteresis {_stated(ds.fp16.hysteresis)}"
        )
    return ds.precision


def semantics(cfg: Config, world_size: int) -> list[tuple[str, str, str]]:
    """(section, setting, value) rows describing what a config trains."""
    s = Schedule.of(cfg)
    total = cfg.total_iters_for(world_size)
    rows: list[tuple[str, str, Any]] = [
        ("schedule", "D updates per cycle", s.discriminator_steps),
        ("schedule", "G updates per cycle", s.generator_steps),
        ("schedule", "iterations per cycle", s.cycle_iters),
        ("schedule", "total iterations", total),
        ("schedule", "D updates in the run", s.d_updates(total)),
        ("schedule", "G updates in the run", s.g_updates(total)),
    ]
    for role in ("generator", "discriminator"):
        ds: DeepSpeedConfig = getattr(cfg, role).deepspeed
        micro, acc = ds.train_micro_batch_size_per_gpu, ds.gradient_accumulation_steps
        rows += [
            ("batch", f"{role} micro-batch per GPU", micro),
            ("batch", f"{role} accumulation", acc),
            (
                "batch",
                f"{role} effective batch (world size {world_size})",
                f"{micro} x {acc} x {world_size} = {micro * acc * world_size}",
            ),
            ("optimizer", f"{role} type", ds.optimizer.type),
            *[("optimizer", f"{role} {k}", v) for k, v in ds.optimizer.params.model_dump().items() if v is not None],
            ("optimizer", f"{role} gradient clipping", _stated(ds.gradient_clipping)),
            ("optimizer", f"{role} LR scheduler", ds.scheduler.type if ds.scheduler else "none"),
            ("precision", role, _precision(ds)),
            ("precision", f"{role} ZeRO stage", ds.zero_optimization.stage),
        ]
    if cfg.ema is None:
        rows.append(("EMA", "EMA of G", "off"))
    else:
        rows += [("EMA", k, v) for k, v in cfg.ema.model_dump().items()]
    rows += [("loss", k, v) for k, v in cfg.loss.model_dump().items()]
    for role in ("generator", "discriminator"):
        rows += [("model", f"{role}.{k}", v) for k, v in getattr(cfg, role).model.model_dump(mode="json").items()]
    rows += [("data", k, v) for k, v in cfg.data.model_dump(mode="json").items()]
    return [(section, name, _value(value)) for section, name, value in rows]


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_value(v) for v in value) + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def render_diff(a: Migration, b: Migration, world_size: int) -> str:
    rows_a, rows_b = semantics(a.config, world_size), semantics(b.config, world_size)
    values_b = {(sec, name): v for sec, name, v in rows_b}
    keys_a = {(sec, name) for sec, name, _ in rows_a}
    diffs = [
        (sec, name, v, values_b.get((sec, name), "-")) for sec, name, v in rows_a if values_b.get((sec, name)) != v
    ]
    diffs += [(sec, name, "-", v) for sec, name, v in rows_b if (sec, name) not in keys_a]
    head = [
        f"A: {a.source.path} ({a.version_name})",
        f"B: {b.source.path} ({b.version_name})",
        f"training semantics after conversion to dsgan, world size {world_size}",
        "",
    ]
    if not diffs:
        return "\n".join([*head, "no differences in training semantics"]) + "\n"
    table = [("section", "setting", "A", "B"), *diffs]
    widths = [max(len(str(r[i])) for r in table) for i in range(3)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + str(r[3]) for r in table]
    count = f"{len(diffs)} difference{'s' if len(diffs) != 1 else ''} in training semantics"
    return "\n".join([*head, *lines, "", count]) + "\n"
