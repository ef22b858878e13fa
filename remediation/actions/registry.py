"""The one place an action is declared: what it is called, what it targets, who may run it, how it is undone.

Every module of this package may declare actions in a module-level ``DECLARES`` tuple of ``ActionDef``;
``default_registry()`` imports the package's modules once and collects them, so adding an action is one
new module here (plus its tests). Everything else reads the registry: ``get_action`` (the executor), the
rails (families, the cap, connector handling), verification (expected EmailEvents locations), the worker's
undo and manual-command paths, and the cards (labels). Files that may not import remediation (JSON
schemas, ``detections/``, the request contract's own table, ``infra/permissions.json``) are checked
against it by tests (tests/remediation/test_registry.py), which name what to change.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from core.request import CONTRACT, Contract
from remediation.actions.base import Action

FAMILIES = ("email", "account", "connector", "notify")
# Modules of this package that hold shared code, not declarations (skipped by discovery, saving imports).
_NOT_DECLARING = frozenset({"base", "errors", "graph_json", "registry"})


@dataclass(frozen=True)
class ActionDef:
    name: str
    family: str                                    # email | account | connector | notify
    label: str                                     # what the cards call it
    executor: Callable[[str], Action]              # email strategy -> the implementation
    required: tuple[str, ...] = ()                 # target fields the contract requires
    optional: tuple[str, ...] = ()                 # further target fields a rule may map
    # Keys of infra/permissions.json's "features" whose application roles this action needs (email
    # actions: one per strategy/scope; none for notify, which calls nothing).
    features: tuple[str, ...] = ()
    # A person runs it by hand while RESPONDER_CONNECTOR_ACTIONS is ``manual`` (no Exchange permission).
    manual: bool = False
    # The exact command a person would run instead (connector actions); None when there is none.
    command: Callable[[Mapping[str, Any]], str | None] | None = None
    inverse: str | None = None                     # the action that undoes it, None: no undo
    capped: bool = True                            # counts against the per-run target cap
    # EmailEvents LatestDeliveryLocation values (lower case) that confirm a Defender submission.
    confirmed_in: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"action {self.name}: family must be one of {FAMILIES}, not {self.family!r}")
        if set(self.required) & set(self.optional):
            raise ValueError(f"action {self.name}: a target field is both required and optional")


class Registry:
    def __init__(self, defs: Iterable[ActionDef] = ()) -> None:
        self._defs: dict[str, ActionDef] = {}
        self._contract: Contract | None = None
        for d in defs:
            self.register(d)

    def register(self, d: ActionDef) -> ActionDef:
        if d.name in self._defs:
            raise ValueError(f"action {d.name!r} is declared twice")
        if d.inverse is not None and d.inverse == d.name:
            raise ValueError(f"action {d.name!r} cannot undo itself")
        self._defs[d.name] = d
        self._contract = None
        return d

    def get(self, name: str) -> ActionDef:
        try:
            return self._defs[name]
        except KeyError:
            raise ValueError(f"unknown action {name!r}") from None

    def find(self, name: Any) -> ActionDef | None:
        return self._defs.get(name) if isinstance(name, str) else None

    def __contains__(self, name: object) -> bool:
        return name in self._defs

    def __iter__(self) -> Any:
        return iter(self._defs.values())

    def names(self) -> tuple[str, ...]:
        return tuple(self._defs)

    def family(self, family: str) -> tuple[str, ...]:
        if family not in FAMILIES:
            raise ValueError(f"unknown family {family!r}")
        return tuple(d.name for d in self if d.family == family)

    def target_fields(self) -> dict[str, tuple[str, ...]]:
        return {d.name: d.required for d in self}

    def optional_targets(self) -> dict[str, tuple[str, ...]]:
        return {d.name: d.optional for d in self if d.optional}

    def contract(self) -> Contract:
        """The request contract's validation with this registry's actions and target fields (the
        contract's own, ``core.request.CONTRACT``, when they are the same)."""
        if self._contract is None:
            fields = self.target_fields()
            self._contract = CONTRACT if fields == CONTRACT.target_fields else Contract(fields)
        return self._contract

    def label(self, name: str) -> str:
        d = self.find(name)
        return d.label if d else str(name)

    def features(self) -> dict[str, set[str]]:
        """Permission feature -> the actions that need it (infra/permissions.json's ``actions`` lists)."""
        out: dict[str, set[str]] = {}
        for d in self:
            for f in d.features:
                out.setdefault(f, set()).add(d.name)
        return out

    def executor(self, name: str, email_strategy: str = "defender") -> Action:
        return self.get(name).executor(email_strategy)

    def run_by_hand(self, name: Any, connector_actions: str) -> bool:
        d = self.find(name)
        return bool(d and d.manual and connector_actions == "manual")

    def manual_command(self, request: Mapping[str, Any]) -> str | None:
        d = self.find(request.get("action"))
        return d.command(request) if d and d.command else None


def discover(package: str = "remediation.actions") -> Registry:
    """A registry of every ``DECLARES`` in ``package``'s modules, in module-name order."""
    pkg = importlib.import_module(package)
    registry = Registry()
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name in _NOT_DECLARING:
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        for d in getattr(module, "DECLARES", ()):
            registry.register(d)
    return registry


@cache
def default_registry() -> Registry:
    return discover()
