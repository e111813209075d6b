"""deploy/Dockerfile: linted by the real hadolint, and its build steps exercised without a Docker
engine (none runs here): the build context is computed from Dockerfile.dockerignore, the build
stage's COPY steps are replayed into a staging directory, and the project is built and installed
from exactly those files by the same ``pip install`` of the same pyproject as ``make run``."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from deploy_support import DEPLOY, DOCKERFILE, REPO, run, tool


@dataclass(frozen=True)
class Step:
    instruction: str
    args: str


def parse_dockerfile(text: str) -> list[list[Step]]:
    """The Dockerfile's stages, each a list of steps (comments dropped, continuations joined)."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if pending and line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[list[Step]] = []
    for entry in logical:
        instruction, _, args = entry.strip().partition(" ")
        step = Step(instruction.upper(), " ".join(args.split()))
        if step.instruction == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(step)
    return stages


def _stages() -> list[list[Step]]:
    return parse_dockerfile(DOCKERFILE.read_text())


def _steps(stage: list[Step], instruction: str) -> list[Step]:
    return [s for s in stage if s.instruction == instruction]


def build_context(root: Path, ignore_file: Path) -> set[str]:
    """The files (posix, relative) Docker sends as context, by .dockerignore rules: patterns are
    matched against a path and each of its parent directories; the last matching rule wins."""
    rules = []
    for line in ignore_file.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        rules.append((negate, line.lstrip("!").strip("/")))
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    kept = set()
    for name in filter(None, files):
        parts = name.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        excluded = False
        for negate, pattern in rules:
            regex = fnmatch.translate(pattern).replace(".*", "[^/]*").replace("[^/]*[^/]*", ".*")
            if pattern.startswith("**/"):
                regex = "(.*/)?" + fnmatch.translate(pattern[3:])
            if any(re.fullmatch(regex, p) for p in prefixes):
                excluded = not negate
        if not excluded and (root / name).is_file():
            kept.add(name)
    return kept


def copy_plan(context: set[str], src: str, dest: str) -> list[tuple[str, str]]:
    """Docker COPY semantics: (context file, destination path relative to WORKDIR) pairs.
    A directory source copies its contents into dest; a file goes to dest/ or becomes dest."""
    if src in context:
        return [(src, f"{dest}{Path(src).name}" if dest.endswith("/") else dest)]
    below = sorted(n for n in context if n.startswith(src + "/"))
    return [(n, str(Path(dest) / Path(n).relative_to(src))) for n in below]


def test_hadolint_finds_nothing_to_fix() -> None:
    out = run(tool("hadolint"), "--no-color", str(DOCKERFILE), check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout == ""


def test_hadolint_does_flag_a_sloppy_dockerfile(tmp_path: Path) -> None:
    """The lint can fail: an unpinned base image and root-run apt are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    out = run(tool("hadolint"), "--no-color", str(bad), check=False)
    assert out.returncode == 1
    assert "DL3007" in out.stdout  # using latest
    assert "DL3008" in out.stdout  # pin versions in apt-get install


def test_the_base_image_is_pinned_by_exact_python_and_debian_version() -> None:
    text = DOCKERFILE.read_text()
    match = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert match, "the base image is one ARG used by every stage"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", match.group(1))
    assert [stage[0].args.split()[0] for stage in _stages()] == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]


def test_the_image_runs_as_a_fixed_non_root_user_matching_kubernetes() -> None:
    final = _stages()[-1]
    users = _steps(final, "USER")
    assert users and users[-1].args == "10001:10001"
    assert final.index(users[-1]) > max(final.index(s) for s in _steps(final, "RUN"))


def test_the_healthcheck_asks_healthz_with_the_standard_library() -> None:
    check = _steps(_stages()[-1], "HEALTHCHECK")
    assert len(check) == 1
    options, _, command = check[0].args.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"]
    assert "urllib.request" in argv[2] and "http://127.0.0.1:9464/healthz" in argv[2]


def test_the_healthcheck_command_passes_against_a_live_healthz_and_fails_without_one() -> None:
    """The HEALTHCHECK's exact Python command, pointed at a real /healthz on a free port."""
    import http.server
    import threading

    class Healthz(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()
            self.wfile.write(b"ok\n")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Healthz)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        code = json.loads(_steps(_stages()[-1], "HEALTHCHECK")[0].args.partition("CMD ")[2])[2]
        live = code.replace(":9464/", f":{server.server_address[1]}/")
        assert subprocess.run([sys.executable, "-c", live], capture_output=True).returncode == 0
    finally:
        server.shutdown()
        server.server_close()
    dead = subprocess.run([sys.executable, "-c", live], capture_output=True)
    assert dead.returncode != 0


def test_policies_and_state_are_volumes_and_the_api_key_is_not_baked_in() -> None:
    final = _stages()[-1]
    volumes = json.loads(_steps(final, "VOLUME")[0].args)
    assert volumes == ["/etc/rerund/policies", "/var/lib/rerund"]
    text = DOCKERFILE.read_text()
    for step in _steps(final, "ENV") + _steps(final, "ARG"):
        assert "API_KEY" not in step.args
    assert "FLYTE_API_KEY" in text and "RERUND_API_KEY_FILE" in text  # documented, not set
    cmd = json.loads(_steps(final, "CMD")[0].args)
    assert cmd[:3] == ["run", "--policies", "/etc/rerund/policies"]
    assert json.loads(_steps(final, "ENTRYPOINT")[0].args) == ["rerund"]


def test_the_context_keeps_out_secrets_and_local_state() -> None:
    context = build_context(REPO, DEPLOY / "Dockerfile.dockerignore")
    assert "pyproject.toml" in context and "daemon/rerund/cli/__init__.py" in context
    assert not {n for n in context if n.startswith((".venv/", ".git/", "tests/", "deploy/"))}
    assert not {n for n in context if n.endswith((".db", ".pyc")) or "__pycache__" in n}


def test_every_copy_source_is_in_the_build_context() -> None:
    context = build_context(REPO, DEPLOY / "Dockerfile.dockerignore")
    for stage in _stages():
        for step in _steps(stage, "COPY"):
            if step.args.startswith("--from="):
                continue
            *sources, _ = shlex.split(step.args)
            for source in sources:
                src = source.rstrip("/")
                assert src in context or any(n.startswith(src + "/") for n in context), step


def test_the_build_stage_installs_the_project_like_make_run() -> None:
    """Same install path: pip installs the pyproject at the context root under constraints.txt.

    (make run's: `pip install -c constraints.txt -e '.[dev]'`; the image's drops the editable flag
    and dev extras.)"""
    build = _stages()[0]
    installs = [s for s in _steps(build, "RUN") if "pip install" in s.args]
    assert len(installs) == 1
    argv = shlex.split(installs[0].args)
    assert argv[-1] == "."
    assert argv[argv.index("pip") + 1] == "install"
    assert argv[argv.index("-c") + 1] == "constraints.txt"
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"python -m pip install --quiet -c constraints\.txt -e '\.\[dev\]'", makefile)
    copies = [shlex.split(s.args) for s in _steps(build, "COPY")]
    # pyproject's readme is part of the build; constraints.txt holds the exact versions
    assert ["pyproject.toml", "README.md", "constraints.txt", "./"] in copies


def test_the_build_stage_builds_and_installs_a_working_rerund_from_only_its_copied_files(
    tmp_path: Path,
) -> None:
    """Replay the build stage: its COPY steps from the computed context into a staging WORKDIR,
    then its pip install of `.` (as a wheel build + install into a fresh venv whose dependencies
    come from the project venv, where the same pyproject pinned them). rerund must run."""
    context = build_context(REPO, DEPLOY / "Dockerfile.dockerignore")
    build = _stages()[0]
    workdir = Path(_steps(build, "WORKDIR")[0].args)
    staging = tmp_path / "rootfs"
    for step in _steps(build, "COPY"):
        *sources, dest = shlex.split(step.args)
        for source in sources:
            for name, inside in copy_plan(context, source.rstrip("/"), dest):
                out = staging / (workdir / inside).relative_to("/")
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, out)
    src_dir = staging / workdir.relative_to("/")
    assert (src_dir / "pyproject.toml").read_bytes() == (REPO / "pyproject.toml").read_bytes()
    wheels = tmp_path / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(src_dir))
    wheel = next(wheels.glob("rerund-*.whl"))
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(venv / "bin" / "python"),
        "install",
        "--quiet",
        "--no-deps",
        str(wheel),
    )
    where = run(str(venv / "bin" / "python"), "-c", "import rerund; print(rerund.__file__)").stdout.strip()
    assert where.startswith(str(site)), "rerund must come from the wheel built from the copied files"
    assert (site / "rerund" / "py.typed").exists()
    helped = run(str(venv / "bin" / "rerund"), "--help")
    assert "usage: rerund" in helped.stdout
    checked = run(sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "check", check=False)
    assert checked.returncode == 0, checked.stdout  # every pinned dependency is present
