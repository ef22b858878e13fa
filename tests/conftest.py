"""Shared fixtures: a real Azurite for the session, fresh queue/table names per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from devtools.azurite import Azurite, running_azurite


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    with running_azurite() as az:
        yield az


@pytest.fixture
def storage_conn(azurite: Azurite) -> str:
    return azurite.connection_string


@pytest.fixture
def unique_name() -> str:
    """A fresh lower-case name valid for both queues and tables (tests never share state)."""
    return "t" + uuid.uuid4().hex[:20]
