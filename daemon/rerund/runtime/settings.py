"""Daemon settings: one frozen value built from three layers, file < ``RERUND_*`` env < flags.

Why one value: every part of the daemon (reconcile loop, HTTP, ledger, notifier) reads its
configuration from the same frozen ``Settings`` object, so there is exactly one place where a
bad value is rejected — at start-up, with a ``ConfigError`` that names the layer (file path,
env var or flag), the key and what to write instead.

The API key is the one secret. It comes from ``FLYTE_API_KEY`` or ``api_key_file`` (never from
the YAML file itself, never from a flag, so it cannot end up in shell history or a ConfigMap),
is held as a ``SecretStr`` and is excluded from every dump: ``Settings.public()`` is what the
logs and ``/decisions`` may show. The other two ways to authenticate keep their secret outside
the settings too: client credentials name a ``client_secret_file``, an external
``auth_command`` prints a token. ``ca_cert_file`` is the CA a private control plane's TLS
certificate is signed by.

Flags are visible to every local user (``ps``, ``/proc/PID/cmdline``); the environment and
files are not. So every setting that can carry a credential — ``auth_command``, ``http_proxy``
(``http://user:password@…``), ``notify.webhook`` (its path is its secret) — also has an
environment form (``RERUND_AUTH_COMMAND``, …) and a ``*_file`` form (``auth_command_file``,
``http_proxy_file``, ``notify.webhook_file``; ``RERUND_*_FILE``, ``--*-file``) whose file holds
the value. ``public()`` shows none of these values: the auth command's program but not its
arguments, a URL's scheme, host and port only, the webhook as ``set``.

Scopes may use wildcards: ``*/*`` is every project and domain of the org (watched through one
org-wide stream and listing), ``ml/*`` every domain of project ml, ``*/production`` one domain of
every project; see ``rerund.core.scopes``.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from rerund.core import durations
from rerund.core.quantities import quantity_value
from rerund.core.redact import MASK, redact_url
from rerund.core.stateurl import is_database_url, shown
from rerund.errors import ConfigError
from rerund.policy.source import format_path, locate, message_for, read_document

__all__ = [
    "ENV_PREFIX",
    "NotifySettings",
    "ScopeSettings",
    "Settings",
    "load_settings",
    "parse_duration",
    "public_command",
    "read_ca_cert",
    "read_secret_file",
]

ENV_PREFIX = "RERUND_"
_FILE_MARK = "\x00file"  # marks an origin that is the settings file (its errors get line:col)


def parse_duration(value: object) -> timedelta:
    """Parse ``500ms``, ``30s``, ``5m``, ``1h``, ``7d``, ``1h30m`` or a number of seconds into a
    timedelta (``rerund.core.durations``, the one parser, with bare seconds allowed).

    Raises ``ValueError`` with a message that shows the accepted forms.
    """
    try:
        return durations.parse_duration(value, bare_seconds=True)
    except durations.DurationError as exc:
        if exc.kind == "negative":
            raise ValueError(f"{value!r} is negative; a duration must be >= 0") from None
        if exc.kind == "too_long":
            raise
        raise ValueError(f"{value!r} is not a duration; write e.g. 30s, 5m, 1h or 1d") from None


_LONGEST = timedelta(days=3650)


def _bounded(maximum: timedelta, example: str, *, positive: bool = False) -> BeforeValidator:
    """A duration setting's parse with its bounds: every one has a maximum (a clock minus or
    plus it must stay a date, a loop sleeping it must wake up), most must be positive."""

    def parse(value: object) -> timedelta:
        shown = value.strip() if isinstance(value, str) else repr(value)
        longest = durations.format_duration(maximum)
        too_long = f"{shown} is longer than the maximum of {longest}; write e.g. {example}"
        try:
            out = parse_duration(value)
        except durations.DurationError as exc:
            if exc.kind == "too_long":
                raise ValueError(too_long) from None
            raise
        except ValueError as exc:
            if "infinity" in str(exc) or "NaN" in str(exc):  # .inf / .nan in a YAML file
                raise ValueError(too_long) from None
            raise
        if out > maximum:
            raise ValueError(too_long)
        if positive and out <= timedelta(0):
            raise ValueError(f"must be longer than 0, e.g. {example}")
        return out

    return BeforeValidator(parse)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
# Every duration setting, with its sane maximum.
PollInterval = Annotated[timedelta, _bounded(timedelta(days=1), "30s", positive=True)]
Lookback = Annotated[timedelta, _bounded(timedelta(days=365), "1h")]
Overlap = Annotated[timedelta, _bounded(timedelta(days=1), "5m")]
Retention = Annotated[timedelta, _bounded(_LONGEST, "30d", positive=True)]
RpcTimeout = Annotated[timedelta, _bounded(timedelta(hours=1), "30s", positive=True)]


def _byte_size(value: object) -> object:
    """A size in bytes: a whole number or a quantity (``2Gi``, ``500M``); 0 means no bound."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size in bytes; write e.g. 2Gi, 500M or 0 (no bound)")
    if isinstance(value, str):
        amount = quantity_value(value)
        if amount is None or amount.denominator != 1:
            shown = value.strip()
            raise ValueError(f"{shown!r} is not a size in bytes; write e.g. 2Gi, 500M or 0 (no bound)")
        return int(amount)
    return value


ByteSize = Annotated[int, BeforeValidator(_byte_size), Field(ge=0, le=2**50)]


def _state_location(v: Any) -> Any:
    """``state``: a ``postgresql://`` URL stays text (a ``Path`` would fold its ``//``); any
    other text is an SQLite file path; another URL scheme is refused (without its value: a URL
    can hold a password)."""
    if isinstance(v, str):
        if is_database_url(v):
            return v
        if "://" in v:
            raise ValueError(
                "state is an SQLite file path or a postgresql:// URL (the value is not shown: a URL "
                "can hold a password); write e.g. rerund.db or postgresql://rerund@db:5432/rerund"
            )
        return Path(v)
    return v


# An SQLite file (``Path``) or a PostgreSQL database (``postgresql://`` URL text).
StateLocation = Annotated[Path | str, BeforeValidator(_state_location)]
NotifyTimeout = Annotated[timedelta, _bounded(timedelta(minutes=10), "5s", positive=True)]
ErrorDetailsWait = Annotated[timedelta, _bounded(timedelta(hours=1), "60s")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ScopeSettings(_Frozen):
    """A Flyte project/domain the daemon watches and reruns in."""

    project: str = Field(min_length=1)
    domain: str = Field(min_length=1)

    @property
    def wildcard(self) -> bool:
        return any(c in part for part in (self.project, self.domain) for c in "*?[")

    @property
    def key(self) -> str:
        return f"{self.project}/{self.domain}"

    @classmethod
    def parse(cls, text: str) -> ScopeSettings:
        """``project/domain`` (either part may be ``*``) -> ScopeSettings; raises ``ValueError``."""
        project, sep, domain = text.strip().partition("/")
        if not sep or not project or not domain or "/" in domain:
            raise ValueError(
                f"scope {text!r} must be written project/domain, e.g. demo/development, ml/* or */*"
            )
        return cls(project=project, domain=domain)


def _scope_item(value: object) -> object:
    return ScopeSettings.parse(value) if isinstance(value, str) else value


def _http_url_ok(url: str) -> bool:
    """An http(s) URL with a host and, if any, a numeric port (what the webhook client can POST to)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


class NotifySettings(_Frozen):
    """Where exhausted lineages are reported (a Slack-compatible JSON webhook)."""

    webhook: str | None = None
    webhook_file: Path | None = None  # a file holding the webhook URL (instead of webhook)
    timeout: NotifyTimeout = timedelta(seconds=5)
    retries: int = Field(default=5, ge=0, le=100)

    @field_validator("webhook")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v and not _http_url_ok(v):
            # Never echo the value: a webhook URL's path is its secret (Slack's is).
            raise ValueError(
                "the webhook is not an http(s) URL (it must start with http:// or https://; its value "
                "is not shown: a webhook URL holds its secret); write e.g. https://hooks.slack.com/services/..."
            )
        return v or None


def public_command(argv: Sequence[str]) -> list[str]:
    """A command line as public outputs show it: the program, each argument as ``***`` (an
    argument can be a password, a client secret or a URL with credentials). A program that
    looks like a URL or an assignment (``TOKEN=…``) is masked too."""
    if not argv:
        return []
    program = argv[0]
    shown = MASK if ("=" in program or "@" in program or "://" in program) else program
    return [shown, *(MASK for _ in argv[1:])]


class Settings(_Frozen):
    """Everything ``rerund run`` needs. Build it with ``load_settings``."""

    endpoint: str = ""
    insecure: bool | None = None  # None: plain HTTP when the endpoint starts with http://
    org: str = ""
    scopes: tuple[Annotated[ScopeSettings, BeforeValidator(_scope_item)], ...] = ()
    policies: tuple[Path, ...] = (Path("policies"),)
    state: StateLocation = Path("rerund.db")
    # The database password of a postgresql:// state (else the URL's, or libpq's PGPASSWORD/PGPASSFILE).
    state_password_file: Path | None = None
    http: str = "127.0.0.1:9464"
    # Host names the HTTP server answers besides IP addresses, localhost and the `http` host
    # (others are refused against DNS rebinding), e.g. the name an authenticating proxy passes on.
    http_hosts: tuple[str, ...] = ()
    dry_run: bool = False
    poll_interval: PollInterval = timedelta(seconds=30)
    # False: no WatchRuns stream, ListRuns polling only (for control planes without WatchRuns,
    # or to measure what the stream buys); failures are then seen within one poll_interval.
    watch: bool = True
    lookback: Lookback = timedelta(hours=1)
    overlap: Overlap = timedelta(minutes=5)
    # The ceiling of the adaptive concurrency (``throttle.AdaptiveLimit``: it starts at 4, grows
    # while calls succeed with flat latency, halves on RESOURCE_EXHAUSTED/UNAVAILABLE). High by
    # default so the default is fast under WAN latency; lower it (or set max_rps) to cap load.
    max_concurrent_reruns: int = Field(default=64, ge=1, le=1000)
    # A hard cap on control-plane RPCs per second (0 = none); calls wait rather than exceed it.
    max_rps: float = Field(default=0.0, ge=0, le=100_000)
    api_key_file: Path | None = None
    api_key: SecretStr | None = Field(default=None, exclude=True, repr=False)
    client_id: str = ""
    client_secret_file: Path | None = None
    auth_command: tuple[str, ...] = ()
    auth_command_file: Path | None = None  # a file holding the auth command (instead of auth_command)
    ca_cert_file: Path | None = None
    http_proxy: str = ""
    http_proxy_file: Path | None = None  # a file holding the proxy URL (instead of http_proxy)
    notify: NotifySettings = NotifySettings()
    ledger_retention: Retention = timedelta(days=30)
    # The most bytes the ledger's rows may take (0: no bound): the pruner deletes the oldest
    # rows past it, never those of a lineage still in flight.
    ledger_max_bytes: ByteSize = 0
    console_url: str = ""
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    rpc_timeout: RpcTimeout = timedelta(seconds=30)
    # union | oss | auto: what the control plane supports (auto: found by the first label filter)
    backend: Literal["auto", "union", "oss"] = "auto"
    # uvloop | asyncio: the event loop `rerund run` runs on (the SDK's own, made a uvloop loop).
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    # false: the plain flyte SDK path (no client tuning, asyncio's loop): slower, correct. The
    # tuning also turns itself off for an SDK outside the versions it was verified against.
    sdk_tuning: bool = True
    # How long after a FAILED run's failure rerund waits for its error details to arrive
    # (open-source Flyte fills them once the last attempt's events arrived).
    error_details_wait: ErrorDetailsWait = timedelta(seconds=60)

    @field_validator("auth_command", mode="before")
    @classmethod
    def _argv(cls, v: object) -> object:
        if isinstance(v, str):
            try:
                return tuple(shlex.split(v))
            except ValueError as exc:
                # Never echo the value: a command line can hold a credential.
                raise ValueError(
                    f"it is not a command line ({exc}; its value is not shown: it may hold a "
                    "credential); write e.g. get-token --audience flyte"
                ) from None
        return v

    @field_validator("http_proxy")
    @classmethod
    def _proxy_url(cls, v: str) -> str:
        # The value may carry the proxy's password: a message shows it through redact_url only.
        if not v:
            return v
        try:
            parts = urlsplit(v)
            _ = parts.port  # raises ValueError for a port that is not a number
            usable = parts.scheme in ("http", "https") and bool(parts.hostname) and not re.search(r"\s", v)
        except ValueError:
            usable = False
        if not usable:
            raise ValueError(
                f"{redact_url(v)!r} is not an http(s) URL; write e.g. http://proxy.internal:3128 "
                "(with credentials: http://user:password@proxy.internal:3128)"
            )
        return v

    @field_validator("http")
    @classmethod
    def _host_port(cls, v: str) -> str:
        if v in ("", "off"):
            return ""
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"{v!r} is not host:port; write e.g. 127.0.0.1:9464 (port 0 picks a free one)")
        return v

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        level = v.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"{v!r} is not a log level; use DEBUG, INFO, WARNING or ERROR")
        return level

    @property
    def auth_mode(self) -> str:
        """How rerund authenticates: api_key, client_credentials, command or none."""
        if self.api_key is not None or self.api_key_file is not None:
            return "api_key"
        if self.client_id or self.client_secret_file is not None:
            return "client_credentials"
        if self.auth_command:
            return "command"
        return "none"

    @property
    def plain_http(self) -> bool:
        return self.insecure if self.insecure is not None else self.endpoint.startswith("http://")

    @property
    def http_address(self) -> tuple[str, int] | None:
        if not self.http:
            return None
        host, _, port = self.http.rpartition(":")
        return host.strip("[]"), int(port)

    def public(self) -> dict[str, Any]:
        """The settings as JSON-safe values without any credential (safe to log and serve);
        durations in the form they are written (``30s``).

        Not shown: the API key and the webhook URL (``set``/``unset``), the auth command's
        arguments (its program stays), a URL's userinfo, path and query (``endpoint``,
        ``console_url``, ``http_proxy``) and a state path's ``user:password@``."""
        data = self.model_dump(mode="json", exclude={"api_key"})
        data["api_key"] = "set" if self.api_key else "unset"
        # A webhook URL is a credential (whoever has it can post): say whether it is set.
        data["notify"]["webhook"] = "set" if self.notify.webhook else "unset"
        for key in list(data):  # durations as they are written: 30s, not PT30S
            if isinstance(getattr(self, key), timedelta):
                data[key] = durations.format_duration(getattr(self, key))
        data["notify"]["timeout"] = durations.format_duration(self.notify.timeout)
        # A URL's userinfo, path and query can be the secret: show scheme, host and port only.
        for key in ("endpoint", "console_url", "http_proxy"):
            data[key] = redact_url(data[key]) if data[key] else data[key]
        # A database URL as every output shows it (no password, no query); a path with
        # user:password@ is masked whole.
        data["state"] = shown(data["state"]) if is_database_url(data["state"]) else redact_url(data["state"])
        data["auth_command"] = public_command(self.auth_command)
        return data

    def state_password(self) -> str | None:
        """The database password in ``state_password_file`` (None when it is not set); read now,
        so a rewritten file is picked up. Raises ``ConfigError``."""
        if self.state_password_file is None:
            return None
        return read_secret_file(self.state_password_file, "state_password_file", what="the database password")

    def require_runnable(self) -> None:
        """Raise ``ConfigError`` unless the daemon has what it needs to connect."""
        if not self.endpoint and not self.api_key:
            raise ConfigError(
                "no control plane configured: set endpoint in rerund.yaml, RERUND_ENDPOINT or "
                "--endpoint (e.g. http://127.0.0.1:8090), or an API key in FLYTE_API_KEY"
            )
        if not self.org:
            raise ConfigError(
                "no org configured: set org in rerund.yaml, RERUND_ORG or --org (the protos need a "
                "non-empty org; the sandbox uses 'sandbox')"
            )
        if not self.scopes:
            raise ConfigError(
                "no scope to watch: list scopes in rerund.yaml, RERUND_SCOPES or --scope "
                "(project/domain, e.g. demo/development, or */* for the whole org)"
            )
        modes = [
            name
            for name, used in (
                ("an API key (FLYTE_API_KEY or api_key_file)", self.api_key is not None),
                ("client credentials (client_id, client_secret_file)", bool(self.client_id)),
                ("an auth_command", bool(self.auth_command)),
            )
            if used
        ]
        if len(modes) > 1:
            raise ConfigError(
                f"more than one way to authenticate is configured: {' and '.join(modes)}; keep one"
            )
        if bool(self.client_id) != (self.client_secret_file is not None):
            raise ConfigError(
                "client credentials need both client_id and client_secret_file "
                "(RERUND_CLIENT_ID, RERUND_CLIENT_SECRET_FILE or --client-id, --client-secret-file)"
            )
        if self.ca_cert_file is not None:
            read_ca_cert(self.ca_cert_file)
        if self.client_secret_file is not None:
            read_secret_file(self.client_secret_file, "client_secret_file", what="the client secret")


# key -> how to read the env string
_ENV_KEYS: dict[str, str] = {
    "endpoint": "str",
    "insecure": "bool",
    "org": "str",
    "scopes": "list",
    "policies": "list",
    "state": "str",
    "state_password_file": "str",
    "http": "str",
    "http_hosts": "list",
    "dry_run": "bool",
    "poll_interval": "str",
    "watch": "bool",
    "lookback": "str",
    "overlap": "str",
    "max_concurrent_reruns": "str",
    "api_key_file": "str",
    "max_rps": "str",
    "client_id": "str",
    "client_secret_file": "str",
    "auth_command": "str",
    "auth_command_file": "str",
    "ca_cert_file": "str",
    "http_proxy": "str",
    "http_proxy_file": "str",
    "ledger_retention": "str",
    "ledger_max_bytes": "str",
    "console_url": "str",
    "log_level": "str",
    "log_format": "str",
    "rpc_timeout": "str",
    "backend": "str",
    "error_details_wait": "str",
    "event_loop": "str",
    "sdk_tuning": "bool",
    "notify_webhook": "str",
    "notify_webhook_file": "str",
}

# Settings that can carry a credential and the setting naming a file that holds the value
# instead (path in the data, as ``_from_file``, env and flags give it).
_SECRET_FILES: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("auth_command_file",), ("auth_command",)),
    (("http_proxy_file",), ("http_proxy",)),
    (("notify", "webhook_file"), ("notify", "webhook")),
)


def _env_bool(name: str, text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"environment variable {name}={text!r} is not a boolean; use true or false")


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, kind in _ENV_KEYS.items():
        name = ENV_PREFIX + key.upper()
        if name not in environ:
            continue
        text = environ[name]
        if kind == "bool":
            out[key] = _env_bool(name, text)
        elif kind == "list":
            out[key] = [part.strip() for part in re.split(r"[,\s]+", text) if part.strip()]
        else:
            out[key] = text
    notify = {k: out.pop("notify_" + k) for k in ("webhook", "webhook_file") if "notify_" + k in out}
    if notify:
        out["notify"] = notify
    return out


def _from_file(path: Path) -> tuple[dict[str, Any], yaml.Node | None]:
    """The settings file as data (relative paths made relative to the file) and its node tree
    (to point at the line of a bad value). YAML problems come back as ``file:line:col``."""
    if path.is_dir() or not path.exists():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ConfigError(
            f"settings file {str(path)!r} {what}; pass a settings file to --config "
            "(rerund.example.yaml in the repository is a commented example)"
        )
    doc, problems = read_document(path)
    if problems or doc is None:
        raise ConfigError("settings file is not valid YAML:\n" + "\n".join(str(p) for p in problems))
    data = doc.data
    if data is None:
        return {}, None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}:1:1: settings file must be a mapping of settings, got {type(data).__name__}; "
            "see rerund.example.yaml"
        )
    if "apiVersion" in data or "reproductions" in data:
        raise ConfigError(
            f"{path}:1:1: this is a policy file (it has apiVersion: {data.get('apiVersion')}), not a "
            f"settings file; pass it with --policies {path} and give --config a settings file "
            "(rerund.example.yaml in the repository is a commented example)"
        )
    if "api_key" in data:
        line, column, _ = locate(doc.node, ("api_key",), at_key=True)
        raise ConfigError(
            f"{path}:{line}:{column}: api_key: never put the key in a file others read; "
            "set FLYTE_API_KEY or point api_key_file at a file only rerund can read"
        )
    base = path.parent
    # Relative paths in the file are relative to the file, not to the working directory.
    for key in (
        "state",
        "state_password_file",
        "api_key_file",
        "client_secret_file",
        "ca_cert_file",
        "auth_command_file",
        "http_proxy_file",
    ):
        value = data.get(key)
        if isinstance(value, str) and not is_database_url(value) and not Path(value).is_absolute():
            data[key] = str(base / value)
    notify = data.get("notify")
    webhook_file = notify.get("webhook_file") if isinstance(notify, dict) else None
    if isinstance(notify, dict) and isinstance(webhook_file, str) and not Path(webhook_file).is_absolute():
        notify["webhook_file"] = str(base / webhook_file)
    pol = data.get("policies")
    if isinstance(pol, str):
        pol = [pol]
    if isinstance(pol, list):
        data["policies"] = [
            p if not isinstance(p, str) or Path(p).is_absolute() else os.path.normpath(base / p) for p in pol
        ]
    return data, doc.node


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _describe(exc: ValidationError, origin: Mapping[str, str], node: yaml.Node | None) -> str:
    """Every problem on its own line: ``file:line:col: key: message`` for a value from the
    settings file, ``environment variable RERUND_X: ...`` or ``flag --x: ...`` otherwise."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        top = str(loc[0]) if loc else ""
        where = origin.get(top, "settings")
        msg = message_for(err)
        if err["type"] == "extra_forbidden":
            field = str(loc[-1])
            known = list(Settings.model_fields) if len(loc) == 1 else list(NotifySettings.model_fields)
            close = difflib.get_close_matches(field, [k for k in known if k != "api_key"], n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            msg = f"unknown setting {field!r}; {hint}`rerund run --help` lists every setting"
        if where.endswith(_FILE_MARK):
            line, column, _ = locate(node, loc, at_key=err["type"] == "extra_forbidden")
            where = f"{where.removesuffix(_FILE_MARK)}:{line}:{column}"
        lines.append(f"{where}: {format_path(loc)}: {msg}")
    return "invalid settings:\n" + "\n".join(lines)


def load_settings(
    config: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build ``Settings`` from the file ``config`` (optional), then ``RERUND_*`` environment
    variables, then ``overrides`` (flags; ``None`` values are ignored). The API key comes from
    ``FLYTE_API_KEY`` or the file named by ``api_key_file``.

    Raises ``ConfigError`` naming the layer and key of every invalid value.
    """
    env = os.environ if environ is None else environ
    origin: dict[str, str] = {}
    data: dict[str, Any] = {}
    node: yaml.Node | None = None
    if config is not None:
        file_data, node = _from_file(Path(config))
        origin.update(dict.fromkeys(file_data, str(config) + _FILE_MARK))
        data = _merge(data, file_data)
    env_data = _from_env(env)
    for key in env_data:
        origin[key] = f"environment variable {ENV_PREFIX}{key.upper()}"
    data = _merge(data, env_data)
    flag_data = {k: v for k, v in (overrides or {}).items() if v is not None}
    notify = {
        k: flag_data.pop("notify_" + k) for k in ("webhook", "webhook_file") if "notify_" + k in flag_data
    }
    if notify:
        flag_data["notify"] = notify
    for key in flag_data:
        origin[key] = f"flag --{key.replace('_', '-')}"
    data = _merge(data, flag_data)
    try:
        settings = Settings.model_validate(data)
        if _read_secret_files(settings, data, origin):
            settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin, node)) from None
    api_key = _read_api_key(settings, env)
    return settings.model_copy(update={"api_key": SecretStr(api_key)}) if api_key else settings


def _read_secret_files(settings: Settings, data: dict[str, Any], origin: dict[str, str]) -> bool:
    """Put the content of each ``*_file`` secret setting into ``data`` under its value's key;
    whether there was any. ``ConfigError`` when a value is given both ways."""
    found = False
    for file_path, value_path in _SECRET_FILES:
        holder: Any = settings
        for part in file_path:
            holder = getattr(holder, part)
        if holder is None:
            continue
        name, value_name = ".".join(file_path), ".".join(value_path)
        target = data
        for part in value_path[:-1]:
            target = target.setdefault(part, {})
        if target.get(value_path[-1]):
            raise ConfigError(
                f"both {value_name} and {name} are set; keep one ({name} keeps the value out of the "
                "settings file, the environment and the process list)"
            )
        target[value_path[-1]] = read_secret_file(holder, name, what=f"the {value_name} value")
        origin[value_path[0]] = f"{name} {str(holder)!r}"
        found = True
    return found


def _read_api_key(settings: Settings, env: Mapping[str, str]) -> str | None:
    if settings.api_key_file is not None:
        try:
            raw = settings.api_key_file.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"api_key_file {str(settings.api_key_file)!r} cannot be read: {exc.strerror}; "
                "point it at a readable file that holds only the key"
            ) from exc
        try:
            key = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            # The bytes are (part of) the secret: say where, never what.
            raise ConfigError(
                f"api_key_file {str(settings.api_key_file)!r} is not UTF-8 text; the key was not "
                "read: write only the API key into it, as plain text"
            ) from None
        if not key:
            raise ConfigError(
                f"api_key_file {str(settings.api_key_file)!r} is empty; write the API key into it"
            )
        return key
    key = env.get("FLYTE_API_KEY", "").strip()
    return key or None


def read_secret_file(path: Path, setting: str, what: str = "the secret") -> str:
    """The stripped content of a secret file; ``ConfigError`` (never showing the content) when it
    cannot be read or is empty. Called at start and again when the file changes."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{setting} {str(path)!r} cannot be read: {exc.strerror}; "
            f"point it at a readable file that holds only {what}"
        ) from None
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        # The bytes are (part of) the secret: say where, never what.
        raise ConfigError(
            f"{setting} {str(path)!r} is not UTF-8 text; {what} was not read: "
            f"write only {what} into it, as plain text"
        ) from None
    if not text:
        raise ConfigError(f"{setting} {str(path)!r} is empty; write {what} into it")
    return text


def read_ca_cert(path: Path) -> bytes:
    """The PEM bytes of ``ca_cert_file``; ``ConfigError`` when unreadable or not a PEM certificate."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"ca_cert_file {str(path)!r} cannot be read: {exc.strerror}; point it at the PEM file of "
            "the CA that signed the control plane's certificate"
        ) from None
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ConfigError(
            f"ca_cert_file {str(path)!r} holds no PEM certificate (no -----BEGIN CERTIFICATE----- line); "
            "point it at the CA certificate in PEM form"
        )
    return data


def scopes_from_flags(values: Sequence[str] | None) -> list[ScopeSettings] | None:
    """``--scope demo/development`` (or ``'*/*'``) flags -> scopes (``None`` when no flag was given)."""
    if not values:
        return None
    try:
        return [ScopeSettings.parse(v) for v in values]
    except ValueError as exc:
        raise ConfigError(f"flag --scope: {exc}") from exc
