"""Self-update (issue 6, docs/self-update.md): the worker side of the update_worker task.

prepare() downloads, verifies, extracts and pre-flights a release; launch() writes the updater
script out fresh, records the pending update and starts the script detached, and the caller
exits; the script swaps the binaries, starts the new worker and rolls back when it is not
healthy in time.

The files an update keeps and their paths: records.py. How the next worker starts: startup.py.
The loop's side (drain, when to prepare and hand over): coordinator.py.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from common.treekill import kill_group, kill_tree
from supervisor.host.home import HOME_ENV, is_frozen
from supervisor.settings import SPECS, Settings
from supervisor.update.errors import UpdateRefused
from supervisor.update.extract import BINARY, Unpacked, extract_binary
from supervisor.update.records import (
    DECIDED,
    OUTCOME,
    PENDING,
    STARTED,
    backup_of,
    clear_pending,
    forget_release,
    highest_installed,
    keep_release,
    kept_release,
    private_dir,
    read_pending,
    refuse_if_bad,
    update_dir,
    updater_alive,
    write_pending,
    write_private,
)
from supervisor.update.scripts import for_this_platform
from supervisor.update.trust import verify_release
from supervisor.update.verify import (
    Statement,
    UpdateParams,
    check_binary,
    parse_keys,
    parse_params,
    platform_tag,
)

log = logging.getLogger("hive.update")

NO_KEY = "self-update is off: this build has no release key"
STAGED_SHA_ENV = "UPDATER_STAGED_SHA256"  # how the script learns the hash to re-check before the swap
SELF_TEST_TIMEOUT = 120.0
LAUNCH_CHECK = 0.3  # the script must still be running this long after its start


@dataclass
class Staged:
    binary: Path
    version: str | None
    sha256: str = ""  # of the zip
    binary_sha256: str = ""  # of the staged binary: the updater checks it again just before the swap
    sequence: int | None = None  # None: an unsigned release (UPDATE_ALLOW_UNSIGNED)


def running_sequence() -> int:
    """RELEASE_SEQUENCE of the build that runs (config.py, baked into the binary)."""
    import config

    value = getattr(config, "RELEASE_SEQUENCE", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def refusal_at_once(settings: Settings) -> str | None:
    """Why every update_worker task is refused by this worker, before any drain or download."""
    try:
        keys = parse_keys(settings.update_root_keys)
    except UpdateRefused as exc:  # settings.load refuses such keys; never let one crash the arbiter
        return str(exc)
    if not keys and not settings.update_allow_unsigned:
        return NO_KEY
    return None


# ---- prepare: params, download, signature, extraction, pre-flight ------------------------------

def prepare(params: Any, settings: Settings, running_version: str) -> Staged | None:
    """A verified, pre-flighted binary ready to swap in; None when ``version`` is already running.
    Raises UpdateRefused."""
    refusal = refusal_at_once(settings)
    if refusal:
        raise UpdateRefused(refusal)
    keys = settings.update_root_keys
    p = parse_params(params)
    if p.version is not None and p.version == running_version:
        return None
    upd = private_dir(update_dir(settings.home))
    pending = read_pending(upd)
    if pending and updater_alive(pending):
        raise UpdateRefused(f"the updater of a previous update (pid {pending.get('updater_pid')}) is still running")
    staged_dir = upd / "staged"
    zip_path = upd / "release.zip"
    zip_path.unlink(missing_ok=True)  # what an earlier attempt left
    # A re-sent update of the release already staged (the hand-over failed, or the worker restarted
    # before it) is not downloaded again; a staged binary of any other release is deleted here.
    kept = kept_release(upd, staged_dir / BINARY, p.url, p.sha256, p.size, p.statement)
    statement = None
    try:
        if p.version is not None:
            refuse_if_bad(upd, p.version)
        if keys and p.sequence is not None:  # only a claim, but an old release is refused before its download
            _refuse_old(f"release {p.version}" if p.version else "the release (params.sequence)", p.sequence, upd)
        if keys and p.statement is not None:  # the statement in the params: checked before the download
            statement = _checked(verify_release(upd, keys, p.statement, p.signature, p.trust, time.time()), p, upd,
                                 running_version)
    except UpdateRefused:
        forget_release(upd, staged_dir / BINARY)
        raise
    if statement is not None and statement.version == running_version:
        forget_release(upd, staged_dir / BINARY)
        return None
    started = time.monotonic()
    if kept is not None:  # verified and self-tested again below, as if just unpacked
        sha, size, binary_sha, binary_size, statement_bytes, signature_bytes, trust_bytes = kept
        unpacked = Unpacked(staged_dir / BINARY, binary_sha, binary_size, statement_bytes, signature_bytes,
                            trust_bytes)
        log.info("update: this release is already downloaded and staged (same URL%s; the binary still has its "
                 "sha256 %s): not downloaded again", ", zip and statement" if p.sha256 or p.statement else "",
                 binary_sha)
    else:
        # Imported here: requests (~10 MB of the supervisor's memory) is needed only while an update downloads.
        from supervisor.update.download import download

        sha, size = download(p.url, zip_path, settings.update_max_bytes, p.size, p.sha256,
                             user_agent=f"hive-worker/{running_version}")
        try:
            unpacked = extract_binary(zip_path, private_dir(staged_dir))
        finally:
            zip_path.unlink(missing_ok=True)
    binary = unpacked.binary
    try:
        if statement is None and keys and (unpacked.statement is not None or not settings.update_allow_unsigned):
            statement = _checked(verify_release(upd, keys, unpacked.statement, unpacked.signature, unpacked.trust,
                                                time.time()), p, upd, running_version)
        if statement is not None:
            check_binary(statement, unpacked.sha256, unpacked.size)
            if statement.version == running_version:
                forget_release(upd, binary)
                return None
            log.info("update: release %s (sequence %d, %s) signed by delegated release key %d; the binary matches "
                     "its signed sha256", statement.version, statement.sequence, statement.platform,
                     statement.key_index)
        else:
            log.warning("update: UPDATE_ALLOW_UNSIGNED is on: installing a release WITHOUT a signed statement "
                        "(zip sha256 %s%s); no downgrade protection", sha, "" if p.sha256 else ", not given in params")
        expected = statement.version if statement is not None else p.version
        version = preflight(binary, private_dir(upd / "preflight"), expected)
        if version != running_version:
            refuse_if_bad(upd, version)
    except UpdateRefused:
        forget_release(upd, binary)  # never left where a later step could take it for a good one
        raise
    if version == running_version:
        forget_release(upd, binary)
        return None
    keep_release(upd, p.url, sha, size, binary, unpacked.sha256, unpacked.size, unpacked.statement,
                 unpacked.signature, unpacked.trust)
    log.info("update: version %s staged at %s (%d byte zip, sha256 %s) in %.1f s",
             version, binary, size, sha, time.monotonic() - started)
    return Staged(binary=binary, version=version, sha256=sha, binary_sha256=unpacked.sha256,
                  sequence=statement.sequence if statement is not None else None)


def _checked(statement: Statement, p: UpdateParams, upd: Path, running_version: str) -> Statement:
    """A verified statement that fits this worker: its platform, a newer sequence. Raises UpdateRefused."""
    here = platform_tag()
    if statement.platform != here:
        raise UpdateRefused(f"the release is for platform {statement.platform}, this worker runs on {here}")
    if p.version is not None and p.version != statement.version:
        raise UpdateRefused(f"params.version is {p.version}, the signed release is version {statement.version}")
    if p.sequence is not None and p.sequence != statement.sequence:
        raise UpdateRefused(f"params.sequence is {p.sequence}, the signed release has sequence {statement.sequence}")
    if statement.version == running_version:
        return statement  # nothing to install: the caller answers "already running"
    _refuse_old(f"release {statement.version}", statement.sequence, upd)
    refuse_if_bad(upd, statement.version)
    return statement


def _refuse_old(what: str, sequence: int, upd: Path) -> None:
    """No downgrade, no replay: a release must be newer than the build that runs and than any
    release ever installed in this home."""
    running, installed = running_sequence(), highest_installed(upd)
    if sequence <= max(running, installed):
        raise UpdateRefused(f"{what} has sequence {sequence}, not above this worker's (running {running}, "
                      f"highest installed here {installed}): a downgrade or a replay")


def preflight(binary: Path, work_dir: Path, expected_version: str | None, timeout: float | None = None) -> str:
    """Run ``binary --self-test`` in a scratch home; the version it reports. Raises UpdateRefused."""
    timeout = SELF_TEST_TIMEOUT if timeout is None else timeout
    if work_dir.exists():
        shutil.rmtree(work_dir, ignore_errors=True)
    private_dir(work_dir)
    out_path = work_dir / "self-test.txt"
    argv = [str(binary), "--self-test", "--home", str(work_dir / "home")]
    started = time.monotonic()
    with open(out_path, "wb") as out:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    cwd=str(work_dir), env=child_env(), **_detached_kwargs())
        except OSError as exc:
            raise UpdateRefused(f"the new binary cannot be run: {exc}") from None
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(proc)
            raise UpdateRefused(f"the new binary's self-test did not finish within {timeout:g} s") from None
        finally:
            kill_group(proc.pid)  # POSIX: it ran in its own session; nothing of it may outlive it
    text = out_path.read_text(encoding="utf-8", errors="replace")
    found = re.search(r"^self-test ok: version (\S+?), tasks:", text, re.M)
    if rc != 0 or not found:
        last = [line for line in text.splitlines() if line.strip()][-1:] or ["(no output)"]
        raise UpdateRefused(f"the new binary failed its self-test (exit status {rc}): {last[0].strip()[:300]}")
    version = found.group(1)
    if expected_version is not None and version != expected_version:
        raise UpdateRefused(f"the new binary reports version {version}, params.version is {expected_version}")
    log.info("update: the new binary passed its self-test in %.1f s: version %s", time.monotonic() - started, version)
    return version


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """An environment for another one-file binary: none of ours (HIVE_*, PyInstaller's), a fresh _MEI."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HIVE_", "_PYI_", "_MEI")) and k != "LD_LIBRARY_PATH"}
    if "LD_LIBRARY_PATH_ORIG" in env:  # what the PyInstaller bootloader saved of the user's value
        env["LD_LIBRARY_PATH"] = env.pop("LD_LIBRARY_PATH_ORIG")
    elif not is_frozen() and "LD_LIBRARY_PATH" in os.environ:
        env["LD_LIBRARY_PATH"] = os.environ["LD_LIBRARY_PATH"]
    env["PYINSTALLER_RESET_ENVIRONMENT"] = "1"
    env.update(extra or {})
    return env


def _detached_kwargs() -> dict[str, Any]:
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NO_WINDOW | subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def _kill_tree(proc: subprocess.Popen) -> None:
    """The self-test hung: nothing of it may outlive it (it is not reaped yet, so its pid is safe)."""
    kill_tree(proc.pid)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


# ---- launch: the script takes over -----------------------------------------------------------------

def launch(staged: Staged, settings: Settings, task_id: Any, worker_id: str, running_version: str) -> None:
    if not is_frozen():
        raise UpdateRefused("self-update needs the frozen build")
    try:
        _launch(staged, settings, task_id, worker_id, running_version, Path(os.path.abspath(sys.executable)),
                supervisor_pids())
    except OSError as exc:  # before the script started (after it, _launch does not raise)
        clear_pending(update_dir(settings.home))
        raise UpdateRefused(f"cannot hand over to the updater: {exc}") from None


def supervisor_pids() -> list[int]:
    """This process and, in a one-file build, the bootloader parent running the same exe: both hold it."""
    pids = [os.getpid()]
    try:
        parent = psutil.Process().parent()
        if parent is not None and same_file(Path(parent.exe()), Path(sys.executable)):
            pids.append(parent.pid)
    except (psutil.Error, OSError):
        pass
    return pids


def same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


def _launch(staged: Staged, settings: Settings, task_id: Any, worker_id: str, running_version: str,
            exe: Path, pids: list[int]) -> int:
    home = Path(settings.home)
    upd = update_dir(home)
    if not staged.binary.is_file():
        raise UpdateRefused(f"the staged binary is gone: {staged.binary}")
    if not exe.is_file():
        raise UpdateRefused(f"the running binary is not at {exe}")
    if os.stat(staged.binary).st_dev != os.stat(exe.parent).st_dev:
        raise UpdateRefused(f"the home ({home}) and the install folder ({exe.parent}) are on different volumes: "
                      "the swap would not be a rename")
    for marker in (upd / STARTED, upd / OUTCOME):
        marker.unlink(missing_ok=True)
    if (upd / DECIDED).is_dir():
        shutil.rmtree(upd / DECIDED)
    name, text = for_this_platform()
    script = private_dir(upd / "run") / name
    write_private(script, text)
    log_path = home / "logs" / "updater.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pending = {
        "task_id": task_id, "worker_id": worker_id, "from": running_version, "to": staged.version,
        "sha256": staged.sha256, "sequence": staged.sequence, "exe": str(exe), "staged": str(staged.binary), "old": str(backup_of(exe)),
        "error_sleep": float(settings.update_error_sleep), "health_timeout": float(settings.update_health_timeout),
        "launched_at": time.time(), "supervisor_pids": pids,
    }
    write_pending(upd, pending)
    args = ["update", str(exe), str(staged.binary), str(backup_of(exe)), str(upd), str(log_path),
            str(int(round(settings.update_health_timeout))), str(pids[0]), str(pids[1] if len(pids) > 1 else 0)]
    try:
        proc = _start_script(script, args, dict(worker_env(settings), **{STAGED_SHA_ENV: staged.binary_sha256}))
    except OSError as exc:
        clear_pending(upd)
        raise UpdateRefused(f"cannot start the updater script: {exc}") from None
    time.sleep(LAUNCH_CHECK)
    if proc.poll() is not None:
        clear_pending(upd)
        raise UpdateRefused(f"the updater script exited at once with status {proc.returncode} (see {log_path})")
    # The script runs and will take over once this process exits: from here on nothing may fail.
    try:
        pending["updater_ctime"] = psutil.Process(proc.pid).create_time()
    except psutil.Error:
        pass
    pending["updater_pid"] = proc.pid
    try:
        write_pending(upd, pending)
    except OSError as exc:
        log.warning("update: cannot note the updater's pid in %s: %s", upd / PENDING, exc)
    log.info("update: updater %s started (pid %d) for %s -> %s; it waits for pid %s; log: %s",
             script, proc.pid, running_version, staged.version, " ".join(map(str, pids)), log_path)
    return proc.pid


def _start_script(script: Path, args: list[str], env: dict[str, str]) -> subprocess.Popen:
    cwd = tempfile.gettempdir()  # outside the install folder
    std = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if os.name != "nt":
        return subprocess.Popen(["/bin/sh", str(script), *args], cwd=cwd, env=env, start_new_session=True,
                                close_fds=True, **std)
    comspec = os.environ.get("COMSPEC") or r"C:\Windows\System32\cmd.exe"
    # /s /c "...": cmd strips exactly the outer quotes, so quoted paths with spaces survive.
    line = f'"{comspec}" /d /s /c ""{script}" ' + " ".join(f'"{a}"' for a in args) + '"'
    flags = subprocess.CREATE_NO_WINDOW | subprocess.CREATE_NEW_PROCESS_GROUP
    try:  # out of any job object of ours, so it outlives this process whatever the job does
        return subprocess.Popen(line, cwd=cwd, env=env, creationflags=flags | 0x01000000, **std)
    except OSError:
        return subprocess.Popen(line, cwd=cwd, env=env, creationflags=flags, **std)


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment the script starts a worker with: the settings this one got from flags or
    HIVE_* variables become HIVE_WORKER_* variables (worker.toml and config.py are read by it anyway)."""
    extra = {HOME_ENV: str(settings.home)}
    for spec in SPECS:
        source = settings.sources.get(spec.key, "")
        if source.startswith(("environment ", "flag ")):
            extra[spec.env] = _as_text(settings.values[spec.key])
    return child_env(extra)


def _as_text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        import tomli_w

        return tomli_w.dumps(value)
    return str(value)
