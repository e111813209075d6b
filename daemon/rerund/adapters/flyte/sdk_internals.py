"""The fence: every touch of the flyte SDK's private modules (``flyte._*``,
``flyte.remote._client``), in one place, checked against the SDK versions it was verified on.

What rerund reaches into, and why:

- the SDK's client (``flyte._initialize.get_client``) and a scope's init config
  (``init_config_context``): the raw RPCs (ListRuns, GetRunDetails, WatchRuns, ...) have no
  public wrapper, and ``rerun()``/``Run.get`` read the project and domain of the init config;
- ``AuthenticationError`` (``flyte.remote._client.auth.errors``): a refused token request;
- the token client's trust (``token_requests_trust``): flyte verifies the control plane with
  ``ca_cert_file_path`` but fetches OAuth2 tokens with an httpx client that reads
  ``SSL_CERT_FILE`` instead, built inside ``flyte.init``;
- the API key's parts (``decode_api_key``, for the sandbox's ``flyte_init``).

And the *tuning*, which is optional (``tuning_problem() is None`` and ``sdk_tuning: true``):

- ``SessionConfig`` and ``ClientSet`` subclasses and ``replace_client``: the client ``flyte.init``
  built is replaced with one that sends requests uncompressed, watches runs uncompressed and
  carries rerund's interceptors (``tuning.ReuseReads``, ``tuning.RpcGate``);
- the uvloop-at-import trick (``use_event_loop``): the SDK's background loop is made a uvloop
  loop by importing ``flyte.syncify`` under uvloop's policy.

``VERIFIED`` is the range of SDK versions these touches were read against (the image declares
the same range in pyproject.toml). Outside it, or when a private name is gone, the tuning is
off and rerund runs on the plain SDK path (``FlyteControlPlane(sdk_tuning=False)``: the SDK's
own client, asyncio's loop; the rate gate and the per-RPC deadline apply per call instead of
per RPC): slower, correct. The accessors above have no public replacement; when one of them
is gone, the first call says so (an ``ImportError`` naming the SDK version), it is never
retried as an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import importlib.metadata
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "VERIFIED",
    "authentication_error",
    "console_run_url",
    "decode_api_key",
    "get_client",
    "install_tuned_client",
    "scope",
    "sdk_version",
    "token_requests_trust",
    "tuning_problem",
    "use_event_loop",
]

log = logging.getLogger("rerund.flyte")

# A daemon must not phone home on its users' behalf: the SDK's error telemetry stays off unless
# the operator sets FLYTE_DISABLE_TELEMETRY=false explicitly (before the SDK is imported).
os.environ.setdefault("FLYTE_DISABLE_TELEMETRY", "true")

# The flyte SDK versions whose private modules this fence was read against: >= 2.10.3, < 2.13
# (the range pyproject.toml declares; flyte 2.10.0-2.10.2 lack what rerund needs).
VERIFIED = ((2, 10, 3), (2, 13, 0))


def sdk_version() -> str:
    """The installed flyte SDK's version ("" when it cannot be read)."""
    try:
        return importlib.metadata.version("flyte")
    except importlib.metadata.PackageNotFoundError:
        return ""


def _release(version: str) -> tuple[int, int, int] | None:
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)) if m else None


def version_problem(version: str) -> str | None:
    """Why ``version`` of the SDK is outside ``VERIFIED`` (None: inside)."""
    low, high = VERIFIED
    release = _release(version)
    if release is None or not low <= release < high:
        return (
            f"flyte SDK {version or '(unknown version)'} is outside the versions rerund's SDK tuning "
            f"was verified against (>={'.'.join(map(str, low))},<{high[0]}.{high[1]})"
        )
    return None


@functools.cache
def tuning_problem() -> str | None:
    """Why the SDK tuning cannot be used with the installed SDK (None: it can): the version is
    outside ``VERIFIED`` or a private name it needs is gone. Checked once per process."""
    problem = version_problem(sdk_version())
    if problem is not None:
        return problem
    try:
        from flyte._initialize import get_init_config, replace_client  # noqa: F401
        from flyte.remote._client.auth._session import SessionConfig  # noqa: F401
        from flyte.remote._client.controlplane import ClientSet  # noqa: F401
    except ImportError as exc:
        return f"flyte SDK {sdk_version()} lacks what rerund's SDK tuning replaces ({exc})"
    return None


# -- accessors (both paths) ---------------------------------------------------------------------


def get_client() -> Any:
    """The SDK's current ``ClientSet`` (the one ``flyte.init`` built, or the tuned one)."""
    from flyte._initialize import get_client as sdk_get_client

    return sdk_get_client()


@contextlib.contextmanager
def scope(project: str, domain: str) -> Iterator[None]:
    """Within: the SDK's init config names ``project``/``domain`` (``rerun()``, ``Run.get`` and
    ``first_failure()`` read the source run there)."""
    from flyte._initialize import get_init_config, init_config_context

    cfg = get_init_config().replace(project=project, domain=domain)
    with init_config_context(cfg):
        yield


@functools.cache
def authentication_error() -> type[BaseException]:
    """The SDK's error for a refused token request (a class matching nothing when it is gone)."""
    try:
        from flyte.remote._client.auth.errors import AuthenticationError
    except ImportError:

        class _Gone(Exception):
            pass

        return _Gone
    return AuthenticationError  # type: ignore[no-any-return]


def decode_api_key(key: str) -> tuple[str, str, str, str]:
    """(endpoint, client_id, client_secret, org) of an API key, as the SDK reads it."""
    from flyte.remote._client.auth._auth_utils import decode_api_key as sdk_decode

    return sdk_decode(key)  # type: ignore[no-any-return]


def console_run_url(project: str, domain: str, run_name: str) -> str:
    """The SDK's console link of a run."""
    return str(get_client().console.run_url(project=project, domain=domain, run_name=run_name))


@contextlib.contextmanager
def token_requests_trust(ca_cert_file: Path | None, bundle: Path | None = None) -> Iterator[None]:
    """For the call only, ``SSL_CERT_FILE`` names a bundle that trusts ``ca_cert_file`` (flyte
    builds its token client inside ``flyte.init`` and that client reads only ``SSL_CERT_FILE``).

    With ``bundle`` (a file path to write), the bundle is the CAs trusted so far (the file
    ``SSL_CERT_FILE`` named, else certifi's) plus the private CA, so a token endpoint on the
    private control plane and one at a public identity provider are both trusted; without it,
    ``SSL_CERT_FILE`` names ``ca_cert_file`` itself (the sandbox's tests)."""
    if ca_cert_file is None:
        yield
        return
    before = os.environ.get("SSL_CERT_FILE")
    if bundle is not None:
        import certifi

        public = Path(before) if before and Path(before).is_file() else Path(certifi.where())
        bundle.write_bytes(public.read_bytes() + b"\n" + ca_cert_file.read_bytes())
        os.environ["SSL_CERT_FILE"] = str(bundle)
    else:
        os.environ["SSL_CERT_FILE"] = str(ca_cert_file)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("SSL_CERT_FILE", None)
        else:
            os.environ["SSL_CERT_FILE"] = before


# -- the tuning (optional) ------------------------------------------------------------------------


def use_event_loop(event_loop: str) -> None:
    """Make the SDK's background loop a uvloop loop (``event_loop`` ``uvloop``): the SDK creates
    it with ``asyncio.new_event_loop()`` when ``flyte.syncify`` is first imported, so the policy
    is set for that import only. Once the SDK is imported its loop stays what it is. Nothing
    happens when the tuning cannot be used (``tuning_problem``)."""
    if event_loop != "uvloop" or "flyte.syncify" in sys.modules:
        return
    problem = version_problem(sdk_version())  # reads metadata only: importing flyte makes the loop
    if problem is not None:
        log.warning("%s: the SDK's event loop stays asyncio's", problem)
        return
    import uvloop

    before = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        import flyte.syncify  # noqa: F401 - creates the SDK's loop under the policy
    finally:
        asyncio.set_event_loop_policy(before)


@functools.cache
def _session_class() -> type:
    """flyte's ``SessionConfig`` whose service clients send requests uncompressed.

    connectrpc gzips every request body by default (level 6, even a 200-byte GetRunDetails);
    rerund's requests are a few KiB at most, so that is CPU for nothing. Responses are still
    accepted compressed."""
    from flyte.remote._client.auth._session import SessionConfig

    class _UncompressedRequests(SessionConfig):  # type: ignore[misc]
        def connect_kwargs(self) -> dict[str, Any]:
            return {**super().connect_kwargs(), "send_compression": None}

    return _UncompressedRequests


@functools.cache
def _client_set_class() -> type:
    """flyte's ``ClientSet`` plus ``watch_service``: a RunService client for WatchRuns that asks
    for its messages uncompressed. connectrpc decompresses a stream message by message in Python
    and a run's update is a few hundred bytes; a storm carries several per rerun. Unary answers
    stay compressed (decompressed natively by the HTTP client)."""
    from flyte.remote._client.controlplane import ClientSet
    from flyteidl2.workflow.run_service_connect import RunServiceClient

    class _DaemonClientSet(ClientSet):  # type: ignore[misc]
        def __init__(self, session_cfg: Any) -> None:
            super().__init__(session_cfg)
            kwargs = {**session_cfg.connect_kwargs(), "accept_compression": ()}
            self.watch_service = RunServiceClient(**kwargs)

    return _DaemonClientSet


def install_tuned_client(outermost: Any, innermost: Any) -> None:
    """Replace the client ``flyte.init`` built with one made from the same session (endpoint,
    transport, TLS trust, auth interceptors) plus ``outermost`` and ``innermost`` as the first
    and last interceptors, and without request compression. ``flyte.init`` sends nothing on the
    wire, so nothing is lost. Raises when the tuning cannot be used (the caller falls back)."""
    problem = tuning_problem()
    if problem is not None:
        raise RuntimeError(problem)
    from flyte._initialize import get_init_config, replace_client

    client = get_init_config().client
    if client is None:
        return
    session = client.session_config
    values = {f.name: getattr(session, f.name) for f in dataclasses.fields(session)}
    values["interceptors"] = (outermost, *session.interceptors, innermost)
    replace_client(_client_set_class()(_session_class()(**values)))  # type: ignore[no-untyped-call]
