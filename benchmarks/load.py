"""Bounded load test of ``facegender serve`` on 127.0.0.1: throughput, latency, errors, memory.

Starts the real server in a child process (uvicorn, model loaded once), sends ``--requests``
uploads from ``--concurrency`` async clients, and reads the server's resident memory (RSS, the
server and its worker processes) after start-up, after warm-up and at the end. A fraction of the
uploads (``--bad-fraction``) are truncated JPEGs that must get a 400, so the error path is loaded
too. Prints a summary and writes JSON (default ``benchmarks/results/load.json``).

    python benchmarks/load.py --model runs/default --requests 2000 --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time
from pathlib import Path

import httpx
import psutil
from _machine import describe, machine

from facegender.checkpoint import write_json
from facegender.serve.local import LocalServer

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = ROOT / "examples" / "photos" / "astronaut.jpg"


def server_rss_mb(pid: int) -> float:
    """Resident memory of the server process and its children (uvicorn workers), in MB."""
    proc = psutil.Process(pid)
    procs = [proc, *proc.children(recursive=True)]
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):  # a worker may be restarting
            total += p.memory_info().rss
    return total / 1e6


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=1000, method="inclusive")[max(0, int(q * 10) - 1)]


async def run_load(
    url: str, good: bytes, bad: bytes, n: int, concurrency: int, bad_every: int, deadline: float
) -> dict:
    """Send ``n`` uploads from ``concurrency`` tasks; every ``bad_every``-th one is broken."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors: list[str] = []
    counter = iter(range(n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        for i in counter:
            if time.monotonic() > deadline:
                return
            is_bad = bad_every > 0 and i % bad_every == bad_every - 1
            data, want = (bad, 400) if is_bad else (good, 200)
            t0 = time.perf_counter()
            try:
                r = await client.post(
                    "/v1/predict", files={"file": ("photo.jpg", data, "image/jpeg")}
                )
                code = str(r.status_code)
                if r.status_code != want:
                    errors.append(
                        f"request {i}: HTTP {r.status_code} (wanted {want}) {r.text[:200]}"
                    )
                elif not is_bad and r.json().get("status") not in ("ok", "no_face"):
                    errors.append(f"request {i}: unexpected body {r.text[:200]}")
            except httpx.HTTPError as e:
                code = type(e).__name__
                errors.append(f"request {i}: {code}: {e}")
            latencies.append(time.perf_counter() - t0)
            statuses[code] = statuses.get(code, 0) + 1

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120.0) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        seconds = time.perf_counter() - t0
    return {"latencies": latencies, "statuses": statuses, "errors": errors, "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="Checkpoint folder (default: bundled model).")
    ap.add_argument("--image", default=str(DEFAULT_IMAGE), help="Photo to upload.")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument(
        "--warmup",
        type=int,
        default=200,
        help="Requests before the first RSS reading; enough for every worker to have answered "
        "some (20 reached one of 2 workers: the other's first frames then read as growth).",
    )
    ap.add_argument("--workers", type=int, default=1, help="Server worker processes.")
    ap.add_argument("--bad-fraction", type=float, default=0.1, help="Share of broken uploads.")
    ap.add_argument("--max-seconds", type=float, default=3600, help="Stop sending after this.")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "load.json"))
    args = ap.parse_args()
    if not 1 <= args.requests <= 100_000 or not 1 <= args.concurrency <= 256:
        ap.error("--requests must be in 1..100000 and --concurrency in 1..256")

    from facegender.cpu import DETECTOR_THREADS, classifier_threads

    load_start = round(os.getloadavg()[0], 2)
    mach = machine(
        threads={
            "server_workers": args.workers,
            "detector": DETECTOR_THREADS,
            "classifier_per_worker": classifier_threads(processes=args.workers),
        }
    )
    print(describe(mach), flush=True)
    good = Path(args.image).read_bytes()
    bad = good[: len(good) // 2]
    bad_every = round(1 / args.bad_fraction) if args.bad_fraction > 0 else 0
    with LocalServer(model=args.model, workers=args.workers) as srv:
        rss_start = server_rss_mb(srv.pid)
        asyncio.run(run_load(srv.url, good, bad, args.warmup, 2, 0, time.monotonic() + 600))
        rss_warm = server_rss_mb(srv.pid)
        deadline = time.monotonic() + args.max_seconds
        res = asyncio.run(
            run_load(srv.url, good, bad, args.requests, args.concurrency, bad_every, deadline)
        )
        rss_end = server_rss_mb(srv.pid)
        alive = srv.alive() and httpx.get(srv.url + "/healthz", timeout=30).status_code == 200
        model = httpx.get(srv.url + "/v1/model", timeout=30).json()

    lat = res["latencies"]
    n_5xx = sum(v for k, v in res["statuses"].items() if k.startswith("5"))
    result = {
        "requests": len(lat),
        "requested": args.requests,
        "concurrency": args.concurrency,
        "workers": args.workers,
        "bad_fraction": 1 / bad_every if bad_every else 0.0,
        "image": Path(args.image).name,
        "image_bytes": len(good),
        "model": {"name": model.get("name"), "image_size": model.get("image_size")},
        "seconds": round(res["seconds"], 2),
        "requests_per_s": round(len(lat) / res["seconds"], 2),
        "latency_ms": {
            "p50": round(1000 * percentile(lat, 50), 1),
            "p90": round(1000 * percentile(lat, 90), 1),
            "p99": round(1000 * percentile(lat, 99), 1),
            "max": round(1000 * max(lat), 1),
        },
        "statuses": res["statuses"],
        "errors": len(res["errors"]),
        "error_samples": res["errors"][:10],
        "http_5xx": n_5xx,
        "server_alive_after": alive,
        "rss_mb": {
            "after_start": round(rss_start, 1),
            "after_warmup": round(rss_warm, 1),
            "after_load": round(rss_end, 1),
            "growth_during_load": round(rss_end - rss_warm, 1),
        },
        "machine": {
            **mach,
            "load_avg_1m_at_start": load_start,
            "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        },
    }
    write_json(args.out, result)
    lm, rss = result["latency_ms"], result["rss_mb"]
    print(
        f"{result['requests']} requests at concurrency {args.concurrency} "
        f"in {result['seconds']} s: "
        f"{result['requests_per_s']} req/s, p50 {lm['p50']} ms, p99 {lm['p99']} ms, "
        f"errors {result['errors']}, 5xx {n_5xx}, statuses {result['statuses']}"
    )
    print(
        f"server RSS {rss['after_start']} MB at start, {rss['after_warmup']} MB after warm-up, "
        f"{rss['after_load']} MB after load (growth {rss['growth_during_load']} MB); "
        f"alive after: {alive}"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
