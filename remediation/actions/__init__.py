"""Remediation actions: one module per family, one interface (``Action.execute``), one factory.

``get_action(action, email_strategy)`` picks the implementation: email actions through Defender
(``analyzedEmails/remediate``, asynchronous: ``submitted``) or the mailbox (find and move:
``confirmed``/``skipped``); account actions and ``notify`` ignore the strategy; ``disable_connector``
goes through the Exchange admin API client in the context.
"""

from __future__ import annotations

from remediation.actions.base import RESULT_STATES, Action, ActionContext, ActionResult

__all__ = ["RESULT_STATES", "Action", "ActionContext", "ActionResult", "get_action"]

EMAIL_STRATEGIES = ("defender", "mailbox")


def get_action(action: str, email_strategy: str = "defender") -> Action:
    """The implementation of ``action``; ValueError names what is wrong with an unknown one."""
    from core.request import ACCOUNT_ACTIONS, EMAIL_ACTIONS

    if action in EMAIL_ACTIONS:
        if email_strategy == "defender":
            from remediation.actions.email_defender import DefenderEmailAction

            return DefenderEmailAction(action)
        if email_strategy == "mailbox":
            from remediation.actions.email_mailbox import MailboxEmailAction

            return MailboxEmailAction(action)
        raise ValueError(f"unknown email strategy {email_strategy!r} (expected one of {EMAIL_STRATEGIES})")
    if action in ACCOUNT_ACTIONS:
        from remediation.actions import accounts

        return {"revoke_sessions": accounts.RevokeSessions, "disable_user": accounts.DisableUser,
                "confirm_compromised": accounts.ConfirmCompromised}[action]()
    if action == "disable_connector":
        from remediation.actions.connector import DisableConnector

        return DisableConnector()
    if action == "notify":
        from remediation.actions.notify import NotifyAction

        return NotifyAction()
    raise ValueError(f"unknown action {action!r}")
