"""Issue 13: the function app cleans every log record (caller values, URL secrets), whatever logger."""

from __future__ import annotations

import logging
from types import ModuleType

import pytest

SIG = "c2VjcmV0c2lnbmF0dXJlMDEyMzQ1Njc4OQ"
HOOK = f"https://prod-1.westeurope.logic.azure.com/workflows/w/triggers/manual/paths/invoke?sv=1.0&sig={SIG}"


def test_records_from_any_module_are_cleaned_once_the_app_loaded(fa: ModuleType,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    logging.getLogger("app.handlers").warning("message %s will be retried: %s", "id\nCRITICAL forged",
                                              f"error for url '{HOOK}'")
    logging.getLogger("notifications.teams").error("not delivered: %s", HOOK.replace("sig=", "Sig="))
    lines = [r.getMessage() for r in caplog.records[-2:]]
    assert all("\n" not in line and SIG not in line for line in lines), lines
    assert "forged" in lines[0]
