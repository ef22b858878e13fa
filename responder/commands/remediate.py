"""``remediate``, ``ledger``, ``approve``, ``reject``, ``undo``, ``verify``: the worker from the command line.

Storage: ``--storage CONNECTION_STRING``, else the ``RESPONDER_STORAGE_CONNECTION`` app setting (a
connection string: Azurite's for local use), else identity-based access to the account named by
``AzureWebJobsStorage__accountName`` (what the function app uses in Azure). The ledger table is
``--table`` or ``RESPONDER_LEDGER_TABLE``. Graph is ``RESPONDER_GRAPH_BASE_URL`` (a loopback URL, e.g.
the fake Graph, needs no credential).

Exit codes: 0 done, 1 something failed, is left for a retry or in flight elsewhere, storage could not be
reached, or (for ID arguments) no request has that id; 2 bad input or configuration, an ambiguous id, or a
refused command. Each command's ``--help`` lists its own.
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

from azure.core.exceptions import AzureError

from core.settings import Settings
from core.tenant import load_tenant_config
from detections.catalog import load_catalog
from remediation.ledger import INVALID, Ledger, Record, utcnow
from remediation.outcome import STATES, Outcome
from responder.commands import UsageError, cli_credential, command
from responder.commands.ledger_view import candidates_text, print_list, print_record, show_json
from responder.commands.storage import (
    STORAGE_ENV,
    AmbiguousId,
    UnknownId,
    enqueue,
    first_line,
    open_ledger,
    open_queue,
    resolve,
    storage_failure,
)
from responder.commands.tables import print_table

IN_FLIGHT = "left in flight (another delivery is executing them)"


def register(subparsers: argparse._SubParsersAction) -> None:
    def common(p: argparse.ArgumentParser, default: Any = None) -> None:
        p.add_argument("--storage", metavar="CONNECTION_STRING", default=default,
                       help=f"storage connection string (default: the {STORAGE_ENV} app setting, else "
                            "identity-based access to AzureWebJobsStorage__accountName)")
        p.add_argument("--table", metavar="NAME", default=default,
                       help="ledger table (default: RESPONDER_LEDGER_TABLE)")
        p.add_argument("--config", type=Path, metavar="FILE", default=default,
                       help="tenant config YAML (default: the RESPONDER_TENANT_CONFIG app setting)")
        p.add_argument("--json", action="store_true", default=False if default is None else default,
                       help="print JSON instead of a table")

    p = command(subparsers, "remediate", help="process remediation requests from a file, as the queue does",
                description="Process remediation requests from a JSON array or JSON lines (one message per "
                            "line), through the same code as the queue worker. Invalid messages are recorded "
                            "in the ledger as failed. Requests another delivery is executing right now are "
                            "left to it and counted; after a storage error what the ledger holds for each "
                            "request is printed.",
                codes={0: "every request settled (done, held, skipped or refused by the rails)",
                       1: f"some failed, were left for a retry (transient error), were {IN_FLIGHT}, or hit "
                          "a storage error; or storage could not be reached",
                       2: "bad input or configuration (unreadable file, bad storage connection string, "
                          "tenant config)"})
    p.add_argument("--queue-file", required=True, metavar="FILE|-", help="the requests; - reads stdin")
    common(p)
    # The file is read before anything else, so a broken one is refused before any work starts.
    p.set_defaults(func=lambda a: _run(a, _remediate, read_bodies(a.queue_file)))

    p = command(subparsers, "ledger", help="list what the ledger recorded, or show one request",
                description="List the ledger's requests (oldest first) with who decided and when; "
                            "`ledger show ID` prints one request whole: its history (every state with its "
                            "time), attempts, error, undo information, who approved, rejected or undid it. "
                            "ID may be any unique beginning of a request id.",
                codes={0: "listed or shown", 1: "no request with that id, or storage could not be reached",
                       2: "bad input or configuration (an id prefix that matches several requests: they "
                          "are listed)"})
    p.add_argument("--rule", metavar="SLUG")
    p.add_argument("--state", choices=STATES)
    p.add_argument("--hold-reason", metavar="REASON",
                   help="only rows held for this reason (approval, cap, unverifiable, emergency_stop)")
    common(p)
    p.set_defaults(func=_ledger, ledger_command=None)
    sub = p.add_subparsers(dest="ledger_command", metavar="{show}")
    show = command(sub, "show", help="one request whole, with its history",
                   description="Print every field of one request: target (with the UPN the evidence gives "
                               "for an object id), each state with its time in order, attempts, detail and "
                               "error, undo information, who approved, rejected or undid it (and any "
                               "unverified name a caller gave), the lease, the command to run by hand for "
                               "connector actions, and the evidence.",
                   codes={0: "shown", 1: "no request with that id, or storage could not be reached",
                          2: "bad input or configuration (an ambiguous id: the candidates are listed)"})
    show.add_argument("id", metavar="ID", help="request id or any unique beginning of one")
    # SUPPRESS: options given before `show` (`ledger --json show ID`) are not reset by the sub-parser.
    common(show, default=argparse.SUPPRESS)

    helps = {"approve": ("approve a held request; the app's worker runs it (exactly once)",
                         "Approve a held request: the decision is written to the ledger and the request "
                         "queued for the app's worker, which runs it through the rails and the action with "
                         "its managed identity, exactly once (a request approved by someone else or "
                         "rejected is refused). --local runs it here instead."),
             "reject": ("reject a held request", "Reject a held request: it is never run."),
             "undo": ("reverse a confirmed move, or everything a run did (--run)",
                      "Reverse a confirmed email move with its declared inverse, as a new request linked "
                      "both ways to the original, queued for the app's worker (--local: run it here). "
                      "With --run RUN_ID instead of an ID: one undo recorded and queued per confirmed "
                      "undoable request of that run (run again, nothing more is undone), listing what "
                      "cannot be undone (revokes, confirm compromised) or is not confirmed yet; --local "
                      "undoes them here one by one and sends one summary card.")}
    for name, (helptext, description) in helps.items():
        p = command(subparsers, name, help=helptext,
                    description=f"{description} ID may be any unique beginning of a request id.",
                    codes={0: "done", 1: "no request with that id, the action failed or is left for a retry, "
                                         "or storage could not be reached",
                           2: "refused (not in a state that allows it), an ambiguous id (the candidates are "
                              "listed), or bad input or configuration"})
        if name == "undo":
            p.add_argument("id", metavar="ID", nargs="?",
                           help="request id or any unique beginning of one (see `ledger`)")
            p.add_argument("--run", metavar="RUN_ID",
                           help="undo everything this run did (whole run id): an undo queued for every "
                                "confirmed move, listing what cannot be undone (--local: run here, one "
                                "summary card to RESPONDER_TEAMS_WEBHOOK_URL)")
        else:
            p.add_argument("id", metavar="ID",
                           help="request id or any unique beginning of one (see `ledger`)")
        p.add_argument("--by", default=None, help="who decides (default: the login name)")
        if name == "approve":
            p.add_argument("--done", action="store_true",
                           help="connector actions in manual mode (RESPONDER_CONNECTOR_ACTIONS=manual): "
                                "record that you ran the shown command yourself; nothing is run")
        p.add_argument("--local", action="store_true",
                       help="run the action here with your own sign-in (development against the fake "
                            "Graph); by default the decision is written to the ledger and the request "
                            "queued for the app's worker, which runs it with its managed identity")
        common(p)
        p.set_defaults(func=lambda a, n=name: _decide(a, n))

    p = command(subparsers, "verify", help="confirm submitted Defender remediations from EmailEvents",
                description="Read EmailEvents for every submitted Defender email remediation and mark it "
                            "confirmed, or not_applied once its grace period has passed.",
                codes={0: "verified", 1: "a request was not applied, the query failed, or storage could "
                                         "not be reached",
                       2: "bad input or configuration"})
    p.add_argument("--tables", type=Path, metavar="DIR", help="use the local engine over DIR instead")
    p.add_argument("--now", metavar="ISO8601", help="what now() means on the local engine")
    common(p)
    p.set_defaults(func=lambda a: _run(a, _verify))


# --- plumbing --------------------------------------------------------------------------------------------

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


def find(ledger: Ledger, text: str, *, invalid: bool) -> Record | int:
    """The request ``text`` names (a whole id or a unique beginning), or the exit code after saying why
    not: 1 none, 2 several (listed, so the operator can pick)."""
    try:
        return resolve(ledger, text, invalid=invalid)
    except UnknownId as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except AmbiguousId as exc:
        print(f"error: {exc}:", file=sys.stderr)
        for line in candidates_text(exc.candidates):
            print(line, file=sys.stderr)
        return 2


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
    numbered = number_batch(bodies, run_id)
    try:
        outcomes = await worker.process_bodies(numbered)
    except AzureError as exc:
        # The batch stopped part-way: say why in one line, then what the ledger holds for each request
        # (what was done is recorded there; running the same file again does only what is not).
        failure = storage_failure(exc, worker.ledger)
        print(f"error: {failure}; the batch stopped. What the ledger holds for its requests now:",
              file=sys.stderr)
        print_outcomes(recorded(worker.ledger, numbered), as_json=args.json)
        print("Run the same command again once storage answers: requests already recorded as done are not "
              "done twice.", file=sys.stderr)
        return 1
    print_outcomes(outcomes, as_json=args.json)
    return batch_verdict(outcomes, lease_minutes=worker.lease.total_seconds() / 60)


def in_flight(outcome: Outcome) -> bool:
    """Left to another delivery that holds the request's claim. The worker marks these ``in_flight``; older
    workers said so only in the detail of a ``received`` outcome."""
    return bool(outcome.extra.get("in_flight")) or (
        outcome.state == "received" and outcome.detail == "being executed by another delivery")


def batch_verdict(outcomes: list[Outcome], *, lease_minutes: float) -> int:
    """1 when anything was not settled by this batch, with a line on stderr per kind saying what to do."""
    flying = [o for o in outcomes if in_flight(o)]
    storage = [o for o in outcomes if o.extra.get("storage_error") and not in_flight(o)]
    transient = [o for o in outcomes if o.extra.get("transient") and o not in flying and o not in storage]
    failed = [o for o in outcomes if o.state == "failed" and o not in storage]
    if flying:
        print(f"warning: {len(flying)} request(s) {IN_FLIGHT}, so this command left them alone: "
              f"{_ids(flying)}. Their claim lasts at most {lease_minutes:g} minutes; see how they ended with "
              "`python -m responder ledger show ID`, or run the same command again after that (it does "
              "only what is not done).", file=sys.stderr)
    if storage:
        reason = next((str(o.extra["storage_error"]) for o in storage
                       if isinstance(o.extra.get("storage_error"), str)), "")
        print(f"error: {len(storage)} request(s) hit a storage error and may not be recorded"
              f"{': ' + ' '.join(reason.split()) if reason else ''}: {_ids(storage)}. Run the same command "
              "again once storage answers.", file=sys.stderr)
    if transient:
        print(f"warning: {len(transient)} request(s) failed for now (transient) and stay received: "
              f"{_ids(transient)}. Run the same command again later.", file=sys.stderr)
    if failed:
        print(f"error: {len(failed)} request(s) failed: see their detail above.", file=sys.stderr)
    return 1 if flying or storage or transient or failed else 0


def _ids(outcomes: list[Outcome], most: int = 10) -> str:
    ids = [o.request_id for o in outcomes]
    return ", ".join(ids[:most]) + (f" and {len(ids) - most} more" if len(ids) > most else "")


def recorded(ledger: Ledger, bodies: list[str]) -> list[Outcome]:
    """What the ledger holds for each body of a batch that stopped: its row's outcome, or a line saying it
    was not recorded (or could not be read back)."""
    import hashlib

    from core.request import RequestInvalid, loads_bounded

    out: list[Outcome] = []
    for body in bodies:
        try:
            req = loads_bounded(body)
        except (ValueError, RequestInvalid):
            req = None
        if isinstance(req, dict) and isinstance(req.get("rule"), str) and isinstance(req.get("id"), str):
            rule, rid = req["rule"], req["id"]
        else:   # an invalid message's row is keyed by the hash of its body (Ledger.record_invalid)
            rule, rid = INVALID, hashlib.sha256(body.encode("utf-8")).hexdigest()[:32]
        base = {"request_id": rid, "rule": rule,
                "action": str(req.get("action", "")) if isinstance(req, dict) else "",
                "target": req.get("target") if isinstance(req, dict) and isinstance(req.get("target"), dict)
                else {}, "mode": str(req.get("mode", "")) if isinstance(req, dict) else ""}
        try:
            rec = ledger.read(rule, rid)
        except AzureError as exc:
            out.append(Outcome(**base, state="unknown", detail="could not be read back",
                               error=storage_failure(exc, ledger).args[0]))
            continue
        out.append(rec.outcome() if rec is not None else
                   Outcome(**base, state="not_recorded", detail="not reached before storage failed"))
    return out


def _decide(args: argparse.Namespace, verb: str) -> int:
    """approve/reject/undo: recorded in the ledger and (approve, undo) queued for the worker in Azure,
    which needs only storage data roles here; --local runs in this process as before."""
    if verb == "undo" and (args.run is None) == (args.id is None):
        raise UsageError("undo takes a request ID or --run RUN_ID (one of them)")
    if args.local:
        return _run(args, _person(verb))
    settings = Settings.from_env(require=False)
    ledger = open_ledger(args, settings)
    if verb == "undo" and args.run is not None:
        return _queued_run_undo(args, settings, ledger)
    return _queued(args, verb, settings, ledger)


def _queued_run_undo(args: argparse.Namespace, settings: Settings, ledger: Ledger) -> int:
    """``undo --run RUN_ID``: one undo recorded per confirmed undoable request of the run and queued for
    the app's worker (remediation/undo_run.record_run_undo, as the page's "undo all done"); what cannot
    be undone is listed. Needs only the storage data roles; --local runs Worker.undo_run here instead."""
    from remediation.decisions import Decisions, RecordOnly
    from remediation.undo_run import record_run_undo

    tenant = load_tenant_config(args.config.resolve() if args.config else settings.tenant_config_path,
                                settings.params_json)
    decisions = Decisions(RecordOnly(settings, tenant, load_catalog(), ledger))
    run_id = args.run.strip()
    try:
        result = record_run_undo(decisions, run_id, _who(args), settings.connector_actions,
                                 decided_via="cli")
        unqueued: list[str] = []
        if result.queued:
            queue = open_queue(args, settings)
            for _, undo_req in result.queued:
                try:
                    enqueue(queue, json.dumps(undo_req))
                except AzureError as exc:
                    unqueued.append(f"{undo_req['id']} ({first_line(exc)})")
    except AzureError as exc:
        failure = storage_failure(exc, ledger)
        print(f"error: {failure}; check what was recorded with `python -m responder ledger`",
              file=sys.stderr)
        return failure.code
    if args.json:
        sys.stdout.write(json.dumps({**result.to_dict(), "not_queued": unqueued}, indent=2,
                                    ensure_ascii=False) + "\n")
    else:
        print(result.summary())
        for rec, undo_req in result.queued:
            print(f"  queued undo {undo_req['id']} of {rec.request_id}: {rec.action} {_target(rec.target)}")
        for rid, err in result.problems:
            print(f"  not undone {rid}: {err}")
        for category, label in (("cannot_undo", "cannot be undone"), ("pending", "not confirmed yet")):
            for r in result.others.get(category, []):
                print(f"  {label} {r.request_id}: {r.action} {_target(r.target)} ({r.state})")
    for line in unqueued:
        print(f"error: undo {line} is recorded but could not be queued", file=sys.stderr)
    return 1 if unqueued or result.problems or not result.found else 0


def _queued(args: argparse.Namespace, verb: str, settings: Settings, ledger: Ledger) -> int:
    from remediation.decisions import Decisions, RecordOnly, WorkerError

    tenant = load_tenant_config(args.config.resolve() if args.config else settings.tenant_config_path,
                                settings.params_json)
    decisions = Decisions(RecordOnly(settings, tenant, load_catalog(), ledger))
    who = _who(args)
    try:
        found = find(ledger, args.id, invalid=False)
        if isinstance(found, int):
            return found
        rid = found.request_id
        if verb == "reject":
            outcome = decisions.record_rejection(rid, who, decided_via="cli").outcome()
        elif verb == "undo":
            rec, undo_req = decisions.record_undo(rid, who, decided_via="cli")
            try:
                enqueue(open_queue(args, settings), json.dumps(undo_req))
            except AzureError as exc:
                print(f"error: the undo of {rid} is recorded as request {rec.request_id} but could not be "
                      f"queued ({first_line(exc)})", file=sys.stderr)
                return 1
            outcome = rec.outcome()
            outcome.extra["queued"] = True
        elif args.done or decisions.registry.run_by_hand(found.action, settings.connector_actions):
            # Nothing runs for a command run by hand: recorded (or refused with the command) here.
            outcome = asyncio.run(decisions.approve(rid, who, done=args.done))
        else:
            if found.state == "approved" and not found.claimed(ledger.clock()) and found.request:
                rec = found   # approved earlier but never run (e.g. the queue was unreachable): queue again
            else:
                rec = decisions.record_approval(rid, who, decided_via="cli")
            try:
                enqueue(open_queue(args, settings), json.dumps(rec.request))
            except AzureError as exc:
                print(f"error: request {rid} is approved in the ledger but could not be queued "
                      f"({first_line(exc)}); run `python -m responder approve {rid}` again", file=sys.stderr)
                return 1
            outcome = rec.outcome()
            outcome.extra["queued"] = True
    except WorkerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except AzureError as exc:
        failure = storage_failure(exc, ledger)
        print(f"error: {failure}; check what was recorded with `python -m responder ledger show {args.id}`",
              file=sys.stderr)
        return failure.code
    print_outcomes([outcome], as_json=args.json)
    return 0


def _person(verb: str) -> Callable[..., Any]:
    async def act(args: argparse.Namespace, worker: Any) -> int:
        from remediation.decisions import WorkerError

        if verb == "undo" and args.run is not None:
            return await _undo_run(args, worker)
        try:
            found = find(worker.ledger, args.id, invalid=False)
            if isinstance(found, int):
                return found
            rid = found.request_id
            if verb == "approve":
                outcome = await worker.approve(rid, _who(args), done=args.done)
            elif verb == "reject":
                outcome = await worker.reject(rid, _who(args))
            else:
                outcome = await worker.undo(rid, _who(args))
        except WorkerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except AzureError as exc:
            failure = storage_failure(exc, worker.ledger)
            print(f"error: {failure}; check what was recorded with `python -m responder ledger show "
                  f"{args.id}`", file=sys.stderr)
            return failure.code
        print_outcomes([outcome], as_json=args.json)
        return 1 if outcome.state == "failed" or outcome.extra.get("transient") else 0
    return act


async def _undo_run(args: argparse.Namespace, worker: Any) -> int:
    """``undo --run RUN_ID``: Worker.undo_run, its one summary card to the Teams channel when configured."""
    from notifications.reporter import CardReporter
    from notifications.teams import notifier_from_settings

    if worker.outbox.reporter is None:
        worker.outbox.reporter = CardReporter(notifier_from_settings(worker.settings),
                                              tenant_id=worker.settings.tenant_id or None)
    try:
        result = await worker.undo_run(args.run.strip(), _who(args))
    except AzureError as exc:
        failure = storage_failure(exc, worker.ledger)
        print(f"error: {failure}; check what was recorded with `python -m responder ledger`", file=sys.stderr)
        return failure.code
    if args.json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n")
    else:
        print(result.summary())
        for o in result.failed:
            print(f"  failed {o.request_id}: {o.error}")
        for r in result.cannot_undo:
            print(f"  cannot be undone {r.request_id}: {r.action} {_target(r.target)}")
        for r in result.pending:
            print(f"  not confirmed yet {r.request_id}: {r.action} {_target(r.target)} ({r.state})")
    return 1 if result.failed or not result.found else 0


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
    ledger = open_ledger(args, settings)
    try:
        if args.ledger_command == "show":
            return _show(args, ledger)
        records = ledger.list(rule=args.rule, state=args.state, hold_reason=args.hold_reason)
    except AzureError as exc:
        raise storage_failure(exc, ledger) from None
    if args.json:
        sys.stdout.write(json.dumps([record_json(r) for r in records], indent=2, ensure_ascii=False) + "\n")
    else:
        print_list(records)
    return 0


def _show(args: argparse.Namespace, ledger: Ledger) -> int:
    from remediation.actions.registry import default_registry

    found = find(ledger, args.id, invalid=True)
    if isinstance(found, int):
        return found
    command_text = default_registry().manual_command(found.request) if found.request else None
    undo_id = found.extra.get("undone_by")
    undo = ledger.get(str(undo_id)) if undo_id else None
    if args.json:
        sys.stdout.write(json.dumps(show_json(found, command_text, undo), indent=2, ensure_ascii=False,
                                    default=str) + "\n")
    else:
        now = utcnow().isoformat(timespec="seconds").replace("+00:00", "Z")
        print_record(found, sys.stdout, command=command_text, undo=undo, now=now)
    return 0


def record_json(r: Record) -> dict[str, Any]:
    return {"id": r.request_id, "rule": r.rule, "action": r.action, "target": r.target, "mode": r.mode,
            "state": r.state, "hold_reason": r.hold_reason, "attempts": r.attempts, "detail": r.detail,
            "error": r.error, "link": r.link, "undo": r.undo, "run_id": r.run_id,
            "created_at": r.created_at, "updated_at": r.updated_at, "state_times": r.state_times,
            "source": (r.request or {}).get("source"), **r.extra}


def print_outcomes(outcomes: list[Outcome], *, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps([o.to_dict() for o in outcomes], indent=2, ensure_ascii=False) + "\n")
        return
    print_table(("id", "rule", "action", "state", "target", "detail"),
                [(o.request_id, o.rule, o.action, o.state + (f" ({o.hold_reason})" if o.hold_reason else ""),
                  _target(o.target), o.error or o.detail) for o in outcomes], empty="Nothing to do.")


def _target(target: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in target.items())
