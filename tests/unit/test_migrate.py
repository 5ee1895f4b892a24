"""`dsgan migrate`: the safe reader, MMEngine's _base_ merge, 0.x/1.x step semantics, units, report and --diff."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from dsgan.config import load_config
from dsgan.errors import EXIT_CONFIG, ConfigError
from dsgan.migrate import main_migrate, migrate
from dsgan.migrate.ledger import leaves
from dsgan.migrate.report import render_diff
from dsgan.migrate.source import load_source

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mmgen"
SEED_0X = FIXTURES / "v0" / "biggan_128x128_b32x8_1500k.py"
SEED_1X = FIXTURES / "v1" / "biggan_128x128_b32x8_1500k.py"

V1_DCGAN = """
model = dict(
    type='DCGAN',
    noise_size=16,
    generator=dict(type='DCGANGenerator', output_scale=32, base_channels=32),
    discriminator=dict(
        type='DCGANDiscriminator', input_scale=32, output_scale=4, out_channels=1, base_channels=8))
train_cfg = dict(max_iters=400)
train_dataloader = dict(batch_size=8, dataset=dict(type='UnconditionalImageDataset', data_root='data/faces'))
optim_wrapper = dict(
    generator=dict(optimizer=dict(type='Adam', lr=0.0002, betas=(0.5, 0.999))),
    discriminator=dict(optimizer=dict(type='Adam', lr=0.0002, betas=(0.5, 0.999))))
"""

V0_DCGAN = """
model = dict(
    type='StaticUnconditionalGAN',
    generator=dict(type='DCGANGenerator', output_scale=32, base_channels=32, noise_size=16),
    discriminator=dict(
        type='DCGANDiscriminator', input_scale=32, output_scale=4, out_channels=1, base_channels=8),
    gan_loss=dict(type='GANLoss', gan_type='vanilla'))
train_cfg = dict(disc_steps=1, gen_steps=1, batch_accumulation_steps=1)
optimizer = dict(
    generator=dict(type='Adam', lr=0.0002, betas=(0.5, 0.999)),
    discriminator=dict(type='Adam', lr=0.0002, betas=(0.5, 0.999)))
data = dict(samples_per_gpu=8, train=dict(type='UnconditionalImageDataset', imgs_root='data/faces'))
total_iters = 400
"""


@pytest.fixture
def write(tmp_path: Path):
    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    return _write


def child_of(write, base: str, text: str, name: str = "child.py") -> Path:
    """A config that inherits `base` (a full config) and changes it."""
    write("base.py", base)
    return write(name, "_base_ = './base.py'\n" + textwrap.dedent(text))


# ----------------------------------------------------------------------------------------------------------------
# The seed's BigGAN-128 pair


def test_seed_pair_converts_to_the_same_schedule() -> None:
    a, b = migrate(SEED_0X), migrate(SEED_1X)
    assert (a.version, b.version) == ("0.x", "1.x")
    for m in (a, b):
        cfg = m.config
        assert (cfg.schedule.discriminator_steps, cfg.schedule.generator_steps) == (1, 1)
        for net in (cfg.generator, cfg.discriminator):
            assert net.deepspeed.gradient_accumulation_steps == 8
            assert net.deepspeed.train_micro_batch_size_per_gpu == 32
        assert cfg.run.total_iters == 1_500_000
        assert cfg.loss.type == "hinge"
        assert cfg.ema.model_dump() == {"momentum": 1e-4, "start_g_updates": 20000, "interval_g_updates": 1}
        assert cfg.discriminator.deepspeed.optimizer.params.lr == 4e-4
    # The one real difference: the seed's 0.x table has G lr 1e-4, its 1.x table 2e-4 (merged over the base's 1e-4).
    assert a.config.generator.deepspeed.optimizer.params.lr == 1e-4
    assert b.config.generator.deepspeed.optimizer.params.lr == 2e-4
    assert a.config.generator.model == b.config.generator.model
    assert a.config.discriminator.model == b.config.discriminator.model
    assert a.config.data == b.config.data


def test_seed_pair_diff_reports_only_the_generator_lr(capsys) -> None:
    assert main_migrate(["--diff", str(SEED_0X), str(SEED_1X)]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("optimizer")]
    assert rows == [["optimizer", "generator", "lr", "0.0001", "0.0002"]]
    assert "1 difference in training semantics" in out
    assert "world size 8" in out


def test_diff_of_equivalent_configs_says_so(write) -> None:
    same = child_of(
        write,
        SEED_1X.read_text().replace("'./_base_", f"'{FIXTURES}/v1/_base_"),
        """
        optim_wrapper = dict(generator=dict(optimizer=dict(lr=0.0001)))
    """,
    )
    text = render_diff(migrate(SEED_0X), migrate(same), world_size=8)
    assert "no differences in training semantics" in text


def test_diff_shows_effective_batch_for_the_world_size(write) -> None:
    bigger = child_of(write, V1_DCGAN, "optim_wrapper = dict(generator=dict(accumulative_counts=4))\n")
    text = render_diff(migrate(write("plain.py", V1_DCGAN)), migrate(bigger), world_size=2)
    assert re.search(r"generator effective batch \(world size 2\)\s+8 x 1 x 2 = 16\s+8 x 4 x 2 = 64", text)


@pytest.mark.parametrize("seed", [SEED_0X, SEED_1X], ids=["0.x", "1.x"])
def test_out_writes_valid_files_and_a_report_that_accounts_for_every_key(seed, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert main_migrate([str(seed), "--out", str(out)]) == 0
    cfg = load_config(out / "config.yaml")
    raw = (out / "config.yaml").read_text()
    assert "deepspeed: generator_ds.json" in raw and "deepspeed: discriminator_ds.json" in raw
    assert cfg.generator.deepspeed.gradient_accumulation_steps == 8
    report = (out / "migration_report.md").read_text()
    assert report in capsys.readouterr().out
    reported = re.findall(r"^\| `([^`]+)` \|", report, flags=re.M)
    assert sorted(reported) == sorted(path for path, _ in leaves(load_source(seed).values))
    assert "not recognised" not in report  # every key of the seed configs has a known fate
    assert "Step counting" in report and "EMA units" in report


def test_report_explains_the_0x_step_and_ema_units() -> None:
    notes = "\n".join(migrate(SEED_0X).ledger.notes)
    assert "disc_steps // batch_accumulation_steps = 8 // 8 = 1" in notes
    assert "start_iter 160000 -> 20000 G updates; momentum 0.9999 kept -> 0.0001" in notes


def test_every_key_is_classified_even_unknown_ones(write) -> None:
    path = child_of(write, V1_DCGAN, "my_new_key = dict(a=1)\nmodel = dict(generator=dict(fancy=3))\n")
    m = migrate(path)
    assert m.ledger.classify("my_new_key.a")[0] == "unsupported"
    assert m.ledger.classify("model.generator.fancy")[0] == "unsupported"
    assert m.ledger.classify("model.generator.output_scale")[0] == "converted"


# ----------------------------------------------------------------------------------------------------------------
# Reading without executing


@pytest.mark.parametrize(
    "line, what",
    [
        ("lr = float('1e-4')", "a call (`float('1e-4')`)"),
        ("x = __import__('os').system('touch {marker}')", "a call (`__import__('os').system('touch"),
        ("x = ().__class__", "attribute access (`().__class__`)"),
        ("x = (lambda: 1)()", "a call (`(lambda: 1)()`)"),
        ("x = lambda: 1", "lambda"),
        ("x = [i for i in range(3)]", "list comprehension"),
        ('x = f\'{open("{marker}", "w")}\'', "a call (`open("),
        ("x = f'{[1]}'", "an f-string of [1] (only numbers and strings are formatted)"),
        ("x = [1][0].__class__", "attribute access (`[1][0].__class__`)"),
        ("x = max(1, 2)", "a call (`max(1, 2)`)"),
        ("x = [i for i in [1, 2]]", "list comprehension"),
        ("x = {k: 1 for k in 'ab'}", "dict comprehension"),
        ("x = [*[1]]", "unpacking (*)"),
        ("x = {1, 2}", "a set literal"),
        ("x = 1 < 2", "comparison"),
        ("for i in [1]:\n    y = i", "a `for` loop"),
        ("if 1:\n    y = 1", "an `if` statement"),
        ("def f():\n    pass", "a function definition"),
        ("model.type = 'x'", "assignment to `model.type`"),
        ("model['type'].x = 1", "assignment to `model['type'].x`"),
        ("x = [1] + (2,)", "`[1] + (2,)` (arithmetic is for numbers"),
        ("import os", "an import (`import os`)"),
        ("x = {{_base_.model}}", "`{{_base_.xxx}}` substitution"),
        ("x = 1 if True else 2", "conditional expression"),
        ("x = 2 ** 10000", "the power"),
        ("x = 'a' * 100", "`'a' * 100` (arithmetic is for numbers"),
    ],
)
def test_anything_but_literals_is_refused_with_file_and_line(write, tmp_path, line, what) -> None:
    marker = tmp_path / "pwned"
    path = write("evil.py", f"# a config\nmodel = dict(type='DCGAN')\n{line.replace('{marker}', str(marker))}\n")
    with pytest.raises(ConfigError) as exc:
        load_source(path)
    assert f"{path}:3: {what}" in str(exc.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("x = " + "+".join(["1"] * 100_000), "nested too deeply"),
        ("s = 'x'\n" + "s = s + s\n" * 40, "more than 1,000,000 items"),
        ("a = [1]\n" + "a = [a, a, a, a, a, a, a, a, a, a]\n" * 8, "more than 1,000,000 items"),
        ("x = f'{\"" + "x" * 600_000 + '"}{"' + "x" * 600_000 + "\"}'", "more than 1,000,000 items"),
    ],
    ids=["deep", "doubling", "fan-out", "f-string"],
)
def test_configs_that_would_exhaust_the_reader_are_refused(write, text, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_source(write("huge.py", text + "\n"))


def test_reading_a_base_variable_counts_against_the_size_bound(write) -> None:
    write("base.py", "big = [0] * 200_000\n")
    path = write("child.py", "_base_ = './base.py'\nx = [" + ", ".join(["_base_.big"] * 6) + "]\n")
    with pytest.raises(ConfigError, match=r"child.py:2: .*more than 1,000,000 items"):
        load_source(path)


def test_malicious_config_is_refused_and_nothing_runs(write, tmp_path, capsys) -> None:
    marker = tmp_path / "pwned"
    path = write("evil.py", V1_DCGAN + f"work_dir = __import__('os').system('touch {marker}')\n")
    assert main_migrate([str(path), "--out", str(tmp_path / "out")]) == EXIT_CONFIG
    assert "__import__" in capsys.readouterr().err
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_new_style_configs_are_refused_with_a_clear_message(write) -> None:
    path = write("new.py", "from mmengine.config import read_base\nwith read_base():\n    from .x import *\n")
    with pytest.raises(ConfigError, match=r"new.py:1: .*read_base.* not supported yet: use the `_base_"):
        load_source(path)


def test_names_arithmetic_and_unpacking_are_evaluated(write) -> None:
    path = write(
        "ok.py",
        """
        d_steps = 5
        norm = dict(mean=[127.5], std=[127.5])
        a = dict(type='Normalize', **norm)
        b = {'x': -d_steps * 2 + 1, **norm}
        c = 'data/' + 'faces'
        d = list((1, 2)) + [3]
        e = 1e-4 / 2
        """,
    )
    values = load_source(path).values
    assert values["a"] == {"type": "Normalize", "mean": [127.5], "std": [127.5]}
    assert values["b"]["x"] == -9
    assert values["c"] == "data/faces"
    assert values["d"] == [1, 2, 3]
    assert values["e"] == 5e-5
    assert load_source(path).used_by["norm"] == {"a", "b"}


def test_constructs_of_upstream_configs_are_evaluated(write) -> None:
    """Every construct the census in README.md counts as evaluable, each as upstream configs write it."""
    write(
        "base.py",
        """
        train_dataloader = dict(dataset=dict(pipeline=[dict(type='Load'), dict(type='Resize', scale=(128, 128))]))
        model = dict(type='BigGAN')
        """,
    )
    path = write(
        "child.py",
        """
        _base_ = './base.py'
        scale_min, scale_max = 1, 4                    # unpacking
        a = b = [127.5] * 3                            # chained assignment, repetition
        c = 3 * (1,) + (2,)                            # repetition on the right, tuple concatenation
        name = 'celeba'
        d = f'data/{name}_{scale_max:03d}_{-1.5!r}'    # f-strings of names and numbers
        pipe = [dict(type='A'), dict(type='B', params=dict(q=1))]
        pipe[-1]['params']['q'] = [scale_min, scale_max]   # an item of an earlier name
        pipe += [dict(type='C')]                       # augmented assignment
        e = pipe[1]['type']                            # indexing
        f: float = 0.5                                 # annotated assignment (the annotation is not evaluated)
        g = -scale_max ** 2 + 0.99 ** (1 / 5)          # unary minus, powers
        h = dict({'8': 0.0015}, **dict(x=1))           # dict() of a dict, and ** unpacking
        train_dataloader = dict(batch_size=4)
        _base_.train_dataloader.dataset.pipeline[1].scale = (256, 256)   # MMEngine's _base_ variables
        _base_.model = dict(type='SNGAN')
        i = _base_.model.type
        """,
    )
    values = load_source(path).values
    assert (values["scale_min"], values["scale_max"]) == (1, 4)
    assert values["a"] == values["b"] == [127.5, 127.5, 127.5]
    assert values["c"] == (1, 1, 1, 2)
    assert values["d"] == "data/celeba_004_-1.5"
    assert values["pipe"] == [{"type": "A"}, {"type": "B", "params": {"q": [1, 4]}}, {"type": "C"}]
    assert (values["e"], values["f"]) == ("B", 0.5)
    assert values["g"] == pytest.approx(-16 + 0.99**0.2)
    assert values["h"] == {"8": 0.0015, "x": 1}
    # the bases' value changed, this file's own keys merged over it
    assert values["train_dataloader"]["dataset"]["pipeline"][1] == {"type": "Resize", "scale": (256, 256)}
    assert values["train_dataloader"]["batch_size"] == 4
    assert values["i"] == values["model"]["type"] == "SNGAN"


@pytest.mark.parametrize(
    "text, message",
    [
        ("a, b = [1, 2, 3]", "cannot unpack [1, 2, 3] into 2 names"),
        ("x = [1]\nx[5] = 0", "`x[5]`: cannot set item 5 of [1]"),
        ("x = dict(a=1)['b']", "no item 'b' in {'a': 1}"),
        ("x = _base_.nothing", "`_base_.nothing`: the _base_ files define no 'nothing'"),
        ("x = [0] * 2_000_000", "more than 1,000,000 items"),
        ("x = 2_000_000 * [0]", "more than 1,000,000 items"),
        ("x = [0] * 1000\nx *= 2000", "more than 1,000,000 items"),
        ("x = 10.0 ** 400", "the power `10.0 ** 400` is refused"),
        ("x = f'{1:999999999}'", "f-string format '999999999': wider than 1000, refused"),
        ("x = f'{1:.5000f}'", "f-string format '.5000f': wider than 1000, refused"),
    ],
)
def test_evaluable_constructs_with_bad_values_are_refused(write, text, message) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_source(write("bad.py", text + "\n"))


def test_undefined_name_is_refused(write) -> None:
    with pytest.raises(ConfigError, match=r"x.py:1: name 'nope' is not defined"):
        load_source(write("x.py", "a = nope\n"))


# ----------------------------------------------------------------------------------------------------------------
# _base_ inheritance (MMEngine's rules)


def test_three_level_base_chain_merges_dicts_recursively(write) -> None:
    write("configs/_base_/models/m.py", "model = dict(type='DCGAN', generator=dict(a=1, b=2), keep=True)\nx = 1\n")
    write("configs/_base_/mid.py", "_base_ = ['./models/m.py']\nmodel = dict(generator=dict(b=3, c=4))\ny = x + 1\n")
    top = write("configs/top.py", "_base_ = '_base_/mid.py'\nmodel = dict(generator=dict(c=5))\nz = y * 10\n")
    source = load_source(top)
    assert source.values["model"] == {"type": "DCGAN", "generator": {"a": 1, "b": 3, "c": 5}, "keep": True}
    assert (source.values["x"], source.values["y"], source.values["z"]) == (1, 2, 20)
    assert [p.name for p in source.files] == ["top.py", "mid.py", "m.py"]


def test_delete_replaces_the_base_dict(write) -> None:
    write("base.py", "optim_wrapper = dict(generator=dict(optimizer=dict(type='SGD', momentum=0.9), clip=1))\n")
    child = write(
        "child.py",
        "_base_ = './base.py'\noptim_wrapper = dict(generator=dict(optimizer=dict(_delete_=True, type='Adam')))\n",
    )
    values = load_source(child).values
    assert values["optim_wrapper"] == {"generator": {"optimizer": {"type": "Adam"}, "clip": 1}}


def test_lists_are_replaced_not_merged(write) -> None:
    write("base.py", "custom_hooks = [dict(type='A'), dict(type='B')]\nbetas = (0.9, 0.999)\n")
    child = write("child.py", "_base_ = ['./base.py']\ncustom_hooks = [dict(type='C')]\n")
    values = load_source(child).values
    assert values["custom_hooks"] == [{"type": "C"}]
    assert values["betas"] == (0.9, 0.999)


def test_base_cycles_and_duplicate_keys_are_refused(write) -> None:
    write("a.py", "_base_ = './b.py'\n")
    b = write("b.py", "_base_ = './a.py'\n")
    with pytest.raises(ConfigError, match="_base_ cycle"):
        load_source(b)
    write("one.py", "model = dict(a=1)\n")
    write("two.py", "model = dict(b=1)\n")
    with pytest.raises(ConfigError, match="key 'model' is defined by two _base_ files"):
        load_source(write("both.py", "_base_ = ['./one.py', './two.py']\n"))
    with pytest.raises(ConfigError, match="missing.py: file not found"):
        load_source(write("gone.py", "_base_ = './missing.py'\n"))


# ----------------------------------------------------------------------------------------------------------------
# Version detection and step semantics


def test_version_evidence_and_mixed_configs(write) -> None:
    m = migrate(write("v0.py", V0_DCGAN))
    assert m.version == "0.x" and "train_cfg.disc_steps" in m.evidence and "total_iters" in m.evidence
    assert "optim_wrapper" in migrate(write("v1.py", V1_DCGAN)).evidence
    # keys of the other version inside what the framework reads (model, train_cfg) change its training: refused
    with pytest.raises(ConfigError, match=r"model.type='DCGAN' is a .*MMagic model, but train_cfg.disc_steps belong"):
        migrate(write("mixed.py", V1_DCGAN + "train_cfg = dict(disc_steps=5)\n"))
    # without a model type, the top-level keys decide, and both kinds are ambiguous
    no_type = V1_DCGAN.replace("type='DCGAN',", "")
    with pytest.raises(ConfigError, match=r"mixes MMGeneration 0.x keys \(total_iters\) .*names no model type"):
        migrate(write("ambiguous.py", no_type + "total_iters = 10\n"))
    # a model type of neither framework's GANs is refused by name, whatever else the config holds
    custom = V1_DCGAN.replace("type='DCGAN',", "type='Pix2Pix', gan_loss=dict(type='GANLoss'),")
    with pytest.raises(ConfigError, match=r"model.type: not supported yet: 'Pix2Pix' \(supported MMGeneration 0.x"):
        migrate(write("custom.py", custom))


def test_stray_variables_of_the_other_version_are_ignored(write, tmp_path) -> None:
    """MMEngine's Runner never reads `total_iters`, `data` or `checkpoint_config`: a 1.x config that defines them
    (as MMagic's LSGAN configs define `total_iters` to compute max_iters) converts, and the report names them."""
    text = V1_DCGAN.replace("max_iters=400", "max_iters=total_iters * disc_step")
    text = "total_iters = 100\ndisc_step = 4\n" + text + "data = dict(samples_per_gpu=64)\ncheckpoint_config = {}\n"
    m = migrate(write("stray.py", text))
    assert m.version == "1.x" and m.config.run.total_iters == 400
    for key in ("total_iters", "data", "checkpoint_config"):
        kind, reason = m.ledger.classify(key)
        assert kind == "ignored" and "a stray variable: MMGeneration 1.x / MMagic never reads" in reason, key
    # the same the other way round: a 0.x config with a helper named like a 1.x key
    m = migrate(write("stray0.py", V0_DCGAN + "optim_wrapper = dict(lr=1)\n"))
    assert m.version == "0.x" and m.ledger.classify("optim_wrapper")[0] == "ignored"


def test_0x_disc_steps_not_a_multiple_of_accumulation_is_refused(write) -> None:
    path = child_of(write, V0_DCGAN, "train_cfg = dict(disc_steps=5, batch_accumulation_steps=2)\n")
    with pytest.raises(ConfigError) as exc:
        migrate(path)
    message = str(exc.value)
    assert "train_cfg.disc_steps: disc_steps=5 is not a multiple of batch_accumulation_steps=2" in message
    assert "no exact" in message and "equivalent" in message


def test_0x_steps_count_train_step_calls(write) -> None:
    path = child_of(write, V0_DCGAN, "train_cfg = dict(disc_steps=10, gen_steps=2, batch_accumulation_steps=2)\n")
    cfg = migrate(path).config
    assert (cfg.schedule.discriminator_steps, cfg.schedule.generator_steps) == (5, 2)
    assert cfg.generator.deepspeed.gradient_accumulation_steps == 2
    assert cfg.discriminator.deepspeed.gradient_accumulation_steps == 2


def test_1x_steps_and_per_network_accumulation(write) -> None:
    path = child_of(
        write,
        V1_DCGAN,
        """
        model = dict(discriminator_steps=3, generator_steps=2)
        optim_wrapper = dict(generator=dict(accumulative_counts=4), discriminator=dict(accumulative_counts=2))
        """,
    )
    cfg = migrate(path).config
    assert (cfg.schedule.discriminator_steps, cfg.schedule.generator_steps) == (3, 2)
    assert cfg.generator.deepspeed.gradient_accumulation_steps == 4
    assert cfg.discriminator.deepspeed.gradient_accumulation_steps == 2
    assert cfg.run.total_iters == 400


def test_total_iters_is_rounded_down_to_a_whole_d_update(write) -> None:
    path = child_of(
        write,
        V1_DCGAN,
        "train_cfg = dict(max_iters=401)\noptim_wrapper = dict(discriminator=dict(accumulative_counts=4))\n",
    )
    m = migrate(path)
    assert m.config.run.total_iters == 400
    assert any("train_cfg.max_iters=401 is not a multiple" in n for n in m.ledger.notes)


def test_epoch_based_length_needs_an_override(write) -> None:
    path = child_of(write, V1_DCGAN, "train_cfg = dict(_delete_=True, by_epoch=True, max_epochs=5)\n")
    with pytest.raises(ConfigError, match=r"5 epochs.*--set run.total_iters=N"):
        migrate(path)
    assert migrate(path, ["run.total_iters=1000"]).config.run.total_iters == 1000


# ----------------------------------------------------------------------------------------------------------------
# EMA units


def test_0x_ema_hook_is_converted_to_g_updates(write) -> None:
    # A cycle of 4 iterations (disc_steps 4, no accumulation), 2 G updates each.
    hook = (
        "dict(type='ExponentialMovingAverageHook', module_keys=('generator_ema',), interval={}, start_iter={}, "
        "interp_cfg=dict(momentum=0.999))"
    )
    base = V0_DCGAN.replace("disc_steps=1, gen_steps=1", "disc_steps=4, gen_steps=2")
    every_cycle = migrate(child_of(write, base, f"custom_hooks = [{hook.format(8, 1000)}]\n", "a.py")).config.ema
    assert every_cycle.model_dump() == pytest.approx(
        {"momentum": 1e-3, "start_g_updates": 500, "interval_g_updates": 4}
    )
    # interval 1: the same G is averaged 4 times per cycle, i.e. one average with momentum 1 - 0.999**4.
    every_iter = migrate(child_of(write, base, f"custom_hooks = [{hook.format(1, 0)}]\n", "b.py"))
    assert every_iter.config.ema.momentum == pytest.approx(1 - 0.999**4)
    assert every_iter.config.ema.interval_g_updates == 2
    assert every_iter.config.ema.start_g_updates == 0
    # start_iter not on a cycle boundary is rounded and said so.
    rounded = migrate(child_of(write, base, f"custom_hooks = [{hook.format(4, 1002)}]\n", "c.py"))
    assert rounded.config.ema.start_g_updates == 500
    assert any("rounded from 501" in n for n in rounded.ledger.notes)


def test_0x_use_ema_without_a_hook_is_off_and_explained(write) -> None:
    m = migrate(child_of(write, V0_DCGAN, "train_cfg = dict(use_ema=True)\n"))
    assert m.config.ema is None
    assert any("never updates it" in n for n in m.ledger.notes)


def test_0x_ema_hook_that_never_averages_is_refused(write) -> None:
    text = "custom_hooks = [dict(type='ExponentialMovingAverageHook', module_keys='generator_ema')]\n"
    with pytest.raises(ConfigError, match="interval: -1: the hook never averages"):
        migrate(child_of(write, V0_DCGAN, text))


def test_1x_ema_start_counts_cycles(write) -> None:
    text = """
    model = dict(generator_steps=2, ema_config=dict(type='ExponentialMovingAverage', momentum=0.001, interval=3,
                                                   start_iter=6))
    optim_wrapper = dict(discriminator=dict(accumulative_counts=4))
    """
    m = migrate(child_of(write, V1_DCGAN, text, "a.py"))
    assert m.config.ema.model_dump() == {"momentum": 0.001, "start_g_updates": 12, "interval_g_updates": 6}
    assert any("counts cycles, not iterations" in n and "= 24 iterations" in n for n in m.ledger.notes)
    # MMagic's first EMA call copies G: start_iter 0 becomes one cycle.
    first = migrate(child_of(write, V1_DCGAN, "model = dict(ema_config=dict(momentum=0.01))\n", "b.py"))
    assert first.config.ema.model_dump() == {"momentum": 0.01, "start_g_updates": 1, "interval_g_updates": 1}


# ----------------------------------------------------------------------------------------------------------------
# Precision, optimizers, loss, models


def test_amp_optim_wrapper_becomes_per_network_fp16(write) -> None:
    text = """
    optim_wrapper = dict(
        generator=dict(type='AmpOptimWrapper', loss_scale='dynamic'),
        discriminator=dict(type='AmpOptimWrapper', loss_scale=512.))
    """
    m = migrate(child_of(write, V1_DCGAN, text))
    g, d = m.config.generator.deepspeed.fp16, m.config.discriminator.deepspeed.fp16
    assert (g.enabled, g.loss_scale, g.initial_scale_power, g.loss_scale_window, g.hysteresis) == (True, 0, 16, 2000, 1)
    assert (d.enabled, d.loss_scale) == (True, 512)
    assert any("each AmpOptimWrapper its own GradScaler" in n for n in m.ledger.notes)
    # MMEngine's AmpOptimWrapper raises TypeError for an int (only 'dynamic', a float or a dict): refused, saying so
    text = "optim_wrapper = dict(discriminator=dict(type='AmpOptimWrapper', loss_scale=512))\n"
    with pytest.raises(ConfigError, match=r"loss_scale: the int 512 is refused by MMEngine's AmpOptimWrapper"):
        migrate(child_of(write, V1_DCGAN, text, "int.py"))


def test_amp_bf16_becomes_autocast(write) -> None:
    text = "optim_wrapper = dict(generator=dict(type='AmpOptimWrapper', dtype='bfloat16'))\n"
    cfg = migrate(child_of(write, V1_DCGAN, text)).config
    assert cfg.generator.deepspeed.precision == "autocast-bfloat16"
    assert cfg.discriminator.deepspeed.precision == "fp32"


def test_0x_shared_grad_scaler_becomes_fp16_on_both_with_a_note(write) -> None:
    m = migrate(child_of(write, V0_DCGAN, "runner = dict(fp16_loss_scaler=dict(init_scale=512))\n"))
    for net in (m.config.generator, m.config.discriminator):
        assert (net.deepspeed.fp16.enabled, net.deepspeed.fp16.initial_scale_power) == (True, 9)
    assert any("0.x shares one GradScaler between G and D" in n for n in m.ledger.notes)
    with pytest.raises(ConfigError, match="init_scale=500 is not a power of two"):
        migrate(child_of(write, V0_DCGAN, "runner = dict(fp16_loss_scaler=dict(init_scale=500))\n", "c.py"))


def test_optimizer_defaults_are_torch_s_and_l2_decay_is_kept(write) -> None:
    text = "optim_wrapper = dict(generator=dict(optimizer=dict(type='Adam', weight_decay=0.01)))\n"
    cfg = migrate(child_of(write, V1_DCGAN, text)).config
    params = cfg.generator.deepspeed.optimizer.params
    assert (params.eps, params.weight_decay, params.adam_w_mode) == (1e-8, 0.01, False)
    with pytest.raises(ConfigError, match="not supported yet: 'SGD'"):
        migrate(child_of(write, V1_DCGAN, "optim_wrapper = dict(generator=dict(optimizer=dict(type='SGD')))\n", "s.py"))


def test_lr_schedules_are_refused(write) -> None:
    with pytest.raises(ConfigError, match="lr_config: not supported yet: an LR schedule"):
        migrate(child_of(write, V0_DCGAN, "lr_config = dict(policy='Linear', target_lr=0)\n", "a.py"))
    scheduler = "param_scheduler = [dict(type='LinearLR', start_factor=0.1)]\n"
    with pytest.raises(ConfigError, match="param_scheduler: not supported yet"):
        migrate(child_of(write, V1_DCGAN, scheduler, "b.py"))
    assert migrate(child_of(write, V1_DCGAN, "param_scheduler = None\n", "c.py")).config.run.total_iters == 400


def test_r1_penalty_conventions(write) -> None:
    # StyleGAN2's mmgen style: loss_weight = gamma / 2 * interval with the whole-image norm.
    hwc = (
        "model = dict(disc_auxiliary_loss=dict(type='R1GradientPenalty', loss_weight=10. / 2. * 16, "
        "norm_mode='HWC', interval=16, data_info=dict(real_data='real_imgs', discriminator='disc')))\n"
    )
    loss = migrate(child_of(write, V0_DCGAN, hwc, "a.py")).config.loss
    assert (loss.r1_weight, loss.r1_interval) == (10.0, 16)
    # 'pixel' (the default) averages over the H*W pixels of D's 32x32 input.
    pixel = "model = dict(disc_auxiliary_loss=dict(type='R1GradientPenalty', loss_weight=1024.))\n"
    loss = migrate(child_of(write, V0_DCGAN, pixel, "b.py")).config.loss
    assert (loss.r1_weight, loss.r1_interval) == (2.0, 1)
    gp = "model = dict(disc_auxiliary_loss=dict(type='GradientPenaltyLoss', loss_weight=10.))\n"
    with pytest.raises(ConfigError, match="per-pixel channel norm"):
        migrate(child_of(write, V0_DCGAN, gp, "c.py"))


def test_gan_loss_types(write) -> None:
    ns = migrate(child_of(write, V0_DCGAN, "model = dict(gan_loss=dict(gan_type='wgan-logistic-ns'))\n", "a.py"))
    assert ns.config.loss.type == "vanilla"
    ls = migrate(child_of(write, V0_DCGAN, "model = dict(gan_loss=dict(gan_type='lsgan'))\n", "b.py"))
    assert ls.config.loss.type == "lsgan"
    with pytest.raises(ConfigError, match=r"not supported yet: .*'smgan'.* wgan-logistic-ns, lsgan"):
        migrate(child_of(write, V0_DCGAN, "model = dict(gan_loss=dict(gan_type='smgan'))\n", "c.py"))
    assert migrate(write("dc.py", V1_DCGAN)).config.loss.type == "vanilla"  # MMagic's DCGAN: BCE with logits


def test_unsupported_model_types_are_named(write) -> None:
    style = "model = dict(generator=dict(_delete_=True, type='StyleGANv3Generator', out_size=256))\n"
    with pytest.raises(ConfigError, match=r"model.generator.type: not supported yet: 'StyleGANv3Generator'"):
        migrate(child_of(write, V1_DCGAN, style, "a.py"))
    with pytest.raises(ConfigError, match=r"model.type: not supported yet: 'StyleGAN3'"):
        migrate(child_of(write, V1_DCGAN, "model = dict(type='StyleGAN3')\n", "b.py"))


def test_model_fields_and_source_defaults(write) -> None:
    cfg = migrate(write("dc.py", V1_DCGAN)).config
    # MMagic counts DCGAN G channels at 4x4 (32) and halves them twice up to 16x16: dsgan's base is 8.
    assert cfg.generator.model.base_channels == 8
    assert (cfg.generator.model.noise_size, cfg.generator.model.num_classes) == (16, 0)
    assert cfg.discriminator.model.with_spectral_norm is False
    seed = migrate(SEED_1X)
    g = seed.config.generator.model
    assert (g.act.type, g.act.inplace, g.init_type, g.auto_sync_bn) == ("ReLU", True, "ortho", False)
    text = "model = dict(generator=dict(rgb2bgr=True, sn_style='torch', auto_sync_bn=True))\n"
    base = SEED_1X.read_text().replace("'./_base_", f"'{FIXTURES}/v1/_base_")
    m = migrate(child_of(write, base, text))
    assert m.ledger.classify("model.generator.rgb2bgr")[0] == "unsupported"
    assert m.config.generator.model.auto_sync_bn is False
    assert any("SyncBatchNorm" in n for n in m.ledger.notes)


def test_sngan_projection_fields(write) -> None:
    path = write(
        "sngan.py",
        """
        model = dict(
            type='SNGAN',
            num_classes=10,
            data_preprocessor=dict(type='DataPreprocessor', output_channel_order='BGR'),
            generator=dict(type='SNGANGenerator', output_scale=32, base_channels=256, act_cfg=dict(type='ReLU')),
            discriminator=dict(type='ProjDiscriminator', input_scale=32, input_channels=3, attention_after_nth_block=1),
            discriminator_steps=5)
        train_cfg = dict(max_iters=500000)
        train_dataloader = dict(batch_size=64, dataset=dict(type='CIFAR10'))
        optim_wrapper = dict(
            generator=dict(optimizer=dict(type='Adam', lr=0.0002, betas=(0.5, 0.999))),
            discriminator=dict(optimizer=dict(type='Adam', lr=0.0002, betas=(0.5, 0.999))))
        """,
    )
    m = migrate(path)
    g, d = m.config.generator.model, m.config.discriminator.model
    assert (g.type, g.num_classes, g.noise_size, g.base_channels) == ("SNGANGenerator", 10, 128, 256)
    assert (d.num_classes, d.base_channels, d.in_channels, d.sn_eps) == (10, 128, 3, 1e-12)
    assert (m.config.schedule.discriminator_steps, m.config.loss.type) == (5, "hinge")
    assert m.config.data.type == "digits" and m.config.data.conditional is True
    assert m.ledger.classify("model.discriminator.attention_after_nth_block")[0] == "unsupported"
    assert m.ledger.classify("model.data_preprocessor.output_channel_order")[0] == "unsupported"


def test_data_that_is_not_a_folder_keeps_the_digits_with_a_warning(write) -> None:
    path = child_of(write, V1_DCGAN, "train_dataloader = dict(dataset=dict(_delete_=True, type='CIFAR10'))\n")
    m = migrate(path)
    assert m.config.data.type == "digits" and m.config.data.conditional is False
    assert any("'CIFAR10' is not converted" in n for n in m.ledger.notes)
    big = SEED_1X.read_text().replace("'./_base_", f"'{FIXTURES}/v1/_base_")
    cifar = child_of(write, big, "train_dataloader = dict(dataset=dict(_delete_=True, type='CIFAR10'))\n", "b.py")
    with pytest.raises(ConfigError, match=r"num_classes=1000(.|\n)*--set data.type=image_folder"):
        migrate(cifar)


def test_refusals_exit_with_code_2(write, tmp_path, capsys) -> None:
    path = child_of(write, V0_DCGAN, "train_cfg = dict(disc_steps=3, batch_accumulation_steps=2)\n")
    assert main_migrate([str(path), "--out", str(tmp_path / "o")]) == EXIT_CONFIG
    assert "not a multiple" in capsys.readouterr().err
    assert main_migrate([str(path)]) == EXIT_CONFIG


@pytest.mark.parametrize(
    "data,message",
    [(b"model = dict(type='\xff')\n", "not a text file (not UTF-8 at byte 19)"), (b"x = 1\0\n", "not valid Python")],
)
def test_binary_input_is_refused(tmp_path, capsys, data, message) -> None:
    (tmp_path / "c.py").write_bytes(data)
    assert main_migrate([str(tmp_path / "c.py"), "--out", str(tmp_path / "o")]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
