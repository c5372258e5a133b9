"""Self-update (issue 6, docs/self-update.md): the worker side of the update_worker task.

prepare() downloads, verifies, extracts and pre-flights a release; launch() writes the updater
script out fresh, records the pending update and starts the script detached, and the caller
exits; the script swaps the binaries, starts the new worker and rolls back when it is not
healthy in time. on_start() repairs whatever a power cut left; on_healthy() reports how the
update ended once the worker has talked to the server.

Files, all by exact name (never derived by string replacement of the running executable):
  <install>/worker.exe(.old)            the live binary and the previous one (hard link or renamed)
  <install>/updater.bat|updater.sh      the script, for the record and for a 1.0.x caller
  <home>/update/release.zip(.part)      the download (removed once unpacked)
  <home>/update/staged/worker.exe       the verified, self-tested new binary
  <home>/update/preflight/              where the staged binary runs its self-test
  <home>/update/run/updater.bat|.sh     the copy of the script that runs (never rewritten while it runs)
  <home>/update/pending.json            the update in progress: task id, from/to version, paths
  <home>/update/started.pid             written by a worker starting while an update is pending
  <home>/update/decided/                made (atomically) by the healthy new worker or by a rollback
  <home>/update/outcome.txt             written by the script when it did not end healthy
  <home>/update/bad-versions.json       versions rolled back on this PC: refused at once
  <home>/update/installed.json          the highest release sequence ever installed here (no downgrade)
  <home>/logs/updater.log               every step of the script
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

import orjson
import psutil

from supervisor.home import is_frozen
from supervisor.pool.treekill import kill_group, kill_tree
from supervisor.store.atomic import atomic_write
from supervisor.update.extract import BINARY, extract_binary
from supervisor.update.scripts import for_this_platform
from supervisor.update.verify import (
    Refused,
    Statement,
    UpdateParams,
    check_binary,
    parse_keys,
    parse_params,
    platform_tag,
    verify_statement,
)

log = logging.getLogger("hive.update")

UPDATE_DIR = "update"
PENDING = "pending.json"
STARTED = "started.pid"
DECIDED = "decided"
OUTCOME = "outcome.txt"
BAD_VERSIONS = "bad-versions.json"
INSTALLED = "installed.json"
NO_KEY = "self-update is off: this build has no release key"
STAGED_SHA_ENV = "UPDATER_STAGED_SHA256"  # how the script learns the hash to re-check before the swap
LEGACY_LEFTOVERS = ("worker_update.exe",)  # what 1.0.x leaves beside worker.exe, by exact name
SELF_TEST_TIMEOUT = 120.0
BAD_VERSION_HOLD = 7 * 86400.0  # a rolled-back version is refused at once for this long
LAUNCH_CHECK = 0.3  # the script must still be running this long after its start


class UpdateRefused(Exception):
    """The update cannot or must not be installed; the message is the one line the server gets."""


@dataclass
class Staged:
    binary: Path
    version: str | None
    sha256: str = ""  # of the zip
    binary_sha256: str = ""  # of the staged binary: the updater checks it again just before the swap
    sequence: int | None = None  # None: an unsigned release (UPDATE_ALLOW_UNSIGNED)


def update_dir(home: Path) -> Path:
    return Path(home) / UPDATE_DIR


def backup_of(exe: Path) -> Path:
    """worker.exe -> worker.exe.old: a suffix appended, never a replacement inside the name."""
    return exe.with_name(exe.name + ".old")


def private_dir(path: Path) -> Path:
    """Make ``path`` (and missing parents) and keep it to this account (POSIX 0700 whatever the
    umask), so that no other local account can swap a file in it between a check and its use.
    Windows: install.bat gives the install folder (the home) an ACL of this account, SYSTEM and
    Administrators only, and what is made inside inherits it."""
    path.mkdir(parents=True, exist_ok=True)
    if os.name != "nt":
        os.chmod(path, 0o700)
    return path


def write_private(path: Path, data: bytes, fsync: bool = True) -> None:
    atomic_write(path, data, fsync=fsync)
    if os.name != "nt":
        os.chmod(path, 0o600)


def running_sequence() -> int:
    """RELEASE_SEQUENCE of the build that runs (config.py, baked into the binary)."""
    import config

    value = getattr(config, "RELEASE_SEQUENCE", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def refusal_at_once(settings: Any) -> str | None:
    """Why every update_worker task is refused by this worker, before any drain or download."""
    try:
        keys = parse_keys(settings.update_public_keys)
    except Refused as exc:  # settings.load refuses such keys; never let one crash the arbiter
        return str(exc)
    if not keys and not settings.update_allow_unsigned:
        return NO_KEY
    return None


# ---- prepare: params, download, signature, extraction, pre-flight ------------------------------

def prepare(params: Any, settings: Any, running_version: str) -> Staged | None:
    """A verified, pre-flighted binary ready to swap in; None when ``version`` is already running."""
    try:
        return _prepare(params, settings, running_version)
    except Refused as exc:
        raise UpdateRefused(str(exc)) from None


def _prepare(params: Any, settings: Any, running_version: str) -> Staged | None:
    refusal = refusal_at_once(settings)
    if refusal:
        raise Refused(refusal)
    keys = parse_keys(settings.update_public_keys)
    p = parse_params(params)
    if p.version is not None and p.version == running_version:
        return None
    upd = private_dir(update_dir(settings.home))
    pending = read_pending(upd)
    if pending and _updater_alive(pending):
        raise Refused(f"the updater of a previous update (pid {pending.get('updater_pid')}) is still running")
    staged_dir = upd / "staged"
    zip_path = upd / "release.zip"
    for stale in (zip_path, staged_dir / BINARY):  # what an earlier attempt left
        stale.unlink(missing_ok=True)
    if p.version is not None:
        _refuse_if_bad(upd, p.version)
    statement = None
    if keys and p.sequence is not None:  # only a claim, but an old release is refused before its download
        _refuse_old(f"release {p.version}" if p.version else "the release (params.sequence)", p.sequence, upd)
    if keys and p.statement is not None:  # the statement in the params: checked before the download
        statement = _checked(verify_statement(p.statement, p.signature, keys), p, upd, running_version)
        if statement.version == running_version:
            return None
    started = time.monotonic()
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
            statement = _checked(verify_statement(unpacked.statement, unpacked.signature, keys), p, upd,
                                 running_version)
        if statement is not None:
            check_binary(statement, unpacked.sha256, unpacked.size)
            if statement.version == running_version:
                binary.unlink(missing_ok=True)
                return None
            log.info("update: release %s (sequence %d, %s) signed by UPDATE_PUBLIC_KEYS[%d]; the binary matches "
                     "its signed sha256", statement.version, statement.sequence, statement.platform,
                     statement.key_index)
        else:
            log.warning("update: UPDATE_ALLOW_UNSIGNED is on: installing a release WITHOUT a signed statement "
                        "(zip sha256 %s%s); no downgrade protection", sha, "" if p.sha256 else ", not given in params")
        expected = statement.version if statement is not None else p.version
        version = preflight(binary, private_dir(upd / "preflight"), expected)
        if version != running_version:
            _refuse_if_bad(upd, version)
    except Refused:
        binary.unlink(missing_ok=True)  # never left where a later step could take it for a good one
        raise
    if version == running_version:
        binary.unlink(missing_ok=True)
        return None
    log.info("update: version %s staged at %s (%d byte zip, sha256 %s) in %.1f s",
             version, binary, size, sha, time.monotonic() - started)
    return Staged(binary=binary, version=version, sha256=sha, binary_sha256=unpacked.sha256,
                  sequence=statement.sequence if statement is not None else None)


def _checked(statement: Statement, p: UpdateParams, upd: Path, running_version: str) -> Statement:
    """A verified statement that fits this worker: its platform, a newer sequence. Raises Refused."""
    here = platform_tag()
    if statement.platform != here:
        raise Refused(f"the release is for platform {statement.platform}, this worker runs on {here}")
    if p.version is not None and p.version != statement.version:
        raise Refused(f"params.version is {p.version}, the signed release is version {statement.version}")
    if p.sequence is not None and p.sequence != statement.sequence:
        raise Refused(f"params.sequence is {p.sequence}, the signed release has sequence {statement.sequence}")
    if statement.version == running_version:
        return statement  # nothing to install: the caller answers "already running"
    _refuse_old(f"release {statement.version}", statement.sequence, upd)
    _refuse_if_bad(upd, statement.version)
    return statement


def _refuse_old(what: str, sequence: int, upd: Path) -> None:
    """No downgrade, no replay: a release must be newer than the build that runs and than any
    release ever installed in this home."""
    running, installed = running_sequence(), highest_installed(upd)
    if sequence <= max(running, installed):
        raise Refused(f"{what} has sequence {sequence}, not above this worker's (running {running}, "
                      f"highest installed here {installed}): a downgrade or a replay")


def preflight(binary: Path, work_dir: Path, expected_version: str | None, timeout: float | None = None) -> str:
    """Run ``binary --self-test`` in a scratch home; the version it reports. Raises Refused."""
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
            raise Refused(f"the new binary cannot be run: {exc}") from None
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(proc)
            raise Refused(f"the new binary's self-test did not finish within {timeout:g} s") from None
        finally:
            _kill_group(proc)
    text = out_path.read_text(encoding="utf-8", errors="replace")
    found = re.search(r"^self-test ok: version (\S+?), tasks:", text, re.M)
    if rc != 0 or not found:
        last = [line for line in text.splitlines() if line.strip()][-1:] or ["(no output)"]
        raise Refused(f"the new binary failed its self-test (exit status {rc}): {last[0].strip()[:300]}")
    version = found.group(1)
    if expected_version is not None and version != expected_version:
        raise Refused(f"the new binary reports version {version}, params.version is {expected_version}")
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


def _kill_group(proc: subprocess.Popen) -> None:
    """POSIX: the self-test ran in its own session; nothing of it may outlive it."""
    kill_group(proc.pid)


# ---- launch: the script takes over -----------------------------------------------------------------

def launch(staged: Staged, settings: Any, task_id: Any, worker_id: str, running_version: str) -> None:
    if not is_frozen():
        raise UpdateRefused("self-update needs the frozen build")
    try:
        _launch(staged, settings, task_id, worker_id, running_version, Path(os.path.abspath(sys.executable)),
                supervisor_pids())
    except Refused as exc:
        raise UpdateRefused(str(exc)) from None
    except OSError as exc:  # before the script started (after it, _launch does not raise)
        clear_pending(update_dir(settings.home))
        raise UpdateRefused(f"cannot hand over to the updater: {exc}") from None


def supervisor_pids() -> list[int]:
    """This process and, in a one-file build, the bootloader parent running the same exe: both hold it."""
    pids = [os.getpid()]
    try:
        parent = psutil.Process().parent()
        if parent is not None and _same_file(Path(parent.exe()), Path(sys.executable)):
            pids.append(parent.pid)
    except (psutil.Error, OSError):
        pass
    return pids


def _launch(staged: Staged, settings: Any, task_id: Any, worker_id: str, running_version: str,
            exe: Path, pids: list[int]) -> int:
    home = Path(settings.home)
    upd = update_dir(home)
    if not staged.binary.is_file():
        raise Refused(f"the staged binary is gone: {staged.binary}")
    if not exe.is_file():
        raise Refused(f"the running binary is not at {exe}")
    if os.stat(staged.binary).st_dev != os.stat(exe.parent).st_dev:
        raise Refused(f"the home ({home}) and the install folder ({exe.parent}) are on different volumes: "
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
        raise Refused(f"cannot start the updater script: {exc}") from None
    time.sleep(LAUNCH_CHECK)
    if proc.poll() is not None:
        clear_pending(upd)
        raise Refused(f"the updater script exited at once with status {proc.returncode} (see {log_path})")
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


def worker_env(settings: Any) -> dict[str, str]:
    """The environment the script starts a worker with: the settings this one got from flags or
    HIVE_* variables become HIVE_* variables (worker.toml and config.py are read by it anyway)."""
    from supervisor.settings import SPECS

    extra = {"HIVE_HOME": str(settings.home)}
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


# ---- state files -----------------------------------------------------------------------------------

def read_pending(upd: Path) -> dict | None:
    try:
        data = orjson.loads((upd / PENDING).read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("update: unreadable %s (%s): ignored", upd / PENDING, exc)
        return None
    return data if isinstance(data, dict) else None


def write_pending(upd: Path, data: dict) -> None:
    write_private(private_dir(upd) / PENDING, orjson.dumps(data, option=orjson.OPT_INDENT_2))


def clear_pending(upd: Path) -> None:
    (upd / PENDING).unlink(missing_ok=True)


def _updater_alive(pending: dict) -> bool:
    pid = pending.get("updater_pid")
    if not isinstance(pid, int):
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        ctime = pending.get("updater_ctime")
        return ctime is None or abs(proc.create_time() - float(ctime)) < 1.0
    except psutil.Error:
        return False


def bad_versions(upd: Path) -> dict[str, dict]:
    try:
        data = orjson.loads((upd / BAD_VERSIONS).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def remember_bad(upd: Path, version: str, reason: str) -> None:
    data = bad_versions(upd)
    data[version] = {"reason": reason, "at": time.time()}
    write_private(private_dir(upd) / BAD_VERSIONS, orjson.dumps(data, option=orjson.OPT_INDENT_2))


def highest_installed(upd: Path) -> int:
    """The highest release sequence ever installed in this home (0: none recorded)."""
    try:
        data = orjson.loads((upd / INSTALLED).read_bytes())
    except FileNotFoundError:
        return 0
    except (OSError, orjson.JSONDecodeError) as exc:
        # Unreadable is not "nothing installed": that would reopen every older release.
        raise Refused(f"cannot read {upd / INSTALLED} ({' '.join(str(exc).split())[:120]}); fix or delete it") \
            from None
    value = data.get("sequence") if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def remember_installed(upd: Path, sequence: int, version: str) -> None:
    try:
        if sequence <= highest_installed(upd):
            return
    except Refused:
        pass  # an unreadable record is replaced by the release that now runs
    write_private(private_dir(upd) / INSTALLED,
                  orjson.dumps({"sequence": sequence, "version": version, "at": time.time()}))


def _refuse_if_bad(upd: Path, version: str) -> None:
    entry = bad_versions(upd).get(version)
    if not isinstance(entry, dict):
        return
    at = float(entry.get("at", 0))
    if time.time() - at < BAD_VERSION_HOLD:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(at))
        raise Refused(f"version {version} was rolled back on this PC at {when} ({entry.get('reason')}); refused "
                      f"for {BAD_VERSION_HOLD / 86400:g} days (or delete {upd / BAD_VERSIONS})")


# ---- start-up repair ------------------------------------------------------------------------------

def on_start(home: Path) -> None:
    """Before anything else, frozen only: make sure a runnable worker.exe is in place."""
    try:
        _on_start(Path(home), Path(os.path.abspath(sys.executable)), frozen=is_frozen())
    except Exception:  # noqa: BLE001 - update bookkeeping must never stop a worker from starting
        log.exception("update: start-up repair failed")


def _on_start(home: Path, exe: Path, frozen: bool = True) -> None:
    upd = update_dir(home)
    pending = read_pending(upd)
    if frozen:
        target = Path(pending["exe"]) if pending and isinstance(pending.get("exe"), str) else exe
        if not target.exists():
            candidates = [backup_of(target)]
            if pending and isinstance(pending.get("staged"), str):
                candidates.append(Path(pending["staged"]))
            for candidate in candidates:
                if candidate.is_file() and not candidate.is_symlink():
                    os.replace(candidate, target)
                    log.warning("update: %s was missing (an update was cut short): restored from %s",
                                target, candidate)
                    break
    clean_legacy(exe)
    if frozen:
        if exe.name.lower() == BINARY:  # a worker install, not an interpreter's folder
            _write_script_beside(exe.parent)
        if pending is not None:
            pids = supervisor_pids()
            top = pids[-1]  # the bootloader when there is one: killing it ends the tree
            try:
                write_private(upd / STARTED, f"{top} {pids[0]}".encode("ascii"))
            except OSError as exc:
                log.warning("update: cannot write %s: %s", upd / STARTED, exc)


def clean_legacy(exe: Path) -> list[Path]:
    """Remove what a 1.0.x update left beside the exe, by exact file name; never the running exe,
    never sys.executable, never through a link."""
    removed = []
    for name in LEGACY_LEFTOVERS:
        leftover = exe.parent / name
        try:
            if leftover.is_symlink() or not leftover.is_file():
                continue
            if _same_file(leftover, exe) or _same_file(leftover, Path(sys.executable)):
                continue
            leftover.unlink()
            removed.append(leftover)
            log.info("update: removed %s, left over by a 1.0.x update", leftover)
        except OSError as exc:
            log.warning("update: cannot remove %s: %s", leftover, exc)
    return removed


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


def _write_script_beside(folder: Path) -> None:
    """The current updater script beside the exe (a 1.0.x install has the old updater.bat there)."""
    name, text = for_this_platform()
    path = folder / name
    try:
        if path.is_file() and path.read_bytes() == text:
            return
        atomic_write(path, text)
        log.info("update: wrote %s (the updater of this version)", path)
    except OSError as exc:
        log.warning("update: cannot write %s: %s", path, exc)


# ---- the outcome, once healthy ------------------------------------------------------------------

def on_healthy(home: Path, version: str, worker_id: str) -> list[tuple[Any, bool, bytes, float]]:
    """After the first good server contact: results about a finished update to post, as
    (task_id, ok, raw_result_json, pause_seconds)."""
    try:
        return _on_healthy(Path(home), version)
    except Exception:  # noqa: BLE001 - never let the report of an update break a running worker
        log.exception("update: cannot report the outcome of an update")
        return []


def _on_healthy(home: Path, version: str) -> list[tuple[Any, bool, bytes, float]]:
    upd = update_dir(home)
    pending = read_pending(upd)
    if pending is None:
        return []
    task_id, old, new = pending.get("task_id"), pending.get("from"), pending.get("to")
    pause = float(pending.get("error_sleep") or 0.0)
    if version == new:
        try:
            (upd / DECIDED).mkdir(parents=True)
        except FileExistsError:
            log.warning("update: the updater has already decided to roll back this version")
            return []
        try:
            atomic_write(upd / DECIDED / "healthy", f"{os.getpid()} {version} {time.time():.0f}".encode(),
                         fsync=False)
        except OSError:
            pass  # only a note for people: the directory is the decision
        sequence = pending.get("sequence")
        if isinstance(sequence, int) and not isinstance(sequence, bool):
            try:
                remember_installed(upd, sequence, version)
            except OSError as exc:
                log.warning("update: cannot record release sequence %d in %s: %s", sequence, upd / INSTALLED, exc)
        clear_pending(upd)
        log.info("update: version %s is healthy: reporting success of update task %r", version, task_id)
        return [(task_id, True, orjson.dumps({"message": f"updated from {old} to {new}", "version": new,
                                              "from_version": old}), 0.0)]
    outcome = _read_outcome(upd)
    if outcome is None and _updater_alive(pending):
        log.info("update: the updater is still at work; the outcome is reported at a later start")
        return []
    if version == old:
        if outcome is None:
            reason = "the updater stopped before it finished (killed or power lost); the old version kept running"
        else:
            reason = outcome
        if outcome is not None and outcome.startswith("rolled back") and new:
            remember_bad(upd, new, outcome)
        text = f"update from {old} to {new} failed: {reason}"
    else:
        text = f"update from {old} to {new} did not end as planned: version {version} is running"
    clear_pending(upd)
    (upd / OUTCOME).unlink(missing_ok=True)
    log.warning("update: %s; reporting task %r as update_failed", text, task_id)
    return [(task_id, False, orjson.dumps({"error": text, "kind": "update_failed"}), pause)]


def _read_outcome(upd: Path) -> str | None:
    try:
        text = (upd / OUTCOME).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    return text or None


def check_settings(settings: Any) -> None:
    """At start, one line: self-update is off (no key), or unsigned releases are accepted (labs)."""
    try:
        keys = parse_keys(settings.update_public_keys)
    except Refused as exc:
        log.error("update: %s: every update will be refused", exc)
        return
    if settings.update_allow_unsigned:
        log.warning("UPDATE_ALLOW_UNSIGNED is on: update_worker installs releases WITHOUT a signed statement "
                    "(sha256/size checks only, no downgrade protection); for labs only, never on the fleet "
                    "(docs/self-update.md)")
    elif not keys:
        log.warning("%s (UPDATE_PUBLIC_KEYS is empty): every update_worker task is refused (docs/self-update.md)",
                    NO_KEY)
