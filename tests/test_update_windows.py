"""Self-update on Windows with real worker.exe builds and updater.bat under cmd.exe (the Wine lane).

The same two one-file builds as test_update.py (this repo, and a copy with another
WORKER_VERSION). updater.bat runs as the worker starts it: cmd.exe, no window, its own process
group. Under Wine tasklist prints nothing and find rejects /I, which is exactly the broken-tools
case updater.bat must survive: it decides from the home's worker.lock instead.

1. the full cycle: drained, downloaded, verified, swapped, started, healthy, reported;
2. a new version that cannot become healthy (the server is away for it): rolled back, the old
   binary restored and started again, the failure reported by the old version;
3. the migration the fleet goes through: a 1.0.x install receives our release zip, ITS updater
   (the 1.0.x updater.bat) swaps our worker.exe in, and ours starts with the same id, replaces
   the 1.0.x updater.bat with its own and serves.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import test_update as _update
from conftest import WINDOWS, wait_for
from test_frozen import processes_of
from test_update import (
    FileServer,
    _install,
    _poster_version,
    _release,
    _result,
    _status,
    _worker_env,
    keypair,
    params_for,
)

from devserver import Fault
from supervisor.update import extract as update_extract
from supervisor.update import records as update_records
from supervisor.update import scripts as update_scripts

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not WINDOWS, reason="updater.bat under cmd.exe: the Windows lane (.ci/windows)"),
]

EXE = update_extract.BINARY
# test_update.py's fixtures: the two builds (made once per session), the file server, the tag.
builds, files, tag = _update.builds, _update.files, _update.tag


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
    w = start_worker(server.url, env=_worker_env(tag, tmp_path, HIVE_UPDATE_PUBLIC_KEYS=public), home=home,
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
        assert (home / "updater.bat").read_bytes() == update_scripts.UPDATER_BAT
        assert _status(home).get("version") == builds.new_version
    finally:
        _kill_image(home / EXE)


def test_unhealthy_new_version_is_rolled_back(builds: SimpleNamespace, server, start_worker, files: FileServer,
                                              tag: str, tmp_path: Path) -> None:
    home = _install(tmp_path, builds.old)
    good, public = _signed_release(tmp_path, files, builds)
    w = start_worker(server.url, env=_worker_env(tag, tmp_path, HIVE_UPDATE_PUBLIC_KEYS=public,
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


# What the protocol says the 1.0.x updater.bat does: wait until no process named worker.exe runs,
# delete the old exe, rename the new one into place, do not restart it. (`find` without /I.)
LEGACY_UPDATER = b"""@echo off\r
:wait\r
tasklist /FI "IMAGENAME eq worker.exe" /NH 2>NUL | find "worker.exe" >NUL\r
if not errorlevel 1 (ping -n 2 127.0.0.1 >NUL & goto wait)\r
del /F /Q "%~1"\r
move /Y "%~2" "%~1"\r
"""


def test_a_1_0_x_install_takes_our_release(builds: SimpleNamespace, server, start_worker, files: FileServer,
                                           tag: str, tmp_path: Path) -> None:
    home = tmp_path / "HiveWorker"
    home.mkdir()
    (home / "worker.conf").write_text("shop7_0a1b2c3d\n")
    (home / "workername.txt").write_text("shop7")
    (home / "updater.bat").write_bytes(LEGACY_UPDATER)
    (home / EXE).write_bytes(b"MZ the 1.0.9 worker")  # not running: the 1.0.x worker exits first
    key, _ = keypair(tmp_path)
    body = _release(tmp_path, builds.new, "worker-new.zip", key, builds.new_version, builds.new_sequence)
    url = files.add("/worker-new.zip", body)

    # The 1.0.x worker's steps, as the protocol describes them: download beside itself, unpack
    # into a folder beside itself, take worker.exe to worker_update.exe, start updater.bat, exit.
    import urllib.request

    zip_path = home / "update.zip"
    zip_path.write_bytes(urllib.request.urlopen(url, timeout=30).read())
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(home / "update_unpacked")
    shutil.move(str(home / "update_unpacked" / EXE), str(home / "worker_update.exe"))
    done = subprocess.run(["cmd.exe", "/d", "/c", str(home / "updater.bat"), str(home / EXE),
                           str(home / "worker_update.exe")], capture_output=True, timeout=120,
                          stdin=subprocess.DEVNULL, cwd=str(home))
    assert done.returncode == 0, done.stdout + done.stderr
    assert (home / EXE).read_bytes() == builds.new.read_bytes()
    assert not (home / "worker_update.exe").exists()

    # 1.0.x's watcher starts worker.exe again: ours, with the same identity.
    w = start_worker(server.url, env=_worker_env(tag, tmp_path), home=home, cmd=[str(home / EXE)])
    try:
        task = server.enqueue("example", {"text": "hi"})
        got = _result(server, task)
        assert got["status"] == "success" and got["worker_id"] == "shop7_0a1b2c3d"
        assert _poster_version(server, task) == {builds.new_version}
        assert (home / "worker.conf").read_text().strip() == "shop7_0a1b2c3d"
        wait_for(lambda: (home / "updater.bat").read_bytes() == update_scripts.UPDATER_BAT, 10,
                 what="our updater.bat in place of 1.0.x's")
    finally:
        w.stop()
        time.sleep(0.5)
