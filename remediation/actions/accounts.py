"""Account actions through Graph: revoke sign-in sessions, disable the account, confirm compromised.

Each converges on one end state, so running one again (a redelivered message, an SDK retry after a
503 that was in fact processed) is harmless: revoking twice only invalidates tokens twice, and an
account that is already disabled is reported ``skipped``. Break-glass accounts never reach this
module: the safety rails (remediation/rails.py) stop them first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.identity_protection.risky_users.confirm_compromised.confirm_compromised_post_request_body import (  # noqa: E501
    ConfirmCompromisedPostRequestBody,
)
from msgraph.generated.models.user import User
from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder

from remediation.actions.base import ActionContext, ActionResult, failed
from remediation.actions.errors import describe

# confirmCompromised takes a list of object ids; 60 per call stays inside what Identity Protection's
# bulk risky-user actions accept, and one call per batch keeps the audit log readable.
MAX_USERS_PER_CALL = 60


def _user(req: dict[str, Any]) -> str | None:
    user = str((req.get("target") or {}).get("user") or "").strip()
    return user or None


def _wrong(req: dict[str, Any], name: str) -> ActionResult | None:
    if req.get("action") != name:
        return failed(req, f"{req.get('action')!r} request given to {name}")
    if _user(req) is None:
        return failed(req, "target needs a user (UPN or object id)")
    return None


class _PerUser:
    name = ""

    async def execute(self, requests: list[dict[str, Any]], ctx: ActionContext) -> list[ActionResult]:
        return list(await asyncio.gather(*(self._guarded(r, ctx) for r in requests)))

    async def _guarded(self, req: dict[str, Any], ctx: ActionContext) -> ActionResult:
        bad = _wrong(req, self.name)
        if bad is not None:
            return bad
        user = _user(req) or ""
        try:
            return await self.one(req, user, ctx)
        except Exception as exc:
            return describe(exc).result(req["id"], f"{self.name} for {user}")

    async def one(self, req: dict[str, Any], user: str, ctx: ActionContext) -> ActionResult:
        raise NotImplementedError


class RevokeSessions(_PerUser):
    """``POST /users/{id}/revokeSignInSessions``: every refresh token and session cookie becomes invalid."""

    name = "revoke_sessions"

    async def one(self, req: dict[str, Any], user: str, ctx: ActionContext) -> ActionResult:
        resp = await ctx.graph.users.by_user_id(user).revoke_sign_in_sessions.post()
        if resp is not None and resp.value is False:
            reason = "Graph answered value=false: sessions were not revoked"
            return ActionResult(req["id"], "failed", detail=reason, error=reason)
        return ActionResult(req["id"], "confirmed", detail=f"sign-in sessions of {user} revoked")


class DisableUser(_PerUser):
    """``PATCH /users/{id}`` with ``accountEnabled: false``, after reading whether it already is."""

    name = "disable_user"

    async def one(self, req: dict[str, Any], user: str, ctx: ActionContext) -> ActionResult:
        q = UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(select=["id", "accountEnabled"])
        current = await ctx.graph.users.by_user_id(user).get(RequestConfiguration(query_parameters=q))
        if current is not None and current.account_enabled is False:
            return ActionResult(req["id"], "skipped", detail=f"account {user} is already disabled")
        # The SDK adds "@odata.type": "#microsoft.graph.user" (Graph accepts it). Passing odata_type=None
        # to drop it is worse: the backing store then sends a literal "odata_type": null.
        await ctx.graph.users.by_user_id(user).patch(User(account_enabled=False))
        return ActionResult(req["id"], "confirmed", detail=f"account {user} disabled",
                            undo={"account_enabled": True})


class ConfirmCompromised:
    """``POST /identityProtection/riskyUsers/confirmCompromised``: needs object ids, so UPNs are resolved
    first (``GET /users/{upn}?$select=id``; a 404 there fails only that target), then the batch is sent
    in as few calls as possible."""

    name = "confirm_compromised"

    async def execute(self, requests: list[dict[str, Any]], ctx: ActionContext) -> list[ActionResult]:
        results: dict[str, ActionResult] = {}
        ids: dict[str, str] = {}

        async def resolve(req: dict[str, Any]) -> None:
            bad = _wrong(req, self.name)
            if bad is not None:
                results[req["id"]] = bad
                return
            user = _user(req) or ""
            try:
                q = UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(select=["id"])
                found = await ctx.graph.users.by_user_id(user).get(RequestConfiguration(query_parameters=q))
            except Exception as exc:
                results[req["id"]] = describe(exc).result(req["id"], f"look up {user}")
                return
            if found is None or not found.id:
                results[req["id"]] = failed(req, f"user {user} has no object id")
                return
            ids[req["id"]] = found.id

        await asyncio.gather(*(resolve(r) for r in requests))
        ready = [r for r in requests if r["id"] in ids]
        for start in range(0, len(ready), MAX_USERS_PER_CALL):
            chunk = ready[start:start + MAX_USERS_PER_CALL]
            object_ids = list(dict.fromkeys(ids[r["id"]] for r in chunk))
            try:
                await ctx.graph.identity_protection.risky_users.confirm_compromised.post(
                    ConfirmCompromisedPostRequestBody(user_ids=object_ids))
            except Exception as exc:
                failure = describe(exc)
                for r in chunk:
                    results[r["id"]] = failure.result(r["id"], "confirm compromised")
                continue
            for r in chunk:
                results[r["id"]] = ActionResult(
                    r["id"], "confirmed", detail=f"{_user(r)} ({ids[r['id']]}) confirmed compromised: "
                                                 "user risk set to high")
        return [results[r["id"]] for r in requests]
