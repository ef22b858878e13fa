"""The Teams Workflows webhook message: wrapping, serialising, the size limit and Teams' constraints.

A Workflows webhook ("When a Teams webhook request is received") takes
``{"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
"content": <AdaptiveCard>}]}``. Teams rejects messages over about 28 KB; ``MAX_MESSAGE_BYTES`` keeps
a margin below that because the flow wraps the card in its own envelope before posting it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
MAX_MESSAGE_BYTES = 26_000
CARD_VERSION = "1.5"
# Workflows cards have no bot behind them: Submit/Execute post to nowhere, so they must never appear.
FORBIDDEN_ACTIONS = frozenset({"Action.Submit", "Action.Execute"})


class CardTooLarge(ValueError):
    """The card cannot be made to fit the message limit."""


_SURROGATE = re.compile("[\ud800-\udfff]")


def to_workflows_message(card: dict[str, Any]) -> dict[str, Any]:
    """Wrap an AdaptiveCard dict in the message a Workflows webhook accepts."""
    if card.get("type") != "AdaptiveCard":
        raise ValueError("not an AdaptiveCard (type must be 'AdaptiveCard')")
    return {"type": "message",
            "attachments": [{"contentType": CARD_CONTENT_TYPE, "contentUrl": None, "content": card}]}


def serialize(message: dict[str, Any]) -> bytes:
    """The exact bytes posted (compact UTF-8 JSON); the size limit is measured on these."""
    text = json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    # A lone surrogate (from mail or a forged message) cannot be UTF-8: replaced, never dropping the card.
    return _SURROGATE.sub("\ufffd", text).encode("utf-8")


def message_size(card: dict[str, Any]) -> int:
    return len(serialize(to_workflows_message(card)))


def walk_nodes(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk_nodes(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk_nodes(item)


def workflows_problems(message: dict[str, Any], *, limit: int = MAX_MESSAGE_BYTES) -> list[str]:
    """Why Teams would not show this message as intended (empty list: fine)."""
    problems: list[str] = []
    if message.get("type") != "message":
        problems.append("message: type must be 'message'")
    attachments = message.get("attachments")
    if not isinstance(attachments, list) or not attachments:
        return [*problems, "message: attachments must be a non-empty list"]
    for i, att in enumerate(attachments):
        if not isinstance(att, dict) or att.get("contentType") != CARD_CONTENT_TYPE:
            problems.append(f"attachments/{i}: contentType must be {CARD_CONTENT_TYPE}")
            continue
        content = att.get("content")
        if not isinstance(content, dict) or content.get("type") != "AdaptiveCard":
            problems.append(f"attachments/{i}/content: not an AdaptiveCard")
            continue
        if content.get("version") != CARD_VERSION:
            problems.append(f"attachments/{i}/content: version must be {CARD_VERSION}")
        for node in walk_nodes(content):
            if node.get("type") in FORBIDDEN_ACTIONS:
                problems.append(f"attachments/{i}/content: {node['type']} does not work in Workflows cards")
    size = len(serialize(message))
    if size > limit:
        problems.append(f"message: {size} bytes, over the {limit}-byte limit")
    return problems


# Successively tighter budgets: items shown per list, characters per value. The builders render
# whatever they drop as an exact "and N more", so tightening only costs detail, never honesty.
BUDGETS: tuple[tuple[int, int], ...] = ((10, 300), (8, 200), (5, 160), (3, 120), (2, 80), (1, 60), (0, 40))


def fit(build: Callable[[int, int], dict[str, Any]], *, limit: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """The most detailed card ``build(max_items, max_chars)`` makes that fits the message limit."""
    size = 0
    for max_items, max_chars in BUDGETS:
        card = build(max_items, max_chars)
        size = message_size(card)
        if size <= limit:
            return card
    raise CardTooLarge(f"card is {size} bytes even at the smallest budget (limit {limit})")
