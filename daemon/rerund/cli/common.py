"""What several commands share: the flags that name and authenticate a control plane, the ledger
a command reads, the policies it loads, the control plane it reaches once, and output formats.

One-shot commands (``explain RUN``, ``status``, ``repro``) do not retry a control plane that
cannot be reached: they say so in one line naming the endpoint and exit 2 (the daemon, in
contrast, keeps retrying).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any
from xml.sax.saxutils import escape, quoteattr

from rerund.adapters.ledger import Source
from rerund.adapters.state import StateLedger, open_state
from rerund.core.encode import for_terminal
from rerund.core.redact import redact_url
from rerund.core.stateurl import is_database_url
from rerund.errors import ConfigError, TransientControlPlaneError
from rerund.runtime.settings import Settings, load_settings, scopes_from_flags

__all__ = [
    "VISIBLE",
    "add_auth_arguments",
    "add_connection_arguments",
    "add_format_argument",
    "add_state_password_argument",
    "add_target_arguments",
    "connection_overrides",
    "connection_settings",
    "ensure_policies",
    "has_ledger",
    "junit_xml",
    "open_ledger",
    "positive_int",
    "reaching",
    "say",
    "short_reason",
    "state_ledger",
]


# Flags are in every local user's `ps`; a flag that can carry a credential says so.
VISIBLE = "flags are visible to every local user (ps): for a credential use {flag} or {env}"


def add_target_arguments(p: argparse.ArgumentParser, *, scope_help: str) -> None:
    """``--endpoint``, ``--org``, ``--insecure`` and ``--scope``: which control plane and runs."""
    p.add_argument("--endpoint", help="control plane URL")
    p.add_argument("--org", help="org of the runs")
    p.add_argument("--insecure", action="store_true", default=None, help="plain HTTP (no TLS)")
    p.add_argument("--scope", action="append", metavar="PROJECT/DOMAIN", help=scope_help)


def add_auth_arguments(p: argparse.ArgumentParser) -> None:
    """How to authenticate to the control plane and trust its certificate (settings win otherwise)."""
    p.add_argument("--api-key-file", metavar="FILE", help="file holding the API key (else FLYTE_API_KEY)")
    p.add_argument("--client-id", metavar="ID", help="OAuth2 client id (with --client-secret-file)")
    p.add_argument("--client-secret-file", metavar="FILE", help="file holding the OAuth2 client secret")
    add_secret_argument(
        p,
        "--auth-command",
        "COMMAND",
        "command that prints a bearer token",
        "the --auth-command command line",
    )
    p.add_argument(
        "--ca-cert-file",
        metavar="FILE",
        help="PEM CA certificate that signed the control plane's certificate",
    )
    add_secret_argument(
        p,
        "--http-proxy",
        "URL",
        "HTTP proxy for every control-plane request (NO_PROXY is honoured)",
        "the --http-proxy URL",
    )


def add_secret_argument(p: argparse.ArgumentParser, flag: str, metavar: str, what: str, held: str) -> None:
    """A secret-bearing ``flag`` and its ``FLAG-file`` form; the help says the flag is visible to
    every local user and names the file and ``RERUND_*`` forms that are not."""
    env = "RERUND_" + flag.removeprefix("--").replace("-", "_").upper()
    p.add_argument(flag, metavar=metavar, help=f"{what}; " + VISIBLE.format(flag=f"{flag}-file", env=env))
    p.add_argument(f"{flag}-file", metavar="FILE", help=f"file holding {held}")


def add_connection_arguments(
    p: argparse.ArgumentParser,
    *,
    scope_help: str = "scope of the runs, PROJECT/DOMAIN (repeatable; default: the settings' scopes)",
    state_help: str = (
        "the daemon's ledger: a SQLite file or a postgresql:// URL "
        "(default: the settings' state, else ./rerund.db)"
    ),
) -> None:
    """The one connection vocabulary of every command that talks to the control plane or reads
    the ledger (``run``, ``sweep``, ``status``, ``history``, ``explain``, ``repro``, ``incidents``):
    ``--config``, ``--state``, the target flags and the auth flags. ``connection_settings`` reads
    them over the settings file and the ``RERUND_*`` environment variables (file < environment <
    flags), so every command connects as ``rerund run`` does. ``--state`` is a plain string
    (a path, or the URL of a shared state store)."""
    p.add_argument(
        "--config", metavar="FILE", help="settings file (YAML): endpoint, org, scopes, policies, state"
    )
    p.add_argument("--state", metavar="PATH|URL", help=state_help)
    add_state_password_argument(p)
    add_target_arguments(p, scope_help=scope_help)
    add_auth_arguments(p)


def add_format_argument(
    p: argparse.ArgumentParser, *, human: str = "text", extra: Sequence[str] = (), what: str = "output"
) -> None:
    """``-o``/``--format``, as kubectl spells it: ``json`` or the human form (``human``: ``text``
    or ``table``; the other word is taken as a synonym, so ``-o table`` and ``-o text`` work on
    every command), plus ``extra`` forms (``junit``)."""
    synonym = "table" if human == "text" else "text"

    def form(text: str) -> str:
        value = text.strip().lower()
        return human if value == synonym else value

    form.__name__ = "format"
    choices = (human, "json", *extra)
    p.add_argument(
        "-o",
        "--format",
        type=form,
        choices=choices,
        default=human,
        metavar="FORMAT",
        help=f"{what} format: {human} (default; {synonym} is the same), " + ", ".join(choices[1:]),
    )


def connection_settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    """The settings of a command with ``--config`` and the connection flags: the file, then the
    ``RERUND_*`` environment variables, then the flags (``--state`` when the command has it,
    and ``overrides``); one loader for every command (``load_settings``)."""
    return load_settings(
        args.config,
        overrides={
            **connection_overrides(args),
            "state": getattr(args, "state", None),
            "state_password_file": getattr(args, "state_password_file", None),
            **overrides,
        },
    )


def connection_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings overrides of the flags ``add_target_arguments`` and ``add_auth_arguments`` add."""
    return {
        "endpoint": args.endpoint,
        "org": args.org,
        "insecure": args.insecure,
        "scopes": scopes_from_flags(args.scope),
        "api_key_file": args.api_key_file,
        "client_id": args.client_id,
        "client_secret_file": args.client_secret_file,
        "auth_command": args.auth_command,
        "auth_command_file": args.auth_command_file,
        "ca_cert_file": args.ca_cert_file,
        "http_proxy": args.http_proxy,
        "http_proxy_file": args.http_proxy_file,
    }


def say(*lines: object, file: IO[str] | None = None) -> None:
    """Print each of ``lines`` as one terminal line, its control characters written visibly
    (``rerund.core.encode.for_terminal``: no ESC/OSC sequence, no CR, no forged line). Every
    command's text output goes through here; JSON output is printed as ``json.dumps`` writes it
    (which escapes them)."""
    out = file if file is not None else sys.stdout
    for line in lines:
        print(for_terminal(line), file=out)


def short_reason(text: str) -> str:
    """The last, human part of a transport error chain (``Connection refused (os error 111)``)."""
    return text.rsplit(": ", 1)[-1].strip() or text


@contextmanager
def reaching(settings: Settings, command: str) -> Iterator[None]:
    """Turn an unreachable control plane into one plain line: where, why, what to check."""
    try:
        yield
    except TransientControlPlaneError as exc:
        where = redact_url(settings.endpoint) if settings.endpoint else "(the endpoint of the API key)"
        raise TransientControlPlaneError(
            f"cannot reach the control plane at {where} ({exc.rpc or 'call'}: {exc.code}): "
            f"{short_reason(str(exc))}; check the endpoint setting and that the control plane is up "
            f"(rerund {command} does not retry)",
            rpc=exc.rpc,
            code=exc.code,
        ) from None


def ensure_policies(settings: Settings) -> None:
    """A clear error when the policies were not given and ``./policies`` does not exist."""
    if "policies" in settings.model_fields_set:
        return
    default = Path("policies")
    if not default.exists():
        raise ConfigError(
            f"no policies: neither --policies nor 'policies:' in the settings was given, so rerund "
            f"looked in ./policies, which does not exist in {Path.cwd()}; pass --policies PATH"
        )


def add_state_password_argument(p: argparse.ArgumentParser) -> None:
    """``--state-password-file``: the database password of a ``postgresql://`` ``--state``."""
    p.add_argument(
        "--state-password-file",
        metavar="FILE",
        help="file holding the password of a postgresql:// --state (else the URL's, PGPASSWORD, PGPASSFILE)",
    )


def has_ledger(settings: Settings) -> bool:
    """Whether there is a ledger to read: a database URL (it says itself when it has none) or a
    file that exists."""
    return is_database_url(settings.state) or Path(settings.state).exists()


def state_ledger(settings: Settings, *, source: Source = "daemon", create: bool = False) -> StateLedger:
    """The ledger of ``settings`` (its file, or its database with ``state_password_file``'s
    password); ``create=False`` for the commands that only read."""
    return open_state(settings.state, password=settings.state_password(), source=source, create=create)


def open_ledger(settings: Settings) -> StateLedger:
    """The ledger of ``settings`` for reading; a clear error when there is none or the file is
    not a ledger (nothing is written to a file that is not one)."""
    if not has_ledger(settings):
        raise ConfigError(
            f"no ledger at {str(settings.state)!r}: pass --state PATH or --config FILE of the daemon whose "
            "ledger you want (the daemon writes it; default ./rerund.db; a shared one: --state postgresql://…)"
        )
    return state_ledger(settings)


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise ValueError(f"{value} is not >= 1")
    return value


positive_int.__name__ = "a whole number >= 1"  # argparse: "invalid a whole number >= 1 value: '0'"


# Characters XML 1.0 does not allow even escaped: C0 controls but tab, LF and CR; surrogates; U+FFFE/F.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_text(text: str) -> str:
    """``text`` with the characters XML 1.0 cannot carry written as ``\\xNN`` / ``\\uNNNN``
    (a YAML case name or a control plane's message may hold them; the report must still parse)."""
    return _NOT_XML.sub(lambda m: ascii(m.group())[1:-1], text)


def junit_xml(suite: str, cases: Sequence[tuple[str, str, str | None]]) -> str:
    """JUnit XML (one ``testsuite``) for CI: ``(classname, name, failure message or None)``.

    Always well-formed XML: names and messages are escaped, and characters XML 1.0 cannot
    carry at all (control characters) are written visibly as ``\\x01``."""
    cases = [(_xml_text(c), _xml_text(n), None if f is None else _xml_text(f)) for c, n, f in cases]
    failures = sum(1 for *_, f in cases if f is not None)
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<testsuites><testsuite name={quoteattr(suite)} tests="{len(cases)}" failures="{failures}"'
        ' errors="0" skipped="0">',
    ]
    for classname, name, failure in cases:
        head = f"<testcase classname={quoteattr(classname)} name={quoteattr(name)}"
        if failure is None:
            lines.append(head + "/>")
        else:
            first = failure.splitlines()[0] if failure else "failed"
            lines.append(
                head + f"><failure message={quoteattr(first)}>{escape(failure)}</failure></testcase>"
            )
    lines.append("</testsuite></testsuites>")
    return "\n".join(lines)


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)
