"""The app as the host indexes it: every function's trigger, bindings, schedule, route and auth level."""

from __future__ import annotations

import inspect
import json
import typing
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.functions.http import HttpRequestConverter
from azure.functions.queue import QueueMessageInConverter, QueueMessageOutConverter
from azure.functions.timer import TimerRequestConverter

from app import schedules
from core.settings import ROOT
from detections.catalog import load_catalog

QUEUE = "%RESPONDER_REQUESTS_QUEUE%"
# host.json's routePrefix is "": the key-protected API is under api/, the approval page beside it.
HTTP = {"scan": ("api/scan", ["POST"], "FUNCTION"), "health": ("api/health", ["GET"], "ANONYMOUS"),
        "approve": ("api/requests/{id}/approve", ["POST"], "FUNCTION"),
        "reject": ("api/requests/{id}/reject", ["POST"], "FUNCTION"),
        "page_request": ("requests/{id}", ["GET"], "ANONYMOUS"),
        "page_approve": ("requests/{id}/approve", ["POST"], "ANONYMOUS"),
        "page_reject": ("requests/{id}/reject", ["POST"], "ANONYMOUS"),
        "page_run": ("runs/{id}", ["GET"], "ANONYMOUS"),
        "page_undo": ("requests/{id}/undo", ["POST"], "ANONYMOUS"),
        "page_done": ("requests/{id}/done", ["POST"], "ANONYMOUS"),
        "page_run_approve": ("runs/{id}/approve", ["POST"], "ANONYMOUS"),
        "page_run_undo": ("runs/{id}/undo", ["POST"], "ANONYMOUS"),
        "page_stop": ("stop", ["GET"], "ANONYMOUS"),
        "page_stop_on": ("stop", ["POST"], "ANONYMOUS"),
        "page_stop_clear": ("stop/clear", ["POST"], "ANONYMOUS"),
        "stop": ("api/stop", ["POST"], "FUNCTION"), "stop_clear": ("api/stop/clear", ["POST"], "FUNCTION"),
        "undo_run": ("api/runs/{id}/undo", ["POST"], "FUNCTION"),
        # Graph posts notifications without a function key; each one's clientState is the check.
        "push_notifications": ("api/push/notifications", ["POST"], "ANONYMOUS")}
# Anonymous to the Functions host: App Service authentication (Easy Auth) signs people in in front of
# them, and the app refuses them unless Easy Auth is configured (app/signin.py).
PAGES = frozenset(n for n in HTTP if n.startswith("page_"))
ANONYMOUS_API = frozenset({"health", "push_notifications"})


def bindings(fn: Any) -> dict[str, dict[str, Any]]:
    return {b["name"]: b for b in json.loads(fn.get_function_json())["bindings"]}


def test_function_set_is_one_timer_per_enabled_rule_plus_fixed_functions(functions: dict[str, Any]) -> None:
    catalog = load_catalog()
    timers = {schedules.function_name(slug) for slug in catalog}
    assert set(functions) == timers | {"worker", "poison", "digest", "verify", "push_subscriptions",
                                       "push_worker", "push_poison", *HTTP}
    for name in functions:
        assert schedules.FUNCTION_NAME_RE.match(name), name


def test_rule_timers_schedule_from_query_frequency_and_write_to_the_queue(functions: dict[str, Any]) -> None:
    for slug, rule in load_catalog().items():
        b = bindings(functions[schedules.function_name(slug)])
        assert set(b) == {"timer", "msgs"}
        assert b["timer"]["type"] == "timerTrigger" and b["timer"]["direction"] == "IN"
        assert b["timer"]["schedule"] == schedules.from_frequency(rule.query_frequency, slug)
        assert schedules.validate(b["timer"]["schedule"]) == b["timer"]["schedule"]
        assert b["msgs"] == {"direction": "OUT", "type": "queue", "name": "msgs", "queueName": QUEUE,
                             "connection": "AzureWebJobsStorage"}


def test_daily_digest_timer_defaults_to_seven_utc(functions: dict[str, Any]) -> None:
    timer = {"direction": "IN", "type": "timerTrigger", "name": "timer", "schedule": "0 0 7 * * *"}
    assert bindings(functions["digest"]) == {"timer": timer}


def test_push_subscriptions_timer_runs_every_thirty_minutes(functions: dict[str, Any]) -> None:
    # Reconciles and renews the Graph subscriptions of the push path (app/push_subscriptions.py).
    timer = {"name": "timer", "type": "timerTrigger", "direction": "IN", "schedule": "0 */30 * * * *"}
    assert bindings(functions["push_subscriptions"]) == {"timer": timer}


def test_verify_timer_defaults_to_every_five_minutes(functions: dict[str, Any]) -> None:
    # Confirms submitted Defender remediations (Worker.verify); RESPONDER_VERIFY_SCHEDULE overrides.
    timer = {"direction": "IN", "type": "timerTrigger", "name": "timer", "schedule": "30 */5 * * * *"}
    assert bindings(functions["verify"]) == {"timer": timer}


def test_push_worker_reads_the_push_queue_and_writes_the_requests_queue(functions: dict[str, Any]) -> None:
    worker, poison = bindings(functions["push_worker"]), bindings(functions["push_poison"])
    assert set(worker) == {"msg", "msgs", "poison"} and set(poison) == {"msg"}
    assert (worker["msg"]["type"], worker["msg"]["queueName"]) == ("queueTrigger", "%RESPONDER_PUSH_QUEUE%")
    assert (worker["msgs"]["type"], worker["msgs"]["direction"], worker["msgs"]["queueName"]) == (
        "queue", "OUT", QUEUE)
    # An invalid message goes to the poison queue at once: the same queue push_poison reads.
    assert (worker["poison"]["type"], worker["poison"]["direction"], worker["poison"]["queueName"]) == (
        "queue", "OUT", "%RESPONDER_PUSH_QUEUE%-poison")
    assert (poison["msg"]["type"], poison["msg"]["queueName"]) == ("queueTrigger",
                                                                   "%RESPONDER_PUSH_QUEUE%-poison")
    connections = {b["connection"] for b in (worker["msg"], worker["msgs"], worker["poison"], poison["msg"])}
    assert connections == {"AzureWebJobsStorage"}


def test_worker_and_poison_queue_triggers(functions: dict[str, Any]) -> None:
    worker, poison = bindings(functions["worker"]), bindings(functions["poison"])
    assert worker == {"msg": {"direction": "IN", "type": "queueTrigger", "name": "msg", "queueName": QUEUE,
                              "connection": "AzureWebJobsStorage"}}
    assert poison["msg"]["type"] == "queueTrigger"
    assert poison["msg"]["queueName"] == QUEUE + "-poison"
    assert poison["msg"]["connection"] == "AzureWebJobsStorage"


def test_http_routes_methods_and_auth_levels(functions: dict[str, Any]) -> None:
    for name, (route, methods, auth) in HTTP.items():
        b = bindings(functions[name])
        assert b["req"]["type"] == "httpTrigger"
        assert (b["req"]["route"], b["req"]["methods"], b["req"]["authLevel"]) == (route, methods, auth)
        assert b["$return"]["type"] == "http"
    assert bindings(functions["scan"])["msgs"]["queueName"] == QUEUE
    assert bindings(functions["push_notifications"])["msgs"] == {
        "direction": "OUT", "type": "queue", "name": "msgs", "queueName": "%RESPONDER_PUSH_QUEUE%",
        "connection": "AzureWebJobsStorage"}


def test_no_route_but_health_is_anonymous(functions: dict[str, Any]) -> None:
    for name, fn in functions.items():
        trig = bindings(fn).get("req")
        if trig and trig["type"] == "httpTrigger" and name not in ANONYMOUS_API and name not in PAGES:
            assert trig["authLevel"] in ("FUNCTION", "ADMIN"), name
        if trig and trig["type"] == "httpTrigger" and not trig["route"].startswith("api/"):
            assert name in PAGES, name   # outside /api only the Easy Auth-guarded page


def test_annotations_are_what_the_python_worker_accepts(functions: dict[str, Any]) -> None:
    """The worker matches each parameter's annotation to its binding's converter at load time."""
    checks = {"timerTrigger": TimerRequestConverter.check_input_type_annotation,
              "queueTrigger": QueueMessageInConverter.check_input_type_annotation,
              "httpTrigger": HttpRequestConverter.check_input_type_annotation}
    for name, fn in functions.items():
        user = fn.get_user_function()
        assert inspect.iscoroutinefunction(user), name
        hints = typing.get_type_hints(user)
        for arg, b in bindings(fn).items():
            if arg == "$return":
                assert hints["return"] is func.HttpResponse
            elif b["type"] == "queue":
                out = hints[arg]
                assert typing.get_origin(out) is func.Out, name
                assert QueueMessageOutConverter.check_output_type_annotation(typing.get_args(out)[0]), name
            else:
                assert checks[b["type"]](hints[arg]), (name, arg)


def test_host_json_queue_settings_and_bundle() -> None:
    host = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))
    assert host["version"] == "2.0"
    assert host["extensionBundle"] == {"id": "Microsoft.Azure.Functions.ExtensionBundle",
                                       "version": "[4.*, 5.0.0)"}
    queues = host["extensions"]["queues"]
    # The output binding writes base64; the trigger must read base64 (and the demo/CLI enqueue it so).
    assert queues["messageEncoding"] == "base64"
    assert queues["maxDequeueCount"] >= 2
    assert 1 <= queues["batchSize"] <= 16
    assert "logLevel" in host["logging"]
    # The page at /requests/..., the API at /api/... (routes say api/ themselves).
    assert host["extensions"]["http"]["routePrefix"] == ""


def test_function_app_is_thin_wiring() -> None:
    """Every function body is one call into app.handlers."""
    source = (Path(ROOT) / "function_app.py").read_text(encoding="utf-8")
    bodies = [line.strip() for line in source.splitlines() if line.startswith("    ") and "await" in line]
    calls = ("await handlers.", "return await handlers.", "return await pages.")
    assert bodies and all(line.startswith(calls) for line in bodies)
