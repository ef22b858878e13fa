"""The approval card: held requests with their evidence, the exact command, and how to approve."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from notifications import links
from notifications.common import (
    CONNECTOR_ACTIONS,
    MAX_EVIDENCE_FIELDS,
    approve_cli,
    approve_http,
    buttons,
    done_cli,
    done_http,
    header,
    open_request,
    stop_banner,
)
from notifications.elements import (
    Element,
    card,
    clip,
    container,
    known_severity,
    labelled,
    more_line,
    plain,
    run,
    severity_colour,
    text,
)
from notifications.entities import action_label, describe_target
from notifications.message import MAX_MESSAGE_BYTES, fit
from remediation.outcome import Outcome


def approval_card(requests: Sequence[dict[str, Any]], *, outcomes: Sequence[Outcome] = (),
                  commands: Mapping[str, str] | None = None, api_base: str | None = None,
                  tenant_id: str | None = None, limit: int = MAX_MESSAGE_BYTES,
                  by_hand: Collection[str] = (), emergency_stop: str | None = None) -> dict[str, Any]:
    """Requests that wait for a person: evidence, the exact command when given, how to approve.

    ``commands`` maps request id -> the exact command a person would run instead (e.g. the
    Exchange Online PowerShell line for a connector); it is shown verbatim, never clipped.
    ``by_hand``: ids the app cannot run (connectors under RESPONDER_CONNECTOR_ACTIONS=manual): the card
    says to run the command and then mark it done, never "to approve" (approving them runs nothing).
    ``api_base`` is the function app's URL, e.g. ``https://func-xdr.azurewebsites.net``.
    ``emergency_stop``: the stop's line when it is on (a banner: approving is refused until it is cleared).
    """
    if not requests:
        raise ValueError("approval_card needs at least one request")
    reasons = {o.request_id: o.hold_reason for o in outcomes}
    manual = frozenset(by_hand)
    return fit(lambda n, w: _approval(list(requests), reasons, commands or {}, api_base, tenant_id, n, w,
                                      manual, emergency_stop), limit=limit)


def _hold_text(reason: str | None, mode: str | None) -> str:
    if reason == "cap":
        return "Held because the run went past the rule's cap on targets per run."
    if reason == "unverifiable":
        return "Held because the sender allowlist cannot be checked: the request names no sender."
    if reason == "emergency_stop":
        return "Held by the emergency stop: approve it once the stop is cleared, if it should still run."
    if reason == "approval" or mode == "approval":
        return "Held because this action runs in approval mode."
    return "Held for approval."


def _approval_block(r: dict[str, Any], reason: str | None, command: str | None, api_base: str | None,
                    n: int, w: int, by_hand: bool = False) -> Element:
    rid = r["id"]
    items: list[Element] = [
        plain(run(f"{action_label(r['action'])}: ", weight="Bolder", size="Medium"),
              run(clip(describe_target(r), w), size="Medium")),
        plain(run(clip(r.get("rule_name") or r["rule"], w), weight="Bolder"),
              run(f" ({r['rule']})", isSubtle=True),
              run(f" · {sev}" if (sev := known_severity(r.get("severity"))) else "",
                  color=severity_colour(sev or "")),
              run(f" · detected {r.get('detected_at', 'unknown')}", isSubtle=True), spacing="Small"),
        text(_hold_text(reason, r.get("mode")), isSubtle=True, spacing="Small"),
    ]
    evidence = list((r.get("evidence") or {}).items())
    shown = min(len(evidence), MAX_EVIDENCE_FIELDS, max(n, 2))
    if evidence:
        items.append(text("Evidence", weight="Bolder", spacing="Small"))
        items.extend(labelled(str(k), clip(v, w), spacing="None") for k, v in evidence[:shown])
        if len(evidence) > shown:
            items.append(more_line(len(evidence) - shown, "evidence fields"))
    if (button := open_request(rid, api_base)) is not None:
        items.append(button)
    if by_hand:
        # The app holds no permission for this (connector actions are manual): approving would run
        # nothing, so the card asks for the command and then a record that it was run.
        items.append(text("Run this command (Exchange Online PowerShell):", weight="Bolder", spacing="Small"))
        items.append(plain(run(command or "(no command: see the ledger)", fontType="Monospace"),
                           spacing="None"))
        items.append(text("then mark it done", weight="Bolder", spacing="Small"))
        items.append(plain(run(done_cli(rid), fontType="Monospace"), spacing="None"))
        items.append(plain(run(done_http(rid), fontType="Monospace"), spacing="None"))
        items.append(text("Or reject it", isSubtle=True, spacing="Small"))
        items.append(plain(run(approve_http(rid, verb="reject"), fontType="Monospace"), spacing="None"))
        return container(items, separator=True, spacing="Medium")
    if command:
        items.append(text("Or run it yourself (Exchange Online PowerShell):", weight="Bolder",
                          spacing="Small"))
        items.append(plain(run(command, fontType="Monospace"), spacing="None"))
    items.append(text("To approve", weight="Bolder", spacing="Small"))
    items.append(plain(run(approve_cli(rid), fontType="Monospace"), spacing="None"))
    # Paths without the host: a full URL is too long to wrap; the host is named once at the top.
    items.append(plain(run(approve_http(rid), fontType="Monospace"), spacing="None"))
    items.append(text("To reject", isSubtle=True, spacing="Small"))
    items.append(plain(run(approve_http(rid, verb="reject"), fontType="Monospace"), spacing="None"))
    return container(items, separator=True, spacing="Medium")


def _approval(requests: list[dict[str, Any]], reasons: Mapping[str, str | None],
              commands: Mapping[str, str], api_base: str | None, tenant_id: str | None,
              n: int, w: int, by_hand: frozenset[str] = frozenset(),
              emergency_stop: str | None = None) -> dict[str, Any]:
    count = len(requests)
    noun = "action waits" if count == 1 else "actions wait"
    severities = [known_severity(r.get("severity")) for r in requests]
    top = next((s for s in ("High", "Medium", "Low", "Informational") if s in severities), None)
    body: list[Element] = [header("approval", "XDR responder · approval needed",
                                   f"{count} {noun} for a person", top, "warning")]
    body.extend(stop_banner(emergency_stop))
    if any(r["id"] in by_hand for r in requests):
        body.append(text("Nothing below has been done yet. Connector actions are manual in this deployment "
                         "(RESPONDER_CONNECTOR_ACTIONS=manual): the app has no Exchange permission, so run "
                         "each command yourself, then mark it done. The HTTP endpoints need the function key "
                         "(header x-functions-key).", spacing="Small"))
    else:
        body.append(text("Nothing below has been done yet. Each action runs only after someone approves it. "
                         "The HTTP endpoints need the function key (header x-functions-key).",
                         spacing="Small"))
    if api_base:
        body.append(labelled("Function app", api_base.rstrip("/"), mono=True, spacing="Small"))
    shown = max(n, 1)  # an approval card always shows at least one request in full
    for r in requests[:shown]:
        body.append(_approval_block(r, reasons.get(r["id"]), commands.get(r["id"]), api_base, n, w,
                                    r["id"] in by_hand))
    if count > shown:
        rest = requests[shown:]
        body.append(more_line(count - shown, "held requests"))
        ids = [r["id"] for r in rest[:max(n, 1) * 3]]
        runs: list[Element] = [run("Their ids: ", isSubtle=True), run(", ".join(ids), fontType="Monospace")]
        if len(rest) > len(ids):
            runs.append(run(f" and {len(rest) - len(ids)} more", isSubtle=True, italic=True))
        body.append(plain(*runs, spacing="None"))
    candidates = []
    if any(r["action"] in CONNECTOR_ACTIONS for r in requests):
        candidates.append(("Connectors", links.exchange_connectors()))
    candidates += [("Incidents", links.incidents(tenant_id)), ("Hunting", links.advanced_hunting(tenant_id))]
    return card(body, buttons(candidates), fallback=f"Approval needed: {count} {noun} for a person")
