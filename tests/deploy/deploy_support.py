"""Shared helpers for the deploy/ tests: where the real tools are, the metric contract, PromQL names.

The tools are installed by ``make deploy-tools`` (which ``make test`` runs first). A missing tool
is a clear failure naming that command, never a skip: CI must run these checks for real.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yaml"
RULES_TEST = DEPLOY / "prometheus" / "rules.test.yaml"
DASHBOARD = DEPLOY / "grafana" / "rerund.json"
BASE = DEPLOY / "kubernetes" / "base"
OVERLAYS = DEPLOY / "kubernetes" / "overlays"
OVERLAY = OVERLAYS / "example"
HA_OVERLAY = OVERLAYS / "ha"
DOCKERFILE = DEPLOY / "Dockerfile"


def tool(name: str) -> str:
    """The path of a real tool: the venv's bin first (PyPI tools), then PATH (Debian's)."""
    in_venv = Path(sys.executable).parent / name
    if in_venv.exists():
        return str(in_venv)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run `make deploy-tools` (make test does it first)")
    return found


def run(*argv: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a tool; on an unexpected exit status fail with its whole output."""
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(argv)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # counter | gauge | histogram
    labels: frozenset[str]

    def series_names(self) -> set[str]:
        """The names Prometheus stores for this metric family."""
        if self.kind == "histogram":
            return {f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count"}
        return {self.name}


def _m(name: str, kind: str, *labels: str) -> Metric:
    return Metric(name, kind, frozenset(labels))


# The metric contract: issue 4 (the daemon) and issue 5 (reproduction checks) name these.
CONTRACT: tuple[Metric, ...] = (
    _m("rerund_failures_observed_total", "counter", "project", "domain"),
    _m("rerund_decisions_total", "counter", "policy", "decision"),
    _m("rerund_reruns_issued_total", "counter", "policy", "scope"),
    _m("rerund_rerun_outcomes_total", "counter", "policy", "outcome"),
    _m("rerund_lineages_recovered_total", "counter", "policy"),
    _m("rerund_lineages_exhausted_total", "counter", "policy"),
    _m("rerund_detection_latency_seconds", "histogram"),
    _m("rerund_issue_latency_seconds", "histogram"),
    _m("rerund_control_plane_errors_total", "counter", "rpc", "code"),
    _m("rerund_last_sync_timestamp_seconds", "gauge"),
    _m("rerund_policies_loaded", "gauge"),
    _m("rerund_policy_reloads_total", "counter", "result"),
    _m("rerund_budget_deferrals_total", "counter", "budget"),
    _m("rerund_notifications_total", "counter", "result"),
    _m("rerund_reproduction_runs_total", "counter", "check", "result"),
    _m("rerund_reproduction_last_result", "gauge", "check"),
    _m("rerund_reproduction_last_run_timestamp_seconds", "gauge", "check"),
    _m("rerund_internal_errors_total", "counter", "task"),
    _m("rerund_control_plane_concurrency", "gauge"),  # issue 12: adaptive concurrency
    _m("rerund_control_plane_rpcs_total", "counter"),  # issue 12: what max_rps caps
    _m("rerund_control_plane_peak_rps", "gauge"),
    _m("rerund_clock_skew_seconds", "gauge"),
    _m("rerund_ledger_reopened_total", "counter"),  # issue 22.17: the ledger file deleted or replaced
    _m("rerund_rerun_name_conflicts_total", "counter"),  # issue 22.1: a rerun name taken
    _m("rerund_forged_lineage_labels_total", "counter"),  # issue 22.2: labels nobody vouches for
    _m("rerund_read_cache_bytes", "gauge"),  # issue 24: memory bounded in bytes
    _m("rerund_cache_bytes", "gauge", "cache"),  # issue 24: each cache's bytes held
    _m("rerund_ledger_bytes", "gauge"),  # issue 24: the ledger's size
    _m("rerund_incidents_open", "gauge"),  # issue 27: the outage breaker
    _m("rerund_incident_reruns_held", "gauge"),
    _m("rerund_leader", "gauge"),  # issue 25: which replica acts
    _m("rerund_leader_changes_total", "counter"),  # issue 25
    _m("rerund_fenced_writes_total", "counter"),  # issue 25: a stale leader's writes refused
    _m("rerund_outbox_pending", "gauge"),  # issue 25: notifications not delivered yet
)
REPRODUCTION_METRICS = frozenset(m.name for m in CONTRACT if m.name.startswith("rerund_reproduction_"))
SERIES_NAMES: frozenset[str] = frozenset(n for m in CONTRACT for n in m.series_names())

_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
    # aggregation operators may put their `by (...)` clause before the parenthesis
    | {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk"}
    | {"quantile", "limitk", "limit_ratio"}
)


def metric_names(expr: str) -> set[str]:
    """Every metric name a PromQL expression selects (functions, keywords and labels excluded).

    Strings, label matchers ``{...}``, range/subquery brackets ``[...]`` and the label lists of
    ``by``/``without``/``on``/``ignoring``/``group_left``/``group_right`` are removed first;
    what is left that looks like an identifier and is not a function call is a metric name.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r" \1 ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        token = match.group(0)
        if token in _KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue
        names.add(token)
    return names


def grafana_expr(expr: str, *, range_: str = "5m", rate_interval: str = "1m") -> str:
    """A dashboard query as Grafana sends it, with its variables substituted."""
    return (
        expr.replace("$__rate_interval", rate_interval)
        .replace("$__range", range_)
        .replace('instance=~"$instance"', 'instance=~".*"')
    )


class KubeletConfigMapDir:
    """A directory laid out like a kubelet ConfigMap volume, updated the way the kubelet does it:
    files are symlinks to ``..data/<file>``, ``..data`` links to a timestamped directory, and an
    update writes a new timestamped directory and renames a fresh ``..data_tmp`` link over
    ``..data`` (one atomic rename), then removes the old directory."""

    def __init__(self, path: Path, files: dict[str, str]) -> None:
        self.path = path
        path.mkdir(parents=True)
        self._n = 0
        self._current: Path | None = None
        self.update(files)
        for name in files:
            (path / name).symlink_to(Path("..data") / name)

    def update(self, files: dict[str, str]) -> None:
        self._n += 1
        new = self.path / f"..2026_11_25_00_00_00.{self._n:09d}"
        new.mkdir()
        for name, text in files.items():
            (new / name).write_text(text)
        tmp = self.path / "..data_tmp"
        tmp.symlink_to(new.name)
        os.replace(tmp, self.path / "..data")
        if self._current is not None:
            for f in self._current.iterdir():
                f.unlink()
            self._current.rmdir()
        self._current = new
