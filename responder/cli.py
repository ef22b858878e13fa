"""``python -m responder <command>``: one argparse sub-command per module in ``responder/commands/``.

Each command module exposes ``register(subparsers)``, which adds its parser and sets ``func`` (args ->
exit code). Adding a command is one import line below. Exit codes: 0 success, 1 a backend or action
failed, 2 bad input (with a one-line reason on stderr).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

import responder.commands
import responder.commands.demo
import responder.commands.remediate
import responder.commands.rules
import responder.commands.scan
from core import logsafe
from responder.commands import BAD_INPUT_ERRORS, CredentialFailure, OneLineParser


def _command_modules() -> list[ModuleType]:
    """Every imported ``responder.commands.<name>`` module that has a ``register`` function."""
    mods = [m for m in vars(responder.commands).values()
            if isinstance(m, ModuleType) and callable(getattr(m, "register", None))]
    return sorted(mods, key=lambda m: m.__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m responder",
        description="Detect with KQL rules, remediate through Microsoft Graph, tell on-call.")
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
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
