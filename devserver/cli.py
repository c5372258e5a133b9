"""Command line: serve a db file, and enqueue into / inspect it from another shell while it serves."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from .server import HiveDevServer, enqueue_demo
from .store import Store, dumps

DEFAULT_DB = "devserver.sqlite"
# The same file as the serving server's: `python main.py` serves devserver.sqlite in its home.
DB_HELP = f"the server's SQLite queue (default {DEFAULT_DB}; python main.py's is devserver.sqlite in its home)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m devserver", description="A local Hive server (protocol v1) for development.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="serve the queue in --db over HTTP until Ctrl+C")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=3010, help="0 = any free port (default 3010)")
    s.add_argument("--db", default=DEFAULT_DB, help=f"SQLite file (default {DEFAULT_DB}); ':memory:' for none")
    s.add_argument("--requeue-after", type=float, default=300.0, metavar="S",
                   help="hand a claimed task out again after S seconds without a result (default 300)")
    s.add_argument("--prefix", default="/api", help="API path prefix (default /api)")
    s.add_argument("--demo", action="store_true", help="enqueue a few get_system_info and example tasks first")
    s.add_argument("-v", "--verbose", action="store_true", help="log every request to stderr")

    e = sub.add_parser("enqueue", help="add tasks (works while a server serves the same --db)")
    e.add_argument("task_type", metavar="TYPE")
    e.add_argument("--params", default=None, metavar="JSON|@FILE", help="params as JSON, or @path of a JSON file")
    e.add_argument("--count", type=int, default=1, metavar="N")
    e.add_argument("--id", dest="task_id", default=None, metavar="ID",
                   help="task id: 7 is a number, abc or '\"7\"' a string (default: next integer)")
    e.add_argument("--db", default=DEFAULT_DB, help=DB_HELP)

    r = sub.add_parser("results", help="show the results received, newest last")
    r.add_argument("--db", default=DEFAULT_DB, help=DB_HELP)
    r.add_argument("--json", action="store_true", help="print a JSON array instead")
    r.add_argument("--tail", type=int, default=0, metavar="N", help="only the last N")

    st = sub.add_parser("status", help="tasks per state")
    st.add_argument("--db", default=DEFAULT_DB, help=DB_HELP)
    return p


def main(argv: list[str] | None = None) -> int:
    # Results may hold any text; a legacy Windows console must not crash printing them.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    try:
        return {"serve": _serve, "enqueue": _enqueue, "results": _results, "status": _status}[args.command](args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


class UsageError(Exception):
    pass


def _serve(args: argparse.Namespace) -> int:
    srv = HiveDevServer(args.db, host=args.host, port=args.port, requeue_after=args.requeue_after,
                        prefix=args.prefix, verbose=args.verbose)
    if args.demo:
        enqueue_demo(srv)
    # SIGTERM should close the db like Ctrl+C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    srv.start()
    try:
        counts = srv.store.counts()
        print(f"Hive dev server (protocol v1) serving {args.db}: {counts['queued']} queued, {counts['results']} results",
              flush=True)
        print(f"SERVER_URL={srv.url}", flush=True)
        if args.host in ("", "0.0.0.0", "::"):
            print(f"(listening on all interfaces: other machines use http://<this host's address>:{srv.port}{srv.prefix})",
                  flush=True)
        print(f"run a worker with: python main.py --server {srv.url}   (or HIVE_WORKER_SERVER_URL={srv.url})", flush=True)
        print(f"enqueue with:      python -m devserver enqueue TYPE --db {args.db}   (Ctrl+C stops)", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
    return 0


def _parse_id(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, (int, float, str)) and not isinstance(value, bool) else text


def _parse_params(text: str | None) -> Any:
    if text is None:
        return {}
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--params: {exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--params is not JSON: {exc}") from None


def _enqueue(args: argparse.Namespace) -> int:
    params = _parse_params(args.params)
    if args.count < 1:
        raise UsageError("--count must be at least 1")
    if args.task_id is not None and args.count != 1:
        raise UsageError("--id needs --count 1 (ids should be unique)")
    store = Store(args.db)
    try:
        for _ in range(args.count):
            task_id = store.enqueue(args.task_type, params, None if args.task_id is None else _parse_id(args.task_id))
            print(f"enqueued {dumps(task_id)} {args.task_type} {dumps(params)}")
    finally:
        store.close()
    return 0


def _existing_store(db: str) -> Store:
    if db != ":memory:" and not Path(db).exists():
        raise UsageError(f"no database at {db} (start with: python -m devserver serve --db {db})")
    return Store(db)


def _results(args: argparse.Namespace) -> int:
    store = _existing_store(args.db)
    try:
        results = store.results()
    finally:
        store.close()
    if args.tail > 0:
        results = results[-args.tail:]
    if args.json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
        return 0
    if not results:
        print("no results yet")
    for r in results:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["received_at"]))
        result = dumps(r["result"])
        if len(result) > 300:
            result = result[:300] + f"... ({len(result)} chars)"
        print(f"#{r['seq']} {when} task {dumps(r['task_id'])} from {r['worker_id']}: {r['status']} {result}")
    return 0


def _status(args: argparse.Namespace) -> int:
    store = _existing_store(args.db)
    try:
        counts = store.counts()
    finally:
        store.close()
    print(" ".join(f"{state}={counts[state]}" for state in ("queued", "claimed", "done"))
          + f"  results={counts['results']}" + (f"  raw_pending={counts['raw']}" if counts["raw"] else ""))
    return 0
