"""One structured record per scan run, request outcome, poison message, undelivered card and start-up.

Every record has the same fields (``FIELDS``; null where one does not apply), so one query reads them
all, and is written as one log line ``xdr-telemetry {json}`` on the ``xdr.telemetry`` logger. The Functions
Python logging integration sends the line to Application Insights' ``traces`` table; the alerts and the
workbook (infra/app/monitoring/*.kql, workbook.json) parse it with ``parse_json(substring(message, 14))``.
Why the logging integration and not OpenTelemetry, and why JSON in the message rather than logging
``extra``: docs/monitoring.md.

The line goes through ``logging`` like every other, so core.logsafe cleans it (URL secrets redacted,
control characters escaped). What is recorded is ids and counts only: rule slug, run and request ids,
action, state, durations, the error's class (never its text, which may quote a service's answer), and
the target's ids (mailbox, sender address, connector name, user). Never a subject, a URL, a message body,
or evidence beyond the sender's address.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

log = logging.getLogger("xdr.telemetry")
# The records are the monitoring's input: never dropped because the root logger sits at WARNING (the host's
# host.json categories decide what reaches Application Insights).
log.setLevel(logging.INFO)

SCHEMA = "xdr-telemetry/1"
PREFIX = "xdr-telemetry "
EVENTS = ("startup", "scan_run", "request", "poison", "notify_failed", "push")
FIELDS = ("schema", "event", "run_id", "rule", "action", "request_id", "mode", "state", "trigger", "backend",
          "period_s", "duration_ms", "detect_to_state_s", "counts", "error_class", "hold_reason",
          "mailbox", "sender", "connector", "user")
# What an error is, from its text: the backends put the HTTP status in it ("defender: HTTP 429 ...").
ERROR_CLASSES = ("quota", "permission", "timeout", "transient", "backend", "partial", "refused", "invalid",
                 "action_failed", "poison", "webhook", "config", "startup")
_STATUS = re.compile(r"\bHTTP (\d{3})\b")
_SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)+")
# The sender's address is an id (who to block); it is the one evidence column a record carries.
_SENDER_COLUMNS = ("SenderFromAddress", "SenderMailFromAddress")

T = TypeVar("T")


def record(event: str, **fields: Any) -> dict[str, Any]:
    """A record with every field of ``FIELDS`` (unknown names are a programming error)."""
    unknown = set(fields) - set(FIELDS)
    if unknown or event not in EVENTS:
        raise ValueError(f"telemetry: unknown event {event!r} or fields {sorted(unknown)}")
    out: dict[str, Any] = dict.fromkeys(FIELDS)
    out.update(fields, schema=SCHEMA, event=event)
    out["counts"] = dict(out["counts"] or {})
    return out


def emit(rec: Mapping[str, Any], level: int = logging.INFO) -> None:
    """One log line."""
    log.log(level, "%s%s", PREFIX, json.dumps(rec, ensure_ascii=True, separators=(",", ":"), default=str,
                                               sort_keys=True))


def error_class(error: str | None, *, transient: bool = False, default: str = "backend") -> str | None:
    """quota (429), permission (401/403), timeout, transient, else ``default``; None without an error."""
    if not error:
        return None
    status = _STATUS.search(error)
    code = int(status.group(1)) if status else None
    if code == 429 or "quota" in error.lower():
        return "quota"
    if code in (401, 403) or "forbidden" in error.lower() or "unauthorized" in error.lower():
        return "permission"
    if code in (408, 504) or "timed out" in error.lower() or "timeout" in error.lower():
        return "timeout"
    return "transient" if transient else default


def _targets(request: Mapping[str, Any] | None, target: Mapping[str, Any] | None) -> dict[str, Any]:
    target = target or (request or {}).get("target") or {}
    evidence = (request or {}).get("evidence") or {}
    sender = next((evidence.get(c) for c in _SENDER_COLUMNS if isinstance(evidence.get(c), str)), None)
    ids = {"mailbox": target.get("recipient"), "connector": target.get("connector"),
           "user": target.get("user"), "sender": sender}
    return {k: v if isinstance(v, str) and v else None for k, v in ids.items()}


def _seconds_since(iso: Any, now: datetime) -> int | None:
    if not isinstance(iso, str):
        return None
    try:
        then = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0, int((now - (then if then.tzinfo else then.replace(tzinfo=UTC))).total_seconds()))


# --- the call sites (one line each in app/*.py) ----------------------------------------------------

def _never_raises(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A call site's function: a bug here must cost a record, never the invocation that reports."""
    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception:
            log.exception("telemetry record not written (%s)", fn.__name__)
            return None
    return wrapped


@_never_raises
def push_subscriptions(summary: Any, cleaned: Any, *, cls: str | None = None) -> dict:
    """The push subscription timer's run (app/push_subscriptions.py): ``push`` with state
    ``subscriptions``, its counts, and an error class when a mailbox's subscription failed (the class of
    the first failure's reason) or the push settings are wrong (``config``)."""
    counts: dict[str, int] = {}
    if summary is not None:
        counts = {k: len(v) if isinstance(v, list) else int(v) for k, v in summary.as_dict().items()}
        if summary.failed and cls is None:
            cls = error_class(summary.failed[0][1])
    if cleaned is not None:
        counts["deleted"] = cleaned.deleted
    rec = record("push", state="subscriptions", trigger="timer", counts=counts, error_class=cls)
    emit(rec, logging.WARNING if cls else logging.INFO)
    return rec


@_never_raises
def scan_run(run: Any, queued: Any, backend: str | None, *, started: datetime, finished: datetime,
             trigger: str) -> dict:
    """A rule run (timer, on-demand or demo), from the clock's reading before and after it."""
    state = "error" if run.error else "refused" if getattr(run, "refused", False) else \
        "partial" if run.partial else "ok"
    counts = {"rows": len(run.rows), "requests": len(run.requests)}
    if queued is not None:
        counts.update(queued=len(queued.new) + len(queued.requeued), settled=queued.settled,
                      in_flight=queued.in_flight)
    frequency = getattr(run.rule, "query_frequency", None)
    cls = error_class(run.error, transient=bool(getattr(run, "transient", False)))
    if state == "refused":
        cls = "refused"
    elif state == "partial":
        cls = "partial"
    rec = record("scan_run", run_id=run.run_id, rule=run.rule.slug, state=state, trigger=trigger,
                 backend=backend, period_s=int(frequency.total_seconds()) if frequency else None,
                 duration_ms=max(0, int((finished - started).total_seconds() * 1000)), counts=counts,
                 error_class=cls)
    emit(rec, logging.WARNING if cls else logging.INFO)
    return rec


@_never_raises
def outcomes(body: str | bytes | Mapping[str, Any] | None, results: Iterable[Any], *, event: str = "request",
             now: datetime | None = None) -> list[dict]:
    """One record per outcome of a queue message (its request gives the run id and detection time)."""
    request = body if isinstance(body, Mapping) else _parse(body)
    now = now or datetime.now(UTC)
    out = []
    for o in results:
        if (getattr(o, "extra", None) or {}).get("duplicate"):
            continue   # a redelivery that found the request settled: its state was recorded already
        failed = o.state == "failed"
        cls = "poison" if event == "poison" else (
            error_class(o.error, default="action_failed") or "action_failed") if failed else None
        rec = record(event, run_id=((request or {}).get("run") or {}).get("id"), rule=o.rule, action=o.action,
                     request_id=o.request_id, mode=o.mode, state=o.state, hold_reason=o.hold_reason,
                     detect_to_state_s=_seconds_since((request or {}).get("detected_at"), now),
                     counts={"attempts": int(o.attempts or 0)}, error_class=cls,
                     **_targets(request, o.target))
        emit(rec, logging.ERROR if event == "poison" else logging.WARNING if failed else logging.INFO)
        out.append(rec)
    return out


@_never_raises
def notify_failed(what: str) -> dict:
    """A Teams card was not delivered (``what``: e.g. "<rule> outcome"; never the webhook URL)."""
    slug, _, kind = what.rpartition(" ")
    # "<rule slug> <card>" for a run's cards (app/runs.py); other cards ("held expiry") belong to no rule.
    rule = slug if _SLUG.fullmatch(slug) else None
    rec = record("notify_failed", rule=rule, state="failed", error_class="webhook", counts={"cards": 1},
                 trigger=kind if rule else what)
    emit(rec, logging.ERROR)
    return rec


def startup(load: Callable[..., T]) -> Callable[..., T]:
    """Wraps start-up (``app.bootstrap.load``): one record, loaded or failed (with the error's class)."""
    @functools.wraps(load)
    def wrapped(*args: Any, **kwargs: Any) -> T:
        started = time.monotonic()
        try:
            config = load(*args, **kwargs)
        except Exception as exc:
            _startup_failed(exc, started)
            raise
        _started(config, started)
        return config
    return wrapped


@_never_raises
def _startup_failed(exc: Exception, started: float) -> None:
    # ConfigError names a setting or file (docs/function-app.md); anything else is a crash.
    cls = "config" if type(exc).__name__ == "ConfigError" else "startup"
    emit(record("startup", state="failed", error_class=cls, trigger="host",
                duration_ms=int((time.monotonic() - started) * 1000)), logging.ERROR)


@_never_raises
def _started(config: Any, started: float) -> None:
    timers = list(getattr(config, "timers", ()) or ())
    emit(record("startup", state="ok", trigger="host", duration_ms=int((time.monotonic() - started) * 1000),
                backend=getattr(getattr(config, "settings", None), "backend", None),
                counts={"rules": len(getattr(config, "catalog", ()) or ()), "timers": len(timers)}))
    # One record per rule timer, after the "ok" one: what the dead-man's switch treats as enabled now (a
    # rule disabled since is absent from the latest start), with the period it should run at.
    for spec in timers:
        frequency = getattr(config.catalog.get(spec.slug), "query_frequency", None)
        emit(record("startup", rule=spec.slug, state="scheduled", trigger="host",
                    period_s=int(frequency.total_seconds()) if frequency else None))


def _parse(body: str | bytes | None) -> dict[str, Any] | None:
    try:
        value = json.loads(body) if body else None
    except (ValueError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def parse_line(message: str) -> dict[str, Any] | None:
    """The record in a log line written by ``emit`` (None for any other line): what the queries do."""
    return json.loads(message[len(PREFIX):]) if message.startswith(PREFIX) else None
