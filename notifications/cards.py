"""Pure builders of Adaptive Card 1.5 dicts for the Teams channel: scan, approval, failure, digest.

Every builder returns a card whose Workflows message fits ``MAX_MESSAGE_BYTES``: it is built at the
most detailed budget that fits (``message.fit``), and whatever a list leaves out is counted exactly
("and 412 more"). Untrusted text (anything from mail, the tenant or an error) goes into
RichTextBlocks, never into Markdown-parsed TextBlocks (see ``elements``). One module per card kind;
this one is the public entry point.
"""

from notifications.card_approval import approval_card
from notifications.card_digest import digest_card
from notifications.card_failure import default_next_step, failure_card
from notifications.card_scan import scan_card
from notifications.common import approve_cli, approve_http
from notifications.message import MAX_MESSAGE_BYTES, to_workflows_message

__all__ = ["MAX_MESSAGE_BYTES", "approval_card", "approve_cli", "approve_http", "default_next_step",
           "digest_card", "failure_card", "scan_card", "to_workflows_message"]
