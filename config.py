"""Worker configuration: defaults baked into the build, plus the task registry.

Every setting below except WORKER_VERSION and TASK_REGISTRY can be overridden
without rebuilding, highest first: a command-line flag (``--pool-size 4``), an
environment variable (``HIVE_WORKER_POOL_SIZE=4``), ``worker.toml`` in the worker's
home (``pool_size = 4``), then the value here. ``python main.py --print-config``
shows the effective values and where each came from; docs/settings.md lists them.

Adding a task: put a module in tasks/, import it here, add a TASK_REGISTRY entry.
"""

import os

from tasks import example, prom_parser, system_info

WORKER_VERSION = "2.0.0"
# Release sequence: a whole number that grows by at least 1 with every release (never reused).
# A worker refuses a signed release whose sequence is not above its own (docs/self-update.md).
RELEASE_SEQUENCE = 1

# API root of the Hive server, e.g. "http://host:3010/api". A release build carries its fleet's
# (python -m release.build --server-url URL, docs/release.md), so this stays empty here. Empty from
# source: an embedded local demo server with a few demo tasks; a frozen worker without one exits 2.
SERVER_URL = ""

# Executor processes started up front; each runs one task at a time. The default
# leaves one core for the supervisor and the PC's owner on multicore machines.
POOL_SIZE = max(1, min(8, (os.cpu_count() or 2) - 1))

# Seconds to wait ...
NO_TASK_SLEEP = 180.0  # ... after the server said "no_tasks" (the whole worker, not per slot)
TIME_ERROR_SLEEP = 180.0  # ... at most between retries while the server is unreachable (backoff cap)
TASK_ERROR_SLEEP = 1800.0  # ... in the slot that ran a failed task before it takes more work (0: off)
UPDATE_ERROR_SLEEP = 1800.0  # ... after a failed self-update

# Per-task limits on the executor and all its descendants (0 turns one off).
TASK_TIME_LIMIT = 1800.0  # wall-clock seconds from dispatch
TASK_CPU_LIMIT = 1800.0  # CPU seconds (user + system) of the whole process tree
TASK_MEMORY_LIMIT_MB = 3072  # RSS of the tree on Linux/macOS, private bytes on Windows
# Per-task-type overrides: {"task_type": {"time": s, "cpu": s, "memory_mb": MB}}.
# prom_pars fetches with requests: 1800 s covers ~336 products at the default
# 1 s delay (docs/prom_pars.md: 120 + 5 s per product); it needs little memory.
TASK_LIMITS: dict = {"prom_pars": {"time": 1800, "cpu": 300, "memory_mb": 256}}
LIMIT_CHECK_INTERVAL = 0.1  # seconds between limit checks

# Executor recycling: replace an executor after this many tasks (0: never) or
# when it has grown this many MB over its start-up size between tasks (0: never).
MAX_TASKS_PER_EXECUTOR = 500
EXECUTOR_MEMORY_GROWTH_MB = 512
EXECUTOR_PRIORITY = "below_normal"  # "idle", "below_normal" or "normal"

RESULT_MAX_BYTES = 16 * 1024 * 1024  # larger results fail with kind result_too_large

GET_TASK_TIMEOUT = 20.0  # HTTP timeouts, seconds (as the 1.0.x worker used), each for the whole exchange
SUBMIT_TIMEOUT = 60.0
GET_TASK_MAX_BYTES = 16 * 1024 * 1024  # a larger get_task answer is dropped (server trouble: backoff)

OUTBOX_MAX_MB = 256  # past this the worker stops claiming (it never drops results)
# A result the server refuses (any answer but 2xx, 429, 502-504) is retried on its own growing
# schedule this many days, then moved to outbox-dead/ (retried every window/28, never deleted).
RESULT_RETRY_DAYS = 7.0
# A worker none of whose executors could start for this many seconds still claims one task per
# this interval (0: never), so the server's update_worker or worker_diagnostics can reach it;
# any other task is failed at once with the reason (docs/settings.md).
NO_EXECUTOR_CLAIM_INTERVAL = 600.0
SHUTDOWN_GRACE = 60.0  # seconds running tasks get to finish on Ctrl+C / SIGTERM
# A loop (supervision, claim, submit) that makes no progress this many seconds past its own
# deadlines (the HTTP timeouts, NO_TASK_SLEEP, ...) is wedged: the worker logs every thread's
# stack and exits with status 4, so that it is started again (0: off; supervisor/observe/liveness.py).
WATCHDOG_GRACE = 120.0

# Self-update (the server's update_worker task; docs/self-update.md).
UPDATE_DRAIN_TIMEOUT = 600.0  # running tasks get this long to finish before the update goes on
UPDATE_MAX_BYTES = 200 * 1024 * 1024  # a larger download is refused
# Ed25519 ROOT public keys (base64) the build trusts (docs/release.md, "Keys"): a root key signs the
# delegation that names the release keys, never a release. Empty: self-update is off (every
# update_worker task is refused). A release build carries its fleet's root keys
# (python -m release.build --root-key KEY); no private key is ever in this tree. (The release key
# that stood here until issue 21 was dropped: nobody holds its private half any more.)
UPDATE_ROOT_KEYS: list = []
# Labs only: also install releases without a signed statement (sha256/size checks only). Loudly logged.
UPDATE_ALLOW_UNSIGNED = False
UPDATE_HEALTH_TIMEOUT = 120.0  # the updater rolls back if the new worker is not healthy by then
# After that, the new version is on probation for this many seconds of its own running time: if it
# crashes or does not come up 3 times within it, it rolls back to the previous binary (0: off).
UPDATE_PROBATION = 1800.0

# Being a good guest on the PC's owner's machine (docs/settings.md). Pausing only stops
# claiming: running tasks finish and their results are posted. A file named "pause" in
# the home pauses too.
PAUSE_ON_BATTERY = True  # no new tasks while the PC runs on battery
PAUSE_WHEN_USER_ACTIVE_MINUTES = 0.0  # ... while keyboard/mouse input came in the last N minutes (0: off)
PAUSE_WHEN_CPU_BUSY_PERCENT = 0.0  # ... while other programs use more than this % of the CPU (0: off)
CPU_CAP_PERCENT = 0.0  # all executors together get at most this % of the whole machine (0: off)
# prom_pars fetches only from these hosts and their subdomains (each URL and every redirect
# hop is checked; anything else gets status 5 and a log line). Tests serving fixture pages
# on 127.0.0.1 add "127.0.0.1" explicitly; a fleet PC should never need to.
PROM_ALLOWED_HOSTS: list = ["prom.ua"]

LOG_LEVEL = "INFO"
LOG_MAX_MB = 10  # logs/worker.log is rotated at this size ...
LOG_BACKUPS = 5  # ... keeping this many old files
TASK_LOG_MAX_BYTES = 1024 * 1024  # what one task may log; the rest is dropped and counted

TASK_REGISTRY = {
    "get_system_info": system_info.get_system_info,
    "example": example.example,
    "prom_pars": prom_parser.prom_pars,
}
