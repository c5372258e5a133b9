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
from collections.abc import Callable
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
from supervisor.update.scripts import missing as missing_script
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
    return missing_script()  # a build without its updater script could never hand over


# ---- prepare: params, download, signature, extraction, pre-flight ------------------------------

def prepare(params: Any, settings: Settings, running_version: str) -> Staged | None:
    """A verified, pre-flighted binary ready to swap in; None when ``version`` is already running.
    Raises UpdateRefused.

    Runs PREPARE_STEPS in order on one _Job. After every step the job says whether the release is
    the version that runs (the one place that is decided): then nothing more is done and the staged
    release is forgotten. A refusal once a release may be staged forgets it too, so a refused binary
    is never left where a later step could take it for a good one."""
    job = _Job(params, settings, running_version)
    for step in PREPARE_STEPS:
        try:
            step(job)
        except UpdateRefused:
            job.forget()
            raise
        if job.already_running():
            job.forget()
            return None
    assert job.staged is not None, "the last step stages the release"
    return job.staged


@dataclass
class _Job:
    """One prepare(): the task's params and what the steps have learned so far."""

    params: object
    settings: Settings
    running_version: str
    parsed: UpdateParams | None = None
    upd: Path | None = None  # <home>/update, private
    staged_dir: Path | None = None  # set once a release may be staged there
    kept: tuple[str, int, str, int, bytes | None, bytes | None, bytes | None] | None = None  # records.kept_release
    statement: Statement | None = None  # verified and fitting this worker
    vetted: Statement | None = None  # the statement found neither old nor bad here
    unpacked: Unpacked | None = None
    zip_sha256: str = ""
    zip_size: int = 0
    started: float = 0.0
    version: str | None = None  # what the new binary's self-test reported
    staged: Staged | None = None

    @property
    def p(self) -> UpdateParams:
        assert self.parsed is not None, "a step ran before _read_params"
        return self.parsed

    @property
    def keys(self) -> list[str]:
        return self.settings.update_root_keys

    def upd_dir(self) -> Path:
        """<home>/update, private (made by _no_updater_running)."""
        assert self.upd is not None, "a step ran before _no_updater_running"
        return self.upd

    def new_version(self) -> str | None:
        """The release's version as far as it is known: the self-test's, else the signed statement's,
        else the params' claim (the later ones are checked to agree with the earlier ones)."""
        if self.version is not None:
            return self.version
        if self.statement is not None:
            return self.statement.version
        return self.parsed.version if self.parsed is not None else None

    def already_running(self) -> bool:
        return self.new_version() == self.running_version

    def forget(self) -> None:
        """The staged release goes, once this job got as far as looking at it."""
        if self.upd is None or self.staged_dir is None:
            return
        forget_release(self.upd, self.unpacked.binary if self.unpacked is not None else self.staged_dir / BINARY)


def _refuse_at_once(job: _Job) -> None:
    refusal = refusal_at_once(job.settings)
    if refusal:
        raise UpdateRefused(refusal)


def _read_params(job: _Job) -> None:
    job.parsed = parse_params(job.params)


def _no_updater_running(job: _Job) -> None:
    job.upd = upd = private_dir(update_dir(job.settings.home))
    pending = read_pending(upd)
    if pending and updater_alive(pending):
        raise UpdateRefused(f"the updater of a previous update (pid {pending.get('updater_pid')}) is still running")


def _look_for_staged(job: _Job) -> None:
    """A re-sent update of the release already staged (the hand-over failed, or the worker restarted
    before it) is not downloaded again; a staged binary of any other release is deleted here."""
    upd, p = job.upd_dir(), job.p
    job.staged_dir = upd / "staged"
    (upd / "release.zip").unlink(missing_ok=True)  # what an earlier attempt left
    job.kept = kept_release(upd, job.staged_dir / BINARY, p.url, p.sha256, p.size, p.statement)


def _refuse_claimed_release(job: _Job) -> None:
    """What the params only claim already refuses a bad version or an old release, before its download."""
    p = job.p
    if p.version is not None:
        refuse_if_bad(job.upd_dir(), p.version)
    if job.keys and p.sequence is not None:
        _refuse_old(f"release {p.version}" if p.version else "the release (params.sequence)", p.sequence,
                    job.upd_dir())


def _verify_given_statement(job: _Job) -> None:
    """The statement in the params: checked before the download."""
    p = job.p
    if job.keys and p.statement is not None:
        job.statement = _fits(verify_release(job.upd_dir(), job.keys, p.statement, p.signature, p.trust,
                                             time.time()), p)


def _vet_statement(job: _Job) -> None:
    """A verified statement of another version: newer than anything run or installed here, and not
    a version rolled back here (runs after each statement's verification; the second time a no-op
    for a statement from the params)."""
    statement = job.statement
    if statement is None or statement is job.vetted:
        return
    _refuse_old(f"release {statement.version}", statement.sequence, job.upd_dir())
    refuse_if_bad(job.upd_dir(), statement.version)
    job.vetted = statement


def _reuse_staged(job: _Job) -> None:
    """The release kept by an earlier attempt: verified and self-tested again below, as if just unpacked."""
    job.started = time.monotonic()
    if job.kept is None:
        return
    assert job.staged_dir is not None
    job.zip_sha256, job.zip_size, binary_sha, binary_size, statement, signature, trust = job.kept
    job.unpacked = Unpacked(job.staged_dir / BINARY, binary_sha, binary_size, statement, signature, trust)
    log.info("update: this release is already downloaded and staged (same URL%s; the binary still has its "
             "sha256 %s): not downloaded again", ", zip and statement" if job.p.sha256 or job.p.statement else "",
             binary_sha)


def _download_and_extract(job: _Job) -> None:
    if job.unpacked is not None:
        return
    # Imported here: requests (~10 MB of the supervisor's memory) is needed only while an update downloads.
    from supervisor.update.download import download

    assert job.staged_dir is not None
    p, zip_path = job.p, job.upd_dir() / "release.zip"
    job.zip_sha256, job.zip_size = download(p.url, zip_path, job.settings.update_max_bytes, p.size, p.sha256,
                                            user_agent=f"hive-worker/{job.running_version}")
    try:
        job.unpacked = extract_binary(zip_path, private_dir(job.staged_dir))
    finally:
        zip_path.unlink(missing_ok=True)


def _unpacked(job: _Job) -> Unpacked:
    assert job.unpacked is not None, "a step ran before the release was unpacked"
    return job.unpacked


def _verify_zip_statement(job: _Job) -> None:
    """The statement in the zip, unless the params gave one; required unless UPDATE_ALLOW_UNSIGNED."""
    unpacked = _unpacked(job)
    if job.statement is None and job.keys and (unpacked.statement is not None
                                               or not job.settings.update_allow_unsigned):
        job.statement = _fits(verify_release(job.upd_dir(), job.keys, unpacked.statement, unpacked.signature,
                                             unpacked.trust, time.time()), job.p)


def _check_binary(job: _Job) -> None:
    if job.statement is not None:
        check_binary(job.statement, _unpacked(job).sha256, _unpacked(job).size)


def _log_trust(job: _Job) -> None:
    statement = job.statement
    if statement is not None:
        log.info("update: release %s (sequence %d, %s) signed by delegated release key %d; the binary matches "
                 "its signed sha256", statement.version, statement.sequence, statement.platform,
                 statement.key_index)
    else:
        log.warning("update: UPDATE_ALLOW_UNSIGNED is on: installing a release WITHOUT a signed statement "
                    "(zip sha256 %s%s); no downgrade protection", job.zip_sha256,
                    "" if job.p.sha256 else ", not given in params")


def _self_test(job: _Job) -> None:
    # Before the self-test, the version known so far is the signed statement's, else the params' claim.
    job.version = preflight(_unpacked(job).binary, private_dir(job.upd_dir() / "preflight"), job.new_version())


def _refuse_bad_version(job: _Job) -> None:
    """The version the self-test reported, if it was rolled back here (an unsigned release may not have said)."""
    assert job.version is not None
    refuse_if_bad(job.upd_dir(), job.version)


def _keep(job: _Job) -> None:
    unpacked = _unpacked(job)
    keep_release(job.upd_dir(), job.p.url, job.zip_sha256, job.zip_size, unpacked.binary, unpacked.sha256,
                 unpacked.size, unpacked.statement, unpacked.signature, unpacked.trust)
    log.info("update: version %s staged at %s (%d byte zip, sha256 %s) in %.1f s",
             job.version, unpacked.binary, job.zip_size, job.zip_sha256, time.monotonic() - job.started)
    job.staged = Staged(binary=unpacked.binary, version=job.version, sha256=job.zip_sha256,
                        binary_sha256=unpacked.sha256,
                        sequence=job.statement.sequence if job.statement is not None else None)


# prepare()'s steps, in order; each does one job, and may refuse (UpdateRefused).
PREPARE_STEPS: tuple[Callable[[_Job], None], ...] = (
    _refuse_at_once,
    _read_params,
    _no_updater_running,
    _look_for_staged,
    _refuse_claimed_release,
    _verify_given_statement,
    _vet_statement,
    _reuse_staged,
    _download_and_extract,
    _verify_zip_statement,
    _check_binary,  # before the zip statement's vetting: a tampered zip is refused even if it names this version
    _vet_statement,
    _log_trust,
    _self_test,
    _refuse_bad_version,
    _keep,
)


def _fits(statement: Statement, p: UpdateParams) -> Statement:
    """A verified statement that fits this worker and the params: its platform, the same version
    and sequence as claimed. Raises UpdateRefused."""
    here = platform_tag()
    if statement.platform != here:
        raise UpdateRefused(f"the release is for platform {statement.platform}, this worker runs on {here}")
    if p.version is not None and p.version != statement.version:
        raise UpdateRefused(f"params.version is {p.version}, the signed release is version {statement.version}")
    if p.sequence is not None and p.sequence != statement.sequence:
        raise UpdateRefused(f"params.sequence is {p.sequence}, the signed release has sequence {statement.sequence}")
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
    if sys.platform == "win32":
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
    quiet = subprocess.DEVNULL
    if sys.platform != "win32":
        return subprocess.Popen(["/bin/sh", str(script), *args], cwd=cwd, env=env, start_new_session=True,
                                close_fds=True, stdin=quiet, stdout=quiet, stderr=quiet)
    comspec = os.environ.get("COMSPEC") or r"C:\Windows\System32\cmd.exe"
    # /s /c "...": cmd strips exactly the outer quotes, so quoted paths with spaces survive.
    line = f'"{comspec}" /d /s /c ""{script}" ' + " ".join(f'"{a}"' for a in args) + '"'
    flags = subprocess.CREATE_NO_WINDOW | subprocess.CREATE_NEW_PROCESS_GROUP
    try:  # out of any job object of ours, so it outlives this process whatever the job does
        return subprocess.Popen(line, cwd=cwd, env=env, creationflags=flags | 0x01000000,
                                stdin=quiet, stdout=quiet, stderr=quiet)
    except OSError:
        return subprocess.Popen(line, cwd=cwd, env=env, creationflags=flags, stdin=quiet, stdout=quiet, stderr=quiet)


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
