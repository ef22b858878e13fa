"""Small builders shared by the detections tests: rule files written from the shipped model rule."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from detections.catalog import RULES_DIR

MODEL = "consumer-sender-to-shared-mailboxes"
NOW_TEXT = "2026-11-20T12:00:00Z"


def model_rule_data() -> dict[str, Any]:
    return yaml.safe_load((RULES_DIR / f"{MODEL}.yaml").read_text(encoding="utf-8"))


def write_rule(
    folder: Path, slug: str, edit: Callable[[dict[str, Any]], None] | None = None, *, with_tests: bool = True
) -> Path:
    """Copy the model rule (and its cases) under ``slug`` into ``folder``, after ``edit`` changes it."""
    data = copy.deepcopy(model_rule_data())
    if edit:
        edit(data)
    path = folder / f"{slug}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    if with_tests:
        text = (RULES_DIR / f"{MODEL}.tests.yaml").read_text(encoding="utf-8")
        (folder / f"{slug}.tests.yaml").write_text(text, encoding="utf-8")
    return path
