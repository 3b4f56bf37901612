"""``python -m experiments CONFIG.yaml [--features DIR] [--workers N]``: see experiments/run.py."""

from components.runtime.files import exit_on_error
from experiments.run import main

exit_on_error(main)
