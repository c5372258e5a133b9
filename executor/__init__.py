"""The executor side: a pre-started process that imports the task registry once
and runs one task at a time for the supervisor (see executor/process.py)."""
