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


def translate_error(exc: BaseException, rpc: str) -> ControlPlaneError:
    """Map an SDK / Connect / transport error of ``rpc`` onto the ``rerund.errors`` tree."""
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
    if isinstance(exc, ValueError | TypeError):
        return PermanentControlPlaneError(f"{rpc} cannot be done: {exc}", rpc=rpc, code="invalid_argument")
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
