"""prom_pars with a real Chromium: throughput of the selenium backend, and the limits on a browser tree.

    python bench/bench_browser.py [--quick] [--json]

Needs selenium (pip install -r requirements-browser.txt) and Chromium + chromedriver
(Debian: apt-get install -y chromium chromium-driver); without them it prints why and
exits 0. Pages: the fixture pages of tests/fixtures/prom/, served by bench_prom.py's
server in its own process on 127.0.0.1.

Throughput: one prom_pars call in this process (what one executor does with one task),
backend "selenium", with delay 0 and with the default delay (1 s), in products per
minute; Chrome's start is included (each task starts its own browser).

Reaction: the real worker (pool 1, TASK_MEMORY_LIMIT_MB=LIMIT_MB) runs the task
``bench_chrome`` (below): a headless Chromium through tasks.prom.fetch_browser.SeleniumFetcher with
TABS tabs open (~20 processes, ~2.1 GB of summed RSS), then the fixture page that
allocates 64 MB every 100 ms in JavaScript. The clock starts when the tree's RSS,
polled every ~2 ms from /proc as in bench_limits.py, first exceeds the limit and stops
when no process of the tree is running any more.

Monitor cost: the real worker with 2 executors, each holding such a Chromium tree
open; the supervisor's CPU over a window, limits on vs all limits off; and one
TreeMonitor.usage() of one such tree against one full /proc scan (Snapshot).
"""

from __future__ import annotations

import importlib.util
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from bench_limits import children_of, descendants, is_tracker, rss, running  # noqa: E402
from benchkit import MB, DevServer, HiveWorker, emit, json_arg_parser, log, median, row, wait_for  # noqa: E402

CONFIG = Path(__file__).resolve().parent / "bench_browser_config.py"
TABS = 10
LIMIT_MB = 2600  # above the ~2.1 GB of TABS idle tabs, so only the allocating page crosses it
LOOPBACK = ["127.0.0.1"]
SKIP_PAGES = ("captcha.html", "eats_memory.html", "never_loads.html")


def chrome_tree(base: str, tabs: int = TABS, eat: bool = False, hold: float = 60.0) -> dict:
    """The bench task: a Chromium tree of ``tabs`` tabs, held ``hold`` s (or eating memory)."""
    from tasks.prom.fetch_browser import SeleniumFetcher

    fetcher = SeleniumFetcher(timeout=hold + 60, allowed_hosts=LOOPBACK)
    try:
        for i in range(tabs):
            if i:
                fetcher.driver.switch_to.new_window("tab")
            fetcher.driver.get(f"{base}/p/in_stock_uk.html?tab={i}")
        if eat:
            fetcher.driver.get(f"{base}/p/eats_memory.html")
        time.sleep(hold)
    finally:
        fetcher.close()
    return {"status": "success", "data": tabs}


def browser_missing() -> str | None:
    from tasks.prom.fetch_browser import CHROME_NAMES, CHROMEDRIVER_NAMES, _which

    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install -r requirements-browser.txt)"
    if not (_which(CHROME_NAMES) and _which(CHROMEDRIVER_NAMES)):
        return "chromium/chromedriver not found (apt-get install -y chromium chromium-driver)"
    return None


def throughput(port: int, quick: bool) -> list[dict]:
    from bench_prom import PAGES

    from executor import api
    from tasks.prom_parser import DEFAULT_DELAY, prom_pars

    api._settings = {"prom_allowed_hosts": LOOPBACK}
    logging.basicConfig(level=logging.ERROR)  # the fixtures' malformed fields log warnings
    pages = [p for p in PAGES if p not in SKIP_PAGES]
    rows = []
    for delay, n in ((0.0, 15 if quick else 40), (DEFAULT_DELAY, 8 if quick else 20)):
        products = [{"product_id": i, "url": f"http://127.0.0.1:{port}/p/{pages[i % len(pages)]}?i={i}"}
                    for i in range(n)]
        started = time.perf_counter()
        result = prom_pars(products_to_scrape=products, backend="selenium", delay=delay, timeout=30)
        elapsed = time.perf_counter() - started
        assert result["status"] == "success" and len(result["data"]) == n, result
        # the browser read every page as the requests backend does
        assert result == prom_pars(products_to_scrape=products, delay=0), "selenium and requests rows differ"
        per_min = 60 * n / elapsed
        log(f"browser: selenium backend, delay {delay:g} s: {n} products in {elapsed:.1f} s")
        rows.append(row("7 browser", f"prom_pars products/min per executor, selenium backend, delay {delay:g} s",
                        per_min, "products/min", note=f"{n} products in one task, Chrome's start included "
                        f"({elapsed:.1f} s); headless Chromium, fixture pages on loopback"))
    return rows


def reaction(srv: DevServer, base: str, workdir: Path, rounds: int) -> tuple[list[float], list[int], str]:
    worker = HiveWorker(workdir / "home-reaction", srv.url, CONFIG, 1,
                        env={"HIVE_TASK_MEMORY_LIMIT_MB": str(LIMIT_MB), "HIVE_TASK_TIME_LIMIT": "300"})
    times, sizes = [], []
    try:
        worker.wait_started()
        for i in range(rounds):
            before = srv.results()
            srv.enqueue("bench_chrome", {"base": base, "eat": True, "hold": 120})
            crossed = root = None
            tracked: set[int] = set()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                now = time.perf_counter()
                if crossed is None:
                    for ex in children_of(worker.pid):
                        if is_tracker(ex):
                            continue
                        pids = descendants(ex)
                        if sum(rss(p) for p in pids) > LIMIT_MB * MB:
                            crossed, root, tracked = now, ex, set(pids)
                            break
                else:
                    if running(root):
                        tracked.update(descendants(root))
                    if not any(running(p) for p in tracked):
                        times.append(now - crossed)
                        sizes.append(len(tracked))
                        break
                time.sleep(0.002)
            else:
                logfile = worker.home / "logs" / "worker.log"
                tail = logfile.read_text(errors="replace")[-1500:] if logfile.exists() else worker.console()[-1500:]
                raise RuntimeError(f"no breach or no kill within 120 s; the worker's log ends: {tail}")
            wait_for(lambda before=before: srv.results() > before, 30, "the memory_limit result")
            log(f"browser: breach {i + 1}/{rounds}: {sizes[-1]} processes dead {times[-1] * 1000:.0f} ms after "
                "crossing the limit")
    finally:
        worker.stop()
    text = (worker.home / "logs" / "worker.log").read_text(errors="replace")
    return times, sizes, text


def monitoring(srv: DevServer, base: str, workdir: Path, limits: bool, window: float) -> float:
    env = {"HIVE_SHUTDOWN_GRACE": "1", "HIVE_TASK_MEMORY_LIMIT_MB": str(LIMIT_MB)}
    if not limits:
        env.update(HIVE_TASK_TIME_LIMIT="0", HIVE_TASK_CPU_LIMIT="0", HIVE_TASK_MEMORY_LIMIT_MB="0")
    worker = HiveWorker(workdir / f"home-monitor-{limits}", srv.url, CONFIG, 2, env=env)
    try:
        worker.wait_started()
        srv.enqueue("bench_chrome", {"base": base, "hold": window + 60}, 2)
        wait_for(lambda: srv.claimed_count() >= 2, 120, "2 busy executors")
        # until both trees are complete: TABS renderers each
        wait_for(lambda: all(len(descendants(ex)) >= TABS + 8 for ex in children_of(worker.pid) if not is_tracker(ex)),
                 120, "two full Chromium trees")
        time.sleep(3.0)  # the tabs finish loading
        cpu0 = worker.cpu()
        started = time.perf_counter()
        time.sleep(window)
        return 100 * (worker.cpu() - cpu0) / (time.perf_counter() - started)
    finally:
        worker.stop()
        srv.conn.execute("UPDATE tasks SET state = 'done' WHERE state != 'done'")


def per_check(base: str) -> tuple[float, float, int]:
    """Median seconds of one TreeMonitor.usage() and one Snapshot().usage() of a Chromium tree."""
    from common.proctree import Snapshot, TreeMonitor
    from tasks.prom.fetch_browser import SeleniumFetcher

    fetcher = SeleniumFetcher(timeout=60, allowed_hosts=LOOPBACK)
    try:
        for i in range(TABS):
            if i:
                fetcher.driver.switch_to.new_window("tab")
            fetcher.driver.get(f"{base}/p/in_stock_uk.html?tab={i}")
        time.sleep(2.0)
        root = fetcher.driver.service.process.pid  # chromedriver: the browser tree hangs below it
        monitor = TreeMonitor()
        size = len(monitor.usage(root).pids)
        walks, scans = [], []
        for _ in range(100):
            started = time.perf_counter()
            monitor.usage(root)
            walks.append(time.perf_counter() - started)
            started = time.perf_counter()
            Snapshot().usage(root)
            scans.append(time.perf_counter() - started)
        monitor.close()
        return median(walks), median(scans), size
    finally:
        fetcher.close()


def measure(quick: bool) -> list[dict]:
    missing = browser_missing()
    if missing:
        log(f"browser: skipped: {missing}")
        return [row("7 browser", f"skipped: {missing}", "")]
    from bench_prom import serve

    queue: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(queue,), daemon=True)
    server.start()
    port, _ = queue.get(timeout=60)
    base = f"http://127.0.0.1:{port}"
    workdir = Path(tempfile.mkdtemp(prefix="hive-bench-browser-"))
    srv = DevServer(workdir)
    rows: list[dict] = []
    try:
        rows += throughput(port, quick)
        rounds = 3 if quick else 7
        times, sizes, text = reaction(srv, base, workdir, rounds)
        import re

        sweeps = [float(x) for x in re.findall(r"killed its \d+ process\(es\) in (\d+) ms", text)]
        kinds = text.count("kind memory_limit")
        rows.append(row("7 browser", "reaction: Chromium tree past the memory limit -> whole tree dead, median",
                        1000 * median(times), "ms", target="< 250 ms", met=median(times) < 0.25,
                        note=f"{rounds} breaches of TASK_MEMORY_LIMIT_MB {LIMIT_MB}, trees of {min(sizes)}-{max(sizes)} "
                             f"processes; {kinds}/{rounds} results of kind memory_limit; kill sweep "
                             f"{median(sweeps):.0f} ms median"))
        rows.append(row("7 browser", "reaction: Chromium tree past the memory limit -> whole tree dead, max",
                        1000 * max(times), "ms", target="< 250 ms", met=max(times) < 0.25))
        window = 8.0 if quick else 20.0
        on = monitoring(srv, base, workdir, True, window)
        off = monitoring(srv, base, workdir, False, window)
        log(f"browser: supervisor CPU with 2 Chromium trees: {on:.2f}% limits on, {off:.2f}% off")
        rows.append(row("7 browser", "supervisor CPU, 2 executors each holding a Chromium tree, limits on", on,
                        "% of a core", off, "limits off", target="monitoring (on - off) < 2%", met=on - off < 2.0,
                        note=f"monitoring costs {on - off:.2f}% of a core ({TABS} tabs per tree)"))
        walk, scan, size = per_check(base)
        nprocs = sum(1 for name in os.listdir("/proc") if name.isdigit())
        rows.append(row("7 browser", f"one check of one Chromium tree ({size} processes): TreeMonitor", walk * 1e6,
                        "µs", scan * 1e6, f"one full /proc scan (Snapshot, {nprocs} processes)",
                        note="the walk reads every thread's children file; Chromium runs 10-30 threads per process"))
    finally:
        srv.stop()
        server.terminate()
        server.join(5)
        shutil.rmtree(workdir, ignore_errors=True)
    return rows


def main() -> None:
    args = json_arg_parser(__doc__).parse_args()
    emit(measure(args.quick), args.json)


if __name__ == "__main__":
    main()
