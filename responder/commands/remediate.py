"""``remediate``, ``ledger``, ``approve``, ``reject``, ``undo``, ``verify``: the worker from the command line.

Storage: ``--storage CONNECTION_STRING``, else the ``RESPONDER_STORAGE_CONNECTION`` app setting (a
connection string: Azurite's for local use), else identity-based access to the account named by
``AzureWebJobsStorage__accountName`` (what the function app uses in Azure). The ledger table is
``--table`` or ``RESPONDER_LEDGER_TABLE``. Graph is ``RESPONDER_GRAPH_BASE_URL`` (a loopback URL, e.g.
the fake Graph, needs no credential).

Exit codes: 0 done, 1 something failed or is left for a retry, 2 bad input or a refused command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.settings import Settings
from core.tenant import load_tenant_config
from detections.catalog import load_catalog
from remediation.ledger import Ledger, Record
from remediation.outcome import STATES, Outcome
from responder.commands import UsageError, cli_credential

STORAGE_ENV = "RESPONDER_STORAGE_CONNECTION"


def register(subparsers: argparse._SubParsersAction) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--storage", metavar="CONNECTION_STRING",
                       help=f"storage connection string (default: the {STORAGE_ENV} app setting, else "
                            "identity-based access to AzureWebJobsStorage__accountName)")
        p.add_argument("--table", metavar="NAME", help="ledger table (default: RESPONDER_LEDGER_TABLE)")
        p.add_argument("--config", type=Path, metavar="FILE",
                       help="tenant config YAML (default: the RESPONDER_TENANT_CONFIG app setting)")
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = subparsers.add_parser("remediate",
                              help="process remediation requests from a file, as the queue does",
                              description="Process remediation requests from a JSON array or JSON lines "
                                          "(one message per line), through the same code as the queue "
                                          "worker. Invalid messages are recorded in the ledger as failed.")
    p.add_argument("--queue-file", required=True, metavar="FILE|-", help="the requests; - reads stdin")
    common(p)
    # The file is read before anything else, so a broken one is refused before any work starts.
    p.set_defaults(func=lambda a: _run(a, _remediate, read_bodies(a.queue_file)))

    p = subparsers.add_parser("ledger", help="list what the ledger recorded")
    p.add_argument("--rule", metavar="SLUG")
    p.add_argument("--state", choices=STATES)
    common(p)
    p.set_defaults(func=_ledger)

    for name, helptext in (("approve", "approve a held request and run it (exactly once)"),
                           ("reject", "reject a held request"),
                           ("undo", "move a confirmed junked message back to the inbox")):
        p = subparsers.add_parser(name, help=helptext)
        p.add_argument("id", metavar="ID", help="request id (see `ledger`)")
        p.add_argument("--by", default=None, help="who decides (default: the login name)")
        if name == "approve":
            p.add_argument("--done", action="store_true",
                           help="connector actions in manual mode (RESPONDER_CONNECTOR_ACTIONS=manual): "
                                "record that you ran the shown command yourself; nothing is run")
        common(p)
        p.set_defaults(func=lambda a, n=name: _run(a, _person(n)))

    p = subparsers.add_parser("verify", help="confirm submitted Defender remediations from EmailEvents")
    p.add_argument("--tables", type=Path, metavar="DIR", help="use the local engine over DIR instead")
    p.add_argument("--now", metavar="ISO8601", help="what now() means on the local engine")
    common(p)
    p.set_defaults(func=lambda a: _run(a, _verify))


# --- plumbing --------------------------------------------------------------------------------------------

def open_ledger(args: argparse.Namespace, settings: Settings) -> Ledger:
    table = args.table or settings.ledger_table
    conn = args.storage or os.environ.get(STORAGE_ENV, "")
    if conn:
        return Ledger.from_connection_string(conn, table)
    account = os.environ.get("AzureWebJobsStorage__accountName", "")  # noqa: SIM112 - the host's name
    if not account:
        raise UsageError(f"no storage: pass --storage, or set {STORAGE_ENV} (a connection string) or "
                         "AzureWebJobsStorage__accountName (identity-based)")
    # No client secret from the environment, ever (responder.commands.cli_credential).
    credential = cli_credential(settings.client_id, aio=False)
    return Ledger.from_account_url(f"https://{account}.table.core.windows.net", table, credential)


@contextlib.asynccontextmanager
async def open_worker(args: argparse.Namespace, settings: Settings, ledger: Ledger) -> AsyncIterator[Any]:
    """A Worker with Graph and Exchange clients built inside the running loop."""
    from core.graph import is_loopback, make_graph_client
    from remediation.exchange import make_exchange_client
    from remediation.worker import Worker

    tenant = load_tenant_config(args.config.resolve() if args.config else settings.tenant_config_path,
                                settings.params_json)
    credential = None
    if not is_loopback(settings.graph_base_url):
        credential = cli_credential(settings.client_id)
    exchange = None
    try:
        graph = make_graph_client(base_url=settings.graph_base_url, credential=credential)
        exchange = make_exchange_client(settings, credential)
        yield Worker(settings, tenant, load_catalog(), ledger, graph, exchange)
    finally:
        if exchange is not None:
            await exchange.aclose()
        if credential is not None:
            await credential.close()


def _run(args: argparse.Namespace, body: Callable[..., Any], *extra: Any) -> int:
    settings = Settings.from_env(require=False)
    ledger = open_ledger(args, settings)

    async def main() -> int:
        async with open_worker(args, settings, ledger) as worker:
            return int(await body(args, worker, *extra))

    return asyncio.run(main())


def _who(args: argparse.Namespace) -> str:
    if args.by:
        return str(args.by)
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


# --- commands --------------------------------------------------------------------------------------------

def read_bodies(source: str) -> list[str]:
    """Message bodies from a JSON array or JSON lines. Lines are kept as they are, so an invalid one
    reaches the worker (and the ledger) exactly as written."""
    if source == "-":
        text = sys.stdin.read()
    else:
        path = Path(source)
        if not path.is_file():
            raise UsageError(f"--queue-file {source}: no such file")
        text = path.read_text(encoding="utf-8")
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            return split_array(stripped)
        except ValueError as exc:
            raise UsageError(f"--queue-file {source}: starts with [ but is not a JSON array: {exc}") from None
    return [line for line in text.splitlines() if line.strip()]


def split_array(text: str) -> list[str]:
    """The elements of a JSON array as written, split at its top-level commas without decoding them:
    a hostile element (nested too deep to decode) stays one body and is recorded as invalid by the
    worker, instead of a RecursionError that stops the whole batch (issue 13)."""
    items: list[str] = []
    depth, start = 0, 1
    in_string = escaped = False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth == 0:
                if text[i + 1:].strip():
                    raise ValueError(f"text after the array's end at character {i + 1}")
                items.append(text[start:i])
                break
        elif ch == "," and depth == 1:
            items.append(text[start:i])
            start = i + 1
    else:
        raise ValueError("the array is not closed")
    items = [item.strip() for item in items]
    if items == [""]:
        return []
    if any(not item for item in items):
        raise ValueError("empty element")
    return items


def number_batch(bodies: list[str], run_id: str) -> list[str]:
    """Give requests without a ``run`` block (hand-written input) a place in one run per invocation,
    numbered per rule and action, so the per-run cap applies to them as to a scan's requests (the
    rails hold a request with no run: remediation/rails.py). Invalid bodies (recorded as written),
    and requests that carry a run already (``scan --json`` output), are passed on unchanged."""
    from core.request import RequestInvalid, loads_bounded, validate_request

    parsed: list[dict[str, Any] | None] = []
    for body in bodies:
        try:
            obj = validate_request(loads_bounded(body))
        except (ValueError, RequestInvalid):
            obj = None
        parsed.append(obj if obj is not None and "run" not in obj else None)
    todo = [obj for obj in parsed if obj is not None]
    counters: dict[tuple[str, str], int] = {}
    out: list[str] = []
    for body, obj in zip(bodies, parsed, strict=True):
        if obj is None:
            out.append(body)
            continue
        key = (str(obj.get("rule")), str(obj.get("action")))
        index = counters.get(key, 0)
        counters[key] = index + 1
        obj["run"] = {"id": run_id, "index": index, "total": len(todo)}
        out.append(json.dumps(obj, ensure_ascii=False))
    return out


async def _remediate(args: argparse.Namespace, worker: Any, bodies: list[str]) -> int:
    run_id = "cli-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + os.urandom(3).hex()
    outcomes = await worker.process_bodies(number_batch(bodies, run_id))
    print_outcomes(outcomes, as_json=args.json)
    bad = [o for o in outcomes if o.state == "failed" or o.extra.get("transient")]
    return 1 if bad else 0


def _person(verb: str) -> Callable[..., Any]:
    async def act(args: argparse.Namespace, worker: Any) -> int:
        from remediation.decisions import WorkerError

        try:
            if verb == "approve":
                outcome = await worker.approve(args.id, _who(args), done=args.done)
            elif verb == "reject":
                outcome = await worker.reject(args.id, _who(args))
            else:
                outcome = await worker.undo(args.id, _who(args))
        except WorkerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print_outcomes([outcome], as_json=args.json)
        return 1 if outcome.state == "failed" or outcome.extra.get("transient") else 0
    return act


async def _verify(args: argparse.Namespace, worker: Any) -> int:
    from detections.backends import make_backend

    if args.tables is not None:
        now = datetime.fromisoformat(args.now.replace("Z", "+00:00")) if args.now else datetime.now(UTC)
        backend = make_backend(tables_dir=args.tables, now=now)
    elif args.now:
        raise UsageError("--now needs --tables: only the local engine's clock can be pinned")
    else:
        backend = make_backend(worker.settings, graph_client=worker.graph)
    from detections.backends.base import BackendError

    try:
        outcomes = await worker.verify(backend)
    except BackendError as exc:
        print(f"error: the verification query failed: {exc}", file=sys.stderr)
        return 1
    print_outcomes(outcomes, as_json=args.json)
    return 1 if any(o.state == "not_applied" for o in outcomes) else 0


def _ledger(args: argparse.Namespace) -> int:
    settings = Settings.from_env(require=False)
    records = open_ledger(args, settings).list(rule=args.rule, state=args.state)
    if args.json:
        sys.stdout.write(json.dumps([record_json(r) for r in records], indent=2, ensure_ascii=False) + "\n")
        return 0
    _table(("rule", "action", "state", "target", "detail", "id"),
           [(r.rule, r.action, r.state + (f" ({r.hold_reason})" if r.hold_reason else ""),
             _target(r.target), r.error or r.detail, r.request_id) for r in records],
           empty="The ledger has no matching requests.")
    return 0


def record_json(r: Record) -> dict[str, Any]:
    return {"id": r.request_id, "rule": r.rule, "action": r.action, "target": r.target, "mode": r.mode,
            "state": r.state, "hold_reason": r.hold_reason, "attempts": r.attempts, "detail": r.detail,
            "error": r.error, "link": r.link, "undo": r.undo, "run_id": r.run_id,
            "created_at": r.created_at, "updated_at": r.updated_at, "state_times": r.state_times, **r.extra}


def print_outcomes(outcomes: list[Outcome], *, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps([o.to_dict() for o in outcomes], indent=2, ensure_ascii=False) + "\n")
        return
    _table(("rule", "action", "state", "target", "detail", "id"),
           [(o.rule, o.action, o.state + (f" ({o.hold_reason})" if o.hold_reason else ""), _target(o.target),
             o.error or o.detail, o.request_id) for o in outcomes], empty="Nothing to do.")


def _target(target: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in target.items())


def _table(columns: tuple[str, ...], rows: list[tuple[str, ...]], *, empty: str) -> None:
    from rich.markup import escape
    from rich.table import Table

    from responder.commands import console as rich_console

    console = rich_console()
    if not rows:
        console.print(empty)
        return
    table = Table(title_justify="left")
    for col in columns:
        if col == "id":  # whole, so it can be copied into approve/reject/undo
            table.add_column(col, no_wrap=True, min_width=32)
        else:
            table.add_column(col, overflow="fold")
    for row in rows:
        # Targets and errors come from mail and services: escape them so rich does not read markup.
        table.add_row(*(escape(str(v or "")) for v in row))
    console.print(table)
