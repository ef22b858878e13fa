"""Queue-path grouping of sibling requests (Defender strategy).

Each message is one request, but Defender allows only 50 active remediations per organisation and shows
each call as one Action-center entry, so one call per message would exhaust the limit on any real
campaign. When a message's request is executed, the worker also claims the run's other ``received``
requests for the same action (ETag claims: a row another worker got first is left alone), passes them
through the rails one by one, and submits them in the same call; their own messages later find them
``submitted`` and do nothing. This only helps if the run's requests are in the ledger before their
messages are processed, so the enqueuing side calls ``Worker.register(requests)`` before sending them;
without it the worker degrades to one call per message, which is correct, only slower and noisier.
Siblings are claimed with the delivery's own owner and only when unclaimed or their lease expired (never
a live claim), exactly like the message's own request (claims.py); a storage error leaves a sibling to
its own message.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from core.request import RequestInvalid
from core.settings import Settings
from core.tenant import TenantConfig
from detections.catalog import Rule
from remediation.actions.registry import Registry, default_registry
from remediation.claims import Claimed, claim
from remediation.intent import StorageError
from remediation.ledger import Ledger
from remediation.rails import decide

# Most requests submitted together (Defender takes many per call; one bounded group keeps a single
# failure from touching a whole campaign).
MAX_GROUP = 100


def claim_siblings(items: list[Claimed], owner: str, *, ledger: Ledger, settings: Settings,
                   tenant: TenantConfig, catalog: Mapping[str, Rule], lease: timedelta,
                   registry: Registry | None = None) -> list[Claimed]:
    """The run's other executable ``received`` requests for the first item's action, claimed by ``owner``."""
    if settings.email_strategy != "defender":
        return []
    registry = registry or default_registry()
    first = items[0].record
    spec = registry.find(first.action)
    if spec is None or spec.family != "email" or not first.run_id:
        return []
    have = {i.request["id"] for i in items}
    out: list[Claimed] = []
    now = ledger.clock()
    # Same rule too: a run belongs to one rule, and the rule is the partition (no table scan).
    try:
        siblings = ledger.list(rule=first.rule, run_id=first.run_id, state="received", action=first.action)
    except StorageError:
        return []   # grouping is an optimisation; the message's own request still runs
    for sib in siblings:
        if len(items) + len(out) >= MAX_GROUP:
            break
        if sib.request_id in have or sib.claimed(now) or not sib.request:
            continue
        try:
            req = registry.contract().validate(sib.request)
        except RequestInvalid:
            continue
        if "_truncated" in (req.get("evidence") or {}):
            continue   # the rails need the full evidence; its own message will bring it
        decision = decide(req, settings=settings, tenant=tenant, catalog=catalog, registry=registry)
        if decision.kind != "execute":
            continue   # held/skipped ones are settled by their own message
        try:
            claimed = claim(ledger, sib, owner, lease=lease)   # a live claim elsewhere: None
        except StorageError:
            continue   # optional: its own message will bring it
        if claimed is not None:
            out.append(Claimed(req, claimed))
    return out
