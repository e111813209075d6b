"""Storm throughput: N runs fail at once; how long until every owed rerun exists.

Three measurements in one benchmark run, each against a fresh sandbox process with the same
N failed runs (task ``bench.flaky``, rerun at once by the bench policy):

- ``ceiling: CreateRun alone`` — a client process sends bare CreateRun RPCs (the request the SDK
  builds for a rerun, captured once, renamed per source run), ``concurrency`` at a time. This
  is the sandbox's own capacity to create runs: the ceiling for anything issuing reruns.
- ``ceiling: SDK rerun path`` — the same client calls ``flyte.with_runcontext(name=...)
  .rerun(run)`` per failed run (GetRunDetails, SelectCluster, GetActionData, UploadInputs,
  CreateRun, ...): what any SDK client must pay per rerun, with no reading and no deciding.
- ``rerund`` — the daemon (default settings: watch on, poll 30 s, max_concurrent_reruns 64)
  is running and idle when the N runs are launched; it reads each failure, decides, issues.

Reported: seconds from the first failure to the last rerun created (sandbox clock), reruns/s,
rerund's rate as a share of both ceilings, the daemon's CPU seconds during the storm and its
peak RSS, and duplicates (must be 0). ``--long`` runs 20,000 failures (not run by make bench).

Run: .venv/bin/python bench/bench_storm.py [--quick | --long]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import harness as h

N_DEFAULT, N_LONG, N_QUICK = 5000, 20000, 200
CONCURRENCY = 8


def _wait_failed(sb: h.Sandbox, n: int, timeout: float) -> None:
    h.wait_until(f"{n} runs to fail", lambda: sb.stats()["runs"].get("FAILED", 0) >= n, timeout, interval=0.2)


def measure_ceiling(
    tmp: Path, n: int, mode: str, concurrency: int = CONCURRENCY, sandbox_args: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Run the ceiling client (``mode`` ``raw`` or ``sdk``) over ``n`` failed runs."""
    with h.sandbox(tmp, args=sandbox_args) as sb:
        sources = sb.launch("bench.flaky", count=n)
        _wait_failed(sb, n, 120)
        names = tmp / f"sources-{mode}.json"
        names.write_text(json.dumps(sources))
        before = sb.usage()
        counts_before = sb.counts()
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--client",
                mode,
                "--endpoint",
                sb.endpoint,
                "--sources",
                str(names),
                "--concurrency",
                str(concurrency),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"the ceiling client ({mode}) exited with {proc.returncode}:\n"
                f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-4000:]}"
            )
        client = json.loads(proc.stdout.strip().splitlines()[-1])
        window = h.storm_outcome(sb, sources)
        sandbox_cpu = round(sb.usage()["cpu_s"] - before["cpu_s"], 2)
        counts = diff_counts(counts_before, sb.counts())
    label = {"raw": "ceiling: CreateRun alone", "sdk": "ceiling: SDK rerun path"}[mode]
    return {
        "who": label,
        "failures": n,
        "reruns": client["created"],
        "seconds": client["seconds"],
        "reruns_per_s": round(client["created"] / max(client["seconds"], 1e-6), 1),
        "client_cpu_s": client["cpu_s"],
        "sandbox_cpu_s": sandbox_cpu,
        "duplicates": window["duplicates"],
        "missing": window["missing"],
        "concurrency": concurrency,
        "rpcs": counts,
    }


def diff_counts(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """RPCs by method served between two ``counts()`` snapshots (methods with none left out)."""
    return {k: after[k] - before.get(k, 0) for k in sorted(after) if after[k] - before.get(k, 0)}


def measure_rerund(tmp: Path, n: int, **settings: Any) -> dict[str, Any]:
    """The daemon, idle and ready, then ``n`` runs launched at once."""
    with h.sandbox(tmp) as sb, h.daemon(tmp, sb, name=f"storm-{n}", **settings) as d:
        before = d.usage()
        sb_before = sb.usage()
        rss_samples = [before["rss_mib"]]
        started = time.monotonic()
        sources = sb.launch("bench.flaky", count=n)
        launch_s = time.monotonic() - started

        def done() -> bool:
            rss_samples.append(d.usage()["rss_mib"])
            return int(sum(sb.stats()["runs"].values())) >= 2 * n

        h.wait_until(f"{n} reruns from rerund", done, timeout=900, interval=0.5)
        wall = time.monotonic() - started
        time.sleep(0.5)
        after = d.usage()
        window = h.storm_outcome(sb, sources)
        sandbox_cpu = round(sb.usage()["cpu_s"] - sb_before["cpu_s"], 2)
        issued = d.total("rerund_reruns_issued_total")
        if not d.alive():
            raise RuntimeError(f"the daemon died during the storm:\n{d.logs()}")
    seconds = window["seconds"] or wall
    return {
        "who": "rerund",
        "failures": n,
        "reruns": window["reruns"],
        "seconds": seconds,
        "reruns_per_s": round(window["reruns"] / seconds, 1),
        "wall_s_from_launch": round(wall, 1),
        "launch_s": round(launch_s, 2),
        "daemon_cpu_s": round(after["cpu_s"] - before["cpu_s"], 2),
        "daemon_rss_before_mib": before["rss_mib"],
        "daemon_peak_rss_mib": max(after["peak_rss_mib"], *rss_samples),
        "sandbox_cpu_s": sandbox_cpu,
        "issued_metric": issued,
        "duplicates": window["duplicates"],
        "missing": window["missing"],
        "concurrency": settings.get("max_concurrent_reruns", 64),
    }


def run(quick: bool = False, long: bool = False, n: int | None = None) -> dict[str, Any]:
    machine = h.machine()  # before measuring: its load average is the one at the start
    size = n if n is not None else (N_QUICK if quick else N_LONG if long else N_DEFAULT)
    with h.workdir("storm") as tmp:
        raw = measure_ceiling(tmp, size, "raw")
        sdk = measure_ceiling(tmp, size, "sdk")
        ours = measure_rerund(tmp, size)
    ours["share_of_createrun_ceiling"] = round(ours["reruns_per_s"] / raw["reruns_per_s"], 3)
    ours["share_of_sdk_ceiling"] = round(ours["reruns_per_s"] / sdk["reruns_per_s"], 3)
    rows = [raw, sdk, ours]
    columns = [
        "who",
        "failures",
        "reruns",
        "seconds",
        "reruns_per_s",
        "daemon_cpu_s",
        "daemon_peak_rss_mib",
        "sandbox_cpu_s",
        "duplicates",
        "missing",
    ]
    return {
        "benchmark": "storm",
        "what": "N runs fail at once; seconds from the first failure to the last rerun created",
        "goal": "bounded by the control plane, not by rerund (rerund's rate as a share of the ceiling)",
        "failures": size,
        "quick": quick,
        "long": long,
        "share_of_createrun_ceiling": ours["share_of_createrun_ceiling"],
        "share_of_sdk_ceiling": ours["share_of_sdk_ceiling"],
        "machine": machine,
        "results": rows,
        "table": {"columns": columns, "rows": rows},
    }


# -- the ceiling client (a separate process) --------------------------------------------------


async def _client(mode: str, endpoint: str, sources: list[str], concurrency: int) -> dict[str, Any]:
    import flyte
    from flyte._initialize import get_client

    await flyte.init.aio(
        endpoint=endpoint,
        insecure=True,
        org=h.ORG,
        project=h.PROJECT,
        domain=h.DOMAIN,
        sync_local_sys_paths=False,
    )
    sem = asyncio.Semaphore(concurrency)
    template: Any = None
    if mode == "raw":
        # Capture the CreateRunRequest the SDK builds for one rerun, then send only CreateRun.
        service = get_client().run_service
        original = service.create_run
        captured: list[Any] = []

        async def capture(req: Any, *args: Any, **kwargs: Any) -> Any:
            captured.append(req)
            return await original(req, *args, **kwargs)

        service.create_run = capture
        await flyte.with_runcontext(name=f"{sources[0]}-c").rerun.aio(sources[0])
        service.create_run = original
        template = captured[0]
        sources = sources[1:]

    async def one(src: str) -> None:
        async with sem:
            if mode == "raw":
                req = type(template)()
                req.CopyFrom(template)
                req.run_id.name = f"{src}-c"
                req.run_spec.relation.related_to.name = src
                await get_client().run_service.create_run(req)
            else:
                await flyte.with_runcontext(name=f"{src}-c").rerun.aio(src)

    cpu0 = time.process_time()
    start = time.perf_counter()
    await asyncio.gather(*(one(s) for s in sources))
    seconds = time.perf_counter() - start
    return {
        "created": len(sources),
        "seconds": round(seconds, 4),
        "cpu_s": round(time.process_time() - cpu0, 2),
    }


def _client_main(args: argparse.Namespace) -> NoReturn:
    sources = json.loads(Path(args.sources).read_text())
    result = asyncio.run(_client(args.client, args.endpoint, sources, args.concurrency))
    print(json.dumps(result), flush=True)
    sys.stderr.flush()
    # The result is out: skip interpreter shutdown, where the SDK's background event-loop
    # thread can take the process down with it (seen once as a silent non-zero exit).
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--long", action="store_true")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--client", choices=("raw", "sdk"), help=argparse.SUPPRESS)
    p.add_argument("--endpoint", help=argparse.SUPPRESS)
    p.add_argument("--sources", help=argparse.SUPPRESS)
    p.add_argument("--concurrency", type=int, default=CONCURRENCY, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.client:
        _client_main(args)
    name = "storm-long" if args.long else "storm"
    h.emit(name, run(quick=args.quick, long=args.long), write=not args.no_write and not args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
