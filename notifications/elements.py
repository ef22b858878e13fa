"""Adaptive Card 1.5 element helpers shared by the card builders.

Teams treats TextBlock and FactSet text as Markdown. Values that come from mail or from the tenant
(subjects, addresses, connector names, error messages) are attacker-influenced: a subject such as
``[Reset password](https://evil.example)`` would become a clickable link on the on-call card. So
untrusted text only ever goes into RichTextBlock TextRuns, which Adaptive Cards never parse as
Markdown; TextBlock/FactSet carry only text this code wrote itself.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

Element = dict[str, Any]

SEVERITY_COLOURS = {"high": "attention", "medium": "warning", "low": "accent", "informational": "default"}
SEVERITY_STYLES = {"high": "attention", "medium": "warning", "low": "accent", "informational": "emphasis"}
SEVERITIES = ("Informational", "Low", "Medium", "High")   # the rule schema's enum


def known_severity(value: Any) -> str | None:
    """``value`` as one of the rule schema's severities, or None: a card never shows other text there
    (issue 13: a forged request's severity reached a Markdown TextBlock)."""
    if not isinstance(value, str):
        return None
    return next((s for s in SEVERITIES if s.lower() == value.strip().lower()), None)


def _item(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def clip(value: Any, limit: int) -> str:
    """``value`` as text, cut to ``limit`` characters with an honest note of what was cut.

    A list (a make_set/make_list evidence column, from any backend) reads as its items, comma-separated;
    a dict (a dynamic column) and nested values read as JSON, never as Python's repr."""
    if isinstance(value, list | tuple):
        value = ", ".join(_item(v) for v in value)
    elif isinstance(value, dict):
        value = _item(value)
    text = "" if value is None else str(value)
    text = " ".join(text.split()) if "\n" in text or "\r" in text else text
    if len(text) <= limit:
        return text
    keep = max(limit - 30, 1)
    return f"{text[:keep]}… (+{len(text) - keep} characters)"


def text(value: str, **props: Any) -> Element:
    """A TextBlock for text written by this code (may contain the Markdown Teams supports)."""
    return {"type": "TextBlock", "text": value, "wrap": True, **props}


def run(value: str, **props: Any) -> Element:
    return {"type": "TextRun", "text": value, **props}


def plain(*runs: Element | str, **props: Any) -> Element:
    """A RichTextBlock: its TextRuns are never parsed as Markdown (safe for untrusted text)."""
    inlines = [run(r) if isinstance(r, str) else r for r in runs]
    # An empty TextRun is invalid in some hosts; builders pass "" for optional parts.
    return {"type": "RichTextBlock", "inlines": [r for r in inlines if r.get("text")], **props}


def labelled(label: str, value: str, *, mono: bool = False, **props: Any) -> Element:
    """``Label: value`` on one line, the value untrusted and never Markdown."""
    value_run = run(value, fontType="Monospace") if mono else run(value)
    return plain(run(f"{label}: ", weight="Bolder"), value_run, **props)


def heading(value: str, **props: Any) -> Element:
    return text(value, weight="Bolder", size="Medium", spacing="Medium", **props)


def facts(pairs: Sequence[tuple[str, str]]) -> Element:
    """A FactSet: only for values this code computed (counts, times, states)."""
    return {"type": "FactSet", "facts": [{"title": t, "value": v} for t, v in pairs]}


def container(items: list[Element], **props: Any) -> Element:
    return {"type": "Container", "items": items, **props}


def more_line(hidden: int, noun: str) -> Element:
    return text(f"and {hidden} more {noun}".rstrip(), isSubtle=True, spacing="Small", size="Small")


def inline_list(label: str, values: Sequence[str], total: int, limit: int, width: int) -> Element:
    """``Label (total): a, b, c and 412 more``; the truncation count is always exact."""
    shown = [clip(v, width) for v in values[:limit]]
    runs: list[Element] = [run(f"{label} ({total}): ", weight="Bolder")]
    if shown:
        runs.append(run(", ".join(shown)))
    hidden = total - len(shown)
    if hidden > 0:
        runs.append(run(f"{' ' if shown else ''}and {hidden} more", isSubtle=True, italic=True))
    return plain(*runs, spacing="Small")


def card_kind(card: dict[str, Any]) -> str:
    """``scan``, ``approval``, ``failure`` or ``digest`` for cards built here (the header's id)."""
    body = card.get("body") or [{}]
    ident = str(body[0].get("id", "")) if isinstance(body[0], dict) else ""
    return ident.removeprefix("xdr-") if ident.startswith("xdr-") else "card"


def open_url(title: str, url: str) -> Element:
    return {"type": "Action.OpenUrl", "title": title, "url": url}


def severity_colour(severity: str) -> str:
    return SEVERITY_COLOURS.get(severity.strip().lower(), "default")


def severity_style(severity: str) -> str:
    return SEVERITY_STYLES.get(severity.strip().lower(), "emphasis")


def when(moment: datetime | str | None) -> str:
    """UTC, to the second: on-call compares these with portal and log timestamps."""
    if moment is None:
        return "unknown"
    if isinstance(moment, str):
        return moment
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def card(body: list[Element], actions: list[Element] | None = None, *, fallback: str) -> Element:
    out: Element = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.5",
        "fallbackText": fallback,
        # Teams draws cards narrow unless asked; the lists and commands need the width.
        "msteams": {"width": "Full"},
        "body": body,
    }
    if actions:
        out["actions"] = actions
    return out
