"""The ``state`` setting names a file or a ``postgresql://`` URL: a URL is kept as written (not
folded into a path, not made relative to the settings file), another scheme is refused without
echoing the value, and the password file is read as every secret file is."""

from __future__ import annotations

from pathlib import Path

import pytest

from rerund.errors import ConfigError
from rerund.runtime.settings import load_settings

URL = "postgresql://rerund:s3cret-pw@db.internal:5432/rerund?sslmode=verify-full&sslrootcert=/ca.pem"


def test_a_database_url_is_kept_as_written_and_shown_without_its_password(tmp_path: Path) -> None:
    config = tmp_path / "rerund.yaml"
    config.write_text(f"state: {URL}\nstate_password_file: pw\n")

    settings = load_settings(config, environ={})

    assert settings.state == URL
    assert settings.state_password_file == tmp_path / "pw"  # relative to the settings file
    assert settings.public()["state"] == "postgresql://rerund@db.internal:5432/rerund"
    assert "s3cret-pw" not in str(settings.public())


def test_a_file_path_is_still_a_path_relative_to_the_settings_file(tmp_path: Path) -> None:
    config = tmp_path / "rerund.yaml"
    config.write_text("state: state/rerund.db\n")

    assert load_settings(config, environ={}).state == tmp_path / "state" / "rerund.db"
    assert load_settings(environ={"RERUND_STATE": URL}).state == URL


def test_another_url_scheme_is_refused_without_showing_the_value() -> None:
    with pytest.raises(ConfigError, match=r"state is an SQLite file path or a postgresql:// URL") as info:
        load_settings(environ={}, overrides={"state": "mysql://root:hunter2@db/rerund"})
    assert "hunter2" not in str(info.value)


def test_the_password_file_is_read_as_a_secret_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret-pw\n")
    settings = load_settings(
        environ={}, overrides={"state": URL, "state_password_file": str(tmp_path / "pw")}
    )
    assert settings.state_password() == "s3cret-pw"

    (tmp_path / "empty").write_text("\n")
    empty = load_settings(environ={}, overrides={"state_password_file": str(tmp_path / "empty")})
    with pytest.raises(
        ConfigError, match=r"state_password_file '.*empty' is empty; write the database password"
    ):
        empty.state_password()
    assert load_settings(environ={}).state_password() is None
