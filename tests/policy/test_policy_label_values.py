"""Every label and annotation rerund writes is a Kubernetes label value: the cluster refuses a
pod with any other, and the run stays QUEUED forever. ``rerund check`` says where."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rerund.cli import main
from rerund.core.labels import label_key_problem, label_value_problem
from rerund.errors import PolicyError
from rerund.policy import load_policies


def _write(tmp_path: Path, retry: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(f"apiVersion: rerund/v1\npolicies:\n  - name: a\n    match: {{}}\n    retry:\n{retry}")
    return path


@pytest.mark.parametrize(
    ("retry", "message"),
    [
        (
            "      scope: run\n      labels: {team: ML Platform}\n",
            r"p\.yaml:7:15: policies\[0\]\.retry\.labels: label 'team': value 'ML Platform' is not a "
            r"Kubernetes label value: at most 63 letters, digits, '-', '_' or '\.', starting and ending "
            r"with a letter or digit; the cluster would refuse the run's pod and the run would stay QUEUED",
        ),
        (
            f"      scope: run\n      labels: {{team: {'a' * 64}}}\n",
            r"policies\[0\]\.retry\.labels: label 'team': value 'a{64}' is 64 characters long",
        ),
        (
            "      scope: run\n      labels: {'my team': ml}\n",
            r"policies\[0\]\.retry\.labels: label key 'my team' is not a Kubernetes label key",
        ),
        (
            "      scope: run\n      escalate: {2: {labels: {tier: 'gold!'}}}\n",
            r"policies\[0\]\.retry\.escalate\[2\]\.labels: label 'tier': value 'gold!' is not a Kubernetes",
        ),
        (
            "      scope: run\n      annotations: {example.com/note: 'see https://x'}\n",
            r"annotation 'example\.com/note': value 'see https://x' is not a Kubernetes label value",
        ),
    ],
    ids=["space", "too-long", "key", "escalate", "annotation"],
)
def test_check_refuses_label_values_the_cluster_refuses_and_says_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], retry: str, message: str
) -> None:
    path = _write(tmp_path, retry)

    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert any(re.search(message, line) for line in out.splitlines()), out
    with pytest.raises(PolicyError, match=message.split(": ", 1)[-1][:40]):
        load_policies([path])


def test_valid_label_values_pass(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "      scope: run\n      labels: {team: ml-platform_2.0, empty: '', example.com/x: Y}\n"
    )
    assert load_policies([path]).rules


@pytest.mark.parametrize("value", ["", "a", "A-b_c.9", "x" * 63])
def test_label_values_kubernetes_takes(value: str) -> None:
    assert label_value_problem(value) is None


@pytest.mark.parametrize("value", ["-a", "a-", "a b", "é", "x" * 64, "a\n", "a/b"])
def test_label_values_kubernetes_refuses(value: str) -> None:
    assert label_value_problem(value) is not None


def test_label_keys() -> None:
    assert label_key_problem("example.com/team") is None
    assert label_key_problem("team") is None
    assert label_key_problem("Example.com/team") is not None
    assert label_key_problem("/team") is not None
    assert label_key_problem("a b") is not None
