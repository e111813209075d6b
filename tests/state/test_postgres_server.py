"""The throwaway PostgreSQL every state test runs on: it starts as root through runuser, takes
password authentication only, and can be stopped and started again under a test."""

from __future__ import annotations

import psycopg
import pytest

from postgres_support import PostgresServer


def test_a_fresh_database_answers_with_the_password(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT current_setting('fsync'), inet_server_addr()::text").fetchone()
    assert row == ("off", "127.0.0.1/32")


def test_a_wrong_password_is_refused(postgres: PostgresServer) -> None:
    url = postgres.url().replace(postgres.password, "not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(url, connect_timeout=5)


def test_the_server_can_be_taken_away_and_brought_back(postgres: PostgresServer, pg_url: str) -> None:
    postgres.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_url, connect_timeout=2)
    postgres.start()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
