"""Instance coordination: who trades which symbol when several instances run.

- ``allocation`` (pure): which symbols an instance wants, given the live members;
- ``fleet``: the membership heartbeats and the ownership records in Redis;
- ``coordinator``: one trader per symbol this instance holds the ownership lease of;
- ``fallback``: the ownership leases of an instance whose lock falls back to a local one.
"""
