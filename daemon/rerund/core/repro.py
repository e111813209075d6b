"""Reproduction checks, purely: the check as compiled from a policy file, the name of each
firing's rerun, which firing is due, and the verdict of a finished firing with its reason.

A reproduction check reruns a reference run on a schedule and asks: same phase, same outputs?
The shell (``rerund.runtime.repro``) reads the facts (the reference run, the rerun's phase and
both runs' outputs), calls ``judge`` and records what it returns. Nothing here reads the clock,
does I/O or knows cron syntax: the shell computes slots with the cron adapter and passes them
in as datetimes.

Why a firing is never issued twice
    The rerun of a firing is named from the check and the scheduled time
    (``repro_run_name``), so two replicas, or a restart mid-firing, compute the same name;
    the control plane answers ALREADY_EXISTS to the second CreateRun and that firing just
    follows the existing rerun.

Why missed firings run once
    ``due_firing`` only ever returns the latest slot at or before ``now`` that has not been
    fired: after any downtime, every missed slot is coalesced into that one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from rerund.core.compare import Difference, OutputsMode, Tolerance, compare_outputs
from rerund.core.durations import format_duration
from rerund.core.names import suffixed_name
from rerund.core.runs import LABEL_REPRO
from rerund.core.times import iso

__all__ = [
    "LABEL_REPRO",
    "RESULTS",
    "UNSCOPED",
    "CompareSettings",
    "ReproCheck",
    "ReproResult",
    "ReproSource",
    "ResultKind",
    "Verdict",
    "due_firing",
    "judge",
    "kept_failing",
    "reads_outputs",
    "repro_run_name",
    "unverifiable",
]

UNSCOPED = (
    "its source names no project/domain and the daemon has no scope that names both (under a "
    "wildcard scope such as */* it cannot run); set source.project and source.domain"
)
"""Why a check whose source names no project/domain cannot run: the daemon's reason, ``repro
run``'s and the substance of ``rerund check``'s warning."""

ResultKind = Literal["match", "mismatch", "failed", "timeout"]
RESULTS: tuple[ResultKind, ...] = ("match", "mismatch", "failed", "timeout")
_SUCCEEDED = "SUCCEEDED"


@dataclass(frozen=True)
class ReproSource:
    """Which run is the reference: a fixed ``run``, or the latest run of ``task`` in ``phase``
    carrying ``labels``. ``project``/``domain`` default to the daemon's first scope."""

    run: str | None = None
    task: str | None = None
    phase: str = _SUCCEEDED
    labels: Mapping[str, str] = field(default_factory=dict)
    project: str | None = None
    domain: str | None = None

    def describe(self) -> str:
        where = f" in {self.project or '*'}/{self.domain or '*'}" if self.project or self.domain else ""
        if self.run is not None:
            return f"run {self.run!r}{where}"
        labels = "".join(f", {k}={v}" for k, v in sorted(self.labels.items()))
        return f"latest {self.phase} run of task {self.task!r}{labels}{where}"


@dataclass(frozen=True)
class CompareSettings:
    """What must match: the phase, and the outputs (``exact`` | ``tolerance`` | ``none``)."""

    phase: bool = True
    outputs: OutputsMode = "exact"
    tolerance: Tolerance | None = None
    ignore: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReproCheck:
    """One reproduction check, compiled from ``reproductions[i]`` of a policy file."""

    name: str
    schedule: str
    source: ReproSource
    timezone: str = "UTC"
    compare: CompareSettings = field(default_factory=CompareSettings)
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    timeout: timedelta = timedelta(hours=2)
    misfire_grace: timedelta | None = None
    origin: str = ""
    description: str | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-safe description (``rerund repro list --format json``)."""
        return {
            "name": self.name,
            "schedule": self.schedule,
            "timezone": self.timezone,
            "source": self.source.describe(),
            "compare": {
                "phase": self.compare.phase,
                "outputs": self.compare.outputs,
                "tolerance": (
                    {"rel": self.compare.tolerance.rel, "abs": self.compare.tolerance.abs}
                    if self.compare.tolerance
                    else None
                ),
                "ignore": list(self.compare.ignore),
            },
            "timeout": format_duration(self.timeout),
            "misfire_grace": format_duration(self.misfire_grace) if self.misfire_grace else None,
            "origin": self.origin,
        }


@dataclass(frozen=True)
class Verdict:
    """The result of one firing and why; ``diff`` lists every difference found."""

    result: ResultKind
    reason: str
    diff: tuple[Difference, ...] = ()


@dataclass(frozen=True)
class ReproResult:
    """A finished firing as recorded in the ledger, logged, and sent to the webhook."""

    check: str
    scheduled_for: datetime
    manual: bool
    verdict: Verdict
    project: str
    domain: str
    reference: str | None = None
    rerun: str | None = None
    reference_phase: str | None = None
    rerun_phase: str | None = None

    @property
    def result(self) -> ResultKind:
        return self.verdict.result

    @property
    def reason(self) -> str:
        return self.verdict.reason

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "scheduled_for": iso(self.scheduled_for),
            "manual": self.manual,
            "result": self.verdict.result,
            "reason": self.verdict.reason,
            "project": self.project,
            "domain": self.domain,
            "reference": self.reference,
            "rerun": self.rerun,
            "reference_phase": self.reference_phase,
            "rerun_phase": self.rerun_phase,
            "diff": [d.to_json() for d in self.verdict.diff],
        }


def repro_run_name(check: str, scheduled_for: datetime, *, manual: bool = False, salt: int = 0) -> str:
    """The rerun name of the firing of ``check`` scheduled for ``scheduled_for``.

    ``rp-<check>-<YYYYmmddHHMM>`` (UTC minute) for scheduled firings, ``rm-...`` for manual ones
    (``rerund repro run``), shortened with a hash by ``core.names.suffixed_name`` when longer than
    30 characters; ``salt`` >= 1 gives the firing's other names, used when a run that is not
    this firing holds the ones before (``core.names``). Invariants: a valid DNS-1035 run name;
    a pure function of its arguments; distinct for distinct (check, minute, manual, salt).
    """
    minute = int(scheduled_for.astimezone(UTC).strftime("%Y%m%d%H%M"))
    root = f"{'rm' if manual else 'rp'}-{check}"
    return suffixed_name(root, minute, f"-{minute}", salt=salt)


def due_firing(
    latest_slot: datetime | None,
    last_fired: datetime | None,
    now: datetime,
    grace: timedelta | None = None,
) -> datetime | None:
    """The slot to fire now, or None.

    ``latest_slot`` is the latest scheduled time at or before ``now`` (from the cron adapter),
    ``last_fired`` the latest slot already fired (this process) or recorded (the ledger).
    Missed slots are coalesced: only ``latest_slot`` can be returned, once. With ``grace``,
    a slot older than ``now - grace`` is skipped (it waits for the next one).
    """
    if latest_slot is None or latest_slot > now:
        return None
    if last_fired is not None and latest_slot <= last_fired:
        return None
    if grace is not None and now - latest_slot > grace:
        return None
    return latest_slot


def judge(
    check: ReproCheck,
    *,
    reference: str,
    rerun: str,
    reference_phase: str,
    rerun_phase: str | None,
    reference_outputs: Mapping[str, Any] | None = None,
    rerun_outputs: Mapping[str, Any] | None = None,
    timed_out: bool = False,
) -> Verdict:
    """The verdict of a firing whose rerun ended in ``rerun_phase`` (None: not terminal).

    - ``timeout``: the rerun was not terminal when ``check.timeout`` ran out;
    - ``failed``: the rerun did not succeed although the reference did (or the phase is not
      compared);
    - ``mismatch``: the phases differ (``compare.phase``), or both succeeded and an output
      differs;
    - ``match``: otherwise.
    Outputs are only compared when both runs SUCCEEDED and ``compare.outputs != "none"``.
    """
    name, cmp = check.name, check.compare
    if timed_out or rerun_phase is None:
        return Verdict(
            "timeout",
            f"check {name!r}: rerun {rerun!r} of {reference!r} was not terminal after the timeout of "
            f"{format_duration(check.timeout)}; counted as timeout",
        )
    if rerun_phase != _SUCCEEDED and (reference_phase == _SUCCEEDED or not cmp.phase):
        return Verdict(
            "failed",
            f"check {name!r}: rerun {rerun!r} ended {rerun_phase}, reference {reference!r} "
            f"{reference_phase}: it did not reproduce",
            (Difference("phase", f"{reference_phase} != {rerun_phase}"),),
        )
    if cmp.phase and rerun_phase != reference_phase:
        return Verdict(
            "mismatch",
            f"check {name!r}: rerun {rerun!r} ended {rerun_phase}, reference {reference!r} "
            f"{reference_phase}: the phase did not reproduce",
            (Difference("phase", f"{reference_phase} != {rerun_phase}"),),
        )
    if not reads_outputs(check, reference_phase, rerun_phase):
        what = "outputs not compared" if cmp.outputs == "none" else "no outputs to compare"
        return Verdict(
            "match",
            f"check {name!r}: rerun {rerun!r} reproduced {reference!r}: phase {rerun_phase}, {what}",
        )
    ref_out, new_out = dict(reference_outputs or {}), dict(rerun_outputs or {})
    diff = compare_outputs(ref_out, new_out, mode=cmp.outputs, tolerance=cmp.tolerance, ignore=cmp.ignore)
    how = _how(cmp)
    if diff:
        first = "; ".join(str(d) for d in diff[:3]) + (f"; and {len(diff) - 3} more" if len(diff) > 3 else "")
        return Verdict(
            "mismatch",
            f"check {name!r}: rerun {rerun!r} of {reference!r} differs in {len(diff)} "
            f"output field{'s' if len(diff) != 1 else ''} ({how}): {first}",
            tuple(diff),
        )
    ignored = [k for k in ref_out if k in cmp.ignore]
    n = len([k for k in {**ref_out, **new_out} if k not in cmp.ignore])
    note = f", {len(ignored)} ignored" if ignored else ""
    return Verdict(
        "match",
        f"check {name!r}: rerun {rerun!r} reproduced {reference!r}: phase {rerun_phase}, "
        f"{n} output{'s' if n != 1 else ''} equal ({how}{note})",
    )


def _how(cmp: CompareSettings) -> str:
    if cmp.outputs == "tolerance" and cmp.tolerance is not None:
        return f"tolerance rel={cmp.tolerance.rel:g} abs={cmp.tolerance.abs:g}"
    return "exact"


def unverifiable(check: ReproCheck, reason: str, diff: Sequence[Difference] = ()) -> Verdict:
    """A firing that could not compare anything (no reference, rerun refused): ``failed``."""
    return Verdict("failed", f"check {check.name!r}: {reason}", tuple(diff))


def reads_outputs(check: ReproCheck, reference_phase: str, rerun_phase: str = _SUCCEEDED) -> bool:
    """Whether ``judge`` compares outputs, so the shell must read them: when the check compares
    outputs and both runs SUCCEEDED (``rerun_phase`` defaults to "if the rerun succeeds")."""
    return check.compare.outputs != "none" and reference_phase == _SUCCEEDED and rerun_phase == _SUCCEEDED


def kept_failing(check: ReproCheck, last_error: str, *, rerun_issued: bool) -> Verdict:
    """The verdict of a firing whose control plane kept failing (transiently) until the check's
    timeout ran out: ``timeout`` once its rerun was issued (the rerun may still finish), else
    ``failed`` (nothing was rerun)."""
    timeout = format_duration(timedelta(seconds=round(check.timeout.total_seconds())))
    verdict = unverifiable(
        check, f"the control plane kept failing until the timeout of {timeout} ran out (last: {last_error})"
    )
    return Verdict("timeout", verdict.reason) if rerun_issued else verdict
