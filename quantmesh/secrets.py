"""Masking helpers for secrets in connection strings and free text.

Pure functions, no I/O: the config renderer and the logging setup both use them.
Masking errs on the side of hiding too much: an odd DSN may lose more than its password,
never keep it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote

MASK = "***"

# libpq key/value (``password=pw``, ``password = 'a b'``) and URL query parameters
# (``?password=pw``); also ``sslpassword``, ``passwd``, ``pwd``.
_KV_PASSWORD = re.compile(
    r"(?i)(?<![A-Za-z0-9])([A-Za-z_]*password|passwd|pwd)(\s*=\s*)"
    r"('(?:[^'\\]|\\.)*'|[^\s&;]*)"
)
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def _userinfo_password_span(dsn: str) -> tuple[int, int] | None:
    """The span of the password in ``scheme://user:pw@host`` or ``user:pw@tcp(host)/db``."""
    scheme = _URL_SCHEME.match(dsn)
    if scheme:
        start = scheme.end()
        at = dsn.rfind("@", start)
    else:
        # Go MySQL driver DSN: the userinfo ends at the last '@' before the last '/'.
        start = 0
        slash = dsn.rfind("/")
        at = dsn.rfind("@", 0, slash) if slash >= 0 else dsn.rfind("@")
        if at >= 0 and re.search(r"[\s=]", dsn[:at]):
            return None  # a key/value DSN that merely contains '@' somewhere
    if at < 0:
        return None
    colon = dsn.find(":", start, at)
    if colon < 0:
        return None
    return colon + 1, at


def _password_spans(dsn: str) -> list[tuple[int, int]]:
    spans = [(m.start(3), m.end(3)) for m in _KV_PASSWORD.finditer(dsn) if m.group(3)]
    userinfo = _userinfo_password_span(dsn)
    if userinfo is not None and userinfo[0] < userinfo[1]:
        spans.append(userinfo)
    spans.sort()
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def mask_dsn(dsn: str) -> str:
    """Replace the password in a database or Redis DSN with ``***``.

    Handles SQLAlchemy/Redis URLs (``postgresql://u:pw@h/db``), libpq key/value strings
    (``password=pw``) and Go MySQL DSNs (``user:pw@tcp(h:3306)/db``). Anything else is
    returned unchanged.
    """
    out: list[str] = []
    pos = 0
    for start, end in _password_spans(dsn):
        out.append(dsn[pos:start])
        out.append(MASK)
        pos = end
    out.append(dsn[pos:])
    return "".join(out)


def dsn_passwords(dsn: str) -> list[str]:
    """The passwords written in ``dsn`` (as written and, for URLs, percent-decoded)."""
    found: list[str] = []
    for start, end in _password_spans(dsn):
        raw = dsn[start:end]
        if len(raw) >= 2 and raw[0] == raw[-1] == "'":
            raw = raw[1:-1]
        for value in (raw, unquote(raw)):
            if value and value not in found:
                found.append(value)
    return found


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each non-empty secret in ``text`` with ``***``."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
