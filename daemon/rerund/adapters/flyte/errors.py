"""SDK, Connect and transport errors as the ``rerund.errors`` tree (``translate_error``).

Only the dependency's own errors are mapped: flyte's, connectrpc's, the transport's
(``TimeoutError``, ``OSError`` and the HTTP client's, TLS included). Anything else raised while
a call is made is a bug (ours, or an SDK change the fence in ``sdk_internals`` did not catch):
it is re-raised as it is, so it reaches the supervisor and ``rerund_internal_errors_total``
instead of being settled as a refusal or retried forever as an outage.
"""

from __future__ import annotations

import re

from rerund.adapters.flyte import sdk_internals
from rerund.errors import (
    AlreadyExistsError,
    ControlPlaneError,
    CredentialsError,
    NotFoundError,
    PermanentControlPlaneError,
    TransientControlPlaneError,
)

__all__ = ["is_tls_failure", "tls_reason", "translate_error"]

_TRANSIENT_CODES = {
    "unavailable",
    "deadline_exceeded",
    "internal",
    "unknown",
    "resource_exhausted",
    "aborted",
}


# Where an error comes from: the SDK and what it calls to reach the control plane. An error raised
# (innermost frame) in one of these packages is the dependency's; anywhere else, it is a bug.
_DEPENDENCIES = (
    "flyte",
    "flyteidl2",
    "connectrpc",
    "httpx",
    "httpcore",
    "pyqwest",
    "anyio",
    "ssl",
    "certifi",
)


def _package(name: str) -> str:
    return name.partition(".")[0]


def _raised_in_a_dependency(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by the SDK (or what it calls), not by rerund: the innermost
    Python frame of its traceback is in one of ``_DEPENDENCIES``. A check the SDK makes of our
    request (``ValueError("force_rerun_actions requires recover=True")``) is the SDK's; a
    ``TypeError`` from protobuf's C code while our code builds a message is ours (its innermost
    Python frame is our line)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return _package(str(tb.tb_frame.f_globals.get("__name__", ""))) in _DEPENDENCIES


def _a_dependencys_error(exc: BaseException) -> bool:
    """Whether ``exc``'s class belongs to the SDK or its transport (or is an OS-level I/O error)."""
    return isinstance(exc, OSError) or _package(type(exc).__module__) in _DEPENDENCIES


def translate_error(exc: BaseException, rpc: str) -> ControlPlaneError:
    """Map an SDK / Connect / transport error of ``rpc`` onto the ``rerund.errors`` tree, and
    re-raise anything else unchanged: a bug of rerund's (an ``AttributeError`` after an SDK
    change, a ``ValueError`` or ``TypeError`` raised in our code) must reach the supervisor and
    ``rerund_internal_errors_total``, never be settled as a refusal ("invalid") or retried
    forever as an outage ("unavailable"). Use as ``raise translate_error(exc, rpc) from exc``
    inside the ``except``."""
    import flyte.errors
    from connectrpc.errors import ConnectError

    if isinstance(exc, ControlPlaneError):
        return exc
    if isinstance(exc, sdk_internals.authentication_error()) and not isinstance(exc.__cause__, ConnectError):
        return CredentialsError(
            f"{rpc}: the token endpoint refused rerund's credentials ({exc}); retrying with backoff",
            rpc=rpc,
            code="unauthenticated",
        )
    if isinstance(exc, ConnectError):
        code = exc.code.value
        text = f"{rpc} failed ({code}): {exc.message}"
        if code == "unauthenticated":
            return CredentialsError(text + "; retrying with backoff", rpc=rpc, code=code)
        if code == "not_found":
            return NotFoundError(text, rpc=rpc, code=code)
        if code == "already_exists":
            return AlreadyExistsError(text, rpc=rpc, code=code)
        if code in _TRANSIENT_CODES:
            return TransientControlPlaneError(text, rpc=rpc, code=code)
        return PermanentControlPlaneError(text, rpc=rpc, code=code)
    if isinstance(exc, flyte.errors.RuntimeUserError):
        code = str(getattr(exc, "code", ""))
        if code == "RunAlreadyExistsError":
            return AlreadyExistsError(f"{rpc}: {exc}", rpc=rpc, code="already_exists")
        if code == "InvalidArgumentError":
            return PermanentControlPlaneError(
                f"{rpc} rejected the request as invalid: {exc}", rpc=rpc, code="invalid_argument"
            )
        return PermanentControlPlaneError(
            f"{rpc} failed ({code}): {exc}", rpc=rpc, code=code.lower() or "user"
        )
    if isinstance(exc, flyte.errors.RuntimeSystemError):
        cause = exc.__cause__
        if isinstance(cause, ConnectError):
            inner = translate_error(cause, rpc)
            return type(inner)(f"{rpc}: {exc}", rpc=rpc, code=inner.code)
        code = "unavailable" if getattr(exc, "code", "") == "SystemUnavailableError" else "internal"
        return TransientControlPlaneError(f"{rpc} failed ({code}): {exc}", rpc=rpc, code=code)
    if isinstance(exc, TimeoutError):
        return TransientControlPlaneError(f"{rpc} timed out", rpc=rpc, code="deadline_exceeded")
    if isinstance(exc, ValueError | TypeError) and _raised_in_a_dependency(exc):
        # The SDK's own check of the request (e.g. a rerun of an action with no task spec).
        return PermanentControlPlaneError(f"{rpc} cannot be done: {exc}", rpc=rpc, code="invalid_argument")
    if not _a_dependencys_error(exc) or isinstance(exc, AttributeError | NameError | KeyError | IndexError):
        raise exc
    if is_tls_failure(exc):
        return TransientControlPlaneError(
            f"{rpc} failed: the control plane's TLS certificate is not trusted ({tls_reason(exc)}); "
            "retrying with backoff",
            rpc=rpc,
            code="unavailable",
        )
    return TransientControlPlaneError(
        f"{rpc} failed ({type(exc).__name__}: {exc})", rpc=rpc, code="unavailable"
    )


def is_tls_failure(exc: BaseException) -> bool:
    """A TLS verification failure: pyqwest's ``invalid peer certificate`` (RPCs) or Python's
    ``CERTIFICATE_VERIFY_FAILED`` (the SDK's token requests), anywhere in the cause chain."""
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            return False
        text = str(seen)
        if "invalid peer certificate" in text or "CERTIFICATE_VERIFY_FAILED" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def tls_reason(exc: BaseException) -> str:
    """The certificate problem named in ``exc``'s cause chain (e.g. ``invalid peer
    certificate: UnknownIssuer``), without the request URL around it."""
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            break
        m = re.search(r"(invalid peer certificate: \w+|certificate verify failed: [^()]+)", str(seen))
        if m:
            return m.group(1).strip()
        seen = seen.__cause__ or seen.__context__
    return "certificate verification failed"
