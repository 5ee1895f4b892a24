"""`dsgan migrate CONFIG.py --out DIR` and `dsgan migrate --diff A.py B.py`.

`add_migrate_arguments` + `run_migrate` are what `dsgan/cli.py` wires as the `migrate` subcommand (run_migrate raises
ConfigError, which the CLI turns into exit code 2); `main_migrate` is the same as a standalone entry point
(`python -m dsgan.migrate`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dsgan.config import load_config
from dsgan.errors import ConfigError, user_error
from dsgan.migrate.convert import migrate, write_config
from dsgan.migrate.report import render_diff, render_report

REPORT = "migration_report.md"


def add_migrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, nargs="?", help="MMGeneration 0.x or MMagic (1.x) Python config")
    parser.add_argument(
        "--out", type=Path, help=f"output folder: config.yaml, the two DeepSpeed JSON files and {REPORT}"
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
    if args.diff:
        if args.config or args.out or args.set:
            raise ConfigError("--diff A B takes no CONFIG, --out or --set")
        if args.world_size < 1:
            raise ConfigError(f"--world-size {args.world_size}: must be at least 1")
        a, b = (migrate(path) for path in args.diff)
        print(render_diff(a, b, args.world_size), end="")
        return 0
    if args.config is None or args.out is None:
        raise ConfigError("usage: dsgan migrate CONFIG.py --out DIR, or dsgan migrate --diff A.py B.py")
    m = migrate(args.config, args.set)
    header = (
        f"# Converted by `dsgan migrate` from {m.source.path} ({m.version_name}).\n"
        f"# Every source key and what became of it: {REPORT}\n"
    )
    written = write_config(m.raw, args.out, header)
    try:
        load_config(args.out / "config.yaml")
    except ConfigError:
        for path in written:
            path.unlink()
        raise
    report = render_report(m)
    (args.out / REPORT).write_text(report)
    print(report, end="")
    print(f"wrote {', '.join(str(p) for p in written)} and {args.out / REPORT}")
    return 0


def main_migrate(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dsgan migrate", description="Convert an MMGeneration 0.x / MMagic GAN config to a dsgan run config."
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
