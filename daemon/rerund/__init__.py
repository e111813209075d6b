"""rerund — automatic retry-and-rerun daemon for Flyte 2.

The package is layered (see README "Architecture"):

- ``rerund.core``     functional core: pure decisions, no I/O, no clock reads, no flyte import
- ``rerund.policy``   the YAML policy language: model, loading with file:line errors, matching
- ``rerund.adapters`` the only modules that import flyte, sqlite3, apscheduler, httpx
- ``rerund.runtime``  the imperative shell: reconcile loop, scheduling, metrics, HTTP
- ``rerund.sandbox``  a Flyte-compatible control plane for the demo and the tests
"""

from rerund.errors import RerundError

__version__ = "0.1.0"
__all__ = ["RerundError", "__version__"]
