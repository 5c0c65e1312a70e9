"""The HTTP client of the commands that talk to a running instance (``ctl``, ``reload``).

- ``add_instance_options(parser)``: ``-c`` and ``--url``; ``instance_of(args)``: the
  address and token of the instance they name;
- ``instance_url(settings)``: the address of the instance the settings describe;
- ``call(method, url, token, body)``: one JSON request with the bearer token; the answer's
  JSON, or ``Refused`` carrying the line to print, the exit code (2 for a request the
  instance refused, 1 when it cannot be reached or failed) and the error's JSON body.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from quantmesh.cli.exit_codes import EXIT_CONFIG, EXIT_FAILURE
from quantmesh.cli.options import add_config_option

if TYPE_CHECKING:
    from quantmesh.config import Settings

TIMEOUT = 10.0
# Answers that say the request itself was wrong: exit 2, not 1.
REFUSED = (400, 401, 403, 404, 422)


class Refused(Exception):
    """A request that did not succeed: ``message`` to print, exit ``code``, and the JSON
    body of the answer when there was one."""

    def __init__(self, message: str, code: int, body: Any = None) -> None:
        super().__init__(message)
        self.message, self.code, self.body = message, code, body


def add_instance_options(parser: argparse.ArgumentParser) -> None:
    """``-c/--config`` and ``--url``: which running instance a command talks to."""
    add_config_option(parser)
    parser.add_argument("--url", help="the instance's HTTP address (default: from the settings)")


def instance_of(args: argparse.Namespace) -> tuple[str, str]:
    """The address (``--url``, else from the settings) and the token of the instance."""
    from quantmesh.config import load_settings

    settings = load_settings(args.config)
    base = args.url.rstrip("/") if args.url else instance_url(settings)
    return base, settings.http.token.get_secret_value()


def instance_url(settings: Settings) -> str:
    """The address of the instance the settings describe; an all-addresses host is
    reached on loopback."""
    host = settings.http.host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.http.port}"


def call(method: str, url: str, token: str, body: Any = None, timeout: float = TIMEOUT) -> Any:
    """Send one JSON request; the answer's JSON, or ``Refused``."""
    import urllib.error  # here: every command parser imports this module, few send
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        answer = _json_of(exc)
        error = answer.get("error") if isinstance(answer, dict) else None
        if error is None:
            error = exc.reason if isinstance(exc.reason, str) else "error"
        code = EXIT_CONFIG if exc.code in REFUSED else EXIT_FAILURE
        raise Refused(f"{url}: {exc.code} {error}", code, answer) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Refused(
            f"cannot reach the instance at {url} ({reason}): is it running with http.enabled? "
            "(--url names another address)",
            EXIT_FAILURE,
        ) from None


def _json_of(exc: Any) -> Any:
    try:
        return json.load(exc)
    except ValueError:
        return None
