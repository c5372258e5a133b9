"""prom_pars benchmark: products per second (fetch on loopback + parse) and peak memory.

    python bench/bench_prom.py [--products 200] [--rounds 3]

A server process serves the fixture pages of tests/fixtures/prom/ on 127.0.0.1, as they
are (~2 KB) and padded to the size of a real prom.ua product page (~400 KB: inline
state JSON and a block of similar-product cards). One prom_pars call (delay=0) over
--products products is what one executor does with one task; peak RSS is measured in
a fresh child process running exactly one such call.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "prom"
# Not the captcha (it stops a batch) nor the pages made for a browser's limits (they never finish loading)
PAGES = sorted(p.name for p in FIXTURES.glob("*.html")
               if p.name not in ("captcha.html", "eats_memory.html", "never_loads.html"))
PADDED_KB = 400


def padded(html: str, kb: int = PADDED_KB) -> str:
    """The page with a large inline script and similar-product cards, like a real one."""
    card = ('<div data-qaid="product_block" class="card"><a data-qaid="product_link" href="/ua/p{i}-x.html">'
            'Товар {i} з довгою назвою для реалістичного розміру сторінки</a>'
            '<span data-qaid="product_presence">В наявності</span>'
            '<div data-qaid="product_price" data-qaprice="{i}.50" data-qacurrency="UAH">{i},50 ₴</div>'
            '<img src="https://images.prom.ua/{i}_w200_h200.jpg" alt="x" loading="lazy"></div>\n')
    cards = "".join(card.format(i=i) for i in range(60))
    state = json.dumps({"ROOT_QUERY": {f"product:{i}": {"name": "Товар " * 8, "descriptionPlain": "Опис " * 60,
                                                       "attributes": [{"name": "Колір", "values": [{"value": "чорний"}]}] * 4}
                                       for i in range(400)}}, ensure_ascii=False)
    body = f'<section data-qaid="more_products">{cards}</section>\n<script>window.ApolloCacheState = {state};</script>\n'
    html = html.replace("</body>", body + "</body>")
    while len(html.encode()) < kb * 1024:
        html = html.replace("</body>", f"<script>/* {'x' * 8000} */</script>\n</body>")
    return html


def serve(queue) -> None:
    pages = {path.name: path.read_bytes() for path in FIXTURES.glob("*.html")}  # bench_browser.py needs them all
    big = {name: padded(pages[name].decode()).encode() for name in PAGES}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format, *args):  # noqa: A002
            pass

        def do_GET(self):  # noqa: N802
            kind, _, name = self.path.strip("/").partition("/")
            body = (big if kind == "big" else pages).get(name.split("?")[0], b"")
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    queue.put((srv.server_address[1], len(next(iter(big.values())))))
    srv.serve_forever()


def products(port: int, kind: str, n: int) -> list[dict]:
    return [{"product_id": i, "url": f"http://127.0.0.1:{port}/{kind}/{PAGES[i % len(PAGES)]}?i={i}"}
            for i in range(n)]


def child(port: int, kind: str, n: int) -> None:
    """Run in a fresh process: one prom_pars call; print peak RSS (bytes) as JSON."""
    sys.path.insert(0, str(ROOT))
    logging.basicConfig(level=logging.ERROR)  # the fixtures' malformed fields log warnings
    allow_loopback()
    from tasks.prom_parser import prom_pars

    bare = _peak_rss()
    import requests  # noqa: F401 - what prom_pars imports on its first call
    import selectolax.lexbor  # noqa: F401

    imported = _peak_rss()
    result = prom_pars(products_to_scrape=products(port, kind, n), delay=0, timeout=10, retries=0)
    assert result["status"] == "success" and len(result["data"]) == n, result
    print(json.dumps({"bare": bare, "imported": imported, "peak": _peak_rss()}))


def allow_loopback() -> None:
    """The pages are on 127.0.0.1: allow it as the worker's prom_allowed_hosts setting would."""
    from executor import api

    api._settings = {"prom_allowed_hosts": ["127.0.0.1"]}


def _peak_rss() -> int:
    """Peak resident memory of this process so far, in bytes."""
    if sys.platform.startswith("linux"):
        # VmHWM, not getrusage: ru_maxrss survives exec, so a child would report its parent's peak
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    if sys.platform == "win32":
        import psutil

        return int(psutil.Process().memory_info().peak_wset)
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="throughput runs per page kind (best is shown)")
    parser.add_argument("--delay-products", type=int, default=20, help="products of the run with the default delay")
    parser.add_argument("--child", nargs=3, metavar=("PORT", "KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(int(args.child[0]), args.child[1], int(args.child[2]))
        return

    sys.path.insert(0, str(ROOT))
    logging.basicConfig(level=logging.ERROR)
    allow_loopback()
    from tasks.prom.parse import parse_product_page
    from tasks.prom_parser import DEFAULT_DELAY, prom_pars

    queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(queue,), daemon=True)
    server.start()
    port, big_size = queue.get(timeout=30)
    n = args.products
    print(f"{n} products per call over {len(PAGES)} fixture pages; server in its own process on 127.0.0.1:{port}; "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    try:
        prom_pars(products_to_scrape=products(port, "p", 5), delay=0)  # warm-up: imports, first connection
        for kind, label in (("p", "fixture pages, ~2 KB"), ("big", f"padded pages, ~{big_size // 1024} KB")):
            best = 0.0
            for _ in range(args.rounds):
                started = time.perf_counter()
                result = prom_pars(products_to_scrape=products(port, kind, n), delay=0, timeout=10, retries=0)
                elapsed = time.perf_counter() - started
                assert result["status"] == "success" and len(result["data"]) == n, result
                best = max(best, n / elapsed)
            out = subprocess.run([sys.executable, __file__, "--child", str(port), kind, str(n)],
                                 capture_output=True, text=True, check=True, timeout=300)
            rss = json.loads(out.stdout.strip().splitlines()[-1])
            mb = {key: value / 2**20 for key, value in rss.items()}
            print(f"prom_pars ({label}): {best:.0f} products/s, peak RSS {mb['peak']:.0f} MB "
                  f"(child at start {mb['bare']:.0f} MB, after importing requests and selectolax {mb['imported']:.0f} MB)")

        # what the politeness rule allows: one task with the default delay between products
        m = args.delay_products
        started = time.perf_counter()
        result = prom_pars(products_to_scrape=products(port, "big", m), delay=DEFAULT_DELAY, timeout=10, retries=0)
        elapsed = time.perf_counter() - started
        assert result["status"] == "success" and len(result["data"]) == m, result
        print(f"products per minute per executor, requests backend, default delay {DEFAULT_DELAY:g} s "
              f"(padded pages): {60 * m / elapsed:.1f} ({m} products in {elapsed:.1f} s)")

        # parse alone, no network: what the parser costs per page (UTF-8 bytes, as fetched)
        htmls = [(FIXTURES / p).read_text(encoding="utf-8") for p in PAGES]
        for label, pages in (("fixture pages, ~2 KB", [h.encode() for h in htmls]),
                             (f"padded pages, ~{big_size // 1024} KB", [padded(h).encode() for h in htmls])):
            count, started = 0, time.perf_counter()
            while time.perf_counter() - started < 1.0:
                for html in pages:
                    parse_product_page(html)
                count += len(pages)
            rate = count / (time.perf_counter() - started)
            print(f"parse only ({label}): {rate:.0f} pages/s ({1000 / rate:.2f} ms/page)")
    finally:
        server.terminate()
        server.join(5)


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
