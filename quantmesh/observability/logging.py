"""structlog setup: contextvars (instance, symbol), JSON or console, secrets redacted.

Libraries that log through the standard ``logging`` module (ccxt, aiohttp, asyncio) go
through the same processors - the secret redactor included - and the same renderer, by a
``structlog.stdlib.ProcessorFormatter`` on the root logger; they print warnings and errors
only (or less, at a higher configured level).

Redaction (``quantmesh.secrets.CredentialMask``):

- a known secret of 4 characters or more is replaced by ``***`` wherever it occurs;
- a shorter one would also hide every occurrence of a common short string in unrelated
  text, so it is replaced only where it stands as a credential: as a value under a
  credential-named key (``api_key=``, ``password=``, a header ``X-MBX-APIKEY``), after
  ``Bearer``, or as the user or password of URL credentials.

structlog's package import loads ``rich`` whenever it is installed (it comes with the
development tools), for the console renderer's tracebacks: some 3 MB and 60 modules that
a process logging JSON never uses. ``import_structlog`` lets the daemon import structlog
without it when it will not render to a console.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, Literal, TextIO

from quantmesh.secrets import MASK, MASK_ANYWHERE_FROM, CredentialMask, is_credential_field

LogFormat = Literal["auto", "console", "json"]
_MASK = MASK


class SecretRedactor:
    """A structlog processor that replaces every known secret value with ``***``.

    It walks the event dict's string values (and nested containers), so a secret that
    reaches a log call by accident - inside an exception message, a URL, a dict - is
    still hidden. Secrets shorter than ``MASK_ANYWHERE_FROM`` are hidden where they stand
    as credentials only (see the module docstring).
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        unique = {s for s in secrets if s}
        # Longest first so a secret containing another is replaced whole.
        self._secrets = sorted(
            (s for s in unique if len(s) >= MASK_ANYWHERE_FROM), key=len, reverse=True
        )
        self._short = frozenset(s for s in unique if len(s) < MASK_ANYWHERE_FROM)
        self._credentials = CredentialMask(self._short)

    def _clean(self, value: Any, key: str = "") -> Any:
        if isinstance(value, str):
            if value in self._short and is_credential_field(key):
                return _MASK
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, _MASK)
            return self._credentials(value) if self._credentials else value
        if isinstance(value, dict):
            return {k: self._clean(v, str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._clean(v, key) for v in value)
        if isinstance(value, BaseException):
            return self._clean(f"{type(value).__name__}: {value}")
        return value

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if not self._secrets and not self._short:
            return event_dict
        for key, value in event_dict.items():
            if key != "_record":  # the stdlib record: read by nothing after this
                event_dict[key] = self._clean(value, key)
        return event_dict


def renders_console(fmt: LogFormat, out: TextIO) -> bool:
    """Whether ``configure_logging(fmt=fmt, stream=out)`` renders for a person (console)
    rather than JSON: ``console``, or ``auto`` on a terminal."""
    return fmt == "console" or (fmt == "auto" and out.isatty())


def import_structlog(console: bool) -> None:
    """Import structlog for a process that renders its logs to a console or as JSON.

    For JSON, structlog is imported as if ``rich`` were not installed, which only its
    console renderer would use; a later ``import rich`` works as usual. Once structlog is
    imported (or rich is), this changes nothing."""
    hide_rich = not console and "structlog" not in sys.modules and "rich" not in sys.modules
    if hide_rich:
        # A None entry makes ``import rich`` raise ImportError: structlog goes without it.
        sys.modules["rich"] = None  # type: ignore[assignment]  # the import system's "absent"
    try:
        import structlog  # noqa: F401  # imported now, for the rest of the process
    finally:
        if hide_rich:
            del sys.modules["rich"]


class _StdlibHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler ``configure_logging`` installs (and replaces when called again)."""


def configure_logging(
    level: str = "info",
    fmt: LogFormat = "auto",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Configure structlog, and the standard ``logging`` root through the same
    processors and renderer, once for the process (a second call replaces the first)."""
    import structlog  # here: ``import_structlog`` may have to come first

    out = stream if stream is not None else sys.stderr
    use_json = not renders_console(fmt, out)
    redactor = SecretRedactor(secrets)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redactor,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    # Records of libraries that use stdlib logging (ccxt, aiohttp, asyncio): the same
    # chain, the logger's name added, the message already formatted with its arguments
    # (so the redactor sees the text that would be printed).
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            redactor,
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = _StdlibHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StdlibHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(max(logging.WARNING, numeric))
