"""Errors that end a run, each with the process exit code that the launchers and SLURM scripts rely on."""

EXIT_OK = 0
EXIT_CONFIG = 2  # bad config, bad data path, bad command line: fix the input, do not retry
EXIT_NONFINITE = 3  # NaN/inf loss in fp32/bf16; the last good checkpoint is intact
EXIT_RANK_MISMATCH = 4  # ranks disagree on the schedule; nothing was stepped past the disagreement
EXIT_CHECKPOINT = 5  # no loadable checkpoint where one was required
EXIT_COLLECTIVE = 6  # a collective failed or timed out: another rank died or stopped taking part
EXIT_RUN_DIR_BUSY = 7  # another job is training in this run directory; nothing was written
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: a signal asked us to stop; a checkpoint was saved; requeue and rerun to resume


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


class RunDirBusyError(DsganError):
    exit_code = EXIT_RUN_DIR_BUSY
