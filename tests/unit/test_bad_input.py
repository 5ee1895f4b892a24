"""Bad input and faults as a new user meets them, beyond the schema catalogue of test_config.py. Each case was run
for real (`dsgan ...` on the tiny config); the ones that ended in a traceback, a misleading message or silent
misbehaviour were fixed in their mechanism and are tested here or where the mechanism lives.

Outcomes: "was" is the behaviour before the fix; the exit code follows in brackets; where: the test that holds
it (here, test_config CASES, test_packed, test_checkpoint, integration/test_faults), or "as found" when it
already ended well.

Config files and --set
- DeepSpeed JSON that is a list, a string, null / empty: "must be a mapping" / "cannot parse" [2], as found.
- YAML or JSON with a key given twice, in a file or a --set value: was the last one silently winning; now
  "the key 'run' is given twice (line 5, column 1)" [2], test_config. TOML refuses it itself [2], as found.
- PyYAML's four-line errors: now one line with line and column [2], test_config.
- Run config that is a list or a scalar: "must be a mapping at the top level" [2], as found.
- --config naming a directory: was "file not found"; now "is a directory" [2], test_config.
- --config naming a checkpoint's trainer.pt: "not a text file (not UTF-8 at byte 64)" [2], as found.
- `~` in a path value (run.dir, data.root, ...): was a folder named `~` in the working directory; now the home
  directory. A zip's relative data.path: was relative to the working directory, unlike data.root; now to the
  config file. Here.
- A UTF-8 byte-order mark, an upper-case .YAML: was "cannot parse" / "unknown config format"; now read. Here.
- A learning rate of .inf: was accepted; .nan: was "should be greater than 0". Now every config float refuses
  both: "Input should be a finite number" [2], test_config.
- `keep_last: yes`, `total_iters: true`, a learning rate of true: was read as 1 (pydantic takes a boolean for a
  number, and YAML reads yes/no/on/off as booleans); now refused in every config number [2], test_config.
- total_iters negative or 0, keep_last 0, log_every_iters 0, run.dir empty or null: the bound named [2], as found.
- --set foo=1 / run.total_iters.x=1 / =1: unknown key / "is not a section" / syntax [2], as found.
- --set an element of a list (optimizer.params.betas.0=0.5): was "betas is not a section"; now "betas is a list:
  set it whole" [2], test_config.
- tracking.wandb.mode misspelt: the choices named [2], as found. WANDB_MODE misspelt, or mode online without an
  API key: wandb's error as a warning (was several lines, now one) and training goes on (documented: wandb
  never stops a run), here.
- eval.num_samples 1 (also dsgan eval --num-samples 1): was a ValueError traceback; below the world size: was a
  traceback at the first evaluation, hours in. Now refused before start [2], test_config.

Data
- Run dir that is a file; data root that is a file; a folder without images: named [2], as found / test_data.
- An image deleted while training (data.num_workers > 0): was exit 2 with the worker's whole traceback as the
  message; now the error's own line, naming the file [2], test_data.
- Images directly in data.root beside the class folders: were left out without a word; now the start-up line
  says how many, test_data.
- Image folder with one class (or flat) for a 10-class model; flat folder, unconditional models,
  data.conditional left true: the counts or the rule named [2], as found.
- Packed manifest missing a key or of the wrong type: was a KeyError traceback; now "manifest.json is damaged"
  [2], test_packed.
- Packed labels out of range with verify=false: was an IndexError in G's embedding at whichever iteration drew
  the label (on a GPU a device-side assert); fewer labels than images: same. Now refused at start [2],
  test_packed.
- dsgan prepare-data with OUT the source folder or inside it: was done, its files among the images (an extra,
  empty class folder the next time); now refused [2], here.
- A 20000x20000 PNG (PIL's decompression-bomb limit), a truncated PNG: named at start-up [2], as found.
- data.type packed on an image folder; an NVlabs zip that is a folder or a text file: named [2], as found.

Checkpoints, sample, eval
- --resume a missing path, a file, an empty folder: was, after building both engines, "no manifest
  (incomplete write)"; now before start-up, said as it is [5], here and integration/test_faults.
- --resume a run dir or its checkpoints/: was "no manifest"; now says to name a step-N or leave out --resume
  [5], here.
- --resume a checkpoint of another architecture: every difference listed [2], as found.
- Rerunning with another run.seed in the same run dir (meant as a new experiment): was resumed silently, the
  epoch's data order changed mid-epoch; now listed among the differences that refuse a resume [2], here.
- dsgan sample/eval on an empty run dir: "no complete checkpoint" [5], as found; on a missing path or a file:
  was the same message; now "no such directory" / "not a directory" [5], here.
- dsgan sample --out an existing directory: was an IsADirectoryError traceback after sampling; now refused
  first [2], here.
- dsgan sample --out-dir a file, --classes 12 or -1, --num ten: named [2], as found. --out grid (no .png):
  writes a PNG under that name, as found. --num 100000000: runs, with memory growing with --num (noise is drawn
  up front so that images do not depend on --batch-size); not changed.
- Inception weights that are text or random bytes: was a dozen lines of torch's advice; now one line [2], here.
- dsgan sample/eval on a checkpoint whose saved config this version's schema refuses (a field renamed since):
  was a pydantic traceback; now the fields named [5], test_checkpoint.
- trainer.pt unreadable although its hash matches: one line naming the file [5 where required], here.
- A disk that fills up between checkpoints (a sample grid is the write that fails): was an OSError traceback
  (exit 1); now one line [8], every file being written whole or not at all, integration/test_faults.
- A GPU run's checkpoint on a CPU-only machine: was "cannot read a trainer state" (set aside as corrupt in
  training); now loads, test_checkpoint.

Signals and ranks
- SIGTERM during an evaluation: the evaluation finishes, then a checkpoint and exit 75, as found.
- Ctrl-C during start-up, before the handlers (imports): was a KeyboardInterrupt traceback; now "interrupted
  (Ctrl-C)" [130], integration/test_faults.
- Ctrl-C twice while training: was a traceback from wherever it landed; now one line, the last complete
  checkpoint kept [130], integration/test_faults.
- WORLD_SIZE larger than the ranks started: was "another rank died" after the timeout; now "only some of the N
  ranks joined" [6], with a "waiting for N ranks" line while it waits, integration/test_faults.
- WORLD_SIZE=two or 0, RANK=-1, RANK >= WORLD_SIZE (a wrapper script's mistake): was a ValueError traceback or
  DeepSpeed's MPI discovery failing; now the variable named [2], here.
- More processes on a node than GPUs it shows (found by reading; no GPU here): was LOCAL_RANK modulo the GPU
  count, two ranks on one GPU and NCCL's "Duplicate GPU detected"; now refused at start naming LOCAL_RANK and
  CUDA_VISIBLE_DEVICES [2], here (the mapping; the refusal in a gpu-marked test).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from dsgan.checkpoint import TRAINER, check_compatible, not_a_checkpoint, read_trainer_state
from dsgan.cli import main as cli_main
from dsgan.config import Wandb, load_config
from dsgan.distributed import DistEnv, cuda_device, detect, init
from dsgan.errors import EXIT_CHECKPOINT, EXIT_CONFIG, CheckpointError, ConfigError
from dsgan.eval.inception import load_inception
from dsgan.tracking import Tracker

REPO = Path(__file__).resolve().parents[2]


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = cli_main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_sample_out_naming_a_directory_is_refused_before_sampling(tmp_path, capsys):
    # The run dir is empty: the check comes before the checkpoint is even looked for.
    code, err = run_cli(capsys, "sample", "--run", str(tmp_path), "--out", str(tmp_path))
    assert code == EXIT_CONFIG
    assert (
        f"error: --out {tmp_path}: is a directory; name a file (e.g. {tmp_path / 'grid.png'}) or use --out-dir" in err
    )


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda p: p, "no such directory"),
        (lambda p: p.write_text("x") and p, "not a directory"),
        (lambda p: p.mkdir() or p, "not a checkpoint directory (no manifest.json)"),
        (lambda p: (p / "checkpoints").mkdir(parents=True) or p, "a run directory (or its checkpoints/), not a check"),
        (lambda p: (p / "checkpoints").mkdir(parents=True) or p / "checkpoints", "a run directory"),
    ],
    ids=["missing", "file", "empty-folder", "run-dir", "checkpoints-folder"],
)
def test_resume_path_that_is_no_checkpoint_is_said_as_it_is(tmp_path, make, problem):
    assert problem in not_a_checkpoint(make(tmp_path / "given"))


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_sample_and_eval_on_a_missing_path(tmp_path, capsys, command):
    out = ["--out", str(tmp_path / "g.png")] if command == "sample" else ["--digits"]
    code, err = run_cli(capsys, command, "--run", str(tmp_path / "nope"), *out)
    assert code == EXIT_CHECKPOINT and f"error: {tmp_path / 'nope'}: no such directory" in err
    code, err = run_cli(capsys, command, "--checkpoint", str(tmp_path / "g.png.txt"), *out)
    assert code == EXIT_CHECKPOINT and "no such directory" in err


@pytest.mark.parametrize("content", [b"run: {seed: 1}\n", bytes(range(256)) * 4, b""])
def test_unreadable_torch_files_are_named_in_one_line(tmp_path, content):
    """torch.load's own message runs to a dozen lines of advice about weights_only; the user gets its first."""
    (tmp_path / "weights.pth").write_bytes(content)
    with pytest.raises(ConfigError) as weights:
        load_inception(tmp_path / "weights.pth")
    (tmp_path / TRAINER).write_bytes(content)
    with pytest.raises(CheckpointError) as state:
        read_trainer_state(tmp_path)
    for message in (str(weights.value), str(state.value)):
        assert "\n" not in message and len(message) < 400, message
    assert "is not a readable torch state dict (" in str(weights.value)
    assert f"{tmp_path / TRAINER}: cannot read a trainer state: " in str(state.value)


def test_each_local_rank_gets_its_own_gpu_or_is_refused():
    """One GPU visible (a launcher that binds one per task): that one. Several: the LOCAL_RANK-th, which `init`
    refuses past the last one, instead of wrapping around onto a GPU that another rank already uses."""
    assert [cuda_device(r, 1).index for r in range(4)] == [0, 0, 0, 0]
    assert [cuda_device(r, 4).index for r in range(4)] == [0, 1, 2, 3]
    assert cuda_device(5, 4).index == 5


def test_home_in_config_paths_is_expanded_and_relative_data_paths_follow_the_config(tmp_path, monkeypatch):
    """`~` in a YAML value: was a folder literally named `~` in the working directory. A zip's `data.path` was
    relative to the working directory while `data.root` was relative to the config file."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    text = (REPO / "configs" / "tiny_cpu.yaml").read_text().replace("dir: runs/tiny", "dir: ~/runs/x")
    (tmp_path / "a.yaml").write_text(text.replace("data: {type: digits}", "data: {type: image_folder, root: ~/d}"))
    cfg = load_config(tmp_path / "a.yaml", ["eval.reference_stats=~/ref.npz"])
    assert cfg.run.dir == tmp_path / "home" / "runs" / "x" and cfg.data.root == tmp_path / "home" / "d"
    assert cfg.eval.reference_stats == tmp_path / "home" / "ref.npz"
    (tmp_path / "b.yaml").write_text(text.replace("data: {type: digits}", "data: {type: nvlabs_zip, path: ffhq.zip}"))
    assert load_config(tmp_path / "b.yaml").data.path == tmp_path / "ffhq.zip"


def test_byte_order_mark_and_upper_case_extension_are_read(tmp_path):
    text = (REPO / "configs" / "tiny_cpu.yaml").read_text()
    (tmp_path / "RUN.YAML").write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert load_config(tmp_path / "RUN.YAML").run.total_iters == 24


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' in the environment: expected an integer >= 1"),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE='0' in the environment: expected an integer >= 1"),
        ({"RANK": "-1"}, "RANK='-1' in the environment: expected an integer >= 0"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 with WORLD_SIZE=2: ranks count from 0"),
    ],
)
def test_launcher_variables_that_make_no_sense_are_named(monkeypatch, variables, message):
    """Was a ValueError traceback (or DeepSpeed's MPI discovery failing on WORLD_SIZE=0)."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=re.escape(message)):
        detect()


def test_misspelt_wandb_mode_is_a_one_line_warning_and_the_local_log_goes_on(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_MODE", "onlin")
    tracker = Tracker(Wandb(mode="disabled"), tmp_path, {}, is_main=True)
    tracker.log({"d_loss": 1.0}, 1)
    tracker.close()
    (warning,) = [r.getMessage() for r in caplog.records if "wandb disabled" in r.getMessage()]
    assert "\n" not in warning and "'onlin'" in warning, warning
    assert (tmp_path / "metrics.jsonl").read_text().count("d_loss") == 1


@pytest.mark.parametrize("inside", [".", "packed"])
def test_prepare_data_into_its_own_source_is_refused(tmp_path, capsys, inside):
    (tmp_path / "src" / "cls").mkdir(parents=True)
    code, err = run_cli(
        capsys, "prepare-data", str(tmp_path / "src"), str(tmp_path / "src" / inside), "--resolution", "8"
    )
    assert code == EXIT_CONFIG and "is inside SRC" in err and "choose an OUT outside the image folder" in err
    assert sorted(p.name for p in (tmp_path / "src").rglob("*")) == ["cls"]  # nothing written


@pytest.mark.gpu
def test_local_rank_past_the_visible_gpus_is_refused_before_the_process_group():
    visible = torch.cuda.device_count()
    env = DistEnv(rank=0, local_rank=visible, world_size=1, device=torch.device("cuda", visible))
    with pytest.raises(ConfigError, match=f"LOCAL_RANK={visible} but this node shows {visible} GPUs"):
        init(env, timeout_seconds=5)
    assert not torch.distributed.is_initialized()


def test_another_seed_does_not_resume_a_run(tmp_path):
    cfg = load_config(REPO / "configs" / "tiny_cpu.yaml")
    saved = cfg.model_dump(mode="json")
    check_compatible(saved, cfg, saved_world=1, world_size=1)
    with pytest.raises(ConfigError, match="run.seed: checkpoint has 0, config has 1"):
        check_compatible(saved, load_config(REPO / "configs" / "tiny_cpu.yaml", ["run.seed=1"]), 1, 1)
