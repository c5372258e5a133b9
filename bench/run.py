"""Every benchmark of the worker in one command: one table, also written to docs/benchmarks.md.

    python bench/run.py            # full run, about 15-20 minutes on 2 cores
    python bench/run.py --quick    # fewer repeats and shorter windows, about 5 minutes

Needs (it installs nothing itself and says what is missing):
    apt-get install -y redis-server          # Debian's Redis, started and stopped by the benchmark
    pip install -r requirements-bench.txt    # Celery, redis, pebble, py-spy (besides requirements.txt)

Parts: 1 dispatch (bench_dispatch.py), 2 end to end over HTTP (bench_e2e.py),
3 footprint (bench_footprint.py), 4 scaling (bench_scaling.py), 5 limits
(bench_limits.py), 6 the other issues' benchmarks (bench_prom.py, bench_reload.py,
bench_frozen.py, each run only if present), 7 prom_pars with a real Chromium
(bench_browser.py: needs requirements-browser.txt and Debian's chromium + chromium-driver). Every figure is printed beside a
baseline measured in the same run, as a ratio; figures are medians over repeats.
Options: --only 1,2 runs some parts (then docs/benchmarks.md is left alone unless
--write); --no-profile skips py-spy; --no-whatif skips the what-if runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
DOC = ROOT / "docs" / "benchmarks.md"
REQUIREMENTS = ROOT / "requirements-bench.txt"
NOTES = BENCH / "analysis.md"


# ---- requirements ----------------------------------------------------------------------------------

def missing_requirements() -> list[str]:
    problems = []
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = re.match(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*==\s*([^\s;]+)", line)
        if not m:
            continue
        name, want = m.group(1), m.group(3)
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{name}=={want} is not installed")
            continue
        if have != want:
            problems.append(f"{name} is {have}, requirements-bench.txt pins {want}")
    for module in ("requests", "psutil", "orjson"):
        try:
            importlib.metadata.version(module)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{module} (requirements.txt) is not installed")
    return problems


def check_requirements() -> bool:
    problems = missing_requirements()
    redis = shutil.which("redis-server")
    if not problems and redis:
        return True
    print("bench/run.py needs a few things first:", file=sys.stderr)
    for p in problems:
        print(f"  - {p}", file=sys.stderr)
    if not redis:
        print("  - redis-server (Debian's package) is not on PATH", file=sys.stderr)
    print("\nInstall them with (as root, in this project's virtualenv):", file=sys.stderr)
    if not redis:
        print("  apt-get update && apt-get install -y redis-server", file=sys.stderr)
    if problems:
        print("  pip install -r requirements.txt -r requirements-bench.txt", file=sys.stderr)
    return False


# ---- running the parts --------------------------------------------------------------------------------

def run_script(argv: list[str], timeout: float) -> tuple[int, str, str]:
    """Run one benchmark script; its stderr (progress) is shown as it comes and its tail kept."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, *argv], cwd=BENCH, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)
    tail: list[str] = []

    def tee() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            sys.stderr.write(line)
            sys.stderr.flush()
            tail.append(line)
            del tail[:-40]

    reader = threading.Thread(target=tee, daemon=True)
    reader.start()
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the script and every worker / server it started
        except OSError:
            proc.kill()

    timer = threading.Timer(timeout, expire)
    timer.start()
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.wait()
    timer.cancel()
    reader.join(5)
    if expired.is_set():
        return -1, out, f"timed out after {timeout:.0f} s"
    print(f"  ({argv[0]} took {time.monotonic() - started:.0f} s, exit {proc.returncode})", file=sys.stderr,
          flush=True)
    return proc.returncode, out, "".join(tail)


def own_part(script: str, quick: bool, extra: list[str], timeout: float) -> list[dict[str, Any]]:
    code, out, err = run_script([script, "--json", *(["--quick"] if quick else []), *extra], timeout)
    items = []
    for line in out.splitlines():
        if line.startswith("ROW ") or line.startswith("NOTE "):
            items.append(json.loads(line.split(" ", 1)[1]))
    if code != 0:
        tail = (err.strip().splitlines() or ["no output"])[-1]
        items.append(failed_row(script, f"exit {code}: {tail}"))
    return items


def failed_row(part: str, why: str) -> dict[str, Any]:
    return {"part": part, "measure": "FAILED", "ours": why[:300], "unit": "", "baseline": None, "baseline_label": "",
            "ratio": None, "target": "", "met": False, "note": ""}


def info_row(part: str, measure: str, ours: Any, unit: str = "", baseline: Any = None, label: str = "",
             target: str = "", met: bool | None = None, note: str = "") -> dict[str, Any]:
    ratio = ours / baseline if isinstance(ours, (int, float)) and isinstance(baseline, (int, float)) and baseline \
        else None
    return {"part": part, "measure": measure, "ours": ours, "unit": unit, "baseline": baseline,
            "baseline_label": label, "ratio": ratio, "target": target, "met": met, "note": note}


def prom_part(quick: bool) -> list[dict[str, Any]]:
    script = "bench_prom.py"
    if not (BENCH / script).exists():
        return []
    args = ["--products", "60", "--rounds", "1"] if quick else ["--products", "200", "--rounds", "3"]
    code, out, err = run_script([script, *args], 900)
    if code != 0:
        return [failed_row("6 prom_pars", f"{script} exit {code}: {(err.strip().splitlines() or [''])[-1]}")]
    limit = _prom_memory_limit()
    parse = {m.group(1): float(m.group(2)) for m in re.finditer(r"parse only \((.+?)\): (\d+) pages/s", out)}
    rows = []
    for m in re.finditer(r"prom_pars \((.+?)\): (\d+) products/s, peak RSS (\d+) MB", out):
        kind, rate, peak = m.group(1), float(m.group(2)), float(m.group(3))
        rows.append(info_row("6 prom_pars", f"products/s per executor, fetch on loopback + parse ({kind})", rate,
                             "products/s", parse.get(kind), "parse only (no fetch)",
                             note="bench/bench_prom.py; the ratio is the share of the time spent parsing"))
        rows.append(info_row("6 prom_pars", f"peak RSS of one prom_pars task ({kind})", peak, "MB", limit,
                             "TASK_LIMITS memory_mb for prom_pars", target="below its memory limit",
                             met=limit is None or peak < limit))
    for m in re.finditer(r"(products per minute per executor, .+?): ([\d.]+) \((.+?)\)", out):
        rows.append(info_row("6 prom_pars", m.group(1), float(m.group(2)), "products/min",
                             note=f"bench/bench_prom.py; {m.group(3)}"))
    if not rows:
        rows = [info_row("6 prom_pars", line, "", note="bench/bench_prom.py") for line in out.splitlines() if line]
    return rows


def _prom_memory_limit() -> float | None:
    sys.path.insert(0, str(ROOT))
    try:
        import config

        return float(config.TASK_LIMITS.get("prom_pars", {}).get("memory_mb") or config.TASK_MEMORY_LIMIT_MB)
    except Exception:  # noqa: BLE001 - only a label
        return None


def reload_part(quick: bool) -> list[dict[str, Any]]:
    script = "bench_reload.py"
    if not (BENCH / script).exists():
        return []
    code, out, err = run_script([script, "--rounds", "4" if quick else "10"], 600)
    if code != 0:
        return [failed_row("6 reload", f"{script} exit {code}: {(err.strip().splitlines() or [''])[-1]}")]
    m = re.search(r"median (\d+) ms, max (\d+) ms over (\d+) saves", out)
    if not m:
        return [info_row("6 reload", line, "") for line in out.splitlines() if line]
    med, worst, n = float(m.group(1)), float(m.group(2)), m.group(3)
    return [info_row("6 reload", "dev mode: save -> first task served by the new code, median", med, "ms", 1000.0,
                     "target", target="< 1000 ms", met=med < 1000, note=f"bench/bench_reload.py, {n} saves"),
            info_row("6 reload", "dev mode: save -> first task served by the new code, max", worst, "ms", 1000.0,
                     "target", target="< 1000 ms", met=worst < 1000)]


def frozen_part(quick: bool) -> list[dict[str, Any]]:
    script = "bench_frozen.py"
    if not (BENCH / script).exists():
        return []
    code, out, err = run_script([script, "--runs", "2" if quick else "5"], 1200)
    if code != 0:
        return [failed_row("6 frozen", f"{script} exit {code}: {(err.strip().splitlines() or [''])[-1]}")]
    rows = []
    for line in out.splitlines():
        line = line.strip()
        if not line or (": idle " in line and "idle total" not in line):
            continue  # per-process memory lines: the totals say it
        verdict = None
        if re.search(r"target .*: met\)?", line):
            verdict = True
        elif "MISSED" in line:
            verdict = False
        rows.append(info_row("6 frozen", line, "", met=verdict, target="see line" if verdict is not None else "",
                             note="bench/bench_frozen.py"))
    return rows


# ---- the table and the document ------------------------------------------------------------------------------

def fmt(value: Any, unit: str = "") -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        return value
    if value != value:
        return "n/a"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    elif abs(value) >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".strip()


def verdict(r: dict[str, Any]) -> str:
    if r["met"] is True:
        return "met"
    if r["met"] is False:
        return "**MISSED**" if r["measure"] != "FAILED" else "**FAILED**"
    return ""


def table(rows: list[dict[str, Any]]) -> str:
    out = ["| part | measure | ours | baseline (same run) | ours ÷ baseline | target | | notes |",
           "| --- | --- | ---: | --- | ---: | --- | --- | --- |"]
    for r in rows:
        base = f"{fmt(r['baseline'], r['unit'])} ({r['baseline_label']})" if r["baseline"] is not None else ""
        ratio = f"{r['ratio']:.2f}×" if r["ratio"] is not None else ""
        cells = [r["part"], r["measure"], fmt(r["ours"], r["unit"]), base, ratio, r["target"], verdict(r),
                 r["note"]]
        out.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(out)


def machine_text(info: dict[str, Any]) -> str:
    return (f"{info['cpu']}, {info['cores']} cores, {info['ram_gb']:.0f} GB RAM, Python {info['python']}, "
            f"{info['os']}" + (f", virtualised ({info['virtualised']})" if info["virtualised"] else ""))


def document(rows: list[dict[str, Any]], notes: list[dict[str, Any]], info: dict[str, Any], quick: bool,
             started: dt.datetime, minutes: float, load: tuple[str, str], argv: list[str]) -> str:
    command = "python bench/run.py" + (" --quick" if quick else "")
    missed = [r for r in rows if r["met"] is False]
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `{command}` on {started:%Y-%m-%d %H:%M} UTC ({minutes:.1f} min); do not edit by hand, "
        "rerun it. Setup: `apt-get install -y redis-server` and `pip install -r requirements-bench.txt`.",
        "",
        f"**Machine:** {machine_text(info)}. Load average (1 min) {load[0]} at the start, {load[1]} at the end: "
        "these machines are shared and noisy, so every figure stands beside a baseline measured in the same run "
        "and the ratio is what to compare between runs.",
        "",
        "How to read: figures are medians over repeats; where ours and a baseline were measured back to back in "
        "each repeat, the ratio is the median of the per-repeat ratios (so it can differ slightly from the ratio "
        "of the two medians shown). For throughput a ratio above 1 is better for us; for time, CPU and memory, "
        "below 1. The target column is the issue's target; met / MISSED is judged on the figure it names.",
        "",
        f"Targets missed in this run: {len(missed)} of {sum(1 for r in rows if r['met'] is not None)}.",
        "",
        table(rows),
        "",
    ]
    for n in notes:
        lines += [f"## {n['title']}", "", n["text"], ""]
    if NOTES.exists():
        lines += [NOTES.read_text().strip(), ""]
    lines += ["## How each part is measured", ""]
    for script in ("bench_dispatch.py", "bench_e2e.py", "bench_footprint.py", "bench_scaling.py", "bench_limits.py"):
        doc = _docstring(BENCH / script)
        if doc:
            lines += [f"**bench/{script}**", "", doc, ""]
    lines += ["Part 6 runs the other issues' scripts as they are (`bench/bench_prom.py`, `bench/bench_reload.py`, "
              "`bench/bench_frozen.py`) and quotes their figures.", ""]
    return "\n".join(lines)


def _docstring(path: Path) -> str:
    import ast

    try:
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    except (OSError, SyntaxError):
        return ""
    parts = doc.split("\n\n")
    body = [p for p in parts[1:] if not p.strip().startswith("python bench/")]
    return "\n\n".join(body).strip()


def loadavg() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats, shorter windows (about 5 minutes)")
    ap.add_argument("--only", default="", help="comma-separated parts to run, e.g. 1,2 (default: all)")
    ap.add_argument("--write", action="store_true", help="with --only: still write docs/benchmarks.md")
    ap.add_argument("--no-profile", action="store_true", help="skip the py-spy profile of the supervisor")
    ap.add_argument("--no-whatif", action="store_true", help="skip the what-if runs of part 2")
    args = ap.parse_args()
    if not check_requirements():
        return 2
    sys.path.insert(0, str(BENCH))
    from benchkit import machine

    only = {p.strip() for p in args.only.split(",") if p.strip()}
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    load_start = loadavg()
    info = machine()
    print(f"bench/run.py{' --quick' if args.quick else ''}: {machine_text(info)}; load {load_start}", flush=True)
    e2e_extra = (["--no-profile"] if args.no_profile else []) + (["--no-whatif"] if args.no_whatif else [])
    parts = [
        ("1", lambda: own_part("bench_dispatch.py", args.quick, [], 900)),
        ("2", lambda: own_part("bench_e2e.py", args.quick, e2e_extra, 1800)),
        ("3", lambda: own_part("bench_footprint.py", args.quick, [], 900)),
        ("4", lambda: own_part("bench_scaling.py", args.quick, [], 900)),
        ("5", lambda: own_part("bench_limits.py", args.quick, [], 900)),
        ("6", lambda: prom_part(args.quick) + reload_part(args.quick) + frozen_part(args.quick)),
        ("7", lambda: own_part("bench_browser.py", args.quick, [], 900)),  # skips itself without Chromium
    ]
    items: list[dict[str, Any]] = []
    for name, run in parts:
        if only and name not in only:
            continue
        print(f"== part {name}", file=sys.stderr, flush=True)
        try:
            items += run()
        except Exception as exc:  # noqa: BLE001 - one broken part must not lose the others
            items.append(failed_row(name, f"{type(exc).__name__}: {exc}"))
    rows = [i for i in items if "title" not in i]
    notes = [i for i in items if "title" in i]
    minutes = (time.monotonic() - t0) / 60
    text = document(rows, notes, info, args.quick, started, minutes, (load_start, loadavg()), sys.argv)
    print()
    print(table(rows))
    for n in notes:
        print(f"\n## {n['title']}\n\n{n['text']}")
    print(f"\n{minutes:.1f} min; {sum(1 for r in rows if r['met'] is False)} target(s) missed")
    if not only or args.write:
        DOC.parent.mkdir(parents=True, exist_ok=True)
        DOC.write_text(text)
        print(f"written to {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
