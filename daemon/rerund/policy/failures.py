"""Failure documents (YAML or JSON) as ``rerund explain`` and policy tests read them.

A failure document is the ``Failure`` model written out by hand (the README's "Failure
documents" section; ``policies/failures/`` has examples): ``run`` is required, ``failed_at``
defaults to the time the decision is made (``--now``), everything else has a default.
Problems are reported located, like policy problems, as ``FailureInputError``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from rerund.core.model import ErrorInfo, Failure, GpuFault, RunSpecView
from rerund.core.resources import ResourcesView
from rerund.errors import FailureInputError, PolicyProblem
from rerund.policy.source import Document, read_document, validate

__all__ = ["FAILURE_KEYS", "failure_from", "load_failure"]

FAILURE_KEYS = [f.alias or name for name, f in Failure.model_fields.items()]


def failure_from(
    doc: Document, data: Any, node: yaml.Node | None, base: tuple[str | int, ...] = ()
) -> tuple[Failure | None, list[PolicyProblem]]:
    """Validate one failure (``data`` at ``node`` inside ``doc``); located problems."""
    if not isinstance(data, dict):
        line, column = (node.start_mark.line + 1, node.start_mark.column + 1) if node is not None else (1, 1)
        path = ".".join(str(b) for b in base)
        return None, [
            PolicyProblem(doc.file, line, column, path, "expected a mapping with run, error, failed_at, ...")
        ]
    allowed = {
        "": FAILURE_KEYS,
        "failure": FAILURE_KEYS,
        "error": list(ErrorInfo.model_fields),
        "gpu_fault": list(GpuFault.model_fields),
        "spec": list(RunSpecView.model_fields),
        "resources": list(ResourcesView.model_fields),
    }
    return validate(Failure, doc, data=data, node=node, base=base, allowed=allowed)


def load_failure(path: str | Path, *, now: datetime | None = None) -> Failure:
    """Read a failure document; raises ``FailureInputError`` with every problem, located.

    ``failed_at`` defaults to ``now`` when the document leaves it out (and ``now`` is given).
    """
    doc, problems = read_document(Path(path))
    if doc is None:
        raise FailureInputError(problems)
    if doc.data is None:
        raise _whole_file(doc, "empty failure file; it needs at least run")
    data = doc.data
    if isinstance(data, dict) and "cases" in data:
        raise _whole_file(
            doc,
            "this is a policy test file (it has cases:), not a failure document; run it with "
            f"`rerund test {doc.file}`, or copy one case's failure into a file of its own",
        )
    if isinstance(data, dict) and "apiVersion" in data:
        raise _whole_file(
            doc,
            "this is a policy file (it has apiVersion:), not a failure document; pass it with "
            "--policies and describe the failure in another file (see policies/failures/)",
        )
    if isinstance(data, dict) and "failed_at" not in data and now is not None:
        data = {**data, "failed_at": now}
    failure, problems = failure_from(doc, data, doc.node)
    if failure is None:
        raise FailureInputError(problems)
    return failure


def _whole_file(doc: Document, message: str) -> FailureInputError:
    """A problem with the document as a whole, located at its start (1:1)."""
    return FailureInputError([PolicyProblem(doc.file, 1, 1, "", message)])
