"""What the notification endpoint puts on the push queue: ``push-notification/1`` (issue 15).

The endpoint validates the Graph POST (shape, clientState) and queues one message per notification;
the message is only a pointer (which subscription, which message): the push worker checks the
subscription against its own table and reads the message from Graph itself, so a forged message can
at most make it look at a real message of a mailbox it already watches.

kinds:
* ``change``: a change notification: ``subscription_id``, ``change_type`` ("created"), ``resource``
  ("Users/{user id}/Messages/{message id}"), ``user_id`` and ``message_id`` parsed from it, ``tenant_id``.
* ``lifecycle``: ``subscription_id``, ``lifecycle_event`` (reauthorizationRequired, subscriptionRemoved,
  missed), ``tenant_id``.
* ``message``: a message found by a delta resync (after ``missed`` or a repaired subscription):
  ``subscription_id``, ``user_id``, ``message_id``; processed like a change.
* ``sweep``: one step of a hot-campaign sweep (push/sweep.py): ``rule`` (a streaming rule's slug),
  ``campaign`` (SHA-256 hex of the campaign key: the marker row's RowKey), ``chain_id`` (32 hex),
  ``seq`` (an integer, the step), optional ``tenant_id``. It only causes delta reads of the rule's
  protected Inboxes, and only while the rule (the catalog is the authority) and its marker row agree.
Every message carries ``received_at`` (when the endpoint or the resync queued it, UTC ISO).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

SCHEMA = "push-notification/1"
KINDS = ("change", "lifecycle", "message", "sweep")
LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")


@dataclass(frozen=True)
class Subscription:
    """One Graph subscription as the push table records it (push/subscriptions.py owns the table)."""

    subscription_id: str
    mailbox: str            # protected mailbox address, lower case
    user_id: str            # its Entra object id (Graph resource paths use it)
    folder: str             # "inbox" or "sentitems"
    expires_at: str         # ISO UTC
    delta_link: str = ""    # the last delta link of this folder ("" before the first resync)


class SubscriptionLookup(Protocol):
    """What the push worker needs of the subscription table: is this subscription ours, and whose."""

    async def by_id(self, subscription_id: str) -> Subscription | None: ...
