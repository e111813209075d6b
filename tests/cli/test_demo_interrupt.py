"""``rerund demo --duration N`` stops on the first Ctrl-C, without waiting for N and without a
traceback (issue 28.4): a real ``rerund demo`` subprocess gets SIGINT."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
def test_one_ctrl_c_stops_a_demo_with_a_duration_at_once_without_a_traceback(tmp_path: Path) -> None:
    # --duration far longer than the wait below: a demo that waited for it would time out here.
    demo = subprocess.Popen(
        [sys.executable, "-m", "rerund.cli", "demo", "--duration", "600", "--time-scale", "0.2",
         "--http", "127.0.0.1:0", "--state", str(tmp_path / "demo.db"), "--handover-dir", str(tmp_path)],
        cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert demo.stderr is not None
    seen = []
    try:
        for line in demo.stderr:
            seen.append(line)
            if "One line per decision follows" in line:
                break
        else:
            pytest.fail("the demo ended before it was ready:\n" + "".join(seen))
        demo.send_signal(signal.SIGINT)
        _, rest = demo.communicate(timeout=60)  # TimeoutExpired when the demo hangs
        code = demo.returncode
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    err = "".join(seen) + rest

    assert code in (0, 130), err[-3000:]
    assert "Traceback" not in err
    assert "rerund demo: summary" in err
