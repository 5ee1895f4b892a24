"""Config validation: a catalogue of bad configurations, each refused with exit code 2 and the field path named."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import BIGGAN32_10

from dsgan.cli import main as cli_main
from dsgan.config import DeepSpeedConfig, load_config
from dsgan.config.load import DEFAULT_CONFIG
from dsgan.errors import EXIT_CONFIG

REPO = Path(__file__).resolve().parents[2]

GOOD_DS = {"train_micro_batch_size_per_gpu": 8, "optimizer": {"type": "Adam", "params": {"lr": 2e-4}}}


G_MODEL = "{type: DCGANGenerator, output_scale: 16, num_classes: 10}"
D_MODEL = "{type: DCGANDiscriminator, input_scale: 16, num_classes: 10, with_spectral_norm: true}"


def run_yaml(ds_g: object = GOOD_DS, ds_d: object = GOOD_DS, **sections: str) -> dict[str, str]:
    """A complete run config referring to g.json/d.json; `sections` replace or add top-level YAML sections."""
    given = {
        "run": "{total_iters: 8}",
        "generator": f"{{model: {G_MODEL}, deepspeed: g.json}}",
        "discriminator": f"{{model: {D_MODEL}, deepspeed: d.json}}",
        "data": "{type: digits}",
        **sections,
    }
    files = {
        "run.yaml": "\n".join(f"{k}: {v}" for k, v in given.items()) + "\n",
        "g.json": ds_g if isinstance(ds_g, str) else json.dumps(ds_g),
        "d.json": ds_d if isinstance(ds_d, str) else json.dumps(ds_d),
    }
    return files


def ds(**changes: object) -> dict:
    out = json.loads(json.dumps(GOOD_DS))
    out.update(changes)
    return out


# (case id, files (None: a directory), extra CLI args, text that must appear in the message: the field path, and
# where useful the file)
CASES = [
    ("unknown-top-level-key", run_yaml(bogus="1"), [], "run.yaml: bogus: unknown key"),
    ("unknown-key-depth2", run_yaml(run="{totl_iters: 5}"), [], "run.totl_iters: unknown key"),
    ("unknown-key-depth3", run_yaml(), ["--set", "generator.model.noise_sz=3"], "generator.model.noise_sz"),
    (
        "unknown-key-in-deepspeed",
        run_yaml(ds_g=ds(gradient_acumulation_steps=2)),
        [],
        "g.json: generator.deepspeed.gradient_acumulation_steps: unknown key",
    ),
    (
        "unknown-key-in-optimizer-params",
        run_yaml(ds_d=ds(optimizer={"type": "Adam", "params": {"learning_rate": 1}})),
        [],
        "d.json: discriminator.deepspeed.optimizer.params.learning_rate",
    ),
    (
        "unknown-zero-key",
        run_yaml(ds_g=ds(zero_optimization={"stage": 2, "overlap_com": True})),
        [],
        "generator.deepspeed.zero_optimization: DeepSpeed rejects this ZeRO config: overlap_com",
    ),
    ("wrong-type-int", run_yaml(run="{total_iters: many}"), [], "run.total_iters"),
    ("wrong-type-bool", run_yaml(data="{type: digits, conditional: maybe}"), [], "data.conditional"),
    (
        "wrong-type-micro-batch",
        run_yaml(ds_g=ds(train_micro_batch_size_per_gpu="big")),
        [],
        "generator.deepspeed.train_micro_batch_size_per_gpu",
    ),
    (
        "fp16-and-bf16",
        run_yaml(ds_g=ds(fp16={"enabled": True}, bf16={"enabled": True})),
        ["--device", "cuda"],
        "generator.deepspeed: fp16.enabled and bf16.enabled are both true",
    ),
    ("fp16-on-cpu", run_yaml(ds_d=ds(fp16={"enabled": True})), ["--device", "cpu"], "use bf16"),
    (
        "autocast-and-bf16",
        run_yaml(ds_d=ds(bf16={"enabled": True}, torch_autocast={"enabled": True})),
        [],
        "discriminator.deepspeed: torch_autocast.enabled cannot be combined",
    ),
    (
        "zero-stage-4",
        run_yaml(ds_g=ds(zero_optimization={"stage": 4})),
        [],
        "generator.deepspeed.zero_optimization.stage",
    ),
    (
        "zero-stage-negative",
        run_yaml(ds_g=ds(zero_optimization={"stage": -1})),
        [],
        "generator.deepspeed.zero_optimization.stage",
    ),
    ("zero-generator-steps", run_yaml(schedule="{generator_steps: 0}"), [], "schedule.generator_steps"),
    ("zero-discriminator-steps", run_yaml(schedule="{discriminator_steps: 0}"), [], "schedule.discriminator_steps"),
    (
        "zero-accumulation",
        run_yaml(ds_g=ds(gradient_accumulation_steps=0)),
        [],
        "generator.deepspeed.gradient_accumulation_steps",
    ),
    (
        "negative-lr",
        run_yaml(ds_g=ds(optimizer={"type": "Adam", "params": {"lr": -1}})),
        [],
        "generator.deepspeed.optimizer.params.lr",
    ),
    (
        "beta-out-of-range",
        run_yaml(ds_g=ds(optimizer={"type": "Adam", "params": {"betas": [0.5, 1.5]}})),
        [],
        "generator.deepspeed.optimizer.params.betas.1",
    ),
    (
        "unsupported-optimizer",
        run_yaml(ds_d=ds(optimizer={"type": "SGD", "params": {"lr": 0.1}})),
        [],
        "discriminator.deepspeed.optimizer.type",
    ),
    (
        "train-batch-inconsistent",
        run_yaml(ds_g=ds(train_batch_size=24)),
        ["--world-size", "2"],
        "generator.deepspeed: train_batch_size=24 != train_micro_batch_size_per_gpu (8)",
    ),
    (
        "micro-batches-cannot-pair",
        run_yaml(ds_d=ds(train_micro_batch_size_per_gpu=16)),
        [],
        "discriminator.deepspeed.train_micro_batch_size_per_gpu=16",
    ),
    (
        "path-length-without-style-space",
        run_yaml(),
        ["--set", "loss.pl_weight=2"],
        "needs a generator with a style space (StyleGAN2Generator), not DCGANGenerator",
    ),
    (
        "unknown-model-type",
        run_yaml(),
        ["--set", "generator.model.type=StyleGAN3Generator"],
        "generator.model: Input tag 'StyleGAN3Generator'",
    ),
    (
        "missing-model-type",
        run_yaml(generator="{model: {noise_size: 3}, deepspeed: g.json}"),
        [],
        "generator.model: missing 'type'",
    ),
    ("missing-model", run_yaml(generator="{deepspeed: g.json}"), [], "generator.model: Field required"),
    ("missing-data", {"run.yaml": "run: {total_iters: 8}\n"}, [], "run.yaml: data: Field required"),
    ("missing-length", run_yaml(run="{dir: here}"), [], "run: set exactly one of total_iters and total_images"),
    (
        "missing-optimizer",
        run_yaml(ds_g={"train_micro_batch_size_per_gpu": 8}),
        [],
        "g.json: generator.deepspeed.optimizer: Field required",
    ),
    (
        "scale-mismatch",
        run_yaml(),
        ["--set", "discriminator.model.input_scale=64"],
        "generator.model.output_scale=16 != discriminator.model.input_scale=64",
    ),
    (
        "class-mismatch",
        run_yaml(),
        ["--set", "discriminator.model.num_classes=5"],
        "generator.model.num_classes=10 != discriminator.model.num_classes=5",
    ),
    ("negative-ema-momentum", run_yaml(ema="{momentum: -0.1}"), [], "ema.momentum"),
    ("both-lengths", run_yaml(run="{total_iters: 5, total_images: 100}"), [], "run: set exactly one"),
    (
        "missing-ds-file",
        {"run.yaml": "generator:\n  deepspeed: nope/g.json\n"},
        [],
        "generator.deepspeed: file not found",
    ),
    ("malformed-yaml", {"run.yaml": "run: {dir: [unclosed\n"}, [], "run.yaml: cannot parse"),
    ("malformed-json", run_yaml(ds_g='{"train_micro_batch_size_per_gpu": 8,}'), [], "g.json: cannot parse"),
    ("malformed-toml", {"run.toml": "[run\ndir = 1\n"}, [], "run.toml: cannot parse"),
    ("unknown-extension", {"run.ini": "[run]\n"}, [], "unknown config format"),
    ("missing-config-file", {}, [], "run.yaml: file not found"),
    ("image-folder-without-root", run_yaml(data="{type: image_folder}"), [], "data.root"),
    ("unknown-loss", run_yaml(loss="{type: relativistic}"), [], "loss.type"),
    (
        "wgan-without-constraint",
        run_yaml(loss="{type: wgan}"),
        ["--set", "discriminator.model.with_spectral_norm=0"],
        "loss.type='wgan' needs a Lipschitz constraint",
    ),
    ("inception-without-weights", run_yaml(eval="{features: inception}"), [], "eval: features='inception' needs"),
    (
        "conditional-data-unconditional-model",
        run_yaml(),
        ["--set", "generator.model.num_classes=0", "--set", "discriminator.model.num_classes=0"],
        "data.conditional",
    ),
    (
        "auto-sync-bn",
        run_yaml(),
        ["--set", "generator.model.type=BigGANGenerator", "--set", "generator.model.auto_sync_bn=true"],
        "auto_sync_bn=True is not supported",
    ),
    (
        "checkpoint-interval-mid-window",
        run_yaml(ds_d=ds(gradient_accumulation_steps=4)),
        ["--set", "checkpoint.every_iters=6", "--set", "run.total_iters=8"],
        "checkpoint.every_iters=6 is not a multiple",
    ),
    (
        "length-mid-window",
        run_yaml(ds_d=ds(gradient_accumulation_steps=4)),
        ["--set", "run.total_iters=10"],
        "run.total_iters=10 is not a multiple",
    ),
    ("bad-override-syntax", run_yaml(), ["--set", "run.total_iters"], "expected key.path=value"),
    ("bad-override-yaml", run_yaml(), ["--set", "run.seed=[1"], "--set 'run.seed=[1': the value is not valid YAML"),
    ("seed-past-64-bits", run_yaml(), ["--set", "run.seed=18446744073709551616"], "run.seed: Input should be less"),
    ("negative-seed", run_yaml(), ["--set", "run.seed=-1"], "run.seed: Input should be greater"),
    ("infinite-timeout", run_yaml(), ["--set", "run.collective_timeout_seconds=.inf"], "collective_timeout_seconds"),
    ("world-size-zero", run_yaml(), ["--world-size", "0"], "--world-size 0: must be at least 1"),
    ("yes-for-a-number", run_yaml(checkpoint="{keep_last: yes}"), [], "checkpoint: keep_last=true: expected a number"),
    (
        "boolean-lr",
        run_yaml(ds_d=ds(optimizer={"type": "Adam", "params": {"lr": True}})),
        [],
        "d.json: discriminator.deepspeed.optimizer.params: lr=true: expected a number or text, not a boolean",
    ),
    (
        "set-into-a-list",
        run_yaml(ds_g=ds(optimizer={"type": "Adam", "params": {"betas": [0.5, 0.9]}})),
        ["--set", "generator.deepspeed.optimizer.params.betas.0=0.1"],
        "betas is a list: set it whole, e.g. --set 'betas=[...]'",
    ),
    ("empty-config", {"run.yaml": ""}, [], "run.yaml: generator: Field required"),
    (
        "yaml-duplicate-key",
        {**run_yaml(), "run.yaml": run_yaml()["run.yaml"] + "run: {total_iters: 9}\n"},
        [],
        "run.yaml: cannot parse: the key 'run' is given twice (line 5, column 1)",
    ),
    (
        "json-duplicate-key",
        run_yaml(ds_g='{"train_micro_batch_size_per_gpu": 8, "train_micro_batch_size_per_gpu": 4}'),
        [],
        "g.json: cannot parse: the key 'train_micro_batch_size_per_gpu' is given twice",
    ),
    (
        "set-duplicate-key",
        run_yaml(),
        ["--set", "run={total_iters: 3, total_iters: 4}"],
        "the value is not valid YAML (the key 'total_iters' is given twice (line 1, column 18))",
    ),
    (
        "infinite-lr",
        run_yaml(),
        ["--set", "generator.deepspeed.optimizer.params.lr=.inf"],
        "g.json: generator.deepspeed.optimizer.params.lr: Input should be a finite number",
    ),
    (
        "nan-lr",
        run_yaml(),
        ["--set", "discriminator.deepspeed.optimizer.params.lr=.nan"],
        "lr: Input should be a finite",
    ),
    ("nan-ema-momentum", run_yaml(ema="{momentum: .nan}"), [], "ema.momentum: Input should be a finite number"),
    ("infinite-r1-weight", run_yaml(loss="{r1_weight: .inf}"), [], "loss.r1_weight: Input should be a finite number"),
    ("config-is-a-directory", {"run.yaml": None}, [], "run.yaml: is a directory, not a config file"),
    (
        "eval-one-sample",
        run_yaml(eval="{num_samples: 1}"),
        [],
        "eval.num_samples: Input should be greater than or equal to 2",
    ),
    (
        "eval-fewer-samples-than-ranks",
        run_yaml(eval="{every_iters: 4, num_samples: 3}", run="{total_iters: 8}"),
        ["--world-size", "4"],
        "eval: num_samples=3 is less than the world size (4)",
    ),
]


@pytest.mark.parametrize("case_id,files,extra,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_config_is_refused(tmp_path, capsys, case_id, files, extra, expected):
    for name, text in files.items():
        if text is None:
            (tmp_path / name).mkdir()
        else:
            (tmp_path / name).write_text(text)
    config = next((tmp_path / n for n in files if n.startswith("run.")), tmp_path / "run.yaml")
    code = cli_main(["validate-config", "--config", str(config), *extra])
    err = capsys.readouterr().err
    assert code == EXIT_CONFIG, err
    assert expected in err, err
    assert "Traceback" not in err


def test_binary_config_is_refused(tmp_path, capsys):
    (tmp_path / "run.yaml").write_bytes(b"run: {seed: \xff\xfe}\n")
    assert cli_main(["validate-config", "--config", str(tmp_path / "run.yaml")]) == EXIT_CONFIG
    assert "run.yaml: not a text file (not UTF-8 at byte 12)" in capsys.readouterr().err


def test_cli_subprocess_prints_no_traceback(tmp_path):
    (tmp_path / "run.yaml").write_text("run: {totl_iters: 3}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "dsgan.cli", "validate-config", "--config", str(tmp_path / "run.yaml")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == EXIT_CONFIG
    assert "run.totl_iters: unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", ["train", "validate-config", "params"])
def test_every_subcommand_takes_the_config_the_same_way(tmp_path, command):
    """`--config FILE` and `--set` in each subcommand that reads a run config; `train` is an ordinary subcommand
    (its bad config ends like the others': exit 2, the field named, no traceback)."""
    (tmp_path / "run.yaml").write_text("run: {totl_iters: 3}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "dsgan.cli", command, "--config", str(tmp_path / "run.yaml"), "--set", "run.seed=1"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == EXIT_CONFIG, out
    assert "run.totl_iters: unknown key" in out and "Traceback" not in out


SHIPPED = [DEFAULT_CONFIG, *sorted((REPO / "configs").glob("*.yaml"))]


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_run_configs_validate(path, capsys):
    assert cli_main(["validate-config", "--config", str(path), "--device", "cuda", "--world-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "train_batch_size" in out  # the DeepSpeed configs are printed resolved


def test_every_shipped_deepspeed_config_is_used_and_valid():
    used = set()
    for path in SHIPPED:
        text = path.read_text()
        used |= {p.name for p in (REPO / "ds_configs").glob("*.json") if p.name in text}
    assert used == {p.name for p in (REPO / "ds_configs").glob("*.json")}


def test_run_dir_is_stated_or_named_after_the_config_file(tmp_path):
    assert load_config().run.dir == Path("runs/digits")  # stated by the default file itself
    files = run_yaml()
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "biggan_try.yaml").write_text(files["run.yaml"])
    assert load_config(tmp_path / "biggan_try.yaml").run.dir == Path("runs/biggan_try")
    (tmp_path / "mine.yaml").write_text(files["run.yaml"].replace("{total_iters: 8}", "{total_iters: 8, dir: x/y}"))
    assert load_config(tmp_path / "mine.yaml").run.dir == Path("x/y")


def test_deepspeed_config_is_handed_over_as_written():
    """No dsgan default reaches DeepSpeed: the JSON, plus the batch arithmetic dsgan sets."""
    written = {
        "train_micro_batch_size_per_gpu": 8,
        "optimizer": {"type": "Adam", "params": {"lr": 0.001}},
        "zero_optimization": {"stage": 2, "overlap_comm": True},
        "wall_clock_breakdown": True,
    }
    cfg = DeepSpeedConfig.model_validate(written)
    assert cfg.to_deepspeed(4) == {**written, "train_batch_size": 32, "gradient_accumulation_steps": 1}
    assert cfg.optimizer.params.betas is None and not cfg.fp16.enabled and not cfg.bf16.enabled
    assert DeepSpeedConfig.model_validate(cfg.model_dump(mode="json")) == cfg  # overrides and resume reread dumps


def test_biggan128_is_the_seed():
    cfg = load_config(REPO / "configs" / "biggan128.yaml", device="cuda", world_size=8)
    for name, lr in (("generator", 1e-4), ("discriminator", 4e-4)):
        ds_cfg = getattr(cfg, name).deepspeed
        assert ds_cfg.gradient_accumulation_steps == 8
        assert ds_cfg.train_micro_batch_size_per_gpu == 32
        assert ds_cfg.fp16.enabled
        assert ds_cfg.optimizer.params.lr == lr
        assert ds_cfg.optimizer.params.betas == (0.0, 0.999)
        assert ds_cfg.optimizer.params.eps == 1e-6
        assert ds_cfg.to_deepspeed(8)["train_batch_size"] == 2048
    assert (cfg.schedule.discriminator_steps, cfg.schedule.generator_steps) == (1, 1)
    g = cfg.generator.model
    assert (g.output_scale, g.noise_size, g.num_classes, g.base_channels, g.shared_dim) == (128, 120, 1000, 96, 128)
    assert g.split_noise and g.with_shared_embedding and g.init_type == "ortho" and g.sn_eps == 1e-6


def test_override_keeps_other_defaults_and_type_switch_resets():
    cfg = load_config(
        None,
        ["run.total_iters=7", *BIGGAN32_10],
    )
    assert cfg.run.total_iters == 7 and cfg.run.log_every_iters == load_config().run.log_every_iters
    assert cfg.generator.model.base_channels == 96  # BigGAN's default, not DCGAN's


def test_total_images_converts_with_world_size():
    cfg = load_config(None, ["run.total_iters=null", "run.total_images=1000"])
    assert cfg.total_iters_for(world_size=2) == 8  # ceil(1000 / (64 * 2))
    cfg = load_config(
        None,
        [
            "run.total_iters=null",
            "run.total_images=1000",
            "discriminator.deepspeed.gradient_accumulation_steps=3",
            "checkpoint.every_iters=600",
            "eval.every_iters=600",
        ],
    )
    assert cfg.total_iters_for(world_size=2) == 9  # rounded up to whole D updates


def test_passthrough_keys_reach_deepspeed():
    cfg = load_config(None, ["generator.deepspeed.wall_clock_breakdown=true"])
    assert cfg.generator.deepspeed.to_deepspeed(1)["wall_clock_breakdown"] is True


def test_resume_invariants_read_absent_deepspeed_keys_as_deepspeed_does():
    """A JSON that leaves out fp16/bf16/ZeRO means them off, so it resumes a checkpoint whose config spelt them out."""
    from dsgan.checkpoint import check_compatible
    from dsgan.errors import ConfigError

    cfg = load_config()
    assert "fp16" not in cfg.model_dump(mode="json")["generator"]["deepspeed"]
    saved = cfg.model_dump(mode="json")
    saved["generator"]["deepspeed"].update(fp16={"enabled": False}, bf16={"enabled": False})
    check_compatible(saved, cfg, saved_world=1, world_size=1)
    saved["generator"]["deepspeed"]["fp16"] = {"enabled": True}
    with pytest.raises(ConfigError, match="generator.deepspeed.fp16.enabled: checkpoint has true, config has false"):
        check_compatible(saved, cfg, saved_world=1, world_size=1)
