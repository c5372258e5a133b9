"""CPU_CAP_PERCENT: all executors together (and everything they start) get at most this share
of the whole machine, enforced by the OS scheduler rather than by the supervisor.

- Windows: one Job Object with a CPU rate hard cap holds every executor. It is a single
  job for the whole pool, not one per executor, so that one busy executor may use the
  whole budget while the others idle; each executor's own kill-on-close job
  (winjob.adopt) is nested inside it, so killing one executor's tree still works.
- Linux: a cgroup with a CPU quota for the executors, where the worker may create one:
  cgroup v2 ``cpu.max`` (needs a delegated cgroup, e.g. ``Delegate=yes`` in the systemd
  unit, or root), else cgroup v1 ``cpu.cfs_quota_us``.
- Anywhere else (macOS, no writable cgroup): not enforced; one warning says so and the
  executors run only at EXECUTOR_PRIORITY. Under systemd, ``CPUQuota=`` in the unit is
  the alternative (it caps the supervisor too).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from supervisor.host.home import is_frozen
from supervisor.pool import winjob

log = logging.getLogger("hive.cpucap")

PERIOD_US = 100_000  # the kernel's default CFS period
# The kernel's weight of a task at nice 0..19 (sched_prio_to_weight), and EXECUTOR_PRIORITY's nice levels.
NICE_WEIGHTS = (1024, 820, 655, 526, 423, 335, 272, 215, 172, 137, 110, 87, 70, 56, 45, 36, 29, 23, 18, 15)
PRIORITY_NICE = {"idle": 19, "below_normal": 10, "normal": 0}
SUPERVISOR_LEAF = "hive-supervisor"  # cgroup v2: where the supervisor moves so its cgroup may have children


def quota_us(percent: float, ncpu: int) -> int:
    """CFS quota per PERIOD_US for ``percent`` of a machine with ``ncpu`` CPUs (at least 1 ms)."""
    return max(1000, round(percent / 100.0 * ncpu * PERIOD_US))


def group_weight(priority: str, executors: int, autogroup_nice: int | None = None) -> int:
    """The cgroup's weight on the 1024 = nice 0 scale (cgroup v1 cpu.shares).

    The scheduler weighs a cgroup as one entity against its siblings, and the nice level
    of the processes inside no longer counts outside it; so the group gets the weight its
    executors had without it, and the cap changes nothing but the cap under contention.
    That is the sum of their weights, except under autogroup (a desktop's root cgroup),
    where they were in their session's autogroup, weighed as one by its nice level."""
    if autogroup_nice is not None:
        return NICE_WEIGHTS[max(0, min(19, autogroup_nice))]
    return max(2, NICE_WEIGHTS[PRIORITY_NICE.get(priority, 0)] * max(1, executors))


def _autogroup_nice(cgroup_path: str) -> int | None:
    """The nice level of this process's autogroup, if autogroup applies to it (root cgroup only)."""
    if cgroup_path not in ("", "/"):
        return None
    try:
        if Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() != "1":
            return None
        return int(Path("/proc/self/autogroup").read_text().split("nice")[1])
    except (OSError, IndexError, ValueError):
        return None


def _mounts() -> tuple[Path | None, Path | None]:
    """(cgroup2 mount, cgroup v1 cpu controller mount) from /proc/self/mountinfo."""
    v2 = v1 = None
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) < 5 or len(rest) < 3:
            continue
        if rest[0] == "cgroup2" and v2 is None:
            v2 = Path(fields[4])
        elif rest[0] == "cgroup" and "cpu" in rest[2].split(",") and v1 is None:
            v1 = Path(fields[4])
    return v2, v1


def _own_cgroups() -> dict[str, str]:
    """controller list ('' for v2) -> this process's cgroup path."""
    out = {}
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            out[controllers] = path
    except (OSError, ValueError):
        pass
    return out


def _pids(cgroup: Path) -> set[int]:
    return {int(p) for p in (cgroup / "cgroup.procs").read_text().split()}


class CpuCap:
    def __init__(self, percent: float, ncpu: int | None = None, priority: str = "normal",
                 executors: int = 1) -> None:
        self.percent = percent
        self.priority = priority
        self.executors = executors
        self.weight = group_weight(priority, executors)
        self.ncpu = ncpu or os.cpu_count() or 1
        self.how: str | None = None  # what enforces it, or None
        self.why_not: str | None = None
        self.job: Any = None  # Windows
        self.cgroup: Path | None = None  # Linux: the executors' cgroup

    def start(self) -> None:
        """Set the cap up (before the first executor starts); one log line either way."""
        if self.percent <= 0:
            return
        try:
            if sys.platform == "win32":
                self._start_windows()
            elif sys.platform.startswith("linux"):
                self._start_linux()
            else:
                self.why_not = f"no CPU cap mechanism on {sys.platform}"
        except Exception as exc:  # noqa: BLE001 - e.g. an odd /proc/self/cgroup: uncapped, said once, serving
            self.how = None
            self.why_not = f"{type(exc).__name__}: {exc}"
        if self.how:
            log.info("CPU_CAP_PERCENT=%g: all executors together get at most %g%% of this machine's %d CPU(s), "
                     "enforced by %s", self.percent, self.percent, self.ncpu, self.how)
        else:
            log.warning("CPU_CAP_PERCENT=%g cannot be enforced here (%s): executors run uncapped at "
                        "EXECUTOR_PRIORITY; under systemd, CPUQuota= in the unit caps the whole worker",
                        self.percent, self.why_not)

    def _start_windows(self) -> None:
        self.job, problem = winjob.cpu_cap_job(round(self.percent * 100))  # CpuRate: cycles per 10,000
        if self.job:
            self.how = "a Windows Job Object CPU rate hard cap"
        else:
            self.why_not = problem

    def _start_linux(self) -> None:
        v2, v1 = _mounts()
        own = _own_cgroups()
        problems = []
        if v2 is not None and "" in own:
            self.weight = group_weight(self.priority, self.executors, _autogroup_nice(own[""]))
            try:
                self.cgroup = self._v2(v2, own[""])
                self.how = f"cgroup v2 cpu.max in {self.cgroup}"
                return
            except OSError as exc:
                problems.append(f"cgroup v2: {exc.strerror or exc}")
        cpu_key = next((k for k in own if "cpu" in k.split(",")), None)
        if v1 is not None and cpu_key is not None:
            self.weight = group_weight(self.priority, self.executors, _autogroup_nice(own[cpu_key]))
            try:
                self.cgroup = self._v1(v1 / own[cpu_key].lstrip("/"))
                self.how = f"cgroup v1 cpu.cfs_quota_us in {self.cgroup}"
                return
            except OSError as exc:
                problems.append(f"cgroup v1: {exc.strerror or exc}")
        self.why_not = "; ".join(problems) or "no cgroup with a CPU controller is mounted"

    def _v2(self, mount: Path, own: str) -> Path:
        here = mount / own.lstrip("/")
        # A restarted worker is already in its leaf: its parent is the cgroup to divide.
        parent = here.parent if here.name == SUPERVISOR_LEAF else here
        if "cpu" not in (parent / "cgroup.controllers").read_text().split():
            raise OSError(0, f"the cpu controller is not available in {parent} (not delegated?)")
        if "cpu" not in (parent / "cgroup.subtree_control").read_text().split():
            # No processes may live in a cgroup whose children get controllers: move the
            # supervisor (and a one-file build's bootloader, its parent) into a leaf first,
            # but only if nobody else is in there.
            ours = {os.getpid()} | ({os.getppid()} if is_frozen() else set())
            others = _pids(parent) - ours
            if others:
                raise OSError(0, f"{parent} holds other processes ({len(others)}), so it cannot be divided")
            leaf = parent / SUPERVISOR_LEAF
            leaf.mkdir(exist_ok=True)
            for pid in _pids(parent):
                (leaf / "cgroup.procs").write_text(str(pid))
            (parent / "cgroup.subtree_control").write_text("+cpu")
        def limit(cg: Path) -> None:
            (cg / "cpu.max").write_text(f"{quota_us(self.percent, self.ncpu)} {PERIOD_US}")
            # cpu.weight: 100 is nice 0's 1024.
            (cg / "cpu.weight").write_text(str(max(1, min(10000, round(self.weight * 100 / 1024)))))

        return self._make(parent, limit)

    def _v1(self, parent: Path) -> Path:
        def limit(cg: Path) -> None:
            (cg / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (cg / "cpu.cfs_quota_us").write_text(str(quota_us(self.percent, self.ncpu)))
            (cg / "cpu.shares").write_text(str(self.weight))

        return self._make(parent, limit)

    def _make(self, parent: Path, limit: Any) -> Path:
        for stale in parent.glob("hive-executors-*"):  # left by a worker that was killed
            try:
                stale.rmdir()  # only succeeds when empty
            except OSError:
                pass
        cg = parent / f"hive-executors-{os.getpid()}"
        cg.mkdir(exist_ok=True)
        try:
            limit(cg)
        except OSError:
            cg.rmdir()
            raise
        return cg

    def adopt(self, pid: int) -> None:
        """Put a freshly started executor under the cap (its later children inherit it)."""
        if not pid or not self.how:
            return
        try:
            if self.job:
                winjob.assign(self.job, pid)
            elif self.cgroup is not None:
                (self.cgroup / "cgroup.procs").write_text(str(pid))
        except OSError as exc:
            log.warning("executor pid %d could not be put under the CPU cap: %s", pid, exc)

    def close(self) -> None:
        """After the executors are gone: remove the cgroup (the job goes with its handle)."""
        if self.job:
            winjob.close(self.job)
            self.job = None
        if self.cgroup is not None:
            try:
                self.cgroup.rmdir()
            except OSError:
                pass  # a straggler still inside; the next start removes it
            self.cgroup = None

    def describe(self) -> dict[str, Any]:
        return {"percent": self.percent, "enforced_by": self.how, "not_enforced_because": self.why_not,
                "weight": self.weight if self.cgroup is not None else None}
