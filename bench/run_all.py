"""``make bench``: run every benchmark, write ``bench/results/<name>.json``, and regenerate the
result tables in ``bench/README.md`` (between ``<!-- bench:begin -->`` and
``<!-- bench:end -->``; the rest of the README, including the reliability section, is left
alone).

Each benchmark runs in its own process (so one's memory and threads do not disturb the next),
prints its JSON and a table, and writes its result file.

    .venv/bin/python bench/run_all.py                  # all of them (about 15 minutes)
    .venv/bin/python bench/run_all.py --only latency,storm
    .venv/bin/python bench/run_all.py --quick          # reduced sizes, decide skipped; writes nothing
    .venv/bin/python bench/run_all.py --readme-only    # tables from the existing results
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import harness as h

BENCHMARKS = (
    "decide",
    "latency",
    "storm",
    "rpc_cost",
    "cron",
    "memory",
    "watch",
    "production",
    "message_memory",
    "ledger",
    "defaults",
    "startup",
)
# Rendered when their results exist, never run by ``make bench`` (``make soak``: 30 minutes).
EXTRA = ("soak", "soak-short")
README = h.BENCH / "README.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

TITLES = {
    "latency": "1. Reaction latency (failure terminal -> rerun created)",
    "storm": "2. Storm throughput",
    "rpc_cost": "3. Control-plane cost (RPCs per handled failure)",
    "decide": "4. Matching cost (microseconds per decision)",
    "cron": "5. Side by side: a cron-style `flyte` CLI script",
    "memory": "6. Memory and ledger growth",
    "watch": "7. Sandbox WatchRuns delivery (phase change -> update received)",
    "production": "8. Production conditions: WAN latency, a rate-limiting gateway, CPU per rerun",
    "message_memory": "9. Memory with 5 MB error messages",
    "ledger": "10. Ledger bytes per ignored failure",
    "defaults": "11. Default ceiling: max_concurrent_reruns 8 vs 64 (WAN storm, rate-limited storm)",
    "startup": "14. Start-up: what each `rerund` command costs before it does anything",
    "soak": "12. Soak (`make soak`, not part of `make bench`)",
    "soak-short": "12. Soak, short run (`SOAK_MINUTES`, not part of `make bench`)",
}
DECIDE_COLUMNS = ["policies", "patterns", "first_us", "last_us", "none_us", "cold_us", "naive_us", "load_ms"]


def _load(name: str) -> dict[str, Any] | None:
    path = h.RESULTS / f"{name}.json"
    if not path.exists():
        return None
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def _runs(rows: dict[str, Any], who: str) -> str:
    runs = rows.get(who, {}).get("cpu_ms_per_rerun_runs") or [rows.get(who, {}).get("cpu_ms_per_rerun")]
    return "/".join(str(r) for r in runs)


def _per_rpc(rows: dict[str, Any], who: str, rpcs: float | None) -> str:
    row = rows.get(who, {})
    n = rpcs or row.get("rpcs_per_rerun") or 1
    return f"{row.get('cpu_ms_per_rerun', 0) / n:.2f}"


def _yes(v: Any) -> str:
    return "**met**" if v is True else "**not met**" if v is False else "n/a"


def _notes(name: str, doc: dict[str, Any]) -> list[str]:
    """The derived headline lines under each table."""
    if name == "watch":
        [row] = doc["results"]
        return [
            f"Goal of the sandbox issue (every update within {doc['goal_ms']:.0f} ms of the phase change): "
            f"{_yes(doc.get('goal_met'))} (p50 {row['p50']} ms, p99 {row['p99']} ms over {row['n']} updates)."
        ]
    if name == "latency":
        rows = {r["mode"]: r for r in doc["results"]}
        w = rows.get("watch", {})
        return [
            f"Goal with the subscription (p50 < 100 ms, p99 < 250 ms): {_yes(doc.get('goal_met'))} "
            f"(p50 {w.get('p50_ms')} ms, p99 {w.get('p99_ms')} ms over {w.get('n')} failures).",
            "Polling only is bounded by the interval (plus the 0.2 s coalescing pause after each pass); "
            "the 30 s mode uses fewer samples to stay within 5 minutes.",
        ]
    if name == "storm":
        return [
            f"rerund reaches {doc['share_of_createrun_ceiling']:.0%} of the sandbox's bare CreateRun "
            f"capacity and {doc['share_of_sdk_ceiling']:.0%} of the SDK's own rerun path "
            f"(same concurrency, {doc['failures']:,} failures; the sandbox and the daemon share the "
            "same 2 cores).",
        ]
    if name == "rpc_cost":
        g, t = doc["goals_met"], doc["totals"]
        return [
            f"Per ignored failure: {t['ignored']} RPCs (goal <= 3: {_yes(g['ignored_at_most_3'])}). "
            f"Per rerun: {t['rerun']} RPCs vs the SDK's rerun path {t['sdk_rerun_path']} + 3 "
            f"(goal: {_yes(g['rerun_at_most_sdk_plus_3'])}).",
            "The reads behind every handled failure are GetRunDetails (lineage labels, relation), "
            "ListActions (the failed child action) and GetActionDetails (its error); the rest of the "
            "ignored total is the amortised resync listing. For a rerun, the SDK's `rerun()` reads "
            "the run again by name (GetRunDetails; GetActionDetails too when one action is rerun): "
            "rerund answers those with the reads it has just made, so they are not sent again.",
            *_oss_rpc_notes(doc),
            f"No RPC repeated for the same run: {_yes(g['no_rpc_repeated_per_run'])}; "
            f"repeated when rerun: {', '.join(doc['repeats_rerun']['repeated']) or 'none'}; "
            f"when ignored: {', '.join(doc['repeats_ignored']['repeated']) or 'none'}. "
            f"Failures per window: {doc['failures_per_window']}, poll interval {doc['poll_interval']}.",
        ]
    if name == "startup":
        rows = {r["command"]: r for r in doc["results"]}
        check = rows.get("rerund check policies/", {})
        ready = rows.get("rerund run: start -> /readyz 200", {})
        if "cpu_ms_before" not in check:
            return ["Medians of the CPU (user + system) and wall milliseconds of whole processes."]
        return [
            f"Medians of {doc['runs']} alternating runs, {doc['sides']['before']['commit']} (before) and "
            f"{doc['sides']['after']['commit']} (after), on the same machine in one call. "
            f"`rerund check`: {check['cpu_ms_before']} -> {check['cpu_ms_after']} ms of CPU; the daemon "
            f"from start to `/readyz` 200: {ready.get('wall_ms_before')} -> {ready.get('wall_ms_after')} ms. "
            "`heavy`: what the process loaded of flyte, the sandbox, SQLAlchemy/psycopg/Alembic (sql) and "
            "the daemon's runtime; `import_ms`: `python -X importtime`'s own total."
        ]
    if name == "decide":
        return [f"Goal: {doc.get('goal')}. Messages of {doc.get('message_bytes')} bytes."]
    if name == "production":
        g = doc["goals_met"]
        rows = {r["who"]: r for r in doc["results"]}
        limited = [r for w, r in rows.items() if "100/s" in w]
        return [
            f"WAN storm ({doc['failures']:,} failures, 50 ms on every RPC): rerund reaches "
            f"{doc['wan_ratio_to_sdk_path']}x the SDK rerun path's rate (goal >= 4x: "
            f"{_yes(g['wan_4x_sdk_path'])}); never above its max_rps "
            f"({rows['rerund (50 ms)']['max_rps']}): {_yes(g['wan_never_above_max_rps'])} — at most "
            f"{rows['rerund (50 ms)'].get('peak_sent_rps', '?')} RPCs sent in one second by "
            "rerund's clock (goal: at most max_rps); "
            f"the sandbox counted at most {rows['rerund (50 ms)']['peak_rpc_per_s']} arriving in one second "
            "by its own (goal: at most 2% above, the jitter of its scheduling on this loaded machine).",
            "Rate-limited storm (100 RPC/s): "
            + "; ".join(
                f"{r['who']}: {r['share_of_allowed']:.0%} of what the limit allows for its RPC mix, "
                f"{r['resource_exhausted_share']:.1%} RESOURCE_EXHAUSTED"
                for r in limited
            )
            + " (goals >= 80% and <= 5%); 0 duplicates and 0 missed: "
            + f"{_yes(g['exact_0_duplicates_0_missing'])}.",
            f"CPU per rerun: rerund {doc['cpu_ms_more_than_sdk_path']:+} ms against the SDK path's client "
            f"(goal at most +2 ms: {_yes(g['cpu_at_most_2ms_more_than_sdk_path'])}); medians of the runs "
            f"taken alternately — SDK path {_runs(rows, 'SDK rerun path, 50 ms (concurrency 8)')} ms, "
            f"rerund {_runs(rows, 'rerund (50 ms)')} ms. Per RPC: rerund "
            f"{_per_rpc(rows, 'rerund (50 ms)', None)} ms "
            f"({rows['rerund (50 ms)']['rpcs_per_rerun']} a rerun), the SDK path's client "
            f"{_per_rpc(rows, 'SDK rerun path, 50 ms (concurrency 8)', 5)} ms (5 a rerun). The "
            "SDK path's own read of the source (GetRunDetails) is answered with the one rerund made "
            "to decide, so what rerund adds is the 2 RPCs that find the failing action and its error "
            "(ListActions, GetActionDetails, as `first_failure()` does), the WatchRuns messages, "
            "the decision and its ledger rows, and pacing every RPC to max_rps.",
        ]
    if name == "cron":
        r = doc["ratio_script_over_rerund"]
        return [
            f"The script takes {r['seconds']}x rerund's time and {r['cpu_s']}x its CPU on the "
            f"same {doc['failures']}-failure storm, each crashed once mid-way (SIGKILL right after "
            "the control plane served the creator's (N/2)-th CreateRun, then restarted).",
        ]
    if name == "memory":
        ret = doc["retention"]
        rows = doc["results"]
        bound = [r for r in rows if 0 < r["failures"] <= 20000]
        after = [r for r in rows if r["failures"] >= 20000]
        slopes = ""
        if len(bound) >= 2 and len(after) >= 2:
            before_kib = (
                (bound[-1]["rss_mib"] - bound[0]["rss_mib"])
                * 1024
                / (bound[-1]["failures"] - bound[0]["failures"])
            )
            after_kib = (
                (after[-1]["rss_mib"] - after[0]["rss_mib"])
                * 1024
                / (after[-1]["failures"] - after[0]["failures"])
            )
            slopes = (
                f" RSS per failure: {before_kib:.1f} KiB up to 20,000 failures (the seen-cache's capacity), "
                f"{after_kib:.1f} KiB after it."
            )
        half = [r for r in rows if r["failures"] >= rows[-1]["failures"] / 2]
        if len(half) >= 2:
            slopes += (
                f" Second half ({half[0]['failures']:,} -> {half[-1]['failures']:,} failures): "
                f"{half[-1]['rss_mib'] - half[0]['rss_mib']:+.1f} MiB."
            )
        return [
            f"RSS growth from the first wave to the last: {doc['rss_growth_after_first_wave_mib']} MiB "
            f"over {doc['failures']:,} failures (resync overlap {doc.get('overlap', '5m')}).{slopes} "
            f"Ledger: {doc['ledger_bytes_per_decision']:.0f} bytes per decision (failure + decision rows).",
            f"Retention bound: after pruning ({ret['pruned_rows']} rows) and recording "
            f"{ret['decisions_recorded_again']} decisions again, the file went from "
            f"{ret['size_before_bytes']:,} to {ret['size_after_bytes']:,} bytes "
            f"({(ret['size_after_bytes'] / ret['size_before_bytes'] - 1) * 100:+.1f}%: "
            f"{'grew past' if ret['grew'] else 'bounded, within'} the 5% allowed for SQLite's page reuse).",
            doc.get("note", ""),
        ]
    if name == "message_memory":
        small, big = doc["results"]
        return [
            f"RSS after {doc['failures']:,} ignored failures: {big['rss_mib']} MiB with 5 MB messages, "
            f"{small['rss_mib']} MiB with 100-byte ones: {doc['rss_difference_mib']:+} MiB (goal within "
            f"50 MB: {_yes(doc.get('goal_met'))}). The read cache keeps the reads a rerun needs without "
            "the messages, serialized (`rerund_read_cache_bytes`), and `rerund run` returns large "
            "transient blocks to the OS (`runtime/heap.py`). Before (c0b26ba), 12 such failures held "
            "125,838,384 bytes in the read cache alone (GetRunDetails and GetActionDetails each with "
            "the 5 MB message).",
        ]
    if name == "ledger":
        return [
            f"Bytes per ignored failure: {doc['bytes_per_failure_before']} before compaction, "
            f"{doc['bytes_per_failure']} now (goal <= 500: {_yes(doc.get('goal_met'))}). `largest`: "
            "bytes per failure of the biggest tables and indexes (SQLite `dbstat`). The daemon's "
            "live figure includes its WAL (up to ~4 MB until a checkpoint), a fixed cost.",
        ]
    if name == "defaults":
        rows = {r["who"]: r for r in doc["results"]}
        limited = next(r for w, r in rows.items() if "100/s" in w)
        return [
            f"Under 50 ms per RPC, the old default ceiling (8) reruns a storm at "
            f"{doc['old_default_x_sdk']}x the plain SDK loop; today's default (64, nothing set) at "
            f"{doc['default_x_sdk']}x (goal >= 3x). Behind a 100 RPC/s gateway with default settings: "
            f"{limited['resource_exhausted_share']:.1%} RESOURCE_EXHAUSTED (goal <= 5%), "
            f"{limited['duplicates']} duplicates, {limited['missing']} missed.",
        ]
    if name.startswith("soak"):
        lines = [
            f"{doc['minutes']:g} minutes"
            + (" (a SHORT run, not the 30-minute soak)" if doc.get("short_run") else "")
            + f", windows of {doc['window_s']:.0f} s. Launched {sum(doc['launched'].values()):,} failures "
            f"({doc['launch_refused']} launches refused during the sandbox restart); "
            f"{doc['reruns']:,} reruns, "
            f"{doc['duplicates']} duplicates, {doc['flaky_missing_rerun']} flaky failures without a rerun, "
            f"{doc['user_errors_rerun']} USER errors rerun; "
            f"daemon alive at the end: {doc['daemon_alive_at_end']}, "
            f"traceback in its log: {doc['traceback_in_log']}.",
            f"CPU per failure, last window over first: {doc['cpu_last_vs_first']}x (goal <= 1.2x). "
            + (
                f"RSS after the first window: {doc['rss_mib_per_10k_failures_after_first_window']} MiB "
                "per 10,000 failures (goal < 10). "
                if "rss_mib_per_10k_failures_after_first_window" in doc
                else ""
            )
            + f"Slowest /healthz: {doc['slowest_healthz_ms']} ms over {doc.get('healthz_probes', '?')} "
            "probes "
            f"({doc['healthz_failures']} failed, the SIGKILL restart excluded). Ledger at the end: "
            f"{doc['ledger_rows']['bytes_per_failure']} bytes per failure recorded "
            f"({doc['ledger_rows']['failures']:,} failures, all kinds, reproduction rows included; the "
            "window column is the live file plus its WAL, whose ~4 MB dominate the first windows)."
            + (
                f" Per ignored failure: {doc['ledger_rows']['ignored']['bytes_per_failure']} bytes "
                "(goal <= 500; a VACUUMed copy holding only the ignored failures' rows)."
                if "ignored" in doc["ledger_rows"]
                else ""
            ),
            "Hot reloads (seconds until counted, daemon CPU in the 5 s after, slowest /healthz then): "
            + "; ".join(
                f"{r['counted_after_s']} s, {r['cpu_s_in_5s_after']} s CPU, {r['slowest_healthz_ms']} ms"
                for r in doc["reloads"]
            )
            + ".",
            "Events: " + "; ".join(doc["events"]) + ".",
        ]
        return lines
    return []


def _oss_rpc_notes(doc: dict[str, Any]) -> list[str]:
    oss = (doc.get("profiles") or {}).get("oss")
    if not oss:
        return []
    t = oss["totals"]
    return [
        f"Open-source Flyte 2 (`--profile oss`, columns `*_oss`): {t['ignored']} RPCs per ignored "
        f"failure and {t['rerun']} per rerun, {oss['duplicates']} duplicates. Without label filters "
        "the daemon lists every run created in the resync window (pages of 200) and reads the "
        "labels of each run it has not read yet (GetRunDetails); a failure's labels come with "
        "reading the failure and a rerun's with the check after creating it, so only runs that "
        "neither failed nor were created by rerund cost one GetRunDetails more, once. A rerun "
        "costs two GetRunDetails more (look before creating, and whose run the answer is); an "
        "ignored failure one RPC less, because open-source RunDetails carries the root action's "
        "own error (no GetActionDetails when the root failed). Error details were shown at once "
        "here; a failure read before its details arrived is read again (3 RPCs).",
    ]


def render() -> str:
    """The generated section (between the markers)."""
    out = [BEGIN, "<!-- generated by bench/run_all.py from bench/results/*.json; do not edit -->", ""]
    machine = None
    for name in ("latency", "storm", "rpc_cost", "cron", "memory"):
        doc = _load(name)
        if doc and isinstance(doc.get("machine"), dict):
            machine = doc["machine"]
            break
    loads = [
        x
        for name in BENCHMARKS
        if (d := _load(name)) and isinstance(d.get("machine"), dict)
        for x in (d["machine"].get("loadavg_start", [None])[0], d["machine"].get("loadavg_end", [None])[0])
        if x is not None
    ]
    if machine:
        out += [
            f"Measured on: {machine['cpu']}, {machine['cores']} cores shared with other workloads "
            f"(1-minute load average between {min(loads):.1f} and {max(loads):.1f} across the "
            f"benchmarks, so figures are noisy), {machine.get('memory_gb')} GB, Python {machine['python']}, "
            f"flyte {machine['flyte']}, flyteidl2 {machine['flyteidl2']}, rerund {machine['rerund_commit']}.",
            "",
        ]
    extras = [name for name in EXTRA if _load(name) is not None]
    for name in (
        "latency",
        "storm",
        "rpc_cost",
        "decide",
        "cron",
        "memory",
        "watch",
        "production",
        "message_memory",
        "ledger",
        "defaults",
        "startup",
        *extras,
    ):
        doc = _load(name)
        out.append(f"### {TITLES[name]}")
        out.append("")
        if doc is None:
            out += ["(not measured yet: run `make bench`)", ""]
            continue
        if name == "decide":
            columns, rows = DECIDE_COLUMNS, doc["results"]
        else:
            columns, rows = doc["table"]["columns"], doc["table"]["rows"]
        out.append(h.markdown(columns, rows))
        out.append("")
        for note in _notes(name, doc):
            if note:
                out.append(note)
                out.append("")
        m = doc.get("machine")
        if isinstance(m, dict):
            out.append(
                f"<sub>`bench/results/{name}.json`, measured {m.get('measured_at', '?')}, load average "
                f"{m.get('loadavg_start', ['?'])[0]} -> {m.get('loadavg_end', ['?'])[0]}.</sub>"
            )
            out.append("")
    long = _load("memory-long")
    if long is not None:
        out += [f"### 6b. Memory, `--long`: {long['failures']:,} failures (not part of `make bench`)", ""]
        out += [h.markdown(long["table"]["columns"], long["table"]["rows"]), ""]
        out += [note for note in _notes("memory", long)[:1]] + [""]
        m = long.get("machine") or {}
        out += [f"<sub>`bench/results/memory-long.json`, measured {m.get('measured_at', '?')}.</sub>", ""]
    out.append(END)
    return "\n".join(out)


def update_readme(path: Path = README) -> None:
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n## Results\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(head + render() + tail)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="reduced sizes; results are not written")
    p.add_argument("--only", default="", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    p.add_argument("--readme-only", action="store_true", help="regenerate the README tables only")
    args = p.parse_args(argv)
    chosen = [b.strip() for b in args.only.split(",") if b.strip()] or list(BENCHMARKS)
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        p.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {', '.join(BENCHMARKS)}")
    failed = []
    if not args.readme_only:
        for name in chosen:
            if args.quick and name == "decide":
                print("== decide: skipped with --quick (it has no reduced size and always writes)")
                continue
            script = h.BENCH / f"bench_{name}.py"
            cmd = [sys.executable, str(script)] + (["--quick"] if args.quick else [])
            print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
            start = time.monotonic()
            code = subprocess.call(cmd, cwd=h.REPO)
            print(f"== {name}: exit {code} after {time.monotonic() - start:.0f}s", flush=True)
            if code != 0:
                failed.append(name)
    if not args.quick:
        update_readme()
        print(f"tables regenerated in {README.relative_to(h.REPO)}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
