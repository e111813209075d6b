"""docs/production.md cannot rot: every overlay it applies builds, every Secret and ConfigMap it
tells you to create is the one that overlay mounts (name, key), every repository file it names
exists, its YAML examples load, and the overlay it shows as "your own" builds on a copy of
deploy/kubernetes with the same auth as the overlay it names."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import OVERLAYS, REPO, run, tool

PAGE = REPO / "docs" / "production.md"


def _blocks(lang: str) -> list[str]:
    return [
        re.sub(r"^ {2}", "", m.group(1), flags=re.M)
        for m in re.finditer(rf"^ *```{lang}\n(.*?)^ *```", PAGE.read_text(), re.S | re.M)
    ]


def _commands() -> list[str]:
    text = "\n".join(_blocks("bash")).replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _render(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(run(tool("kubectl"), "kustomize", str(path)).stdout) if d]


def _pod(path: Path) -> dict[str, Any]:
    return next(o for o in _render(path) if o["kind"] == "Deployment")["spec"]["template"]["spec"]


def test_every_overlay_the_page_applies_builds_and_is_one_of_the_repositorys() -> None:
    applied = {
        m.group(1) for c in _commands() for m in re.finditer(r"kubectl (?:apply -k|kustomize) (\S+)", c)
    }
    assert applied >= {
        "deploy/kubernetes/overlays/api-key",
        "deploy/kubernetes/overlays/client-credentials",
    }
    for path in applied:
        assert (REPO / path / "kustomization.yaml").exists(), path
        assert _render(REPO / path)


@pytest.mark.parametrize("overlay", ["api-key", "client-credentials"])
def test_the_secret_the_page_creates_is_the_one_the_overlay_mounts(overlay: str) -> None:
    """The create command in the overlay's section names the Secret and key its volume reads."""
    section = PAGE.read_text().split(f"deploy/kubernetes/overlays/{overlay}`", 1)[1]
    create = re.search(r"create secret generic (\S+) --from-file=([\w-]+)=", section)
    assert create, f"no `kubectl create secret` after the {overlay} heading"
    secrets = [v["secret"] for v in _pod(OVERLAYS / overlay)["volumes"] if "secret" in v]
    assert [(s["secretName"], [i["key"] for i in s["items"]]) for s in secrets] == [
        (create.group(1), [create.group(2)])
    ]
    kustomization = (OVERLAYS / overlay / "kustomization.yaml").read_text()
    assert f"secret generic {create.group(1)} --from-file={create.group(2)}=" in kustomization


def test_the_ca_configmap_the_page_creates_is_the_one_the_base_mounts() -> None:
    create = next(c for c in _commands() if "create configmap" in c)
    name, key = re.search(r"create configmap (\S+) --from-file=([\w.]+)=", create).groups()
    volume = next(v for v in _pod(OVERLAYS / "api-key")["volumes"] if v["name"] == "flyte-ca")
    assert volume["configMap"]["name"] == name
    assert [i["key"] for i in volume["configMap"]["items"]] == [key]


def test_every_repository_path_the_page_names_exists() -> None:
    named = set(re.findall(r"`((?:deploy|policies|tests|daemon)/[\w./-]+?)`", PAGE.read_text()))
    named |= {
        p for c in _commands() for p in re.findall(r"(?<![\w/.])((?:deploy|policies)/[\w-]+[/.][\w./-]*)", c)
    }
    assert "deploy/Dockerfile" in named
    missing = sorted(p for p in named if not (REPO / p).exists() and "/mine" not in p)
    assert not missing, f"docs/production.md names paths that do not exist: {missing}"


def test_the_page_names_the_policy_library_files_the_base_ships() -> None:
    text = PAGE.read_text()
    for name in ("preemption.yaml", "queue.yaml", "oom.yaml"):
        assert name in text and (REPO / "policies" / "library" / name).exists()
    assert "ondemand-pool" in (REPO / "policies" / "library" / "preemption.yaml").read_text()
    assert "overflow-pool" in (REPO / "policies" / "library" / "queue.yaml").read_text()


def test_every_alert_the_page_lists_is_a_rule_and_every_rule_is_listed() -> None:
    listed = set(re.findall(r"^\| `(Rerund\w+)`", PAGE.read_text(), re.M))
    rules = yaml.safe_load((REPO / "deploy" / "prometheus" / "rules.yaml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert listed == alerts


def test_the_yaml_examples_load_and_your_own_overlay_builds_with_the_auth_it_names(tmp_path: Path) -> None:
    docs = [yaml.safe_load(block) for block in _blocks("yaml")]
    assert all(isinstance(d, dict) for d in docs)
    mine = next(d for d in docs if d.get("kind") == "Kustomization")
    tree = tmp_path / "deploy" / "kubernetes"
    shutil.copytree(REPO / "deploy" / "kubernetes", tree)
    (tree / "overlays" / "mine").mkdir()
    (tree / "overlays" / "mine" / "kustomization.yaml").write_text(yaml.safe_dump(mine))
    deployment = next(o for o in _render(tree / "overlays" / "mine") if o["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert any(a.startswith("--client-secret-file=") for a in args)
    assert not any(a.startswith("--api-key-file=") for a in args)
    assert deployment["spec"]["replicas"] == 2
    # The policies example, added to that overlay: the library's files plus the team's.
    generator = next(d for d in docs if "configMapGenerator" in d)["configMapGenerator"]
    (tree / "overlays" / "mine" / "kustomization.yaml").write_text(
        yaml.safe_dump({**mine, "configMapGenerator": generator})
    )
    (tree / "overlays" / "mine" / "policies").mkdir()
    (tree / "overlays" / "mine" / "policies" / "team.yaml").write_text(
        "apiVersion: rerund/v1\npolicies: []\n"
    )
    policies = next(
        o for o in _render(tree / "overlays" / "mine") if o["metadata"]["name"] == "rerund-policies"
    )
    library = {f.name for f in (REPO / "policies" / "library").glob("*.yaml")}
    assert set(policies["data"]) == library | {"team.yaml"}
