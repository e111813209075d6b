"""rerund's ``http_proxy`` setting, made to carry every control-plane request of the flyte SDK.

Why environment variables: flyte 2.12.1 accepts ``flyte.init(http_proxy_url=...)`` but uses it
for nothing. It hands the value down to ``_token_client.get_token``, which never reads it; the
OAuth2 token requests go through an ``httpx.AsyncClient`` built by ``get_async_session`` from
the keyword arguments httpx knows (not that one), and every RPC (unary and the WatchRuns
stream, the OAuth2 metadata included) through a ``pyqwest.HTTPTransport`` built by
``_build_pyqwest_client`` with no ``proxy=``. Both clients do honour the standard variables when
they are built: pyqwest (reqwest) reads ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` /
``NO_PROXY`` for each new transport, httpx (``trust_env``) for each new client. That is the one
route into both that the SDK supports, so ``export_http_proxy`` sets them.

What it costs, and why it is done this way:

- The variables stay set for the life of the process, not just around ``flyte.init``: the SDK
  builds clients later too (a per-cluster DataProxy client after SelectCluster, a client
  rebuilt after new credentials), and each reads the environment when it is built.
- Both spellings are set (``HTTPS_PROXY`` and ``https_proxy``, ``HTTP_PROXY`` and
  ``http_proxy``) because the two libraries disagree on which wins when both are present
  (reqwest takes the upper-case one, httpx the lower-case one): set alike, they agree. The
  setting outranks an ``ALL_PROXY`` for http and https in both.
- ``NO_PROXY`` / ``no_proxy`` are the operator's and never touched: both libraries reach the
  hosts listed there directly.
- Everything else in the process that trusts the environment follows the proxy too: webhook
  notifications (httpx) and the ``auth_command`` rerund runs inherit the variables.
- The value can carry credentials (``http://user:password@proxy:3128``): it is never logged or
  shown; messages show ``redact_url`` of it (scheme, host and port).

With ``http_proxy`` empty, what the operator exported is left as it is (and restored if an
earlier call had exported a proxy): the SDK then follows the operator's own variables.
"""

from __future__ import annotations

import logging
import os

from rerund.core.redact import redact_url

__all__ = ["NO_PROXY_VARIABLES", "PROXY_VARIABLES", "export_http_proxy"]

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
NO_PROXY_VARIABLES = ("NO_PROXY", "no_proxy")

log = logging.getLogger("rerund.flyte")

# The operator's values of PROXY_VARIABLES (None: unset) while rerund's proxy is exported.
_operator: dict[str, str | None] | None = None


def export_http_proxy(proxy: str) -> bool:
    """Make every HTTP client built from now on in this process send through ``proxy`` (``""``:
    give the operator's proxy variables back). Returns whether the variables changed; when they
    did, one INFO line says which proxy (without its credentials) and which hosts bypass it.

    Call it before ``flyte.init``: clients built before it keep the route they were built with.
    """
    global _operator
    if not proxy:
        if _operator is None:
            return False
        for name, value in _operator.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _operator = None
        log.info("control-plane requests no longer go through rerund's http_proxy")
        return True
    if _operator is not None and all(os.environ.get(name) == proxy for name in PROXY_VARIABLES):
        return False
    if _operator is None:
        _operator = {name: os.environ.get(name) for name in PROXY_VARIABLES}
    for name in PROXY_VARIABLES:
        os.environ[name] = proxy
    log.info(
        "control-plane requests (RPCs, the WatchRuns stream, OAuth2 token requests) go through the "
        "HTTP proxy %s (http_proxy, exported to the process as HTTPS_PROXY and HTTP_PROXY); %s",
        redact_url(proxy),
        _bypass(),
    )
    return True


def _bypass() -> str:
    """What the operator's NO_PROXY lets bypass the proxy, for the log line."""
    for name in NO_PROXY_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return f"hosts in {name} are reached directly: {value}"
    return "NO_PROXY is not set: every host goes through it"
