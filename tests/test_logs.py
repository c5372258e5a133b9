"""worker.log rotation in a real process while another program holds the file open: no line is
lost and no backup is dropped. On Windows (the lane) the open handle makes a rename fail, as a
person's ``Get-Content -Wait`` does; on Linux the same test checks plain rotation."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

# A process that logs through the worker's own logging setup: "A B" on stdin logs lines A..B-1.
DRIVER = r"""
import logging, sys
from pathlib import Path
from supervisor.host import logs
logs.RotatingLog.ROTATE_RETRY = 0.0  # try again at every line while held: the test needs no clock
logs.setup(Path(sys.argv[1]), "INFO", max_mb=0.002, backups=3, console_level="CRITICAL")
log = logging.getLogger("hive.test")
for request in sys.stdin:
    first, end = map(int, request.split())
    for i in range(first, end):
        log.info("line %05d %s", i, "x" * 60)
    print("ok", flush=True)
"""
BACKUPS = 3


class Logger:
    def __init__(self, home: Path) -> None:
        self.errors = home / "stderr.txt"  # a file, not a pipe: a flood of logging errors must not block it
        with open(self.errors, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(home)], cwd=str(ROOT), text=True,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)

    def lines(self, first: int, end: int) -> None:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(f"{first} {end}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ok"

    def close(self) -> str:
        """Its stderr, where logging reports the errors of a handler."""
        assert self.proc.stdin
        self.proc.stdin.close()
        assert self.proc.wait(30) == 0
        return self.errors.read_text(encoding="utf-8", errors="replace")


def numbered(path: Path) -> list[int]:
    return [int(n) for n in re.findall(r"line (\d{5}) x", path.read_text(encoding="utf-8"))] if path.exists() else []


def logged(log_dir: Path) -> tuple[list[int], str]:
    """The numbered lines in all files, oldest file first, and the whole text."""
    files = [log_dir / f"worker.log.{i}" for i in range(BACKUPS, 0, -1)] + [log_dir / "worker.log"]
    text = "".join(f.read_text(encoding="utf-8") for f in files if f.exists())
    return [int(n) for n in re.findall(r"line (\d{5}) x", text)], text


def test_a_reader_holding_worker_log_costs_no_line_and_no_backup(tmp_path):
    logger = Logger(tmp_path)
    log_dir = tmp_path / "logs"
    try:
        logger.lines(0, 60)  # several rotations: worker.log.1 .. .3 exist
        second_oldest = numbered(log_dir / "worker.log.2")
        assert second_oldest and (log_dir / f"worker.log.{BACKUPS}").exists()
        # Held as a person following the log holds it: opened for reading (on Windows without
        # FILE_SHARE_DELETE, so it cannot be renamed).
        with open(log_dir / "worker.log", "rb") as reader:
            logger.lines(60, 210)
            assert reader.read(1)
        with open(log_dir / "worker.log.2", "rb"):  # then a backup is held: it must not be overwritten
            logger.lines(210, 230)
        logger.lines(230, 240)  # nothing held: the postponed rotation goes through
    finally:
        errors = logger.close()
    numbers, text = logged(log_dir)
    assert "Logging error" not in errors, errors[-3000:]
    assert numbers == list(range(numbers[0], 240)), "a line was lost or written twice"
    assert not (log_dir / "worker.log.rotating").exists()
    if sys.platform == "win32":
        # Every line since the hold began is kept, and of the older backups only the oldest went,
        # aged out by the one rotation that could run once nothing was held.
        assert numbers[0] == second_oldest[0], (numbers[:3], second_oldest[:3])
        assert text.count("log rotation postponed: worker.log is held open by another program") == 1, text[-3000:]
        assert text.count("log rotated after") == 1
