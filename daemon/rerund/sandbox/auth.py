"""``rerund sandbox --auth``: OAuth2 client credentials and bearer tokens, as Union serves them.

What the flyte SDK does (``flyte/remote/_client/auth/``) and so what the sandbox serves:

1. ``flyteidl2.auth.AuthMetadataService``: ``GetOAuth2Metadata`` names the ``token_endpoint``,
   ``GetPublicClientConfig`` the header (``authorization``) and the scopes. Both are open, as
   on a real control plane (a client needs them before it has a token).
2. ``POST /oauth2/token`` (form ``grant_type=client_credentials``, HTTP Basic
   ``client_id:client_secret``) answers ``{"access_token", "token_type", "expires_in"}``, or
   401 ``{"error": "invalid_client"}`` for an unknown client or a wrong or revoked secret.
3. Every other RPC and stream needs ``authorization: Bearer <token>`` naming a token this
   sandbox issued that has not expired and was not revoked; otherwise HTTP 401 with a Connect
   error ``{"code": "unauthenticated"}`` before the call reaches a service, as a gateway does.
   The SDK then fetches a new token and retries once.

An API key is what ``flyte create api-key`` prints: base64 of
``endpoint:client_id:client_secret:org`` (``decode_api_key`` in the SDK splits on ``:``, so
the endpoint part cannot carry a port: it names the host only, and a client of a sandbox on
another port than 443 is given the endpoint separately). The key is written to a file with
mode 0600 and never printed, logged or served over HTTP.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import secrets
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectrpc.request import RequestContext
from flyteidl2.auth import auth_service_pb2 as auth_pb2
from flyteidl2.auth.auth_service_connect import AuthMetadataService

from rerund.errors import ConfigError

__all__ = [
    "TOKEN_PATH",
    "AuthState",
    "SandboxAuthMetadataService",
    "encode_api_key",
    "write_secret_file",
]

TOKEN_PATH = "/oauth2/token"  # noqa: S105 - a URL path, not a password
AUTH_SERVICE_PATH = "/flyteidl2.auth.AuthMetadataService"
_SCOPES = ("all",)
_MAX_TOKENS = 100_000


def encode_api_key(endpoint: str, client_id: str, client_secret: str, org: str) -> str:
    """The API key form ``decode_api_key`` in the flyte SDK reads (base64 of four ``:`` parts)."""
    for part, value in (("endpoint", endpoint), ("client id", client_id), ("org", org)):
        if ":" in value:
            raise ValueError(f"an API key's {part} cannot contain ':' (got {value!r})")
    raw = f"{endpoint}:{client_id}:{client_secret}:{org}"
    return base64.b64encode(raw.encode("utf-8")).decode("ascii")


def write_secret_file(path: Path, text: str, *, what: str = "API key", flag: str = "--api-key-out") -> None:
    """Write ``text`` to ``path`` with mode 0600, replacing it atomically (a reader never sees
    half a key). Raises ``ConfigError`` when the file cannot be written."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
        tmp.chmod(0o600)
        tmp.replace(path)
    except OSError as exc:
        raise ConfigError(
            f"sandbox cannot write the {what} to {path}: {exc.strerror or exc}; pass a writable {flag} FILE"
        ) from exc


@dataclass
class AuthState:
    """Clients, secrets and issued tokens; all on the sandbox's event-loop thread.

    ``clock`` is a monotonic seconds source (``time.monotonic``). A token is valid while
    ``now < expiry`` and it has not been revoked; a secret is valid until revoked.
    """

    org: str
    token_ttl_s: float = 3600.0
    key_host: str = "127.0.0.1"
    key_file: Path | None = None
    admin_file: Path | None = None
    clock: Callable[[], float] = time.monotonic
    client_id: str = "rerund-sandbox"
    _secret: str = field(default="", repr=False)
    _tokens: dict[str, float] = field(default_factory=dict, repr=False)
    _admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    issued: int = 0
    rejected: int = 0

    def write_admin_token(self) -> None:
        """Write the admin token (what ``/_sandbox/`` needs with ``--auth``) to ``admin_file``,
        mode 0600. It is never printed, logged or served, and revoking keys keeps it."""
        if self.admin_file is not None:
            write_secret_file(
                self.admin_file, self._admin_token, what="admin token", flag="--admin-token-out"
            )

    def check_admin(self, authorization: str) -> str:
        """Why an admin request with this ``authorization`` header is refused ("" when valid)."""
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self._admin_token.encode()
        ):
            return ""
        where = f"the token from {self.admin_file}" if self.admin_file is not None else "the admin token"
        return (
            "the sandbox admin API needs the admin token (--auth): send 'authorization: Bearer TOKEN' "
            f"with {where}"
        )

    def mint_key(self) -> str:
        """A new client secret (the previous one stops working) and the API key naming it.
        Written to ``key_file`` when set; returned for in-process callers only."""
        self._secret = secrets.token_urlsafe(24)
        key = encode_api_key(self.key_host, self.client_id, self._secret, self.org)
        if self.key_file is not None:
            write_secret_file(self.key_file, key)
        return key

    def revoke_all(self) -> int:
        """Revoke every token and the client secret; returns how many tokens were live."""
        live = self.live_tokens()
        self._tokens.clear()
        self._secret = ""
        return live

    def live_tokens(self) -> int:
        now = self.clock()
        return sum(1 for expiry in self._tokens.values() if expiry > now)

    def issue(self, authorization: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Answer a token request: (HTTP status, JSON body) per RFC 6749 section 5."""
        if form.get("grant_type") != "client_credentials":
            return 400, {
                "error": "unsupported_grant_type",
                "error_description": "the sandbox issues tokens by grant_type=client_credentials only",
            }
        client_id, secret = _basic_credentials(authorization)
        if client_id is None:
            client_id, secret = form.get("client_id"), form.get("client_secret")
        if (
            not self._secret
            or client_id != self.client_id
            or secret is None
            or not hmac.compare_digest(secret.encode(), self._secret.encode())
        ):
            self.rejected += 1
            return 401, {
                "error": "invalid_client",
                "error_description": "unknown client or wrong client secret (revoked keys are refused)",
            }
        now = self.clock()
        if len(self._tokens) >= _MAX_TOKENS:
            self._tokens = {t: e for t, e in self._tokens.items() if e > now}
        token = secrets.token_urlsafe(32)
        self._tokens[token] = now + self.token_ttl_s
        self.issued += 1
        expires_in = max(1, int(self.token_ttl_s))
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": expires_in, "scope": "all"}

    def check(self, authorization: str) -> str:
        """Why a request with this ``authorization`` header is refused ("" when it is valid)."""
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "no bearer token; get one from the token endpoint (OAuth2 client credentials)"
        expiry = self._tokens.get(token.strip())
        if expiry is None:
            return "the bearer token is unknown or revoked; get a new one from the token endpoint"
        if expiry <= self.clock():
            del self._tokens[token.strip()]
            return "the bearer token has expired; get a new one from the token endpoint"
        return ""


def _basic_credentials(authorization: str) -> tuple[str | None, str | None]:
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "basic" or not value:
        return None, None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        return None, None
    # The SDK URL-encodes the secret (get_basic_authorization_header); RFC 6749 2.3.1 says both.
    return urllib.parse.unquote_plus(client_id), urllib.parse.unquote_plus(secret)


def parse_form(body: bytes) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as a dict (last value wins)."""
    return dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def unauthenticated_body(reason: str) -> bytes:
    """The Connect error body of an HTTP 401 answer."""
    return json.dumps({"code": "unauthenticated", "message": f"unauthenticated: {reason}"}).encode()


Ctx = RequestContext[Any, Any]


class SandboxAuthMetadataService(AuthMetadataService):  # type: ignore[misc]
    """``flyteidl2.auth.AuthMetadataService``: where the token endpoint is and which header
    carries the token. ``base_url`` gives the scheme and host the client used."""

    def __init__(self, base_url: Callable[[Ctx], str]) -> None:
        self._base_url = base_url

    async def get_o_auth2_metadata(
        self, request: auth_pb2.GetOAuth2MetadataRequest, ctx: Ctx
    ) -> auth_pb2.GetOAuth2MetadataResponse:
        base = self._base_url(ctx)
        return auth_pb2.GetOAuth2MetadataResponse(
            issuer=base,
            token_endpoint=base + TOKEN_PATH,
            authorization_endpoint=base + "/oauth2/authorize",
            response_types_supported=["token"],
            scopes_supported=list(_SCOPES),
            token_endpoint_auth_methods_supported=["client_secret_basic"],
            grant_types_supported=["client_credentials"],
        )

    async def get_public_client_config(
        self, request: auth_pb2.GetPublicClientConfigRequest, ctx: Ctx
    ) -> auth_pb2.GetPublicClientConfigResponse:
        return auth_pb2.GetPublicClientConfigResponse(
            client_id="flytectl",
            redirect_uri="http://localhost:53593/callback",
            scopes=list(_SCOPES),
            authorization_metadata_key="authorization",
        )
