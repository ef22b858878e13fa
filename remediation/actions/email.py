"""The four email actions: declared here, carried out by the strategy the deployment chose.

``defender`` submits through ``analyzedEmails/remediate`` (email_defender.py, asynchronous: confirmed
later from EmailEvents); ``mailbox`` finds and moves the message (email_mailbox.py). Both modules are
imported only when an email action runs.
"""

from __future__ import annotations

from collections.abc import Callable

from remediation.actions.base import Action
from remediation.actions.registry import ActionDef

EMAIL_STRATEGIES = ("defender", "mailbox")
# Target fields beyond network_message_id + recipient: the RFC 5322 id, and the mailbox's Entra object id
# (how the mailbox strategy addresses the mailbox).
_OPTIONAL = ("internet_message_id", "recipient_object_id")
# infra/permissions.json: defender strategy, or mailbox strategy with tenant-wide Mail.ReadWrite (the
# default mailbox scope grants it through Exchange RBAC for Applications, outside Entra).
_FEATURES = ("defenderEmail", "mailboxTenantWide")


def _executor(action: str) -> Callable[[str], Action]:
    def make(email_strategy: str) -> Action:
        if email_strategy == "defender":
            from remediation.actions.email_defender import DefenderEmailAction

            return DefenderEmailAction(action)
        if email_strategy == "mailbox":
            from remediation.actions.email_mailbox import MailboxEmailAction

            return MailboxEmailAction(action)
        raise ValueError(f"unknown email strategy {email_strategy!r} (expected one of {EMAIL_STRATEGIES})")
    return make


def _email(name: str, label: str, confirmed_in: set[str], inverse: str | None = None) -> ActionDef:
    return ActionDef(name=name, family="email", label=label, executor=_executor(name),
                     required=("network_message_id", "recipient"), optional=_OPTIONAL, features=_FEATURES,
                     inverse=inverse, confirmed_in=frozenset(confirmed_in))


# Locations are EmailEvents' LatestDeliveryLocation, compared lower-case: the docs spell them "Inbox/Folder",
# "Junk", "Deleted items" (https://learn.microsoft.com/defender-xdr/advanced-hunting-emailevents-table,
# DeliveryLocation), the service returns "Inbox/folder", "Junk folder".
DECLARES = (
    # Undo of a confirmed move to Junk: the message goes back (remediation/decisions.py).
    _email("move_to_junk", "Move to Junk", {"junk folder", "junk"}, inverse="move_to_inbox"),
    _email("move_to_inbox", "Move back to Inbox", {"inbox/folder", "inbox"}),
    # soft_delete has Defender's meaning (Recoverable Items, out of the user's sight);
    # move_to_deleted_items puts it in Deleted Items, where the user still sees it.
    _email("soft_delete", "Soft delete", {"deleted items"}),
    _email("move_to_deleted_items", "Move to Deleted Items", {"deleted items"}),
)
