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
"""

from __future__ import annotations

from rerund.core.model import ErrorInfo, Phase

__all__ = [
    "FAILURE_CLASSES",
    "GPU_FAULT_CODES",
    "NON_RECOVERABLE_CODE",
    "classify",
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


def classify(error: ErrorInfo, phase: Phase = Phase.FAILED) -> frozenset[str]:
    """Every failure class ``error`` (in ``phase``) belongs to; pure and total.

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
    if (
        phase == Phase.TIMED_OUT
        or code in _TIMEOUT_CODES
        or out & {"queued_timeout", "runtime_timeout", "deadline"}
    ):
        out.add("timeout")
    return frozenset(out)
