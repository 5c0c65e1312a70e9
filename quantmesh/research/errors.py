"""The research commands' own error: bad input or missing data, said in one line."""

from __future__ import annotations

from quantmesh.errors import QuantMeshError


class ResearchError(QuantMeshError):
    """A backtest, sweep or download cannot go on: the message names what and what to do."""


class FetchFailed(ResearchError):
    """The exchange kept failing a download; what was fetched so far is saved."""
