#!/bin/sh
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
