"""`dsgan migrate`: convert MMGeneration 0.x and MMagic (MMGeneration 1.x) GAN configs into dsgan run configs.

Configs are read without being executed (see `source.py`), converted with the step-counting rules of the two versions
(README, Migrating), validated with `dsgan.config.load_config`, and every source key is accounted for in a report.
With `--checkpoint`, trained weights come along (`weights.py`, `layouts.py`; README, Bringing trained weights over).
"""

from dsgan.migrate.command import add_migrate_arguments, main_migrate, run_migrate
from dsgan.migrate.convert import Migration, migrate

__all__ = ["Migration", "add_migrate_arguments", "main_migrate", "migrate", "run_migrate"]
