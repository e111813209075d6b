"""The rerun invariant: what a rerun's ``RunSpec`` must be, and what it changes, as values.

A rerun is the source run, changed only by what the policy says. Stated over ``RunSpecView``:

    rerun.env         = source.env    | policy env            (new values win)
    rerun.labels      = source.labels | policy labels | rerund's lineage labels
    rerun.annotations = source.annotations | policy annotations
    rerun.queue, interruptible, service_account, overwrite_cache, max_action_concurrency
                      = the policy's value when it sets one, else the source's
    rerun.cache_lookup_scope = the source's (a policy cannot change it)

plus ``RunSpec.relation`` (RERUN, or RECOVER for scope recover, naming the source run) and, for
recover, ``RunSpec.recover.force_rerun_actions``. Nothing else differs. One exception the SDK
forces: it always sets ``LOG_LEVEL``, ``LOG_FORMAT`` and ``USER_LOG_LEVEL``; rerund passes the
source's values through, so they are kept, but a source run that has none of them (a run not
launched by the flyte SDK) gets the daemon process's values (``SDK_ENV_KEYS``).

``expected_rerun_spec`` is the invariant, ``spec_changes`` the human diff ``explain`` prints and
a decision's log line carries; both are pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rerund.core.model import RunOverrides, RunSpecView
from rerund.core.redact import NOT_SHOWN

__all__ = ["SDK_ENV_KEYS", "expected_rerun_spec", "override_changes", "spec_changes"]

SDK_ENV_KEYS: tuple[str, ...] = ("LOG_LEVEL", "LOG_FORMAT", "USER_LOG_LEVEL")
_SCALARS = ("queue", "interruptible", "service_account", "overwrite_cache", "max_action_concurrency")


def expected_rerun_spec(
    source: RunSpecView,
    *,
    env: Mapping[str, str],
    labels: Mapping[str, str],
    overrides: RunOverrides,
) -> RunSpecView:
    """The ``RunSpecView`` a rerun of ``source`` must have (see the module docstring).

    ``labels`` are the decision's labels, rerund's lineage labels included.
    """
    values: dict[str, Any] = source.model_dump()
    values["env"] = {**source.env, **env}
    values["labels"] = {**source.labels, **labels}
    values["annotations"] = {**source.annotations, **overrides.annotations}
    for key in _SCALARS:
        value = getattr(overrides, key)
        if value is not None:
            values[key] = value
    return RunSpecView.model_validate(values)


def _show(value: Any) -> str:
    """A RunSpec value as the diff shows it: an empty queue / service account and a
    max_action_concurrency of 0 (the platform default) are "unset"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or value == "" or value == 0:
        return "unset"
    return repr(value)


def _map_changes(name: str, before: Mapping[str, str], after: Mapping[str, str], secret: bool) -> list[str]:
    out: list[str] = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        shown_new = f"<{NOT_SHOWN}>" if secret else repr(new)
        shown_old = f"<{NOT_SHOWN}>" if secret else repr(old)
        if old is None:
            out.append(f"{name} {key}: added {shown_new}")
        elif new is None:
            out.append(f"{name} {key}: removed")
        else:
            out.append(f"{name} {key}: {shown_old} -> {shown_new}")
    return out


def spec_changes(before: RunSpecView, after: RunSpecView) -> list[str]:
    """One line per field that differs between two specs, in a fixed order.

    Env values are never shown (they may be secrets; ``rerund.core.redact``): only that a key
    was added or changed.
    """
    out: list[str] = []
    out += _map_changes("env", before.env, after.env, secret=True)
    out += _map_changes("labels", before.labels, after.labels, secret=False)
    out += _map_changes("annotations", before.annotations, after.annotations, secret=False)
    for key in (*_SCALARS, "cache_lookup_scope"):
        old, new = getattr(before, key), getattr(after, key)
        if old != new:
            out.append(f"{key}: {_show(old)} -> {_show(new)}")
    return out


def override_changes(
    *, env: Mapping[str, str], labels: Mapping[str, str], overrides: RunOverrides
) -> list[str]:
    """The changes a decision makes when the source's spec is not known (a failure document
    without ``spec``): each key the rerun sets, against "the source's value"."""
    out = [f"env {k}: set ({NOT_SHOWN})" for k in sorted(env)]
    out += [f"labels {k}: set to {v!r}" for k, v in sorted(labels.items())]
    out += [f"annotations {k}: set to {v!r}" for k, v in sorted(overrides.annotations.items())]
    for key in _SCALARS:
        value = getattr(overrides, key)
        if value is not None:
            out.append(f"{key}: the source's value -> {_show(value)}")
    if overrides.force_rerun_actions:
        out.append("force_rerun_actions: " + ", ".join(overrides.force_rerun_actions))
    return out
