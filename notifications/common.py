"""Pieces every card shares: the coloured header, the button row, how-to-approve commands."""

from __future__ import annotations

from collections.abc import Sequence

from notifications import links
from notifications.elements import (
    Element,
    clip,
    container,
    known_severity,
    open_url,
    plain,
    run,
    severity_colour,
    text,
)
from remediation.outcome import Outcome

# Teams puts buttons in one row and cuts their titles when crowded: few buttons, short titles.
MAX_BUTTONS = 4
# Evidence columns shown per request on the approval card (rules pick them to explain the finding).
MAX_EVIDENCE_FIELDS = 12
CONNECTOR_ACTIONS = frozenset({"disable_connector"})


def open_request(request_id: str, api_base: str | None) -> Element | None:
    """The "Open" button of one held request: the signed-in approval page at <app>/requests/<id>
    (app/pages.py), where on-call sees it whole and approves or rejects. None without an https app URL."""
    url = f"{(api_base or '').rstrip('/')}/requests/{request_id}"
    if not api_base or not links.is_safe_link(url):
        return None
    return {"type": "ActionSet", "spacing": "Small", "actions": [open_url("Open", url)]}


def approve_cli(request_id: str) -> str:
    return f"python -m responder approve {request_id}"


def approve_http(request_id: str, api_base: str | None = None, verb: str = "approve") -> str:
    base = (api_base or "").rstrip("/")
    return f"POST {base}/api/requests/{request_id}/{verb}"


def done_cli(request_id: str) -> str:
    """Records that a person ran the shown command (RESPONDER_CONNECTOR_ACTIONS=manual); runs nothing."""
    return f"python -m responder approve {request_id} --done"


def done_http(request_id: str, api_base: str | None = None) -> str:
    return approve_http(request_id, api_base) + ' with body {"done": true}'


def header(kind: str, kicker: str, title: str, severity: str | None, style: str) -> Element:
    items: list[Element] = [
        text(kicker, size="Small", isSubtle=True, spacing="None"),
        plain(run(title, size="Large", weight="Bolder"), spacing="Small"),
    ]
    severity = known_severity(severity)
    if severity:
        items.append(text(f"{severity} severity", color=severity_colour(severity), weight="Bolder",
                          spacing="Small"))
    # The id names the card kind (FileNotifier file names, tests); ids are legal on any element.
    return container(items, style=style, bleed=True, id=f"xdr-{kind}")


def buttons(candidates: Sequence[tuple[str, str]]) -> list[Element]:
    seen: set[str] = set()
    out: list[Element] = []
    for title, raw in candidates:
        url = links.encode_url(raw)   # service-given links (Location headers) may hold quotes and braces
        if url in seen or not links.is_safe_link(url):
            continue
        seen.add(url)
        out.append(open_url(title, url))
    return out[:MAX_BUTTONS]


def outcome_links(outcomes: Sequence[Outcome], limit: int) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for o in outcomes:
        if o.link and links.is_safe_link(o.link) and all(o.link != u for _, u in found):
            found.append(("Submission" if not found else f"Submission {len(found) + 1}", o.link))
    return found[:limit]


def stop_banner(line: str | None) -> list[Element]:
    """The emergency stop, when on: one line at the top of a card (every action is held until cleared)."""
    if not line:
        return []
    return [text(f"{clip(line, 600)}. Every action is held until it is cleared (python -m responder stop "
                 "off, or POST /api/stop/clear); approving is refused meanwhile.", weight="Bolder",
                 color="attention", spacing="Small")]
