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

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from rerund.core.repro import RESULTS

__all__ = ["METRIC_NAMES", "Metrics", "SweepMetrics"]

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

    def init_checks(self, names: list[str]) -> None:
        """Create every (check, result) series of ``rerund_reproduction_runs_total`` at 0.

        The two gauges are left absent until a check's first result: a 0 there means "did not
        reproduce" and would fire the RerundReproductionCheckFailing alert.
        """
        for name in names:
            for result in RESULTS:
                self.reproduction_runs.labels(name, result)

    def init_policies(self, names: list[str]) -> None:
        """Create the per-policy lineage series at 0 for every policy in force.

        A counter series that first appears at 1 hides that first event from ``increase()``
        and ``rate()``; starting each policy's series at 0 when it is loaded makes the first
        recovered or exhausted lineage visible to dashboards and alerts.
        """
        for name in names:
            self.lineages_recovered.labels(name)
            self.lineages_exhausted.labels(name)
        for result in ("ok", "error"):
            self.policy_reloads.labels(result)
        for result in ("sent", "failed"):
            self.notifications.labels(result)


class SweepMetrics:
    """The metrics of one ``rerund sweep``, each carrying ``source="sweep"``.

    A sweep is a command, not a server: it writes these to a file in the Prometheus text format
    (``--metrics-file``, for node_exporter's textfile collector or a Pushgateway upload). They
    use the daemon's names for the same facts, so one query covers both: the daemon's series
    have no ``source`` label (``source=""`` in PromQL), a sweep's have ``source="sweep"``.
    """

    SOURCE = "sweep"

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._decisions = Counter(
            "rerund_decisions_total",
            "Decisions made, by policy ('' when none matched), kind and source.",
            ["policy", "decision", "source"],
            registry=registry,
        )
        self._issued = Counter(
            "rerund_reruns_issued_total",
            "Reruns created on the control plane, by policy, rerun scope and source.",
            ["policy", "scope", "source"],
            registry=registry,
        )
        self._outcomes = Counter(
            "rerund_rerun_outcomes_total",
            "Terminal phases of reruns, by policy, outcome and source.",
            ["policy", "outcome", "source"],
            registry=registry,
        )
        self._recovered = Counter(
            "rerund_lineages_recovered_total",
            "Lineages whose latest rerun SUCCEEDED, by policy and source.",
            ["policy", "source"],
            registry=registry,
        )
        self._errors = Counter(
            "rerund_control_plane_errors_total",
            "Failed control-plane calls, by RPC, code and source.",
            ["rpc", "code", "source"],
            registry=registry,
        )

    def decision(self, policy: str, decision: str) -> None:
        self._decisions.labels(policy, decision, self.SOURCE).inc()

    def issued(self, policy: str, scope: str) -> None:
        self._issued.labels(policy, scope, self.SOURCE).inc()

    def outcome(self, policy: str, phase: str) -> None:
        self._outcomes.labels(policy, phase.lower(), self.SOURCE).inc()
        if phase == "SUCCEEDED":
            self._recovered.labels(policy, self.SOURCE).inc()

    def error(self, rpc: str, code: str) -> None:
        self._errors.labels(rpc or "unknown", code or "unknown", self.SOURCE).inc()
