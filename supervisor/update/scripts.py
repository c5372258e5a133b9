"""The updater scripts, carried inside the binary and written out fresh before each use.

A 1.0.x worker installs only ``worker.exe`` from a release zip, so everything the update
needs must be inside the exe: these texts are. ``updater.bat`` and ``updater.sh`` at the
repo root are byte-identical copies (tests/test_update.py checks it); the release zip takes
``updater.bat`` from there. Both scripts take the same arguments, take the same steps and
write the same log lines (docs/self-update.md):

    updater.bat update EXE STAGED OLD UPDATE_DIR LOG HEALTH_SECONDS PID [PID2]
    sh updater.sh update EXE STAGED OLD UPDATE_DIR LOG HEALTH_SECONDS PID [PID2]

1. wait (bounded) until the old worker's exact PIDs have exited; stop them by PID if not;
2. keep EXE as OLD: a hard link (EXE never goes missing), else a rename;
3. check that STAGED still has the SHA-256 the worker verified (the environment variable
   UPDATER_STAGED_SHA256; certutil / sha256sum), else delete it and give up; then move STAGED
   onto EXE (retried: antivirus locks), checking every step;
4. start EXE with PYINSTALLER_RESET_ENVIRONMENT=1;
5. wait for UPDATE_DIR/decided, the directory the new worker makes once it is healthy;
6. if it does not come in time or the new worker dies: make UPDATE_DIR/decided itself (mkdir
   is atomic: whoever makes it decides), stop the new worker by PID, move OLD back onto EXE,
   write UPDATE_DIR/outcome.txt, start the old worker.

Every path ends with a worker started (or the old one still running); nothing is copied over
a live file; only the script's own files are deleted; no elevation, no VBS or PowerShell.
"""

from __future__ import annotations

import os

# Kept LF here; the .bat is CRLF on disk (cmd.exe mis-parses labels in LF-only batch files).
_BAT = r"""@echo off
rem The Hive worker's updater for Windows; updater.sh is its twin (docs/self-update.md).
rem worker.exe writes this file out fresh before each use: the copy inside worker.exe runs.
rem   updater.bat update EXE STAGED OLD UPDATE_DIR LOG HEALTH_SECONDS PID [PID2]
rem Called the 1.0.x way ("updater.bat TARGET STAGED") it waits until no process of TARGET's
rem name runs, then moves STAGED onto TARGET, as the 1.0.x updater did, without deleting.
setlocal EnableExtensions DisableDelayedExpansion
if /I "%~1"=="update" goto update
if not "%~2"=="" goto legacy
echo usage: updater.bat update EXE STAGED OLD UPDATE_DIR LOG HEALTH_SECONDS PID [PID2] 1>&2
exit /b 2

:update
set "EXE=%~2"
set "STAGED=%~3"
set "OLD=%~4"
set "UPD=%~5"
set "LOG=%~6"
set "HEALTH=%~7"
set "PID1=%~8"
set "PID2=%~9"
if "%PID2%"=="" set "PID2=0"
set "NAME=%~nx2"
set "EXIT_WAIT=120"
set "RETRIES=10"
set "PYINSTALLER_RESET_ENVIRONMENT=1"
rem The worker holds its home's worker.lock open until it exits: while any worker runs there,
rem Windows refuses to delete that file. That proof needs no tool; tasklist only adds the PIDs.
set "HOMELOCK=%UPD%\..\worker.lock"
call :probe_tools
>>"%LOG%" echo %DATE% %TIME% updater: started: exe "%EXE%", staged "%STAGED%", health timeout %HEALTH% s, old worker pid %PID1% %PID2%, process tools %TOOLS%

rem 1. the old worker exits (exact PIDs, bounded)
set /a WAITED=0
:wait_old
call :old_running
if "%RUNNING%"=="1" goto wait_old_next
goto old_gone
:wait_old_next
if %WAITED% GEQ %EXIT_WAIT% goto old_stuck
call :sleep
set /a WAITED+=1
goto wait_old
:old_stuck
>>"%LOG%" echo %DATE% %TIME% updater: the old worker still runs after %EXIT_WAIT% s: stopping pid %PID1% %PID2%
call :kill %PID2%
call :kill %PID1%
set /a WAITED=0
:wait_killed
call :old_running
if "%RUNNING%"=="1" goto wait_killed_next
goto old_gone
:wait_killed_next
if %WAITED% GEQ 15 goto abandon
call :sleep
set /a WAITED+=1
goto wait_killed
:abandon
set "OUTCOME=failed: the old worker did not exit; nothing was changed"
>"%UPD%\outcome.txt" echo %OUTCOME%
>>"%LOG%" echo %DATE% %TIME% updater: %OUTCOME%
exit /b 1

:old_gone
>>"%LOG%" echo %DATE% %TIME% updater: the old worker has exited
if not exist "%STAGED%" goto no_staged
if exist "%EXE%" goto backup
if exist "%OLD%" move /Y "%OLD%" "%EXE%" >NUL 2>&1
if exist "%EXE%" goto exe_restored
>>"%LOG%" echo %DATE% %TIME% updater: no binary at "%EXE%" and no backup: the new one goes in without a fallback
call :check_staged
if not "%STAGED_OK%"=="1" goto staged_changed
move /Y "%STAGED%" "%EXE%" >NUL 2>&1
start "" /b "%EXE%"
>>"%LOG%" echo %DATE% %TIME% updater: new worker started: "%EXE%"
exit /b 0
:exe_restored
>>"%LOG%" echo %DATE% %TIME% updater: restored "%EXE%" from "%OLD%"

rem 2. keep the old binary as OLD: a hard link, else a rename
:backup
if exist "%OLD%" del /F /Q "%OLD%" >NUL 2>&1
if exist "%OLD%" goto no_backup
mklink /H "%OLD%" "%EXE%" >NUL 2>&1
if not errorlevel 1 if exist "%OLD%" if exist "%EXE%" goto linked
set /a TRY=0
:rename_old
move "%EXE%" "%OLD%" >NUL 2>&1
if not exist "%EXE%" if exist "%OLD%" goto renamed
set /a TRY+=1
if %TRY% GEQ %RETRIES% goto no_backup
call :sleep
goto rename_old
:linked
set "MODE=link"
>>"%LOG%" echo %DATE% %TIME% updater: kept the old binary as "%OLD%" (hard link)
goto swap
:renamed
set "MODE=rename"
>>"%LOG%" echo %DATE% %TIME% updater: kept the old binary as "%OLD%" (renamed)

rem 3. the staged binary onto EXE, if it is still the one checked and self-tested (another account
rem could have replaced it since); retried: antivirus may hold it for a moment
:swap
call :check_staged
if not "%STAGED_OK%"=="1" goto staged_changed
>>"%LOG%" echo %DATE% %TIME% updater: the staged binary still has the checked sha256
set /a TRY=0
:swap_try
move /Y "%STAGED%" "%EXE%" >NUL 2>&1
if not exist "%STAGED%" if exist "%EXE%" goto swapped
set /a TRY+=1
if %TRY% GEQ %RETRIES% goto swap_failed
call :sleep
goto swap_try
:swap_failed
if "%MODE%"=="rename" if not exist "%EXE%" move /Y "%OLD%" "%EXE%" >NUL 2>&1
set "OUTCOME=failed: cannot move the new binary into place"
goto fail_before
:no_staged
set "OUTCOME=failed: the staged binary is missing"
goto fail_before
:no_backup
set "OUTCOME=failed: cannot keep the old binary as a backup"
goto fail_before
:staged_changed
del /F /Q "%STAGED%" >NUL 2>&1
if "%MODE%"=="rename" if not exist "%EXE%" move /Y "%OLD%" "%EXE%" >NUL 2>&1
set "OUTCOME=failed: the staged binary is not the one that was checked; not installed"
goto fail_before
:check_staged
rem STAGED_OK=1 when STAGED still has the SHA-256 the worker checked (UPDATER_STAGED_SHA256);
rem certutil prints it on its second line (older Windows spaces the hex digits); where certutil
rem prints nothing (a stub, as under Wine) the old binary, ours and already trusted, hashes it
set "STAGED_OK=0"
set "GOT="
if not defined UPDATER_STAGED_SHA256 exit /b 0
for /f "usebackq skip=1 delims=" %%h in (`certutil -hashfile "%STAGED%" SHA256 2^>NUL`) do if not defined GOT set "GOT=%%h"
if defined GOT goto compare_staged
if not exist "%OLD%" exit /b 0
"%OLD%" --sha256 "%STAGED%" >"%UPD%\staged.sha256" 2>NUL
if exist "%UPD%\staged.sha256" set /p GOT=<"%UPD%\staged.sha256"
del /F /Q "%UPD%\staged.sha256" >NUL 2>&1
if not defined GOT exit /b 0
>>"%LOG%" echo %DATE% %TIME% updater: certutil gave no hash: the old binary computed it
:compare_staged
set "GOT=%GOT: =%"
if /I "%GOT%"=="%UPDATER_STAGED_SHA256%" set "STAGED_OK=1"
exit /b 0
:fail_before
>"%UPD%\outcome.txt" echo %OUTCOME%
>>"%LOG%" echo %DATE% %TIME% updater: %OUTCOME%
set "RUN=%EXE%"
if not exist "%EXE%" set "RUN=%OLD%"
start "" /b "%RUN%"
>>"%LOG%" echo %DATE% %TIME% updater: old worker started again: "%RUN%"
exit /b 1

rem 4. start the new worker; 5. wait for it to be healthy
:swapped
>>"%LOG%" echo %DATE% %TIME% updater: the new binary is in place: "%EXE%"
if exist "%UPD%\started.pid" del /F /Q "%UPD%\started.pid" >NUL 2>&1
start "" /b "%EXE%"
>>"%LOG%" echo %DATE% %TIME% updater: new worker started; waiting up to %HEALTH% s for it to be healthy
set /a WAITED=0
:health
if exist "%UPD%\decided\" goto healthy
set "NEWPID="
set "NEWPY="
if exist "%UPD%\started.pid" for /f "usebackq tokens=1,2" %%a in ("%UPD%\started.pid") do (set "NEWPID=%%a" & set "NEWPY=%%b")
if not defined NEWPID goto health_next
rem started.pid is written after the new worker took the lock: a free lock means it exited
call :lock_held
if "%HELD%"=="1" goto health_next
call :alive %NEWPID%
if "%ALIVE%"=="1" goto health_next
call :alive %NEWPY%
if "%ALIVE%"=="1" goto health_next
if exist "%UPD%\decided\" goto healthy
set "REASON=the new worker exited before it was healthy"
goto rollback
:health_next
if %WAITED% GEQ %HEALTH% goto health_timeout
call :sleep
set /a WAITED+=1
goto health
:health_timeout
set "REASON=the new worker was not healthy within %HEALTH% s"
goto rollback
:healthy
>>"%LOG%" echo %DATE% %TIME% updater: the new worker is healthy: update done
exit /b 0

rem 6. roll back: whoever makes UPDATE_DIR\decided first decides; Windows cannot rename over a
rem running binary, so the new worker is stopped first (updater.sh restores first)
:rollback
mkdir "%UPD%\decided" >NUL 2>&1
if errorlevel 1 goto healthy
>>"%LOG%" echo %DATE% %TIME% updater: rolling back: %REASON%
call :kill %NEWPID%
call :kill %NEWPY%
set /a WAITED=0
:wait_new_gone
call :lock_held
if "%HELD%"=="1" goto wait_new_next
call :alive %NEWPID%
if "%ALIVE%"=="1" goto wait_new_next
call :alive %NEWPY%
if "%ALIVE%"=="1" goto wait_new_next
goto restore
:wait_new_next
if %WAITED% GEQ 30 goto restore
call :sleep
set /a WAITED+=1
goto wait_new_gone
:restore
set /a TRY=0
:restore_try
move /Y "%OLD%" "%EXE%" >NUL 2>&1
if not exist "%OLD%" if exist "%EXE%" goto restored
set /a TRY+=1
if %TRY% GEQ %RETRIES% goto restore_failed
call :sleep
goto restore_try
:restored
>>"%LOG%" echo %DATE% %TIME% updater: restored the old binary: "%EXE%"
set "RUN=%EXE%"
goto restart_old
:restore_failed
>>"%LOG%" echo %DATE% %TIME% updater: cannot restore "%EXE%": starting the old binary where it is: "%OLD%"
set "RUN=%OLD%"
:restart_old
>"%UPD%\outcome.txt" echo rolled back: %REASON%
start "" /b "%RUN%"
>>"%LOG%" echo %DATE% %TIME% updater: old worker started again: "%RUN%"
exit /b 1

rem the 1.0.x call: updater.bat TARGET STAGED
:legacy
set "TARGET=%~1"
set "STAGED=%~2"
set "NAME=%~nx1"
if not exist "%~dp1logs\" mkdir "%~dp1logs" >NUL 2>&1
set "LOG=%~dp1logs\updater.log"
>>"%LOG%" echo %DATE% %TIME% updater: called the 1.0.x way: "%TARGET%" "%STAGED%"
set "LEGACY_RETRIES=10"
call :probe_tools
if "%TOOLS%"=="ok" goto legacy_wait_start
rem no tool can tell that TARGET exited; Windows refuses to replace a running binary, so the
rem move itself is the test, retried as long as the wait would have been
>>"%LOG%" echo %DATE% %TIME% updater: tasklist/find do not work here: waiting for the move to succeed instead
set "LEGACY_RETRIES=600"
goto legacy_swap
:legacy_wait_start
set /a WAITED=0
:legacy_wait
tasklist /FI "IMAGENAME eq %NAME%" /FO CSV /NH 2>NUL | find /I "%NAME%" >NUL
if errorlevel 1 goto legacy_swap
if %WAITED% GEQ 600 goto legacy_stuck
call :sleep
set /a WAITED+=1
goto legacy_wait
:legacy_stuck
>>"%LOG%" echo %DATE% %TIME% updater: a process named %NAME% still runs after 600 s: nothing was changed
exit /b 1
:legacy_swap
set /a TRY=0
:legacy_try
if not exist "%STAGED%" goto legacy_missing
move /Y "%STAGED%" "%TARGET%" >NUL 2>&1
if not exist "%STAGED%" if exist "%TARGET%" goto legacy_done
set /a TRY+=1
if %TRY% GEQ %LEGACY_RETRIES% goto legacy_failed
call :sleep
goto legacy_try
:legacy_done
>>"%LOG%" echo %DATE% %TIME% updater: the new binary is in place: "%TARGET%"
exit /b 0
:legacy_missing
>>"%LOG%" echo %DATE% %TIME% updater: failed: the staged binary is missing
exit /b 1
:legacy_failed
>>"%LOG%" echo %DATE% %TIME% updater: failed: cannot move the new binary into place
exit /b 1

rem ---- helpers ----
:probe_tools
rem tasklist and find are believed only if they can see this very cmd.exe: a stubbed or broken
rem tasklist (Wine's prints nothing; its find rejects /I) must never make a process look gone.
set "TOOLS=broken"
tasklist /FI "IMAGENAME eq cmd.exe" /FO CSV /NH 2>NUL | find /I "cmd.exe" >NUL 2>&1
if not errorlevel 1 set "TOOLS=ok"
exit /b 0

:lock_held
rem HELD=1 while a worker holds the home's worker.lock (deleting a free lock file is harmless)
set "HELD=0"
if not exist "%HOMELOCK%" exit /b 0
del /F /Q "%HOMELOCK%" >NUL 2>&1
if exist "%HOMELOCK%" set "HELD=1"
exit /b 0

:old_running
rem RUNNING=1 while the old worker holds the lock, or while tasklist shows either of its PIDs
set "RUNNING=1"
call :lock_held
if "%HELD%"=="1" exit /b 0
call :alive %PID1%
if "%ALIVE%"=="1" exit /b 0
call :alive %PID2%
if "%ALIVE%"=="1" exit /b 0
set "RUNNING=0"
exit /b 0

:alive
rem ALIVE=1 while process %1 runs with image NAME (a reused PID of another program counts as gone);
rem without working tools ALIVE=0: the callers decide from the lock, which needs none
set "ALIVE=0"
if "%~1"=="" exit /b 0
if "%~1"=="0" exit /b 0
if not "%TOOLS%"=="ok" exit /b 0
tasklist /FI "PID eq %~1" /FI "IMAGENAME eq %NAME%" /FO CSV /NH 2>NUL | find /I "%NAME%" >NUL
if not errorlevel 1 set "ALIVE=1"
exit /b 0

:kill
rem by exact PID, and only while it is known to run: tasklist shows it, or (without tools) the
rem worker still holds the lock, so its PIDs cannot have been reused
if "%~1"=="" exit /b 0
if "%~1"=="0" exit /b 0
if "%TOOLS%"=="ok" goto kill_checked
call :lock_held
if "%HELD%"=="0" exit /b 0
goto kill_now
:kill_checked
call :alive %1
if "%ALIVE%"=="0" exit /b 0
:kill_now
taskkill /F /T /PID %~1 >NUL 2>&1
if errorlevel 1 taskkill /F /PID %~1 >NUL 2>&1
exit /b 0

:sleep
ping -n 2 127.0.0.1 >NUL 2>&1
exit /b 0
"""

_SH = r"""#!/bin/sh
# The Hive worker's updater for Linux and macOS; twin of updater.bat (docs/self-update.md).
# The worker writes this file out fresh before each use: the copy inside the binary runs.
#   sh updater.sh update EXE STAGED OLD UPDATE_DIR LOG HEALTH_SECONDS PID [PID2]
if [ "$1" != "update" ] || [ $# -lt 8 ]; then
    echo "usage: updater.sh update EXE STAGED OLD UPDATE_DIR LOG HEALTH_SECONDS PID [PID2]" >&2
    exit 2
fi
EXE=$2
STAGED=$3
OLD=$4
UPD=$5
LOG=$6
HEALTH=$7
PID1=$8
PID2=${9:-0}
EXIT_WAIT=120
RETRIES=10
PYINSTALLER_RESET_ENVIRONMENT=1
export PYINSTALLER_RESET_ENVIRONMENT

log() { printf '%s updater: %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$1" >> "$LOG"; }

# alive PID: true while it runs (0, empty and zombies count as gone)
alive() {
    case "$1" in ''|0|*[!0-9]*) return 1 ;; esac
    kill -0 "$1" 2>/dev/null || return 1
    if [ -r "/proc/$1/stat" ]; then
        state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
        [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
        return
    fi
    return 0
}

# stop PID: SIGKILL by exact PID, only if it runs
stop() { alive "$1" && kill -9 "$1" 2>/dev/null; return 0; }

start_worker() { "$1" </dev/null >/dev/null 2>&1 & STARTED=$!; }

# staged_ok: true when STAGED still has the SHA-256 the worker checked (UPDATER_STAGED_SHA256);
# read through stdin, so no file name can change the tool's output
staged_ok() {
    [ -n "$UPDATER_STAGED_SHA256" ] || return 1
    if command -v sha256sum >/dev/null 2>&1; then got=$(sha256sum < "$STAGED" 2>/dev/null)
    elif command -v shasum >/dev/null 2>&1; then got=$(shasum -a 256 < "$STAGED" 2>/dev/null)
    else got=$(openssl dgst -sha256 -r < "$STAGED" 2>/dev/null)
    fi
    [ "${got%% *}" = "$UPDATER_STAGED_SHA256" ]
}

staged_changed() {
    rm -f "$STAGED" 2>/dev/null
    if [ "$MODE" = rename ] && [ ! -e "$EXE" ]; then mv -f "$OLD" "$EXE" 2>/dev/null; fi
    fail_before "failed: the staged binary is not the one that was checked; not installed"
}

fail_before() {
    printf '%s\n' "$1" > "$UPD/outcome.txt"
    log "$1"
    RUN=$EXE
    [ -e "$EXE" ] || RUN=$OLD
    start_worker "$RUN"
    log "old worker started again: \"$RUN\""
    exit 1
}

log "started: exe \"$EXE\", staged \"$STAGED\", health timeout $HEALTH s, old worker pid $PID1 $PID2"

# 1. the old worker exits (exact PIDs, bounded)
waited=0
while alive "$PID1" || alive "$PID2"; do
    [ "$waited" -ge "$EXIT_WAIT" ] && break
    sleep 1
    waited=$((waited + 1))
done
if alive "$PID1" || alive "$PID2"; then
    log "the old worker still runs after $EXIT_WAIT s: stopping pid $PID1 $PID2"
    stop "$PID2"
    stop "$PID1"
    waited=0
    while alive "$PID1" || alive "$PID2"; do
        if [ "$waited" -ge 15 ]; then
            OUTCOME="failed: the old worker did not exit; nothing was changed"
            printf '%s\n' "$OUTCOME" > "$UPD/outcome.txt"
            log "$OUTCOME"
            exit 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
fi
log "the old worker has exited"
[ -f "$STAGED" ] || fail_before "failed: the staged binary is missing"
if [ ! -e "$EXE" ]; then
    [ -f "$OLD" ] && mv -f "$OLD" "$EXE" 2>/dev/null
    if [ -e "$EXE" ]; then
        log "restored \"$EXE\" from \"$OLD\""
    else
        log "no binary at \"$EXE\" and no backup: the new one goes in without a fallback"
        staged_ok || staged_changed
        mv -f "$STAGED" "$EXE"
        start_worker "$EXE"
        log "new worker started: \"$EXE\""
        exit 0
    fi
fi

# 2. keep the old binary as OLD: a hard link, else a rename
if [ -e "$OLD" ] || [ -L "$OLD" ]; then rm -f "$OLD" 2>/dev/null; fi
if [ -e "$OLD" ] || [ -L "$OLD" ]; then fail_before "failed: cannot keep the old binary as a backup"; fi
if ln "$EXE" "$OLD" 2>/dev/null && [ -f "$OLD" ] && [ -e "$EXE" ]; then
    MODE="link"
    log "kept the old binary as \"$OLD\" (hard link)"
else
    try=0
    while :; do
        mv "$EXE" "$OLD" 2>/dev/null
        if [ ! -e "$EXE" ] && [ -f "$OLD" ]; then break; fi
        try=$((try + 1))
        [ "$try" -ge "$RETRIES" ] && fail_before "failed: cannot keep the old binary as a backup"
        sleep 1
    done
    MODE="rename"
    log "kept the old binary as \"$OLD\" (renamed)"
fi

# 3. the staged binary onto EXE, if it is still the one checked and self-tested (another account
#    could have replaced it since); retried: antivirus may hold it for a moment
staged_ok || staged_changed
log "the staged binary still has the checked sha256"
try=0
while :; do
    mv -f "$STAGED" "$EXE" 2>/dev/null
    if [ ! -e "$STAGED" ] && [ -f "$EXE" ]; then break; fi
    try=$((try + 1))
    if [ "$try" -ge "$RETRIES" ]; then
        if [ "$MODE" = rename ] && [ ! -e "$EXE" ]; then mv -f "$OLD" "$EXE" 2>/dev/null; fi
        fail_before "failed: cannot move the new binary into place"
    fi
    sleep 1
done
log "the new binary is in place: \"$EXE\""

# 4. start the new worker; 5. wait for it to be healthy
rm -f "$UPD/started.pid"
start_worker "$EXE"
NEWBOOT=$STARTED
log "new worker started; waiting up to $HEALTH s for it to be healthy"
waited=0
REASON=""
NEWPID=""
NEWPY=""
while :; do
    if [ -d "$UPD/decided" ]; then
        log "the new worker is healthy: update done"
        exit 0
    fi
    if [ -f "$UPD/started.pid" ]; then read -r NEWPID NEWPY < "$UPD/started.pid"; fi
    if ! alive "$NEWBOOT" && ! alive "$NEWPID" && ! alive "$NEWPY"; then
        if [ -d "$UPD/decided" ]; then
            log "the new worker is healthy: update done"
            exit 0
        fi
        REASON="the new worker exited before it was healthy"
        break
    fi
    if [ "$waited" -ge "$HEALTH" ]; then
        REASON="the new worker was not healthy within $HEALTH s"
        break
    fi
    sleep 1
    waited=$((waited + 1))
done

# 6. roll back: whoever makes UPDATE_DIR/decided first decides
if ! mkdir "$UPD/decided" 2>/dev/null; then
    log "the new worker is healthy: update done"
    exit 0
fi
log "rolling back: $REASON"
# POSIX renames over a running binary, so the old one is back in place before the new one is stopped.
try=0
RUN=$EXE
while :; do
    mv -f "$OLD" "$EXE" 2>/dev/null
    if [ ! -e "$OLD" ] && [ -f "$EXE" ]; then
        log "restored the old binary: \"$EXE\""
        break
    fi
    try=$((try + 1))
    if [ "$try" -ge "$RETRIES" ]; then
        log "cannot restore \"$EXE\": starting the old binary where it is: \"$OLD\""
        RUN=$OLD
        break
    fi
    sleep 1
done
stop "$NEWPID"
stop "$NEWPY"
stop "$NEWBOOT"
waited=0
while alive "$NEWPID" || alive "$NEWPY" || alive "$NEWBOOT"; do
    [ "$waited" -ge 30 ] && break
    sleep 1
    waited=$((waited + 1))
done
printf 'rolled back: %s\n' "$REASON" > "$UPD/outcome.txt"
start_worker "$RUN"
log "old worker started again: \"$RUN\""
exit 1
"""

UPDATER_BAT: bytes = _BAT.replace("\n", "\r\n").encode("ascii")
UPDATER_SH: bytes = _SH.encode("ascii")
BAT_NAME = "updater.bat"
SH_NAME = "updater.sh"


def for_this_platform() -> tuple[str, bytes]:
    """(file name, bytes) of the script this OS runs."""
    return (BAT_NAME, UPDATER_BAT) if os.name == "nt" else (SH_NAME, UPDATER_SH)
