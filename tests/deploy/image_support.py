"""A private Docker daemon and a Debian base image made from Debian's archive, for the test that
builds deploy/Dockerfile and runs the image for real (tests/deploy/test_image.py).

No container registry is reachable where these tests run, so ``python:3.11-slim`` cannot be
pulled. The base comes from Debian's archive instead: ``debootstrap`` makes a bookworm rootfs with
Python 3.11 (``python3``, ``python3-venv``, ``python-is-python3``), ``docker import`` turns it into
an image, and the Dockerfile's ``PYTHON_IMAGE`` build argument selects it. Package downloads pass
an intercepting TLS proxy here, so the machine's CA bundle goes into the base (and ``/etc/pip.conf``
points pip at it, as this machine's pip is configured). The rootfs tarball is cached under
``~/.cache/rerund-image`` (``RERUND_IMAGE_CACHE``), keyed by the suite, the packages and the CA
bundle, so reruns skip debootstrap.

``PrivateDocker`` runs Debian's ``dockerd`` with its own data root, exec root, pid file and
socket under a fresh temporary directory: it touches no system Docker and leaves nothing behind.
It has no bridge and no iptables rules (``--bridge=none``): builds and containers use the host's
network. BuildKit is off (``DOCKER_BUILDKIT=0``): its frontend image cannot be pulled here.

The tools are installed by ``make image-tools`` (``make chaos`` runs it first); a missing tool is
a clear failure naming that command, never a skip.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
CA_BUNDLE = Path(os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"))
CACHE = Path(os.environ.get("RERUND_IMAGE_CACHE", Path.home() / ".cache" / "rerund-image"))


def image_tool(name: str) -> str:
    """A tool of ``make image-tools`` (Debian's docker.io and debootstrap), from PATH or sbin."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        pytest.fail(f"{name} is not installed: run `make image-tools` (make chaos does it first)")
    return found


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("dockerd and debootstrap need root: run make chaos as root (or under sudo)")


def base_tarball() -> Path:
    """The cached rootfs tarball of the Debian base (made by debootstrap on the first call)."""
    key = hashlib.sha256("\n".join([SUITE, MIRROR, *PACKAGES]).encode() + CA_BUNDLE.read_bytes()).hexdigest()[
        :16
    ]
    tarball = CACHE / f"debian-{SUITE}-python3-{key}.tar"
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs at once make it once
        if tarball.exists():
            return tarball
        rootfs = CACHE / f"rootfs-{key}"
        shutil.rmtree(rootfs, ignore_errors=True)
        include = ",".join(PACKAGES)
        _run(
            image_tool("debootstrap"), "--variant=minbase", f"--include={include}", SUITE, str(rootfs), MIRROR
        )
        # The machine's CA bundle (with the intercepting proxy's CA) for pip inside the build.
        shutil.copyfile(CA_BUNDLE, rootfs / "etc" / "ssl" / "certs" / "ca-certificates.crt")
        (rootfs / "etc" / "pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / cache).glob("*"):
                if entry.is_file():
                    entry.unlink()
        partial = tarball.with_suffix(".partial")
        _run("tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), ".")
        partial.rename(tarball)
        shutil.rmtree(rootfs, ignore_errors=True)
    return tarball


def _run(*argv: str, timeout: float = 900, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(argv)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc.stdout


class PrivateDocker:
    """Debian's dockerd on a socket of its own, with data and exec roots under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "docker.sock"
        dockerd = image_tool("dockerd")
        # The client of the same package (docker.io's /usr/bin/docker; a newer docker CLI earlier
        # on PATH deprecates the classic builder).
        same = [p for p in (Path(dockerd).parent / "docker", Path("/usr/bin/docker")) if p.exists()]
        self.client = str(same[0]) if same else image_tool("docker")
        self.log = root / "dockerd.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    *(dockerd, "--data-root", str(root / "data"), "--exec-root", str(root / "exec")),
                    *("--pidfile", str(root / "docker.pid"), "--host", f"unix://{self.socket}"),
                    *("--bridge=none", "--iptables=false", "--ip6tables=false"),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 90
        while self.docker("version", check=False).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"dockerd did not start:\n{self.log.read_text()[-4000:]}")
            time.sleep(0.5)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": f"unix://{self.socket}", "DOCKER_BUILDKIT": "0"}

    def docker(
        self, *args: str, check: bool = True, timeout: float = 900
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.client, *args], capture_output=True, text=True, timeout=timeout, env=self.env
        )
        if check and proc.returncode != 0:
            out = f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
            pytest.fail(f"docker {' '.join(args)} exited {proc.returncode}\n{out}")
        return proc

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def private_docker() -> Iterator[PrivateDocker]:
    """A PrivateDocker under a fresh short temporary directory (unix socket paths are short),
    stopped and removed afterwards."""
    require_root()
    root = Path(tempfile.mkdtemp(prefix="rerund-docker-"))
    docker = PrivateDocker(root)
    try:
        yield docker
    finally:
        docker.stop()
        # dockerd leaves its default network namespace (exec-root/netns/default) mounted.
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(f"{root}/")), key=len, reverse=True):
            subprocess.run(["umount", mount], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)
