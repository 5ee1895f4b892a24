"""The real entry point on prepared data: a packed dataset (made by `dsgan prepare-data` from an NVlabs zip) with
`data.xflip`, stopped mid-epoch and resumed, ends bit-identical to an uninterrupted run (1 and 2 ranks); damaged or
unlabelled data ends the run with exit 2 before anything starts. And a `prepare-data` process killed by SIGKILL
continues, rerun, to the files of an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from images import dataset_tool_zip, noise_folder
from launch import REPO
from PIL import Image
from runs import MID_CYCLE, assert_identical, final_state, ok, train

from dsgan import prepare as prepare_module
from dsgan.cli import main as cli_main
from dsgan.data import IMAGES_FILE, LABELS_FILE, MANIFEST_FILE
from dsgan.errors import EXIT_CONFIG
from dsgan.prepare import PROGRESS_FILE, prepare


# Measured on 2 shared, heavily loaded cores: 1 rank 42 s; 2 ranks 87 s, so `slow`.
@pytest.mark.parametrize("world", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_xflip_run_stopped_mid_epoch_resumes_bit_exact(tmp_path, world):
    # 12 images; 8 per rank per iteration: the stop at iteration 10 is at stream position 80 (1 rank) or 160
    # (2 ranks), inside the 7th or 14th epoch, and each epoch draws new flips.
    zipped = dataset_tool_zip(noise_folder(tmp_path / "src", per_class=6), tmp_path / "d.zip")
    assert (
        cli_main(["prepare-data", str(zipped), str(tmp_path / "packed"), "--resolution", "16", "--workers", "1"]) == 0
    )
    sets = [
        *MID_CYCLE,
        "data.type=packed",
        f"data.root={tmp_path / 'packed'}",
        "data.xflip=true",
        "data.num_workers=1",
        "generator.model.num_classes=2",
        "discriminator.model.num_classes=2",
    ]
    straight, split = tmp_path / "straight", tmp_path / "split"
    ok(train(straight, world, *sets, "run.total_iters=16"))
    ok(train(split, world, *sets, "run.total_iters=10"))  # 10 = 2.5 D/G cycles, mid-epoch
    out = ok(train(split, world, *sets, "run.total_iters=16"))
    assert "resumed from" in out and "step-00000010" in out and "packed dataset" in out
    assert_identical(final_state(straight), final_state(split))


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("damaged", "data.root={}/packed: images.uint8 does not match the manifest's sha256"),
        ("unlabelled", "data.path={}/d.zip: no labels (a dataset.json with 'labels'"),
    ],
)
def test_damaged_or_unlabelled_data_is_exit_2_before_anything_starts(tmp_path, kind, message):
    """A packed dataset whose bytes changed; a zip without dataset.json for the (conditional) tiny config. The run
    dir is never created: the data is checked before it, the process group and the engines."""
    src = noise_folder(tmp_path / "src")
    if kind == "damaged":
        prepare_args = [str(src), str(tmp_path / "packed"), "--resolution", "16", "--workers", "1"]
        assert cli_main(["prepare-data", *prepare_args]) == 0
        with open(tmp_path / "packed" / IMAGES_FILE, "r+b") as f:
            f.write(b"\x00")  # same size, different bytes
        sets = ["data.type=packed", f"data.root={tmp_path / 'packed'}"]
    else:
        sets = ["data.type=nvlabs_zip", f"data.path={dataset_tool_zip(src, tmp_path / 'd.zip', dataset_json=False)}"]
    sets += ["generator.model.num_classes=2", "discriminator.model.num_classes=2"]
    out = ok(train(tmp_path / "run", 1, *sets), EXIT_CONFIG)
    assert message.format(tmp_path) in out and "Traceback" not in out
    assert not (tmp_path / "run").exists()


def test_prepare_data_killed_by_sigkill_then_rerun_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    """A process packing 40 noise JPEGs of 400x400 from a dataset_tool zip in chunks of 2 images is killed after its
    third chunk, wherever it is then (between chunks or inside a write); the same preparation rerun (here in the
    test's process) then gives the files of an uninterrupted one."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(tmp_path / "d.zip", "w") as archive:
        for i in range(40):
            path = tmp_path / "image.jpg"
            Image.fromarray(rng.integers(0, 256, (400, 400, 3), dtype=np.uint8)).save(path, quality=95)
            archive.write(path, f"00000/img{i:08d}.jpg")
    code = (
        "import sys; from pathlib import Path; from dsgan import prepare as p; p.CHUNK_IMAGES = 2; "
        "p.prepare(Path(sys.argv[1]), Path(sys.argv[2]), 8, workers=1)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-c", code, str(tmp_path / "d.zip"), str(tmp_path / "killed")]
    proc = subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL)
    progress = tmp_path / "killed" / PROGRESS_FILE
    deadline = time.monotonic() + 120
    while not (progress.exists() and json.loads(progress.read_text())["chunks"] >= 3) and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(60) == -signal.SIGKILL, "it finished before the kill: give it more images"
    assert not (tmp_path / "killed" / MANIFEST_FILE).exists()  # unfinished, and it says so
    monkeypatch.setattr(prepare_module, "CHUNK_IMAGES", 2)
    prepare(tmp_path / "d.zip", tmp_path / "killed", 8)
    prepare(tmp_path / "d.zip", tmp_path / "whole", 8)
    for name in (IMAGES_FILE, LABELS_FILE, MANIFEST_FILE):
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
