"""The approval page served locally (dev and browser tests only; never deployed).

A tiny HTTP server that plays App Service authentication's part: it drops any principal header a
client sends and sets ``X-MS-CLIENT-PRINCIPAL`` / ``-NAME`` / ``-ID`` for one chosen test identity, the
way Easy Auth does in front of the app
(https://learn.microsoft.com/azure/app-service/configure-authentication-user-identities), then hands
the request to the page handlers in app/pages.py. What a page queues goes to ``on_queue``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler

import azure.functions as func

from app import pages
from app.runtime import Runtime
from app.signin import PRINCIPAL, PRINCIPAL_ID, PRINCIPAL_NAME, PageAuth
from devtools.loopback import LoopbackServer, Out, reply

ROUTES = [("GET", re.compile(r"^/requests/([^/]+)$"), "request"),
          ("POST", re.compile(r"^/requests/([^/]+)/(approve|reject|undo|done)$"), "decide"),
          ("GET", re.compile(r"^/runs/([^/]+)$"), "run"),
          ("POST", re.compile(r"^/runs/([^/]+)/approve$"), "run_approve"),
          ("POST", re.compile(r"^/runs/([^/]+)/undo$"), "run_undo"),
          ("GET", re.compile(r"^/(stop)$"), "stop"),
          ("POST", re.compile(r"^/(stop)$"), "stop_on"),
          ("POST", re.compile(r"^/stop/(clear)$"), "stop_clear")]


@dataclass(frozen=True)
class Identity:
    upn: str
    oid: str
    groups: tuple[str, ...] = ()

    def headers(self) -> dict[str, str]:
        claims = [{"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": self.oid},
                  {"typ": "preferred_username", "val": self.upn}]
        claims += [{"typ": "groups", "val": g} for g in self.groups]
        doc = {"auth_typ": "aad", "claims": claims, "name_typ": "preferred_username", "role_typ": "roles"}
        return {PRINCIPAL: base64.b64encode(json.dumps(doc).encode()).decode(), PRINCIPAL_NAME: self.upn,
                PRINCIPAL_ID: self.oid}


@dataclass
class PageServer(LoopbackServer):
    runtime: Runtime
    auth: PageAuth
    identity: Identity
    on_queue: Callable[[list[str]], None] = lambda _bodies: None

    def serve(self, h: BaseHTTPRequestHandler, method: str) -> None:
        path = h.path.split("?", 1)[0]
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        # As Easy Auth: client-sent principal headers never reach the app; the signed-in identity's do.
        headers = {k: v for k, v in h.headers.items() if not k.lower().startswith("x-ms-client-principal")}
        headers.update(self.identity.headers())
        headers["X-Forwarded-For"] = f"{h.client_address[0]}:{h.client_address[1]}"
        for verb, pattern, kind in ROUTES:
            m = pattern.match(path)
            if verb != method or m is None:
                continue
            req = func.HttpRequest(method=method, url=f"{self.base_url}{h.path}", body=body, headers=headers,
                                   route_params={"id": m.group(1)}, params={})
            with self.lock:   # one request at a time, like a single worker
                resp = asyncio.run(self._call(kind, req, m))
            reply(h, resp.status_code, resp.get_body(), dict(resp.headers), resp.mimetype)
            return
        reply(h, 404, b"not found", {}, "text/plain")

    async def _call(self, kind: str, req: func.HttpRequest, m: re.Match[str]) -> func.HttpResponse:
        out = Out()
        if kind == "request":
            return await pages.get_request(self.runtime, req, self.auth)
        if kind == "run":
            return await pages.get_run(self.runtime, req, self.auth)
        if kind == "stop":
            return await pages.get_stop(self.runtime, req, self.auth)
        if kind in ("stop_on", "stop_clear"):
            return await pages.post_stop(self.runtime, req, self.auth, kind == "stop_on")
        if kind == "decide":
            resp = await pages.post_decision(self.runtime, req, self.auth, m.group(2), out)
        elif kind == "run_undo":
            resp = await pages.post_run_undo(self.runtime, req, self.auth, out)
        else:
            resp = await pages.post_run_approve(self.runtime, req, self.auth, out)
        if out.value:
            self.on_queue(list(out.value))
        return resp
