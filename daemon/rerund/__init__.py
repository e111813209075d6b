"""rerund — automatic retry-and-rerun daemon for Flyte 2.

The package is layered, top to bottom; a layer imports only the layers below it, and
``lint-imports`` (``make lint``) keeps it so (see README "Architecture"):

- ``rerund.cli``      the ``rerund`` command line, one module per command group
- ``rerund.runtime``  the imperative shell: reconcile loop, scheduling, metrics, HTTP
- ``rerund.policy``   the YAML policy language: model, loading with file:line errors, matching
- ``rerund.adapters`` the only modules that import flyte, sqlite3, apscheduler, httpx
- ``rerund.ports``    every Protocol the shell needs from the outside world
- ``rerund.core``     functional core: pure decisions, no I/O, no clock reads, no flyte import;
                      and the values the layers exchange (``rerund.core.runs``)
- ``rerund.sandbox``  a Flyte-compatible control plane for the demo and the tests (an island)
"""

from rerund.errors import RerundError

__version__ = "0.1.0"
__all__ = ["RerundError", "__version__"]
