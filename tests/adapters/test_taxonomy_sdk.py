"""rerund's failure classes against the flyte SDK's own taxonomy, so the two cannot drift.

Each error is built as the wire ``ErrorInfo`` the control plane sends, converted by the SDK
(``convert_error_info_to_native``, the function a parent action uses) into a ``flyte.errors``
class, and by the adapter (``error_info``) into rerund's ``ErrorInfo``; the class rerund gives
it must be the one the SDK's exception stands for."""

from __future__ import annotations

from typing import Any

import flyte.errors
import pytest
from flyte._internal.runtime import convert
from flyteidl2.core import execution_pb2
from flyteidl2.workflow import run_definition_pb2

from rerund.adapters.flyte.convert import error_info
from rerund.core.model import GpuFault, Phase
from rerund.core.taxonomy import GPU_FAULT_CODES, classify

USER = run_definition_pb2.ErrorInfo.KIND_USER
SYSTEM = run_definition_pb2.ErrorInfo.KIND_SYSTEM

CASES = [
    (USER, "OOMKilled", flyte.errors.OOMError, "oom"),
    (USER, "Interrupted", flyte.errors.TaskInterruptedError, "interrupted"),
    (USER, "ImagePullBackOff", flyte.errors.ImagePullBackOffError, "image"),
    (USER, "InvalidImageName", flyte.errors.InvalidImageNameError, "image"),
    (USER, "RetriesExhausted|ValueError", flyte.errors.RetriesExhaustedError, "retries_exhausted"),
    (USER, "MaxQueuedTimeExceededError", flyte.errors.MaxQueuedTimeExceededError, "queued_timeout"),
    (USER, "QUEUED_TIMEOUT_EXCEEDED", flyte.errors.MaxQueuedTimeExceededError, "queued_timeout"),
    (USER, "MAX_RUNTIME_EXCEEDED", flyte.errors.MaxRuntimeExceededError, "runtime_timeout"),
    (USER, "DeadlineExceededError", flyte.errors.DeadlineExceededError, "deadline"),
    (USER, "TaskTimeoutError", flyte.errors.TaskTimeoutError, "timeout"),
    *[
        (kind, code, flyte.errors.GPUFaultError, "gpu_fault")
        for code in GPU_FAULT_CODES
        for kind in (USER, SYSTEM)
    ],
]


@pytest.mark.parametrize(
    ("kind", "code", "sdk_class", "rerund_class"),
    CASES,
    ids=[f"{'user' if c[0] == USER else 'system'}-{c[1]}" for c in CASES],
)
def test_each_class_is_the_one_the_sdk_converts_the_error_to(
    kind: Any, code: str, sdk_class: type[Exception], rerund_class: str
) -> None:
    wire = run_definition_pb2.ErrorInfo(kind=kind, code=code, message="m")

    native = convert.convert_error_info_to_native(wire)
    classes = classify(error_info(wire), Phase.FAILED)

    assert isinstance(native, sdk_class)
    assert rerund_class in classes
    if rerund_class in ("queued_timeout", "runtime_timeout", "deadline"):
        assert "timeout" in classes and isinstance(native, flyte.errors.TaskTimeoutError)


def test_the_gpu_fault_codes_and_timeout_codes_are_the_sdks() -> None:
    assert GPU_FAULT_CODES == flyte.errors.GPU_FAULT_CODES
    timeout_codes = set(convert._TIMEOUT_ERROR_BY_CODE)
    for code in timeout_codes:
        assert "timeout" in classify(error_info(run_definition_pb2.ErrorInfo(kind=USER, code=code)))


def test_a_plain_error_is_no_taxonomy_class() -> None:
    wire = run_definition_pb2.ErrorInfo(kind=USER, code="ValueError", message="bad row")

    assert type(convert.convert_error_info_to_native(wire)) is flyte.errors.RuntimeUserError
    assert classify(error_info(wire)) == {"user"}


def test_non_recoverable_is_what_the_sdk_reports_for_a_non_recoverable_error() -> None:
    err = convert.convert_from_native_to_error(flyte.errors.NonRecoverableError("the config is wrong"))
    wire = run_definition_pb2.ErrorInfo(kind=USER, code=err.err.code, message=err.err.message)

    assert err.recoverable is False and err.err.kind == execution_pb2.ExecutionError.USER
    assert "non_recoverable" in classify(error_info(wire))


def test_resource_exhausted_is_the_sdks_slow_down_error() -> None:
    code = flyte.errors.ResourceExhaustedError("quota").code
    wire = run_definition_pb2.ErrorInfo(kind=USER, code=code)

    assert "resource_exhausted" in classify(error_info(wire))


def test_the_adapter_carries_the_gpu_fault_the_sdk_reads() -> None:
    wire = run_definition_pb2.ErrorInfo(kind=SYSTEM, code="GpuFallenOffBus", message="Xid 79")
    wire.gpu_fault.kind = execution_pb2.GpuFault.KIND_XID
    wire.gpu_fault.code = 79
    wire.gpu_fault.name = "GPU_FALLEN_OFF_BUS"
    wire.gpu_fault.severity = execution_pb2.GpuFault.SEVERITY_CRITICAL

    native = convert.convert_error_info_to_native(wire)
    ours = error_info(wire)

    assert isinstance(native, flyte.errors.GPUFaultSystemError)
    assert ours.gpu_fault == GpuFault(kind="XID", code=79, name="GPU_FALLEN_OFF_BUS", severity="CRITICAL")
    assert (native.fault_code, native.severity) == (ours.gpu_fault.code, ours.gpu_fault.severity.lower())
