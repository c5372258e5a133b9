"""Self-update on Windows with real worker.exe builds and updater.bat under cmd.exe (the Wine lane).

The same two one-file builds as test_update.py (this repo, and a copy with another
WORKER_VERSION). updater.bat runs as the worker starts it: cmd.exe, no window, its own process
group. Under Wine tasklist prints nothing and find rejects /I, which is exactly the broken-tools
case updater.bat must survive: it decides from the home's worker.lock instead.

1. the full cycle: drained, downloaded, verified, swapped, started, healthy, reported;
2. a new version that cannot become healthy (the server is away for it): rolled back, the old
   binary restored and started again, the failure reported by the old version;
3. the migration the fleet goes through: a 1.0.x install takes our fleet release zip through
   1.0.x's own update steps and ITS updater.bat, then 1.0.x's watcher starts our worker.exe with
   no arguments, no HIVE_* and no worker.toml: it reaches the server baked into it at build time
   with the same id, replaces the 1.0.x updater.bat with its own and serves.
"""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import test_update as _update
from conftest import ROOT, WINDOWS, wait_for
from test_frozen import processes_of
from test_update import (
    FileServer,
    _install,
    _poster_version,
    _release,
    _result,
    _status,
    _worker_env,
    assert_fleet_credentials,
    assert_no_password,
    bare_env,
    keypair,
    params_for,
)

from devserver import Fault
from supervisor.update import extract as update_extract
from supervisor.update import records as update_records

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not WINDOWS, reason="updater.bat under cmd.exe: the Windows lane (.ci/windows)"),
]

EXE = update_extract.BINARY
# test_update.py's fixtures: the two builds (made once per session), the file server, the tag.
builds, files, tag, fleet_server = _update.builds, _update.files, _update.tag, _update.fleet_server


def _kill_image(exe: Path) -> None:
    """Every process running ``exe`` (the updater starts workers outside our console: no Ctrl+C)."""
    victims = processes_of(exe)
    for proc in victims:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(victims, timeout=10)


def _signed_release(tmp_path: Path, files: FileServer, builds: SimpleNamespace) -> tuple[dict, str]:
    """The new build as a signed release zip (a throwaway key), served; (params, public key)."""
    key, public = keypair(tmp_path)
    body = _release(tmp_path, builds.new, "worker-new.zip", key, builds.new_version, builds.new_sequence)
    return params_for(files.add("/worker-new.zip", body), body, version=builds.new_version), public


def test_full_cycle_with_updater_bat(builds: SimpleNamespace, server, start_worker, files: FileServer, tag: str,
                                     tmp_path: Path) -> None:
    home = _install(tmp_path, builds.old)
    good, public = _signed_release(tmp_path, files, builds)
    w = start_worker(server.url, env=_worker_env(tag, tmp_path, HIVE_UPDATE_ROOT_KEYS=public), home=home,
                     cmd=[str(home / EXE)])
    try:
        update = server.enqueue("update_worker", good)
        got = _result(server, update, 180)
        assert got["status"] == "success" and got["result"]["version"] == builds.new_version, got
        assert _poster_version(server, update) == {builds.new_version}
        after = server.enqueue("example", {"text": "new"})
        assert _result(server, after)["result"] == {"echo": ["new"]}
        assert _poster_version(server, after) == {builds.new_version}
        assert {r["worker_id"] for r in server.results()} == {(home / "worker.conf").read_text().strip()}
        assert w.wait(30) == 0  # the old process handed over and exited cleanly
        exe = home / EXE
        assert exe.read_bytes() == builds.new.read_bytes()
        assert update_records.backup_of(exe).read_bytes() == builds.old.read_bytes()
        log = home / "logs" / "updater.log"
        wait_for(lambda: "the new worker is healthy: update done" in log.read_text(), 10, what="the updater's end")
        text = log.read_text()
        assert "the old worker has exited" in text and "the new binary is in place" in text
        assert "process tools " in text  # which way it decided is in its log
        assert (home / "updater.bat").read_bytes() == (ROOT / "updater.bat").read_bytes()
        assert _status(home).get("version") == builds.new_version
    finally:
        _kill_image(home / EXE)


def test_unhealthy_new_version_is_rolled_back(builds: SimpleNamespace, server, start_worker, files: FileServer,
                                              tag: str, tmp_path: Path) -> None:
    home = _install(tmp_path, builds.old)
    good, public = _signed_release(tmp_path, files, builds)
    w = start_worker(server.url, env=_worker_env(tag, tmp_path, HIVE_UPDATE_ROOT_KEYS=public,
                                                 HIVE_UPDATE_HEALTH_TIMEOUT="15"),
                     home=home, cmd=[str(home / EXE)])
    log = home / "logs" / "updater.log"
    try:
        update = server.enqueue("update_worker", good)
        # Once the old worker has handed over, the server is away: the new one can never be healthy.
        wait_for(lambda: log.exists() and "updater: started" in log.read_text(), 120, what="the hand-over")
        server.faults = lambda method, path: Fault.status(503)
        wait_for(lambda: "rolling back" in log.read_text(), 90, what="the rollback")
        wait_for(lambda: "old worker started again" in log.read_text(), 60, what="the old worker's restart")
        server.faults = None
        got = _result(server, update, 120)
        assert got["status"] == "failure" and got["result"]["kind"] == "update_failed", got
        assert "rolled back: the new worker was not healthy within 15 s" in got["result"]["error"]
        assert _poster_version(server, update) == {builds.old_version}
        assert (home / EXE).read_bytes() == builds.old.read_bytes()
        check = server.enqueue("example", {"text": "old serves"})
        assert _result(server, check)["status"] == "success"
        assert _poster_version(server, check) == {builds.old_version}
        assert w.wait(10) == 0
    finally:
        server.faults = None
        _kill_image(home / EXE)


# 1.0.9's updater.bat, step by step (bohdanriven/the_hive_worker, updater.bat): wait while tasklist
# shows a process of the old exe's name (`find /I /N`, which Wine's find rejects: that reads as "not
# running", as on a PC where it has exited), delete the old exe, stop if it is still there, rename
# the new one to the old one's name; it does not start it.
LEGACY_UPDATER = b"""@echo off\r
setlocal\r
set "OLD_EXE_PATH=%~1"\r
set "NEW_EXE_PATH=%~2"\r
set "OLD_EXE_FILENAME=%~nx1"\r
if not defined OLD_EXE_PATH exit /b 1\r
if not defined NEW_EXE_PATH exit /b 1\r
:wait_loop\r
tasklist /FI "IMAGENAME eq %OLD_EXE_FILENAME%" 2>NUL | find /I /N "%OLD_EXE_FILENAME%">NUL\r
if "%ERRORLEVEL%"=="0" (\r
    ping -n 2 127.0.0.1 >NUL\r
    goto wait_loop\r
)\r
del "%OLD_EXE_PATH%"\r
if exist "%OLD_EXE_PATH%" exit /b 1\r
ren "%NEW_EXE_PATH%" "%OLD_EXE_FILENAME%"\r
endlocal\r
"""


def _legacy_handle_update(home: Path, url: str) -> None:
    """1.0.9's handle_update, step by step: download into its own folder, unpack into update_temp
    beside itself, take worker.exe from the zip's root to worker_update.exe, start updater.bat with
    both paths in a new console (then it exits: here, the stand-in exe is not running), and remove
    the zip and the unpacked folder."""
    import urllib.request

    zip_path, extract_dir = home / "update.zip", home / "update_temp"
    current_exe = home / EXE
    try:
        with urllib.request.urlopen(url, timeout=60) as got:
            zip_path.write_bytes(got.read())
        extract_dir.mkdir(exist_ok=True)
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(extract_dir)
        assert (extract_dir / EXE).exists() and (home / "updater.bat").exists()
        update_exe = home / "worker_update.exe"  # 1.0.9: sys.executable.replace(".exe", "_update.exe")
        shutil.move(str(extract_dir / EXE), str(update_exe))
        updater = subprocess.Popen([str(home / "updater.bat"), str(current_exe), str(update_exe)],
                                   creationflags=subprocess.CREATE_NEW_CONSOLE, stdin=subprocess.DEVNULL)
    finally:
        zip_path.unlink(missing_ok=True)
        shutil.rmtree(extract_dir, ignore_errors=True)
    assert updater.wait(120) == 0


def _watcher_start(home: Path, env: dict[str, str]) -> None:
    """1.0.x's watcher.bat starting the worker: ``start "" /D "%WORKER_PATH%" "%WORKER_PATH%worker.exe"``
    with WORKER_PATH its own folder (trailing backslash): no arguments, cwd the folder, a console
    of its own. (The watcher runs hidden in the user's session: no HIVE_* there, no worker.toml here.)"""
    # The watcher's /D folder ends in a backslash (%~dp0). Wine's start is a program that parses
    # its arguments as CommandLineToArgvW does, where \" is an escaped quote: the same folder is
    # given without that backslash (cmd's built-in start on Windows takes either).
    line = f'cmd.exe /d /c start "" /D "{home}" "{home / EXE}"'  # cmd parses its own command line
    done = subprocess.run(line, env=env, cwd=str(home), stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_1_0_x_install_takes_our_release(builds: SimpleNamespace, fleet_server, files: FileServer,
                                           tmp_path: Path) -> None:
    """The migration as it happens on a fleet PC: a 1.0.x install takes our signed fleet release
    through 1.0.x's own update steps and updater.bat; its watcher then starts our worker.exe bare.
    It must reach the server baked into it (with user:password), as the same worker, and serve."""
    home = tmp_path / "HiveWorker"
    home.mkdir()
    (home / "worker.conf").write_text("shop7_0a1b2c3d\n")
    (home / "workername.txt").write_text("shop7")
    (home / "updater.bat").write_bytes(LEGACY_UPDATER)
    (home / EXE).write_bytes(b"MZ the 1.0.9 worker")  # not running: the 1.0.x worker exits first
    key, _ = keypair(tmp_path)
    body = _release(tmp_path, builds.new, "worker-new.zip", key, builds.new_version, builds.new_sequence)
    _legacy_handle_update(home, files.add("/worker-new.zip", body))
    assert (home / EXE).read_bytes() == builds.new.read_bytes()
    assert not (home / "worker_update.exe").exists() and not (home / "update_temp").exists()
    assert not (home / "worker.toml").exists()

    task = fleet_server.enqueue("example", {"text": "hi"})  # before the start: an idle worker sleeps 180 s
    _watcher_start(home, bare_env(tmp_path / "tmp"))
    try:
        got = _result(fleet_server, task, 120)
        assert got["status"] == "success" and got["worker_id"] == "shop7_0a1b2c3d", got
        assert _poster_version(fleet_server, task) == {builds.new_version}
        assert (home / "worker.conf").read_text().strip() == "shop7_0a1b2c3d"
        wait_for(lambda: (home / "updater.bat").read_bytes() == (ROOT / "updater.bat").read_bytes(), 10,
                 what="our updater.bat in place of 1.0.x's")
        assert not (home / "devserver.sqlite").exists()
        assert_fleet_credentials(fleet_server)
        assert_no_password(home)
    finally:
        _kill_image(home / EXE)
