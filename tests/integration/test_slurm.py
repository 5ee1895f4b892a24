"""The slurm/ scripts on a real two-node SLURM cluster started on this machine (slurm/local-cluster.sh).

The first tests run the sbatch scripts with a stand-in for python that records its environment and plays the
trainer's signal contract (SIGUSR1/SIGTERM -> exit 75), so that the environment, requeue and failure paths are
checked in seconds; the last ones train configs/tiny_cpu.yaml for real.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from launch import REPO

from dsgan.errors import EXIT_CONFIG, EXIT_PREEMPTED

pytestmark = pytest.mark.slurm

CLUSTER = REPO / "slurm" / "local-cluster.sh"
TRAIN = REPO / "slurm" / "train.sbatch"
TRAIN_DS = REPO / "slurm" / "train-deepspeed.sbatch"
TINY = REPO / "configs" / "tiny_cpu.yaml"
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
# Two nodes, one task each; the nodes have no GPUs.
TWO_NODES = ["--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=0"]


@pytest.fixture(scope="module")
def cluster():
    """Start the local cluster unless it is up; stop it afterwards if this fixture started it."""
    if shutil.which("sbatch") is None and os.geteuid() != 0:
        pytest.skip("SLURM packages are not installed and installing them needs root (slurm/local-cluster.sh)")
    if shutil.which("sbatch") is None and shutil.which("apt-get") is None:
        pytest.skip("SLURM packages are not installed and there is no apt-get to install them")
    was_up = subprocess.run([CLUSTER, "status"], capture_output=True).returncode == 0
    proc = subprocess.run([CLUSTER, "start"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    conf = proc.stdout.strip().splitlines()[-1].removeprefix("export SLURM_CONF=")
    # The venv first on PATH, as after `source .venv/bin/activate`: the jobs' python, deepspeed and ninja (a
    # different ninja would rebuild DeepSpeed's JIT ops, about 30 s each time).
    env = {**os.environ, "SLURM_CONF": conf, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    yield env
    if not was_up:
        subprocess.run([CLUSTER, "stop"], capture_output=True, timeout=120)


def submit(env: dict, script: Path, out: Path, *options: str, args: tuple = (), extra_env: dict | None = None) -> str:
    proc = subprocess.run(
        ["sbatch", "--parsable", f"--output={out}/slurm-%j.out", *options, str(script), *args],
        env={**env, **(extra_env or {})},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def job(env: dict, job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], env=env, capture_output=True, text=True).stdout
    return dict(field.split("=", 1) for field in out.split() if "=" in field)


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_ended(env: dict, job_id: str, timeout: float) -> dict[str, str]:
    return wait_for(lambda: (j := job(env, job_id)).get("JobState") in ENDED and j, timeout, f"job {job_id} to end")


def wait_requeued(env: dict, job_id: str, timeout: float) -> dict[str, str]:
    """Wait until the job is pending again after a requeue, then lift SLURM's ~2 minute BeginTime delay.

    Not at once: slurmd revokes the old start's credential, with a resolution of one second, and refuses a new one
    issued in that same second ("Killing non-startable batch job: Job credential revoked", the job FAILED). SLURM's
    own delay is what avoids that outside tests."""
    info = wait_for(
        lambda: (j := job(env, job_id)).get("JobState") == "PENDING" and j.get("Restarts") == "1" and j,
        timeout,
        f"job {job_id} to be requeued",
    )
    time.sleep(2)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], env=env, check=True)
    return info


def log(out: Path, job_id: str) -> str:
    return (out / f"slurm-{job_id}.out").read_text()


# --- the sbatch scripts with a stand-in for python ---

STAND_IN = '''#!{python}
"""Stands in for `python -m dsgan.train`: records its environment, runs STANDIN_SECONDS (first start only) and exits
STANDIN_EXIT. On SIGUSR1/SIGTERM it "saves a checkpoint" and exits 75 as the trainer does; the save is collective, so
it is a barrier through files here, which fails (exit 1) when a rank has died."""
import json, os, signal, sys, time

info = {{k: os.environ.get(k) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                                     "SLURMD_NODENAME", "SLURM_RESTART_COUNT")}}
info.update(argv=sys.argv[1:], pid=os.getpid())
restart = int(info["SLURM_RESTART_COUNT"] or 0)
stop = []
def handler(signum, frame):
    print(f"rank {{info['RANK']}} got {{signal.Signals(signum).name}}", flush=True)
    stop.append(signum)
signal.signal(signal.SIGUSR1, handler)
signal.signal(signal.SIGTERM, handler)
def path(kind, rank):
    return os.path.join(os.environ["STANDIN_DIR"], f"{{kind}}{{rank}}-restart{{restart}}")
with open(path("rank", info["RANK"]) + ".tmp", "w") as f:
    json.dump(info, f)
os.rename(path("rank", info["RANK"]) + ".tmp", path("rank", info["RANK"]) + ".json")
end = time.monotonic() + (float(os.environ.get("STANDIN_SECONDS", "0")) if restart == 0 else 0)
while time.monotonic() < end and not stop:
    time.sleep(0.05)
if not stop:
    sys.exit(int(os.environ.get("STANDIN_EXIT", "0")))
open(path("saved", info["RANK"]), "w").close()
peers = [json.load(open(path("rank", r) + ".json"))["pid"] for r in range(int(info["WORLD_SIZE"]))]
while True:
    saved = [os.path.exists(path("saved", r)) for r in range(len(peers))]
    if all(saved):
        sys.exit({preempted})
    for pid, done in zip(peers, saved):
        if not done and not os.path.exists(f"/proc/{{pid}}"):
            sys.exit(1)  # a rank died before the checkpoint: the collective fails
    time.sleep(0.05)
'''


@pytest.fixture
def stand_in(tmp_path):
    """(PYTHON, STANDIN_DIR, a reader of what rank R recorded at restart N)."""
    path = tmp_path / "python"
    path.write_text(STAND_IN.format(python=sys.executable, preempted=EXIT_PREEMPTED))
    path.chmod(0o755)
    (tmp_path / "ranks").mkdir()

    def recorded(rank: int, restart: int = 0) -> dict | None:
        f = tmp_path / "ranks" / f"rank{rank}-restart{restart}.json"
        return json.loads(f.read_text()) if f.exists() else None

    return {"PYTHON": str(path), "STANDIN_DIR": str(tmp_path / "ranks")}, recorded


def start_stand_in(cluster: dict, stand_in, out: Path, *options: str, seconds: int) -> str:
    """slurm/train.sbatch on two nodes with the stand-in running `seconds`; returns once both ranks run."""
    standin_env, recorded = stand_in
    env = {**standin_env, "STANDIN_SECONDS": str(seconds)}
    job_id = submit(cluster, TRAIN, out, *TWO_NODES, *options, args=("--config", "x.yaml"), extra_env=env)
    wait_for(lambda: recorded(0) and recorded(1), 60, "both ranks to start")
    return job_id


def test_two_node_job_gives_each_rank_its_environment(cluster, stand_in, tmp_path):
    standin_env, recorded = stand_in
    extra = {**standin_env, "CONFIG": "configs/x.yaml", "RUN_DIR": "runs/x", "OVERRIDES": "a=1  b.c=x"}
    job_id = submit(cluster, TRAIN, tmp_path, *TWO_NODES, args=("--set", "d=[1, 2]"), extra_env=extra)
    info = wait_ended(cluster, job_id, 60)
    assert info["JobState"] == "COMPLETED", log(tmp_path, job_id)
    ranks = [recorded(0), recorded(1)]
    assert [r["SLURMD_NODENAME"] for r in ranks] == ["n1", "n2"]
    expected_argv = ["-m", "dsgan.train", "--config", "configs/x.yaml", "--run-dir", "runs/x"]
    expected_argv += ["--set", "a=1", "--set", "b.c=x", "--set", "d=[1, 2]"]
    for rank, r in enumerate(ranks):
        assert (r["RANK"], r["LOCAL_RANK"], r["WORLD_SIZE"], r["MASTER_ADDR"]) == (str(rank), "0", "2", "n1")
        assert r["argv"] == expected_argv
    assert ranks[0]["MASTER_PORT"] == ranks[1]["MASTER_PORT"]
    assert 20000 <= int(ranks[0]["MASTER_PORT"]) < 30000


def test_exit_status_of_the_tasks_is_the_jobs(cluster, stand_in, tmp_path):
    standin_env, _ = stand_in
    job_id = submit(
        cluster,
        TRAIN,
        tmp_path,
        *TWO_NODES,
        args=("--config", "x.yaml"),
        extra_env={**standin_env, "STANDIN_EXIT": "3"},
    )
    info = wait_ended(cluster, job_id, 60)
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("FAILED", "3:0", "0"), log(tmp_path, job_id)


def test_usr1_requeues_the_job_which_restarts_and_completes(cluster, stand_in, tmp_path):
    _, recorded = stand_in
    job_id = start_stand_in(cluster, stand_in, tmp_path, seconds=120)
    t0 = time.monotonic()
    subprocess.run(["scancel", "--signal=USR1", "--full", job_id], env=cluster, check=True)
    wait_requeued(cluster, job_id, 30)
    requeue_seconds = time.monotonic() - t0
    info = wait_ended(cluster, job_id, 60)
    out = log(tmp_path, job_id)
    assert (info["JobState"], info["Restarts"]) == ("COMPLETED", "1"), out
    assert requeue_seconds < 15
    for rank in (0, 1):
        assert recorded(rank, restart=1)["SLURM_RESTART_COUNT"] == "1"
        assert f"rank {rank} got SIGUSR1" in out
    # One log across both starts (--open-mode=append); the batch shell saw the signal too and survived it.
    assert "restart 0 on n[1-2]" in out and "restart 1 on n[1-2]" in out
    assert "batch shell got SIGUSR1" in out and "requeueing job" in out


def test_time_limit_warning_requeues(cluster, stand_in, tmp_path):
    """The shipped `--signal=USR1@90` with a 2 minute limit: SIGUSR1 reaches the tasks within about 30-60 s."""
    job_id = start_stand_in(cluster, stand_in, tmp_path, "--time=2", seconds=300)
    wait_requeued(cluster, job_id, 100)
    info = wait_ended(cluster, job_id, 60)
    out = log(tmp_path, job_id)
    assert (info["JobState"], info["Restarts"]) == ("COMPLETED", "1"), out
    assert "rank 0 got SIGUSR1" in out and "batch shell got" not in out  # the warning goes to the tasks only


def test_cancelled_job_is_not_requeued(cluster, stand_in, tmp_path):
    """A plain scancel sends SIGTERM too, and the tasks exit 75 after saving; the job must stay cancelled."""
    job_id = start_stand_in(cluster, stand_in, tmp_path, seconds=120)
    subprocess.run(["scancel", job_id], env=cluster, check=True)
    wait_ended(cluster, job_id, 60)
    time.sleep(2)  # a requeue would show now
    info = job(cluster, job_id)
    out = log(tmp_path, job_id)
    assert (info["JobState"], info["Restarts"]) == ("CANCELLED", "0"), out
    assert "rank 0 got SIGTERM" in out and "job cancelled, checkpoint saved" in out


def test_killed_rank_fails_the_job_promptly(cluster, stand_in, tmp_path):
    _, recorded = stand_in
    job_id = start_stand_in(cluster, stand_in, tmp_path, "--time=5", seconds=300)
    t0 = time.monotonic()
    os.kill(recorded(1)["pid"], signal.SIGKILL)  # the "node" is this machine
    info = wait_ended(cluster, job_id, 60)
    seconds = time.monotonic() - t0
    out = log(tmp_path, job_id)
    assert (info["JobState"], info["Restarts"]) == ("FAILED", "0"), out
    assert info["ExitCode"] == "137:0"  # 128 + SIGKILL, the first failure; the survivor failed to save (exit 1)
    assert "dsgan: a task was killed by SIGKILL" in out and "tasks exited with status 137" in out
    assert seconds < 15, f"the job took {seconds:.0f} s to fail"


# --- the real trainer ---


def checkpoint_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the newest checkpoint (dsgan/checkpoint.py: both engines' DeepSpeed files and trainer.pt);
    the per-rank RNG files are left out."""
    root = run_dir / "checkpoints"
    step = root / (root / "latest").read_text().strip()
    tensors: dict[str, torch.Tensor] = {}

    def walk(prefix: str, obj: object) -> None:
        if isinstance(obj, torch.Tensor):
            tensors[prefix] = obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}/{k}", v)
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(f"{prefix}/{i}", v)

    for f in sorted(step.rglob("*.pt")):
        if not f.name.startswith("rng-"):
            walk(str(f.relative_to(step)), torch.load(f, map_location="cpu", weights_only=False))
    return tensors


def train_job(cluster: dict, out: Path, run_dir: Path, *sets: str, script: Path = TRAIN) -> str:
    args = ["--config", str(TINY), "--run-dir", str(run_dir)]
    for s in sets:
        args += ["--set", s]
    return submit(cluster, script, out, *TWO_NODES, args=tuple(args))


@pytest.mark.parametrize("script", [TRAIN, TRAIN_DS], ids=["srun", "deepspeed"])
def test_tiny_config_trains_to_the_end_across_two_nodes(cluster, tmp_path, script):
    job_id = train_job(cluster, tmp_path, tmp_path / "run", script=script)
    info = wait_ended(cluster, job_id, 300)
    out = log(tmp_path, job_id)
    assert info["JobState"] == "COMPLETED", out
    assert "2 rank(s)" in out and "done: 24 iterations" in out
    assert (tmp_path / "run" / "checkpoints" / "step-00000024" / "manifest.json").is_file()


def test_bad_config_fails_the_job_with_the_trainers_status(cluster, tmp_path):
    job_id = train_job(cluster, tmp_path, tmp_path / "run", "run.no_such_field=1")
    info = wait_ended(cluster, job_id, 300)
    out = log(tmp_path, job_id)
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("FAILED", f"{EXIT_CONFIG}:0", "0"), out
    assert "no_such_field" in out


# Long enough to be signalled mid-run (5-10 s), no periodic checkpoints: the resume point is the one the signal
# saved. A 4-iteration D/G cycle with accumulation puts that point inside a cycle.
LONG = (
    "run.total_iters=1200",
    "checkpoint.every_iters=null",
    "run.log_every_iters=2",
    "run.sample_every_iters=null",
    "schedule.discriminator_steps=2",
    "discriminator.deepspeed.gradient_accumulation_steps=2",
    "generator.deepspeed.gradient_accumulation_steps=2",
)


@pytest.fixture(scope="module")
def uninterrupted(cluster, tmp_path_factory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("uninterrupted")
    job_id = train_job(cluster, out, out / "run", *LONG)
    assert wait_ended(cluster, job_id, 300)["JobState"] == "COMPLETED", log(out, job_id)
    return checkpoint_tensors(out / "run")


@pytest.mark.parametrize("script", [TRAIN, TRAIN_DS], ids=["srun", "deepspeed"])
def test_preempted_requeued_run_ends_identical_to_uninterrupted(cluster, uninterrupted, tmp_path, script):
    split = tmp_path / "split"
    job_id = train_job(cluster, tmp_path, split, *LONG, script=script)
    metrics = split / "metrics.jsonl"
    wait_for(lambda: metrics.is_file() and metrics.stat().st_size > 0, 300, "training to start")
    subprocess.run(["scancel", "--signal=USR1", "--full", job_id], env=cluster, check=True)
    wait_requeued(cluster, job_id, 120)
    saved = (split / "checkpoints" / "latest").read_text().strip()
    info = wait_ended(cluster, job_id, 300)
    out = log(tmp_path, job_id)
    assert (info["JobState"], info["Restarts"]) == ("COMPLETED", "1"), out
    assert saved != "step-00001200", "the signal came too late to stop the run mid-way"
    assert "stopped by a signal" in out and "resumed from" in out and saved in out

    a, b = uninterrupted, checkpoint_tensors(split)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:5]}"


@pytest.mark.parametrize("script", [TRAIN, TRAIN_DS], ids=["srun", "deepspeed"])
def test_scripts_requeue_on_the_trainers_preempted_status(script):
    assert f"rc == {EXIT_PREEMPTED}" in script.read_text()  # the scripts spell dsgan.errors.EXIT_PREEMPTED out
