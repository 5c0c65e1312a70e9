"""Masking helpers for secrets in connection strings and free text.

Pure functions and values, no I/O: the config renderer, the logging setup and the database
error messages (``mask_credentials``) use them; every redaction pattern lives here.
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


# Credentials written in text whose secrets are not known (a database driver's message):
# the user information of a URL, and the value after ``password=`` or ``password:``.
_URL_CREDENTIALS = re.compile(r"(\w[\w+.-]*://)[^\s/@]*@")
_PASSWORD_VALUE = re.compile(r"(password\s*[=:]\s*)\S+", re.IGNORECASE)


def mask_credentials(text: str) -> str:
    """Hide the credentials written in ``text`` without knowing them (a database driver's
    error message): a URL's user information (``scheme://user:pw@`` becomes
    ``scheme://***@``) and the value after ``password=`` or ``password:``."""
    text = _URL_CREDENTIALS.sub(rf"\1{MASK}@", text)
    return _PASSWORD_VALUE.sub(rf"\1{MASK}", text)


def _userinfo_password_span(dsn: str) -> tuple[int, int] | None:
    """The span of the password in ``scheme://user:pw@host`` or ``user:pw@tcp(host)/db``."""
    scheme = _URL_SCHEME.match(dsn)
    if scheme:
        start = scheme.end()
        at_sign = dsn.rfind("@", start)
    else:
        # Go MySQL driver DSN: the userinfo ends at the last '@' before the last '/'.
        start = 0
        slash = dsn.rfind("/")
        at_sign = dsn.rfind("@", 0, slash) if slash >= 0 else dsn.rfind("@")
        if at_sign >= 0 and re.search(r"[\s=]", dsn[:at_sign]):
            return None  # a key/value DSN that merely contains '@' somewhere
    if at_sign < 0:
        return None
    colon = dsn.find(":", start, at_sign)
    if colon < 0:
        return None
    return colon + 1, at_sign


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


# A secret this long or longer is replaced wherever it occurs in a log line. A shorter one
# (1-3 characters) would also hide every "a", "ok" or "100" of unrelated text, so it is
# replaced only where it stands as a credential (``CredentialMask``).
MASK_ANYWHERE_FROM = 4

# Names of fields that hold credentials: password, passwd, pwd, sslpassword, secret,
# api_secret, api_key, apiKey, X-MBX-APIKEY, passphrase, token, access_token, signature,
# Authorization.
_CREDENTIAL_NAME = (
    r"[A-Za-z_\-]*(?:password|passwd|pwd|secret|api[_\-]?key|passphrase|token|signature"
    r"|authorization)"
)
_CREDENTIAL_FIELD = re.compile(rf"(?i){_CREDENTIAL_NAME}")
_FIELD = rf"(?i:(?<![A-Za-z0-9]){_CREDENTIAL_NAME})"
# ``=``, ``: ``, ``": "``, ``': '``, and an HTTP auth scheme after it
_SEP = r"[\"']?\s*[:=]\s*(?:(?i:bearer|basic)\s+)?[\"']?"
# what may follow a value: the end, a delimiter, or sentence punctuation before a space
_END = r"(?=$|[\s&;,\"'(){}\[\]<>|]|[.:!?](?:\s|$))"
_SCHEME = r"[A-Za-z][A-Za-z0-9+.\-]*://"


def is_credential_field(name: str) -> bool:
    """Whether a field (a log key, a header, a parameter) of this name holds a credential."""
    return _CREDENTIAL_FIELD.fullmatch(name) is not None


def _credential_pattern(secret: str) -> re.Pattern[str]:
    escaped = re.escape(secret)
    return re.compile(
        rf"(?P<field>{_FIELD}{_SEP}){escaped}{_END}"  # password=pw  "secret": "pw"  apiKey: pw
        rf"|(?P<bearer>(?i:\bbearer)\s+){escaped}{_END}"  # Bearer pw
        rf"|(?P<password>{_SCHEME}(?:[^\s:@/]*:)?){escaped}(?=@)"  # scheme://user:pw@ scheme://pw@
        rf"|(?P<user>{_SCHEME}){escaped}(?=:[^\s@/]*@)"  # scheme://pw:password@
        rf"|(?P<go>(?<![^\s\"'=])[^\s:@/\"']+:){escaped}(?=@(?:tcp|unix)\()"  # user:pw@tcp(host)
    )


class CredentialMask:
    """Replaces each of ``secrets`` where it stands as a credential, and nowhere else: as
    the value of a credential-named field (``password=pw``, ``"secret": "pw"``,
    ``X-MBX-APIKEY: pw``, ``apiKey=pw&...``), a bearer token, or the user or password of
    URL credentials (``scheme://user:pw@host``, Go MySQL ``user:pw@tcp(host)``).

    For secrets too short to be replaced wherever they occur (see
    ``MASK_ANYWHERE_FROM``): ``pw`` is hidden in ``password=pw`` but ``pw`` in
    ``pwd_check`` or ``1 pw 2`` is left alone.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        unique = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._patterns = [_credential_pattern(s) for s in unique]

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def __call__(self, text: str) -> str:
        for pattern in self._patterns:
            text = pattern.sub(_keep_prefix, text)
        return text


def _keep_prefix(match: re.Match[str]) -> str:
    prefix = next((g for g in match.groups() if g is not None), "")
    return prefix + MASK


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each non-empty secret in ``text`` with ``***``."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
