"""xdr-responder: configuration, notifications, the command line and the demo."""
