"""Worker identity, kept exactly as the 1.0.x fleet keeps it (see hive-protocol-v1.md).

worker.conf holds the id (one line); workername.txt, if present, gives its prefix.
An existing worker.conf from a 1.0.x install is used as is: the server knows the
worker by this id, so an update must never change it.

The id travels in the X-Worker-ID header, which is Latin-1 without control characters.
A workername.txt that cannot go there (the fleet is in Ukraine: "Київ-офіс") must not keep
the PC out of the fleet, so on first start the prefix is its ASCII form (ascii_name), with
one WARNING. A worker.conf id is never rewritten: one that cannot be sent stops the worker.
"""

from __future__ import annotations

import logging
import re
import secrets
from pathlib import Path

from common.safetext import loggable
from supervisor.store.atomic import atomic_write

log = logging.getLogger("hive.identity")

ID_FILE = "worker.conf"
PREFIX_FILE = "workername.txt"


class IdentityError(Exception):
    """An id the worker cannot send; the message is the one line shown to the operator."""


def header_problem(value: str) -> str | None:
    """Why ``value`` cannot be an HTTP header value (X-Worker-ID), or None. HTTP/1.1 headers are
    Latin-1 on the wire, and a control character (a second line in the file) would end the header."""
    try:
        value.encode("latin-1")
    except UnicodeEncodeError as exc:
        return (f"{value[exc.start]!r} is not a Latin-1 character (HTTP headers are Latin-1; "
                "use Latin letters, digits, '-' and '_')")
    bad = next((c for c in value if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0), None)
    if bad is not None:
        return f"it holds the control character {bad!r} (one line only)"
    return None


# Ukrainian national transliteration (Cabinet of Ministers resolution No. 55 of 27 Jan 2010, the
# system of Ukrainian passports): the second form is used inside a word, the first at its start.
# The Russian letters that Ukrainian lacks follow common practice (ё yo, ы y, э e, ъ dropped);
# the number sign of "Магазин №7" is "No".
_CYRILLIC: dict[str, str | tuple[str, str]] = {
    "а": "a", "б": "b", "в": "v", "г": "h", "ґ": "g", "д": "d", "е": "e", "є": ("ye", "ie"), "ж": "zh",
    "з": "z", "и": "y", "і": "i", "ї": ("yi", "i"), "й": ("y", "i"), "к": "k", "л": "l", "м": "m", "н": "n",
    "о": "o", "п": "p", "р": "r", "с": "s", "т": "t", "у": "u", "ф": "f", "х": "kh", "ц": "ts", "ч": "ch",
    "ш": "sh", "щ": "shch", "ь": "", "ю": ("yu", "iu"), "я": ("ya", "ia"),
    "ё": ("yo", "io"), "ы": "y", "э": "e", "ъ": "", "№": "No",
}
_APOSTROPHES = "'\u2019\u02bc"  # dropped, as the resolution says; a letter after one is inside the word
_BREAKS = re.compile(r"[\s\x00-\x1f\x7f-\x9f]+")  # a second line, tabs, spaces: one "-"


def ascii_name(name: str) -> tuple[str, str]:
    """An ASCII form of a workername.txt that cannot go into a header, and how it was made.

    Cyrillic letters by the table above ("Київ-офіс" -> "Kyiv-ofis", "зг" -> "zgh"); spaces and
    control characters (a second line) become "-". Anything still not ASCII (Chinese, Greek,
    emoji...) is written as punycode, the ASCII form of international domain names
    ("xn--" + RFC 3492), which keeps every name distinct and can be read back.
    """
    out: list[str] = []
    for i, char in enumerate(name):
        low = char.lower()  # per character: lower() of a whole text may change its length ("İ")
        if char in _APOSTROPHES:
            continue
        latin = _CYRILLIC.get(low)
        if latin is None:
            out.append(char)
            continue
        if isinstance(latin, tuple):
            before = name[i - 1] if i else ""
            latin = latin[1] if before.isalpha() or (before and before in _APOSTROPHES) else latin[0]
        if low == "г" and i and name[i - 1].lower() == "з":
            latin = "gh"  # "зг" is "zgh", never read as "zh"
        out.append(latin.capitalize() if char != low else latin)
    text = _BREAKS.sub("-", "".join(out)).strip("-")
    if text.isascii():
        return text, "Cyrillic by the Ukrainian national transliteration of 2010, spaces and control characters as '-'"
    return "xn--" + text.encode("punycode").decode("ascii"), "punycode, as for international domain names"


def _checked(value: str, path: Path) -> str:
    problem = header_problem(value)
    if problem:
        raise IdentityError(f"{path}: {loggable(value, 80)!r} cannot be sent as the worker id: {problem}")
    return value


def load_or_create_worker_id(home: Path) -> str:
    """The worker id; raises IdentityError if worker.conf or workername.txt holds one that no
    request could carry (before anything is written, so fixing the file is enough)."""
    id_path = home / ID_FILE
    if id_path.exists():
        worker_id = id_path.read_text(encoding="utf-8-sig", errors="replace").strip()
        if worker_id:
            return _checked(worker_id, id_path)
    prefix = "worker"
    prefix_path = home / PREFIX_FILE
    if prefix_path.exists():
        prefix = prefix_path.read_text(encoding="utf-8-sig", errors="replace").strip() or "worker"
        problem = header_problem(prefix)
        if problem:
            name = prefix
            prefix, how = ascii_name(name)
            prefix = prefix or "worker"
            log.warning("%s: %r cannot be sent in the worker id (%s): the id uses its ASCII form %r (%s); "
                        "%s keeps it from now on", prefix_path, loggable(name, 80), problem, prefix, how, ID_FILE)
    worker_id = f"{prefix}_{secrets.token_hex(4)}"
    atomic_write(id_path, worker_id.encode("utf-8"))
    return worker_id


def worker_id_for(home: Path, version: str) -> str:
    """The id this worker sends, after checking that both of its identity headers
    (X-Worker-ID, X-Worker-Version) can be sent at all. Raises IdentityError."""
    worker_id = load_or_create_worker_id(home)
    problem = header_problem(version)
    if problem:
        raise IdentityError(f"WORKER_VERSION {version!r} cannot be sent in X-Worker-Version: {problem}")
    return worker_id
