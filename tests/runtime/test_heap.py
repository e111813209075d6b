"""``settle_heap``: what ``rerund run`` does to the garbage collector once it has started."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from rerund.runtime.daemon import settle_heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_what_is_alive_at_start_leaves_the_collectors_generations(restored_gc: None) -> None:
    long_lived = [{"n": i} for i in range(1000)]
    gc.unfreeze()

    settle_heap(gen0=5000)

    assert gc.get_freeze_count() >= len(long_lived)
    assert gc.get_threshold()[0] == 5000
    # Garbage made afterwards, cycles included, is still collected.
    cycle: list[Any] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1


def test_rerund_run_settles_the_heap_once_the_daemon_is_ready(
    restored_gc: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    import rerund.cli.daemon as cli

    seen: dict[str, Any] = {}
    monkeypatch.setattr(cli, "_settings", lambda args: _Settings())
    monkeypatch.setattr(cli, "ensure_policies", lambda settings: None)
    monkeypatch.setattr(cli, "configure_logging", lambda *a: None)

    def fake_loop(run: Any, **kw: Any) -> int:
        seen["daemon"] = run.__self__
        return 0

    monkeypatch.setattr(cli, "run_on_sdk_loop", fake_loop)
    called: list[bool] = []
    monkeypatch.setattr(cli, "settle_heap", lambda: called.append(True))

    assert cli._run(object()) == 0  # type: ignore[arg-type]
    daemon = seen["daemon"]
    assert not called
    daemon._on_ready(daemon)
    assert called == [True]


class _Settings:
    log_level = "INFO"
    log_format = "text"
    event_loop = "asyncio"

    def require_runnable(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)
