"""Throughput of a base revision beside the current tree, in one run: does a change cost throughput?

    python bench/bench_revisions.py --base <git-rev> [--quick] [--json]

A temporary ``git worktree`` of --base is created (and removed at the end); both checkouts are
then measured the same way, taking turns in every repeat (the order flips from one repeat to
the next), so both see the same machine at nearly the same time:

- e2e drain, pool 2 and pool 4, as bench_e2e.py measures ours: each checkout runs its own
  ``python main.py`` against its own ``python -m devserver serve``, both started from that
  checkout's directory (HIVE_LOG_LEVEL=WARNING, NO_TASK_SLEEP=0.05, executors at normal
  priority, limits on). N echo tasks are enqueued in one transaction and timed until the
  last result is recorded. Both workers stay up for the whole run; the one not being
  measured is SIGSTOPped so it cannot steal CPU (its own server just idles, so no task of
  one drain can be claimed by the stopped worker).
- dispatch, as bench_dispatch.py measures ours: bench/rev_dispatch.py, run from each
  checkout's directory, drives that checkout's Pool (pool of 2, limits on) with
  bench_dispatch.Ours, small dict and 10 KB payloads; a fresh pool per repeat.

"current" is the working tree this script lives in, uncommitted changes included. Figures are
medians over repeats; the ratio current / base is the median of the per-repeat ratios. Nothing
is judged against a threshold: the machine is shared and noisy, so read the ratio and its spread.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench_e2e import OUR_ENV, ours_drain, ours_warm, resume, suspend

from common import BENCH, ROOT, DevServer, HiveWorker, bench_env, emit, json_arg_parser, log, median, row

SIDES = ("base", "current")


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout.strip()


@contextmanager
def base_checkout(rev: str) -> Iterator[Path]:
    """A detached worktree of ``rev`` in a temp dir, removed (and unregistered) afterwards."""
    parent = Path(tempfile.mkdtemp(prefix="hive-bench-rev-"))
    path = parent / "base"
    git("worktree", "add", "--detach", "--quiet", str(path), rev)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], capture_output=True)
        shutil.rmtree(parent, ignore_errors=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], capture_output=True)


def turns(rep: int) -> tuple[str, ...]:
    """Who goes first alternates, so a drift of the machine does not favour one side."""
    return SIDES if rep % 2 == 0 else SIDES[::-1]


def per_repeat_ratio(values: dict[str, list[float]]) -> float:
    return median([c / b for b, c in zip(values["base"], values["current"], strict=True)])


# ---- e2e drain -----------------------------------------------------------------------------------

def e2e(trees: dict[str, Path], pool: int, n: int, repeats: int, workdir: Path) -> dict[str, list[dict[str, float]]]:
    servers: list[DevServer] = []
    workers: dict[str, HiveWorker] = {}
    got: dict[str, list[dict[str, float]]] = {side: [] for side in SIDES}
    try:
        for side, root in trees.items():
            home = workdir / f"{side}-pool{pool}"
            home.mkdir()
            srv = DevServer(home, root=root)
            servers.append(srv)
            worker = workers[side] = HiveWorker(home / "home", srv.url, root / "tests" / "support" / "test_config.py",
                                                pool, env=OUR_ENV, root=root)
            ours_warm(srv, worker)
            suspend(worker.pid)
        by_side = dict(zip(trees, servers, strict=True))
        for rep in range(repeats):
            for side in turns(rep):
                resume(workers[side].pid)
                got[side].append(ours_drain(by_side[side], workers[side], n))
                suspend(workers[side].pid)
            log(f"e2e pool {pool} repeat {rep + 1}/{repeats}: " + ", ".join(
                f"{side} {got[side][-1]['rate']:.0f}/s" for side in SIDES))
    finally:
        for worker in workers.values():
            resume(worker.pid)
            worker.stop()
        for srv in servers:
            srv.stop()
    return got


def e2e_rows(got: dict[str, list[dict[str, float]]], pool: int, n: int, base_label: str) -> dict[str, Any]:
    rates = {side: [m["rate"] for m in got[side]] for side in SIDES}
    sup = {side: median(m["sup_ms"] for m in got[side]) for side in SIDES}
    return row("revisions", f"e2e drain of {n} echo tasks over HTTP, pool {pool}", median(rates["current"]),
               "tasks/s", median(rates["base"]), base_label, ratio=per_repeat_ratio(rates),
               note=f"supervisor CPU {sup['current']:.2f} ms/task (base {sup['base']:.2f}); per repeat: "
                    + ", ".join(f"{c:.0f} vs {b:.0f}" for b, c in zip(rates["base"], rates["current"], strict=True)))


# ---- dispatch ----------------------------------------------------------------------------------------

def dispatch_once(root: Path, tasks: int) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(BENCH / "rev_dispatch.py"), str(root), str(tasks), str(tasks)],
                          cwd=root, env=bench_env(), capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"rev_dispatch.py in {root} exited with {proc.returncode}: {proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if not Path(out["pool_file"]).resolve().is_relative_to(root):  # a wrong sys.path would compare a tree to itself
        raise RuntimeError(f"rev_dispatch.py in {root} imported the pool from {out['pool_file']}")
    return out


def dispatch(trees: dict[str, Path], tasks: int, repeats: int) -> dict[str, list[dict[str, Any]]]:
    got: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    for rep in range(repeats):
        for side in turns(rep):
            got[side].append(dispatch_once(trees[side], tasks))
        log(f"dispatch repeat {rep + 1}/{repeats}: " + ", ".join(
            f"{side} {got[side][-1]['small']:.0f}/{got[side][-1]['10kb']:.0f}" for side in SIDES))
    return got


def dispatch_rows(got: dict[str, list[dict[str, Any]]], tasks: int, base_label: str) -> list[dict[str, Any]]:
    rows = []
    for payload, what in (("small", "small dict"), ("10kb", "10 KB payload")):
        rates = {side: [m[payload] for m in got[side]] for side in SIDES}
        rows.append(row("revisions", f"dispatch, {tasks} no-op tasks, {what}, Pool of 2, limits on",
                        median(rates["current"]), "tasks/s", median(rates["base"]), base_label,
                        ratio=per_repeat_ratio(rates), note="per repeat: " + ", ".join(
                            f"{c:.0f} vs {b:.0f}" for b, c in zip(rates["base"], rates["current"], strict=True))))
    return rows


# ---- the comparison ------------------------------------------------------------------------------------------

def measure(base: str, quick: bool) -> list[dict[str, Any]]:
    started = time.monotonic()
    repeats = 5 if quick else 7  # a drain is short, and one repeat can be off by 20% on a shared machine
    drain_tasks = 400 if quick else 1000
    dispatch_tasks = 1500 if quick else 5000
    base_sha = git("rev-parse", "--short", f"{base}^{{commit}}")
    dirty = "+changes" if git("status", "--porcelain", "--untracked-files=no") else ""
    base_label = f"base {base_sha}"
    log(f"base {base_sha} against current {git('rev-parse', '--short', 'HEAD')}{dirty}")
    rows: list[dict[str, Any]] = []
    workdir = Path(tempfile.mkdtemp(prefix="hive-bench-revisions-"))
    try:
        with base_checkout(base_sha) as base_root:
            trees = {"base": base_root, "current": ROOT}
            for pool in (2, 4):
                rows.append(e2e_rows(e2e(trees, pool, drain_tasks, repeats, workdir), pool, drain_tasks, base_label))
            rows += dispatch_rows(dispatch(trees, dispatch_tasks, repeats), dispatch_tasks, base_label)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows.append(row("revisions", "total run time", time.monotonic() - started, "s",
                    note=f"{repeats} repeats per measure, current = {git('rev-parse', '--short', 'HEAD')}{dirty}"))
    return rows


def main() -> None:
    ap = json_arg_parser(__doc__)
    ap.add_argument("--base", required=True, help="the git revision to compare the current tree against")
    args = ap.parse_args()
    emit(measure(args.base, args.quick), args.json)


if __name__ == "__main__":
    main()
