"""End to end over HTTP: our worker + the dev server vs Celery 5 prefork + Redis, on loopback.

    python bench/bench_e2e.py [--quick] [--no-profile] [--no-whatif]

Ours: `python main.py --config tests/support/test_config.py` (HIVE_LOG_LEVEL=WARNING,
NO_TASK_SLEEP=0.05, TASK_ERROR_SLEEP=0, executors at normal priority like Celery's
children, everything else as shipped, limits on) against `python -m devserver serve`
in its own process. Celery: `celery worker --pool prefork -c N` with Redis (Debian's
redis-server on 127.0.0.1, a free port, a temp dir) as broker and result backend,
default settings, the same echo function. Not equal in durability: ours journals each
claim and result (fdatasync'd in batches every ~10 ms); this Redis keeps nothing on
disk (--save "" --appendonly no) and Celery acknowledges on receipt (the what-if
"no fsync" row shows what our durability costs). Not equal in servers either: the dev
server is Python and SQLite (its CPU per task is in the notes), Redis is C.

- Throughput, enqueue-all-then-drain: N tasks appear at once (ours: one SQLite
  transaction; Celery: published to a side list, then RENAMEd onto the queue), timed
  until the last result is recorded (ours: a row in the server's results table;
  Celery: the result key in Redis). Both systems stay up for the whole run and take
  turns; the one not being measured is SIGSTOPped so it cannot steal CPU.
- Latency: enqueue one task, poll every 1 ms until its result is recorded. Ours
  includes waiting for the next poll (v1 has no push): on average NO_TASK_SLEEP/2;
  "claim -> result" is the part after the worker got the task (server timestamps).
- CPU per task of the supervisor process (psutil, before/after the drain) beside
  Celery's main process, which does the same job (consume, dispatch, collect).
- Context: what the dev server sustains (GET+POST pairs/s from a lean http.client
  loop) and what one requests.Session sustains against it (why the client is on http.client).
- What-if (bench/whatif.py): the same drain with experimental supervisor patches,
  to put a figure on each proposed change; and a py-spy profile of the supervisor.
"""

from __future__ import annotations

import collections
import http.client
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from common import (
    TEST_CONFIG,
    CeleryWorker,
    DevServer,
    HiveWorker,
    RedisServer,
    cpu_seconds,
    emit,
    json_arg_parser,
    log,
    median,
    note,
    pct,
    row,
    tree,
    wait_for,
)

PAYLOAD = {"a": 1, "b": "two", "c": [1, 2, 3]}
OUR_ENV = {"HIVE_EXECUTOR_PRIORITY": "normal"}


def suspend(pid: int) -> None:
    for p in tree(pid):
        try:
            p.suspend()
        except psutil.Error:
            pass


def resume(pid: int) -> None:
    for p in tree(pid):
        try:
            p.resume()
        except psutil.Error:
            pass


# ---- ours -------------------------------------------------------------------------------------------

def executors_cpu(worker: HiveWorker) -> float:
    """CPU of live executors plus executors already reaped (recycled after MAX_TASKS_PER_EXECUTOR)."""
    try:
        t = psutil.Process(worker.pid).cpu_times()
    except psutil.Error:
        return 0.0
    return t.children_user + t.children_system + cpu_seconds(worker.executors())


def ours_drain(srv: DevServer, worker: HiveWorker, n: int) -> dict[str, float]:
    base = srv.results()
    sup0, ex0, srv0 = worker.cpu(), executors_cpu(worker), cpu_seconds(tree(srv.proc.pid))
    (since,) = srv.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM tasks").fetchone()
    wall0 = time.time()
    started = time.perf_counter()
    srv.enqueue("echo", PAYLOAD, n)
    wait_for(lambda: srv.results() >= base + n, 900, "our drain", 0.005)
    wall = time.perf_counter() - started
    (last_claim,) = srv.conn.execute("SELECT MAX(claimed_at) FROM tasks WHERE seq > ?", (since,)).fetchone()
    return {"rate": n / wall, "claimed_s": (last_claim or wall0) - wall0, "wall_s": wall,
            "sup_ms": 1000 * (worker.cpu() - sup0) / n,
            "exec_ms": 1000 * (executors_cpu(worker) - ex0) / n,
            "server_ms": 1000 * (cpu_seconds(tree(srv.proc.pid)) - srv0) / n}


def ours_warm(srv: DevServer, worker: HiveWorker, n: int = 30) -> None:
    worker.wait_started()
    base = srv.results()
    srv.enqueue("echo", PAYLOAD, n)
    wait_for(lambda: srv.results() >= base + n, 120, "our warm-up")


def ours_latency(srv: DevServer, samples: int) -> tuple[list[float], list[float]]:
    lat = []
    (since,) = srv.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM tasks").fetchone()
    for _ in range(samples):
        time.sleep(random.uniform(0.0, 0.06))  # any phase of the worker's poll cycle
        base = srv.results()
        started = time.perf_counter()
        srv.enqueue("echo", PAYLOAD, 1)
        while srv.results() <= base:
            time.sleep(0.001)
        lat.append(time.perf_counter() - started)
    claim_to_result = [got - claimed for _, claimed, got in srv.timings(since)]
    return lat, claim_to_result


# ---- Celery -------------------------------------------------------------------------------------------

class CeleryRig:
    def __init__(self, redis: RedisServer, concurrency: int, workdir: Path) -> None:
        os.environ["BENCH_REDIS_URL"] = redis.url
        import celery_app
        import redis as redis_client

        self.app = celery_app
        self.worker = CeleryWorker(redis, concurrency, workdir)
        self.broker = redis_client.Redis(port=redis.port, db=0)
        self.backend = redis_client.Redis(port=redis.port, db=1)
        self.app.echo.delay(PAYLOAD).get(timeout=120)  # up and connected
        self.drain(30)

    def cpu(self) -> tuple[float, float]:
        try:
            main = [psutil.Process(self.worker.pid)]
        except psutil.Error:
            return 0.0, 0.0
        return cpu_seconds(main), cpu_seconds(self.worker.children())

    def drain(self, n: int) -> dict[str, float]:
        self.backend.flushdb()
        for _ in range(n):
            self.app.echo.apply_async((PAYLOAD,), queue="bench_staging")
        main0, kids0 = self.cpu()
        started = time.perf_counter()
        self.broker.rename("bench_staging", "celery")  # every message lands on the worker's queue at once
        wait_for(lambda: self.backend.dbsize() >= n, 900, "Celery drain", 0.005)
        wall = time.perf_counter() - started
        main1, kids1 = self.cpu()
        return {"rate": n / wall, "sup_ms": 1000 * (main1 - main0) / n, "exec_ms": 1000 * (kids1 - kids0) / n}

    def latency(self, samples: int) -> list[float]:
        lat = []
        for _ in range(samples):
            time.sleep(random.uniform(0.0, 0.06))
            started = time.perf_counter()
            result = self.app.echo.apply_async((PAYLOAD,))
            key = f"celery-task-meta-{result.id}"
            while not self.backend.exists(key):
                time.sleep(0.001)
            lat.append(time.perf_counter() - started)
        return lat

    def stop(self) -> None:
        self.worker.stop()


# ---- context: the server and the HTTP client ---------------------------------------------------------------

def pairs_per_second(srv: DevServer, n: int, lean: bool) -> tuple[float, float]:
    """GET+POST pairs/s of one client thread against the dev server, and the client's CPU ms per pair."""
    srv.enqueue("echo", PAYLOAD, n)
    hostport = srv.url.split("//", 1)[1].split("/", 1)[0]
    prefix = "/" + srv.url.split("//", 1)[1].split("/", 1)[1]
    me = psutil.Process()
    cpu0 = sum(me.cpu_times()[:2])
    started = time.perf_counter()
    if lean:
        conn = http.client.HTTPConnection(hostport, timeout=20)
        for _ in range(n):
            conn.request("GET", f"{prefix}/get_task", headers={"X-Worker-ID": "bench"})
            task = json.loads(conn.getresponse().read())
            body = json.dumps({"task_id": task["id"], "worker_id": "bench", "status": "success",
                               "result": task["params"]}).encode()
            conn.request("POST", f"{prefix}/submit_result", body=body, headers={"Content-Type": "application/json"})
            conn.getresponse().read()
        conn.close()
    else:
        import requests

        with requests.Session() as session:
            session.headers["X-Worker-ID"] = "bench"
            for _ in range(n):
                task = session.get(f"{srv.url}/get_task", timeout=20).json()
                body = json.dumps({"task_id": task["id"], "worker_id": "bench", "status": "success",
                                   "result": task["params"]})
                session.post(f"{srv.url}/submit_result", data=body, headers={"Content-Type": "application/json"},
                             timeout=60)
    wall = time.perf_counter() - started
    return n / wall, 1000 * (sum(me.cpu_times()[:2]) - cpu0) / n


# ---- profile -----------------------------------------------------------------------------------------------

CATEGORIES = [  # first match wins, checked from the innermost frame outwards
    ("/proc reads for limits (proctree)", re.compile(r"Snapshot|TreeMonitor")),
    ("fsync/fdatasync (journal, outbox)", re.compile(r"^(atomic_write|_datasync|fsync_dir|Journal\.sync) ")),
    ("journal appends", re.compile(r"^Journal\.(_append|record|result|clear) ")),
    ("file unlinks (outbox delivered)", re.compile(r"unlink")),
    ("reading an outbox file (retries)", re.compile(r"^Outbox\.read ")),
    ("HTTP (HiveClient._request, http.client)", re.compile(r"HiveClient\._request")),
    ("pipe I/O with executors", re.compile(r"^(Connection|_ConnectionBase)\.(_send|_recv|send_bytes|recv_bytes) |^Executor\.(send|recv) ")),
    ("waiting: arbiter wait() on pipes", re.compile(r"^wait \(multiprocessing/connection")),
    ("waiting: claim gate (no free executor)", re.compile(r"ClaimGate\.acquire")),
    ("waiting: submit queue empty", re.compile(r"SubmitLoop\._idle")),
    ("waiting after no_tasks (everything claimed, results still being posted) or backoff",
     re.compile(r"Event\.wait")),
    ("logging", re.compile(r"logging/")),
]


def summarise_profile(path: Path, tasks: int, seconds: float) -> str:
    per_thread: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    selfs: collections.Counter = collections.Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        thread = frames[0].rsplit(": ", 1)[-1]
        category = "other (Python code of the supervisor)"
        for frame in reversed(frames[1:]):
            for label, pattern in CATEGORIES:
                if pattern.search(frame):
                    category = label
                    break
            else:
                continue
            break
        if thread == "flush" and category.startswith("waiting after no_tasks"):
            category = "waiting: nothing to flush, or FLUSH_INTERVAL"  # its Event.wait means that
        per_thread[thread][category] += n
        selfs[re.sub(r":\d+\)$", ")", frames[-1])] += n
    lines = [f"py-spy, 200 samples/s with idle frames, supervisor only, over a drain of {tasks} echo tasks "
             f"({seconds:.1f} s, pool of 2, as shipped). Share of each thread's wall time:", "",
             "| thread | where the time goes |", "| --- | --- |"]
    for thread in ("MainThread", "claim", "submit", "flush"):
        counter = per_thread.get(thread)
        if not counter:
            continue
        total = sum(counter.values())
        parts = [f"{label} {100 * n / total:.0f}%" for label, n in counter.most_common() if n / total >= 0.03]
        lines.append(f"| {thread} (arbiter) | {'; '.join(parts)} |" if thread == "MainThread"
                     else f"| {thread} | {'; '.join(parts)} |")
    return "\n".join(lines)


def profile_run(srv: DevServer, workdir: Path, n: int) -> str | None:
    spy = shutil.which("py-spy")
    if not spy:
        return None
    worker = HiveWorker(workdir / "home-profile", srv.url, TEST_CONFIG, 2, env=OUR_ENV)
    try:
        ours_warm(srv, worker)
        out = workdir / "profile.txt"
        base = srv.results()
        srv.enqueue("echo", PAYLOAD, n)  # the drain starts now; py-spy attaches within a fraction of a second
        started = time.perf_counter()
        proc = subprocess.Popen([spy, "record", "--pid", str(worker.pid), "--rate", "200", "--threads", "--idle",
                                 "--nonblocking", "--format", "raw", "--output", str(out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: srv.results() >= base + n, 900, "profiled drain", 0.005)
        seconds = time.perf_counter() - started
        proc.send_signal(2)
        proc.wait(60)
        if not out.exists():
            return None
        return summarise_profile(out, n, seconds)
    finally:
        worker.stop()


def whatif_runs(srv: DevServer, workdir: Path, n: int, variants: list[tuple[str, str]], repeats: int
                ) -> list[dict[str, Any]]:
    """Drain rate per supervisor patch set, each next to an unpatched run measured just before."""
    out = []
    rates: dict[str, list[float]] = {p: [] for p, _ in variants}
    cpu: dict[str, list[float]] = {p: [] for p, _ in variants}
    for rep in range(repeats):
        for patches, _label in variants:
            worker = HiveWorker(workdir / f"home-whatif-{rep}-{patches or 'none'}", srv.url, TEST_CONFIG, 2,
                                env=OUR_ENV, patches=patches)
            try:
                ours_warm(srv, worker)
                m = ours_drain(srv, worker, n)
            except RuntimeError as exc:  # a patch that no longer fits the code: say so, go on
                log(f"what-if {patches or 'as is'} failed: {exc}")
                m = {"rate": float("nan"), "sup_ms": float("nan")}
                srv.conn.execute("UPDATE tasks SET state = 'done' WHERE state != 'done'")
            finally:
                worker.stop()
            rates[patches].append(m["rate"])
            cpu[patches].append(m["sup_ms"])
        log("what-if repeat " + str(rep + 1) + ": " + ", ".join(f"{p or 'as is'} {rates[p][-1]:.0f}/s"
                                                               for p, _ in variants))
    base = rates[""]
    for patches, label in variants[1:]:
        if any(r != r for r in rates[patches] + base):
            out.append(row("2 e2e what-if", f"pool 2 drain, {label}", "failed", note="see bench/whatif.py"))
            continue
        ratios = [a / b for a, b in zip(rates[patches], base, strict=True)]
        out.append(row("2 e2e what-if", f"pool 2 drain, {label}", median(rates[patches]), "tasks/s", median(base),
                       "as shipped", ratio=median(ratios),
                       note=f"supervisor {median(cpu[patches]):.1f} ms CPU/task (as shipped "
                            f"{median(cpu['']):.1f})"))
    return out


WHATIF = [
    ("", "as shipped"),
    ("nofsync", "no fsync at all (what durability still costs)"),
    ("claimers2", "two claim threads (two GETs in flight when two executors are idle)"),
]


# ---- the comparison ------------------------------------------------------------------------------------------

def measure(quick: bool, profile: bool, whatif: bool) -> list[dict[str, Any]]:
    repeats = 2 if quick else 3
    n = 400 if quick else 1000
    samples = 20 if quick else 50
    workdir = Path(tempfile.mkdtemp(prefix="hive-bench-e2e-"))
    rows: list[dict[str, Any]] = []
    srv = DevServer(workdir)
    redis = RedisServer()
    try:
        for pool in (2, 4):
            worker = HiveWorker(workdir / f"home-{pool}", srv.url, TEST_CONFIG, pool, env=OUR_ENV)
            rig = None
            try:
                ours_warm(srv, worker)
                suspend(worker.pid)
                rig = CeleryRig(redis, pool, workdir)
                ours: list[dict[str, float]] = []
                cel: list[dict[str, float]] = []
                for rep in range(repeats):
                    for side in ((0, 1) if rep % 2 == 0 else (1, 0)):
                        if side == 0:
                            suspend(rig.worker.pid)
                            resume(worker.pid)
                            ours.append(ours_drain(srv, worker, n))
                        else:
                            suspend(worker.pid)
                            resume(rig.worker.pid)
                            cel.append(rig.drain(n))
                    log(f"e2e pool {pool} repeat {rep + 1}/{repeats}: ours {ours[-1]['rate']:.0f}/s "
                        f"({ours[-1]['sup_ms']:.1f} ms supervisor CPU/task), Celery {cel[-1]['rate']:.0f}/s "
                        f"({cel[-1]['sup_ms']:.1f} ms main CPU/task)")
                suspend(rig.worker.pid)
                resume(worker.pid)
                lat, c2r = ours_latency(srv, samples)
                suspend(worker.pid)
                resume(rig.worker.pid)
                clat = rig.latency(samples)
            finally:
                if rig is not None:
                    resume(rig.worker.pid)
                    rig.stop()
                resume(worker.pid)
                worker.stop()
            ratios = [o["rate"] / c["rate"] for o, c in zip(ours, cel, strict=True)]
            ours_rate = median([o["rate"] for o in ours])
            lag = median([o["claimed_s"] / o["wall_s"] for o in ours])
            rows.append(row("2 e2e", f"no-op tasks/s over HTTP, enqueue all then drain, pool {pool}", ours_rate,
                            "tasks/s", median([c["rate"] for c in cel]), f"Celery prefork -c {pool} + Redis",
                            ratio=median(ratios), target=">= 1.0x Celery", met=median(ratios) >= 1.0,
                            note=f"ours: the last task was claimed after {lag:.0%} of the drain" + (
                                " (claiming bounds it: one GET per idle executor)" if lag >= 0.9
                                else ", the rest waited for results to be posted")))
            sup = median([o["sup_ms"] for o in ours])
            rows.append(row("2 e2e", f"supervisor CPU per task, pool {pool}", sup, "ms",
                            median([c["sup_ms"] for c in cel]), "Celery main process",
                            note=f"executors {median([o['exec_ms'] for o in ours]):.2f} ms/task, Celery children "
                                 f"{median([c['exec_ms'] for c in cel]):.2f}; dev server "
                                 f"{median([o['server_ms'] for o in ours]):.2f} ms/task"))
            rows.append(row("2 e2e", f"single-task latency, median, pool {pool}", 1000 * median(lat), "ms",
                            1000 * median(clat), "Celery",
                            note=f"ours: includes the poll wait (NO_TASK_SLEEP 0.05 s); claim -> result "
                                 f"{1000 * median(c2r):.1f} ms median"))
            rows.append(row("2 e2e", f"single-task latency, p95, pool {pool}", 1000 * pct(lat, 95), "ms",
                            1000 * pct(clat, 95), "Celery",
                            note=f"claim -> result p95 {1000 * pct(c2r, 95):.1f} ms"))
        lean, lean_cpu = median_pairs(srv, 300 if quick else 800, lean=True)
        req, req_cpu = median_pairs(srv, 300 if quick else 800, lean=False)
        rows.append(row("2 e2e context", "dev server: GET+POST pairs/s, one http.client keep-alive loop", lean,
                        "pairs/s", note=f"client {lean_cpu:.2f} ms CPU/pair: the server is not what bounds us"))
        rows.append(row("2 e2e context", "dev server: GET+POST pairs/s, one requests.Session loop", req, "pairs/s",
                        lean, "http.client", note=f"client {req_cpu:.2f} ms CPU/pair (requests' own cost)"))
        if whatif:
            variants = WHATIF if not quick else WHATIF[:2]
            rows += whatif_runs(srv, workdir, 300 if quick else 600, variants, 1 if quick else 2)
        if profile:
            text = profile_run(srv, workdir, 300 if quick else 600)
            if text:
                rows.append(note("2 e2e", "Profile of the supervisor during an end-to-end drain", text))
            else:
                rows.append(note("2 e2e", "Profile of the supervisor during an end-to-end drain",
                                 "No profile: py-spy is not installed (pip install -r requirements-bench.txt) or "
                                 "may not attach (run as root, or set kernel.yama.ptrace_scope=0)."))
    finally:
        redis.stop()
        srv.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return rows


def median_pairs(srv: DevServer, n: int, lean: bool) -> tuple[float, float]:
    got = [pairs_per_second(srv, n, lean) for _ in range(3)]
    return median([g[0] for g in got]), median([g[1] for g in got])


def main() -> None:
    ap = json_arg_parser(__doc__)
    ap.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    ap.add_argument("--no-whatif", action="store_true", help="skip the what-if runs")
    args = ap.parse_args()
    emit(measure(args.quick, not args.no_profile, not args.no_whatif), args.json)


if __name__ == "__main__":
    main()
