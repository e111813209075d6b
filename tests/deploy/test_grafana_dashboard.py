"""The Grafana dashboard: well-formed, covering what the issue asks for, and built only on the
metrics rerund exports (every query is also run against a real Prometheus in the e2e test)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from deploy_support import CONTRACT, DASHBOARD, SERIES_NAMES, grafana_expr, metric_names


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def _targets() -> list[tuple[str, str, str]]:
    return [(p["title"], t["refId"], t["expr"]) for p in _panels() for t in p["targets"]]


REQUIRED_PANELS = {
    "decisions by policy and outcome": ("Decisions by policy and outcome", "rerund_decisions_total"),
    "reruns issued by scope": ("Reruns issued by scope", "rerund_reruns_issued_total"),
    "recovery rate": ("Recovery rate", "rerund_lineages_recovered_total"),
    "exhausted lineages": ("Lineages exhausted", "rerund_lineages_exhausted_total"),
    "detection latency percentiles": ("Detection latency", "rerund_detection_latency_seconds_bucket"),
    "issue latency percentiles": ("Issue latency", "rerund_issue_latency_seconds_bucket"),
    "control-plane errors": ("Control-plane errors", "rerund_control_plane_errors_total"),
    "budget deferrals": ("Budget deferrals", "rerund_budget_deferrals_total"),
    "reproduction results": ("Reproduction results", "rerund_reproduction_runs_total"),
}


@pytest.mark.parametrize(("title", "metric"), REQUIRED_PANELS.values(), ids=list(REQUIRED_PANELS))
def test_the_dashboard_has_the_panel_the_issue_asks_for(title: str, metric: str) -> None:
    panel = next((p for p in _panels() if p["title"] == title), None)
    assert panel is not None, f"no panel titled {title!r}"
    assert any(metric in metric_names(t["expr"]) for t in panel["targets"])
    assert len(panel["description"].split()) >= 8


def test_latency_panels_show_p50_p90_p99() -> None:
    for title in ("Detection latency", "Issue latency"):
        panel = next(p for p in _panels() if p["title"] == title)
        quantiles = [t["expr"].split("(")[1].split(",")[0] for t in panel["targets"]]
        assert quantiles == ["0.5", "0.9", "0.99"]
        assert panel["fieldConfig"]["defaults"]["unit"] == "s"


@pytest.mark.parametrize(("panel", "ref", "expr"), _targets(), ids=[f"{p}/{r}" for p, r, _ in _targets()])
def test_every_query_uses_only_metrics_rerund_exports(panel: str, ref: str, expr: str) -> None:
    names = metric_names(grafana_expr(expr))
    assert names, f"{panel}/{ref} selects no metric"
    assert names <= SERIES_NAMES, f"{panel}/{ref}: not exported by rerund: {names - SERIES_NAMES}"


def test_every_exported_metric_appears_on_the_dashboard() -> None:
    used = set().union(*(metric_names(grafana_expr(e)) for _, _, e in _targets()))
    missing = [m.name for m in CONTRACT if not (m.series_names() & used)]
    assert missing == ["rerund_reproduction_last_run_timestamp_seconds"]  # only used by its alert


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    panels = _dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]


def test_every_query_uses_the_datasource_variable_and_the_replica_filter() -> None:
    dashboard = _dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["allValue"] == ".*"
    for panel in _panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            assert target["expr"].count("{") == target["expr"].count('instance=~"$instance"')


def test_the_dashboard_is_importable_as_is() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "rerund"
    assert dashboard["schemaVersion"] >= 36
    assert "id" not in dashboard  # an exported id would clash on import
    assert "__inputs" not in dashboard  # no import-time prompts: the datasource is a variable
