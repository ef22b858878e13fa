"""The demo, run once for these tests through the CLI (``python -m responder demo --json``)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from core.settings import ROOT
from devtools.telemetry_file import read_rows


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("demo")
    proc = subprocess.run([sys.executable, "-m", "responder", "demo", "--tenant-size", "small", "--json",
                           "--no-render", "--no-azurite", "--output", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"out": out, "summary": json.loads(proc.stdout), "rows": read_rows(out / "telemetry.jsonl"),
            "ledger": json.loads((out / "ledger.json").read_text(encoding="utf-8"))}
