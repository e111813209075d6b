"""The public API of the package, pinned as httpx pins its own: what ``import rerund`` offers is
a decision, and a change to it must change this test too."""

from __future__ import annotations

import types
from importlib.metadata import version

import rerund

PUBLIC = ["RerundError", "__version__"]


def test_the_public_api_is_exactly_what_all_names():
    assert rerund.__all__ == PUBLIC
    assert all(hasattr(rerund, name) for name in rerund.__all__)


def test_every_public_name_of_the_package_is_in_all():
    names = {
        n
        for n in vars(rerund)
        if not n.startswith("_") and not isinstance(getattr(rerund, n), types.ModuleType)
    }
    assert names == set(rerund.__all__) - {"__version__"}


def test_the_version_is_the_packaged_one():
    assert rerund.__version__ == version("rerund")
