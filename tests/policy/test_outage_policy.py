"""The shipped outage policy (policies/outage/, for `rerund sweep`) validates on its own."""

from __future__ import annotations

from pathlib import Path

from rerund.cli import main

OUTAGE = Path(__file__).resolve().parents[2] / "policies" / "outage"


def test_check_accepts_the_outage_policy(capsys) -> None:
    assert main(["check", str(OUTAGE)]) == 0
    assert capsys.readouterr().out == "ok: 2 policies in 1 file: image-does-not-exist, registry-outage\n"
