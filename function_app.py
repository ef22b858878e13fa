"""Azure Functions (Python v2 model) wiring: triggers and bindings only; the work is in app.

Configuration is read and validated here, at import, once: a missing or wrong setting stops the app
from starting, with the setting's name in the error. See docs/function-app.md.
"""

# No `from __future__ import annotations`: the Functions worker reads these annotations at runtime,
# and it accepts `typing.List[str]` (not `list[str]`) as a queue output type.
import os
import typing

import azure.functions as func

from app import handlers, pages
from app import push_subscriptions as push_subs
from app.bootstrap import load
from app.runtime import Runtime
from app.schedules import TimerSpec
from app.signin import PageAuth

QUEUE = "%RESPONDER_REQUESTS_QUEUE%"
POISON_QUEUE = "%RESPONDER_REQUESTS_QUEUE%-poison"
STORAGE = "AzureWebJobsStorage"
PUSH_QUEUE = "%RESPONDER_PUSH_QUEUE%"

runtime = Runtime(load())
# The approval page's sign-in (app/signin.py): Easy Auth must be on, else the page refuses everyone.
page_auth = PageAuth.from_env(os.environ)
app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


def _rule_timer(spec: TimerSpec) -> None:
    @app.function_name(spec.function_name)
    @app.timer_trigger(arg_name="timer", schedule=spec.schedule)
    @app.queue_output(arg_name="msgs", queue_name=QUEUE, connection=STORAGE)
    async def rule_timer(timer: func.TimerRequest, msgs: func.Out[typing.List[str]]) -> None:  # noqa: UP006
        await handlers.on_timer(runtime, spec.slug, timer, msgs)


for _spec in runtime.config.timers:
    _rule_timer(_spec)


if runtime.config.digest_schedule:
    @app.function_name("digest")
    @app.timer_trigger(arg_name="timer", schedule=runtime.config.digest_schedule)
    async def digest(timer: func.TimerRequest) -> None:
        await handlers.on_digest(runtime, timer)


if runtime.config.verify_schedule:
    @app.function_name("verify")
    @app.timer_trigger(arg_name="timer", schedule=runtime.config.verify_schedule)
    async def verify(timer: func.TimerRequest) -> None:
        await handlers.on_verify(runtime, timer)


# The push path's subscriptions (issue 15): reconcile + renew every 30 minutes; does nothing while
# RESPONDER_PUSH is off (app/push_subscriptions.py).
@app.function_name(push_subs.FUNCTION_NAME)
@app.timer_trigger(arg_name="timer", schedule=push_subs.SCHEDULE)
async def push_subscriptions(timer: func.TimerRequest) -> None:
    await handlers.on_push_subscriptions(runtime, timer)


@app.function_name("worker")
@app.queue_trigger(arg_name="msg", queue_name=QUEUE, connection=STORAGE)
async def worker(msg: func.QueueMessage) -> None:
    await handlers.on_message(runtime, msg)


@app.function_name("poison")
@app.queue_trigger(arg_name="msg", queue_name=POISON_QUEUE, connection=STORAGE)
async def poison(msg: func.QueueMessage) -> None:
    await handlers.on_poison(runtime, msg)


@app.function_name("scan")
@app.route(route="api/scan", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@app.queue_output(arg_name="msgs", queue_name=QUEUE, connection=STORAGE)
async def scan(req: func.HttpRequest, msgs: func.Out[typing.List[str]]) -> func.HttpResponse:  # noqa: UP006
    return await handlers.http_scan(runtime, req, msgs)


@app.function_name("health")
@app.route(route="api/health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def health(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.http_health(runtime, req)


@app.function_name("approve")
@app.route(route="api/requests/{id}/approve", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def approve(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.http_decide(runtime, req, "approve")


@app.function_name("reject")
@app.route(route="api/requests/{id}/reject", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def reject(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.http_decide(runtime, req, "reject")


# --- the approval page (app/pages.py): anonymous to the Functions host because App Service
# authentication (Easy Auth) guards it in front; the app refuses it when Easy Auth is off. host.json's
# routePrefix is "" so the page lives at /requests/... and the key-protected API at /api/...

@app.function_name("page_request")
@app.route(route="requests/{id}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def page_request(req: func.HttpRequest) -> func.HttpResponse:
    return await pages.get_request(runtime, req, page_auth)


@app.function_name("page_approve")
@app.route(route="requests/{id}/approve", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@app.queue_output(arg_name="msgs", queue_name=QUEUE, connection=STORAGE)
async def page_approve(req: func.HttpRequest, msgs: func.Out[typing.List[str]]) -> func.HttpResponse:  # noqa: UP006
    return await pages.post_decision(runtime, req, page_auth, "approve", msgs)


@app.function_name("page_reject")
@app.route(route="requests/{id}/reject", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@app.queue_output(arg_name="msgs", queue_name=QUEUE, connection=STORAGE)
async def page_reject(req: func.HttpRequest, msgs: func.Out[typing.List[str]]) -> func.HttpResponse:  # noqa: UP006
    return await pages.post_decision(runtime, req, page_auth, "reject", msgs)


@app.function_name("page_undo")
@app.route(route="requests/{id}/undo", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@app.queue_output(arg_name="msgs", queue_name=QUEUE, connection=STORAGE)
async def page_undo(req: func.HttpRequest, msgs: func.Out[typing.List[str]]) -> func.HttpResponse:  # noqa: UP006
    return await pages.post_decision(runtime, req, page_auth, "undo", msgs)


@app.function_name("page_done")
@app.route(route="requests/{id}/done", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@app.queue_output(arg_name="msgs", queue_name=QUEUE, connection=STORAGE)
async def page_done(req: func.HttpRequest, msgs: func.Out[typing.List[str]]) -> func.HttpResponse:  # noqa: UP006
    return await pages.post_decision(runtime, req, page_auth, "done", msgs)


@app.function_name("page_run")
@app.route(route="runs/{id}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def page_run(req: func.HttpRequest) -> func.HttpResponse:
    return await pages.get_run(runtime, req, page_auth)


@app.function_name("page_run_approve")
@app.route(route="runs/{id}/approve", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@app.queue_output(arg_name="msgs", queue_name=QUEUE, connection=STORAGE)
async def page_run_approve(req: func.HttpRequest, msgs: func.Out[typing.List[str]]) -> func.HttpResponse:  # noqa: UP006
    return await pages.post_run_approve(runtime, req, page_auth, msgs)


@app.function_name("page_run_undo")
@app.route(route="runs/{id}/undo", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@app.queue_output(arg_name="msgs", queue_name=QUEUE, connection=STORAGE)
async def page_run_undo(req: func.HttpRequest, msgs: func.Out[typing.List[str]]) -> func.HttpResponse:  # noqa: UP006
    return await pages.post_run_undo(runtime, req, page_auth, msgs)


@app.function_name("page_stop")
@app.route(route="stop", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def page_stop(req: func.HttpRequest) -> func.HttpResponse:
    return await pages.get_stop(runtime, req, page_auth)


@app.function_name("page_stop_on")
@app.route(route="stop", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def page_stop_on(req: func.HttpRequest) -> func.HttpResponse:
    return await pages.post_stop(runtime, req, page_auth, True)


@app.function_name("page_stop_clear")
@app.route(route="stop/clear", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def page_stop_clear(req: func.HttpRequest) -> func.HttpResponse:
    return await pages.post_stop(runtime, req, page_auth, False)


@app.function_name("stop")
@app.route(route="api/stop", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def stop_on(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.http_stop(runtime, req, True)


@app.function_name("stop_clear")
@app.route(route="api/stop/clear", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def stop_clear(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.http_stop(runtime, req, False)


@app.function_name("undo_run")
@app.route(route="api/runs/{id}/undo", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def undo_run(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.http_undo_run(runtime, req)


# --- the push path (issue 15, docs/push.md): Graph posts change and lifecycle notifications here. Anonymous:
# Graph cannot send a function key; each notification's clientState is the check (app/push_endpoint.py).

@app.function_name("push_notifications")
@app.route(route="api/push/notifications", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@app.queue_output(arg_name="msgs", queue_name=PUSH_QUEUE, connection=STORAGE)
async def push_notifications(req: func.HttpRequest, msgs: func.Out[typing.List[str]]) -> func.HttpResponse:  # noqa: UP006
    return await handlers.http_push_notifications(runtime, req, msgs)


# The push worker (app/push_worker.py): one queued notification -> the streaming rules -> requests on the
# requests queue, exactly as a scan queues them. An invalid message goes to the push poison queue at once
# (second output binding: a retry cannot fix it); push_poison records what lands there and the
# push-rejected alert tells on-call (the scheduled rules still cover what the push path gave up on).
@app.function_name("push_worker")
@app.queue_trigger(arg_name="msg", queue_name=PUSH_QUEUE, connection=STORAGE)
@app.queue_output(arg_name="msgs", queue_name=QUEUE, connection=STORAGE)
@app.queue_output(arg_name="poison", queue_name=PUSH_QUEUE + "-poison", connection=STORAGE)
async def push_worker(msg: func.QueueMessage, msgs: func.Out[typing.List[str]],  # noqa: UP006
                      poison: func.Out[typing.List[str]]) -> None:  # noqa: UP006
    await handlers.on_push_message(runtime, msg, msgs, poison)


@app.function_name("push_poison")
@app.queue_trigger(arg_name="msg", queue_name=PUSH_QUEUE + "-poison", connection=STORAGE)
async def push_poison(msg: func.QueueMessage) -> None:
    await handlers.on_push_poison(runtime, msg)
