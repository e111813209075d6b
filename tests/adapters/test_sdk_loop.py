"""``run_on_sdk_loop``: `rerund run` runs the daemon on the flyte SDK's own event loop thread."""

from __future__ import annotations

import asyncio
import threading

import pytest

from rerund.adapters.flyte.sdk_loop import run_on_sdk_loop


def test_the_coroutine_runs_on_the_sdks_loop_thread_and_its_result_comes_back() -> None:
    async def main() -> tuple[str, str]:
        await asyncio.sleep(0)
        return threading.current_thread().name, type(asyncio.get_running_loop()).__module__

    thread, _ = run_on_sdk_loop(main)
    assert thread != threading.current_thread().name
    assert thread == "flyte_syncify"  # the SDK's background loop: its calls need no hand-off


@pytest.mark.parametrize("escaping", [SystemExit(3), KeyboardInterrupt()])
def test_an_exit_raised_on_the_loop_reaches_the_caller_instead_of_hanging_it(escaping: BaseException) -> None:
    async def main() -> None:
        raise escaping

    with pytest.raises(type(escaping)):
        run_on_sdk_loop(main)
    # the SDK's loop survived: it still runs coroutines
    assert run_on_sdk_loop(_five) == 5


def test_an_error_keeps_its_type() -> None:
    async def main() -> None:
        raise ValueError("bad settings")

    with pytest.raises(ValueError, match="bad settings"):
        run_on_sdk_loop(main)


async def _five() -> int:
    return 5
