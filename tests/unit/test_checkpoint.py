"""Checkpoint files without engines: the trainer state round trip, what `verify` refuses, and what `find_resumable`
does with corrupt checkpoints. (Engines, kills mid-save and exact resume: tests/integration/test_train.py.)"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import pytest
import torch

from dsgan import checkpoint
from dsgan.checkpoint import TRAINER, TrainerState, find_resumable, load_generator, read_trainer_state, verify
from dsgan.config import load_config
from dsgan.ema import EMA
from dsgan.errors import CheckpointError
from dsgan.models import build_generator

REPO = Path(__file__).resolve().parents[2]


def make(root: Path, iteration: int, state: TrainerState | None = None) -> Path:
    """A sealed checkpoint holding a trainer state and one stand-in engine file."""
    tmp = root / "checkpoints" / (checkpoint.step_name(iteration) + ".tmp")
    (tmp / "generator").mkdir(parents=True)
    (tmp / "generator" / "weights.bin").write_bytes(os.urandom(64))
    state = state or TrainerState(config={"run": {"seed": 0}}, world_size=2, iteration=iteration)
    torch.save(dataclasses.asdict(state), tmp / TRAINER)
    final = root / "checkpoints" / checkpoint.step_name(iteration)
    checkpoint._seal(tmp, final, iteration, best=False)
    return final


def reseal(path: Path) -> None:
    """Rewrite the manifest so that it matches the files again (a corruption the checksums cannot see)."""
    manifest = json.loads((path / "manifest.json").read_text())
    for rel in manifest["files"]:
        data = (path / rel).read_bytes()
        manifest["files"][rel] = {"size": len(data), "sha256": checkpoint.hashlib.sha256(data).hexdigest()}
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_trainer_state_round_trip(tmp_path):
    ema = {"fc.weight": torch.randn(3, 2)}
    state = TrainerState(
        config={"run": {"dir": "x"}}, world_size=4, iteration=12, images_consumed=96, best_score=1.5, ema=ema
    )
    path = make(tmp_path, 12, state)
    assert verify(path) is None
    loaded = read_trainer_state(path)
    assert torch.equal(loaded.ema["fc.weight"], ema["fc.weight"])
    assert dataclasses.replace(loaded, ema=None) == dataclasses.replace(state, ema=None)
    assert TrainerState(config={}, world_size=1).best_score == math.inf
    assert (tmp_path / "checkpoints" / "latest").read_text() == "step-00000012"


@pytest.mark.parametrize(
    "manifest",
    ["[1, 2]", '{"files": []}', '{"files": {"trainer.pt": 3}}', '{"files": {"trainer.pt": {"size": "x"}}}', "{}"],
)
def test_manifest_of_the_wrong_shape_is_corrupt(tmp_path, manifest):
    path = make(tmp_path, 4)
    (path / "manifest.json").write_text(manifest)
    assert verify(path) == "manifest is not a dsgan manifest (no files with sizes and checksums)"


def test_manifest_naming_a_file_outside_is_refused(tmp_path):
    path = make(tmp_path, 4)
    (tmp_path / "outside").write_text("x")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["../../outside"] = {"size": 1, "sha256": "0"}
    (path / "manifest.json").write_text(json.dumps(manifest))
    assert "outside the checkpoint" in verify(path)


def test_unreadable_trainer_state_with_a_matching_checksum_is_corrupt(tmp_path):
    path = make(tmp_path, 4)
    (path / TRAINER).write_bytes(b"not a torch file")
    reseal(path)
    assert "cannot read a trainer state" in verify(path)


class Payload:
    """Unpickling this would run code (`__reduce__`); weights_only loading must refuse it instead."""

    def __reduce__(self):
        return (Path("/tmp/dsgan-unpickled").write_text, ("ran",))


def test_trainer_state_is_never_unpickled(tmp_path):
    marker = Path("/tmp/dsgan-unpickled")
    marker.unlink(missing_ok=True)
    path = make(tmp_path, 4)
    torch.save({**dataclasses.asdict(read_trainer_state(path)), "wandb_run_id": Payload()}, path / TRAINER)
    reseal(path)
    assert "cannot read a trainer state" in verify(path)
    assert not marker.exists()


def test_unknown_trainer_state_fields_are_refused(tmp_path):
    path = make(tmp_path, 4)
    torch.save({**dataclasses.asdict(read_trainer_state(path)), "samples_consumed": 8}, path / TRAINER)
    reseal(path)
    assert "samples_consumed" in verify(path)


def test_corrupt_newest_is_set_aside_once_an_older_one_verifies(tmp_path):
    make(tmp_path, 4)
    newest = make(tmp_path, 8)
    (newest / TRAINER).write_bytes(b"")
    assert find_resumable(tmp_path) == tmp_path / "checkpoints" / "step-00000004"
    assert newest.is_dir()  # only looked at
    assert find_resumable(tmp_path, set_aside=True) == tmp_path / "checkpoints" / "step-00000004"
    assert not newest.exists() and newest.with_name("step-00000008.corrupt").is_dir()


def test_every_checkpoint_corrupt_is_an_error_not_a_fresh_start(tmp_path):
    for it in (4, 8):
        (make(tmp_path, it) / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match=r"no checkpoint verifies \(step-00000008: no manifest.*step-00000004"):
        find_resumable(tmp_path, set_aside=True)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == ["step-00000004", "step-00000008"]
    assert find_resumable(tmp_path) is None  # sampling and evaluation: "no complete checkpoint"


def test_checkpoint_written_on_a_gpu_loads_on_a_cpu_only_machine(tmp_path, monkeypatch):
    """A GPU run's trainer.pt (the EMA) and DeepSpeed model file hold tensors tagged cuda:0. Files tagged so are
    written here by torch.save itself, with a serialization tagger that names every CPU storage cuda:0."""
    cfg = load_config(REPO / "configs" / "tiny_cpu.yaml", ["ema.momentum=0.5"])
    torch.manual_seed(0)
    generator = build_generator(cfg.generator.model)
    ema = EMA(generator, cfg.ema)
    with torch.no_grad():
        for p in ema.module.parameters():
            p.add_(1.0)  # the EMA differs from G, so that each load is seen to read its own file
    state = TrainerState(config=cfg.model_dump(mode="json"), world_size=1, iteration=8, ema=ema.state_dict())
    monkeypatch.setattr(torch.serialization, "_package_registry", list(torch.serialization._package_registry))
    torch.serialization.register_package(0, lambda storage: "cuda:0", lambda storage, location: None)
    path = make(tmp_path, 8, state)
    torch.save({"module": generator.state_dict()}, path / "generator" / "mp_rank_00_model_states.pt")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["generator/mp_rank_00_model_states.pt"] = {}
    (path / "manifest.json").write_text(json.dumps(manifest))
    reseal(path)
    monkeypatch.undo()
    if not torch.cuda.is_available():  # the files are as a GPU run leaves them: unreadable without map_location
        with pytest.raises(RuntimeError, match="on a CUDA device"):
            torch.load(path / TRAINER, weights_only=True)
    assert verify(path) is None
    for use_ema, expected in ((True, ema.module), (False, generator)):
        loaded, _, iteration = load_generator(tmp_path, use_ema=use_ema)
        assert iteration == 8
        for name, value in loaded.state_dict().items():
            assert value.device.type == "cpu"
            assert torch.equal(value, expected.state_dict()[name].float()), name


@pytest.mark.gpu
def test_rng_state_is_this_rank_s_gpu_only():
    """One GPU's state (the current device's), restored onto the current device: a resume that sees fewer GPUs per
    process than the run that saved (srun binding one per task after the deepspeed launcher) still loads it."""
    state = checkpoint._rng_state()
    assert isinstance(state["cuda"], torch.Tensor)
    expected = torch.randn(4, device="cuda")
    checkpoint._set_rng_state(state)
    assert torch.equal(torch.randn(4, device="cuda"), expected)


def test_a_saved_config_that_no_longer_validates_is_named_not_a_traceback(tmp_path):
    """`dsgan sample`/`eval` on a checkpoint whose saved config this dsgan refuses (an older schema): exit 5 naming
    the field."""
    cfg = load_config(REPO / "configs" / "tiny_cpu.yaml").model_dump(mode="json")
    cfg["run"]["renamed_field"] = 1
    make(tmp_path, 8, TrainerState(config=cfg, world_size=1, iteration=8))
    with pytest.raises(CheckpointError, match=r"trainer.pt \(its config\): run.renamed_field: unknown key") as info:
        load_generator(tmp_path)
    assert info.value.exit_code == 5
