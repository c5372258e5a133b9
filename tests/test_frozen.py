"""The real one-file binary (issue 5), built once per test session with the documented command.

``python -m release.build`` runs once into a pytest tmp folder (dist, work and spec
paths there, so the repo stays clean); every test then runs that binary as an
operator would, against the local dev server. The binary cannot load test tasks
from tests/support (it has no source tree), but ``--config FILE.py`` is exec'd by
the frozen worker as well (executor/registry.py, in the supervisor and in each
executor), and ``from config import *`` in it finds the bundled config: so the
limit tests define their misbehaving tasks inline in such a file.

A one-file binary is two processes: the bootloader (the PID we start, which unpacks
the bundle into ``$TMPDIR/_MEI*``; on Windows under ``%LOCALAPPDATA%\\HiveWorker\\unpacked``)
and the supervisor (its child), whose executors (and, on POSIX, the resource tracker) are
children of the supervisor. Every test gives the binary its own temporary folder so that
``_MEI`` leftovers can be checked. On Windows (the Wine lane) the same tests run on
worker.exe: the graceful stop is Ctrl+C, a hard kill is TerminateProcess.

The seed's plain ``pyinstaller --onefile --clean main.py --name worker`` is built
too and runs prom_pars (one more build: ~30 s). On Windows install.bat and
uninstall.bat run in their dry-run mode on the built worker.exe.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest
import test_update as _update
from conftest import ROOT, WINDOWS, results_by_id, results_for, tree_of, wait_for

from config import TASK_REGISTRY, WORKER_VERSION

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),  # the first test also pays for the build
]

POOL = 2
# bootloader + supervisor + one executor per slot (+ the resource tracker that spawn starts on POSIX)
ALL = POOL + (2 if WINDOWS else 3)
BINARY = "worker.exe" if WINDOWS else "worker"
FIXTURES = ROOT / "tests" / "fixtures" / "prom"
# prom_pars fetches only from prom_allowed_hosts (default prom.ua): the pages here are on 127.0.0.1
LOOPBACK = {"HIVE_PROM_ALLOWED_HOSTS": "127.0.0.1"}

LIMITS_CONFIG = '''
"""config.py plus two misbehaving tasks, defined inline: the frozen worker execs this file."""
import time

from config import *  # noqa: F403
from config import TASK_LIMITS as _BASE_LIMITS
from config import TASK_REGISTRY as _BASE


def eat_memory(step_mb=20):
    blocks = []
    while True:
        blocks.append(bytearray(step_mb * 1024 * 1024))
        time.sleep(0.01)


def hang(seconds=3600):
    time.sleep(seconds)


TASK_REGISTRY = dict(_BASE, eat_memory=eat_memory, hang=hang)
TASK_LIMITS = dict(_BASE_LIMITS, eat_memory={"memory_mb": 200}, hang={"time": 1.5})
'''

BROKEN_EXECUTOR_CONFIG = '''
import multiprocessing

from config import *  # noqa: F403

if multiprocessing.parent_process() is not None:  # only in the executor, as a task missing from a build would
    import module_that_is_not_in_the_binary  # noqa: F401
'''


# ---- helpers -------------------------------------------------------------------------------------

def processes_of(binary: Path) -> list[psutil.Process]:
    """Every live process running this exact binary (bootloaders, supervisors, trackers, executors)."""
    from supervisor.host.frozen import image_of  # psutil's exe() fails under Wine; this Win32 call does not

    target = os.path.normcase(str(binary.resolve()))
    found = []
    for proc in psutil.process_iter():
        try:
            image = image_of(proc.pid)
            if image and os.path.normcase(image) == target and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def meis(tmpdir: Path) -> list[str]:
    """The _MEI folders under this temp folder (POSIX: $TMPDIR) or, on Windows, under the
    %LOCALAPPDATA%\\HiveWorker\\unpacked that _temp_env points into it (release.build's RUNTIME_TMPDIR)."""
    found = [*tmpdir.glob("_MEI*"), *tmpdir.glob("HiveWorker/unpacked/_MEI*")]
    return sorted(p.relative_to(tmpdir).as_posix() for p in found)


def supervisor_of(w) -> psutil.Process:
    """The one-file bootloader's only child runs the Python code."""
    children = wait_for(lambda: psutil.Process(w.pid).children(), 20, what="the supervisor process")
    assert len(children) == 1, children
    return children[0]


def _temp_env(tmpdir: Path) -> dict[str, str]:
    """Where the one-file bootloader unpacks: TMPDIR on POSIX; on Windows %LOCALAPPDATA%\\HiveWorker\\unpacked
    (release.build's --runtime-tmpdir), TEMP/TMP for everything else."""
    return {"TMPDIR": str(tmpdir), "TEMP": str(tmpdir), "TMP": str(tmpdir), "LOCALAPPDATA": str(tmpdir)}


def run(binary: Path, *args: str, tmpdir: Path, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")}
    full_env.update(_temp_env(tmpdir), **(env or {}))
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=timeout, env=full_env,
                          stdin=subprocess.DEVNULL, cwd=str(tmpdir))


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture
def pages() -> Iterator[str]:
    """tests/fixtures/prom served on 127.0.0.1: base URL ending in /."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(FIXTURES)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def tmpdir_env(tmp_path: Path) -> Path:
    path = tmp_path / "tmpdir"
    path.mkdir()
    return path


def _build(base: Path, cmd: list[str]) -> Path:
    proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, timeout=900,
                          env={k: v for k, v in os.environ.items() if not k.startswith("HIVE_")})
    assert proc.returncode == 0, (proc.stdout[-4000:], proc.stderr[-4000:])
    binary = base / "dist" / BINARY
    assert binary.is_file()
    return binary


# The release build of this repo is made once per session for every test that needs it:
# test_update.py's two builds (this repo, and a copy with the next version) are that command.
builds = _update.builds


@pytest.fixture(scope="session")
def frozen(builds) -> Iterator[Path]:
    """The one-file binary of this repo, built once per session by the documented build command."""
    binary = builds.old
    yield binary
    for proc in processes_of(binary):  # whatever a failed test left running
        try:
            proc.kill()
        except psutil.Error:
            pass


def _start(start_worker, frozen: Path, server, tmpdir: Path, args: list[str] | None = None,
           env: dict[str, str] | None = None):
    return start_worker(server.url, args=args, env=dict(env or {}, **_temp_env(tmpdir)), cmd=[str(frozen)])


def _ready(w, pool: int = POOL) -> psutil.Process:
    sup = supervisor_of(w)
    wait_for(lambda: len(tree_of(sup.pid)) >= pool or w.proc.poll() is not None, 30, what="executors to start")
    assert w.proc.poll() is None, w.console()
    return sup


def _gone(binary: Path, timeout: float = 5.0) -> None:
    wait_for(lambda: not processes_of(binary), timeout, interval=0.05, what=f"every process of {binary.name} to be gone")


# ---- tests ---------------------------------------------------------------------------------------

def test_version_print_config_and_self_test(frozen: Path, tmp_path: Path, tmpdir_env: Path) -> None:
    got = run(frozen, "--version", tmpdir=tmpdir_env)
    assert (got.returncode, got.stdout.strip()) == (0, WORKER_VERSION), got.stderr

    got = run(frozen, "--home", str(tmp_path / "home"), "--print-config", tmpdir=tmpdir_env,
              env={"HIVE_POOL_SIZE": "2"})
    assert got.returncode == 0, got.stderr
    assert "pool_size = 2" in got.stdout and "# pool_size: from environment HIVE_POOL_SIZE" in got.stdout

    got = run(frozen, "--home", str(tmp_path / "home"), "--self-test", tmpdir=tmpdir_env)
    assert got.returncode == 0, got.stdout + got.stderr
    assert f"self-test ok: version {WORKER_VERSION}, tasks: {', '.join(sorted(TASK_REGISTRY))}" in got.stdout

    # A task the build lacks: the executor cannot import the registry, the self-test says so.
    broken = tmp_path / "broken_config.py"
    broken.write_text(BROKEN_EXECUTOR_CONFIG)
    got = run(frozen, "--home", str(tmp_path / "home"), "--config", str(broken), "--self-test", tmpdir=tmpdir_env)
    assert got.returncode == 1, got.stdout + got.stderr
    assert "self-test FAILED" in got.stderr
    assert meis(tmpdir_env) == []
    assert not processes_of(frozen)


def test_without_a_server_url_it_exits_and_serves_no_demo(frozen: Path, tmp_path: Path, tmpdir_env: Path) -> None:
    """The dev build (no fleet settings) started bare, as a 1.0.x watcher would: one line, exit 2
    (EXIT_BAD_SETTINGS), no embedded demo server; the line is in its log too (a hidden exe's only
    voice)."""
    home = tmp_path / "home"
    got = run(frozen, "--home", str(home), tmpdir=tmpdir_env)
    lines = got.stderr.strip().splitlines()
    assert got.returncode == 2 and len(lines) == 1, got.stdout + got.stderr
    assert "cannot start: no server URL: this binary was built without its fleet's" in lines[0]
    assert "--embedded-server" in lines[0] and "cannot start: no server URL" in (home / "logs" / "worker.log").read_text()
    assert not (home / "devserver.sqlite").exists() and not (home / "worker.conf").exists()
    assert meis(tmpdir_env) == []


def test_embedded_server_only_when_asked(frozen: Path, start_worker, tmpdir_env: Path) -> None:
    """--embedded-server: the demo, served; its banner names no `python -m devserver` command (a PC
    with only the binary has none)."""
    w = start_worker(None, args=["--embedded-server"], env=_temp_env(tmpdir_env), cmd=[str(frozen)])
    wait_for(lambda: " succeeded in " in w.log() or w.proc.poll() is not None, 60, what="a demo task served")
    assert w.proc.poll() is None, w.console()
    assert "serving an embedded local Hive server at http://127.0.0.1:" in w.log()
    assert "devserver enqueue" not in w.log() + w.console()
    w.terminate()  # SIGTERM; Ctrl+C on Windows
    assert w.wait(30) == 0, w.console()
    _gone(frozen)


def test_a_fleet_build_carries_its_settings(builds, tmp_path: Path, tmpdir_env: Path) -> None:
    """The release build's --server-url and --root-key are the binary's own defaults, named as
    such by --print-config (password redacted); worker.toml and HIVE_* still win over them."""
    from supervisor.settings import BAKED_SOURCE

    FLEET_PASSWORD = _update.FLEET_PASSWORD  # noqa: N806

    home = tmp_path / "home"
    home.mkdir()
    got = run(builds.new, "--home", str(home), "--print-config", tmpdir=tmpdir_env)
    assert got.returncode == 0, got.stderr
    redacted = builds.fleet_url.replace(f"hive:{FLEET_PASSWORD}", "***")
    assert f'# server_url: from {BAKED_SOURCE}\n# (credentials redacted)\nserver_url = "{redacted}"' in got.stdout
    assert f"# update_root_keys: from {BAKED_SOURCE}\n" in got.stdout
    assert tomllib.loads(got.stdout)["update_root_keys"] == builds.fleet_keys  # exactly its input root keys
    assert "# pool_size: from config.py" in got.stdout and FLEET_PASSWORD not in got.stdout + got.stderr
    (home / "worker.toml").write_text('server_url = "http://toml:1/api"\n')
    got = run(builds.new, "--home", str(home), "--print-config", tmpdir=tmpdir_env,
              env={"HIVE_UPDATE_ROOT_KEYS": ""})
    assert 'server_url = "http://toml:1/api"' in got.stdout and "update_root_keys = []" in got.stdout
    assert meis(tmpdir_env) == []


def test_serves_a_pool_of_two_and_stops_cleanly(frozen: Path, server, start_worker, pages: str,
                                                           tmpdir_env: Path) -> None:
    ids = [server.enqueue("example", {"text": f"t{i}", "repeat": 2}) for i in range(8)]
    sysinfo = server.enqueue("get_system_info", {})
    prom = server.enqueue("prom_pars", {"delay": 0, "retries": 0, "products_to_scrape": [
        {"product_id": 1, "url": pages + "in_stock_uk.html"},
        {"product_id": 11, "url": pages + "in_stock_ru.html"},
        {"product_id": 2},  # no url: skipped
    ]})
    w = _start(start_worker, frozen, server, tmpdir_env, env=LOOPBACK)
    # bootloader + supervisor + resource tracker + one per slot, sampled while the tasks run
    most = 0
    deadline = time.monotonic() + 60
    while not all(i in results_by_id(server) for i in [*ids, sysinfo, prom]):
        assert time.monotonic() < deadline, w.console() + w.log()
        assert w.proc.poll() is None, w.console()
        most = max(most, len(processes_of(frozen)))
        time.sleep(0.05)
    sup = _ready(w)
    settle = time.monotonic() + 1.0  # idle now: a spawn loop would show here
    while time.monotonic() < settle:
        most = max(most, len(processes_of(frozen)))
        time.sleep(0.05)
    assert most <= ALL, most
    assert len(processes_of(frozen)) == ALL
    assert {p.pid for p in tree_of(sup.pid)} <= {p.pid for p in sup.children()}

    got = results_for(server, [*ids, sysinfo, prom], timeout=40)
    for n, tid in enumerate(ids):
        assert len(got[tid]) == 1 and got[tid][0]["status"] == "success"
        assert got[tid][0]["result"] == {"echo": [f"t{n}", f"t{n}"]}
    info = got[sysinfo][0]
    assert info["status"] == "success" and "python" in json.dumps(info["result"]).lower()
    assert got[prom][0]["status"] == "success", got[prom][0]
    assert got[prom][0]["result"] == [
        {"product_id": 1, "status_id": 1, "price": 1299.5, "order_quantity": 15, "rating": 4.8},
        {"product_id": 11, "status_id": 1, "price": 2100.0, "order_quantity": 7, "rating": 4.6},
    ]
    versions = {r.headers.get("X-Worker-Version") for r in server.requests}
    assert versions == {WORKER_VERSION}

    assert meis(tmpdir_env), "the running one-file binary unpacks into its TMPDIR"
    w.terminate()  # SIGTERM; Ctrl+C on Windows
    assert w.wait(30) == 0, w.console()
    _gone(frozen)
    assert meis(tmpdir_env) == []
    assert "stopped;" in w.log()


def test_limits_work_frozen(frozen: Path, server, start_worker, tmp_path: Path, tmpdir_env: Path) -> None:
    config = tmp_path / "limits_config.py"
    config.write_text(LIMITS_CONFIG)
    mem = server.enqueue("eat_memory", {})
    hang = server.enqueue("hang", {})
    w = _start(start_worker, frozen, server, tmpdir_env, args=["--config", str(config)])
    got = results_for(server, [mem, hang], timeout=40)
    assert got[mem][0]["status"] == "failure" and got[mem][0]["result"]["kind"] == "memory_limit", got[mem]
    assert got[hang][0]["status"] == "failure" and got[hang][0]["result"]["kind"] == "time_limit", got[hang]
    # the binary keeps serving, with a whole pool of fresh executors
    after = [server.enqueue("example", {"text": "after"}) for _ in range(3)]
    got = results_for(server, after, timeout=40)
    assert all(got[t][0]["result"] == {"echo": ["after"]} for t in after)
    _ready(w)
    wait_for(lambda: len(processes_of(frozen)) == ALL, 15, what="the pool to be whole again")
    w.terminate()  # SIGTERM; Ctrl+C on Windows
    assert w.wait(30) == 0, w.console()
    _gone(frozen)
    assert meis(tmpdir_env) == []


def _delete_what_a_cleaner_can(folder: Path) -> int:
    """What a temp cleaner or an antivirus does to a folder in use: delete every file it may (on
    Windows the DLLs and executables loaded by running processes are locked and stay), then the
    emptied folders. Returns how many files went."""
    gone = 0
    for root, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            try:
                os.unlink(os.path.join(root, name))
                gone += 1
            except OSError:
                pass
        for name in dirs:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(root, name))
    with contextlib.suppress(OSError):
        os.rmdir(folder)
    return gone


def test_unpacked_files_gone_exit_for_a_restart(frozen: Path, server, start_worker, tmp_path: Path,
                                                tmpdir_env: Path) -> None:
    """Issue 24, point 6: the one-file bundle is unpacked out of %TEMP% on Windows (under
    %LOCALAPPDATA%\\HiveWorker), and when a cleaner deletes it anyway while the worker runs, the next
    executor start fails: the worker says so in one ERROR line and exits with status 6 (instead of
    failing every start forever); started again, as Task Scheduler, systemd or 1.0.x's watcher do,
    it unpacks afresh and serves."""
    from supervisor.host.frozen import EXIT_UNPACKED_GONE

    home = tmp_path / "home0"  # the same home for both starts
    w = start_worker(server.url, env=_temp_env(tmpdir_env), cmd=[str(frozen)], home=home)
    sup = _ready(w)
    before = server.enqueue("example", {"text": "before"})
    assert results_for(server, [before], timeout=40)[before][0]["status"] == "success"

    def every_slot_idle() -> bool:  # both executors up: a start still under way when the files go
        try:                        # dies "during start-up", a start that is not this test's point
            slots = json.loads((home / "status.json").read_bytes())["slots"]
        except (OSError, ValueError, KeyError):
            return False
        return len(slots) == POOL and all(s["state"] == "idle" for s in slots)
    wait_for(every_slot_idle, 40, what="every executor ready")
    [mei] = meis(tmpdir_env)
    if WINDOWS:
        assert mei.startswith("HiveWorker/unpacked/_MEI"), mei  # not in %TEMP%
    assert _delete_what_a_cleaner_can(tmpdir_env / mei) > 0
    executor = tree_of(sup.pid)[0]
    executor.kill()  # as after a crash: the pool starts another, which cannot start any more
    assert w.wait(60) == EXIT_UNPACKED_GONE, w.console()
    _gone(frozen)
    lines = [line for line in w.log().splitlines() if "unpacked files are gone" in line]
    assert len(lines) == 1 and " ERROR " in lines[0] and f"exiting with status {EXIT_UNPACKED_GONE}" in lines[0], lines
    assert w.log().count("executor failed to start") == 0  # no retry loop first
    assert "stopped;" in w.log()  # a clean shutdown: results persisted, executors stopped
    for leftover in meis(tmpdir_env):
        shutil.rmtree(tmpdir_env / leftover, ignore_errors=True)

    again = start_worker(server.url, env=_temp_env(tmpdir_env), cmd=[str(frozen)], home=home)
    after = server.enqueue("example", {"text": "after"})
    assert results_for(server, [after], timeout=40)[after][0]["result"] == {"echo": ["after"]}
    again.terminate()
    assert again.wait(30) == 0, again.console()
    _gone(frozen)


@pytest.mark.parametrize("target", ["bootloader", "supervisor"])
def test_sigkill_leaves_no_process(frozen: Path, server, start_worker, tmpdir_env: Path, target: str) -> None:
    """SIGKILL to the bootloader (what systemd, Task Scheduler and kill -9 of $! hit) or to the supervisor;
    on Windows TerminateProcess (Task Manager's "End task", schtasks /End).

    Bootloader: supervisor/host/frozen.py (called by main.py) kills the supervisor at once (PR_SET_PDEATHSIG),
    its executors follow; the bootloader could not clean up, so its _MEI folder is left (expected,
    docs/release.md). Supervisor: the executors follow it, the bootloader cleans up and dies
    of the same signal (a failure for systemd's Restart=on-failure).
    """
    w = _start(start_worker, frozen, server, tmpdir_env)
    sup = _ready(w)
    wait_for(lambda: len(processes_of(frozen)) == ALL, 15, what="the whole process tree")
    if target == "bootloader":
        w.proc.kill()
    else:
        sup.kill()
    _gone(frozen, timeout=5.0)
    code = w.wait(5)
    if WINDOWS:  # TerminateProcess: Popen.kill leaves 1, psutil's kill 15 (the bootloader passes it on)
        assert code == (1 if target == "bootloader" else 15), code
    else:
        assert code == -signal.SIGKILL
    leaked = meis(tmpdir_env)
    if target == "bootloader":
        assert len(leaked) == 1, leaked
        shutil.rmtree(tmpdir_env / leaked[0])
    else:
        assert leaked == []


def test_release_zip(builds, tmp_path: Path) -> None:
    """make_release on the fleet build (the dev build is refused: a PC would lose its server)."""
    from support.fleetkeys import keypair, trust_file

    from release.signing import verify_zip

    out = tmp_path / "release"
    url = "http://127.0.0.1:9/worker.zip"
    key, root_public = keypair(tmp_path)  # throwaway root and release keys, never real ones
    refused = subprocess.run([sys.executable, "-m", "release.make_release", "--binary", str(builds.old), "--out",
                              str(out), "--sign-key", str(key), "--trust", str(trust_file(key))],
                             cwd=str(ROOT), capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "it carries no server URL" in refused.stderr, refused.stdout + refused.stderr
    assert not out.exists() or not list(out.glob("*.zip"))

    make = [sys.executable, "-m", "release.make_release", "--binary", str(builds.new), "--out", str(out), "--url", url,
            "--sign-key", str(key), "--trust", str(trust_file(key)), "--sequence", str(builds.new_sequence)]
    proc = subprocess.run(make, cwd=str(ROOT), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    params = json.loads(lines[-1])
    zips = list(out.glob("*.zip"))
    assert len(zips) == 1
    data = zips[0].read_bytes()
    assert params == {"url": url, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                      "version": builds.new_version, "sequence": builds.new_sequence}
    assert f"sha256: {params['sha256']}" in lines and f"size: {len(data)}" in lines
    assert "fleet: server http://***@127.0.0.1:" in proc.stdout
    assert _update.FLEET_PASSWORD not in proc.stdout + proc.stderr
    assert json.loads((out / (zips[0].name + ".json")).read_text()) == params

    with zipfile.ZipFile(zips[0]) as zf:
        infos = zf.infolist()
        assert [i.filename for i in infos] == [BINARY, "updater.bat", "release.json", "release.sig", "release-trust.json"]
        assert zf.read(BINARY) == builds.new.read_bytes()
        if not WINDOWS:
            assert (infos[0].external_attr >> 16) & 0o777 == 0o755
        bat = zf.read("updater.bat")
        assert b"\r\n" in bat and b"\n" not in bat.replace(b"\r\n", b"")
        assert bat.replace(b"\r\n", b"\n") == (ROOT / "updater.bat").read_bytes().replace(b"\r\n", b"\n")
        # what a 1.0.x update path does: unpack beside itself, take the binary from the root
        unpacked = tmp_path / "unpacked"
        zf.extractall(unpacked)
    (unpacked / BINARY).chmod(0o755)
    got = run(unpacked / BINARY, "--version", tmpdir=tmp_path)
    assert (got.returncode, got.stdout.strip()) == (0, builds.new_version)

    statement = verify_zip(zips[0], [root_public]).statement
    assert (statement.version, statement.sequence, statement.sha256) == \
        (builds.new_version, builds.new_sequence, hashlib.sha256(builds.new.read_bytes()).hexdigest())

    # the same binary gives the same zip (Ed25519 signatures are deterministic)
    proc = subprocess.run(make, cwd=str(ROOT), capture_output=True, text=True, timeout=120)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == params


def test_plain_pyinstaller_command_gives_a_working_binary(tmp_path: Path, pages: str, tmpdir_env: Path, server,
                                                         start_worker) -> None:
    base = tmp_path / "plain"
    # The seed's `pyinstaller` command; `python -m PyInstaller` is the same program where the
    # launcher is not on PATH (the Wine lane's Windows CPython).
    pyinstaller = [sys.executable, "-m", "PyInstaller"] if WINDOWS else [str(Path(sys.executable).with_name("pyinstaller"))]
    binary = _build(base, [*pyinstaller, "--onefile", "--clean", "main.py", "--name", "worker", "--distpath",
                           str(base / "dist"), "--workpath", str(base / "build"), "--specpath", str(base / "spec")])
    got = run(binary, "--home", str(tmp_path / "home"), "--self-test", tmpdir=tmpdir_env)
    assert got.returncode == 0, got.stdout + got.stderr
    got = run(binary, "--home", str(tmp_path / "home"), tmpdir=tmpdir_env)  # no fleet settings, none given
    assert got.returncode == 2 and "cannot start: no server URL" in got.stderr, got.stdout + got.stderr
    params = {"delay": 0, "products_to_scrape": [{"product_id": 1, "url": pages + "in_stock_uk.html"}]}
    got = run(binary, "--home", str(tmp_path / "home"), "--run", "prom_pars", "--params", json.dumps(params),
              tmpdir=tmpdir_env, env=LOOPBACK)
    assert got.returncode == 0, got.stdout + got.stderr
    assert json.loads(got.stdout) == [
        {"product_id": 1, "status_id": 1, "price": 1299.5, "order_quantity": 15, "rating": 4.8}]
    # It bundles no updater scripts (release.build's check says so): it serves, and refuses every update in one line.
    from release.build import SCRIPTS, script_problems
    from supervisor.update.scripts import this_platform

    assert script_problems(binary) == [f"{s} is not in the binary: it could never update itself" for s in SCRIPTS]
    line = f"self-update is off: this build does not carry {this_platform()} (a release is built by python -m release.build)"
    w = _start(start_worker, binary, server, tmpdir_env, env={"HIVE_UPDATE_ALLOW_UNSIGNED": "true"})
    update = server.enqueue("update_worker", {"url": "http://127.0.0.1:9/r.zip"})
    after = server.enqueue("example", {"text": "serving"})
    got = results_for(server, [update, after], timeout=60)
    assert got[update][0]["result"] == {"error": line, "kind": "update_failed"}, got
    assert got[after][0]["status"] == "success"
    w.stop()
    warned = [row for row in (w.home / "logs" / "worker.log").read_text().splitlines() if f"update: {line}" in row]
    assert len(warned) == 1 and " WARNING " in warned[0], warned  # once, at start, instead of writing the script
    assert not (binary.parent / this_platform()).exists()
    assert meis(tmpdir_env) == []


def test_smoke_command(frozen: Path, tmpdir_env: Path) -> None:
    """`python -m release.smoke`, which the GitHub Windows workflow runs on the real worker.exe."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")}
    env.update(_temp_env(tmpdir_env))
    got = subprocess.run([sys.executable, "-m", "release.smoke", str(frozen)], cwd=str(ROOT), capture_output=True,
                         text=True, timeout=240, env=env, stdin=subprocess.DEVNULL)
    assert got.returncode == 0 and "smoke ok: served, stopped cleanly" in got.stdout, got.stdout + got.stderr
    assert "7 of 7 results" in got.stdout
    _gone(frozen)


@pytest.mark.skipif(not WINDOWS, reason="install.bat runs under cmd.exe (the Windows lane)")
def test_install_and_uninstall_dry_run(frozen: Path, tmp_path: Path, tmpdir_env: Path) -> None:
    """Everything but Task Scheduler itself (which Wine lacks; the GitHub workflow registers the
    task for real): the checks of worker.exe, the task definition, the commands issued."""
    import xml.etree.ElementTree as ET

    folder = tmp_path / "Hive Worker"  # a space, as in a real install path
    folder.mkdir()
    shutil.copy2(frozen, folder / BINARY)
    for name in ("install.bat", "uninstall.bat"):
        shutil.copy2(ROOT / "release" / name, folder / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")}
    env.update(_temp_env(tmpdir_env))

    def bat(name: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["cmd.exe", "/d", "/c", str(folder / name), *args], capture_output=True, text=True,
                              timeout=180, env=env, stdin=subprocess.DEVNULL, cwd=str(folder))

    got = bat("install.bat", "/dry-run", "HiveWorkerTest")
    assert got.returncode == 0, got.stdout + got.stderr
    xml_path = folder / "hive-worker-task.xml"
    assert f'would run: schtasks /Create /TN "HiveWorkerTest" /XML "{xml_path}" /F' in got.stdout, got.stdout
    assert 'would run: schtasks /Run /TN "HiveWorkerTest"' in got.stdout
    assert WORKER_VERSION in got.stdout  # it checked the binary (--version, --self-test) first
    ns = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}
    task = ET.parse(xml_path).getroot()
    assert task.findtext("t:Actions/t:Exec/t:Command", namespaces=ns) == str(folder / BINARY)
    assert task.findtext("t:Actions/t:Exec/t:WorkingDirectory", namespaces=ns) == str(folder) + "\\"
    assert task.findtext("t:Triggers/t:LogonTrigger/t:Enabled", namespaces=ns) == "true"
    assert task.findtext("t:Settings/t:MultipleInstancesPolicy", namespaces=ns) == "IgnoreNew"
    assert task.findtext("t:Settings/t:ExecutionTimeLimit", namespaces=ns) == "PT0S"
    assert task.findtext("t:Settings/t:Hidden", namespaces=ns) == "true"

    got = bat("uninstall.bat", "/dry-run", "HiveWorkerTest")
    assert got.returncode == 0, got.stdout + got.stderr
    for line in ('schtasks /End /TN "HiveWorkerTest"', 'schtasks /Delete /TN "HiveWorkerTest" /F'):
        assert f"would run: {line}" in got.stdout
