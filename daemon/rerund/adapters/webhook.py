"""Webhook notifications (exhausted lineages) over HTTP with retries and backoff: httpx.

The body is JSON that both a program and Slack understand: the structured fields (run,
lineage, policy, reason, console URL, ...) plus a ``text`` field, which Slack's incoming
webhooks display; Slack reads ``<...>`` there as markup (``<!channel>``, a link whose label hides
its target), so ``text`` is sent Slack-escaped (``rerund.core.encode.for_slack``) and every other
field raw. A delivery is retried with exponential backoff on connection errors, 5xx,
408 and 429; another 4xx means the request itself is wrong and is not retried. The webhook URL
may embed a secret (Slack's does), so messages show only its scheme and host.

httpx is imported on the first notification, not with this module: the daemon imports this
module at start, and httpx (with the rich, click and pygments its command line pulls in) would
weigh on every daemon, most of which never send a webhook (bench/README.md has the figure).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rerund.core.encode import for_slack
from rerund.core.redact import redact_url
from rerund.errors import NotificationError

if TYPE_CHECKING:
    import httpx

__all__ = ["WebhookNotifier", "redact_url"]


class WebhookNotifier:
    """POSTs each payload as JSON to ``url``; raises ``NotificationError`` when every try failed."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        retries: int = 5,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._url = url
        self._timeout = timeout
        self._retries = retries
        self._initial = backoff_initial
        self._max = backoff_max
        self._transport = transport

    async def notify(self, payload: Mapping[str, Any]) -> None:
        import httpx

        body = dict(payload)
        if isinstance(body.get("text"), str):
            body["text"] = for_slack(body["text"])
        delay = self._initial
        last = ""
        attempts = self._retries + 1
        # The outbox's event key: a receiver drops a second copy of the same event by it.
        headers = {"Idempotency-Key": str(body["event_id"])} if body.get("event_id") else None
        async with httpx.AsyncClient(timeout=self._timeout, transport=self._transport) as client:
            for attempt in range(1, attempts + 1):
                try:
                    resp = await client.post(self._url, json=body, headers=headers)
                except httpx.InvalidURL:
                    # Not retried, and its text is not shown: httpx quotes the URL's parts.
                    raise NotificationError(
                        f"webhook {redact_url(self._url)} is not a valid URL; not retried: fix "
                        "notify.webhook (RERUND_NOTIFY_WEBHOOK, --notify-webhook)"
                    ) from None
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}"
                else:
                    if resp.status_code < 300:
                        return
                    last = f"HTTP {resp.status_code}"
                    if 400 <= resp.status_code < 500 and resp.status_code not in (408, 429):
                        raise NotificationError(
                            f"webhook {redact_url(self._url)} refused the notification ({last}); not "
                            "retried: fix the URL or the receiver"
                        )
                if attempt < attempts:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._max)
        raise NotificationError(
            f"webhook {redact_url(self._url)} failed after {attempts} attempts (last: {last}); the "
            "event stays in the ledger (`rerund history`, `rerund repro history`)"
        )
