"""What must survive a crash: the claim journal, the result outbox, its flusher, the disk guard."""
