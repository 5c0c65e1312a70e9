"""The ``quantmesh`` command line: one module per subcommand.

The only place that turns errors into exit codes. Each subcommand module has
``register(subparsers)``, which adds its parser, and ``run(args) -> int``, which returns
the exit code (``exit_codes``). ``main`` parses the arguments, runs the command and turns
a ``ConfigError`` or another ``QuantMeshError`` into its exit code and message.
``python -m quantmesh.cli`` and the ``quantmesh`` console script both call ``main``.
"""

from quantmesh.cli.main import main

__all__ = ["main"]
