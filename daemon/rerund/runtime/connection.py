"""The daemon's connection to the control plane as an operator sees it: whether it answers
(one log line when it stops, one when it answers again) and the credential files reloaded when
they change (no restart)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from rerund.core.durations import format_duration
from rerund.core.redact import redact_url
from rerund.errors import ConfigError
from rerund.ports import Reconnect
from rerund.runtime.settings import Settings
from rerund.runtime.throttle import CredentialWatch

__all__ = ["CredentialFiles", "Reachability", "sleep_until"]

log = logging.getLogger("rerund.daemon")


async def sleep_until(seconds: float, *events: asyncio.Event) -> None:
    """Sleep up to ``seconds``, waking early when any of ``events`` is set."""
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


class Reachability:
    """Whether the control plane answered the last resync pass (None: no pass yet), said in one
    plain line when it stops answering and one when it answers again."""

    def __init__(self, settings: Settings, credentials: CredentialWatch) -> None:
        self._where = redact_url(settings.endpoint) if settings.endpoint else "(the endpoint of the API key)"
        self._poll_interval = settings.poll_interval
        self._credentials = credentials
        self.reachable: bool | None = None

    def passed(self, ok: bool, errors: tuple[str, ...]) -> None:
        """A resync pass ended: ``ok`` when every listing answered, else its ``errors``."""
        if not ok and self.reachable is not False:
            self.reachable = False
            if self._credentials.since is not None:
                return  # it answers, refusing the credentials: the guard says so, once a minute
            reason = errors[0].split(": ", 1)[-1] if errors else "unknown"
            log.error(
                "cannot reach the control plane at %s: %s; rerund keeps trying (a resync every %s, "
                "the watch streams with backoff) and nothing owed is lost meanwhile",
                self._where,
                reason.rsplit(": ", 1)[-1],
                format_duration(self._poll_interval),
            )
        elif ok and self.reachable is False:
            self.reachable = True
            log.info("the control plane at %s answers again", self._where)
        elif ok:
            self.reachable = True


class CredentialFiles:
    """The API key, client secret and CA files: when one changes, ``run`` initialises the SDK
    again with it (``reconnect``, no restart) and sets ``resync`` to catch up; it checks every
    ``interval`` seconds until ``stop`` is set."""

    def __init__(
        self,
        settings: Settings,
        reconnect: Reconnect,
        *,
        stop: asyncio.Event,
        resync: asyncio.Event,
        interval: float,
    ) -> None:
        self._paths = [
            p for p in (settings.api_key_file, settings.client_secret_file, settings.ca_cert_file) if p
        ]
        self._reconnect = reconnect
        self._stop = stop
        self._resync = resync
        self._interval = interval

    def state(self) -> tuple[Any, ...]:
        """(path, mtime, size) of each file (None, None when it cannot be read)."""
        out: list[tuple[str, int | None, int | None]] = []
        for path in self._paths:
            try:
                st = path.stat()
            except OSError:
                out.append((str(path), None, None))
                continue
            out.append((str(path), st.st_mtime_ns, st.st_size))
        return tuple(out)

    async def run(self) -> None:
        stop = self._stop
        files = self.state()
        while not stop.is_set():
            await sleep_until(self._interval, stop)
            now = self.state()
            if now == files or stop.is_set():
                continue
            files = now
            try:
                await self._reconnect()
            except ConfigError as exc:
                log.error("credentials changed but cannot be used (%s); the previous ones stay in use", exc)
                continue
            log.info("credentials reloaded from %s; resync now to catch up", ", ".join(f[0] for f in files))
            self._resync.set()
