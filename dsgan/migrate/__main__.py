import sys

from dsgan.migrate.command import main_migrate

sys.exit(main_migrate())
