"""The judge: the ledger's end state against the fake's, per request (docs/remediation.md,
"Fault-injection harness", has the definitions in prose).

For each request the fake says whether its target *changed* (the end state: the message is in Junk,
the Defender submission holding the email was accepted, the connector or account is disabled, the
user's sessions were revoked, the user is confirmed compromised) and how many times the service
*applied* the action to it (ChaosFake.applications: each accepted move, submission entry, PATCH,
revoke, confirmCompromised, Set-*Connector, counted even when a fault then replaced the answer).

The judge runs after the verification rounds (devtools/bench/chaos.py), so a Defender request's
``submitted`` has had the verify timer's chance to become ``confirmed``, ``not_applied`` or a resubmission.

* **lost**: the target did not change and the ledger does not record the request as ``failed``,
  ``held`` or ``not_applied`` with a reason (a row still ``received``, ``skipped``, or ``confirmed`` for
  nothing); or the request is *pending*.
* **pending** (also counted lost): a Defender request verification left open: still ``submitted``, or a
  resubmission still ``received``. Nobody knows yet whether it was done.
* **acted twice**: the service applied the action more than once to one target.
* **mismatched**: the ledger disagrees with the fake: the target changed but the row is not
  ``confirmed``/``submitted`` (recorded skipped, failed or still received: done by us, undo impossible
  from the ledger), or the row is ``confirmed``/``submitted`` but nothing changed, or it is
  ``confirmed``/``submitted`` without undo information for an action whose results carry it
  (``confirmed_without_undo``, also counted on its own).
* **resubmissions**: Defender requests verification resubmitted (the row's ``resubmitted_at``). Only
  when the first submission had been applied is a resubmission a second application (acted twice).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from devtools.chaos.fake import Applied
from remediation.ledger import Ledger, Record

DONE = frozenset({"confirmed", "submitted"})
ACCOUNTED = frozenset({"failed", "held", "not_applied"})
# Actions whose confirmed/submitted result carries undo information (remediation/actions/*).
WITH_UNDO = frozenset({"move_to_junk", "disable_user", "disable_connector"})
EXAMPLES = 5


@dataclass
class Verdict:
    requests: int = 0
    lost: int = 0
    pending: int = 0
    acted_twice: int = 0
    mismatched: int = 0
    confirmed_without_undo: int = 0
    resubmissions: int = 0
    states: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    ids: dict[str, list[str]] = field(default_factory=dict)   # kind -> every request id counted

    def note(self, kind: str, text: str, request_id: str) -> None:
        self.ids.setdefault(kind, []).append(request_id)
        found = self.examples.setdefault(kind, [])
        if len(found) < EXAMPLES:
            found.append(text)


def _truth(req: dict[str, Any], strategy: str, fake: Any, applied: Counter[Applied]) -> tuple[bool, int]:
    """(changed, times applied) for one request's target."""
    action, t = req["action"], req["target"]
    if action == "move_to_junk" and strategy == "mailbox":
        prefix = f"{t['recipient'].lower()}|{t['internet_message_id']}|"
        times = sum(c for a, c in applied.items() if a.kind == "move" and a.target.startswith(prefix))
        return fake.mailboxes.folder_of(t["recipient"], t["internet_message_id"]) == "junkemail", times
    if action == "move_to_junk":
        times = applied[Applied("remediate", f"{t['network_message_id']}|{t['recipient'].lower()}")]
        return times > 0, times
    if action == "disable_connector":
        item = fake.connectors.get(t["connector"]) or {}
        return item.get("Enabled") is False, applied[Applied("connector", t["connector"].lower())]
    if action == "revoke_sessions":
        times = applied[Applied("revoke", t["user"])]
        return times > 0, times
    if action == "disable_user":
        user = fake.users.get(t["user"])
        return bool(user and not user.account_enabled), applied[Applied("disable_user", t["user"])]
    if action == "confirm_compromised":
        return t["user"] in fake.compromised, applied[Applied("confirm", t["user"])]
    raise ValueError(f"the judge does not know action {action!r}")


def judge(queues: dict[str, list[dict[str, Any]]], fake: Any, ledger: Ledger) -> Verdict:
    v = Verdict()
    applied = fake.applications()
    for strategy, reqs in queues.items():
        for req in reqs:
            v.requests += 1
            changed, times = _truth(req, strategy, fake, applied)
            rec: Record | None = ledger.read(req["rule"], req["id"])
            state = rec.state if rec else "no row"
            v.states[state] += 1
            what = f"{req['action']}/{strategy} {req['id'][:12]}: ledger {state}"
            if times > 1:
                v.acted_twice += 1
                v.note("acted_twice", f"{what}, applied {times} times", req["id"])
            defender = req["action"] == "move_to_junk" and strategy == "defender"
            if rec and defender and rec.extra.get("resubmitted_at"):
                v.resubmissions += 1
            pending = defender and (state == "submitted" or (
                state == "received" and bool(rec and rec.extra.get("resubmitted_at"))))
            if pending:
                v.pending += 1
                v.note("pending", f"{what}, not settled by verification", req["id"])
            reason = bool(rec and (rec.error or rec.detail))
            if pending or (not changed and not (state in ACCOUNTED and reason)):
                v.lost += 1
                v.note("lost", f"{what}, target unchanged", req["id"])
            wrong = None
            if changed and state not in DONE:
                wrong = "target changed by us"
            elif not changed and state in DONE and not pending:
                wrong = "target unchanged"
            elif state in DONE and req["action"] in WITH_UNDO and not (rec and rec.undo):
                wrong = "no undo information"
                v.confirmed_without_undo += 1
            if wrong:
                v.mismatched += 1
                v.note("mismatched", f"{what}, {wrong}", req["id"])
    return v
