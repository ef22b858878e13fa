"""Cold start: import ``function_app`` and index its functions in a fresh interpreter, as the host does."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from typing import Any

from core.settings import ROOT

_PROBE = """
import json, time
t0 = time.perf_counter()
import function_app
t1 = time.perf_counter()
functions = function_app.app.get_functions()
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "index_s": t2 - t1, "functions": len(functions)}))
"""

# What the function app needs at start-up; values are placeholders (nothing is called).
_ENV = {
    "RESPONDER_TENANT_ID": "00000000-0000-4000-8000-00000000c0de",
    "AZURE_CLIENT_ID": "bench",
    "AzureWebJobsStorage__accountName": "benchaccount",
    "RESPONDER_DRY_RUN": "true",
    "RESPONDER_PARAMS": json.dumps({"params": {"protected_recipients": ["support@contoso.com"]}}),
}


def run(repeats: int = 5) -> dict[str, Any]:
    if not (ROOT / "function_app.py").exists():
        return {"skipped": "function_app.py is not in the tree yet"}
    import os

    env = {**os.environ, **_ENV}
    samples = []
    for _ in range(repeats):
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            return {"skipped": "importing function_app failed: " + proc.stderr.strip().splitlines()[-1][:300]}
        samples.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {
        "repeats": repeats,
        "functions": samples[0]["functions"],
        "import_s_median": statistics.median(s["import_s"] for s in samples),
        "index_s_median": statistics.median(s["index_s"] for s in samples),
        "total_s_median": statistics.median(s["import_s"] + s["index_s"] for s in samples),
        "total_s_max": max(s["import_s"] + s["index_s"] for s in samples),
    }
