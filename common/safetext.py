"""Text that leaves the worker for a log, a console or status.json: escaped and without secrets.

Anything the server or a task sends (a task_type, a URL, an error body, a parameter
name inside a TypeError) may hold newlines, carriage returns or terminal escapes. In
worker.log those could forge a line that looks like the supervisor's own, or drive
the terminal of whoever reads the console. loggable() is the one place that turns such
text into something printable; the log formatter (logs.py) applies it to every
argument of every record, so no call site has to remember it.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls and the Unicode line and paragraph separators: all the
# characters that can end a line or drive a terminal. Built once; str.translate is C speed.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPES.update({0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r", 0x2028: "\\u2028", 0x2029: "\\u2029"})


# scheme:// then everything up to the last "@" of the host part: the user:password of a URL.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s]*@")


def loggable(text: str, limit: int | None = None) -> str:
    """``text`` on one line with every control character escaped (``\\n``, ``\\x1b``...);
    cut to ``limit`` characters (then ending in "...") when given."""
    if limit is not None and len(text) > limit:
        text = text[:limit] + "..."
    return text.translate(_ESCAPES)


def loggable_block(text: str) -> str:
    """Several lines (a traceback) kept readable: each line escaped, the ones after the first
    indented, so no line of the block can pass for a log line of its own."""
    return "\n    ".join(loggable(line) for line in text.rstrip("\n").split("\n"))


def redact_url(text: str) -> str:
    """``text`` (a URL, or a message with URLs in it) with the user:password of every URL replaced
    by ``***``: ``http://bob:pw@host/x`` becomes ``http://***@host/x``.

    The one redaction of URLs: the log formatter, status.json, --print-config, failure results and
    diagnostics all pass through it. The credentials end at the last ``@`` before the host part
    ends (``/``, ``?``, ``#`` or a space), as urllib.parse.urlsplit reads them, so a password
    holding ``@`` or ``:`` is masked whole.
    """
    if "@" not in text:  # the usual case, without a regex
        return text
    return _USERINFO.sub(r"\1***@", text)
