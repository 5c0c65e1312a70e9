"""The ``quantmesh`` command line: one module per subcommand, and the exit codes.

- ``main``: the parser of every subcommand; runs the command and turns a ``ConfigError``
  or another ``QuantMeshError`` into its exit code and message - the only place that
  does. ``python -m quantmesh.cli`` (``__main__``) and the ``quantmesh`` console script
  both call it.
- ``run``, ``check_config``, ``status``, ``db``, ``ctl``, ``reload``, ``sim_exchange``: the
  subcommands. Each has ``register(subparsers)``, which adds its parser, and
  ``run(args) -> int``, which returns the exit code.
- ``exit_codes``: the exit codes of every command; ``options``: what several subcommands
  parse alike (the settings file and its default path); ``http_client``: how ``ctl``
  and ``reload`` talk to a running instance's HTTP API.
"""

from quantmesh.cli.main import main

__all__ = ["main"]
