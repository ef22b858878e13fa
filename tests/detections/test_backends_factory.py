"""make_backend: picks the engine, refuses what it cannot build."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.settings import Settings
from detections.backends import make_backend
from detections.backends.local import LocalBackend


def test_tables_dir_selects_the_local_engine(tmp_path: Path) -> None:
    backend = make_backend(tables_dir=tmp_path, now=datetime(2026, 11, 20, tzinfo=UTC))
    assert isinstance(backend, LocalBackend) and backend.name == "local"


def test_local_engine_needs_now(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs `now`"):
        make_backend(tables_dir=tmp_path)


def test_settings_required_for_the_services() -> None:
    with pytest.raises(ValueError, match="settings are required"):
        make_backend()


def test_sentinel_needs_a_workspace() -> None:
    settings = dataclasses.replace(Settings.from_env({}, require=False), backend="sentinel")
    with pytest.raises(ValueError, match="RESPONDER_SENTINEL_WORKSPACE_ID"):
        make_backend(settings, logs_client=object())
