"""Start a sandbox in a test: ``start_sandbox``, ``SandboxHandle``, ``flyte_init`` and the
pytest fixtures ``sandbox`` and ``sandbox_factory``.

Register the fixtures with ``pytest_plugins = ["rerund.sandbox.testing"]`` in a conftest::

    def test_reruns_recover(sandbox_factory):
        sb = sandbox_factory(workload={"tasks": {"t": {"behaviour": ["fail", "succeed"]}}}, time_scale=0.01)
        flyte_init(sb)
        [name] = sb.launch(task="t")
        sb.wait_idle()

The sandbox listens on 127.0.0.1 on a free port, serves from its own thread, and is stopped
when the ``with`` block (or the test) ends.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from rerund.clock import utcnow
from rerund.sandbox.auth import AuthState
from rerund.sandbox.engine import run_spec_of
from rerund.sandbox.profiles import UNION, Profile, profile_named
from rerund.sandbox.server import Sandbox, SandboxThread, bind_socket, run_snapshot
from rerund.sandbox.service import Faults
from rerund.sandbox.tls import TlsFiles, ensure_tls
from rerund.sandbox.workload import RunBatch, Workload, load_workload, outage_from_json, workload_from_dict

__all__ = ["SandboxHandle", "flyte_init", "sandbox", "sandbox_factory", "start_sandbox"]

_TERMINAL = {"SUCCEEDED", "FAILED", "ABORTED", "TIMED_OUT", "RECOVERED"}


def _workload(
    workload: str | Path | Mapping[str, Any] | Workload | None, project: str, domain: str
) -> Workload:
    if workload is None:
        return Workload(project=project, domain=domain)
    if isinstance(workload, Workload):
        return workload
    if isinstance(workload, Mapping):
        data = {"project": project, "domain": domain, **workload}
        return workload_from_dict(data)
    return load_workload(workload)


class SandboxHandle:
    """A running sandbox (see the module docstring); thread-safe from the test thread."""

    def __init__(
        self,
        workload: Workload,
        *,
        db: str | Path,
        org: str,
        time_scale: float,
        faults: Faults | None = None,
        seed: int | None = None,
        profile: Profile = UNION,
        auth: bool = False,
        tls: bool | Path = False,
        token_ttl: float = 3600.0,
        rate_limit: float = 0.0,
    ) -> None:
        self.profile = profile
        self._workload = workload
        self._db = db
        self.org = org
        self.project = workload.project
        self.domain = workload.domain
        self._time_scale = time_scale
        self._seed = seed
        self._faults = faults
        self._port = 0
        self._thread: SandboxThread | None = None
        self.sandbox: Sandbox | None = None
        self._rate_limit = rate_limit
        self._secrets_dir: tempfile.TemporaryDirectory[str] | None = None
        if auth or tls is True:
            self._secrets_dir = tempfile.TemporaryDirectory(prefix="rerund-sandbox-")
        self.tls: TlsFiles | None = None
        if tls:
            assert self._secrets_dir is not None or isinstance(tls, Path)
            self.tls = ensure_tls(tls if isinstance(tls, Path) else Path(self._secrets_dir.name) / "tls")  # type: ignore[union-attr]
        self.auth: AuthState | None = None
        if auth:
            assert self._secrets_dir is not None
            secrets_dir = Path(self._secrets_dir.name)
            self.auth = AuthState(
                org=org,
                token_ttl_s=token_ttl,
                key_file=secrets_dir / "api.key",
                admin_file=secrets_dir / "api.key.admin",
            )
            self.auth.mint_key()
            self.auth.write_admin_token()

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self._port}"

    @property
    def key_file(self) -> Path:
        """The file the sandbox writes its API key to (``auth=True``)."""
        assert self.auth is not None and self.auth.key_file is not None, "the sandbox runs without auth"
        return self.auth.key_file

    @property
    def api_key(self) -> str:
        """The current API key (read from ``key_file``; tests only)."""
        return self.key_file.read_text(encoding="utf-8").strip()

    @property
    def admin_token_file(self) -> Path:
        """The file holding the admin token ``/_sandbox/`` needs (``auth=True``)."""
        assert self.auth is not None and self.auth.admin_file is not None, "the sandbox runs without auth"
        return self.auth.admin_file

    def admin_headers(self) -> dict[str, str]:
        """The headers an HTTP call of the admin API (``/_sandbox/``) needs: JSON, and with
        ``auth=True`` the admin token."""
        headers = {"content-type": "application/json"}
        if self.auth is not None:
            token = self.admin_token_file.read_text(encoding="utf-8").strip()
            headers["authorization"] = f"Bearer {token}"
        return headers

    @property
    def ca_cert(self) -> Path:
        assert self.tls is not None, "the sandbox runs without TLS"
        return self.tls.ca_cert

    def revoke(self, *, mint: bool = False) -> None:
        """Revoke every token and the secret; with ``mint`` write a new key to ``key_file``."""

        def go(sb: Sandbox) -> None:
            assert sb.auth is not None
            sb.auth.revoke_all()
            if mint:
                sb.auth.mint_key()

        self._call(go)

    @property
    def port(self) -> int:
        return self._port

    def start(self) -> SandboxHandle:
        sock = bind_socket("127.0.0.1", self._port)
        self._port = sock.getsockname()[1]
        faults = self.sandbox.faults if self.sandbox is not None else self._faults
        self.sandbox = Sandbox(
            self._workload,
            db=self._db,
            org=self.org,
            time_scale=self._time_scale,
            faults=faults,
            seed=self._seed,
            profile=self.profile,
            auth=self.auth,
            tls=self.tls,
            rate_limit=self.sandbox.ratelimit.rate if self.sandbox is not None else self._rate_limit,
        )
        self._thread = SandboxThread(self.sandbox, sock)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread = None

    def close(self) -> None:
        """Stop, and remove the generated key and TLS files."""
        self.stop()
        if self._secrets_dir is not None:
            self._secrets_dir.cleanup()
            self._secrets_dir = None

    def restart(self, *, time_scale: float | None = None) -> None:
        """Stop and start again on the same port and database (runs in a ``:memory:`` sandbox
        are lost; with a file database they survive and non-terminal runs resume, each
        execution starting its duration again). ``time_scale`` changes the speed from now on."""
        self.stop()
        if time_scale is not None:
            self._time_scale = time_scale
        deadline = time.monotonic() + 10
        while True:
            try:
                self.start()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _call(self, fn: Callable[[Sandbox], Any]) -> Any:
        assert self._thread is not None and self.sandbox is not None, "the sandbox is not running"
        sb = self.sandbox
        return self._thread.call(lambda: fn(sb))

    def launch(
        self,
        task: str = "train.fit",
        count: int = 1,
        labels: Mapping[str, str] | None = None,
        inputs: Mapping[str, Any] | None = None,
        project: str | None = None,
        domain: str | None = None,
        name: str | None = None,
        envs: Mapping[str, str] | None = None,
        spec: Mapping[str, Any] | None = None,
        version: str | None = None,
        rerun_of: str | None = None,
    ) -> list[str]:
        """Start ``count`` runs of workload task ``task`` (its ``version``, default the latest);
        returns their names. ``spec`` takes the RunSpec keys of a workload run (``env``,
        ``queue``, ``interruptible``, ...); ``rerun_of`` names the run they rerun (the RunSpec
        relation the SDK sets on a rerun, type RERUN)."""
        run_spec = run_spec_of(RunBatch.model_validate({"task": task, **spec})) if spec else None
        if rerun_of is not None:
            from flyteidl2.common import identifier_pb2
            from flyteidl2.common import run_pb2 as common_run_pb2
            from flyteidl2.task import run_pb2

            run_spec = run_spec or run_pb2.RunSpec()
            run_spec.relation.related_to.CopyFrom(
                identifier_pb2.RunIdentifier(
                    org=self.org, project=project or self.project, domain=domain or self.domain, name=rerun_of
                )
            )
            run_spec.relation.relation_type = common_run_pb2.RELATION_TYPE_RERUN

        def go(sb: Sandbox) -> list[str]:
            assert sb.engine is not None
            return sb.engine.launch(
                task,
                count=count,
                labels=labels,
                envs=envs,
                inputs=inputs,
                project=project,
                domain=domain,
                name=name,
                run_spec=run_spec,
                version=version,
            )

        result: list[str] = self._call(go)
        return result

    def deploy(self, task: str, version: str, **fields: Any) -> dict[str, Any]:
        """Deploy version ``version`` of ``task`` (fields as a workload ``versions:`` entry),
        as ``POST /_sandbox/tasks`` does; returns what was deployed."""

        def go(sb: Sandbox) -> dict[str, Any]:
            assert sb.engine is not None
            d = sb.engine.catalog.deploy({"task": task, "version": version, **fields})
            return {"task": d.task, "version": d.version, "deployed_at": d.deployed_at.isoformat()}

        result: dict[str, Any] = self._call(go)
        return result

    def outage(self, tasks: list[str], for_: str, **fields: Any) -> dict[str, Any]:
        """Start an outage of ``tasks`` (glob patterns) for ``for_`` (``after``, ``error`` as a
        workload ``outages:`` entry), as ``POST /_sandbox/outages`` does; returns it, placed
        (``starts_at``, ``ends_at``)."""

        def go(sb: Sandbox) -> dict[str, Any]:
            assert sb.engine is not None
            outage = outage_from_json({"tasks": tasks, "for": for_, **fields}, sb.workload.tasks)
            return sb.engine.add_outage(outage, utcnow()).to_json()

        result: dict[str, Any] = self._call(go)
        return result

    def tasks(self) -> list[dict[str, Any]]:
        """The deployed task versions (``GET /_sandbox/tasks``)."""
        result: list[dict[str, Any]] = self._call(
            lambda sb: sb.engine.catalog.snapshot() if sb.engine else []
        )
        return result

    def set_faults(
        self,
        unavailable: float | None = None,
        latency_s: float | None = None,
        drop_streams_after: int | None = None,
        rate_limit: float | str | None = None,
        db_errors: float | None = None,
    ) -> None:
        changes: dict[str, Any] = {}
        if db_errors is not None:
            changes["db_errors"] = db_errors
        if rate_limit is not None:
            changes["rate_limit"] = rate_limit
        if unavailable is not None:
            changes["unavailable"] = unavailable
        if latency_s is not None:
            changes["latency_s"] = latency_s
        if drop_streams_after is not None:
            changes["drop_streams_after"] = drop_streams_after
        self._call(lambda sb: sb.set_faults(**changes))

    def lose_data(self, name: str, project: str | None = None, domain: str | None = None) -> None:
        """The input and output blobs of run ``name`` are gone from storage (retention, a bucket
        cleaned up): GetActionData answers as the profile says (``missing_data_empty``)."""

        def go(sb: Sandbox) -> None:
            assert sb.store is not None
            sb.store.lost_data.add((sb.org, project or self.project, domain or self.domain, name))

        self._call(go)

    def forget(self, name: str) -> None:
        """Run ``name``'s row is deleted from the database by hand (the open-source service
        deletes no run): reads of it answer NOT_FOUND and ListRuns no longer lists it."""

        def go(sb: Sandbox) -> None:
            assert sb.store is not None
            sb.store.gone.add((sb.org, self.project, self.domain, name))

        self._call(go)

    def request_counts(self) -> dict[str, int]:
        """RPCs served so far by method name, e.g. ``{"CreateRun": 3, "ListRuns": 12}``."""
        counts: dict[str, int] = self._call(lambda sb: dict(sb.stats.counts))
        return counts

    def request_counts_by_run(self) -> dict[str, dict[str, int]]:
        """Unary RPCs served so far per run and method, e.g. ``{"r1": {"GetRunDetails": 2}}``
        (see ``RunRequestCounts``)."""
        counts: dict[str, dict[str, int]] = self._call(lambda sb: sb.run_counts.as_json())
        return counts

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call(lambda sb: sb.stats_json())
        return result

    def runs(self, project: str | None = None, domain: str | None = None) -> list[dict[str, Any]]:
        """Snapshots of the runs (oldest first), optionally of one project/domain."""

        def go(sb: Sandbox) -> list[dict[str, Any]]:
            assert sb.store is not None
            out = []
            for r in sorted(sb.store.runs.values(), key=lambda r: (r.created_at, r.name)):
                if project is not None and r.project != project:
                    continue
                if domain is not None and r.domain != domain:
                    continue
                out.append(run_snapshot(r, profile=sb.profile))
            return out

        result: list[dict[str, Any]] = self._call(go)
        return result

    def run(self, name: str) -> dict[str, Any]:
        """The snapshot of one run by name (any project); KeyError if there is none."""
        for r in self.runs():
            if r["name"] == name:
                return r
        raise KeyError(f"no run named {name!r} in the sandbox")

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until no run is executing and no arrival schedule is pending."""
        deadline = time.monotonic() + timeout
        while True:
            busy = self._call(lambda sb: sb.engine is not None and sb.engine.busy())
            if not busy:
                return
            if time.monotonic() > deadline:
                pending = [r["name"] for r in self.runs() if r["phase"] not in _TERMINAL]
                raise TimeoutError(f"sandbox still busy after {timeout}s; non-terminal runs: {pending[:20]}")
            time.sleep(0.01)

    def wait_for(self, name: str, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until run ``name`` is terminal and return its snapshot."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(KeyError):
                snap = self.run(name)
                if snap["phase"] in _TERMINAL:
                    return snap
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {name!r} is not terminal after {timeout}s")
            time.sleep(0.01)


@contextlib.contextmanager
def start_sandbox(
    workload: str | Path | Mapping[str, Any] | Workload | None = None,
    *,
    db: str | Path = ":memory:",
    org: str = "sandbox",
    project: str = "demo",
    domain: str = "development",
    time_scale: float = 1.0,
    faults: Faults | None = None,
    seed: int | None = None,
    profile: str | Profile = "union",
    auth: bool = False,
    tls: bool | Path = False,
    token_ttl: float = 3600.0,
    rate_limit: float = 0.0,
) -> Iterator[SandboxHandle]:
    """Start a sandbox on 127.0.0.1 (free port) in a thread; stop it when the block ends.

    ``workload`` is None (no tasks), a path to a workload file, a mapping in the file's shape
    (``project``/``domain`` default to the arguments) or a ``Workload``. ``profile`` is
    ``"union"``, ``"oss"`` or a ``Profile`` (e.g. ``OSS.with_error_delay(0.2)``). ``auth`` requires
    bearer tokens (the key is in ``handle.key_file``), ``tls`` serves HTTPS (CA in
    ``handle.ca_cert``; a Path keeps the files there), ``rate_limit`` is RPCs per second.
    """
    handle = SandboxHandle(
        _workload(workload, project, domain),
        db=db,
        org=org,
        time_scale=time_scale,
        faults=faults,
        seed=seed,
        profile=profile_named(profile) if isinstance(profile, str) else profile,
        auth=auth,
        tls=tls,
        token_ttl=token_ttl,
        rate_limit=rate_limit,
    )
    try:
        handle.start()
        yield handle
    finally:
        handle.close()


def flyte_init(sb: SandboxHandle, project: str | None = None, domain: str | None = None) -> None:
    """Point the flyte SDK at the sandbox (``flyte.init(endpoint=..., insecure=True, ...)``;
    with auth the API key's client credentials, with TLS the sandbox's CA)."""
    import flyte

    # The SDK's private touches live in the adapter's fence (the token client's trust, the key).
    from rerund.adapters.flyte import sdk_internals

    where = {"org": sb.org, "project": project or sb.project, "domain": domain or sb.domain}
    if sb.auth is None and sb.tls is None:
        flyte.init(endpoint=sb.endpoint, insecure=True, **where)
        return
    kwargs: dict[str, Any] = {"endpoint": sb.endpoint, "insecure": False, "disable_keyring": True}
    if sb.tls is not None:
        kwargs["ca_cert_file_path"] = str(sb.tls.ca_cert)
    if sb.auth is not None:
        _, client_id, secret, _ = sdk_internals.decode_api_key(sb.api_key)
        kwargs.update(auth_type="ClientSecret", client_id=client_id, client_credentials_secret=secret)
    with sdk_internals.token_requests_trust(
        sb.tls.ca_cert if sb.tls is not None and sb.auth is not None else None
    ):
        flyte.init(**kwargs, **where)


# --- pytest fixtures ----------------------------------------------------------------------

try:
    import pytest
except ImportError:  # pragma: no cover - the package works without pytest
    pass
else:

    @pytest.fixture
    def sandbox() -> Iterator[SandboxHandle]:
        """A started sandbox with an empty workload (no tasks), per test."""
        with start_sandbox() as sb:
            yield sb

    @pytest.fixture
    def sandbox_factory() -> Iterator[Callable[..., SandboxHandle]]:
        """Call with ``start_sandbox`` keyword arguments; every sandbox stops after the test."""
        with contextlib.ExitStack() as stack:

            def make(**kwargs: Any) -> SandboxHandle:
                return stack.enter_context(start_sandbox(**kwargs))

            yield make
