"""Self-update: verify, download, unpack and hand over to a signed newer release."""
