"""Start and stop Azurite (queues and tables) on free loopback ports.

Used by the test suite and by the demo. Azurite is the npm package in ./node_modules; it is started
with --skipApiVersionCheck because the Python SDK speaks a newer API version than Azurite knows.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core.settings import ROOT

# Azurite's well-known development account (public, documented by Microsoft; not a secret).
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass(frozen=True)
class Azurite:
    queue_port: int
    table_port: int

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
            f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/{DEV_ACCOUNT};"
            f"TableEndpoint=http://127.0.0.1:{self.table_port}/{DEV_ACCOUNT};"
        )


def azurite_binary() -> Path | None:
    local = ROOT / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return local
    found = shutil.which("azurite")
    return Path(found) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Azurite exited with code {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"Azurite did not listen on port {port} within {timeout:.0f}s")


@contextlib.contextmanager
def running_azurite(timeout: float = 30.0) -> Iterator[Azurite]:
    """Run Azurite's queue and table services in memory for the duration of the block."""
    binary = azurite_binary()
    if binary is None:
        raise RuntimeError("Azurite is not installed: run `npm ci` in the project root")
    qport, tport = _free_port(), _free_port()
    cmd = [str(binary), "--silent", "--inMemoryPersistence", "--skipApiVersionCheck", "--disableTelemetry",
           "--blobPort", str(_free_port()),
           "--queueHost", "127.0.0.1", "--queuePort", str(qport),
           "--tableHost", "127.0.0.1", "--tablePort", str(tport)]
    # In-memory and run from a temporary cwd: Azurite writes its debug log and config files there.
    cwd = tempfile.mkdtemp(prefix="azurite-")
    # Its own session: a terminal's Ctrl-C (SIGINT to the whole foreground group) reaches only the
    # Python process, which stops Azurite below after it is done with it (the sandbox still writes then).
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd,
                            start_new_session=True)
    try:
        _wait_port(qport, proc, timeout)
        _wait_port(tport, proc, timeout)
        yield Azurite(qport, tport)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(cwd, ignore_errors=True)
