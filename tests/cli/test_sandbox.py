"""``python -m responder sandbox`` as on-call runs it: a process that prints the page's URLs and the CLI's
environment, serves a held request's page as the chosen person, executes an approval from the page on the
fake Graph through the Azurite queue, and stops everything it started on Ctrl-C (SIGINT)."""

from __future__ import annotations

import html
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from core.settings import ROOT, Settings
from remediation.ledger import Ledger

EXPORT = re.compile(r"^export (RESPONDER_[A-Z_]+)=(.*)$")


def read_until_ready(proc: subprocess.Popen[str], timeout: float = 240) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            pytest.fail(f"sandbox exited ({proc.poll()}): {proc.stderr.read() if proc.stderr else ''}")
        lines.append(line.rstrip("\n"))
        if "Ctrl-C stops all" in line:
            return lines
    pytest.fail("sandbox did not print its URLs in time")


def fetch(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode("utf-8")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8")


def descendants(pid: int) -> dict[int, str]:
    """pid -> command line of every process under ``pid`` (Linux /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    found, todo = {}, [pid]
    while todo:
        p = todo.pop()
        for child, parent in parents.items():
            if parent == p and child not in found:
                try:
                    found[child] = (Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode())
                except OSError:
                    found[child] = ""
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False


def unquote_shell(v: str) -> str:
    return v[1:-1] if v.startswith("'") and v.endswith("'") else v


@pytest.fixture
def sandbox() -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESPONDER_")}
    proc = subprocess.Popen([sys.executable, "-m", "responder", "sandbox", "--as", "carol@contoso.com"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)   # its own process group, as in a terminal
    try:
        yield proc
    finally:
        if proc.poll() is None:
            for child in descendants(proc.pid):
                os.kill(child, signal.SIGKILL)
            proc.kill()
            proc.wait()


def test_approve_from_the_page_is_done_and_ctrl_c_stops_everything(sandbox: subprocess.Popen[str]) -> None:
    lines = read_until_ready(sandbox)
    held = [ln.split(": ", 1)[1].strip() for ln in lines if ln.strip().startswith("held request:")]
    cli_env = {m.group(1): unquote_shell(m.group(2)) for ln in lines if (m := EXPORT.match(ln))}
    assert held and "RESPONDER_STORAGE_CONNECTION" in cli_env and "RESPONDER_GRAPH_BASE_URL" in cli_env
    assert any(ln.strip().startswith("run:") for ln in lines)
    children = descendants(sandbox.pid)
    assert any("azurite" in cmd.lower() for cmd in children.values()), children

    defaults = Settings.from_env({}, require=False)
    ledger = Ledger.from_connection_string(cli_env["RESPONDER_STORAGE_CONNECTION"], defaults.ledger_table)
    records = {r.request_id: r for r in ledger.list(state="held")}
    # A held sign-out (revoke_sessions): approving it makes the worker call revokeSignInSessions.
    url = next(u for u in held if records[u.rsplit("/", 1)[1]].action == "revoke_sessions")
    rid = url.rsplit("/", 1)[1]

    status, page = fetch(url)
    assert status == 200 and rid in page and "carol@contoso.com" in page
    token = html.unescape(re.search(r'name="csrf" value="([^"]+)"', page).group(1))  # type: ignore[union-attr]
    origin = url.split("/requests/")[0]
    status, after = fetch(f"{url}/approve", urllib.parse.urlencode({"csrf": token}).encode(),
                          {"Content-Type": "application/x-www-form-urlencoded", "Origin": origin})
    assert status == 200, after

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rec = ledger.get(rid)
        if rec is not None and rec.state not in ("held", "approved", "received", "running"):
            break
        time.sleep(0.5)
    assert rec is not None and rec.state in ("submitted", "confirmed", "done"), rec.state if rec else None
    assert rec.extra["approved_by"] == "carol@contoso.com" and rec.extra["decided_via"] == "page"

    # The CLI works against it with the printed environment.
    shown = subprocess.run([sys.executable, "-m", "responder", "ledger", "show", rid[:12]], cwd=ROOT,
                           env={**os.environ, **cli_env}, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "carol@contoso.com" in shown.stdout, shown.stderr

    # ... and `approve` from the CLI is queued and executed by the sandbox's worker too.
    other = next(r for r in ledger.list(state="held") if r.action == "revoke_sessions")
    approved = subprocess.run([sys.executable, "-m", "responder", "approve", other.request_id, "--by",
                               "dave@contoso.com"], cwd=ROOT, env={**os.environ, **cli_env},
                              capture_output=True, text=True, timeout=120)
    assert approved.returncode == 0, approved.stderr
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and ledger.get(other.request_id).state in ("held", "approved"):
        time.sleep(0.5)
    done = ledger.get(other.request_id)
    assert done.state == rec.state and done.extra["approved_by"] == "dave@contoso.com", done.state

    # Ctrl-C in a terminal: SIGINT to the whole foreground process group, children included.
    os.killpg(sandbox.pid, signal.SIGINT)
    assert sandbox.wait(timeout=30) == 0, sandbox.stderr.read() if sandbox.stderr else ""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(alive(p) for p in children):
        time.sleep(0.2)
    assert [children[p] for p in children if alive(p)] == []
    # What the fake Graph was asked to do, written by the sandbox on the way out.
    records = Path(next(ln for ln in lines if ln.startswith("Records:")).split()[1])
    accounts = json.loads((records / "graph-accounts.json").read_text(encoding="utf-8"))
    assert rec.target["user"] in accounts["revoked"]
