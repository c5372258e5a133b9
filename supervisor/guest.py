"""Being a good guest on someone's PC: when not to take new work.

``decide`` is the whole policy, a pure function of what the readers saw (battery,
seconds since the owner last touched keyboard or mouse, other programs' CPU share,
the operator's pause file). ``Guest`` samples the readers every few seconds on the
arbiter's thread and logs one line per change of state. Pausing only stops claiming
(the arbiter holds the ClaimGate): running tasks finish and their results are posted.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psutil

from supervisor.settings import Settings

# Seconds since the user's last input, or None if it cannot be read this time.
IdleRead = Callable[[], float | None]

log = logging.getLogger("hive.guest")

CHECK_EVERY = 2.0  # seconds between readings of battery, input and the pause file
CPU_WINDOW = 10.0  # other programs' CPU share is averaged over this long, so one spike does not pause
PAUSE_FILES = ("pause", "pause.txt")  # in the home; Explorer hides the .txt it adds
# Test-only: a JSON file whose keys (on_battery, idle_seconds, other_cpu_percent) replace the
# OS readings, so the real worker can be driven through a pause without a battery.
INPUTS_ENV = "HIVE_INTERNAL_GUEST_INPUTS"


@dataclass(frozen=True)
class Policy:
    pause_on_battery: bool = True
    user_active_minutes: float = 0.0  # 0 = off
    cpu_busy_percent: float = 0.0  # 0 = off

    @classmethod
    def of(cls, settings: Settings) -> Policy:
        return cls(bool(settings.pause_on_battery), float(settings.pause_when_user_active_minutes),
                   float(settings.pause_when_cpu_busy_percent))


@dataclass(frozen=True)
class Inputs:
    """One reading; None means not known here (never a reason to pause)."""

    on_battery: bool | None = None
    idle_seconds: float | None = None
    other_cpu_percent: float | None = None
    pause_file: str | None = None  # the operator's pause file and its first line, if present


@dataclass(frozen=True)
class Pause:
    code: str  # "file", "battery", "user", "cpu": a change of code is a change of state
    text: str

    def short(self) -> str:
        return {"file": "pause file", "battery": "on battery", "user": "user active", "cpu": "CPU busy"}[self.code]


def decide(policy: Policy, inputs: Inputs) -> Pause | None:
    """Why not to claim now, or None to claim. The operator's file wins, then battery, user, CPU."""
    if inputs.pause_file is not None:
        return Pause("file", inputs.pause_file)
    if policy.pause_on_battery and inputs.on_battery:
        return Pause("battery", "on battery")
    minutes = policy.user_active_minutes
    if minutes > 0 and inputs.idle_seconds is not None and inputs.idle_seconds < minutes * 60:
        return Pause("user", f"the PC's user is active (input {inputs.idle_seconds:.0f} s ago, "
                             f"PAUSE_WHEN_USER_ACTIVE_MINUTES={minutes:g})")
    busy = policy.cpu_busy_percent
    if busy > 0 and inputs.other_cpu_percent is not None and inputs.other_cpu_percent > busy:
        return Pause("cpu", f"other programs use {inputs.other_cpu_percent:.0f}% of the CPU "
                            f"(PAUSE_WHEN_CPU_BUSY_PERCENT={busy:g})")
    return None


# ---- readers ----------------------------------------------------------------------------------


def read_battery() -> bool | None:
    """True on battery, False on mains, None without a battery or when unknown."""
    try:
        battery = psutil.sensors_battery()
    except Exception:  # noqa: BLE001 - a sensor that fails is simply unknown
        return None
    if battery is None or battery.power_plugged is None:
        return None
    return not battery.power_plugged


class IdleReader:
    """Seconds since the last keyboard or mouse input of the PC's interactive user.

    Windows: GetLastInputInfo (the session the worker runs in: a worker started at log-on
    sees its user; one in session 0, as a service, sees no input at all). Linux: the X11
    screen-saver extension (libXss) on $DISPLAY. Elsewhere (Wayland, no display, macOS):
    unsupported, ``why_unsupported`` says so.
    """

    def __init__(self) -> None:
        self.why_unsupported: str | None = None
        self._read: IdleRead | None = None
        if sys.platform == "win32":
            self._read = _windows_idle_reader()
        else:
            self._read, self.why_unsupported = _x11_idle_reader()

    def read(self) -> float | None:
        if self._read is None:
            return None
        try:
            return self._read()
        except Exception:  # noqa: BLE001 - e.g. the X server went away: unknown, not a crash
            return None


def _windows_idle_reader() -> IdleRead | None:
    if sys.platform != "win32":  # only called there; the check lets mypy's Linux pass skip WinDLL
        return None
    import ctypes
    from ctypes import wintypes

    class LASTINPUTINFO(ctypes.Structure):
        _fields_ = [("cbSize", wintypes.UINT), ("dwTime", wintypes.DWORD)]

    user32 = ctypes.WinDLL("user32")
    kernel32 = ctypes.WinDLL("kernel32")
    kernel32.GetTickCount.restype = wintypes.DWORD

    def read() -> float | None:
        info = LASTINPUTINFO(ctypes.sizeof(LASTINPUTINFO), 0)
        if not user32.GetLastInputInfo(ctypes.byref(info)):
            return None
        # Both are 32-bit millisecond tick counts: the subtraction wraps after 49.7 days.
        return ((kernel32.GetTickCount() - info.dwTime) & 0xFFFFFFFF) / 1000.0

    return read


def _x11_idle_reader() -> tuple[IdleRead | None, str | None]:
    import ctypes
    import ctypes.util

    display_name = os.environ.get("DISPLAY")
    if not display_name:
        return None, "no X11 display ($DISPLAY is not set; Wayland and consoles are not supported)"
    x11_name = ctypes.util.find_library("X11")
    xss_name = ctypes.util.find_library("Xss")
    if not x11_name or not xss_name:
        return None, "libX11 or libXss is not installed (apt install libxss1)"

    class XScreenSaverInfo(ctypes.Structure):
        _fields_ = [("window", ctypes.c_ulong), ("state", ctypes.c_int), ("kind", ctypes.c_int),
                    ("til_or_since", ctypes.c_ulong), ("idle", ctypes.c_ulong), ("eventMask", ctypes.c_ulong)]

    x11 = ctypes.CDLL(x11_name)
    xss = ctypes.CDLL(xss_name)
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XDefaultRootWindow.restype = ctypes.c_ulong
    x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
    xss.XScreenSaverAllocInfo.restype = ctypes.POINTER(XScreenSaverInfo)
    xss.XScreenSaverQueryInfo.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(XScreenSaverInfo)]
    display = x11.XOpenDisplay(display_name.encode())
    if not display:
        return None, f"cannot open X11 display {display_name!r}"
    root = x11.XDefaultRootWindow(display)
    info = xss.XScreenSaverAllocInfo()
    if not xss.XScreenSaverQueryInfo(display, root, info):
        return None, f"X11 display {display_name!r} has no screen-saver extension"

    def read() -> float | None:
        if not xss.XScreenSaverQueryInfo(display, root, info):
            return None
        return info.contents.idle / 1000.0

    return read, None


class CpuReader:
    """Other programs' share of the whole machine's CPU over the last window, in percent.

    System-wide busy time minus this worker's own (supervisor and every descendant it can
    still see), so the worker's own load never pauses it.
    """

    def __init__(self) -> None:
        self.me = psutil.Process()
        self.ncpu = psutil.cpu_count() or 1
        self.last: tuple[float, float, float] | None = None  # (monotonic, system busy s, own s)
        self.value: float | None = None

    def _own_cpu(self) -> float:
        total = 0.0
        for proc in [self.me, *self.me.children(recursive=True)]:
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                continue  # gone: its time is lost to both sides of the subtraction over one window
        return total

    def read(self, now: float) -> float | None:
        if self.last is not None and now - self.last[0] < CPU_WINDOW:
            return self.value
        t = psutil.cpu_times()
        busy = sum(t) - t.idle - getattr(t, "iowait", 0.0)
        own = self._own_cpu()
        if self.last is not None:
            wall = (now - self.last[0]) * self.ncpu
            other = (busy - self.last[1]) - (own - self.last[2])
            self.value = max(0.0, min(100.0, 100.0 * other / wall)) if wall > 0 else None
        self.last = (now, busy, own)
        return self.value


def read_pause_file(home: Path) -> str | None:
    for name in PAUSE_FILES:
        path = home / name
        try:
            with open(path, "rb") as f:
                first = f.read(200).decode("utf-8", "replace").splitlines()
        except FileNotFoundError:
            continue
        except OSError:
            first = []
        why = first[0].strip() if first else ""
        # Whoever wrote the file, its text only reaches the log escaped.
        return f"pause file {path} exists" + (f" ({why!r})" if why else "")
    return None


def _override(path: str | None) -> dict[str, Any]:
    """The test-only readings; a key of the wrong type is ignored (the OS reading stays)."""
    if not path:
        return {}
    try:
        data = orjson.loads(Path(path).read_bytes()[:4096])
    except (OSError, orjson.JSONDecodeError):
        return {}
    if not isinstance(data, dict):
        return {}
    out: dict[str, Any] = {}
    if isinstance(data.get("on_battery"), bool):
        out["on_battery"] = data["on_battery"]
    for key in ("idle_seconds", "other_cpu_percent"):
        value = data.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
    return out


# ---- the state the arbiter asks --------------------------------------------------------------


class Guest:
    def __init__(self, settings: Settings, home: Path, environ: dict[str, str] | None = None) -> None:
        self.policy = Policy.of(settings)
        self.home = home
        self.override_path = (os.environ if environ is None else environ).get(INPUTS_ENV)
        self.idle = IdleReader() if self.policy.user_active_minutes > 0 else None
        self.cpu = CpuReader() if self.policy.cpu_busy_percent > 0 else None
        self.next_check = 0.0
        self.inputs = Inputs()
        self.pause: Pause | None = None
        self.since = time.monotonic()
        self.read_failed = False

    def describe_start(self) -> None:
        """One line at start: what the policy is, and which part cannot work on this PC."""
        p = self.policy
        parts = [f"pause_on_battery {'on' if p.pause_on_battery else 'off'}"]
        if p.user_active_minutes > 0:
            parts.append(f"pause while the user is active (input in the last {p.user_active_minutes:g} min)")
        if p.cpu_busy_percent > 0:
            parts.append(f"pause while other programs use over {p.cpu_busy_percent:g}% of the CPU")
        log.info("guest policy: %s; a file named 'pause' in the home pauses too", ", ".join(parts))
        if self.idle is not None and self.idle.why_unsupported and not self.override_path:
            log.warning("PAUSE_WHEN_USER_ACTIVE_MINUTES is set but user input cannot be seen here: %s; "
                        "this setting has no effect on this PC", self.idle.why_unsupported)

    def read(self, now: float) -> Inputs:
        override = _override(self.override_path)
        on_battery = override["on_battery"] if "on_battery" in override else (
            read_battery() if self.policy.pause_on_battery else None)
        idle = override["idle_seconds"] if "idle_seconds" in override else (
            self.idle.read() if self.idle is not None else None)
        cpu = override["other_cpu_percent"] if "other_cpu_percent" in override else (
            self.cpu.read(now) if self.cpu is not None else None)
        return Inputs(on_battery, idle, cpu, read_pause_file(self.home))

    def paused(self, now: float) -> str | None:
        """The reason not to claim now (None: claim); re-reads the inputs every CHECK_EVERY."""
        if now >= self.next_check:
            self.next_check = now + CHECK_EVERY
            try:
                self.inputs = self.read(now)
            except Exception:  # noqa: BLE001 - a reader's surprise keeps the last state, never stops the worker
                if not self.read_failed:
                    log.exception("cannot read the guest policy's inputs; keeping the last state")
                    self.read_failed = True
                return self.pause.text if self.pause else None
            self._change(decide(self.policy, self.inputs), now)
        return self.pause.text if self.pause else None

    def _change(self, pause: Pause | None, now: float) -> None:
        old = self.pause
        if (old and old.code) == (pause and pause.code):
            self.pause = pause  # same state, fresher numbers
            return
        if pause is None:
            assert old is not None
            log.info("resuming: paused for %.0f s (%s)", now - self.since, old.short())
        elif old is None:
            log.info("pausing: %s; running tasks finish, no new ones are claimed", pause.text)
        else:
            log.info("pausing: %s (before: %s)", pause.text, old.short())
        self.pause = pause
        self.since = now

    def state(self, now: float) -> dict[str, Any]:
        """For status.json and worker_diagnostics."""
        i = self.inputs
        return {"paused": self.pause is not None, "why": self.pause.text if self.pause else None,
                "for_seconds": round(now - self.since, 1),
                "inputs": {"on_battery": i.on_battery, "idle_seconds": _round(i.idle_seconds),
                           "other_cpu_percent": _round(i.other_cpu_percent), "pause_file": i.pause_file}}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)

