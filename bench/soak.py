"""Soak test (issue 4), not in CI: thousands of tasks through a fault-injecting server while
executors are killed at random. Prints claimed / delivered / duplicates / lost; lost must be 0.

    python bench/soak.py [--tasks 3000] [--fault-rate 0.1] [--kill-every 0.5] [--pool 4] [--restart-every 0]
                         [--poison-seconds 60]

Faults: 500, 502, 503 (Retry-After 0), resets, hangs, garbage, lost answers, and transient
404, 403 and 400 answers (issue 22.2), plus one poison result refused with a 500 for its first
--poison-seconds (issue 22.1). Every task id enqueued must end with at least one result at the server (a killed
task's result is a "crashed" failure; that still counts as delivered). With
--restart-every N the worker itself is SIGKILLed and restarted every N seconds.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.vocabulary import TOKEN_ENV  # noqa: E402
from devserver import Fault, HiveDevServer  # noqa: E402


def executors_of(pid: int) -> list[psutil.Process]:
    try:
        children = psutil.Process(pid).children()
    except psutil.Error:
        return []
    out = []
    for p in children:
        try:
            if TOKEN_ENV in p.environ():
                out.append(p)
        except psutil.Error:
            pass
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=3000)
    ap.add_argument("--fault-rate", type=float, default=0.1)
    ap.add_argument("--kill-every", type=float, default=0.5)
    ap.add_argument("--pool", type=int, default=4)
    ap.add_argument("--restart-every", type=float, default=0.0)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--poison-seconds", type=float, default=60, help="how long one task's result gets a 500")
    args = ap.parse_args()
    rng = random.Random(1)
    tmp = Path(tempfile.mkdtemp(prefix="hive-soak-"))
    # With worker kill -9s, a task the server handed out can die in the worker before it was
    # journalled (inside the HTTP answer): protocol v1 has no lease, so the server's requeue
    # timeout is what brings such a task back. Without restarts nothing may need it.
    srv = HiveDevServer(str(tmp / "server.sqlite"), requeue_after=10 if args.restart_every else 3600).start()
    ids = [srv.enqueue("sleep_record", {"seconds": rng.choice([0, 0.005, 0.02])}) for _ in range(args.tasks)]
    faults_made: Counter[str] = Counter()

    def faults(method: str, path: str) -> Fault | None:
        if rng.random() >= args.fault_rate:
            return None
        kind = rng.choice(["500", "502", "503", "reset", "hang", "garbage", "lose_answer", "404", "403", "400"])
        is_submit = path.endswith("submit_result")
        if kind == "garbage" and is_submit or kind == "lose_answer" and not is_submit:
            return None  # a 200 on submit means "recorded"; a lost get_task answer loses it at the server
        faults_made[kind] += 1
        return {"500": lambda: Fault.status(500), "502": lambda: Fault.status(502, b"<html>bad gateway</html>"),
                "503": lambda: Fault.status(503, b"", {"Retry-After": "0"}), "reset": Fault.reset,
                "hang": lambda: Fault.hang(1.2), "garbage": lambda: Fault.garbage(b"<html>"),
                "lose_answer": Fault.lose_answer, "404": lambda: Fault.status(404, b"<html>not found</html>"),
                "403": lambda: Fault.status(403, b"proxy login expired"), "400": lambda: Fault.status(400)}[kind]()

    # A poison result (issue 22.1): the server answers 500 to this one task's result only, for the
    # first --poison-seconds; every other result must keep flowing meanwhile, and it must still
    # arrive afterwards.
    poison = ids[len(ids) // 10]
    poison_needle = b'"task_id":' + str(poison).encode() + b","
    poison_posts = [0]
    poison_until = [float("inf")]  # set when the drain starts

    def body_faults(method: str, path: str, body: bytes) -> Fault | None:
        if path.endswith("submit_result") and body.startswith(b"{" + poison_needle[:-1]) and poison_needle in body:
            poison_posts[0] += 1
            if time.monotonic() < poison_until[0]:
                faults_made["poison 500"] += 1
                return Fault.status(500, b"server bug for this one body")
        return None

    srv.faults = faults
    srv.body_faults = body_faults
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")}
    env.update(HIVE_POOL_SIZE=str(args.pool), HIVE_NO_TASK_SLEEP="0.2", HIVE_TIME_ERROR_SLEEP="0.5",
               HIVE_TASK_ERROR_SLEEP="0", HIVE_GET_TASK_TIMEOUT="1", HIVE_SUBMIT_TIMEOUT="1", HIVE_LOG_LEVEL="INFO")
    cmd = [sys.executable, str(ROOT / "main.py"), "--home", str(tmp / "home"), "--server", srv.url,
           "--config", str(ROOT / "tests" / "support" / "test_config.py")]
    console = open(tmp / "console.txt", "ab")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=console, stderr=subprocess.STDOUT)
    kills = restarts = 0
    stop = threading.Event()

    def killer() -> None:
        nonlocal kills
        while not stop.wait(args.kill_every):
            victims = executors_of(proc.pid)
            if victims:
                try:
                    rng.choice(victims).send_signal(signal.SIGKILL)
                    kills += 1
                except psutil.Error:
                    pass

    threading.Thread(target=killer, daemon=True).start()
    started = time.monotonic()
    poison_until[0] = started + args.poison_seconds
    last_restart = started
    delivered_while_poisoned = 0
    want = set(ids)
    try:
        while time.monotonic() - started < args.timeout:
            got = {r["task_id"] for r in srv.results()}
            if time.monotonic() < poison_until[0]:
                delivered_while_poisoned = len(got)
            if want <= got:
                break
            if args.restart_every and time.monotonic() - last_restart > args.restart_every:
                proc.kill()
                proc.wait()
                proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=console, stderr=subprocess.STDOUT)
                restarts += 1
                last_restart = time.monotonic()
            time.sleep(0.5)
    finally:
        stop.set()
        srv.faults = None
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        console.close()
    elapsed = time.monotonic() - started
    results = srv.results()
    per_id = Counter(r["task_id"] for r in results)
    kinds = Counter(r["result"].get("kind") if r["status"] == "failure" else "success" for r in results)
    lost = len(want - set(per_id))
    tasks = srv.store.tasks()
    claimed = sum(t["claims"] for t in tasks)
    print(f"soak: {args.tasks} tasks in {elapsed:.0f} s, pool {args.pool}, {kills} executor kills, "
          f"{restarts} worker kill -9 + restarts, faults injected {dict(faults_made)}")
    requeued = sum(max(0, t["claims"] - 1) for t in tasks)
    print(f"soak: claimed {claimed} ({requeued} re-handed out by the server's requeue), results received {len(results)}, tasks with a result {len(per_id)}, "
          f"duplicates {len(results) - len(per_id)}, lost {lost}")
    print(f"soak: outcomes {dict(kinds)}")
    print(f"soak: poison result (task {poison}) refused with 500 for {args.poison_seconds:g} s: posted {poison_posts[0]} "
          f"times, delivered {'yes' if poison in per_id else 'NO'}; {delivered_while_poisoned} other results "
          f"delivered meanwhile; dead letters {len(list((tmp / 'home' / 'outbox-dead').glob('*.json')))}")
    srv.stop()
    if lost == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"soak: kept {tmp} for inspection")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
