"""Observability: logs, metrics, readiness and the daemon's HTTP server.

- ``logging``: structlog set up once, secrets redacted; ``throttle``: repeated warnings
  logged once per interval;
- ``metrics``: every Prometheus metric; ``collectors``: the ones read at scrape time;
- ``health``: the readiness checks behind ``/readyz``;
- ``http``: the HTTP server and its access rules; ``status``: what ``/api/status``
  reads off the traders; ``control_api``: the control endpoints (pause, resume...).
"""
