"""Check the deployment's JSON parameters before anything is deployed (azd ``preprovision`` hook).

azd runs this with the environment's values (``azd env set ...``) in the process environment, before
``azd provision``/``azd up`` calls Azure. It refuses, with the setting's name and the reason:

- ``RESPONDER_OPERATOR_APP_SETTINGS`` (Bicep ``operatorAppSettings``) that is not a JSON object of
  strings, or that names a setting the Flex Consumption plan does not support (``FUNCTIONS_WORKER_RUNTIME``,
  ``FUNCTIONS_EXTENSION_VERSION``, ``WEBSITE_RUN_FROM_PACKAGE``, ...: the plan configures these in
  ``functionAppConfig``), or one the deployment sets itself (it would be silently overridden);
- ``RESPONDER_ALWAYS_READY`` (``alwaysReady``) that is not a JSON list of ``{"name", "instanceCount"}``.

With ``az deployment sub create``, run it yourself first:
``python3 infra/scripts/check_parameters.py --operator-app-settings '<the JSON you pass>'``.
Standard library only (runs on the deployer's machine, no virtual environment needed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

INFRA = Path(__file__).resolve().parents[1]
RESERVED = INFRA / "app-settings-reserved.json"
OPERATOR_VAR = "RESPONDER_OPERATOR_APP_SETTINGS"
ALWAYS_READY_VAR = "RESPONDER_ALWAYS_READY"


class ParameterError(ValueError):
    """A parameter value that the deployment would reject or misapply; the message names it."""


def _reserved() -> dict[str, Any]:
    return json.loads(RESERVED.read_text(encoding="utf-8"))


def _json(var: str, raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ParameterError(f"{var}: not valid JSON ({exc.msg} at character {exc.pos})") from None


def check_operator_app_settings(raw: str, var: str = OPERATOR_VAR) -> dict[str, str]:
    settings = _json(var, raw)
    if not isinstance(settings, dict):
        raise ParameterError(f"{var}: expected a JSON object of app settings, e.g. "
                             '{"RESPONDER_PARAMS": "{...}"}')
    reserved = _reserved()
    flex = {n.upper() for n in reserved["flexConsumptionUnsupported"]["names"]}
    ours = {n.upper() for n in reserved["setByDeployment"]}
    storage = reserved["storagePrefix"].upper()
    problems: list[str] = []
    for name, value in settings.items():
        upper = name.upper()   # app setting names are case-insensitive
        if upper in flex:
            problems.append(f"{name}: the Flex Consumption plan does not support this app setting (the "
                            "runtime, version and package are set in functionAppConfig); see "
                            f"{reserved['flexConsumptionUnsupported']['source']}")
        elif upper in ours or upper.startswith(storage):
            problems.append(f"{name}: set by the deployment itself (infra/app/function.bicep), which would "
                            "override this value; change it through its parameter (docs/deploy.md)")
        elif not isinstance(value, str):
            problems.append(f"{name}: app setting values are strings; write {json.dumps(json.dumps(value))}")
    if problems:
        raise ParameterError(f"{var} (operatorAppSettings) refused:\n  " + "\n  ".join(problems))
    return settings


def check_always_ready(raw: str, var: str = ALWAYS_READY_VAR) -> list[dict[str, Any]]:
    value = _json(var, raw)
    ok = isinstance(value, list) and all(
        isinstance(v, dict) and set(v) == {"name", "instanceCount"} and isinstance(v["name"], str)
        and isinstance(v["instanceCount"], int) and not isinstance(v["instanceCount"], bool)
        and v["instanceCount"] >= 0 for v in value)
    if not ok:
        raise ParameterError(f'{var} (alwaysReady): expected a JSON list like [{{"name": "function:worker", '
                             f'"instanceCount": 1}}]')
    return value


def check(env: Mapping[str, str]) -> list[str]:
    """Check what is set; return what was checked (for the hook's output)."""
    checked = []
    if env.get(OPERATOR_VAR, "").strip():
        names = check_operator_app_settings(env[OPERATOR_VAR])
        checked.append(f"{OPERATOR_VAR}: {len(names)} setting(s): {', '.join(sorted(names)) or 'none'}")
    if env.get(ALWAYS_READY_VAR, "").strip():
        check_always_ready(env[ALWAYS_READY_VAR])
        checked.append(f"{ALWAYS_READY_VAR}: ok")
    return checked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operator-app-settings", help="the operatorAppSettings JSON (default: the "
                        f"{OPERATOR_VAR} environment variable)")
    parser.add_argument("--always-ready", help=f"the alwaysReady JSON (default: {ALWAYS_READY_VAR})")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    if args.operator_app_settings is not None:
        env[OPERATOR_VAR] = args.operator_app_settings
    if args.always_ready is not None:
        env[ALWAYS_READY_VAR] = args.always_ready
    try:
        checked = check(env)
    except ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("parameters checked: " + ("; ".join(checked) if checked else "no JSON parameters set"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
