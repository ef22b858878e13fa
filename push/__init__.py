"""The push path (issue 15, docs/push.md): Graph change notifications on the protected mailboxes.

subscriptions (create, renew, repair, lifecycle, delta resync) -> notifications (validated at the HTTP
endpoint, queued) -> the push worker (reads the message, builds a MailFact, runs the streaming rules
with their state in Table storage) -> remediation requests, handed to the app to queue like the
scheduled path's. Imports: detections and core only; the app wires the queues and the ledger in.
"""
