"""The Prometheus metrics of the daemon. Their names are a contract (dashboards and alerts in
``deploy/`` use them), so they are all declared here, in one place, and pinned by a test.

Every metric is registered on the ``registry`` passed in, never on the process-global default
registry: tests build a fresh ``CollectorRegistry()`` each and read it with
``get_sample_value``; the daemon serves its own registry on ``/metrics``.

Counters count facts once per process, de-duplicated through the audit ledger (a failure
re-observed after a restart is not counted again), so ``increase()`` over a restart stays
honest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from rerund.core.repro import RESULTS

__all__ = ["METRIC_NAMES", "SWEEP_METRIC_NAMES", "HeldBytes", "Metrics", "sweep_metrics"]


class HeldBytes(Protocol):
    """A cache that says what it holds (``rerund.sizedcache.SizedCache``)."""

    name: str
    held: int


_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

METRIC_NAMES = (
    "rerund_failures_observed_total",
    "rerund_decisions_total",
    "rerund_reruns_issued_total",
    "rerund_rerun_outcomes_total",
    "rerund_lineages_recovered_total",
    "rerund_lineages_exhausted_total",
    "rerund_detection_latency_seconds",
    "rerund_issue_latency_seconds",
    "rerund_control_plane_errors_total",
    "rerund_last_sync_timestamp_seconds",
    "rerund_policies_loaded",
    "rerund_policy_reloads_total",
    "rerund_budget_deferrals_total",
    "rerund_notifications_total",
    "rerund_reproduction_runs_total",
    "rerund_reproduction_last_result",
    "rerund_reproduction_last_run_timestamp_seconds",
    "rerund_internal_errors_total",
    "rerund_control_plane_concurrency",
    "rerund_control_plane_rpcs_total",
    "rerund_control_plane_peak_rps",
    "rerund_clock_skew_seconds",
    "rerund_ledger_reopened_total",
    "rerund_rerun_name_conflicts_total",
    "rerund_forged_lineage_labels_total",
    "rerund_read_cache_bytes",
    "rerund_cache_bytes",
    "rerund_ledger_bytes",
    "rerund_incidents_open",
    "rerund_incident_reruns_held",
    "rerund_leader",
    "rerund_leader_changes_total",
    "rerund_fenced_writes_total",
    "rerund_outbox_pending",
)


class Metrics:
    """All metrics of one daemon, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.failures_observed = Counter(
            "rerund_failures_observed_total",
            "Failed runs (FAILED, TIMED_OUT, ABORTED) observed, by scope.",
            ["project", "domain"],
            registry=registry,
        )
        self.decisions = Counter(
            "rerund_decisions_total",
            "Decisions made, by policy ('' when none matched) and kind (rerun|give_up|ignore|defer).",
            ["policy", "decision"],
            registry=registry,
        )
        self.reruns_issued = Counter(
            "rerund_reruns_issued_total",
            "Reruns this process created on the control plane, by policy and rerun scope.",
            ["policy", "scope"],
            registry=registry,
        )
        self.rerun_outcomes = Counter(
            "rerund_rerun_outcomes_total",
            "Terminal phases of reruns, by policy and outcome (succeeded|failed|aborted|timed_out).",
            ["policy", "outcome"],
            registry=registry,
        )
        self.lineages_recovered = Counter(
            "rerund_lineages_recovered_total",
            "Lineages whose latest rerun SUCCEEDED, by policy.",
            ["policy"],
            registry=registry,
        )
        self.lineages_exhausted = Counter(
            "rerund_lineages_exhausted_total",
            "Lineages given up on (give_up decisions), by policy.",
            ["policy"],
            registry=registry,
        )
        self.detection_latency = Histogram(
            "rerund_detection_latency_seconds",
            "Seconds from a run's failure to rerund's decision about it.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.issue_latency = Histogram(
            "rerund_issue_latency_seconds",
            "Seconds from the time a rerun was due to the time it was created.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.control_plane_errors = Counter(
            "rerund_control_plane_errors_total",
            "Failed control-plane calls, by RPC and code (lower-case Connect code).",
            ["rpc", "code"],
            registry=registry,
        )
        self.control_plane_concurrency = Gauge(
            "rerund_control_plane_concurrency",
            "Control-plane calls allowed in flight now (adaptive: grows while calls succeed with flat "
            "latency, halves on RESOURCE_EXHAUSTED or UNAVAILABLE; at most max_concurrent_reruns).",
            registry=registry,
        )
        self.control_plane_rpcs = Counter(
            "rerund_control_plane_rpcs_total",
            "RPCs rerund released to the control plane (each page of a listing, each RPC of the SDK's "
            "rerun path and each retry counted); what max_rps caps.",
            registry=registry,
        )
        self.control_plane_peak_rps = Gauge(
            "rerund_control_plane_peak_rps",
            "The most RPCs rerund released in one whole second since it started (by its own clock); "
            "never above max_rps when max_rps is set.",
            registry=registry,
        )
        self.clock_skew = Gauge(
            "rerund_clock_skew_seconds",
            "The control plane's clock minus this host's, measured on its last answer (HTTP Date; "
            "positive: this host is behind). rerund uses the control plane's time either way.",
            registry=registry,
        )
        self.read_cache_bytes = Gauge(
            "rerund_read_cache_bytes",
            "Bytes of control-plane answers kept for the SDK's rerun path (serialized size; bounded "
            "by a byte budget, error messages not kept).",
            registry=registry,
        )
        self.cache_bytes = Gauge(
            "rerund_cache_bytes",
            "Estimated bytes each long-lived cache holds (cache: labels, reads, seen, lineage_claims, "
            "forged_seen, reruns_seen, ledger_fresh, novel_fallback, spec_views, resources_views); each "
            "is bounded by a byte budget, evicting its oldest entries.",
            ["cache"],
            registry=registry,
        )
        self.ledger_bytes = Gauge(
            "rerund_ledger_bytes",
            "Size of the SQLite ledger on disk: database plus its WAL (bounded by ledger_retention "
            "and ledger_max_bytes).",
            registry=registry,
        )
        self.incidents_open = Gauge(
            "rerund_incidents_open",
            "Incidents open now: failures of one fingerprint that hold their reruns (the outage breaker)",
            registry=registry,
        )
        self.incident_reruns_held = Gauge(
            "rerund_incident_reruns_held",
            "Reruns held now by open incidents (released when a canary succeeds)",
            registry=registry,
        )
        self.last_sync = Gauge(
            "rerund_last_sync_timestamp_seconds",
            "Unix time of the last resync pass that listed every scope successfully.",
            registry=registry,
        )
        self.policies_loaded = Gauge(
            "rerund_policies_loaded",
            "Number of policies in force.",
            registry=registry,
        )
        self.policy_reloads = Counter(
            "rerund_policy_reloads_total",
            "Policy reloads, by result (ok|error).",
            ["result"],
            registry=registry,
        )
        self.budget_deferrals = Counter(
            "rerund_budget_deferrals_total",
            "Reruns deferred because a budget window was full, by budget.",
            ["budget"],
            registry=registry,
        )
        self.notifications = Counter(
            "rerund_notifications_total",
            "Webhook notifications, by result (sent|failed).",
            ["result"],
            registry=registry,
        )

        self.reproduction_runs = Counter(
            "rerund_reproduction_runs_total",
            "Finished reproduction check firings, by check and result (match|mismatch|failed|timeout).",
            ["check", "result"],
            registry=registry,
        )
        self.reproduction_last_result = Gauge(
            "rerund_reproduction_last_result",
            "1 when the latest firing of the check reproduced its reference (match), 0 otherwise.",
            ["check"],
            registry=registry,
        )
        self.reproduction_last_run = Gauge(
            "rerund_reproduction_last_run_timestamp_seconds",
            "Unix time the latest firing of the check finished.",
            ["check"],
            registry=registry,
        )
        self.internal_errors = Counter(
            "rerund_internal_errors_total",
            "Unexpected exceptions in a background task of the daemon (it was restarted), by task.",
            ["task"],
            registry=registry,
        )
        self.ledger_reopened = Counter(
            "rerund_ledger_reopened_total",
            "Times the ledger file was found deleted or replaced while the daemon ran and was reopened "
            "(the audit rows written to the old file in between are not in the new one).",
            registry=registry,
        )
        self.name_conflicts = Counter(
            "rerund_rerun_name_conflicts_total",
            "Rerun names found taken by a run that is not that rerun (another lineage's, or a "
            "squatter's); the lineage took its next salted name.",
            registry=registry,
        )
        self.forged_labels = Counter(
            "rerund_forged_lineage_labels_total",
            "Runs carrying rerund-* lineage labels that neither their relation nor the ledger "
            "vouch for: the labels are ignored (counted once per run).",
            registry=registry,
        )

        self.leader = Gauge(
            "rerund_leader",
            "1 while this replica leads (watches, decides, issues, notifies), 0 while it follows.",
            registry=registry,
        )
        self.leader_changes = Counter(
            "rerund_leader_changes_total",
            "Times this replica became the leader (0 or 1 per process: a replica that loses the "
            "lead exits and is restarted).",
            registry=registry,
        )
        self.fenced_writes = Counter(
            "rerund_fenced_writes_total",
            "Leader-only writes (a rerun's create, an outbox claim) refused because another "
            "replica leads in a newer term; this replica then stops acting.",
            registry=registry,
        )
        self.outbox_pending = Gauge(
            "rerund_outbox_pending",
            "Notifications in the outbox not delivered yet (the same on every replica: the state's).",
            registry=registry,
        )

    def track_held_bytes(
        self, read_cache_bytes: Callable[[], float], ledger_bytes: Callable[[], float]
    ) -> None:
        """Read ``rerund_read_cache_bytes`` and ``rerund_ledger_bytes`` at each scrape from the
        two callables the composition root hands in."""
        self.read_cache_bytes.set_function(read_cache_bytes)
        self.ledger_bytes.set_function(ledger_bytes)

    def track_caches(self, caches: Iterable[HeldBytes]) -> None:
        """Read ``rerund_cache_bytes{cache=...}`` of each of ``caches`` at each scrape."""

        def held(cache: HeldBytes) -> Callable[[], float]:
            return lambda: float(cache.held)

        for cache in caches:
            self.cache_bytes.labels(cache.name).set_function(held(cache))

    def init_checks(self, names: list[str]) -> None:
        """Create every (check, result) series of ``rerund_reproduction_runs_total`` at 0.

        The two gauges are left absent until a check's first result: a 0 there means "did not
        reproduce" and would fire the RerundReproductionCheckFailing alert.
        """
        for name in names:
            for result in RESULTS:
                self.reproduction_runs.labels(name, result)

    def init_policies(self, names: list[str]) -> None:
        """Create the per-policy series at 0 for every policy in force: decisions by kind,
        reruns issued by scope, lineages recovered and exhausted.

        A counter series that first appears at 1 hides that first event from ``increase()``
        and ``rate()``; starting each policy's series at 0 when it is loaded makes the first
        recovered or exhausted lineage visible to dashboards and alerts.
        """
        for name in names:
            self.lineages_recovered.labels(name)
            self.lineages_exhausted.labels(name)
            for kind in ("rerun", "give_up", "ignore", "defer"):
                self.decisions.labels(name, kind)
            for scope in ("run", "failed_action", "recover"):
                self.reruns_issued.labels(name, scope)
        for result in ("ok", "error"):
            self.policy_reloads.labels(result)
        for result in ("sent", "failed"):
            self.notifications.labels(result)


# What a ``rerund sweep`` exposes (``--metrics-file``): the facts it produces. Gauges such as
# ``rerund_last_sync_timestamp_seconds`` and the latency histograms are the daemon's alone (a
# sweep's "detection latency" is the age of the outage, and would skew the daemon's quantiles).
SWEEP_METRIC_NAMES = (
    "rerund_decisions_total",
    "rerund_reruns_issued_total",
    "rerund_rerun_outcomes_total",
    "rerund_lineages_recovered_total",
    "rerund_control_plane_errors_total",
)


class _Labelled(Collector):
    """The samples named ``names`` of ``inner``, each with ``labels`` added."""

    def __init__(self, inner: CollectorRegistry, names: tuple[str, ...], labels: dict[str, str]) -> None:
        self._inner = inner
        self._names = frozenset(names)
        self._labels = labels

    def collect(self) -> Iterable[Metric]:
        for family in self._inner.collect():
            samples = [s for s in family.samples if s.name in self._names]
            if not samples:
                continue
            out = Metric(family.name, family.documentation, family.type, family.unit)
            for sample in samples:
                out.add_sample(sample.name, {**sample.labels, **self._labels}, sample.value, sample.timestamp)
            yield out


def sweep_metrics(source: str = "sweep") -> tuple[Metrics, CollectorRegistry]:
    """The daemon's ``Metrics`` for a ``rerund sweep``, and the registry that exposes them: the
    ``SWEEP_METRIC_NAMES`` samples, each with ``source="sweep"``.

    One set of metric objects serves the daemon and the sweep (the recorder and the issuer
    count into it as they do for the daemon); only the exposition differs. In Prometheus the
    daemon's series have no ``source`` label (``source=""`` in PromQL), a sweep's have
    ``source="sweep"``: ``sum by (source) (rerund_reruns_issued_total)`` tells them apart.
    """
    inner = CollectorRegistry()
    metrics = Metrics(inner)
    exposed = CollectorRegistry()
    exposed.register(_Labelled(inner, SWEEP_METRIC_NAMES, {"source": source}))
    return metrics, exposed
