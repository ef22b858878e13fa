"""A storage setting the CLI cannot use is one line and an exit code, never a traceback (issue 14): 2 when
the setting is wrong (malformed connection string, a key the account refuses), 1 when the endpoint does not
answer. The connection string (it holds the account key) is never echoed."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from devtools.azurite import Azurite
from responder.cli import main
from tests.cli.conftest import run_cli

pytestmark = pytest.mark.azurite

# A well-formed key that is not Azurite's (base64 of 64 zero bytes).
OTHER_KEY = "A" * 86 + "=="
BAD_BASE64_KEY = "not-base64!!"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def commands(tmp_path: Path) -> list[list[str]]:
    queue = tmp_path / "queue.jsonl"
    queue.write_text('{"not": "a request"}\n')
    return [["ledger"], ["ledger", "show", "abc"], ["approve", "abc"],
            ["remediate", "--queue-file", str(queue)], ["verify"]]


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def cli_env(env: object) -> None:
    """The usual CLI environment (tenant config, table name); each test overrides the storage."""


@pytest.mark.parametrize("index", range(5))
def test_a_malformed_connection_string_is_bad_configuration(
        cli_env: None, index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RESPONDER_STORAGE_CONNECTION", "AccountName=devstoreaccount1;Key=oops")
    assert main(commands(tmp_path)[index]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "RESPONDER_STORAGE_CONNECTION" in line and "oops" not in line


@pytest.mark.parametrize("key", [BAD_BASE64_KEY, OTHER_KEY])
def test_a_key_the_account_refuses_is_bad_configuration(
        cli_env: None, azurite: Azurite, key: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    conn = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};"
            f"TableEndpoint={table_endpoint(azurite)};")
    assert main(["ledger", "--storage", conn]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "refused the account key" in line and key not in line


def table_endpoint(azurite: Azurite) -> str:
    part = next(p for p in azurite.connection_string.split(";") if p.startswith("TableEndpoint="))
    return part.split("=", 1)[1]


@pytest.mark.parametrize("index", range(5))
def test_an_endpoint_that_does_not_answer_exits_1(
        cli_env: None, index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    port = closed_port()
    monkeypatch.setenv("RESPONDER_STORAGE_CONNECTION",
                       f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={OTHER_KEY};"
                       f"TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
    assert main(commands(tmp_path)[index]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"cannot reach the storage endpoint http://127.0.0.1:{port}" in line
    assert OTHER_KEY not in line


def test_as_a_process_too(cli_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESPONDER_STORAGE_CONNECTION", "garbage")
    done = run_cli("ledger", "--json")
    assert done.code == 2 and done.out == ""
    one_error_line(done.err)
    monkeypatch.setenv("RESPONDER_STORAGE_CONNECTION",
                       f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={OTHER_KEY};"
                       f"TableEndpoint=http://127.0.0.1:{closed_port()}/devstoreaccount1;")
    done = run_cli("ledger", "show", "abc", "--json")
    assert done.code == 1 and done.out == ""
    assert "cannot reach" in one_error_line(done.err)
    assert json.dumps(done.err)   # printable: one line, no escape sequences to fear
