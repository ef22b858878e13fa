"""The approval page's HTML: plain server-rendered markup, no script.

Everything shown comes from mail and the ledger (subjects, addresses, evidence: attacker-controlled),
so every value goes through ``e`` (html.escape with quotes) and nothing is ever put in a script, a
style or an unquoted attribute. A Content-Security-Policy with no script source is sent as well
(app/pages.py), so even a missed escape could not run code.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from remediation.stop import StopState

STYLE = """body{font-family:Segoe UI,system-ui,sans-serif;margin:2rem;max-width:60rem;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;
vertical-align:top}pre,code{font-family:Consolas,monospace;white-space:pre-wrap;word-break:break-all}
.state{font-weight:bold}form{display:inline-block;margin-right:1rem}button{padding:.5rem 1.2rem}
.msg{padding:.6rem;border:1px solid #c88;background:#fee}
.stop{padding:.8rem;border:2px solid #b00;background:#fdd;font-weight:bold}"""


def e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def page(title: str, body: str) -> str:
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{e(title)}</title><style>{STYLE}</style></head><body>{body}</body></html>")


def kv_table(rows: Iterable[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{e(k)}</th><td>{_value(v)}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def _value(v: Any) -> str:
    if isinstance(v, dict | list):
        return f"<pre>{e(json.dumps(v, indent=2, ensure_ascii=False, sort_keys=True))}</pre>"
    return e(v)


def form(action: str, label: str, token: str, name: str) -> str:
    return (f"<form method=\"post\" action=\"{e(action)}\"><input type=\"hidden\" name=\"csrf\" "
            f"value=\"{e(token)}\"><button type=\"submit\" name=\"{e(name)}\" value=\"1\">{e(label)}"
            "</button></form>")


def stop_banner(stop: StopState | None) -> str:
    """Shown on every page while the emergency stop is on: nothing approved here runs until it is cleared."""
    if stop is None or not stop.on:
        return ""
    return (f"<p class=\"stop\" role=\"alert\">{e(stop.describe())}: every action is held. "
            "<a href=\"/stop\">Emergency stop</a></p>")


def request_page(view: Mapping[str, Any], *, who: str, token: str | None, message: str | None = None,
                 stop: StopState | None = None) -> str:
    rid = view["id"]
    parts = [stop_banner(stop),
             f"<h1>{e(view['action'])} &mdash; <span class=\"state\">{e(view['state'])}</span></h1>"]
    if message:
        parts.append(f"<p class=\"msg\">{e(message)}</p>")
    parts.append(f"<p>Signed in as {e(who)}.</p>")
    parts.append("<h2>What would be done, to what, why</h2>")
    parts.append(kv_table([("Request", rid), ("Rule", f"{view['rule_name']} ({view['rule']})"),
                           ("Severity", view.get("severity", "")), ("Action", view["action"]),
                           ("Mode", view["mode"]), ("State", view["state"]),
                           ("Why held", view.get("hold_reason") or ""), ("Detail", view.get("detail") or ""),
                           ("Run", view.get("run_id") or "")]))
    if view.get("command"):
        parts.append(f"<h3>Exact command</h3><pre>{e(view['command'])}</pre>")
    parts.append("<h3>Target</h3>" + kv_table(sorted(view["target"].items())))
    parts.append("<h3>Evidence</h3>" + kv_table(sorted(view["evidence"].items())))
    parts.append("<h2>History</h2>" + kv_table(view["history"]))
    if view.get("run_id"):
        parts.append(f"<p><a href=\"/runs/{e(view['run_id'])}\">All requests of this run</a></p>")
    if token and view["state"] == "held":
        approve = "" if view.get("by_hand") else form(f"/requests/{rid}/approve", "Approve", token, "approve")
        parts.append(approve + form(f"/requests/{rid}/reject", "Reject", token, "reject"))
    if token and view["state"] == "held" and view.get("by_hand"):
        parts.append("<p>The app runs nothing for this action here: run the command above, then</p>"
                     + form(f"/requests/{rid}/done", "Mark done", token, "done"))
    if token and view.get("can_undo"):
        parts.append(form(f"/requests/{rid}/undo", "Undo", token, "undo"))
    return page(f"Request {rid}", "".join(parts))


def run_page(run_id: str, rows: list[Mapping[str, Any]], *, who: str, token: str | None,
             message: str | None = None, stop: StopState | None = None) -> str:
    parts = [stop_banner(stop), f"<h1>Run {e(run_id)}</h1>"]
    if message:
        parts.append(f"<p class=\"msg\">{e(message)}</p>")
    parts.append(f"<p>Signed in as {e(who)}.</p>")
    head = "<tr><th>Request</th><th>Rule</th><th>Action</th><th>Target</th><th>State</th></tr>"
    body = "".join(
        f"<tr><td><a href=\"/requests/{e(r['id'])}\">{e(r['id'])}</a></td><td>{e(r['rule'])}</td>"
        f"<td>{e(r['action'])}</td><td>{_value(r['target'])}</td>"
        f"<td class=\"state\">{e(r['state'])}</td></tr>"
        for r in rows)
    parts.append(f"<table>{head}{body}</table>")
    held = sum(r["state"] == "held" for r in rows)
    if token and held:
        parts.append(form(f"/runs/{run_id}/approve", f"Approve all held ({held})", token, "approve"))
    if token and any(r["state"] == "confirmed" for r in rows):
        parts.append(form(f"/runs/{run_id}/undo", "Undo all done", token, "undo"))
    return page(f"Run {run_id}", "".join(parts))


def message_page(title: str, message: str, *, state: str | None = None, link: str | None = None,
                 link_text: str = "Back to the request") -> str:
    body = f"<h1>{e(title)}</h1><p class=\"msg\">{e(message)}</p>"
    if state:
        body += f"<p>Current state: <span class=\"state\">{e(state)}</span></p>"
    if link:
        body += f"<p><a href=\"{e(link)}\">{e(link_text)}</a></p>"
    return page(title, body)


def stop_page(stop: StopState, *, who: str, token: str, message: str | None = None) -> str:
    """``GET /stop``: the switch, who set it, when and why, and the one form that flips it."""
    parts = [stop_banner(stop), "<h1>Emergency stop</h1>"]
    if message:
        parts.append(f"<p class=\"msg\">{e(message)}</p>")
    parts.append(f"<p>Signed in as {e(who)}.</p>")
    parts.append(kv_table([("State", "on" if stop.on else "off"), ("Set by", stop.by), ("At", stop.at),
                           ("Reason", stop.reason)]))
    if stop.on:
        parts.append("<p>Clearing it lets new actions run; requests it held stay held.</p>"
                     + form("/stop/clear", "Clear the emergency stop", token, "clear"))
    else:
        parts.append(
            "<p>Turning it on holds every action (auto and approved) until it is cleared.</p>"
            "<form method=\"post\" action=\"/stop\"><input type=\"hidden\" name=\"csrf\" "
            f"value=\"{e(token)}\"><label>Reason <input name=\"reason\" required maxlength=\"500\" "
            "size=\"60\"></label> <button type=\"submit\" name=\"on\" value=\"1\">Turn the emergency stop on"
            "</button></form>")
    return page("Emergency stop", "".join(parts))
