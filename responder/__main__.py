"""``python -m responder``."""

import logging
import os
import sys

from responder.cli import main

code = main()
# duckdb 2.0's nanobind bindings print dozens of "leaked instance" lines when the interpreter tears
# down after a run that used many connections (the demo). All work is done and every resource the
# commands opened is closed by now, so flush and leave without the teardown.
logging.shutdown()
sys.stdout.flush()
sys.stderr.flush()
os._exit(code if isinstance(code, int) else 1)
