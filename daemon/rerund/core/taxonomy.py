"""Failure classes: Flyte 2's own error taxonomy, as names a policy can match on.

The flyte SDK turns an action's ``ErrorInfo`` (kind, code, gpu_fault) into an exception class
(``flyte.errors``; the rules are in ``flyte/_internal/runtime/convert.py``
``convert_error_to_native`` and ``timeout_error``). rerund cannot import flyte in its core, so
the same rules are written here as data, and ``tests/adapters`` checks them against the SDK
itself so the two cannot drift apart. The rules, in the SDK's terms:

=====================  ==========================================================================
class                  holds when (``code`` is the user part of ``server|user`` codes)
=====================  ==========================================================================
``oom``                the code contains ``OOM`` (any case): ``OOMError``
``gpu_fault``          the code is one of ``GPU_FAULT_CODES`` (``GPUFaultUserError`` /
                       ``GPUFaultSystemError``), or the error carries a ``gpu_fault``
``interrupted``        the code contains ``Interrupted``: ``TaskInterruptedError`` (spot preemption)
``image``              the code contains ``ImagePullBackOff`` or ``InvalidImageName``
``timeout``            the phase is TIMED_OUT or the code names a timeout (``TaskTimeoutError``)
``queued_timeout``     ``MaxQueuedTimeExceeded`` / ``QUEUED_TIMEOUT_EXCEEDED``
``runtime_timeout``    ``MaxRuntimeExceeded`` / ``MAX_RUNTIME_EXCEEDED``
``deadline``           ``DeadlineExceeded`` / ``DEADLINE_EXCEEDED``
``retries_exhausted``  the code contains ``RetriesExhausted``: ``RetriesExhaustedError``
``resource_exhausted`` the code contains ``ResourceExhausted`` or is ``SlowDownError``
``non_recoverable``    the code is ``NonRecoverableError``: ``NonRecoverableError``, "retries are
                       irrelevant" — rerund never reruns it, ahead of every policy
``user`` / ``system``  the error's kind
=====================  ==========================================================================

One difference from the SDK, on purpose: the SDK applies the code rules of ``oom``,
``interrupted``, ``image`` and ``retries_exhausted`` to USER errors only (a SYSTEM error is
always a plain ``RuntimeSystemError`` there). A policy wants a preemption reported as SYSTEM to
be ``interrupted`` too, so rerund applies every code rule to both kinds; ``kinds: [USER]`` in
the same ``match.error`` narrows it back.

Without a code (open-source Flyte 2: the executor keeps only ``Message`` and ``Kind`` of the
plugin's error, ``executor/pkg/controller/taskaction_controller.go`` ``toActionErrorInfo``),
the classes are read from the forms the pod plugin writes into the message
(``flyteplugins/go/tasks/pluginmachinery/flytek8s/pod_helper.go``):

- ``oom``: ``Reason [OOMKilled]`` (``DeterminePrimaryContainerPhase`` / ``DemystifyFailure``:
  ``\r\n[<container>] terminated with exit code (137). Reason [OOMKilled]. Message: ...``) or
  ``despite being OOMKilled`` (``DemystifySuccess``);
- ``interrupted``: a SYSTEM error whose container ``terminated with exit code (137)`` or
  ``(247)`` (SIGKILL: ``isTerminatedWithSigKill``) for another reason than OOMKilled;
- ``image``: ``Back-off pulling image`` (ImagePullBackOff) or ``couldn't parse image
  reference`` / ``InvalidImageName`` (``classifyWaitingContainer``).

A ``gpu_fault`` has no message form: open-source Flyte cannot report it (``rerund check``
warns about policies that match on it, or on ``codes``, under ``backend: oss``).
``evidence`` says, per class, what it was read from; ``explain`` shows it.
"""

from __future__ import annotations

import re

from rerund.core.model import ErrorInfo, Phase

__all__ = [
    "FAILURE_CLASSES",
    "GPU_FAULT_CODES",
    "NON_RECOVERABLE_CODE",
    "classify",
    "evidence",
    "user_code",
]

GPU_FAULT_CODES: tuple[str, ...] = (
    "GpuXidError",
    "GpuFallenOffBus",
    "GpuEccUncorrectable",
    "GpuRowRemapPending",
    "GpuNvlinkError",
    "GpuGspError",
)
NON_RECOVERABLE_CODE = "NonRecoverableError"

_QUEUED = ("MaxQueuedTimeExceeded", "QUEUED_TIMEOUT_EXCEEDED")
_RUNTIME = ("MaxRuntimeExceeded", "MAX_RUNTIME_EXCEEDED")
_DEADLINE = ("DeadlineExceeded", "DEADLINE_EXCEEDED")
_TIMEOUT_CODES = frozenset(
    {
        "QUEUED_TIMEOUT_EXCEEDED",
        "MAX_RUNTIME_EXCEEDED",
        "DEADLINE_EXCEEDED",
        "MaxQueuedTimeExceededError",
        "MaxRuntimeExceededError",
        "DeadlineExceededError",
        "TaskTimeoutError",
    }
)

# Every class name a policy may write, with a one-line meaning (for `check` and the schema).
FAILURE_CLASSES: dict[str, str] = {
    "oom": "out of memory (a code containing OOM)",
    "gpu_fault": "a GPU or NVSwitch fault (code GpuXidError, GpuFallenOffBus, ... or ErrorInfo.gpu_fault)",
    "interrupted": "the task was interrupted, e.g. a spot instance was preempted (TaskInterruptedError)",
    "image": "the container image cannot be pulled or is invalid (ImagePullBackOff, InvalidImageName)",
    "timeout": "a timeout fired (phase TIMED_OUT or a timeout code)",
    "queued_timeout": "the action waited in the queue too long (MaxQueuedTimeExceeded)",
    "runtime_timeout": "the action ran too long (MaxRuntimeExceeded)",
    "deadline": "the action's deadline passed (DeadlineExceeded)",
    "retries_exhausted": "Flyte's own task retries are used up (RetriesExhausted)",
    "resource_exhausted": "a quota or rate limit was hit (ResourceExhausted, SlowDownError)",
    "non_recoverable": "the task raised NonRecoverableError: retries are irrelevant, never rerun",
    "user": "an error of kind USER",
    "system": "an error of kind SYSTEM",
}


def user_code(code: str) -> str:
    """The user part of an error code: the server may prefix it as ``<server code>|<code>``."""
    return code.split("|", 1)[1].strip() if "|" in code else code.strip()


_OOM_FORM = re.compile(r"Reason \[[^\]]*OOMKilled[^\]]*\]|despite being OOMKilled")
_SIGKILL_FORM = re.compile(r"terminated with exit code \((?:137|247)\)\. Reason \[([^\]]*)\]")
_IMAGE_FORM = re.compile(
    r"Back-off pulling image|couldn't parse image reference|InvalidImageName|ImagePullBackOff"
)


def _from_message(error: ErrorInfo) -> dict[str, str]:
    """The classes the executor's message forms show (for an error without a code)."""
    out: dict[str, str] = {}
    m = error.message
    if hit := _OOM_FORM.search(m):
        out["oom"] = hit.group(0)
    kill = _SIGKILL_FORM.search(m)
    if error.kind == "SYSTEM" and kill is not None and "OOMKilled" not in kill.group(1):
        out["interrupted"] = f"{kill.group(0)} (SIGKILL) and kind SYSTEM"
    if hit := _IMAGE_FORM.search(m):
        out["image"] = hit.group(0)
    return out


def evidence(error: ErrorInfo, phase: Phase = Phase.FAILED) -> dict[str, str]:
    """Each failure class of ``error`` (in ``phase``) and what it was read from: the code, the
    kind, the gpu_fault, the phase, or (no code) the executor's message form."""
    found = classify(error, phase)
    out: dict[str, str] = {}
    forms = _from_message(error) if not error.code.strip() else {}
    for cls in sorted(found):
        if cls in ("user", "system"):
            out[cls] = f"the kind {error.kind}"
        elif cls in forms:
            out[cls] = f"the message (no code): {forms[cls]!r}"
        elif (
            cls == "gpu_fault"
            and error.gpu_fault is not None
            and user_code(error.code) not in GPU_FAULT_CODES
        ):
            out[cls] = "the error's gpu_fault"
        elif cls == "timeout" and phase == Phase.TIMED_OUT:
            out[cls] = "the phase TIMED_OUT"
        else:
            out[cls] = f"the code {error.code!r}"
    return out


def classify(error: ErrorInfo, phase: Phase = Phase.FAILED) -> frozenset[str]:
    """Every failure class ``error`` (in ``phase``) belongs to; pure and total. Without a code,
    the executor's message forms stand in for it (see the module docstring).

    Invariant: the result is a subset of ``FAILURE_CLASSES``.
    """
    code = user_code(error.code)
    full = error.code
    out: set[str] = set()
    if error.kind == "USER":
        out.add("user")
    elif error.kind == "SYSTEM":
        out.add("system")
    if code == NON_RECOVERABLE_CODE:
        out.add("non_recoverable")
    if code in GPU_FAULT_CODES or error.gpu_fault is not None:
        out.add("gpu_fault")
    if "OOM" in full.upper():
        out.add("oom")
    if "Interrupted" in full:
        out.add("interrupted")
    if "ImagePullBackOff" in full or "InvalidImageName" in full:
        out.add("image")
    if "RetriesExhausted" in full:
        out.add("retries_exhausted")
    if "ResourceExhausted" in full or code == "SlowDownError":
        out.add("resource_exhausted")
    if any(c in full for c in _QUEUED):
        out.add("queued_timeout")
    if any(c in full for c in _RUNTIME):
        out.add("runtime_timeout")
    if any(c in full for c in _DEADLINE):
        out.add("deadline")
    if not code:
        out.update(_from_message(error))
    if (
        phase == Phase.TIMED_OUT
        or code in _TIMEOUT_CODES
        or out & {"queued_timeout", "runtime_timeout", "deadline"}
    ):
        out.add("timeout")
    return frozenset(out)
