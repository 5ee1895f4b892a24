"""eval.protocol presets, the protocol record beside every result, and `dsgan eval`'s flags for them."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from tiny import TinyGenerator

from dsgan.cli import _eval_config
from dsgan.cli import main as cli_main
from dsgan.config import load_config
from dsgan.distributed import DistEnv
from dsgan.errors import EXIT_CONFIG, ConfigError
from dsgan.eval.fid import read_reference
from dsgan.eval.run import Evaluator


def test_protocol_sets_samples_and_metrics_and_is_recognised_when_spelt_out():
    # The default run's file says num_samples: 2000; a protocol on the command line needs it left out.
    with pytest.raises(ConfigError, match="eval.num_samples=2000 conflicts with eval.protocol='kid50k_full'"):
        load_config(None, ["eval.protocol=kid50k_full"])
    cfg = load_config(None, ["eval.protocol=kid50k_full", "eval.num_samples=null"])
    assert (cfg.eval.num_samples, cfg.eval.metrics, cfg.eval.protocol_name) == (50_000, ("kid",), "kid50k_full")
    # The defaults (10000 samples, fid and is) give way: they are what every resolved config holds.
    default = load_config(None, ["eval.num_samples=10000", "eval.protocol=pr50k3_full"])
    assert (default.eval.num_samples, default.eval.metrics) == (50_000, ("pr",))
    spelt = load_config(None, ["eval.num_samples=50000", "eval.metrics=[fid]"])
    assert spelt.eval.protocol is None and spelt.eval.protocol_name == "fid50k_full"
    assert load_config(None, ["eval.protocol=all50k_full", "eval.num_samples=null"]).eval.metrics == (
        "fid",
        "is",
        "kid",
        "pr",
        "dc",
    )
    assert load_config(None).eval.protocol_name == "custom"  # the default run: 2000 samples


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["eval.protocol=fid50k_full", "eval.num_samples=1000"], "eval.num_samples=1000 conflicts with eval.protocol"),
        (["eval.num_samples=null", "eval.protocol=pr50k3_full", "eval.metrics=[fid]"], r"eval.metrics=\['fid'\] conf"),
        (["eval.protocol=fid5k"], "eval.protocol"),
        (["eval.metrics=[fid, lpips]"], "eval.metrics"),
        (["eval.metrics=[]"], "eval.metrics is empty"),
        (["eval.metrics=[ifid]", "eval.num_samples=15"], "ifid .* 2 samples per class .* eval.num_samples=15"),
        (
            ["eval.metrics=[ifid]", "generator.model.num_classes=0", "discriminator.model.num_classes=0"]
            + ["data.conditional=false"],
            "ifid .* conditional generator",
        ),
    ],
)
def test_bad_protocol_settings_name_the_field(sets, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, sets)


def _flags(**given: object) -> argparse.Namespace:
    names = ("features", "inception_weights", "num_samples", "metrics", "reference_path", "protocol")
    return argparse.Namespace(**{n: given.get(n) for n in names})


def test_eval_flags_replace_the_protocol_they_contradict():
    with_protocol = load_config(None, ["eval.protocol=fid50k_full", "eval.num_samples=null"])
    fewer = _eval_config(with_protocol, _flags(num_samples=300))
    assert fewer.eval.protocol is None and fewer.eval.num_samples == 300 and fewer.eval.metrics == ("fid",)
    other = _eval_config(load_config(None), _flags(protocol="pr50k3_full"))
    assert (other.eval.num_samples, other.eval.metrics) == (50_000, ("pr",))
    chosen = _eval_config(load_config(None), _flags(metrics="fid, kid"))
    assert chosen.eval.metrics == ("fid", "kid")


def test_evaluator_writes_the_protocol_and_every_metric(tmp_path):
    sets = ["eval.num_samples=120", "eval.metrics=[fid, kid, pr, dc, ifid]", "eval.batch_size=50"]
    cfg = load_config(None, sets)
    evaluator = Evaluator(cfg, tmp_path, DistEnv.single())
    metrics = evaluator(TinyGenerator())
    assert set(metrics) == {"fd8", "kid", "precision", "recall", "density", "coverage", "ifid"}
    assert read_reference(tmp_path / "fid_reference.npz").features.shape == (1797, 64)
    assert evaluator.protocol(ema=True) == {
        "name": "custom",
        "metrics": ["fid", "kid", "pr", "dc", "ifid"],
        "num_samples": 120,
        "features": evaluator.extractor.name,
        "preprocessing": evaluator.extractor.preprocessing_id,
        "reference": "the embedded digits (1797 images)",
        "reference_images": 1797,
        "truncation": None,
        "ema": True,
        "seed": cfg.run.seed,
    }


def test_published_statistics_of_another_network_are_refused(tmp_path):
    np.savez(tmp_path / "inception.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    cfg = load_config(None, [f"eval.reference_stats={tmp_path / 'inception.npz'}"])
    with pytest.warns(UserWarning, match="published"), pytest.raises(ConfigError, match="2048.*64-d"):
        Evaluator(cfg, tmp_path, DistEnv.single())


def test_reference_stats_command_writes_the_cache_training_reads(tmp_path, capsys):
    sets = ["--set", f"run.dir={tmp_path}", "--set", "eval.metrics=[fid, pr]"]
    assert cli_main(["eval", "--reference-stats", *sets]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / 'fid_reference.npz'}: digits" in out and "1797 images" in out and "with features" in out
    cached = read_reference(tmp_path / "fid_reference.npz")
    # The evaluator of that config reuses it (same key), features included.
    evaluator = Evaluator(
        load_config(None, [f"run.dir={tmp_path}", "eval.metrics=[fid, pr]"]), tmp_path, DistEnv.single()
    )
    assert evaluator.stats.key == cached.key and evaluator.stats.features is not None
    assert cli_main(["eval", "--reference-stats", "--run", str(tmp_path)]) == EXIT_CONFIG
    assert "--reference-stats reads --config" in capsys.readouterr().err
    assert cli_main(["eval"]) == EXIT_CONFIG and "needs --run DIR" in capsys.readouterr().err
    json.dumps(evaluator.protocol(ema=False))  # serialisable as it is logged
