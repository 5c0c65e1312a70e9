"""Real server processes and network faults for integration tests.

Each server module starts its own process from the system binaries, in a temporary
directory on a free port, so a test can stop, kill, pause or cut it without touching the
machine's shared services.
"""
