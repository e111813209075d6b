"""Adapters: the only modules that import flyte, sqlite3, apscheduler and httpx.

Each wraps its third-party errors into ``rerund.errors`` so nothing else has to know them.
"""
