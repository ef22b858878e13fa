"""``python -m responder <command>``: one argparse sub-command per module in ``responder/commands/``.

Each command module exposes ``register(subparsers)``, which adds its parser and sets ``func`` (args ->
exit code). Adding a command is one import line below. Exit codes: 0 success, 1 a backend, action or
storage failed (or something is left to do), 2 bad input or configuration (with a one-line reason on
stderr); each command's ``--help`` lists its own.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from azure.core.exceptions import AzureError

import responder.commands
import responder.commands.demo
import responder.commands.remediate
import responder.commands.rules
import responder.commands.sandbox
import responder.commands.scan
import responder.commands.stop
from core import logsafe
from responder.commands import BAD_INPUT_ERRORS, EXIT_CODES, CredentialFailure, HelpFormatter, OneLineParser
from responder.commands.storage import StorageFailure, first_line


def _command_modules() -> list[ModuleType]:
    """Every imported ``responder.commands.<name>`` module that has a ``register`` function."""
    mods = [m for m in vars(responder.commands).values()
            if isinstance(m, ModuleType) and callable(getattr(m, "register", None))]
    return sorted(mods, key=lambda m: m.__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m responder",
        description="Detect with KQL rules, remediate through Microsoft Graph, tell on-call. "
                    "`python -m responder COMMAND --help` says what a command does and its exit codes.",
        epilog=f"{EXIT_CODES}\n  0  success\n  1  a backend, an action or storage failed, or something is "
               "left to do\n  2  bad input or configuration (one line on stderr says which)",
        formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _command_modules():
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logsafe.install()   # as in the function app: no raw caller value or URL secret in a log line
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except BAD_INPUT_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except CredentialFailure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except StorageFailure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except AzureError as exc:   # a service failed where the command did not expect it: still one line
        print(f"error: {type(exc).__name__}: {first_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
