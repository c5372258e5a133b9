"""The one-file binary against the source run (issue 5): size, start time, memory.

    python bench/bench_frozen.py [--binary dist/worker] [--runs 5] [--pool-size 2]

Without --binary it builds one with ``python -m release.build --dev-build`` into a temp folder.
For each of "frozen" (the binary) and "source" (``python main.py``), against a
local dev server that records when each request arrived:

- start time: from starting the process to the first request reaching the server
  (``get_task``). "cold": the first start after the files it loads were evicted
  from the page cache (posix_fadvise DONTNEED: the binary, or the repo, the venv
  and the Python library; not a reboot, and the one-file binary unpacks itself
  afresh on every start anyway); "warm": the median of --runs further starts.
- memory once the pool is idle: RSS and USS (memory only this process holds) of
  the supervisor, each executor, the resource tracker and, frozen, the bootloader.

Targets: binary under 20 MB; first request within 1 s warm. Plain lines only.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devserver import HiveDevServer  # noqa: E402
from release.build import binary_name  # noqa: E402

MB = 1024 * 1024


def evict(paths: list[Path]) -> int:
    """Drop these files (recursively) from the page cache; returns how many files were advised."""
    if not hasattr(os, "posix_fadvise"):
        return 0
    count = 0
    for path in paths:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
        for file in files:
            try:
                fd = os.open(file, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                count += 1
            except OSError:
                pass
            finally:
                os.close(fd)
    return count


def source_files() -> list[Path]:
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    paths = [ROOT, Path(sys.prefix), Path(sysconfig.get_paths()["stdlib"])]
    paths += [p for p in Path(libdir).glob("libpython*") if p.is_file()] if libdir else []
    return paths


def role(proc: psutil.Process) -> str:
    cmd = " ".join(proc.cmdline())
    if "resource_tracker" in cmd:
        return "resource tracker"
    if "--multiprocessing-fork" in cmd:
        return "executor"
    return "supervisor"


def memory(top: psutil.Process, frozen: bool) -> list[tuple[str, int, int]]:
    """(role, rss, uss) of every process of the worker, supervisor first."""
    procs = [top, *top.children(recursive=True)]
    out = []
    for proc in procs:
        try:
            info = proc.memory_full_info()
            name = "bootloader" if frozen and proc.pid == top.pid else role(proc)
            out.append((name, info.rss, info.uss))
        except psutil.Error:
            continue
    order = {"bootloader": 0, "supervisor": 1, "executor": 2, "resource tracker": 3}
    return sorted(out, key=lambda r: order.get(r[0], 9))


def one_start(cmd: list[str], srv: HiveDevServer, pool: int, tmp: Path, frozen: bool,
              measure: bool) -> tuple[float, list[tuple[str, int, int]]]:
    home = Path(tempfile.mkdtemp(prefix="home-", dir=tmp))
    tmpdir = home / "tmp"
    tmpdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")}
    env.update(HIVE_POOL_SIZE=str(pool), HIVE_NO_TASK_SLEEP="600", HIVE_LOG_LEVEL="DEBUG", TMPDIR=str(tmpdir),
               PYINSTALLER_RESET_ENVIRONMENT="1")
    srv.requests.clear()
    console = open(home / "console.txt", "wb")
    started = time.monotonic()
    proc = subprocess.Popen([*cmd, "--home", str(home), "--server", srv.url], cwd=str(tmp), env=env,
                            stdout=console, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        while not len(srv.requests):
            if proc.poll() is not None or time.monotonic() - started > 60:
                raise SystemExit(f"worker did not reach the server: {(home / 'console.txt').read_text()[-2000:]}")
            time.sleep(0.002)
        first = srv.requests[0].time - started
        mem: list[tuple[str, int, int]] = []
        if measure:
            log = home / "logs" / "worker.log"
            deadline = time.monotonic() + 60
            while (log.read_text(errors="replace").count(" ready in ") if log.exists() else 0) < pool:
                if time.monotonic() > deadline:
                    raise SystemExit("executors did not get ready")
                time.sleep(0.05)
            time.sleep(1.0)  # idle: nothing is running, the pool waits for work
            mem = memory(psutil.Process(proc.pid), frozen)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        console.close()
    return first, mem


def bench(label: str, cmd: list[str], cold_paths: list[Path], runs: int, pool: int, tmp: Path,
          frozen: bool) -> float:
    with HiveDevServer() as srv:
        advised = evict(cold_paths)
        cold, _ = one_start(cmd, srv, pool, tmp, frozen, measure=False)
        warm, mem = [], []
        for n in range(runs):
            first, got = one_start(cmd, srv, pool, tmp, frozen, measure=(n == 0))
            warm.append(first)
            mem = got or mem
    med = statistics.median(warm)
    print(f"{label}: cold start to first request: {cold:.2f} s (page cache of {advised} files evicted)")
    print(f"{label}: warm start to first request: median {med:.2f} s, min {min(warm):.2f} s, "
          f"max {max(warm):.2f} s over {runs} runs")
    total_rss = total_uss = 0
    for name, rss, uss in mem:
        total_rss += rss
        total_uss += uss
        print(f"{label}: idle {name}: RSS {rss / MB:.1f} MB, USS {uss / MB:.1f} MB")
    print(f"{label}: idle total of {len(mem)} processes: RSS {total_rss / MB:.1f} MB, USS {total_uss / MB:.1f} MB")
    return med


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", type=Path, help="a built binary (default: build one into a temp folder)")
    ap.add_argument("--runs", type=int, default=5, help="warm starts per mode")
    ap.add_argument("--pool-size", type=int, default=2)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hive-bench-frozen-"))
    binary = args.binary.resolve() if args.binary else None
    if binary is None:
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "release.build", "--allow-unpinned", "--dev-build", "--distpath",
                               str(tmp / "dist"), "--workpath", str(tmp / "build")],
                              cwd=str(ROOT), capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stdout[-3000:] + proc.stderr[-3000:])
            return 1
        binary = tmp / "dist" / binary_name()
        print(f"build: python -m release.build took {time.monotonic() - started:.0f} s")
    size = binary.stat().st_size
    print(f"frozen: binary {binary.name}: {size / 1e6:.1f} MB ({size} bytes; target < 20 MB: "
          f"{'met' if size < 20e6 else 'MISSED'})")
    med = bench("frozen", [str(binary)], [binary], args.runs, args.pool_size, tmp, frozen=True)
    print(f"frozen: warm first request target < 1 s: {'met' if med < 1 else 'MISSED'}")
    bench("source", [sys.executable, str(ROOT / "main.py")], source_files(), args.runs, args.pool_size, tmp,
          frozen=False)
    leaked = list(tmp.glob("home-*/tmp/_MEI*"))
    print(f"frozen: _MEI folders left after SIGTERM: {len(leaked)}")
    if not os.environ.get("KEEP"):
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
