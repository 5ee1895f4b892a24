"""`dsgan migrate CONFIG.py --out DIR`, `dsgan migrate --checkpoint CKPT [--config CONFIG] --out DIR` and
`dsgan migrate --diff A.py B.py`.

`add_migrate_arguments` + `run_migrate` are what `dsgan/cli.py` wires as the `migrate` subcommand (run_migrate raises
ConfigError, which the CLI turns into exit code 2); `main_migrate` is the same as a standalone entry point
(`python -m dsgan.migrate`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from dsgan.config import load_config
from dsgan.errors import ConfigError, user_error
from dsgan.migrate.convert import migrate, write_config
from dsgan.migrate.report import render_diff, render_report

REPORT = "migration_report.md"
WEIGHTS_REPORT = "weights_report.md"


def add_migrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config",
        type=Path,
        nargs="?",
        help="MMGeneration 0.x or MMagic (1.x) Python config; with --checkpoint also a dsgan run config",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help=f"output folder: config.yaml, the two DeepSpeed JSON files and {REPORT}; with --checkpoint, a run dir",
    )
    parser.add_argument("--config", dest="config_flag", type=Path, metavar="CONFIG", help="CONFIG, as an option")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="also import weights: an MMagic / MMGeneration .pth, or a BigGAN-PyTorch folder (G.pth, D.pth, G_ema.pth)",
    )
    parser.add_argument(
        "--diff", type=Path, nargs=2, metavar=("A", "B"), help="convert both and print how their training differs"
    )
    parser.add_argument(
        "--world-size",
        type=int,
        default=8,
        help="GPUs assumed for effective batch sizes in --diff (default 8, the seed's BigGAN-128 reference)",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a field of the converted config"
    )


def run_migrate(args: argparse.Namespace) -> int:
    if args.config and args.config_flag:
        raise ConfigError("give the config once: CONFIG or --config CONFIG")
    args.config = args.config or args.config_flag
    if args.diff:
        if args.config or args.out or args.set or args.checkpoint:
            raise ConfigError("--diff A B takes no CONFIG, --out, --set or --checkpoint")
        if args.world_size < 1:
            raise ConfigError(f"--world-size {args.world_size}: must be at least 1")
        a, b = (migrate(path) for path in args.diff)
        print(render_diff(a, b, args.world_size), end="")
        return 0
    if args.checkpoint is not None:
        return _import_checkpoint(args)
    if args.config is None or args.out is None:
        raise ConfigError(
            "usage: dsgan migrate CONFIG.py --out DIR, dsgan migrate --checkpoint CKPT [--config CONFIG] --out DIR, "
            "or dsgan migrate --diff A.py B.py"
        )
    _convert_config(args.config, args.out, args.set)
    return 0


def _convert_config(config: Path, out: Path, sets: list[str]) -> None:
    m = migrate(config, sets)
    header = (
        f"# Converted by `dsgan migrate` from {m.source.path} ({m.version_name}).\n"
        f"# Every source key and what became of it: {REPORT}\n"
    )
    written = write_config(m.raw, out, header)
    try:
        load_config(out / "config.yaml")
    except ConfigError:
        for path in written:
            path.unlink()
        raise
    report = render_report(m)
    (out / REPORT).write_text(report)
    print(report, end="")
    print(f"wrote {', '.join(str(p) for p in written)} and {out / REPORT}")


def _import_checkpoint(args: argparse.Namespace) -> int:
    """--checkpoint: the run config (from --config, or the checkpoint's own), then the weights as a weights-only
    checkpoint of a run whose run.dir is --out."""
    from dsgan.checkpoint import CHECKPOINTS, save_weights
    from dsgan.migrate.weights import convert, load_source
    from dsgan.migrate.weights import render_report as render_weights

    if args.out is None:
        raise ConfigError("--checkpoint needs --out DIR: the run directory to write")
    out = args.out.resolve()
    if any(p.name != "step-00000000" for p in (out / CHECKPOINTS).glob("step-*")):
        raise ConfigError(f"--out {out}: holds a run's checkpoints already; import into a new folder")
    source = load_source(args.checkpoint)
    sets = [*args.set, f"run.dir={out}"]
    config = args.config
    if config is None:
        if source.config_text is None:
            raise ConfigError(
                f"--checkpoint {args.checkpoint}: the checkpoint holds no config ({source.version}); give "
                "--config: the MMagic/MMGeneration .py it was trained with, or a dsgan run config (e.g. "
                "configs/biggan128.yaml for BigGAN-PyTorch's ImageNet 128x128 weights)"
            )
        out.mkdir(parents=True, exist_ok=True)
        config = out / "source_config.py"
        config.write_text(source.config_text)
    if config.suffix == ".py":
        _convert_config(config, out, sets)
        cfg = load_config(out / "config.yaml")
    else:
        cfg = load_config(config, sets)
        out.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
        (out / "config.yaml").write_text(f"# {config} as resolved by `dsgan migrate --checkpoint`\n{text}")
    imported = convert(source, cfg)
    ckpt = save_weights(out, cfg, imported.weights, imported.ema, source.pl_mean)
    (out / WEIGHTS_REPORT).write_text(render_weights(source, str(config), imported))
    kinds = [outcome.split(":", 1)[0] for _, _, outcome in imported.rows]
    print(
        f"imported {source.version} weights from {args.checkpoint}: "
        + ", ".join(f"{kinds.count(k)} {k}" for k in sorted(set(kinds)))
        + f" (every key: {out / WEIGHTS_REPORT})"
    )
    for note in imported.notes:
        print(f"  {note}")
    print(
        f"wrote {ckpt} and {out / 'config.yaml'}. Next: dsgan sample --run {out} --out grid.png; "
        f"dsgan train --config {out / 'config.yaml'} continues training it (fresh optimizer), or init.checkpoint: "
        f"{ckpt} in another run's config fine-tunes it"
    )
    return 0


def main_migrate(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dsgan migrate",
        description="Convert an MMGeneration 0.x / MMagic GAN config to a dsgan run config, and with --checkpoint its "
        "weights (or BigGAN-PyTorch's) to a dsgan run directory.",
    )
    add_migrate_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_migrate(args)
    except Exception as exc:
        if (known := user_error(exc)) is None:
            raise
        print(f"error: {known[1]}", file=sys.stderr)
        return known[0]
