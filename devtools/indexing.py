"""``FunctionApp.get_functions()`` may run only once per app object (a second call fails on "duplicate"
function names), so everything that inspects the indexed functions goes through this cache."""

from __future__ import annotations

import threading
import weakref
from typing import Any

_cache: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def indexed(app: Any) -> list[Any]:
    """The app's functions, indexed once, as the host would (``azure.functions`` Function objects)."""
    with _lock:
        found = _cache.get(app)
        if found is None:
            found = list(app.get_functions())
            _cache[app] = found
        return found


def by_name(app: Any) -> dict[str, Any]:
    return {f.get_function_name(): f for f in indexed(app)}
