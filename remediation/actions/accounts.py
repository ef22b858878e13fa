"""Account actions through Graph: revoke sign-in sessions, disable the account, confirm compromised.

Each converges on one end state, so running one again (a redelivered message) leaves the same state, but
the service still acts (and audits) twice. So the SDK's RetryHandler, which replays a 503/504 of any
method inside one call whether or not it was processed, is switched off for the state-changing calls
(revoke POST, disable/enable PATCH, confirmCompromised POST; ``_no_replay``): the worker's own retry
(Execution) does the retry instead, with the request in ``ctx.prior_attempts``, so the check below runs
first. Work an earlier attempt did (``ctx.prior_attempts``: a
crash, or an error answered after the service applied the change) is recognised and recorded
``confirmed``, with its undo information, instead of being done again or reported ``skipped``:

* disable: ``accountEnabled`` already false -> confirmed, undo re-enables. Without a prior attempt an
  account already disabled is ``skipped`` (somebody else did it).
* revoke: the user's ``signInSessionsValidFromDateTime`` (reset to the current time by every revoke,
  https://learn.microsoft.com/graph/api/user-revokesigninsessions; returned only on ``$select``,
  https://learn.microsoft.com/graph/api/resources/user#properties) at or after the earlier attempt's
  intent, less ``CLOCK_SKEW`` -> confirmed, not revoked again. Reading it needs User.Read.All: without it
  (403) the revoke is sent again, as before (the detail says so).
* confirm compromised: ``GET /identityProtection/riskyUsers/{id}``; ``riskState`` already
  ``confirmedCompromised`` -> confirmed, not sent again. The Get lists IdentityRiskyUser.Read.All as least
  privileged and "Not available." as higher privileged (ReadWrite.All is not documented to cover it:
  https://learn.microsoft.com/graph/api/riskyuser-get#permissions, checked 2026-12), so the feature grants
  Read.All beside ReadWrite.All (infra/permissions.json). Unreadable (403 without it, 404 for a user never
  risky, a timeout): sent again, as before (confirming is idempotent; the detail says so).

Targets go out in bounded batches with a per-target timeout (remediation/actions/bounded.py). Break-glass
accounts never reach this module: the safety rails (remediation/rails.py) stop them first.
"""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Any

from kiota_abstractions.api_error import APIError
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_http.middleware.options import RetryHandlerOption
from msgraph.generated.identity_protection.risky_users.confirm_compromised.confirm_compromised_post_request_body import (  # noqa: E501
    ConfirmCompromisedPostRequestBody,
)
from msgraph.generated.models.user import User
from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder

from remediation.actions.base import ActionContext, ActionResult, failed, prior_attempt_at
from remediation.actions.bounded import TARGET_CONCURRENCY, TARGET_TIMEOUT, each_bounded, timeout_result
from remediation.actions.errors import describe
from remediation.actions.registry import ActionDef

# Revoking sessions of, or disabling, a user who holds an Entra admin role is a "sensitive action": an
# app-only caller needs an Entra role that covers the target's role, and Privileged Authentication
# Administrator covers every admin (Global Administrators included). Without it Graph answers
# 403 Authorization_RequestDenied "Insufficient privileges to complete the operation."
# https://learn.microsoft.com/graph/api/user-update#permissions ("Who can perform sensitive actions"),
# https://learn.microsoft.com/graph/api/user-revokesigninsessions#permissions
PRIVILEGED_ROLE = "Privileged Authentication Administrator"
_VERB = {"revoke_sessions": "revoke the sessions of", "disable_user": "disable", "enable_user": "re-enable"}
_PERMISSION = {"revoke_sessions": "User.RevokeSessions.All", "disable_user": "User.EnableDisableAccount.All",
               "enable_user": "User.EnableDisableAccount.All"}

# confirmCompromised takes a list of object ids; 60 per call stays inside what Identity Protection's
# bulk risky-user actions accept, and one call per batch keeps the audit log readable.
MAX_USERS_PER_CALL = 60
# How far before an earlier attempt's intent a revoke still counts as that attempt's: the intent time is
# this app's clock, signInSessionsValidFromDateTime Entra's (whole seconds).
CLOCK_SKEW = timedelta(minutes=2)


def _no_replay() -> RequestConfiguration:
    """Per-request options: no SDK RetryHandler replay of a state-changing call (module doc)."""
    return RequestConfiguration(options=[RetryHandlerOption(max_retries=0, should_retry=False)])


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

    def __init__(self, *, concurrency: int = TARGET_CONCURRENCY, timeout: float = TARGET_TIMEOUT):
        self.concurrency, self.timeout = concurrency, timeout

    async def execute(self, requests: list[dict[str, Any]], ctx: ActionContext) -> list[ActionResult]:
        return await each_bounded(
            requests, lambda r: self._guarded(r, ctx), concurrency=self.concurrency, timeout=self.timeout,
            timed_out=lambda r, t: timeout_result(r["id"], f"{self.name} for {_user(r)}", t))

    async def _guarded(self, req: dict[str, Any], ctx: ActionContext) -> ActionResult:
        bad = _wrong(req, self.name)
        if bad is not None:
            return bad
        user = _user(req) or ""
        try:
            return await self.one(req, user, ctx)
        except APIError as exc:
            if exc.response_status_code == 403 and _code(exc) == "Authorization_RequestDenied":
                return privileged(req, user, self.name)
            return describe(exc).result(req["id"], f"{self.name} for {user}")
        except Exception as exc:
            return describe(exc).result(req["id"], f"{self.name} for {user}")

    async def one(self, req: dict[str, Any], user: str, ctx: ActionContext) -> ActionResult:
        raise NotImplementedError


def _code(exc: APIError) -> str | None:
    return getattr(getattr(exc, "error", None), "code", None)


def privileged(req: dict[str, Any], user: str, action: str) -> ActionResult:
    """The explicit outcome for a 403 on a sensitive action: permanent (a retry cannot help) until an
    admin grants the identity the role (docs/deploy.md, "Privileged targets")."""
    reason = (f"target is privileged: the identity needs role {PRIVILEGED_ROLE} to {_VERB[action]} {user} "
              f"(Graph answered 403 Authorization_RequestDenied; if this happens for every account, the "
              f"{_PERMISSION[action]} grant is missing instead)")
    return ActionResult(req["id"], "failed", detail=reason, error=reason, blocked="privileged_target")


class RevokeSessions(_PerUser):
    """``POST /users/{id}/revokeSignInSessions``: every refresh token and session cookie becomes invalid."""

    name = "revoke_sessions"

    async def one(self, req: dict[str, Any], user: str, ctx: ActionContext) -> ActionResult:
        since = prior_attempt_at(ctx, req["id"])
        note = ""
        if since is not None:
            valid_from, note = await self._valid_from(user, ctx)
            if valid_from is not None and valid_from >= since - CLOCK_SKEW:
                return ActionResult(req["id"], "confirmed",
                                    detail=f"sign-in sessions of {user} were revoked by an earlier attempt "
                                           f"(valid from {valid_from.isoformat()}; recorded now)")
        resp = await ctx.graph.users.by_user_id(user).revoke_sign_in_sessions.post(_no_replay())
        if resp is not None and resp.value is False:
            reason = "Graph answered value=false: sessions were not revoked"
            return ActionResult(req["id"], "failed", detail=reason, error=reason)
        return ActionResult(req["id"], "confirmed", detail=f"sign-in sessions of {user} revoked{note}")

    @staticmethod
    async def _valid_from(user: str, ctx: ActionContext) -> tuple[Any, str]:
        """(``signInSessionsValidFromDateTime`` or None, a note for the detail when it cannot be read)."""
        q = UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(
            select=["id", "signInSessionsValidFromDateTime"])
        try:
            current = await ctx.graph.users.by_user_id(user).get(RequestConfiguration(query_parameters=q))
        except APIError as exc:
            if exc.response_status_code != 403:
                raise
            return None, (" (again: an earlier attempt may have revoked them, but reading "
                          "signInSessionsValidFromDateTime needs User.Read.All)")
        return (current.sign_in_sessions_valid_from_date_time if current is not None else None), ""


class DisableUser(_PerUser):
    """``PATCH /users/{id}`` with ``accountEnabled: false``, after reading whether it already is."""

    name = "disable_user"

    async def one(self, req: dict[str, Any], user: str, ctx: ActionContext) -> ActionResult:
        q = UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(select=["id", "accountEnabled"])
        current = await ctx.graph.users.by_user_id(user).get(RequestConfiguration(query_parameters=q))
        if current is not None and current.account_enabled is False:
            if req["id"] in ctx.prior_attempts:
                return ActionResult(req["id"], "confirmed", undo={"account_enabled": True},
                                    detail=f"account {user} is already disabled: disabled by an earlier "
                                           "attempt (recorded now)")
            return ActionResult(req["id"], "skipped", detail=f"account {user} is already disabled")
        # The SDK adds "@odata.type": "#microsoft.graph.user" (Graph accepts it). Passing odata_type=None
        # to drop it is worse: the backing store then sends a literal "odata_type": null.
        await ctx.graph.users.by_user_id(user).patch(User(account_enabled=False), _no_replay())
        return ActionResult(req["id"], "confirmed", detail=f"account {user} disabled",
                            undo={"account_enabled": True})


class EnableUser(_PerUser):
    """``enable_user``, the undo of ``disable_user``: ``PATCH /users/{id}`` with ``accountEnabled: true``
    (https://learn.microsoft.com/graph/api/user-update). An account enabled already is ``confirmed``: the
    undo's end state holds."""

    name = "enable_user"

    async def one(self, req: dict[str, Any], user: str, ctx: ActionContext) -> ActionResult:
        q = UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(select=["id", "accountEnabled"])
        current = await ctx.graph.users.by_user_id(user).get(RequestConfiguration(query_parameters=q))
        if current is not None and current.account_enabled is True:
            return ActionResult(req["id"], "confirmed", detail=f"account {user} is enabled already: "
                                                               "nothing to undo")
        await ctx.graph.users.by_user_id(user).patch(User(account_enabled=True), _no_replay())
        return ActionResult(req["id"], "confirmed", detail=f"account {user} re-enabled")


class ConfirmCompromised:
    """``POST /identityProtection/riskyUsers/confirmCompromised`` with the targets' object ids, in as few
    calls as possible.

    The API takes object ids (``userIds``), and the rules map them (AccountObjectId, SenderObjectId), so
    nothing is looked up: resolving a UPN (``GET /users/{upn}``) would need User.Read.All, which the
    confirmCompromised feature does not grant (IdentityRiskyUser.*.All only, infra/permissions.json;
    https://learn.microsoft.com/graph/api/riskyuser-confirmcompromised#permissions). A target that is not
    an object id fails alone, saying so. The service answers for the call as a whole, so a 400 on a call
    with several ids (one id it refuses) is bisected down to the id it refuses."""

    name = "confirm_compromised"

    def __init__(self, *, concurrency: int = TARGET_CONCURRENCY, timeout: float = TARGET_TIMEOUT):
        self.concurrency, self.timeout = concurrency, timeout

    async def execute(self, requests: list[dict[str, Any]], ctx: ActionContext) -> list[ActionResult]:
        results: dict[str, ActionResult] = {}
        ready: list[dict[str, Any]] = []
        for req in requests:
            bad = _wrong(req, self.name)
            user = _user(req) or ""
            if bad is None and not is_object_id(user):
                bad = failed(req, f"confirmCompromised takes user object ids, and {user!r} is not one: "
                                  "map the rule's AccountObjectId (resolving a UPN would need User.Read.All, "
                                  "which this feature does not grant)")
            if bad is not None:
                results[req["id"]] = bad
            else:
                ready.append(req)
        # An earlier attempt may have confirmed them already (an answer lost after the service applied it):
        # the user's riskState says so, and a second confirmation is not sent (docs/remediation.md).
        checked = await self._already_confirmed([r for r in ready if r["id"] in ctx.prior_attempts], ctx)
        results.update({rid: res for rid, res in checked.items() if res is not None})
        ready = [r for r in ready if r["id"] not in results]
        # Calls of up to 60 users each, at most ``concurrency`` at once, each within ``timeout``.
        slots = asyncio.Semaphore(self.concurrency)

        async def call(chunk: list[dict[str, Any]]) -> dict[str, ActionResult]:
            async with slots:
                return await self._submit(chunk, ctx)

        chunks = [ready[i:i + MAX_USERS_PER_CALL] for i in range(0, len(ready), MAX_USERS_PER_CALL)]
        for part in await asyncio.gather(*(call(c) for c in chunks)):
            results.update(part)
        return [results[r["id"]] for r in requests]

    async def _already_confirmed(self, reqs: list[dict[str, Any]],
                                 ctx: ActionContext) -> dict[str, ActionResult | None]:
        """For each request: ``None`` when it is to be sent, else its result without sending: confirmed
        when the user's riskState is already confirmedCompromised (``GET /identityProtection/riskyUsers/
        {id}``, IdentityRiskyUser.Read.All: https://learn.microsoft.com/graph/api/riskyuser-get), or a
        transient result when the read failed transiently (5xx, 429, timeout: read again on the retry,
        rather than confirming twice). 403 (permission not granted) and 404 (a user never risky) mean:
        send it, as before."""
        slots = asyncio.Semaphore(self.concurrency)

        async def check(req: dict[str, Any]) -> ActionResult | None:
            async with slots:
                try:
                    risky = await asyncio.wait_for(
                        ctx.graph.identity_protection.risky_users.by_risky_user_id((_user(req) or "").lower())
                        .get(), self.timeout)
                except TimeoutError:
                    return ActionResult(req["id"], "failed", error="reading riskState timed out",
                                        transient=True)
                except Exception as exc:
                    failure = describe(exc)
                    if failure.status in (403, 404) or not failure.transient:
                        return None
                    return failure.result(req["id"], "reading riskState before confirming again")
            value = getattr(risky, "risk_state", None)
            if str(getattr(value, "value", value)) != "confirmedCompromised":
                return None
            return ActionResult(req["id"], "confirmed",
                                detail=f"{_user(req)} already confirmed compromised: done by an earlier "
                                       "attempt (recorded now)")

        found = await asyncio.gather(*(check(r) for r in reqs))
        return {r["id"]: res for r, res in zip(reqs, found, strict=True)}

    async def _submit(self, chunk: list[dict[str, Any]], ctx: ActionContext) -> dict[str, ActionResult]:
        object_ids = list(dict.fromkeys((_user(r) or "").lower() for r in chunk))
        try:
            await asyncio.wait_for(ctx.graph.identity_protection.risky_users.confirm_compromised.post(
                ConfirmCompromisedPostRequestBody(user_ids=object_ids), _no_replay()), self.timeout)
        except TimeoutError:
            return {r["id"]: timeout_result(r["id"], f"confirm compromised ({len(object_ids)} users)",
                                            self.timeout) for r in chunk}
        except Exception as exc:
            failure = describe(exc)
            if failure.status == 400 and len(object_ids) > 1:
                mid = len(chunk) // 2
                return {**await self._submit(chunk[:mid], ctx), **await self._submit(chunk[mid:], ctx)}
            return {r["id"]: failure.result(r["id"], "confirm compromised") for r in chunk}
        return {r["id"]: ActionResult(r["id"], "confirmed", detail=_confirmed_detail(r, ctx)) for r in chunk}


def _confirmed_detail(req: dict[str, Any], ctx: ActionContext) -> str:
    detail = f"{_user(req)} confirmed compromised: user risk set to high"
    if req["id"] in ctx.prior_attempts:   # module doc: resent rather than checked
        detail += " (sent again after an earlier attempt that may have done it: confirming is idempotent)"
    return detail


_OBJECT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


def is_object_id(value: str) -> bool:
    """An Entra object id (a GUID), as opposed to a UPN."""
    return _OBJECT_ID.fullmatch(value.strip()) is not None


DECLARES = (
    ActionDef(name="revoke_sessions", family="account", label="Revoke sign-in sessions",
              executor=lambda _strategy: RevokeSessions(), required=("user",), features=("revokeSessions",)),
    ActionDef(name="disable_user", family="account", label="Disable account",
              executor=lambda _strategy: DisableUser(), required=("user",), features=("disableUser",),
              inverse="enable_user"),
    ActionDef(name="enable_user", family="account", label="Re-enable account",
              executor=lambda _strategy: EnableUser(), required=("user",), features=("disableUser",)),
    ActionDef(name="confirm_compromised", family="account", label="Confirm user compromised",
              executor=lambda _strategy: ConfirmCompromised(), required=("user",),
              features=("confirmCompromised",)),
)
