"""local.settings.example.json: what Core Tools (`func start`) would run (issue 10, Deployment).

Core Tools puts the file's ``Values`` into the worker's environment, as App Service does with app
settings (learn.microsoft.com/azure/azure-functions/functions-develop-local#local-settings-file).
Core Tools cannot run here, so the example is loaded the way the host loads the app: its values as
the whole environment, function_app imported in a fresh interpreter and indexed. The tenant config
it names is the sample tenant that `python -m devtools.localgraph` writes, and the Graph URL
is that fake's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app import bootstrap, schedules
from core.settings import ROOT
from detections.catalog import load_catalog
from devtools import localgraph

EXAMPLE = json.loads((ROOT / "local.settings.example.json").read_text(encoding="utf-8"))
VALUES: dict[str, str] = EXAMPLE["Values"]


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample tenant localgraph prepares, written to a temporary folder instead of demo-output/."""
    directory = tmp_path_factory.mktemp("local")
    localgraph.prepare(directory)
    return directory


def values_with_sample(sample_dir: Path) -> dict[str, str]:
    # The one value rewritten: the example's relative path, now under the temporary folder.
    assert VALUES["RESPONDER_TENANT_CONFIG"] == f"{localgraph.DEFAULT_DIR}/tenant.yaml"
    return {**VALUES, "RESPONDER_TENANT_CONFIG": str(sample_dir / "tenant.yaml")}


def test_example_has_the_core_tools_shape() -> None:
    assert EXAMPLE["IsEncrypted"] is False and set(EXAMPLE) == {"IsEncrypted", "Values"}
    assert all(isinstance(v, str) for v in VALUES.values())        # Core Tools values are strings
    assert VALUES["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    assert VALUES["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert VALUES["RESPONDER_GRAPH_BASE_URL"] == f"http://127.0.0.1:{localgraph.DEFAULT_PORT}/v1.0"
    assert VALUES["RESPONDER_EXCHANGE_BASE_URL"] == f"http://127.0.0.1:{localgraph.DEFAULT_PORT}/adminapi/beta"
    assert VALUES["RESPONDER_TENANT_ID"] == localgraph.LOCAL_TENANT_ID


def test_example_names_every_queue_the_bindings_resolve() -> None:
    # A binding's %NAME% is resolved from app settings when the host indexes the functions; an unset one
    # stops the function from loading ("binding expressions - app settings",
    # learn.microsoft.com/azure/azure-functions/functions-bindings-expressions-patterns).
    names = set(re.findall(r"%([A-Za-z0-9_]+)%", (ROOT / "function_app.py").read_text(encoding="utf-8")))
    assert names and names <= set(VALUES), sorted(names - set(VALUES))


def test_example_passes_the_app_s_own_validation(sample_dir: Path) -> None:
    config = bootstrap.load(values_with_sample(sample_dir))
    enabled = {slug for slug in load_catalog()
               if config.tenant.for_rule(slug).enabled}
    assert {t.slug for t in config.timers} == enabled and enabled
    assert config.storage.connection_string == "UseDevelopmentStorage=true"
    assert config.problems == ()


INDEX = """
import json, function_app
print(json.dumps(sorted(f.get_function_name() for f in function_app.app.get_functions())))
"""


def test_example_indexes_every_function(sample_dir: Path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
           **values_with_sample(sample_dir)}
    proc = subprocess.run([sys.executable, "-c", INDEX], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr
    functions = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    timers = {schedules.function_name(slug) for slug in load_catalog()}
    fixed = {"worker", "poison", "digest", "verify", "scan", "health", "approve", "reject",
             "page_request", "page_approve", "page_reject", "page_run", "page_run_approve",
             "page_undo", "page_done", "page_run_undo", "page_stop", "page_stop_on", "page_stop_clear",
             "stop", "stop_clear", "undo_run", "push_notifications", "push_subscriptions", "push_worker",
             "push_poison"}
    assert functions == timers | fixed


@pytest.fixture
def running_localgraph(sample_dir: Path) -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, "-m", "devtools.localgraph", "--dir", str(sample_dir),
                             "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"fake Graph on (http://127\.0\.0\.1:\d+/v1\.0)", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        yield m.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_localgraph_answers_hunting_over_the_sample_tenant(running_localgraph: str) -> None:
    deadline = time.monotonic() + 30
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        resp = httpx.post(f"{running_localgraph}/security/runHuntingQuery",
                          json={"Query": "EmailEvents | count"}, timeout=30)
        if resp.status_code == 200:
            body = resp.json()
            break
        time.sleep(0.2)
    assert body["results"][0]["Count"] > 0
