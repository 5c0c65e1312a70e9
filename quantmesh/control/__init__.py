"""What people ask of a running fleet: pause a symbol, stop its buys, cancel its orders.

- ``desired``: the desired state of a symbol (mode, who, when, why) and the actions that
  set it; pure.
- ``restrict``: a grid plan cut down to what the desired state allows; pure.
- ``board``: the desired state of every symbol as this instance last read it from the
  database, refreshed in the background; unknown (nothing placed) until the first read.
- ``reload``: what a reload of the settings file changes (one line per change), and the
  settings in force after it; pure.
"""
