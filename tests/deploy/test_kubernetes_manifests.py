"""The kustomize base and its overlays (example, api-key, client-credentials), rendered by the
real kustomize (inside kubectl), validate against the Kubernetes 1.37 schemas (kubernetes-validate
ships them offline); the prometheus-operator objects, which have no schema there, are checked
for the fields their CRDs require and for pointing at the right things."""

from __future__ import annotations

import re
import shutil
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from deploy_support import BASE, HA_OVERLAY, OVERLAY, OVERLAYS, REPO, RULES, KubeletConfigMapDir, run, tool

K8S_VERSION = "1.37.0"
BUILDS = {
    "base": BASE,
    "overlay-example": OVERLAY,
    "overlay-api-key": OVERLAYS / "api-key",
    "overlay-client-credentials": OVERLAYS / "client-credentials",
    "overlay-ha": HA_OVERLAY,
}
# How each build authenticates (Settings.auth_mode): the base no way, each overlay exactly one.
AUTH = {
    "base": "none",
    "overlay-example": "api_key",
    "overlay-api-key": "api_key",
    "overlay-client-credentials": "client_credentials",
    "overlay-ha": "api_key",
}
LIBRARY = REPO / "policies" / "library"
# The operator's duration pattern (monitoring.coreos.com/v1 Duration).
DURATION = re.compile(
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)


@cache
def _render(path: Path) -> tuple[dict[str, Any], ...]:
    out = run(tool("kubectl"), "kustomize", str(path))
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def _objects(build: str, kind: str | None = None) -> list[dict[str, Any]]:
    return [o for o in _render(BUILDS[build]) if kind is None or o["kind"] == kind]


def _one(build: str, kind: str) -> dict[str, Any]:
    found = _objects(build, kind)
    assert len(found) == 1, f"{build}: expected one {kind}, got {len(found)}"
    return found[0]


def _ids(build: str) -> list[str]:
    return [f"{o['kind']}/{o['metadata']['name']}" for o in _render(BUILDS[build])]


ALL = [(build, i) for build in BUILDS for i in range(len(_render(BUILDS[build])))]


@pytest.mark.parametrize(("build", "index"), ALL, ids=[f"{b}:{_ids(b)[i]}" for b, i in ALL])
def test_every_rendered_object_validates_against_the_kubernetes_schemas(build: str, index: int) -> None:
    obj = _render(BUILDS[build])[index]
    if obj["apiVersion"].startswith("monitoring.coreos.com/"):
        with pytest.raises(kubernetes_validate.SchemaNotFoundError):
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        return  # checked against their CRDs' required fields below
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_the_validator_rejects_a_misspelt_field() -> None:
    """The schema check can fail: strict validation catches a typo in a probe."""
    deployment = yaml.safe_load(yaml.safe_dump(_one("base", "Deployment")))
    probe = deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    probe["periodSecond"] = probe.pop("periodSeconds")
    with pytest.raises(kubernetes_validate.ValidationError, match="periodSecond"):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


@pytest.mark.parametrize("build", list(BUILDS))
def test_every_build_holds_the_whole_deployment(build: str) -> None:
    kinds = sorted(o["kind"] for o in _render(BUILDS[build]))
    # One replica keeps its SQLite state on a claim; replicas share PostgreSQL and keep one running.
    state = ["PodDisruptionBudget"] if build == "overlay-ha" else ["PersistentVolumeClaim"]
    assert kinds == sorted(
        [
            "ConfigMap",
            "ConfigMap",
            "Deployment",
            "PrometheusRule",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
            *state,
        ]
    )


@pytest.mark.parametrize("build", list(BUILDS))
def test_the_prometheusrule_has_the_fields_its_crd_requires(build: str) -> None:
    rule = _one(build, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["name"]
    groups = rule["spec"]["groups"]
    names = [g["name"] for g in groups]
    assert all(names) and len(set(names)) == len(names), "group names are required and unique"
    for group in groups:
        assert DURATION.match(group.get("interval", "0"))
        for r in group["rules"]:
            assert isinstance(r["expr"], str | int) and str(r["expr"]).strip()
            assert ("alert" in r) != ("record" in r), f"exactly one of alert/record: {r}"
            assert DURATION.match(r.get("for", "0")), r.get("for")
            for field in ("labels", "annotations"):
                assert all(isinstance(v, str) for v in r.get(field, {}).values())


@pytest.mark.parametrize("build", list(BUILDS))
def test_the_prometheusrule_carries_exactly_the_promtool_tested_rules(build: str) -> None:
    assert _one(build, "PrometheusRule")["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


@pytest.mark.parametrize("build", list(BUILDS))
def test_the_servicemonitor_selects_the_service_and_scrapes_its_metrics_port(build: str) -> None:
    monitor, service = _one(build, "ServiceMonitor"), _one(build, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    selector = spec["selector"]["matchLabels"]  # `selector` is required by the CRD
    assert selector.items() <= service["metadata"]["labels"].items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert spec["endpoints"], "at least one endpoint"
    for endpoint in spec["endpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics"
        assert DURATION.match(endpoint["interval"]) and DURATION.match(endpoint["scrapeTimeout"])
    assert service["metadata"].get("namespace") == monitor["metadata"].get("namespace")


@pytest.mark.parametrize("build", list(BUILDS))
def test_the_service_routes_to_the_daemons_metrics_port(build: str) -> None:
    service, deployment = _one(build, "Service"), _one(build, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {p["name"] for p in container["ports"]} >= {p["targetPort"] for p in service["spec"]["ports"]}


def _container(build: str) -> dict[str, Any]:
    return _one(build, "Deployment")["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("build", list(BUILDS))
def test_probes_check_healthz_for_liveness_and_readyz_for_readiness(build: str) -> None:
    c = _container(build)
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("build", list(BUILDS))
def test_the_daemon_runs_non_root_read_only_with_requests_and_limits(build: str) -> None:
    pod = _one(build, "Deployment")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["automountServiceAccountToken"] is False
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert set(c["resources"]["requests"]) == {"cpu", "memory"}
    assert set(c["resources"]["limits"]) == {"cpu", "memory"}


@pytest.mark.parametrize("build", list(BUILDS))
def test_the_http_server_listens_on_all_interfaces_only_inside_the_pod(build: str) -> None:
    args = _container(build)["args"]
    assert args[0] == "run"
    assert "--http=0.0.0.0:9464" in args
    port = next(p for p in _container(build)["ports"] if p["name"] == "metrics")
    assert port["containerPort"] == 9464
    assert _one(build, "Service")["spec"]["type"] == "ClusterIP"


@pytest.mark.parametrize("build", list(BUILDS))
def test_policies_are_a_directory_mount_of_an_unhashed_configmap_so_they_reload_in_place(build: str) -> None:
    """kubelet updates ConfigMap volumes in place (never subPath mounts); an unhashed name keeps the
    pods on the same ConfigMap, so a policy change is a hot reload, not a rollout."""
    deployment = _one(build, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "policies")
    assert volume["configMap"]["name"] == "rerund-policies"
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "policies")
    assert "subPath" not in mount
    assert f"--policies={mount['mountPath']}" in pod["containers"][0]["args"]
    names = {o["metadata"]["name"] for o in _objects(build, "ConfigMap")}
    assert "rerund-policies" in names
    config = next(v for v in pod["volumes"] if v["name"] == "config")["configMap"]["name"]
    assert re.fullmatch(r"rerund-config-[a-z0-9]{10}", config), "settings changes roll the pods"
    assert config in names


@pytest.mark.parametrize("build", list(BUILDS))
def test_the_policies_configmap_holds_the_policy_library_and_it_loads(build: str, tmp_path: Path) -> None:
    """The base ships the library (policies/library), not the demo's policies: every library file,
    byte for byte, and nothing else; they load together as the daemon loads its directory."""
    from rerund.policy import load_policies

    data = next(o for o in _objects(build, "ConfigMap") if o["metadata"]["name"] == "rerund-policies")["data"]
    library = {f.name: f.read_text() for f in sorted(LIBRARY.glob("*.yaml"))}
    assert data == library, "run `python deploy/sync.py` and list every library file in the base"
    for name, text in data.items():
        (tmp_path / name).write_text(text)
    loaded = load_policies([tmp_path])
    assert [r.name for r in loaded.rules] == [r.name for r in load_policies([LIBRARY]).rules]
    assert "oom-more-memory" in {r.name for r in loaded.rules}


def test_a_kubelet_configmap_volume_loads_as_exactly_its_files_before_and_after_an_update(
    tmp_path: Path,
) -> None:
    """The kubelet's ``..data`` and timestamped directories must not be read as more policies."""
    from rerund.policy import load_policies

    text = (REPO / "policies" / "rerund.yaml").read_text()
    volume = KubeletConfigMapDir(tmp_path / "policies", {"rerund.yaml": text})
    before = load_policies([volume.path])
    assert list(before.sources) == [str(volume.path / "rerund.yaml")]
    volume.update({"rerund.yaml": text.replace("max_attempts: 3", "max_attempts: 4")})
    after = load_policies([volume.path])
    assert after.sources == before.sources
    assert sorted(p.name for p in volume.path.iterdir()) == [
        "..2026_11_25_00_00_00.000000002",
        "..data",
        "rerund.yaml",
    ]


@pytest.mark.parametrize("build", list(BUILDS))
def test_the_settings_configmap_is_a_valid_daemon_config(build: str, tmp_path: Path) -> None:
    """With the container's auth args (the client-credentials overlay's secret file is one)."""
    from rerund.cli import build_parser
    from rerund.cli.common import connection_overrides
    from rerund.runtime.settings import load_settings

    data = next(o for o in _objects(build, "ConfigMap") if o["metadata"]["name"].startswith("rerund-config"))
    (tmp_path / "rerund.yaml").write_text(data["data"]["rerund.yaml"])
    args = _container(build)["args"]
    parsed = build_parser().parse_args(_pod_files(build, tmp_path / "pod"))
    overrides = {**connection_overrides(parsed), "http": "0.0.0.0:9464"}
    settings = load_settings(tmp_path / "rerund.yaml", environ={}, overrides=overrides)
    settings.require_runnable()
    assert settings.scopes
    assert any(a.startswith("--config=/etc/rerund/config/") for a in args)


@pytest.mark.parametrize("build", [b for b in BUILDS if AUTH[b] == "api_key"])
def test_the_api_key_comes_from_a_secret_file_never_from_the_manifests(build: str) -> None:
    pod = _one(build, "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "api-key")
    assert volume["secret"]["secretName"] == "rerund-flyte-api-key"
    assert volume["secret"]["defaultMode"] == 0o400
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "api-key")
    assert f"--api-key-file={mount['mountPath']}/api-key" in pod["containers"][0]["args"]
    assert not _objects(build, "Secret"), "no secret values in the repository"
    rendered = yaml.safe_dump_all(_render(BUILDS[build]))
    assert "FLYTE_API_KEY" not in rendered


def test_the_client_secret_comes_from_a_secret_file_and_the_client_id_from_the_settings() -> None:
    build = "overlay-client-credentials"
    pod = _one(build, "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "client-secret")
    assert volume["secret"]["secretName"] == "rerund-flyte-client-secret"
    assert volume["secret"]["defaultMode"] == 0o400
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "client-secret")
    assert f"--client-secret-file={mount['mountPath']}/client-secret" in pod["containers"][0]["args"]
    assert not any(v["name"] == "api-key" for v in pod["volumes"])
    settings = next(
        o for o in _objects(build, "ConfigMap") if o["metadata"]["name"].startswith("rerund-config")
    )
    assert yaml.safe_load(settings["data"]["rerund.yaml"])["client_id"]
    assert not _objects(build, "Secret"), "no secret values in the repository"


def _pod_files(build: str, root: Path) -> list[str]:
    """Lay the Deployment's ConfigMap and Secret volumes out under ``root`` as the kubelet mounts
    them (a Secret's files hold a placeholder), and return the container's args with every mount
    path moved under ``root``."""
    pod = _one(build, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    configmaps = {o["metadata"]["name"]: o["data"] for o in _objects(build, "ConfigMap")}
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = sorted(container["volumeMounts"], key=lambda m: -len(m["mountPath"]))
    for mount in mounts:
        where = root / mount["mountPath"].lstrip("/")
        where.mkdir(parents=True, exist_ok=True)
        volume = volumes[mount["name"]]
        if "configMap" in volume and volume["configMap"]["name"] in configmaps:
            for key, text in configmaps[volume["configMap"]["name"]].items():
                (where / key).write_text(text)
        if "secret" in volume:
            for item in volume["secret"]["items"]:
                (where / item["path"]).write_text(f"placeholder {item['key']}\n")

    def moved(arg: str) -> str:
        flag, eq, value = arg.partition("=")
        mount = next((m["mountPath"] for m in mounts if value.startswith(m["mountPath"] + "/")), None)
        return arg if not eq or mount is None else f"{flag}={root / value.lstrip('/')}"

    return [moved(a) for a in container["args"]]


@pytest.mark.parametrize("build", list(BUILDS))
def test_each_build_authenticates_exactly_one_way_and_the_daemon_accepts_its_settings(
    build: str, tmp_path: Path
) -> None:
    """The container's own args, through `rerund run`'s own parser and settings loader, with the
    mounted files in place: the daemon would start (require_runnable), authenticating as the build
    says - the base no way, an overlay exactly one (never "more than one way to authenticate")."""
    from rerund.cli import build_parser
    from rerund.cli.common import connection_overrides
    from rerund.runtime.settings import load_settings

    args = build_parser().parse_args(_pod_files(build, tmp_path))
    settings = load_settings(
        args.config, environ={}, overrides={**connection_overrides(args), "policies": args.policies}
    )
    settings.require_runnable()
    assert settings.auth_mode == AUTH[build]


def test_the_client_credentials_overlay_refuses_an_api_key_added_on_top(tmp_path: Path) -> None:
    """The check the overlays are built to pass: a second way to authenticate is refused."""
    from rerund.cli import build_parser
    from rerund.cli.common import connection_overrides
    from rerund.errors import ConfigError
    from rerund.runtime.settings import load_settings

    argv = _pod_files("overlay-client-credentials", tmp_path)
    (tmp_path / "api-key").write_text("placeholder\n")
    args = build_parser().parse_args([*argv, f"--api-key-file={tmp_path / 'api-key'}"])
    settings = load_settings(args.config, environ={}, overrides=connection_overrides(args))
    with pytest.raises(ConfigError, match="more than one way to authenticate is configured"):
        settings.require_runnable()


def test_the_example_overlay_runs_one_replica_in_its_namespace() -> None:
    assert _one("base", "Deployment")["spec"]["replicas"] == 1
    deployment = _one("overlay-example", "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert {o["metadata"].get("namespace") for o in _objects("overlay-example")} == {"rerund"}
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example.com/platform/rerund:0.1.0"


def test_a_copied_overlay_with_its_own_policies_replaces_the_example_ones(tmp_path: Path) -> None:
    """What the overlay's comment tells users to do works: their policies replace the example's."""
    overlay = tmp_path / "deploy" / "kubernetes" / "overlays" / "mine"
    shutil.copytree(REPO / "deploy" / "kubernetes", tmp_path / "deploy" / "kubernetes")
    shutil.copytree(OVERLAY, overlay)
    (overlay / "policies").mkdir()
    (overlay / "policies" / "rerund.yaml").write_text("apiVersion: rerund/v1\npolicies: []\n")
    text = (overlay / "kustomization.yaml").read_text()
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "# - name: rerund-policies" in line)
    for i in range(start, start + 6):
        lines[i] = lines[i].replace("# ", "", 1)
    (overlay / "kustomization.yaml").write_text("\n".join(lines) + "\n")
    out = run(tool("kubectl"), "kustomize", str(overlay))
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    policies = next(d for d in docs if d["metadata"]["name"] == "rerund-policies")
    assert policies["data"] == {"rerund.yaml": "apiVersion: rerund/v1\npolicies: []\n"}


def _pod(build: str) -> dict[str, Any]:
    pod: dict[str, Any] = _one(build, "Deployment")["spec"]["template"]["spec"]
    return pod


@pytest.mark.parametrize("build", ["base", "overlay-example"])
def test_one_replica_keeps_its_sqlite_state_on_a_claim_and_is_replaced_not_rolled(build: str) -> None:
    deployment = _one(build, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # one writer of the volume
    claim = _one(build, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    volume = next(v for v in _pod(build)["volumes"] if v["name"] == "state")
    assert volume == {"name": "state", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}}
    mount = next(m for m in _container(build)["volumeMounts"] if m["name"] == "state")
    assert f"--state={mount['mountPath']}/rerund.db" in _container(build)["args"]


def test_the_ha_overlay_runs_replicas_on_a_postgres_url_from_a_secret_with_a_disruption_budget() -> None:
    deployment = _one("overlay-ha", "Deployment")
    assert 2 <= deployment["spec"]["replicas"] <= 3
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    c = _container("overlay-ha")
    assert not any(a.startswith("--state") for a in c["args"]), "a flag would override RERUND_STATE"
    env = {e["name"]: e["valueFrom"] for e in c["env"]}
    assert env["RERUND_STATE"] == {"secretKeyRef": {"name": "rerund-state", "key": "url"}}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}  # the leader's name
    assert not _objects("overlay-ha", "PersistentVolumeClaim")
    assert not any("persistentVolumeClaim" in v for v in _pod("overlay-ha")["volumes"])
    assert not _objects("overlay-ha", "Secret"), "no database password in the repository"
    pdb = _one("overlay-ha", "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert {o["metadata"].get("namespace") for o in _objects("overlay-ha")} == {"rerund"}


def test_the_ha_overlays_state_variable_is_read_as_a_postgres_url(tmp_path: Path) -> None:
    from rerund.core.stateurl import is_database_url
    from rerund.runtime.settings import load_settings

    data = next(
        o for o in _objects("overlay-ha", "ConfigMap") if o["metadata"]["name"].startswith("rerund-config")
    )
    (tmp_path / "rerund.yaml").write_text(data["data"]["rerund.yaml"])
    url = "postgresql://rerund:pw@postgres.example.svc:5432/rerund?sslmode=verify-full"
    settings = load_settings(tmp_path / "rerund.yaml", environ={"RERUND_STATE": url})
    assert settings.state == url and is_database_url(settings.state)
