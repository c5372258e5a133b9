"""The supervisor side: networking, the executor pool, limits and every decision (see arbiter.py)."""
