"""Shared pytest configuration: the sandbox fixtures (``sandbox``, ``sandbox_factory``)."""

pytest_plugins = ["rerund.sandbox.testing"]
