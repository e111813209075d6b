"""Which control plane the sandbox imitates: ``union`` (the default) or ``oss``.

rerund targets Union and self-hosted open-source Flyte 2, and the two runs services differ in
ways a client must cope with. A ``Profile`` holds every behavioural switch as one frozen value;
the services read it and nothing else decides. Faults (``service.Faults``) stay orthogonal:
any fault works with either profile.

``oss`` follows the open-source runs service, repository flyteorg/flyte, folder ``runs/``, read
at commit 6fadb90 (2026-08-21). Each field names the file it follows:

1. ``label_filters=False``: ListRuns / ListActions filter only on the column allowlist
   ``ActionColumnsSet`` (``runs/repository/models/action.go``); any other field, ``labels.<k>``
   included, is INVALID_ARGUMENT ``invalid filter field``, and EXISTS, NOT_EXISTS and
   VALUE_NOT_IN are INVALID_ARGUMENT ``unsupported filter function``
   (``runs/repository/impl/filters.go`` ``ConvertProtoFilters``). ``Run.labels`` stays empty in
   ListRuns (``runs/service/run_service.go`` ``convertRunToProto``).
2. ``create_returns_existing=True``: CreateRun of an existing name inserts with ``ON CONFLICT DO
   NOTHING`` and returns the existing run as a success (``runs/repository/impl/action.go``
   ``CreateAction``; ``run_service.go`` ``CreateRun``). No ALREADY_EXISTS.
3. ``sql_filter_values=True``: a filter's values go to SQL as they are
   (``filters.go`` ``basicFilter.QueryExpression``): one value is a scalar, several an array,
   so a single-value VALUE_IN (``= ANY('6')``), an EQUAL with several values (the SDK's
   ``"10"`` -> ``["1", "0"]``) and a phase given by name (``phase = 'FAILED'``) fail in the
   database and ListRuns answers INTERNAL (``run_service.go`` ``ListRuns``).
4. ``default_page=50``, ``max_page=200`` (larger is INVALID_ARGUMENT ``invalid limit``) and
   ``offset_tokens=True``: the token is ``str(offset + limit)`` and every page is a fresh query,
   so rows that change between pages are skipped or repeated
   (``runs/repository/impl/requests.go`` ``NewListResourceInputFromProto``, ``offsetFromToken``).
5. ``oss_watch=True``: WatchRuns sends a first message only when runs match (the 101 of a
   ``Limit: 100`` listing in the default order ``phase ASC, created_at DESC, run_name DESC``,
   ``oss_default_order``: queued and running runs first, so with 101 of them no failed run is
   in the snapshot; ListRuns without a sort answers in that order too, and a sort given gets
   ``run_name ASC`` appended as a tiebreaker: ``action.go`` ``ListActions``), honours only
   the ``project_id`` scope (org, task and cluster scopes
   get every run), pushes only a root action's phase change or an abort (no new runs, no child
   changes; ``action.go`` ``UpdateActionPhase`` / ``AbortRun`` -> ``notifyRunUpdate``), reads
   the run when it delivers the notification, and a watcher whose 100-slot buffer is full loses
   notifications (``action.go`` ``WatchAllRunUpdates`` / ``processNotifications``;
   ``run_service.go`` ``WatchRuns``, ``convertWatchRequestToListInput``, ``runMatchesFilter``).
6. ``error_only_failed=True`` and ``error_delay_s``: ``error_info`` is set only for FAILED and
   only once the last attempt's events arrived (the sandbox models the event lag as a delay
   after the phase says FAILED); TIMED_OUT has none; RunDetails carries the root action's own
   error (``run_service.go`` ``buildActionDetails``, ``GetRunDetails``).
7. ``abort_finished=True``: AbortRun has no phase condition; aborting a finished run turns its
   root ABORTED and bumps ``updated_at`` (``ended_at`` kept; the last attempt keeps its phase)
   (``action.go`` ``AbortRun``).
8. ``recover_acts=False``: the RECOVER relation is stored but not acted on (recovery is a full
   rerun; flyteorg/flyte#7825, open, adds validation). ``check_project=True``: CreateRun in an
   unknown project is NOT_FOUND (``runs/service/utils.go`` ``validateProjectExists``).
   ``action_list_task=False``: ListActions metadata carries no task id
   (``run_service.go`` ``convertActionToEnrichedProto``). ``identifiers_org=False``:
   identifiers carry no org (``convertRunToProto``); the org of a request is ignored.
9. ``server_auth=False``, ``rate_limit=False``: the open-source service authenticates nothing
   itself (a load balancer does, ``run_service.go`` ``CreateRun`` comment) and has no server
   rate limit; Union enforces both.
10. ``listed_relation=False``: a listed or watched ``Run`` carries no ``ActionMetadata.relation``
   (nothing under ``runs/`` fills it); the relation a rerun's CreateRun sent is stored with the
   RunSpec and served by GetRunDetails (``run_service.go`` ``persistRunModel``,
   ``extractRunSpecFromActionModel``), on both profiles.
11. ``error_codes=False``: an ``ErrorInfo`` carries a message and a kind, nothing else: the
   executor copies only ``Message`` and ``Kind`` of the plugin's ``core.ExecutionError``
   (``executor/pkg/controller/taskaction_controller.go`` ``toActionErrorInfo``), so no
   ``code`` and no ``gpu_fault`` reach a client. The messages take the forms the pod plugin
   writes (``flyteplugins/go/tasks/pluginmachinery/flytek8s/pod_helper.go``), see
   ``executor_error``: an OOM is USER ``\r\n[primary] terminated with exit code (137). Reason
   [OOMKilled]. Message: \n.`` (``DeterminePrimaryContainerPhase``, the ``OOMKilled`` case);
   a SIGKILL of the primary container (a preemption) is SYSTEM with the same form and the
   container's own reason (the ``isTerminatedWithSigKill`` case, and ``DemystifyFailure``
   whose code ``Interrupted`` is dropped); ``ImagePullBackOff`` is USER ``Grace period [3m0s]
   exceeded|<condition message>|<waiting message>`` and ``InvalidImageName`` USER
   ``<condition message>|<waiting message>`` (``classifyWaitingContainer``,
   ``GetMessageAfterGracePeriod``; ``ErrImagePull`` is transitional there and ends as
   ``ImagePullBackOff``; the waiting message keeps the workload's text). Everything else keeps its
   message and kind.
12. ``pod_labels_checked=True``: the run's labels and annotations go onto its pod
   (``flyteplugins/go/tasks/pluginmachinery/flytek8s/pod_helper.go`` ``BuildPodWithSpec`` /
   ``ToK8sPodSpec``: ``GetLabels``, ``GetAnnotations``); a label value Kubernetes refuses (over 63
   characters, or not ``[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?``) fails the pod's creation, and
   the run stays QUEUED with nothing said (``invalid_label_value``).
13. ``missing_data_empty=True``: GetActionData of an action whose input or output blob is gone
   from storage answers *empty* inputs and outputs and no URIs, not NOT_FOUND: the data proxy
   reads both blobs and a not-found read leaves the empty message it started with
   (``dataproxy/service/dataproxy_service.go`` ``GetActionData``, ``storage.IsNotFound``), so
   the SDK's rerun path reads no inputs and the task would run on its defaults. The union
   profile answers NOT_FOUND naming the inputs (the SDK then raises
   ``SourceRunInputsUnavailableError``). ``SandboxHandle.lose_data(run)`` removes a run's blobs.
14. ``stamps_run_spec=True``: CreateRun stamps the RunSpec's ``run_start_time`` (now) and
   ``raw_data_storage`` (the storage prefix) only when the request leaves them unset
   (``runs/service/run_service.go`` ``CreateRun``; the real service stamps the start time only for
   task images of SDK >= 2.3.6, and one configured prefix): the SDK's rerun copies the source's
   RunSpec, so a rerun inherits both. The sandbox's prefix names the run, to tell them apart.
15. ``echo_request_ids=True``: GetRunDetails, GetActionDetails and WatchActionDetails answer
   with the request's own identifier, its org included (``run_service.go`` ``GetRunDetails``:
   ``rootActionID := {Run: req.Msg.RunId}``; ``getActionDetails(req.Msg.GetActionId())``), while
   listings carry none (8.). ``empty_run_details_stream=True``: WatchRunDetails sends an empty
   ``RunDetails`` at start and on each update and never ends by itself (``run_service.go``
   ``WatchRunDetails``: "Would populate from run model"); rerund never uses it.
16. ``not_found_for_db_errors=True``: with the ``db_errors`` fault, a GetRunDetails the database
   fails answers NOT_FOUND (``run_service.go`` ``GetRunDetails`` wraps every ``GetRun`` error in
   ``CodeNotFound``); the union profile answers INTERNAL, a database error told as one.
17. ``validates_requests=False``: the run service's ``req.Msg.Validate()`` is the
   ``protoc-gen-validate`` code (``buf.gen.go.yaml``: ``buf.build/bufbuild/validate-go``), which
   does not read the protos' ``buf.validate`` annotations (``gen/go/flyteidl2/common/
   identifier.pb.validate.go`` ``RunIdentifier.validate``: "no validation rules for Org",
   ``Project``, ``Domain``, ``Name``; ``runs/service/settings_service.go`` says as much), and no
   protovalidate interceptor is installed. So an empty org (ignored) or domain is accepted by
   CreateRun, the run created in domain ``""``; an empty project is INTERNAL ``failed to
   validate project: ... id is required`` (``runs/service/utils.go`` ``validateProjectExists``
   wraps the ProjectService's INVALID_ARGUMENT, ``project_service.go`` ``GetProject``); the
   run name is still checked (``run_service.go`` ``validateRunName``). CreateRun does not check
   that ``run_spec.relation.related_to`` exists (stored as sent), that offloaded inputs exist
   (``inputPrefix = OffloadedInputData.GetUri()``; the sandbox runs it with no inputs: what the
   task's pod does then is outside ``runs/`` and not modelled), nor the task's resources: a
   run asking more than the platform has is created and its pod is Unschedulable, which the
   plugin keeps QUEUED (``flyteplugins/.../flytek8s/pod_helper.go`` ``DemystifyPending``,
   ``PodReasonUnschedulable``). Reads of a run with an empty field find no row: NOT_FOUND,
   not INVALID_ARGUMENT (``GetRunDetails``, ``AbortRun``: ``sql.ErrNoRows``). ListRuns
   honours the ``project_id`` (``project``/``domain`` equal, empty ones included),
   ``task_name``, ``task_id`` and ``trigger_name`` scopes and lists every run for ``org`` or
   no scope (``run_service.go`` ``ListRuns``; ``runs/repository/impl/filters.go``
   ``NewProjectIdFilter``, ``NewRunTaskNameFilter``, ``NewRunTaskIdFilter``).
18. ``abort_any_action=True``: AbortAction aborts the action it names, the root or any child,
   with no phase condition: ``UPDATE actions SET phase = ABORTED ... ended_at =
   COALESCE(ended_at, ...) WHERE ... name = $9`` (``runs/repository/impl/action.go``
   ``AbortAction``; ``run_service.go`` ``AbortAction``), so a child that had finished turns
   ABORTED while its last attempt keeps its phase. It notifies action watchers only
   (``notifyActionUpdate``, no ``notifyRunUpdate``; the sandbox does not model that
   difference). What a parent task does when its child is aborted is the SDK's, not the
   service's: not modelled. The union profile aborts only ``a0`` (the run).
19. ``event_cap=500``: an action's attempts are built from its first 500 events only,
   ``ORDER BY attempt ASC, phase ASC, version ASC LIMIT 500`` (``run_service.go``
   ``getAttempts``: ``ListEvents(ctx, actionId, 500)``; ``runs/repository/impl/action.go``
   ``ListEvents``), and the error of a FAILED action is the one of its last attempt, only
   when that attempt's number equals ``status.attempts`` (``buildActionDetails``), taken
   from the attempt's last terminal event (``mergeEvents``). An execution that wrote 500
   events or more before its terminal one (QUEUED, RUNNING and the workload's
   ``status_events``) is served without that event: its attempt's phase is the last one kept
   (RUNNING) and ``error_info`` is set to the attempt's nil error, which protobuf-go writes
   as a present, empty message. The error never arrives, and nothing notifies a watcher when
   events arrive (``WatchRuns`` pushes on root phase changes only, item 5).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from flyteidl2.common import list_pb2

from rerund.errors import ConfigError

__all__ = [
    "OSS",
    "OSS_COLUMNS",
    "PROFILES",
    "UNION",
    "OssQuery",
    "Profile",
    "executor_error",
    "invalid_label_value",
    "oss_default_order",
    "oss_query",
    "profile_named",
    "strip_error_codes",
    "strip_org",
]

F = list_pb2.Filter
_FN_NAMES = {v: k for k, v in F.Function.items()}


@dataclass(frozen=True)
class Profile:
    """Every behavioural switch of the sandbox (see the module docstring for the real file
    each ``oss`` value follows). ``union`` keeps the sandbox's own behaviour."""

    name: str
    label_filters: bool = True
    create_returns_existing: bool = False
    sql_filter_values: bool = False
    default_page: int = 100
    max_page: int = 1000
    refuse_large_page: bool = False
    offset_tokens: bool = False
    oss_watch: bool = False
    watch_buffer: int = 100
    watch_snapshot: int = 100
    error_only_failed: bool = False
    error_delay_s: float = 0.0
    root_error_in_details: bool = False
    abort_finished: bool = False
    recover_acts: bool = True
    check_project: bool = False
    action_list_task: bool = True
    identifiers_org: bool = True
    server_auth: bool = True
    rate_limit: bool = True
    listed_relation: bool = True
    error_codes: bool = True
    pod_labels_checked: bool = False
    missing_data_empty: bool = False
    stamps_run_spec: bool = False
    echo_request_ids: bool = False
    empty_run_details_stream: bool = False
    not_found_for_db_errors: bool = False
    validates_requests: bool = True
    abort_any_action: bool = False
    event_cap: int = 0

    def with_error_delay(self, seconds: float) -> Profile:
        """This profile with another error-details delay (``--error-delay``)."""
        if seconds < 0:
            raise ConfigError(f"--error-delay must be >= 0, got {seconds}")
        from dataclasses import replace

        return replace(self, error_delay_s=seconds)


UNION = Profile(name="union")
OSS = Profile(
    name="oss",
    label_filters=False,
    create_returns_existing=True,
    sql_filter_values=True,
    default_page=50,
    max_page=200,
    refuse_large_page=True,
    offset_tokens=True,
    oss_watch=True,
    watch_buffer=100,
    watch_snapshot=101,
    error_only_failed=True,
    error_delay_s=1.0,
    root_error_in_details=True,
    abort_finished=True,
    recover_acts=False,
    check_project=True,
    action_list_task=False,
    identifiers_org=False,
    server_auth=False,
    rate_limit=False,
    listed_relation=False,
    error_codes=False,
    pod_labels_checked=True,
    missing_data_empty=True,
    stamps_run_spec=True,
    echo_request_ids=True,
    empty_run_details_stream=True,
    not_found_for_db_errors=True,
    validates_requests=False,
    abort_any_action=True,
    event_cap=500,
)
PROFILES = {p.name: p for p in (UNION, OSS)}


def profile_named(name: str) -> Profile:
    """The profile called ``name``; ``ConfigError`` naming the choices otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(
            f"--profile {name!r} is not a sandbox profile; choose one of {', '.join(PROFILES)}"
        ) from None


# -- ListRuns / ListActions as the open-source service parses them ------------------------------

# ``ActionColumnsSet`` (runs/repository/models/action.go): filters and sort keys.
OSS_COLUMNS = (
    "project",
    "domain",
    "run_name",
    "phase",
    "action_type",
    "run_source",
    "created_by_subject",
    "trigger_task_name",
    "trigger_name",
    "trigger_revision",
    "trigger_type",
    "task_project",
    "task_domain",
    "task_name",
    "task_version",
    "function_name",
    "created_at",
    "updated_at",
    "ended_at",
    "duration_ms",
)
_SUPPORTED = frozenset(
    {
        F.EQUAL,
        F.NOT_EQUAL,
        F.GREATER_THAN,
        F.GREATER_THAN_OR_EQUAL,
        F.LESS_THAN,
        F.LESS_THAN_OR_EQUAL,
        F.CONTAINS,
        F.VALUE_IN,
        F.ENDS_WITH,
        F.NOT_ENDS_WITH,
        F.CONTAINS_CASE_INSENSITIVE,
    }
)
_INTEGER_COLUMNS = frozenset({"phase", "action_type", "trigger_revision", "duration_ms"})
_TIME_COLUMNS = frozenset({"created_at", "updated_at", "ended_at"})
_LIKE = frozenset({F.CONTAINS, F.ENDS_WITH, F.NOT_ENDS_WITH, F.CONTAINS_CASE_INSENSITIVE})


def _invalid(message: str) -> ConnectError:
    return ConnectError(Code.INVALID_ARGUMENT, message)


def _sql_error(rpc: str, message: str) -> ConnectError:
    return ConnectError(
        Code.INTERNAL,
        f"{rpc}: the database refused the query ({message}); open-source Flyte answers INTERNAL here",
    )


def _time(value: str) -> datetime | None:
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


@dataclass(frozen=True)
class _Cond:
    column: str
    function: int
    value: Any  # one value (scalar) or a tuple (several values: an SQL array)

    def matches(self, row: Callable[[str], Any]) -> bool:
        have = row(self.column)
        fn = self.function
        if fn == F.VALUE_IN:
            return have is not None and have in self.value
        if have is None:  # SQL NULL compares as unknown: the row does not match
            return False
        want = self.value
        if fn == F.EQUAL:
            return bool(have == want)
        if fn == F.NOT_EQUAL:
            return bool(have != want)
        if fn == F.GREATER_THAN:
            return bool(have > want)
        if fn == F.GREATER_THAN_OR_EQUAL:
            return bool(have >= want)
        if fn == F.LESS_THAN:
            return bool(have < want)
        if fn == F.LESS_THAN_OR_EQUAL:
            return bool(have <= want)
        if fn == F.CONTAINS:
            return str(want) in str(have)
        if fn == F.ENDS_WITH:
            return str(have).endswith(str(want))
        if fn == F.NOT_ENDS_WITH:
            return not str(have).endswith(str(want))
        return str(want).lower() in str(have).lower()  # CONTAINS_CASE_INSENSITIVE


@dataclass(frozen=True)
class OssQuery:
    """A parsed open-source ListRequest: limit, offset, sort and conditions over columns."""

    limit: int
    offset: int
    sort: tuple[tuple[str, bool], ...]  # (column, ascending)
    conditions: tuple[_Cond, ...]

    def matches(self, row: Callable[[str], Any]) -> bool:
        return all(c.matches(row) for c in self.conditions)

    def page(
        self, rows: Sequence[Any], column: Callable[[Any, str], Any], name: Callable[[Any], str]
    ) -> tuple[list[Any], str]:
        """Sort the matching ``rows`` and cut the page; the token is the next row offset."""
        ordered = sorted(rows, key=name)  # the tiebreaker appended to a sort given (run_name ASC)
        if self.sort:
            for col, asc in reversed(self.sort):

                def key(r: Any, col: str = col) -> tuple[int, Any]:
                    return _sortable(column(r, col))

                ordered.sort(key=key, reverse=not asc)
        else:
            ordered = oss_default_order(rows, column, name)
        page = ordered[self.offset : self.offset + self.limit + 1]
        if len(page) > self.limit:
            return page[: self.limit], str(self.offset + self.limit)
        return page, ""


def oss_default_order(
    rows: Sequence[Any], column: Callable[[Any, str], Any], name: Callable[[Any], str]
) -> list[Any]:
    """``rows`` in the open-source service's order when a request gives no sort: ``ORDER BY
    phase ASC, created_at DESC, run_name DESC`` (``runs/repository/impl/action.go``
    ``ListActions``): queued and running runs first, FAILED (6) after SUCCEEDED (5)."""
    ordered = sorted(rows, key=name, reverse=True)
    ordered.sort(key=lambda r: _sortable(column(r, "created_at")), reverse=True)
    ordered.sort(key=lambda r: _sortable(column(r, "phase")))
    return ordered


def _sortable(value: Any) -> tuple[int, Any]:
    return (0, "") if value is None else (1, value)


def oss_query(request: list_pb2.ListRequest, rpc: str, profile: Profile) -> OssQuery:
    """Parse ``request`` the way the open-source service does, in its order: limit, sort,
    filters, token (``requests.go``). INVALID_ARGUMENT for what it refuses up front, INTERNAL
    for what it sends to the database and the database refuses."""
    limit = int(request.limit) or profile.default_page
    if limit > profile.max_page:
        raise _invalid(f"{rpc}: invalid limit: {limit} (exceeds maximum of {profile.max_page})")
    sort: list[tuple[str, bool]] = []
    keys = list(request.sort_by_fields) or (
        [request.sort_by] if request.HasField("sort_by") and request.sort_by.key else []
    )
    for s in keys:
        if s.key not in OSS_COLUMNS:
            raise _invalid(f"{rpc}: invalid sort field: {s.key}")
        sort.append((s.key, s.direction == list_pb2.Sort.ASCENDING))
    conditions: list[_Cond] = []
    for f in request.filters:
        if f.field not in OSS_COLUMNS:
            raise _invalid(f"{rpc}: failed to convert filters: invalid filter field: {f.field}")
        if f.function not in _SUPPORTED:
            raise _invalid(
                f"{rpc}: failed to convert filters: unsupported filter function: "
                f"{_FN_NAMES.get(f.function, str(f.function))}"
            )
        if not f.values:
            raise _invalid(f"{rpc}: failed to convert filters: filter {f.field} has no values")
        conditions.append(_condition(f, rpc))
    offset = 0
    if request.token:
        try:
            offset = int(request.token)
        except ValueError:
            offset = -1
        if offset < 0:
            raise _invalid(f'{rpc}: invalid token: "{request.token}"')
    return OssQuery(limit=limit, offset=offset, sort=tuple(sort), conditions=tuple(conditions))


def _condition(f: list_pb2.Filter, rpc: str) -> _Cond:
    fn = f.function
    fname = _FN_NAMES.get(fn, str(fn))
    values = list(f.values)
    if fn == F.VALUE_IN and len(values) == 1:
        raise _sql_error(rpc, f"{f.field} VALUE_IN with one value {values[0]!r} is not an array for = ANY(?)")
    if fn != F.VALUE_IN and len(values) > 1:
        raise _sql_error(
            rpc, f"{f.field} {fname} with {len(values)} values {values!r} is an array, not one value"
        )
    col = f.field
    if col in _INTEGER_COLUMNS:
        if fn in _LIKE:
            raise _sql_error(rpc, f"LIKE on the integer column {col}")
        try:
            ints = tuple(int(v) for v in values)
        except ValueError:
            raise _sql_error(rpc, f"invalid input syntax for type integer: {values!r} in {col}") from None
        return _Cond(col, fn, ints if fn == F.VALUE_IN else ints[0])
    if col in _TIME_COLUMNS:
        if fn in _LIKE:
            raise _sql_error(rpc, f"LIKE on the timestamp column {col}")
        times = tuple(_time(v) for v in values)
        if any(t is None for t in times):
            raise _sql_error(rpc, f"invalid input syntax for type timestamp: {values!r} in {col}")
        return _Cond(col, fn, times if fn == F.VALUE_IN else times[0])
    return _Cond(col, fn, tuple(values) if fn == F.VALUE_IN else values[0])


# -- identifiers without org -----------------------------------------------------------------

_ORG_MESSAGES = frozenset({"flyteidl2.common.RunIdentifier", "flyteidl2.task.TaskIdentifier"})
_KEEP_AS_SENT = frozenset({"run_spec", "task"})  # stored as the client sent them


def strip_org(msg: Any) -> Any:
    """Clear ``org`` on every run and task identifier in ``msg`` (in place; returns it), except
    inside specs the service stores as sent. Open-source identifiers carry no org."""
    if msg.DESCRIPTOR.full_name in _ORG_MESSAGES:
        msg.ClearField("org")
        return msg
    for field, value in msg.ListFields():
        if field.message_type is None or field.name in _KEEP_AS_SENT:
            continue
        if hasattr(value, "DESCRIPTOR"):  # a message
            strip_org(value)
        elif not hasattr(value, "items"):  # a repeated message field (maps hold no identifiers)
            for item in value:
                strip_org(item)
    return msg


# -- errors as the open-source executor writes them -------------------------------------------

_SIGKILL_FORM = "\r\n[primary] terminated with exit code (137). Reason [{reason}]. Message: \n{message}."
_UNREADY = "containers with unready status: [primary]"


def executor_error(kind: str, code: str, message: str) -> tuple[str, str]:
    """``(kind, message)`` of the ``ErrorInfo`` open-source Flyte serves for an execution that
    failed with ``kind``/``code``/``message`` (the module docstring, item 11, names the code)."""
    if "OOM" in code.upper():
        return "USER", _SIGKILL_FORM.format(reason="OOMKilled", message="")
    if "Interrupted" in code:
        return "SYSTEM", _SIGKILL_FORM.format(reason="Error", message="")
    if "ImagePullBackOff" in code or "ErrImagePull" in code:  # ErrImagePull ends as ImagePullBackOff
        # the kubelet's waiting message; the sandbox keeps the workload's text in it
        waiting = message if "Back-off pulling image" in message else f"Back-off pulling image ({message})"
        return "USER", f"Grace period [3m0s] exceeded|{_UNREADY}|{waiting}"
    if "InvalidImageName" in code:
        waiting = (
            'Failed to apply default image tag "ghcr.io/acme/App:latest": couldn\'t parse image '
            'reference "ghcr.io/acme/App:latest": invalid reference format'
        )
        return "USER", f"{_UNREADY}|{waiting}"
    return kind, message


_KIND_NAMES = {1: "USER", 2: "SYSTEM"}
_KIND_VALUES = {v: k for k, v in _KIND_NAMES.items()}


def strip_error_codes(msg: Any) -> Any:
    """Rewrite every ``ErrorInfo`` in ``msg`` (in place; returns it) as ``executor_error`` says:
    message and kind only, no code, no gpu_fault."""
    if msg.DESCRIPTOR.full_name == "flyteidl2.workflow.ErrorInfo":
        kind, message = executor_error(_KIND_NAMES.get(int(msg.kind), ""), msg.code, msg.message)
        msg.Clear()
        msg.message = message
        msg.kind = _KIND_VALUES.get(kind, 0)
        return msg
    for field, value in msg.ListFields():
        if field.message_type is None:
            continue
        if hasattr(value, "DESCRIPTOR"):
            strip_error_codes(value)
        elif not hasattr(value, "items"):
            for item in value:
                strip_error_codes(item)
    return msg


_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?\Z")


def invalid_label_value(values: Mapping[str, str]) -> str | None:
    """The first key of ``values`` whose value is not a Kubernetes label value (None: all are)."""
    for key, value in values.items():
        if len(value) > 63 or _LABEL_VALUE.match(value) is None:
            return key
    return None
