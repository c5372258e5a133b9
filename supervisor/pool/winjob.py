"""Windows Job Objects: each executor and everything it starts live in one job.

The job is created with KILL_ON_JOB_CLOSE, so when the supervisor dies for any
reason (even TerminateProcess) Windows closes its handle and kills the whole
tree; terminating the job kills every member at once, with no fork race. On
other systems every function here is a no-op (see proctree.py for POSIX).
This module is by design untested in Linux CI; it is exercised by the Windows
workflow (.github/workflows/windows.yml).
"""

from __future__ import annotations

import sys
from typing import Any

if sys.platform == "win32":
    import ctypes
    from ctypes import wintypes

    _k32 = ctypes.WinDLL("kernel32", use_last_error=True)

    class _BASIC_LIMIT(ctypes.Structure):
        _fields_ = [
            ("PerProcessUserTimeLimit", ctypes.c_int64),
            ("PerJobUserTimeLimit", ctypes.c_int64),
            ("LimitFlags", wintypes.DWORD),
            ("MinimumWorkingSetSize", ctypes.c_size_t),
            ("MaximumWorkingSetSize", ctypes.c_size_t),
            ("ActiveProcessLimit", wintypes.DWORD),
            ("Affinity", ctypes.c_size_t),
            ("PriorityClass", wintypes.DWORD),
            ("SchedulingClass", wintypes.DWORD),
        ]

    class _IO_COUNTERS(ctypes.Structure):
        _fields_ = [(n, ctypes.c_uint64) for n in (
            "ReadOperationCount", "WriteOperationCount", "OtherOperationCount",
            "ReadTransferCount", "WriteTransferCount", "OtherTransferCount")]

    class _EXTENDED_LIMIT(ctypes.Structure):
        _fields_ = [
            ("BasicLimitInformation", _BASIC_LIMIT),
            ("IoInfo", _IO_COUNTERS),
            ("ProcessMemoryLimit", ctypes.c_size_t),
            ("JobMemoryLimit", ctypes.c_size_t),
            ("PeakProcessMemoryUsed", ctypes.c_size_t),
            ("PeakJobMemoryUsed", ctypes.c_size_t),
        ]

    class _CPU_RATE(ctypes.Structure):  # JOBOBJECT_CPU_RATE_CONTROL_INFORMATION (the union as CpuRate)
        _fields_ = [("ControlFlags", wintypes.DWORD), ("CpuRate", wintypes.DWORD)]

    _JobObjectExtendedLimitInformation = 9
    _JobObjectCpuRateControlInformation = 15
    _JOB_OBJECT_CPU_RATE_CONTROL_ENABLE = 0x1
    _JOB_OBJECT_CPU_RATE_CONTROL_HARD_CAP = 0x4
    _JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x2000
    _PROCESS_SET_QUOTA = 0x0100
    _PROCESS_TERMINATE = 0x0001

    _k32.CreateJobObjectW.restype = wintypes.HANDLE
    _k32.CreateJobObjectW.argtypes = [ctypes.c_void_p, wintypes.LPCWSTR]
    _k32.OpenProcess.restype = wintypes.HANDLE
    _k32.OpenProcess.argtypes = [wintypes.DWORD, wintypes.BOOL, wintypes.DWORD]
    _k32.AssignProcessToJobObject.argtypes = [wintypes.HANDLE, wintypes.HANDLE]
    _k32.SetInformationJobObject.argtypes = [wintypes.HANDLE, ctypes.c_int, ctypes.c_void_p, wintypes.DWORD]
    _k32.TerminateJobObject.argtypes = [wintypes.HANDLE, wintypes.UINT]
    _k32.CloseHandle.argtypes = [wintypes.HANDLE]


# Each function's Windows body sits inside `if sys.platform == "win32":` (not after an early return
# on other systems) so that mypy's Linux pass skips the names defined only on Windows above.


def adopt(pid: int) -> Any:
    """Put process ``pid`` into a new kill-on-close job; returns the job handle (None off Windows)."""
    if sys.platform == "win32":
        if not pid:
            return None
        job = _k32.CreateJobObjectW(None, None)
        if not job:
            return None
        info = _EXTENDED_LIMIT()
        info.BasicLimitInformation.LimitFlags = _JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        _k32.SetInformationJobObject(job, _JobObjectExtendedLimitInformation, ctypes.byref(info),
                                     ctypes.sizeof(info))
        proc = _k32.OpenProcess(_PROCESS_SET_QUOTA | _PROCESS_TERMINATE, False, pid)
        if proc:
            _k32.AssignProcessToJobObject(job, proc)
            _k32.CloseHandle(proc)
        return job
    return None


def cpu_cap_job(rate: int) -> tuple[Any, str | None]:
    """A job whose members together get at most ``rate`` cycles per 10,000 of the whole machine
    (a hard cap, Windows 8+). Returns (handle, None) or (None, why)."""
    if sys.platform == "win32":
        job = _k32.CreateJobObjectW(None, None)
        if not job:
            return None, f"CreateJobObject failed (error {ctypes.get_last_error()})"
        info = _CPU_RATE(_JOB_OBJECT_CPU_RATE_CONTROL_ENABLE | _JOB_OBJECT_CPU_RATE_CONTROL_HARD_CAP,
                         max(1, min(10000, rate)))
        if not _k32.SetInformationJobObject(job, _JobObjectCpuRateControlInformation, ctypes.byref(info),
                                            ctypes.sizeof(info)):
            error = ctypes.get_last_error()
            _k32.CloseHandle(job)
            return None, f"SetInformationJobObject(CPU rate) failed (error {error}; Windows 8 or later is needed)"
        return job, None
    return None, "not Windows"


def assign(job: Any, pid: int) -> None:
    """Put process ``pid`` into ``job``. Done before adopt(): a process already in a job can only
    go into a job nested below it, so the cap job must come first and the executor's own job
    (created empty by adopt) then nests inside it."""
    if sys.platform == "win32":
        if not job or not pid:
            return
        proc = _k32.OpenProcess(_PROCESS_SET_QUOTA | _PROCESS_TERMINATE, False, pid)
        if not proc:
            raise OSError(f"OpenProcess({pid}) failed (error {ctypes.get_last_error()})")
        try:
            if not _k32.AssignProcessToJobObject(job, proc):
                raise OSError(f"AssignProcessToJobObject failed (error {ctypes.get_last_error()})")
        finally:
            _k32.CloseHandle(proc)


def terminate(job: Any) -> bool:
    if sys.platform == "win32":
        return bool(job) and bool(_k32.TerminateJobObject(job, 1))
    return False


def close(job: Any) -> None:
    if sys.platform == "win32":
        if job:
            _k32.CloseHandle(job)
