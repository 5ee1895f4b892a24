"""`dsgan` command line: train, validate-config, sample, eval, migrate, prepare-data, report, params.

User errors (bad config, bad data, missing checkpoint) print one message per problem, no traceback, and exit
with the code documented in dsgan/errors.py (2 for bad input).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from dsgan.errors import EXIT_INTERRUPTED, ConfigError, user_error

if TYPE_CHECKING:
    from dsgan.config import Config


def _validate(args: argparse.Namespace) -> int:
    from dsgan.config import load_config

    if args.world_size is not None and args.world_size < 1:
        raise ConfigError(f"--world-size {args.world_size}: must be at least 1")
    cfg = load_config(args.config, args.set, world_size=args.world_size, device=args.device)
    resolved = cfg.model_dump(mode="json")
    for name in ("generator", "discriminator"):
        resolved[name]["deepspeed"] = getattr(cfg, name).deepspeed.to_deepspeed(args.world_size or 1)
    print(
        f"# {args.config or '<default config>'}: valid. Resolved, with the DeepSpeed configs as handed to "
        f"deepspeed.initialize (world size {args.world_size or 1}):"
    )
    print(yaml.safe_dump(resolved, sort_keys=False), end="")
    return 0


def _params(args: argparse.Namespace) -> int:
    from dsgan.config import load_config
    from dsgan.models import parameter_report

    cfg = load_config(args.config, args.set)
    print(parameter_report(cfg.generator.model, cfg.discriminator.model))
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{value}: must be a finite number > 0")
    return value


def _writable(path: Path, flag: str) -> None:
    """Fail before the work, not after it: `path`'s folder can be created and written."""
    folder = path if flag == "--out-dir" else path.parent
    if flag != "--out-dir" and path.is_dir():
        raise ConfigError(f"{flag} {path}: is a directory; name a file (e.g. {path / 'grid.png'}) or use --out-dir")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot write there ({exc.strerror or exc})") from None


def _sample(args: argparse.Namespace) -> int:
    import torch

    from dsgan.checkpoint import load_generator
    from dsgan.samples import sample, save_folder, save_grid

    if not (args.out or args.out_dir):
        raise ConfigError("dsgan sample writes nothing without --out GRID.png or --out-dir FOLDER")
    for path, flag in ((args.out, "--out"), (args.out_dir, "--out-dir")):
        if path is not None:
            _writable(path, flag)
    generator, cfg, iteration = load_generator(args.run or args.checkpoint, use_ema=not args.no_ema)
    num_classes = cfg.generator.model.num_classes
    try:
        classes = [int(c) for c in args.classes.split(",")] if args.classes else None
    except ValueError:
        raise ConfigError(f"--classes {args.classes}: expected comma-separated class indices, e.g. 3,5") from None
    if classes and (not num_classes or not all(0 <= c < num_classes for c in classes)):
        raise ConfigError(f"--classes {args.classes}: the model has {num_classes} classes")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    images, labels = sample(
        generator.to(device), args.num, classes, args.truncation, args.seed, args.batch_size, device
    )
    if args.out_dir:
        save_folder(images, labels, args.out_dir)
        print(f"wrote {len(images)} PNGs to {args.out_dir} (iteration {iteration})")
    if args.out:
        if labels is not None:  # one row per class
            images = images[torch.argsort(labels, stable=True)]
            per_row = math.ceil(len(images) / len(set(labels.tolist())))
        else:
            per_row = math.ceil(math.sqrt(len(images)))
        save_grid(images, args.out, nrow=per_row)
        print(
            f"wrote {args.out}: {len(images)} samples (iteration {iteration}, "
            f"{'G' if args.no_ema else 'EMA of G when kept'})"
        )
    return 0


def _eval_config(cfg: Config, args: argparse.Namespace) -> Config:
    """The run's config with `dsgan eval`'s flags applied to its `eval` section. Flags that set the sample count or
    the metrics replace a protocol, which would otherwise conflict with them."""
    from pydantic import ValidationError

    from dsgan.config import Config
    from dsgan.config.load import format_errors

    section = cfg.eval.model_dump(mode="json")
    flags = {
        "features": args.features,
        "inception_weights": args.inception_weights,
        "num_samples": args.num_samples,
        "metrics": [m.strip() for m in args.metrics.split(",")] if args.metrics else None,
        "reference_stats": args.reference_path,
    }
    changes = {k: v for k, v in flags.items() if v is not None}
    if args.protocol:  # the protocol's own values replace the section's
        section = {k: v for k, v in section.items() if k not in ("num_samples", "metrics")}
        changes["protocol"] = args.protocol
    elif args.num_samples or args.metrics:
        section["protocol"] = None
    try:
        return Config.model_validate({**cfg.model_dump(mode="json"), "eval": {**section, **changes}})
    except ValidationError as exc:  # e.g. --features inception without --inception-weights
        raise ConfigError(format_errors(exc, {"run": "dsgan eval (the run's config and these flags)"})) from None


def _reference_stats(args: argparse.Namespace) -> int:
    """Reference statistics of a config's dataset, on every rank this was launched with (torchrun)."""
    from dsgan import distributed
    from dsgan.config import load_config
    from dsgan.eval.run import Evaluator

    cfg = _eval_config(load_config(args.config, args.set), args)
    env = distributed.detect()
    if env.world_size > 1:
        distributed.init(env, cfg.run.collective_timeout_seconds)
    evaluator = Evaluator(cfg, cfg.run.dir, env)
    if env.is_main:
        stats = evaluator.stats
        kept = "with" if stats.features is not None else "without"
        print(
            f"{evaluator.reference_path}: {evaluator.name} statistics of {stats.count} images "
            f"({evaluator.reference_description}), {kept} features, on {env.world_size} rank(s)"
        )
    return 0


def _eval(args: argparse.Namespace) -> int:
    import logging

    # Long passes log their progress (dsgan.eval); other libraries keep to warnings.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("dsgan").setLevel(logging.INFO)
    if args.reference_stats:
        if args.run or args.checkpoint or args.watch:
            raise ConfigError("--reference-stats reads --config, not --run/--checkpoint/--watch: it needs no generator")
        return _reference_stats(args)
    if args.watch is not None:
        return _watch(args)
    if not (args.run or args.checkpoint):
        raise ConfigError(
            "dsgan eval needs --run DIR, --checkpoint PATH, --watch RUN_DIR or --reference-stats --config FILE"
        )
    import json

    import torch

    from dsgan.checkpoint import load_generator

    generator, cfg, iteration = load_generator(args.run or args.checkpoint, use_ema=not args.no_ema)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    generator.to(device)
    if args.digits:
        from dsgan.digits import evaluate_digits

        if generator.num_classes not in (0, 10):
            raise ConfigError(f"--digits needs a digits model (10 classes); this one has {generator.num_classes}")
        print(f"iteration {iteration}: {evaluate_digits(generator, device, seed=args.seed).format()}")
        return 0
    from dsgan.distributed import DistEnv
    from dsgan.eval.run import Evaluator

    cfg = _eval_config(cfg, args)
    evaluator = Evaluator(cfg, args.run or args.checkpoint.parent.parent, DistEnv.single(device))
    metrics = evaluator(generator)
    print(
        f"iteration {iteration}, {cfg.eval.num_samples} samples, {evaluator.name}: "
        + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
    )
    # EMA when asked for and the run kept one (load_generator falls back to G otherwise).
    protocol = evaluator.protocol(ema=not args.no_ema and cfg.ema is not None)
    print("protocol: " + json.dumps(protocol))
    return 0


def _watch(args: argparse.Namespace) -> int:
    import logging

    import torch

    from dsgan.checkpoint import hold_run_dir
    from dsgan.distributed import DistEnv
    from dsgan.eval.watch import LOCK, Watcher, watch

    if args.digits:
        raise ConfigError("--digits does not apply to --watch: it logs the run's eval metrics (--features digits: FD8)")
    if not args.watch.is_dir():
        raise ConfigError(f"--watch {args.watch}: no such run directory (start the watcher once the run dir exists)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", force=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    _lock = hold_run_dir(args.watch, DistEnv.single(device), LOCK)  # held until the process exits
    watcher = Watcher(args.watch, lambda cfg: _eval_config(cfg, args), not args.no_ema, device)
    return watch(watcher, args.poll_seconds)


def _report(args: argparse.Namespace) -> int:
    from dsgan.report import report

    if not args.run_dir.is_dir():
        raise ConfigError(f"{args.run_dir}: no such run directory")
    out = args.out or args.run_dir / "report.png"
    _writable(out, "--out")
    print(f"wrote {report(args.run_dir, out)}")
    return 0


def _add_source_args(p: argparse.ArgumentParser, required: bool = True) -> argparse._MutuallyExclusiveGroup:
    src = p.add_mutually_exclusive_group(required=required)
    src.add_argument("--run", type=Path, help="run directory (its newest complete checkpoint)")
    src.add_argument("--checkpoint", type=Path, help="a checkpoint directory (.../checkpoints/step-N)")
    p.add_argument("--no-ema", action="store_true", help="use G's trained weights instead of its EMA")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=_positive_int, default=64)
    return src


def _add_config_args(p: argparse.ArgumentParser) -> None:
    """How every subcommand that reads a run config takes it."""
    p.add_argument("--config", type=Path, help="run config (YAML/JSON/TOML); default: the embedded digits run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field (YAML value)")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """`dsgan train`'s arguments; also those of `python -m dsgan.train` and `deepspeed dsgan/train.py`."""
    _add_config_args(p)
    p.add_argument("--run-dir", type=Path, help="overrides run.dir")
    p.add_argument("--resume", type=Path, help="resume from this checkpoint dir instead of the newest in the run dir")
    # The deepspeed launcher appends --local_rank=N (torchrun and srun set LOCAL_RANK instead).
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)


def _prepare_data(args: argparse.Namespace) -> int:
    from dsgan.prepare import prepare

    manifest = prepare(args.src, args.out, args.resolution, args.channels, args.on_error, args.workers, args.labels)
    skipped = manifest["skipped"]
    print(
        f"{args.out}: {manifest['images']} images, {len(manifest['classes']) or 'no'} classes, "
        f"{manifest['channels']}x{manifest['resolution']}x{manifest['resolution']}; "
        f"{len(skipped)} unreadable source files skipped (listed in its {args.out / 'manifest.json'})"
    )
    for entry in skipped[:10]:
        print(f"  skipped: {entry['error']}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from dsgan.train import exit_process, run

    exit_process(run(args))  # skips interpreter teardown (see exit_process)
    return 0  # not reached


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dsgan", description="DeepSpeed-backed GAN training.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train, or resume, a run (one process; see README, Launching, for more)")
    add_train_arguments(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("validate-config", help="validate a run config and print it fully resolved")
    _add_config_args(p)
    p.add_argument("--world-size", type=int, default=None, help="check train_batch_size against this world size")
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default=None,
        help="check precision against this device (default: this machine's)",
    )
    p.set_defaults(func=_validate)

    p = sub.add_parser("sample", help="generate images from a run or checkpoint")
    _add_source_args(p)
    p.add_argument("--num", type=_positive_int, default=100, help="number of images")
    p.add_argument("--out", type=Path, help="PNG grid to write (one row per class when conditional)")
    p.add_argument("--out-dir", type=Path, help="folder of numbered PNGs to write")
    p.add_argument("--classes", help="comma-separated class indices (default: all, cycled)")
    p.add_argument(
        "--truncation",
        type=_positive_float,
        default=None,
        help="truncation (> 0): BigGAN, the threshold on |z|; StyleGAN2, psi towards the mean latent (0.7 is usual)",
    )
    p.set_defaults(func=_sample)

    from dsgan.config.run import EVAL_PROTOCOLS

    p = sub.add_parser(
        "eval", help="FID, IS, KID, precision/recall, density/coverage of a run, a checkpoint or each new checkpoint"
    )
    _add_source_args(p, required=False).add_argument(
        "--watch",
        type=Path,
        metavar="RUN_DIR",
        help="evaluate every new checkpoint of a running job as it appears, until the run is finished",
    )
    p.add_argument(
        "--poll-seconds", type=_positive_float, default=30.0, help="with --watch: how often to look for checkpoints"
    )
    p.add_argument("--digits", action="store_true", help="the embedded digits check: classifier accuracy and FD8")
    p.add_argument(
        "--reference-stats",
        action="store_true",
        help="only compute the reference statistics of --config's dataset (on many ranks under torchrun)",
    )
    _add_config_args(p)
    p.add_argument("--features", choices=("inception", "digits"), help="overrides eval.features")
    p.add_argument("--inception-weights", type=Path, help="TF FID Inception weights (pt_inception-2015-12-05)")
    p.add_argument("--protocol", choices=tuple(EVAL_PROTOCOLS), help="overrides eval.protocol")
    p.add_argument("--num-samples", type=_positive_int, help="overrides eval.num_samples")
    p.add_argument("--metrics", help="overrides eval.metrics: comma-separated fid,is,kid,pr,dc")
    p.add_argument(
        "--reference-path", type=Path, help="overrides eval.reference_stats (the cache, or a published .npz)"
    )
    p.set_defaults(func=_eval)

    from dsgan.migrate import add_migrate_arguments, run_migrate

    p = sub.add_parser(
        "migrate", help="convert an MMGeneration 0.x / MMagic 1.x GAN config (never executed) and its weights"
    )
    add_migrate_arguments(p)
    p.set_defaults(func=run_migrate)

    p = sub.add_parser(
        "prepare-data", help="pack an image folder or an NVlabs zip into a dataset for data.type: packed (resumable)"
    )
    p.add_argument(
        "src",
        type=Path,
        help="image folder (root/<class>/<image>, or flat: unconditional) or a dataset_tool.py zip",
    )
    p.add_argument("out", type=Path, help="output folder; rerun the same command to continue an interrupted run")
    p.add_argument("--resolution", type=_positive_int, required=True, help="side in pixels (the models' scale)")
    p.add_argument("--channels", type=int, choices=(1, 3), default=3, help="1 (L) or 3 (RGB)")
    p.add_argument(
        "--on-error", choices=("skip", "fail"), default="skip", help="unreadable images: leave out (listed) or stop"
    )
    p.add_argument("--workers", type=_positive_int, default=os.cpu_count() or 1, help="decoding processes")
    p.add_argument(
        "--labels",
        choices=("auto", "required", "none"),
        default="auto",
        help="class subfolders / dataset.json labels: used if present (auto), an error if absent (required), or "
        "ignored: unconditional (none)",
    )
    p.set_defaults(func=_prepare_data)

    p = sub.add_parser("report", help="one PNG of a run's curves over kimg and its latest samples (offline)")
    p.add_argument("run_dir", type=Path, help="run directory (a finished run or one still training)")
    p.add_argument("--out", type=Path, help="PNG to write (default: RUN_DIR/report.png)")
    p.set_defaults(func=_report)

    p = sub.add_parser("params", help="print G and D parameter counts of a config")
    _add_config_args(p)
    p.set_defaults(func=_params)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "device", "unset") is None:
            import torch

            args.device = "cuda" if torch.cuda.is_available() else "cpu"
        return args.func(args)
    except KeyboardInterrupt:  # Ctrl-C in the imports before training's own handlers, or in another subcommand
        print("interrupted (Ctrl-C)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if (known := user_error(exc)) is None:
            raise
        print(f"error: {known[1]}", file=sys.stderr)
        return known[0]


if __name__ == "__main__":
    sys.exit(main())
