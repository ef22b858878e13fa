"""Sub-commands of ``python -m responder`` (see responder/cli.py) and what they share."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn

from core.request import RequestInvalid
from core.settings import ConfigError
from detections.backends.base import TableError
from detections.catalog import RuleError
from detections.params import ParamError

if TYPE_CHECKING:
    from rich.console import Console


def console(*, stderr: bool = False) -> Console:
    """A rich console; when not writing to a terminal (CI logs, pipes) it is 140 columns wide
    instead of rich's 80, so tables of rule slugs are not cut to ellipses."""
    from rich.console import Console  # lazily: the function app imports this package's errors

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 140)


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


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help, except that the epilog (the exit codes, one per line) keeps its lines."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith(EXIT_CODES):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


EXIT_CODES = "exit codes:"


def command(subparsers: argparse._SubParsersAction, name: str, *, help: str, description: str,
            codes: dict[int, str]) -> argparse.ArgumentParser:
    """A sub-command whose ``--help`` says what it does and what each exit code means."""
    import textwrap

    epilog = EXIT_CODES + "\n" + "\n".join(
        textwrap.fill(meaning, width=78, initial_indent=f"  {code}  ", subsequent_indent=" " * 5)
        for code, meaning in sorted(codes.items()))
    return subparsers.add_parser(name, help=help, description=description, epilog=epilog,  # type: ignore[no-any-return]
                                 formatter_class=HelpFormatter)


class CredentialFailure(Exception):
    """No token could be had for a real service. The CLI prints it as one line and exits 1: azure-identity's
    own message lists every credential it tried over many lines, which buries the reason."""


def running_in_azure() -> bool:
    """App Service / Functions (and Container Apps) set IDENTITY_ENDPOINT for the managed identity."""
    return bool(os.environ.get("IDENTITY_ENDPOINT"))


def cli_credential(client_id: str | None, *, aio: bool = True) -> Any:
    """The credential the CLI uses for real services.

    In Azure with AZURE_CLIENT_ID set: that user-assigned managed identity and nothing else. Elsewhere:
    DefaultAzureCredential *without* EnvironmentCredential, so a client secret lying in the environment
    (AZURE_CLIENT_SECRET) is never used: this app authenticates as a managed identity or as the person
    at the keyboard (az login), never with a shared secret.
    """
    if aio:
        from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential
    else:
        from azure.identity import DefaultAzureCredential, ManagedIdentityCredential  # type: ignore[assignment]
    if client_id and running_in_azure():
        return ManagedIdentityCredential(client_id=client_id)
    return DefaultAzureCredential(exclude_environment_credential=True,
                                  managed_identity_client_id=client_id or None)


async def check_token(credential: Any, scope: str) -> None:
    """Get one token now, so a sign-in problem is one clear line before any work starts (the credential
    caches it for the calls that follow)."""
    try:
        await credential.get_token(scope)
    except Exception as exc:   # ClientAuthenticationError, CredentialUnavailableError, transport errors
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise CredentialFailure(f"cannot get a token for {scope}: {first} (sign in with `az login`, or "
                                "run where the managed identity is available)") from None
