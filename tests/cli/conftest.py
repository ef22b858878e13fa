"""Fixtures for the command line's tests: a ledger in Azurite the CLI is pointed at, and a way to run
``python -m responder`` as a process, on a pseudo-terminal when a test needs what a person sees."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from dataclasses import dataclass
from pathlib import Path

import pytest

from remediation.ledger import Ledger

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, storage_conn: str, unique_name: str, tmp_path: Path) -> Ledger:
    """The CLI's storage, ledger table and tenant config, set in this process's environment."""
    monkeypatch.setenv("RESPONDER_STORAGE_CONNECTION", storage_conn)
    monkeypatch.setenv("RESPONDER_LEDGER_TABLE", unique_name)
    monkeypatch.setenv("RESPONDER_DRY_RUN", "false")
    tenant = tmp_path / "tenant.yaml"
    tenant.write_text("params:\n  protected_recipients: [support@contoso.com, sales@contoso.com]\n")
    monkeypatch.setenv("RESPONDER_TENANT_CONFIG", str(tenant))
    # Nothing listens there: commands that must not call Graph would fail loudly.
    monkeypatch.setenv("RESPONDER_GRAPH_BASE_URL", "http://127.0.0.1:9/v1.0")
    monkeypatch.delenv("AzureWebJobsStorage__accountName", raising=False)
    return Ledger.from_connection_string(storage_conn, unique_name)


@dataclass
class Run:
    code: int
    out: str
    err: str


def run_cli(*args: str, tty: bool = False, columns: int = 80) -> Run:
    """``python -m responder ARGS`` in a child process with this process's environment. ``tty``: stdout
    and stderr are a pseudo-terminal ``columns`` wide (both land in ``out``)."""
    cmd = [sys.executable, "-m", "responder", *args]
    env = {**os.environ, "COLUMNS": str(columns)} if tty else {k: v for k, v in os.environ.items()
                                                              if k != "COLUMNS"}
    if not tty:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        return Run(done.returncode, done.stdout, done.stderr)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:   # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    code = proc.wait(timeout=300)
    return Run(code, b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n"), "")
