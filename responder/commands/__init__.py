"""Sub-commands of ``python -m responder`` (see responder/cli.py) and what they share."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from detections.backends.base import TableError
from detections.catalog import RuleError
from detections.params import ParamError
from remediation.request import RequestInvalid
from responder.config import ConfigError


class UsageError(ValueError):
    """The command line itself is wrong (beyond what argparse can tell)."""


# Errors that mean "bad input": the CLI prints them as one line and exits 2.
BAD_INPUT_ERRORS: tuple[type[Exception], ...] = (
    UsageError, RuleError, ParamError, ConfigError, TableError, RequestInvalid,
)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), not the usage block."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message}", file=sys.stderr)
        raise SystemExit(2)
