"""The research tests run ``quantmesh`` commands in this process through ``main()``.

``main()`` configures the process-wide logging once per command, bound to the output
stream of the moment - here a test's captured output, closed after the test - and
structlog caches loggers on first use, so every later test that logs would write to a
closed file. The logging set-up is therefore a no-op here; the commands print their
results directly, which is what the tests read.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_process_logging_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    import quantmesh.observability.logging as logging_setup

    monkeypatch.setattr(logging_setup, "configure_logging", lambda *args, **kwargs: None)
