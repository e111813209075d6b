"""The Host rule against DNS rebinding and the connection cap (issue 22.6, 22.13)."""

from __future__ import annotations

import pytest

from rerund.core.hosts import FD_RESERVE, MAX_CONNECTIONS, connection_cap, host_allowed


@pytest.mark.parametrize(
    ("host", "names", "allowed"),
    [
        ("127.0.0.1:9464", (), True),
        ("10.1.2.3:9464", (), True),  # a pod IP: what probes and Prometheus send
        ("[::1]:8090", (), True),
        ("::1", (), True),
        ("localhost:9464", (), True),
        ("LOCALHOST.:9464", (), True),
        ("app.localhost", (), True),
        ("", (), True),  # HTTP/1.0 sends none; a browser always does
        ("evil.example:9464", (), False),
        ("evil.example", ("0.0.0.0",), False),
        ("localhost.evil.example", (), False),
        ("127.0.0.1.evil.example", (), False),
        ("rerund.internal:9464", ("rerund.internal",), True),
        ("RERUND.internal", ("rerund.internal",), True),
    ],
    ids=str,
)
def test_a_host_is_allowed_when_it_is_an_address_localhost_or_a_configured_name(host, names, allowed):
    assert host_allowed(host, names) is allowed


@pytest.mark.parametrize(
    ("fd_limit", "cap"),
    [
        (1024, (1024 - FD_RESERVE) // 2),
        (1_048_576, MAX_CONNECTIONS),
        (64, 8),
    ],
    ids=["the usual soft limit", "a container's limit", "a tiny limit still serves a probe"],
)
def test_the_connection_cap_leaves_the_reserve_and_as_many_again_for_the_rest(fd_limit, cap):
    assert connection_cap(fd_limit) == cap
    assert connection_cap(fd_limit) <= max(8, fd_limit - FD_RESERVE - connection_cap(fd_limit))
