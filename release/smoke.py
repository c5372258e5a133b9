"""Run a built binary once as the fleet would: ``python -m release.smoke dist/worker.exe``.

--version and --self-test never open the journal, the outbox or the network, so a binary can
pass both and still not serve (the Windows journal bug did exactly that). This starts the
binary against a local dev server with a pool of 2, waits until every enqueued task has its
result, stops it the way an operator does (Ctrl+C in its console on Windows, SIGTERM elsewhere)
and checks that it exited 0. Exit status 0 if all of that held, 1 otherwise, with what failed.
The GitHub Windows workflow runs it on the real worker.exe; tests/test_frozen.py runs it in
the Linux suite and in the Wine lane.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devserver import HiveDevServer


def _share_a_console() -> None:
    """Windows delivers Ctrl+C only through a console both processes are attached to; a CI
    runner's step may have none, so make one (the worker inherits it)."""
    if sys.platform == "win32":  # (sys.platform, not os.name: mypy's per-platform passes read it)
        import ctypes

        if not ctypes.windll.kernel32.GetConsoleWindow():
            ctypes.windll.kernel32.AllocConsole()


def _graceful_stop(proc: subprocess.Popen) -> str | None:
    """Ctrl+C to the whole console (the worker shares it; this process is deaf to it), as a person
    pressing it would send: Ctrl+Break to a process group would be tidier, but Wine cannot route
    it. None, or why it could not be sent."""
    if sys.platform != "win32":
        proc.send_signal(signal.SIGTERM)
        return None
    import ctypes

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not ctypes.windll.kernel32.GenerateConsoleCtrlEvent(0, 0):  # CTRL_C_EVENT
        return f"cannot send Ctrl+C (WinError {ctypes.GetLastError()})"
    return None


def smoke(binary: Path, tasks: int, timeout: float) -> list[str]:
    """What went wrong (empty if nothing did)."""
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="hive-smoke-", ignore_cleanup_errors=True) as tmp:
        server = HiveDevServer(str(Path(tmp) / "server.sqlite")).start()
        ids = [server.enqueue("example", {"text": f"smoke {i}"}) for i in range(tasks)]
        ids.append(server.enqueue("get_system_info", {}))
        env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")}
        env.update(HIVE_NO_TASK_SLEEP="0.5", PYINSTALLER_RESET_ENVIRONMENT="1")
        argv = [str(binary), "--home", str(Path(tmp) / "home"), "--server", server.url, "--pool-size", "2"]
        _share_a_console()
        started = time.monotonic()
        console = open(Path(tmp) / "console.txt", "wb")  # noqa: SIM115 - closed in finally
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                env=env)
        try:
            while True:
                done = {r["task_id"]: r for r in server.results()}
                if all(i in done for i in ids) or proc.poll() is not None or time.monotonic() - started > timeout:
                    break
                time.sleep(0.1)
            missing = [i for i in ids if i not in done]
            failed = [i for i, r in done.items() if r.get("status") != "success"]
            if missing:
                problems.append(f"{len(missing)} of {len(ids)} task(s) got no result within {timeout:g} s")
            if failed:
                problems.append(f"task(s) failed: {', '.join(map(str, failed))}")
            print(f"smoke: {len(ids) - len(missing)} of {len(ids)} results in {time.monotonic() - started:.1f} s")
            if proc.poll() is None:
                why = _graceful_stop(proc)
                if why:
                    problems.append(why)
            try:
                code = proc.wait(60)
                if code != 0:
                    problems.append(f"the worker exited with status {code} after a graceful stop")
            except subprocess.TimeoutExpired:
                problems.append("the worker did not stop within 60 s of a graceful stop")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            console.close()
            server.stop()
        if problems:
            print((Path(tmp) / "console.txt").read_text("utf-8", "replace")[-4000:], file=sys.stderr)
        log = Path(tmp) / "home" / "logs" / "worker.log"
        if not problems and "stopped;" not in log.read_text(encoding="utf-8", errors="replace"):
            problems.append("the log has no 'stopped;' line")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m release.smoke", description=__doc__.splitlines()[0])
    p.add_argument("binary", type=Path)
    p.add_argument("--tasks", type=int, default=6)
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args(argv)
    problems = smoke(args.binary.resolve(), args.tasks, args.timeout)
    for line in problems:
        print(f"smoke FAILED: {line}", file=sys.stderr)
    if not problems:
        print("smoke ok: served, stopped cleanly")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
