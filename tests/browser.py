"""A real headless Chromium for page tests (Debian's ``chromium``, installed by
``make browser-tools``): dump the DOM after load, or write a screenshot.

Flags: headless, no sandbox (tests may run as root in a container), no GPU, and nothing that
reaches the network on its own (no QUIC, no background networking, no component updates, no
sync): the only request is the page under test on 127.0.0.1.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["chromium_dump_dom", "chromium_path", "chromium_screenshot"]

_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(url: str, *extra: str, timeout: float = 120.0) -> str:
    binary = chromium_path()
    assert binary is not None, "chromium is not installed: run `make browser-tools`"
    assert url.startswith("http://127.0.0.1:"), "page tests only load 127.0.0.1"
    with tempfile.TemporaryDirectory(prefix="rerund-chromium-") as profile:
        proc = subprocess.run(
            [binary, *_FLAGS, f"--user-data-dir={profile}", *extra, url],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    assert proc.returncode == 0, f"chromium exited {proc.returncode}: {proc.stderr[-2000:]}"
    return proc.stdout


def chromium_dump_dom(url: str) -> str:
    """The serialised DOM of ``url`` after it loaded."""
    return _run(url, "--dump-dom")


def chromium_screenshot(url: str, path: Path, *, size: str = "1280,2300") -> Path:
    """A PNG screenshot of ``url`` at ``path``."""
    _run(url, f"--screenshot={path}", f"--window-size={size}", "--hide-scrollbars")
    assert path.exists(), f"chromium wrote no screenshot at {path}"
    return path
