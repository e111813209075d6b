"""deploy/Dockerfile, built and run for real: a private Docker daemon builds the image on a Debian
base made from Debian's archive (tests/deploy/image_support.py), then runs it with its own
entrypoint and command against the sandbox control plane on the host (host networking: the
container reaches the sandbox on 127.0.0.1, and the image's HEALTHCHECK asks 127.0.0.1:9464).

Checked: the daemon in the container reruns the sandbox's failures as the image's own policies
say (two transient failures recovered, a bad-input failure left alone), as the non-root uid
10001, with a read-only root filesystem, and Docker reports the HEALTHCHECK healthy.

Slow (a pip install of the whole dependency tree inside the build): run by ``make chaos``, which
runs ``make image-tools`` first. The base image is cached between runs (see image_support).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from deploy_support import DEPLOY, DOCKERFILE, REPO
from image_support import PrivateDocker, base_tarball, private_docker
from test_dockerfile import build_context

from daemon_support import free_port, http_get, parse_metrics, total, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

BASE_TAG = "rerund-test-base:debian-bookworm"
IMAGE_TAG = "rerund:test"
HTTP = "127.0.0.1:9464"  # the image's CMD (--http 0.0.0.0:9464) and HEALTHCHECK, on the host network

# Two runs fail twice with a connection reset and then succeed (the image's transient-network
# policy reruns them), one fails with bad input (never-retry-bad-input: no rerun).
WORKLOAD = {
    "project": "demo",
    "domain": "development",
    "tasks": {
        "train.fit": {
            "duration": "0.5s",
            "behaviour": ["fail", "fail", "succeed"],
            "error": {
                "kind": "SYSTEM",
                "code": "ConnectionResetError",
                "message": "ConnectionResetError: [Errno 104] Connection reset by peer",
            },
        },
        "report.render": {
            "duration": "0.5s",
            "behaviour": ["fail"],
            "error": {"kind": "USER", "code": "ValueError", "message": "ValueError: mixed types"},
        },
    },
    "runs": [{"task": "train.fit", "count": 2}, {"task": "report.render", "count": 1}],
}


def _timed(timings: dict[str, float], step: str, started: float) -> None:
    timings[step] = round(time.monotonic() - started, 1)


@pytest.fixture(scope="module")
def docker() -> Iterator[PrivateDocker]:
    with private_docker() as d:
        yield d


@pytest.fixture(scope="module")
def image(docker: PrivateDocker, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The image built from deploy/Dockerfile on the Debian base; its facts and the timings."""
    timings: dict[str, float] = {}
    started = time.monotonic()
    tarball = base_tarball()
    _timed(timings, "base_tarball_s", started)
    started = time.monotonic()
    with tarball.open("rb") as stream:
        subprocess.run(
            [docker.client, "import", "-", BASE_TAG],
            stdin=stream,
            env=docker.env,
            check=True,
            capture_output=True,
        )
    _timed(timings, "import_s", started)
    # The build context as Docker computes it from deploy/Dockerfile.dockerignore (the classic
    # builder reads only a root .dockerignore, so the context is staged from the same rules).
    context = tmp_path_factory.mktemp("context")
    for name in build_context(REPO, DEPLOY / "Dockerfile.dockerignore"):
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, context / name)
    shutil.copy2(DOCKERFILE, context / "Dockerfile")
    started = time.monotonic()
    docker.docker(
        "build", "--quiet", "--network", "host", "--build-arg", f"PYTHON_IMAGE={BASE_TAG}",
        "--tag", IMAGE_TAG, str(context),
    )  # fmt: skip
    _timed(timings, "build_s", started)
    inspect = json.loads(docker.docker("image", "inspect", IMAGE_TAG).stdout)[0]
    return {"inspect": inspect, "timings": timings, "size_mb": round(inspect["Size"] / 1e6)}


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[str]:
    """`rerund sandbox` on the host with WORKLOAD; its endpoint."""
    workload = tmp_path / "workload.yaml"
    workload.write_text(yaml.safe_dump(WORKLOAD))
    port = free_port()
    rerund = str(Path(sys.executable).parent / "rerund")
    proc = subprocess.Popen(
        [rerund, "sandbox", "--port", str(port), "--workload", str(workload)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            "the sandbox answers", lambda: http_get(endpoint + "/")[0] > 0 or proc.poll() is not None, 60
        )
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        yield endpoint
    finally:
        proc.kill()
        proc.wait()


def test_the_image_reruns_failures_as_a_non_root_user_on_a_read_only_root_and_reports_healthy(
    docker: PrivateDocker, image: dict[str, object], sandbox: str
) -> None:
    inspect = image["inspect"]
    assert isinstance(inspect, dict)
    config = inspect["Config"]
    assert config["Entrypoint"] == ["rerund"] and config["Cmd"][0] == "run"
    assert config["User"] == "10001:10001"
    assert config["Healthcheck"]["Test"][0] == "CMD"
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 9464)) == 0:
            pytest.fail(f"something already listens on {HTTP}: stop it (the container uses the host network)")
    started = time.monotonic()
    name = "rerund-image-test"
    # The image's own entrypoint and command; settings by RERUND_* env vars, as the Dockerfile says.
    docker.docker(
        "run", "--detach", "--name", name, "--network", "host", "--read-only",
        "--env", f"RERUND_ENDPOINT={sandbox}", "--env", "RERUND_ORG=sandbox",
        "--env", "RERUND_SCOPES=demo/development",
        IMAGE_TAG,
    )  # fmt: skip
    try:

        def metrics() -> dict:
            status, body = http_get(f"http://{HTTP}/metrics")
            return parse_metrics(body) if status == 200 else {}

        wait_until(
            "the daemon in the container recovers both transient failures",
            lambda: (
                total(metrics(), "rerund_lineages_recovered_total", policy="transient-network") >= 2
                or docker.docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip() != "true"
            ),
            240,
        )
        logs = docker.docker("logs", name).stdout + docker.docker("logs", name).stderr
        samples = metrics()
        assert total(samples, "rerund_lineages_recovered_total", policy="transient-network") == 2, logs[
            -4000:
        ]
        assert total(samples, "rerund_reruns_issued_total", policy="transient-network") == 4, logs[-4000:]
        assert total(samples, "rerund_reruns_issued_total", policy="never-retry-bad-input") == 0
        converged = time.monotonic() - started

        uid = docker.docker("exec", name, "sh", "-c", "id -u; grep ^Uid: /proc/1/status").stdout.split()
        assert uid[0] == "10001" and uid[1:3] == ["Uid:", "10001"], uid
        assert docker.docker("inspect", "-f", "{{.HostConfig.ReadonlyRootfs}}", name).stdout.strip() == "true"
        wrote = docker.docker("exec", name, "touch", "/opt/rerund/written", check=False)
        assert wrote.returncode != 0 and "Read-only file system" in wrote.stderr, wrote.stderr
        wait_until(
            "Docker runs the image's HEALTHCHECK and reports the container healthy",
            lambda: (
                docker.docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip()
                in ("healthy", "unhealthy")
            ),
            120,
        )
        health = json.loads(docker.docker("inspect", "-f", "{{json .State.Health}}", name).stdout)
        assert health["Status"] == "healthy", health
        assert health["Log"] and health["Log"][-1]["ExitCode"] == 0
        timings = {**image["timings"], "converged_s": round(converged, 1)}  # type: ignore[dict-item]
        print(f"image {IMAGE_TAG}: {image['size_mb']} MB; timings {timings}")
    finally:
        docker.docker("rm", "--force", name, check=False)
