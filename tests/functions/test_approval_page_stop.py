"""The emergency stop from the approval page: GET /stop, POST /stop, POST /stop/clear, and the banner."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from remediation.stop import read_stop, set_stop
from tests.functions.conftest import Env, http
from tests.functions.test_approval_page import HOST, OID, ON, get, held, principal, token


@pytest.fixture
def on(env: Env, monkeypatch: pytest.MonkeyPatch) -> Env:
    monkeypatch.setattr(env.fa, "page_auth", ON)
    return env


def post_stop(env: Env, fn: str, path: str, fields: dict[str, str], *, headers: dict[str, str] | None = None,
              csrf: str | None = None) -> tuple[int, str]:
    hdrs = {**(principal() if headers is None else headers), "Origin": f"https://{HOST}"}
    body = urlencode({"csrf": token("stop") if csrf is None else csrf, **fields}).encode()
    resp = env.call(fn, http("POST", f"https://{HOST}{path}", body, headers=hdrs))
    return resp.status_code, resp.get_body().decode()


def test_oncall_turns_the_stop_on_with_a_reason_then_clears_it(on: Env) -> None:
    resp = on.call("page_stop", http("GET", f"https://{HOST}/stop", headers=principal()))
    page = resp.get_body().decode()
    assert resp.status_code == 200 and 'action="/stop"' in page and f'value="{token("stop")}"' in page
    status, page = post_stop(on, "page_stop_on", "/stop", {"reason": "rule r misfires <b>"})
    assert status == 200, page
    state = read_stop(on.rt.ledger())
    assert (state.on, state.by, state.reason) == (True, "alice@contoso.com", "rule r misfires <b>")
    assert (state.by_id, state.by_from) == (OID, "203.0.113.7:51234")
    assert "<b>" not in page and 'action="/stop/clear"' in page
    status, page = post_stop(on, "page_stop_clear", "/stop/clear", {"clear": "1"})
    assert status == 200, page
    state = read_stop(on.rt.ledger())
    assert (state.on, state.by) == (False, "alice@contoso.com")


def test_turning_it_on_without_a_reason_is_a_400_page(on: Env) -> None:
    status, page = post_stop(on, "page_stop_on", "/stop", {"reason": "   "})
    assert status == 400 and "reason" in page
    assert read_stop(on.rt.ledger()).on is False


def test_outsider_and_bad_csrf_are_refused(on: Env) -> None:
    outsider = principal(groups=("someone-else",), name="mallory@contoso.com")
    status, _ = post_stop(on, "page_stop_on", "/stop", {"reason": "x"}, headers=outsider)
    assert status == 403
    resp = on.call("page_stop", http("GET", f"https://{HOST}/stop", headers=outsider))
    assert resp.status_code == 403
    status, _ = post_stop(on, "page_stop_on", "/stop", {"reason": "x"}, csrf=token("not-stop"))
    assert status == 403
    assert read_stop(on.rt.ledger()).on is False
    set_stop(on.rt.ledger(), True, "bob", "drill")
    status, _ = post_stop(on, "page_stop_clear", "/stop/clear", {}, csrf="")
    assert status == 403
    assert read_stop(on.rt.ledger()).on is True


def test_request_and_run_pages_show_a_banner_while_the_stop_is_on(on: Env) -> None:
    rid = held(on)
    assert 'href="/stop"' not in get(on, rid)[1]
    set_stop(on.rt.ledger(), True, "bob@contoso.com", "rule misfires")
    status, page = get(on, rid)
    assert status == 200 and 'class="stop"' in page and 'href="/stop"' in page and "rule misfires" in page
    resp = on.call("page_run", http("GET", f"https://{HOST}/runs/run-page", route_params={"id": "run-page"},
                                    headers=principal()))
    assert 'class="stop"' in resp.get_body().decode()
