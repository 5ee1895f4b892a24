"""Errors that end a run, each with the process exit code that the launchers and SLURM scripts rely on."""

import errno

EXIT_OK = 0
EXIT_CONFIG = 2  # bad config, bad data path, bad command line: fix the input, do not retry
EXIT_NONFINITE = 3  # NaN/inf loss in fp32/bf16; the last good checkpoint is intact
EXIT_RANK_MISMATCH = 4  # ranks disagree on the schedule; nothing was stepped past the disagreement
EXIT_CHECKPOINT = 5  # no loadable checkpoint where one was required
EXIT_COLLECTIVE = 6  # a collective failed or timed out: another rank died or stopped taking part
EXIT_RUN_DIR_BUSY = 7  # another job is training in this run directory; nothing was written
EXIT_CHECKPOINT_WRITE = 8  # a checkpoint or another file could not be written (disk full...); none left partial
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: a signal asked us to stop; a checkpoint was saved; requeue and rerun to resume
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's code: a second Ctrl-C stopped at once, with no new checkpoint


class DsganError(Exception):
    """An error with a message meant for the user (no traceback) and an exit code."""

    exit_code = 1


class ConfigError(DsganError):
    exit_code = EXIT_CONFIG


class DataError(DsganError):
    exit_code = EXIT_CONFIG


class NonFiniteLossError(DsganError):
    exit_code = EXIT_NONFINITE


class RankDisagreementError(DsganError):
    exit_code = EXIT_RANK_MISMATCH


class CheckpointError(DsganError):
    exit_code = EXIT_CHECKPOINT


class CheckpointWriteError(DsganError):
    exit_code = EXIT_CHECKPOINT_WRITE


class CollectiveError(DsganError):
    exit_code = EXIT_COLLECTIVE


class RunDirBusyError(DsganError):
    exit_code = EXIT_RUN_DIR_BUSY


def short_reason(exc: BaseException) -> str:
    """An exception's first sentence, for a one-line message: torch.load's errors run to a dozen lines of advice
    (weights_only, GitHub issues) after the sentence that says what was wrong with the file."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text.split(". ")[0][:200]


def _without_worker_traceback(message: str) -> str:
    """torch's DataLoader re-raises an error of a worker process as the same type, with the worker's traceback as its
    message; the traceback's last line (`dsgan.errors.DataError: <message>`) is the error itself."""
    if "Original Traceback" not in message:
        return message
    return message.strip().splitlines()[-1].split(": ", 1)[-1]


def user_error(exc: BaseException, rank: int = 0, world_size: int = 1) -> tuple[int, str] | None:
    """The exit code and one-line message for an exception that ends a run or a command because of its input or
    its surroundings (a bad config, a dead rank, a diverged fp16 run); None for anything else: a bug, whose
    traceback is wanted. The one mapping used by `dsgan train`, the other subcommands and `dsgan migrate`."""
    if isinstance(exc, DsganError):
        return exc.exit_code, _without_worker_traceback(str(exc))
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        # A sample grid, the metrics log, a cache: every write is whole or absent (dsgan.atomic), and a torn last
        # metrics line is dropped on resume, so nothing needs repair. (Checkpoints say more: CheckpointWriteError.)
        where = f" writing {exc.filename}" if exc.filename else ""
        return EXIT_CHECKPOINT_WRITE, (
            f"{exc.strerror or 'disk full'}{where}: no file was left half-written and the last complete checkpoint "
            "is intact; free space and rerun the same command to resume"
        )
    from dsgan.distributed import is_collective_failure

    if world_size > 1 and is_collective_failure(exc):
        return EXIT_COLLECTIVE, (
            f"a collective failed on rank {rank} ({str(exc).strip().splitlines()[-1][:300]}). Another rank died or "
            "stopped taking part (its log has the first error), or none answered within "
            "run.collective_timeout_seconds. The last complete checkpoint is intact: rerun the same command to resume."
        )
    if "loss scale already at minimum" in str(exc):  # DeepSpeed raises a bare Exception when fp16 training collapses
        return EXIT_NONFINITE, (
            f"fp16 training diverged: the loss scaler overflowed at its minimum scale ({exc}). Lower the learning "
            "rates, enable gradient_clipping, or use bf16; the last checkpoint is intact."
        )
    return None
