"""rerund — automatic retry-and-rerun daemon for Flyte 2.

The layers and what each may import are the import contracts in pyproject.toml
(``[tool.importlinter]``, checked by ``make lint``); docs/architecture.md describes them.
"""

from rerund.errors import RerundError

__version__ = "0.1.0"
__all__ = ["RerundError", "__version__"]
