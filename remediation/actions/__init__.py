"""Remediation actions: one module per family, one interface (``Action.execute``), one registry.

Each action is declared once (``ActionDef`` in a module's ``DECLARES``, collected by
``remediation.actions.registry``); ``get_action(action, email_strategy)`` asks the registry for its
executor. Email actions go through Defender (``analyzedEmails/remediate``, asynchronous: ``submitted``)
or the mailbox (find and move: ``confirmed``/``skipped``); account actions and ``notify`` ignore the
strategy; ``disable_connector`` goes through the Exchange admin API client in the context.
"""

from __future__ import annotations

from remediation.actions.base import RESULT_STATES, Action, ActionContext, ActionResult
from remediation.actions.registry import ActionDef, Registry, default_registry

__all__ = ["RESULT_STATES", "Action", "ActionContext", "ActionDef", "ActionResult", "Registry",
           "default_registry", "get_action"]


def get_action(action: str, email_strategy: str = "defender") -> Action:
    """The implementation of ``action``; ValueError names what is wrong with an unknown one."""
    return default_registry().executor(action, email_strategy)
