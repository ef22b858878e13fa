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
Every message carries ``received_at`` (when the endpoint or the resync queued it, UTC ISO).
"""

from __future__ import annotations

SCHEMA = "push-notification/1"
KINDS = ("change", "lifecycle", "message")
LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")
