"""Tasks that behave well and badly, registered only by tests/support/test_config.py."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time


def sleep_record(seconds: float = 0.2, tag: str = "") -> dict:
    start = time.time()
    time.sleep(seconds)
    return {"status": "success", "data": {"start": start, "end": time.time(), "pid": os.getpid(), "tag": tag}}


def echo(**params):
    return {"status": "success", "data": params}


def plain(value=None):
    return value  # not the fleet's convention: the value itself is the result


def returns_failure(message: str = "the site pushed back") -> dict:
    return {"status": "failure", "message": message}


def raises(message: str = "boom") -> None:
    raise ValueError(message)


def unserializable() -> dict:
    return {"status": "success", "data": {"x": object()}}


def huge(size: int) -> dict:
    return {"status": "success", "data": "x" * size}


def prints(text: str = "hello from print", times: int = 1) -> dict:
    for _ in range(times):
        print(text)
    return {"status": "success", "data": "printed"}


def eat_memory(where: str = "self", step_mb: int = 20, hold: float = 60.0) -> None:
    """Allocate without end in this process, a child or a grandchild."""
    code = (
        "import time\nblocks=[]\n"
        f"while True:\n    blocks.append(bytearray({step_mb} * 1024 * 1024))\n    time.sleep(0.02)\n"
    )
    if where == "self":
        exec(code)
    elif where == "child":
        subprocess.run([sys.executable, "-c", code])
    elif where == "grandchild":
        launcher = f"import subprocess,sys; subprocess.run([sys.executable, '-c', {code!r}])"
        subprocess.run([sys.executable, "-c", launcher])
    time.sleep(hold)


def spin() -> None:
    while True:
        pass


def cpu_children(count: int = 40, each: float = 0.05) -> dict:
    """Many short CPU burners that each exit before a limit check can see them alive."""
    burn = f"import time\nt=time.process_time()\nwhile time.process_time()-t<{each}: pass"
    for _ in range(count):
        subprocess.run([sys.executable, "-c", burn])
    time.sleep(30)
    return {"status": "success", "data": "not killed"}


def cpu_child_burner(seconds: float = 30.0) -> None:
    subprocess.run([sys.executable, "-c", f"import time\nt=time.time()\nwhile time.time()-t<{seconds}: pass"])


def spawn_storm(hold: float = 60.0) -> None:
    """Start children in a tight loop while the supervisor tries to kill us."""
    procs = []
    deadline = time.time() + hold
    while time.time() < deadline:
        procs.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]))
        if len(procs) > 60:
            time.sleep(0.05)


def double_fork_daemon(pidfile: str) -> dict:
    """Leave a daemon behind (double fork + new session) and return normally."""
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            with open(pidfile + ".tmp", "w") as f:
                f.write(str(os.getpid()))
            os.replace(pidfile + ".tmp", pidfile)
            time.sleep(300)
        os._exit(0)
    os.waitpid(pid, 0)
    deadline = time.time() + 5
    while not os.path.exists(pidfile) and time.time() < deadline:
        time.sleep(0.01)
    return {"status": "success", "data": "daemon left behind"}


def daemon_then_hang(pidfile: str) -> None:
    double_fork_daemon(pidfile)
    time.sleep(300)


def segfault(fork_first: bool = False) -> None:
    if fork_first and os.fork() == 0:  # a child that keeps the executor's pipe open after it dies
        time.sleep(60)
        os._exit(0)
    if os.name == "nt":
        # ctypes turns an access violation into OSError on Windows; faulthandler's NULL read does not.
        import faulthandler

        faulthandler.disable()
        faulthandler._read_null()
    ctypes.string_at(0)


def write_pid_and_hang(pidfile: str) -> None:
    with open(pidfile + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(pidfile + ".tmp", pidfile)
    time.sleep(300)


_kept: list = []


def whereami(keep_mb: int = 0) -> dict:
    """Reports the sandbox a task sees; optionally keeps memory alive in the executor (a leak)."""
    import psutil

    from executor import api

    if keep_mb:
        _kept.append(bytearray(keep_mb * 1024 * 1024))
    data = api.data_dir()
    counter = data / "runs.txt"
    runs = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(runs))
    found = sorted(os.listdir("."))  # what an earlier task left here (should be nothing)
    open("scratch-file.txt", "w").close()
    os.makedirs("scratch-dir/sub")
    return {"status": "success", "data": {"found_in_scratch": found,
        "cwd": os.getcwd(), "scratch": str(api.scratch_dir()), "data": str(data), "runs": runs,
        "nice": psutil.Process().nice(), "env": sorted(k for k in os.environ if k.startswith("HIVE_")),
        "task": api.current_task(), "pid": os.getpid(),
        "error_mode": ctypes.windll.kernel32.GetErrorMode() if os.name == "nt" else None}}
