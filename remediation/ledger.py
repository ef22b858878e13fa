"""The ledger: one Table storage entity per remediation request, and what happened to it.

PartitionKey is the rule slug and RowKey the request id, so one rule's history is one partition.
Every state change is an ETag-conditional merge: two workers that read the same row cannot both move
it, the second gets ``LedgerConflict`` and must re-read. Executing a request is guarded by a *claim*
(a lease written with the ETag, state unchanged): whoever wins the claim acts, everyone else sees a
live lease and keeps their hands off. A lease that outlives its holder (a crash between the action
and the ledger write) expires, and the next delivery may claim it again; that is why every action
must be idempotent at the service (see remediation/worker.py).

The ledger is synchronous (azure-data-tables' sync client): it is used from the CLI as well as the
worker, each call is one small round trip, and the queue worker handles one message at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from remediation.outcome import STATES, Outcome

# Partitions that are not rule slugs (a slug starts with [a-z0-9], so these can never clash).
MARKERS = "~markers"
INVALID = "~invalid"

# Which state may follow which. Anything else is a bug or a race, and is refused: a rejected or
# executed request can never become approved, a confirmed one can never be re-held.
TRANSITIONS: dict[str, frozenset[str]] = {
    "received": frozenset({"held", "skipped", "failed", "submitted", "confirmed"}),
    "held": frozenset({"approved", "rejected", "skipped", "failed", "expired"}),
    "approved": frozenset({"submitted", "confirmed", "skipped", "failed"}),
    "submitted": frozenset({"confirmed", "not_applied", "failed"}),
    "confirmed": frozenset(),
    "not_applied": frozenset(),
    "rejected": frozenset(),
    "skipped": frozenset(),
    "failed": frozenset(),
    # Held past RESPONDER_HELD_EXPIRY (remediation/expiry.py): never approved, never run, final.
    "expired": frozenset(),
}
# Table string properties hold 64 KiB (UTF-16): keep JSON columns well below that.
_MAX_JSON = 30_000


class LedgerError(Exception):
    """Base class of ledger errors."""


class LedgerConflict(LedgerError):
    """The row changed since it was read (ETag mismatch) or a live claim belongs to someone else."""


class IllegalTransition(LedgerError):
    """The requested state change is not allowed from the row's current state."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _dump(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    if len(text) > _MAX_JSON:
        # Evidence is the only open-ended part; keep the contract fields and say what was cut.
        if isinstance(value, dict) and "evidence" in value:
            return _dump({**value, "evidence": {**_rails_evidence(value["evidence"]),
                                                "_truncated": f"{len(text)} characters"}})
        return json.dumps({"_truncated": f"{len(text)} characters", "head": text[:1000]})
    return text


def _rails_evidence(evidence: Any) -> dict[str, Any]:
    """The evidence columns the rails read (sender, sender domain, account, recipient, connector): kept
    when the rest is cut, so the re-check at approval still meets the allowlists (issue 13: an
    allowlisted sender was moved after approval because its evidence had been cut)."""
    from remediation.rails import RAILS_EVIDENCE_COLUMNS  # here: rails import the registry's actions

    if not isinstance(evidence, dict):
        return {}
    return {k: v[:512] for k in RAILS_EVIDENCE_COLUMNS
            if isinstance(v := evidence.get(k), str)}


def _load(text: str | None) -> Any:
    return json.loads(text) if text else None


@dataclass
class Record:
    """One ledger row, decoded. ``etag`` is what the next conditional write must match."""

    request_id: str
    rule: str
    action: str
    target: dict[str, Any]
    mode: str
    state: str
    request: dict[str, Any] | None = None
    run_id: str | None = None
    hold_reason: str | None = None
    attempts: int = 0
    detail: str = ""
    error: str | None = None
    link: str | None = None
    undo: dict[str, Any] | None = None
    created_at: str = ""
    updated_at: str = ""
    state_times: dict[str, str] = field(default_factory=dict)
    claim_token: str | None = None
    claim_until: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)   # approved_by, undone_by, ...
    etag: str = ""

    def claimed(self, now: datetime) -> bool:
        return bool(self.claim_until) and _parse_iso(self.claim_until) > now  # type: ignore[arg-type]

    def outcome(self) -> Outcome:
        return Outcome(request_id=self.request_id, rule=self.rule, action=self.action, target=self.target,
                       mode=self.mode, state=self.state, detail=self.detail, error=self.error,
                       link=self.link, attempts=self.attempts, hold_reason=self.hold_reason,
                       extra={k: v for k, v in self.extra.items() if v is not None and v is not False})

    @property
    def dry_run_skip(self) -> bool:
        """Settled only by a dry run: a later live decision for the same id may reopen it."""
        return self.state == "skipped" and self.extra.get("dry_run") is True


# Columns that map one-to-one onto Record fields; JSON columns are encoded separately.
_PLAIN = ("action", "mode", "state", "run_id", "hold_reason", "attempts", "detail", "error", "link",
          "created_at", "updated_at", "claim_token", "claim_until")
_JSON = ("target", "request", "undo")
# Written as "" when cleared (a MERGE ignores absent columns), read back as None.
_OPTIONAL = frozenset({"run_id", "hold_reason", "error", "link", "claim_token", "claim_until"})
# dry_run: the row's ``skipped`` is a dry run (re-actionable once the decision is no longer dry run);
# dry_run_at/_detail/_run_id: the dry run's history, kept after the request is reopened and acted on.
_EXTRA = ("approved_by", "rejected_by", "undone_by", "undo_of", "network_message_id", "dequeue_count",
          "executed_by", "dry_run", "dry_run_at", "dry_run_detail", "dry_run_run_id", "reopened_at",
          # claimed_by: a name the caller gave but nobody verified (HTTP body behind a shared function key);
          # run_by_hand: a person ran the command themselves (connector actions in manual mode).
          "claimed_by", "run_by_hand",
          # blocked: why an action was refused when on-call fixes it differently ("privileged_target").
          "blocked",
          # expiry_announced: an expired row (remediation/expiry.py) is on an on-call card already.
          "expiry_announced",
          # intent_at: when a delivery was first about to call the action (kept across deliveries);
          # intent_by: the claim owner of the latest delivery that wrote it (remediation/intent.py).
          "intent_at", "intent_by",
          # released_by: the claim owner that gave the row back after the action ANSWERED transient (a 429,
          # no connection), not after a crash or deadline: its intent is settled (intent.ambiguous_prior).
          "released_by",
          # unconfirmed_submission: submitted after an ambiguous answer (the service may not have taken it);
          # resubmitted_at/first_submitted_at: verification reopened it once to resubmit it
          # (remediation/resubmit.py).
          "unconfirmed_submission", "resubmitted_at", "first_submitted_at",
          # decided_by_id/_from/_via: the signed-in person's Entra object id, client address and the
          # channel of an approve/reject (page, cli, function-key); approved_by/rejected_by hold the UPN.
          "decided_by_id", "decided_from", "decided_via")


def _to_entity(rec: Record) -> dict[str, Any]:
    ent: dict[str, Any] = {"PartitionKey": rec.rule, "RowKey": rec.request_id}
    for name in _PLAIN:
        ent[name] = getattr(rec, name)
    for name in _JSON:
        ent[name] = _dump(getattr(rec, name)) if getattr(rec, name) is not None else None
    for state, at in rec.state_times.items():
        ent[f"at_{state}"] = at
    for name in _EXTRA:
        if name in rec.extra:
            ent[name] = rec.extra[name]
    return ent


def _from_entity(ent: Any) -> Record:
    rec = Record(request_id=ent["RowKey"], rule=ent["PartitionKey"], action=ent.get("action", ""),
                 target=_load(ent.get("target")) or {}, mode=ent.get("mode", ""),
                 state=ent.get("state", ""), etag=ent.metadata.get("etag", "") if hasattr(ent, "metadata")
                 else "")
    for name in _PLAIN:
        value = ent.get(name)
        if value is None or (value == "" and name in _OPTIONAL):
            value = "" if name == "detail" else getattr(rec, name)
        setattr(rec, name, value)
    rec.request = _load(ent.get("request"))
    rec.undo = _load(ent.get("undo"))
    rec.state_times = {s: ent[f"at_{s}"] for s in STATES if ent.get(f"at_{s}")}
    rec.extra = {k: ent[k] for k in _EXTRA if ent.get(k) is not None}
    return rec


class Ledger:
    def __init__(self, table_client: TableClient, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.table = table_client
        self.clock = clock

    # --- construction -------------------------------------------------------------------------------

    @classmethod
    def from_connection_string(cls, conn: str, table: str, *, create: bool = True, **kw: Any) -> Ledger:
        """Key-based access (Azurite, local use)."""
        ledger = cls(TableClient.from_connection_string(conn, table), **kw)
        if create:
            ledger.ensure_table()
        return ledger

    @classmethod
    def from_account_url(cls, account_url: str, table: str, credential: Any, *, create: bool = True,
                         **kw: Any) -> Ledger:
        """Identity-based access in production: ``https://<account>.table.core.windows.net`` and an
        azure-identity credential holding *Storage Table Data Contributor* on the account."""
        ledger = cls(TableClient(endpoint=account_url, table_name=table, credential=credential), **kw)
        if create:
            ledger.ensure_table()
        return ledger

    def iso_now(self) -> str:
        """The ledger clock's time as stored in rows (ISO UTC, seconds)."""
        return _iso(self.clock())

    def ensure_table(self) -> None:
        with contextlib.suppress(ResourceExistsError):
            self.table.create_table()

    # --- reading ------------------------------------------------------------------------------------

    def read(self, rule: str, request_id: str) -> Record | None:
        """Point read (cheapest); ``get`` when the rule is not known."""
        try:
            return _from_entity(self.table.get_entity(rule, request_id))
        except ResourceNotFoundError:
            return None

    def get(self, request_id: str) -> Record | None:
        """Find a request by id in any rule's partition."""
        rows = self._query("RowKey eq @id and PartitionKey ne @m", {"id": request_id, "m": MARKERS})
        return next(rows, None)

    def find_prefix(self, prefix: str, limit: int = 20) -> list[Record]:
        """Up to ``limit`` requests whose id starts with ``prefix`` (a RowKey range in every rule's
        partition: the CLI accepts shortened ids)."""
        if not prefix:
            return []
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        rows = self._query("RowKey ge @lo and RowKey lt @hi and PartitionKey ne @m",
                           {"lo": prefix, "hi": upper, "m": MARKERS})
        return [rec for _, rec in zip(range(limit), rows, strict=False)]

    def list(self, rule: str | None = None, state: str | None = None, *, run_id: str | None = None,
             action: str | None = None, dry_run_run_id: str | None = None,
             hold_reason: str | None = None) -> list[Record]:
        clauses, params = ["PartitionKey ne @m"], {"m": MARKERS}
        for column, value in (("PartitionKey", rule), ("state", state), ("run_id", run_id),
                              ("action", action), ("dry_run_run_id", dry_run_run_id),
                              ("hold_reason", hold_reason)):
            if value is not None:
                clauses.append(f"{column} eq @{column.lower()}")
                params[column.lower()] = value
        recs = list(self._query(" and ".join(clauses), params))
        return sorted(recs, key=lambda r: (r.created_at, r.rule, r.request_id))

    def where(self, flt: str, params: dict[str, Any]) -> list[Record]:
        """Request rows matching an OData filter (``@name`` parameters), markers excluded."""
        return list(self._query(f"PartitionKey ne @m and ({flt})", {**params, "m": MARKERS}))

    def _query(self, flt: str, params: dict[str, Any]) -> Iterator[Record]:
        for ent in self.table.query_entities(flt, parameters=params):
            yield _from_entity(ent)

    # --- writing ------------------------------------------------------------------------------------

    def receive(self, request: dict[str, Any], *, state: str = "received",
                **fields: Any) -> tuple[Record, bool]:
        """Record a request the first time it is seen. Returns (row, created); an existing row is
        returned untouched, which is what makes a duplicate delivery harmless."""
        now = _iso(self.clock())
        run = request.get("run") or {}
        rec = Record(request_id=request["id"], rule=request["rule"], action=request["action"],
                     target=dict(request["target"]), mode=request["mode"], state=state, request=request,
                     run_id=run.get("id"), created_at=now, updated_at=now, state_times={state: now})
        target = request["target"]
        if target.get("network_message_id"):
            rec.extra["network_message_id"] = target["network_message_id"]
        _apply(rec, fields)
        try:
            meta = self.table.create_entity(_to_entity(rec))
        except ResourceExistsError:
            existing = self.read(rec.rule, rec.request_id)
            if existing is None:   # deleted between the two calls: try once more
                return self.receive(request, state=state, **fields)
            return existing, False
        rec.etag = meta["etag"]
        return rec, True

    def record_invalid(self, body: str | bytes, reason: str, **extra: Any) -> Record:
        """A message that is not a valid request: kept (never dropped) under the ``~invalid``
        partition, keyed by a hash of the body so a redelivery updates the same row."""
        raw = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        key = hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]
        existing = self.read(INVALID, key)
        now = _iso(self.clock())
        if existing is not None:
            existing.attempts += 1
            existing.updated_at = now
            existing.extra.update({k: v for k, v in extra.items() if k in _EXTRA})
            return self._write(existing, conditional=False)
        rec = Record(request_id=key, rule=INVALID, action="", target={}, mode="", state="failed",
                     request={"raw": raw[:_MAX_JSON // 2]}, attempts=1, error=reason[:2000],
                     detail="not a valid remediation-request/1 message; nothing was done",
                     created_at=now, updated_at=now, state_times={"failed": now},
                     extra={k: v for k, v in extra.items() if k in _EXTRA})
        try:
            rec.etag = self.table.create_entity(_to_entity(rec))["etag"]
        except ResourceExistsError:
            return self.record_invalid(body, reason, **extra)
        return rec

    def transition(self, rec: Record, state: str, **fields: Any) -> Record:
        """Move ``rec`` to ``state`` if nobody changed it since it was read. Releases any claim."""
        if state not in TRANSITIONS.get(rec.state, frozenset()):
            raise IllegalTransition(f"request {rec.request_id}: {rec.state} -> {state} is not allowed")
        new = replace(rec, state_times=dict(rec.state_times), extra=dict(rec.extra))
        now = _iso(self.clock())
        new.state = state
        new.state_times[state] = now
        new.updated_at = now
        new.claim_token = new.claim_until = None
        _apply(new, fields)
        return self._write(new)

    def reopen(self, rec: Record, request: dict[str, Any]) -> Record:
        """A dry-run ``skipped`` row back to ``received`` for a live ``request`` with the same id.

        Request ids do not depend on the mode, so without this a finding first seen in dry run would
        stay settled for ever once the rule (or RESPONDER_DRY_RUN) goes live. The row takes the live
        request (mode, run, evidence) and its run id, so the live run's outcome card counts it; the
        dry run stays on the row (``dry_run_at``, ``dry_run_detail``, ``dry_run_run_id``, ``at_skipped``).
        ETag-conditional like every write: of two deliveries reopening together, one gets LedgerConflict.
        """
        if not rec.dry_run_skip:
            raise IllegalTransition(f"request {rec.request_id}: only a dry-run skip can be reopened "
                                    f"(state {rec.state})")
        new = replace(rec, state_times=dict(rec.state_times), extra=dict(rec.extra))
        now = _iso(self.clock())
        run = request.get("run") or {}
        new.state, new.updated_at = "received", now
        new.state_times["received"] = now
        new.request, new.mode, new.run_id = request, request["mode"], run.get("id") or rec.run_id
        new.claim_token = new.claim_until = new.error = new.hold_reason = None
        new.detail = f"reopened for a live decision after a dry run ({rec.detail})"
        new.extra.update(dry_run=False, reopened_at=now, dry_run_at=rec.state_times.get("skipped", ""),
                         dry_run_detail=rec.detail, dry_run_run_id=rec.run_id or "")
        return self._write(new)

    def reopen_unconfirmed(self, rec: Record, detail: str) -> Record:
        """An unconfirmed Defender submission back to ``received``, once, to be submitted again.

        The only way out of ``submitted`` other than TRANSITIONS: a row whose call got an ambiguous answer
        (``unconfirmed_submission``) and that was never reopened before. Any other submitted row (a 202
        answered, or one resubmitted already) raises IllegalTransition. The first submission stays on the
        row (``first_submitted_at``, ``at_submitted`` until the next submission, the intent).
        """
        if rec.state != "submitted" or rec.extra.get("unconfirmed_submission") is not True \
                or rec.extra.get("resubmitted_at"):
            raise IllegalTransition(f"request {rec.request_id}: only an unconfirmed submission can be "
                                    f"reopened, once (state {rec.state})")
        new = replace(rec, state_times=dict(rec.state_times), extra=dict(rec.extra))
        now = _iso(self.clock())
        new.state, new.updated_at, new.detail = "received", now, detail
        new.state_times["received"] = now
        new.claim_token = new.claim_until = new.error = None
        new.extra.update(resubmitted_at=now, first_submitted_at=rec.state_times.get("submitted", ""))
        return self._write(new)

    def update(self, rec: Record, **fields: Any) -> Record:
        """Change fields without a state change (conditional on the ETag)."""
        new = replace(rec, state_times=dict(rec.state_times), extra=dict(rec.extra))
        new.updated_at = _iso(self.clock())
        _apply(new, fields)
        return self._write(new)

    def claim(self, rec: Record, *, lease: timedelta, owner: str | None = None) -> Record:
        """Take the right to execute ``rec`` for ``lease``; counts an attempt. Raises LedgerConflict
        when someone else holds a live claim or changed the row since it was read."""
        now = self.clock()
        if rec.claimed(now):
            raise LedgerConflict(f"request {rec.request_id} is being executed elsewhere "
                                 f"(claim until {rec.claim_until})")
        return self.update(rec, claim_token=owner or uuid.uuid4().hex, claim_until=_iso(now + lease),
                           attempts=rec.attempts + 1)

    def release(self, rec: Record, **fields: Any) -> Record:
        """Give up a claim without a state change (e.g. a transient error: the queue will retry)."""
        return self.update(rec, claim_token=None, claim_until=None, **fields)

    def _write(self, rec: Record, *, conditional: bool = True) -> Record:
        ent = _to_entity(rec)
        # Cleared values must be written as empty, or MERGE keeps the old ones.
        for name in (*_PLAIN, *_JSON):
            if ent.get(name) is None:
                ent[name] = ""
        try:
            if conditional:
                meta = self.table.update_entity(ent, mode=UpdateMode.MERGE, etag=rec.etag,
                                                match_condition=MatchConditions.IfNotModified)
            else:
                meta = self.table.update_entity(ent, mode=UpdateMode.MERGE)
        except (ResourceModifiedError, ResourceNotFoundError) as exc:
            raise LedgerConflict(f"request {rec.request_id} changed since it was read") from exc
        rec.etag = meta["etag"]
        return rec

    # --- at-most-once markers -----------------------------------------------------------------------

    def claim_once(self, key: str, **info: Any) -> bool:
        """True exactly once per ``key`` across all workers (e.g. "card for run X sent")."""
        row = {"PartitionKey": MARKERS, "RowKey": _safe_key(key), "key": key[:1000],
               "at": _iso(self.clock()), **{k: str(v) for k, v in info.items()}}
        try:
            self.table.create_entity(row)
        except ResourceExistsError:
            return False
        return True

    def forget_once(self, key: str) -> None:
        """Undo ``claim_once`` (e.g. the card could not be sent, let the next attempt try)."""
        with contextlib.suppress(ResourceNotFoundError):
            self.table.delete_entity(MARKERS, _safe_key(key))


def _safe_key(key: str) -> str:
    # RowKey forbids / \ # ? and control characters and holds at most 1 KiB: hash anything unusual.
    if key and len(key) <= 200 and key.isprintable() and not any(c in key for c in "/\\#?"):
        return key
    return "h-" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def _apply(rec: Record, fields: dict[str, Any]) -> None:
    for name, value in fields.items():
        if name in _EXTRA:
            rec.extra[name] = value
        elif hasattr(rec, name) and name not in ("request_id", "rule", "etag", "state_times", "extra"):
            setattr(rec, name, value)
        else:
            raise TypeError(f"unknown ledger field {name!r}")
