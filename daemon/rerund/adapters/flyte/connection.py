"""How rerund reaches and authenticates to the control plane (``Connection``), and the API
key's parts (``decode_api_key``: parsed here, so a malformed key is a ``ConfigError`` that
never echoes it)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from pathlib import Path

from rerund.errors import ConfigError

__all__ = ["Connection", "decode_api_key"]


@dataclass(frozen=True)
class Connection:
    """How to reach and authenticate to the control plane. At most one of ``api_key``,
    ``client_id``/``client_secret`` and ``auth_command`` is set (the settings check that).
    ``repr`` never shows a secret."""

    endpoint: str
    org: str
    insecure: bool = False
    api_key: str | None = field(default=None, repr=False)
    client_id: str = ""
    client_secret: str | None = field(default=None, repr=False)
    auth_command: tuple[str, ...] = ()
    ca_cert_file: Path | None = None
    http_proxy: str = ""

    @property
    def auth(self) -> str:
        """The credential in use, for messages (never its value)."""
        if self.api_key:
            return "the API key"
        if self.client_id:
            return f"client credentials of {self.client_id!r}"
        if self.auth_command:
            return f"the token from auth_command {self.auth_command[0]!r}"
        return "no credentials"


def decode_api_key(key: str) -> tuple[str, str, str]:
    """(endpoint, client_id, client_secret) of a Union/Flyte API key; never echoes the key."""
    try:
        parts = base64.b64decode(key.encode(), validate=True).decode("utf-8").split(":", 3)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        parts = []
    if len(parts) != 4:
        raise ConfigError(
            "the API key (FLYTE_API_KEY or api_key_file) is not a Flyte API key: expected the base64 "
            "form printed by `flyte create api-key`; the key itself is not shown"
        )
    return parts[0], parts[1], parts[2]
