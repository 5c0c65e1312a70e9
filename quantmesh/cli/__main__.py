"""``python -m quantmesh.cli``: the ``quantmesh`` command."""

import sys

from quantmesh.cli.main import main

sys.exit(main())
