"""Talking to the Hive server: the HTTP client, the claim loop, the result submitter, backoff."""
