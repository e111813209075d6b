"""The one exception tree of rerund.

Every error rerund raises on purpose is a ``RerundError``; adapters wrap third-party
exceptions (``raise ControlPlaneError(...) from exc``) so that callers never have to catch
``connectrpc``, ``sqlite3``, ``psycopg`` or ``httpx`` errors themselves::

    RerundError
    ├── ConfigError                 bad settings file, env var or flag
    ├── PolicyError                 a policy file that does not validate (carries PolicyProblems)
    ├── WorkloadError               a sandbox workload file that does not validate
    ├── FailureInputError           a failure document (explain/test input) that does not validate
    ├── ControlPlaneError           a call to the control plane failed
    │   ├── TransientControlPlaneError   retry with backoff (UNAVAILABLE, timeouts, INTERNAL)
    │   │   └── CredentialsError         the control plane refuses rerund's credentials
    │   ├── PermanentControlPlaneError   do not retry (INVALID_ARGUMENT, PERMISSION_DENIED, ...)
    │   │   └── NotFoundError            the run or action does not exist
    │   └── AlreadyExistsError           a run with that name exists (an idempotent re-issue)
    ├── LedgerError                 the audit ledger (SQLite file or PostgreSQL) failed
    ├── NotificationError           a webhook could not be delivered
    ├── StateUnavailableError       the shared state database (leadership, outbox) cannot be reached
    └── FencedError                 a write by a replica that no longer leads was refused

Messages say the subject, what happened, what happens next and the value, e.g.
``policy 'oom' gives up on run 'abc123': attempt 4 would exceed max_attempts=3``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "AlreadyExistsError",
    "ConfigError",
    "ControlPlaneError",
    "CredentialsError",
    "FailureInputError",
    "FencedError",
    "LedgerError",
    "NotFoundError",
    "NotificationError",
    "PermanentControlPlaneError",
    "PolicyError",
    "PolicyProblem",
    "RerundError",
    "StateUnavailableError",
    "TransientControlPlaneError",
    "WorkloadError",
]


class RerundError(Exception):
    """Base of every error rerund raises on purpose."""


class ConfigError(RerundError):
    """A settings file, environment variable or flag is invalid."""


@dataclass(frozen=True)
class PolicyProblem:
    """One problem in a policy (or workload / failure) file, located for humans and editors.

    ``path`` is the YAML path, e.g. ``policies[2].match.error.patterns[0]``.
    """

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class _ProblemsError(RerundError):
    """An error that carries one or more located problems."""

    def __init__(self, problems: Sequence[PolicyProblem], summary: str | None = None) -> None:
        self.problems: tuple[PolicyProblem, ...] = tuple(problems)
        self.summary = summary
        text = "\n".join(str(p) for p in self.problems)
        super().__init__(f"{summary}\n{text}" if summary else text)


class PolicyError(_ProblemsError):
    """A policy file does not validate; ``problems`` lists every problem found."""


class WorkloadError(_ProblemsError):
    """A sandbox workload file does not validate; ``problems`` lists every problem found."""


class FailureInputError(_ProblemsError):
    """A failure document given to ``explain`` or a policy test does not validate."""


class ControlPlaneError(RerundError):
    """A call to the Flyte control plane failed.

    ``rpc`` names the call (e.g. ``CreateRun``), ``code`` the Connect/gRPC code in lower case
    (e.g. ``unavailable``) so metrics can be labelled with them.
    """

    def __init__(self, message: str, *, rpc: str = "", code: str = "unknown") -> None:
        super().__init__(message)
        self.rpc = rpc
        self.code = code


class TransientControlPlaneError(ControlPlaneError):
    """Worth retrying with backoff: UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, connection errors."""


class CredentialsError(TransientControlPlaneError):
    """The control plane (or its token endpoint) refuses rerund's credentials: UNAUTHENTICATED,
    a revoked or wrong API key or client secret, a failing token command. Retried with backoff
    like any transient error (nothing owed is settled by it) until the credentials are fixed;
    ``code`` is ``unauthenticated``."""


class PermanentControlPlaneError(ControlPlaneError):
    """Retrying the same call cannot help: INVALID_ARGUMENT, PERMISSION_DENIED, ..."""


class UnsupportedError(PermanentControlPlaneError):
    """This control plane cannot do what was asked (e.g. an in-memory fake asked to relaunch a
    deployed task); the caller says what that means for it."""

    def __init__(self, message: str, *, rpc: str = "") -> None:
        super().__init__(message, rpc=rpc, code="unimplemented")


class NotFoundError(PermanentControlPlaneError):
    """The run or action does not exist on the control plane."""


class AlreadyExistsError(ControlPlaneError):
    """A run with that name already exists. For a deterministic rerun name: already issued."""


class LedgerError(RerundError):
    """The ledger (an SQLite file or a PostgreSQL database) could not be opened, read or written."""


class NotificationError(RerundError):
    """A webhook notification could not be delivered (after its retries)."""


class StateUnavailableError(RerundError):
    """The shared state database (the leadership row, the outbox) could not be reached or
    answered with an error; the caller retries, or steps down when it leads."""


class FencedError(RerundError):
    """A write that only the leader may make was refused: the leadership ``term`` recorded in
    the state is no longer the writer's (another replica took over)."""
