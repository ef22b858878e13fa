"""Rules and requests for the remediation tests (built in code, so each test states what it needs)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from core.request import make_request
from detections.catalog import ActionSpec, ParamSpec, Rule

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
PROTECTED = ["support@contoso.com", "sales@contoso.com", "info@contoso.com"]


def make_rule(slug: str = "shared-mailboxes",
              actions: tuple[tuple[str, str], ...] = (("move_to_junk", "auto"),),
              max_targets: int = 3, recipients_param: str | None = "protected_recipients") -> Rule:
    params = {"window": ParamSpec("window", "timespan", timedelta(hours=1), False, "lookback")}
    if recipients_param:
        params[recipients_param] = ParamSpec(recipients_param, "string_list", None, True, "protected")
    return Rule(slug=slug, id="5b1f3f8e-6c7a-4d0e-9a43-6f1e2d7c9b10", name=f"rule {slug}", description="",
                severity="Medium", platform="defender", query_frequency=timedelta(minutes=5),
                query_period=timedelta(hours=1), query="EmailEvents", parameters=params,
                actions=[ActionSpec(a, m, {}, []) for a, m in actions], max_targets=max_targets,
                recipients_param=recipients_param, path=Path(f"{slug}.yaml"), raw={})


def email_request(nmid: str, recipient: str = "support@contoso.com", *, rule: str = "shared-mailboxes",
                  action: str = "move_to_junk", mode: str = "auto", index: int = 0, run: str = "run-1",
                  imid: str | None = None, **evidence: Any) -> dict[str, Any]:
    ev = {"SenderFromAddress": "bad@gmail.com", "SenderMailFromAddress": "bad@gmail.com", **evidence}
    target = {"network_message_id": nmid, "recipient": recipient}
    if imid:
        target["internet_message_id"] = imid
    return make_request(rule=rule, action=action, mode=mode, target=target, evidence=ev, detected_at=T0,
                        run={"id": run, "index": index, "total": index + 1}, severity="Medium",
                        rule_name=f"rule {rule}")


def user_request(user: str, action: str = "revoke_sessions", *, rule: str = "connectors", mode: str = "auto",
                 **evidence: Any) -> dict[str, Any]:
    return make_request(rule=rule, action=action, mode=mode, target={"user": user}, evidence=evidence,
                        detected_at=T0, run={"id": "run-c", "index": 0, "total": 1})


def connector_request(name: str, *, rule: str = "connectors", mode: str = "auto",
                      connector_type: str = "inbound") -> dict[str, Any]:
    return make_request(rule=rule, action="disable_connector", mode=mode,
                        target={"connector": name, "connector_type": connector_type}, evidence={},
                        detected_at=T0, run={"id": "run-c", "index": 0, "total": 1})
