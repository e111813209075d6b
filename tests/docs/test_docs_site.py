"""The docs site builds strictly (``make docs``), its policy reference is generated from the
schema, its nav lists the optional pages that exist, and README.md is a short overview that
links into it (issue 28). The code blocks themselves: test_docs_blocks.py."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import yaml

from rerund.policy.schema import policy_schema

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rerund_docs_hooks", REPO / "docs" / "hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mkdocs_builds_the_site_in_strict_mode(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={"NO_MKDOCS_2_WARNING": "1", "PATH": ""},
    )  # fmt: skip

    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "policies" / "reference" / "index.html").exists()
    assert (tmp_path / "site" / "assets" / "operator-page.png").exists()


def test_the_reference_lists_every_key_of_every_object_of_the_schema() -> None:
    schema = policy_schema()
    page = hooks().reference_markdown(schema)

    for name, sub in schema["$defs"].items():
        assert f"\n## {name}\n" in page
        for key, prop in sub.get("properties", {}).items():
            listed = f"| `{key}` |" in page.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
            assert listed != bool(prop.get("deprecated")), f"{name}.{key}"


def test_the_nav_leaves_out_optional_pages_that_do_not_exist_and_keeps_the_rest(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# a")
    (tmp_path / "state.md").write_text("# state")
    nav = [{"Home": "a.md"}, {"Production": ["state.md", {"Replicas": "replicas.md"}, {"Typo": "typo.md"}]}]

    kept = hooks()._present(nav, tmp_path, {"state.md", "replicas.md"})

    assert kept == [{"Home": "a.md"}, {"Production": ["state.md", {"Typo": "typo.md"}]}]


def test_every_page_in_docs_is_in_the_nav() -> None:
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text().replace("!!python", "#"))
    listed = set(re.findall(r"[\w/-]+\.md", yaml.safe_dump(config["nav"])))
    pages = {str(p.relative_to(REPO / "docs")) for p in (REPO / "docs").rglob("*.md")}

    assert pages - listed == set()


def test_the_readme_is_an_overview_of_at_most_200_lines_that_links_into_the_docs() -> None:
    assert len(README.splitlines()) <= 200
    linked = set(re.findall(r"\]\((docs/[\w/.-]+\.md)(?:#[\w-]+)?\)", README))
    assert {"docs/getting-started.md", "docs/operating.md", "docs/policies/index.md"} <= linked


def test_readme_links_and_images_point_at_files_that_exist() -> None:
    for target in re.findall(r"\]\(((?!http|#)[^)#]+)(?:#[^)]*)?\)", README):
        assert (REPO / target).exists(), target


def test_the_day_2_page_shows_the_day_2_commands_against_the_demo() -> None:
    page = (REPO / "docs" / "operating.md").read_text()
    for needed in ("rerund status --config", "rerund history --config", "rerund explain RUN --config"):
        assert f"{needed} .rerund/demo.yaml" in page, needed


def test_the_dashboard_description_names_every_row_of_the_dashboard() -> None:
    """Issue 28.8: the docs said "four rows" of a five-row dashboard."""
    import json

    panels = json.loads((REPO / "deploy" / "grafana" / "rerund.json").read_text())["panels"]
    rows = [p["title"] for p in panels if p.get("type") == "row"]
    page = (REPO / "docs" / "deployment.md").read_text()
    words = {4: "four", 5: "five", 6: "six", 7: "seven"}

    assert f"has {words[len(rows)]} rows:" in page
    assert [title for title in rows if f"- **{title}** —" not in page] == []


def test_every_alert_is_named_in_the_docs() -> None:
    rules = yaml.safe_load((REPO / "deploy" / "prometheus" / "rules.yaml").read_text())
    alerts = [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]
    page = (REPO / "docs" / "deployment.md").read_text()

    assert [a for a in alerts if f"`{a}`" not in page] == []
