"""The manifests mount what a production connection needs: the API key Secret (see
test_kubernetes_manifests) and, optionally, the CA of a private control plane — and a settings
file that points ca_cert_file into that mount loads, before and after the kubelet swaps in a
rotated CA."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import BASE, OVERLAY, KubeletConfigMapDir, run, tool

from rerund.runtime.settings import load_settings
from rerund.sandbox.tls import ensure_tls

BUILDS = {"base": BASE, "overlay-example": OVERLAY}
CA_DIR = "/etc/rerund/ca"


@cache
def _pod(build: str) -> dict[str, Any]:
    out = run(tool("kubectl"), "kustomize", str(BUILDS[build]))
    deployment = next(d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "Deployment")
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


@pytest.mark.parametrize("build", list(BUILDS))
def test_the_ca_of_a_private_control_plane_is_an_optional_read_only_directory_mount(build: str) -> None:
    pod = _pod(build)
    volume = next(v for v in pod["volumes"] if v["name"] == "flyte-ca")
    assert volume["configMap"]["name"] == "rerund-flyte-ca"
    assert volume["configMap"]["optional"] is True  # a public certificate needs no CA
    assert volume["configMap"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "flyte-ca")
    assert mount == {"name": "flyte-ca", "mountPath": CA_DIR, "readOnly": True}  # no subPath


def test_the_example_settings_show_the_ca_setting_for_that_mount() -> None:
    text = (OVERLAY / "config" / "rerund.yaml").read_text()
    assert f"# ca_cert_file: {CA_DIR}/ca.crt" in text


def test_settings_pointing_into_the_ca_mount_load_before_and_after_a_rotation(tmp_path: Path) -> None:
    first = ensure_tls(tmp_path / "ca1").ca_cert.read_text()
    second = ensure_tls(tmp_path / "ca2").ca_cert.read_text()
    mount = KubeletConfigMapDir(tmp_path / "mount", {"ca.crt": first})
    text = (OVERLAY / "config" / "rerund.yaml").read_text().replace("# ca_cert_file:", "ca_cert_file:")
    config = tmp_path / "rerund.yaml"
    config.write_text(text.replace(CA_DIR, str(mount.path)))

    settings = load_settings(config, environ={"FLYTE_API_KEY": "a2V5"})
    settings.require_runnable()
    assert settings.ca_cert_file is not None and settings.ca_cert_file.read_text() == first
    mount.update({"ca.crt": second})
    settings.require_runnable()
    assert settings.ca_cert_file.read_text() == second
