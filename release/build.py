"""Build the one-file worker binary for this platform: ``python -m release.build``.

    python -m release.build --server-url URL --root-key KEY [--root-key KEY2 ...]
                            [--distpath DIR] [--workpath DIR] [--specpath DIR] [--allow-unpinned]
    python -m release.build --dev-build ...     (no fleet settings: never release it)

A release carries its fleet: ``--server-url`` (the fleet's Hive API root; ``@FILE`` reads it
from a file, so that a user:password in it stays out of the shell's history) and the ROOT
public keys the fleet trusts (``--root-key``, repeatable; they delegate the release keys,
docs/release.md, "Keys") are baked into the binary as
fleet.toml, the binary's defaults below worker.toml, HIVE_* and flags (supervisor/settings.py).
A 1.0.x PC that installs the release through its own update path starts it with no arguments
and no worker.toml: these are all it has. Without them the build refuses, unless
``--dev-build`` says it is not for a fleet (such a binary exits 2 when no server URL is given).

Produces ``dist/worker.exe`` (Windows) or ``dist/worker`` (Linux, macOS) from
``main.py`` with PyInstaller, then checks the result before calling it built:

1. the versions pinned in requirements.txt, and PyInstaller's in requirements-dev.txt,
   are the ones installed (the frozen build is made from exactly these);
2. every third-party or project module that the worker's source (main.py, config.py,
   tasks/, executor/, supervisor/, devserver/) imports, at the top or lazily inside
   functions (e.g. selectolax in tasks/prom/parse.py), is inside the binary;
   optional modules not installed here (selenium) are listed;
3. ``worker --version`` prints config.WORKER_VERSION;
4. ``worker --self-test`` passes (an executor imports every registered task);
5. ``worker --print-config`` shows the fleet settings as coming from the build;
6. ``updater.bat`` and ``updater.sh`` are in the binary, the repo's bytes (data files at the
   bundle's root, ``--add-data``: supervisor/update/scripts.py reads them there).

Module collection is left to PyInstaller's import analysis, exactly as for the
seed's plain ``pyinstaller --onefile --clean main.py --name worker``, so that
command gives a working binary too (one without the updater scripts: it refuses updates). What this build adds (docs/release.md):
``--strip`` (POSIX: the interpreter's debug symbols are most of the size),
``--hide-console hide-early`` (Windows: no console window when Task Scheduler
starts it; a console it was started from is kept), ``--runtime-tmpdir`` (Windows: unpack
under %LOCALAPPDATA%\\HiveWorker, out of %TEMP%'s cleaners; RUNTIME_TMPDIR) and
release/hooks/hook-selectolax.py (leaves out selectolax's C sources). Neither
adds a module, so what the plain command bundles is a superset of this build's.
(The tie to the bootloader is in main.py itself: supervisor/host/frozen.py.)
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NAME = "worker"
HOOKS = ROOT / "release" / "hooks"  # hook-*.py override PyInstaller's; rth_*.py are runtime hooks
SCRIPTS = ("updater.bat", "updater.sh")  # the updater scripts, data files of every build (supervisor/update/scripts.py)


def binary_name() -> str:
    return NAME + (".exe" if os.name == "nt" else "")


# Where the Windows one-file binary unpacks, instead of %TEMP% (temp cleaners such as Storage Sense and
# Disk Cleanup delete old files there, and antivirus scanners watch programs started from it). The
# bootloader expands %VARIABLES% here but resolves a relative path against the working directory of
# whoever started it (System32 for Task Scheduler, %TEMP% for the updater), where it may not be able
# to write and would then not start at all; and no variable names the executable's folder. So: a
# folder of the user's own profile that always exists. The POSIX bootloader expands nothing (a
# fixed absolute path is no better than $TMPDIR, /tmp or systemd's PrivateTmp), so only Windows.
RUNTIME_TMPDIR = r"%LOCALAPPDATA%\HiveWorker\unpacked"


def pyinstaller_args(distpath: Path, workpath: Path, specpath: Path, fleet_file: Path | None = None) -> list[str]:
    args = [
        str(ROOT / "main.py"), "--name", NAME, "--onefile", "--clean", "--noconfirm", "--log-level", "WARN",
        "--distpath", str(distpath), "--workpath", str(workpath), "--specpath", str(specpath),
        "--additional-hooks-dir", str(HOOKS),
        "--noupx",  # UPX-packed exes are a classic antivirus false positive
    ]
    for script in SCRIPTS:  # at the bundle's root, where supervisor/update/scripts.py reads them
        args += ["--add-data", f"{ROOT / script}{os.pathsep}."]
    if fleet_file is not None:  # at the bundle's root, where supervisor/settings.baked_path() looks
        args += ["--add-data", f"{fleet_file}{os.pathsep}."]
    if os.name == "nt":
        args += ["--hide-console", "hide-early", "--runtime-tmpdir", RUNTIME_TMPDIR]
    elif shutil.which("strip"):
        args += ["--strip"]
    else:
        print("note: no `strip` command (binutils): the binary keeps its debug symbols and is larger", file=sys.stderr)
    return args


def check_pins() -> list[str]:
    """What goes into the binary (requirements.txt, and PyInstaller itself) but differs from its pin."""
    problems = []
    for req_file, only in (("requirements.txt", None), ("requirements-dev.txt", {"pyinstaller"})):
        for line in (ROOT / req_file).read_text(encoding="utf-8").splitlines():
            m = re.match(r"^\s*([A-Za-z0-9_.\-]+)==([^\s;#]+)", line)
            if not m or (only is not None and m.group(1).lower() not in only):
                continue
            name, wanted = m.groups()
            try:
                have = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                have = "not installed"
            if have != wanted:
                problems.append(f"{name}: {req_file} pins {wanted}, installed {have}")
    return problems


SOURCE_PACKAGES = ("tasks", "executor", "supervisor", "common", "devserver")
# Never imported by the worker: the dev server's queue as an app for real HTTP servers (docs/interop.md).
NOT_THE_WORKER = ("devserver/wsgi.py", "devserver/asgi.py")


def source_files() -> list[Path]:
    """The worker's own source: what PyInstaller analyses starting from main.py."""
    files = [ROOT / "main.py", ROOT / "config.py"]
    for package in SOURCE_PACKAGES:
        files += sorted(f for f in (ROOT / package).rglob("*.py")
                        if f.name != "__main__.py"  # python -m only
                        and f.relative_to(ROOT).as_posix() not in NOT_THE_WORKER)
    return files


def imported_modules(files: list[Path]) -> tuple[set[str], set[str]]:
    """Imports anywhere in these files (top level, functions, TYPE_CHECKING blocks), relative ones resolved.

    Returns (modules, candidates): ``import a.b`` and ``from a.b import c`` give module ``a.b``;
    the latter also gives candidate ``a.b.c``, a module only if it is one (``from tasks import x``).
    """
    modules: set[str] = set()
    candidates: set[str] = set()
    for file in files:
        package = file.resolve().parent.relative_to(ROOT).parts
        tree = ast.parse(file.read_text(encoding="utf-8"), str(file))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[:len(package) - node.level + 1]
                    module = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    module = node.module or ""
                if not module:
                    continue
                modules.add(module)
                candidates.update(f"{module}.{alias.name}" for alias in node.names if alias.name != "*")
    return modules, candidates


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def bundle_report(binary: Path) -> tuple[list[str], list[str]]:
    """(missing, optional): modules the worker's source imports that the binary lacks.

    ``missing`` are installed here but not bundled (a broken build); ``optional`` are not
    installed here at all (so they cannot be bundled: the task must cope without them).
    """
    from PyInstaller.archive.readers import pkg_archive_contents

    contents = pkg_archive_contents(str(binary))
    modules = set(contents)
    # Extension modules are stored as files: selectolax/lexbor.cpython-311-x86_64-linux-gnu.so
    for entry in contents:
        modules.add(entry.replace("\\", "/").split(".", 1)[0].replace("/", "."))
    imported, candidates = imported_modules(source_files())
    missing, optional = [], []
    sys.path.insert(0, str(ROOT))
    try:
        for name in sorted(imported | candidates):
            top = name.split(".", 1)[0]
            if top == "__future__" or top in sys.stdlib_module_names or top in sys.builtin_module_names:
                continue
            if not _installed(name):
                if name in imported:  # a candidate that is no module is just a name (a class, a function)
                    optional.append(name)
            elif name not in modules:
                missing.append(name)
    finally:
        sys.path.remove(str(ROOT))
    return missing, optional


NO_FLEET = ("error: a release carries its fleet: pass --server-url URL (the fleet's Hive API root) and "
            "--root-key KEY (python -m release pubkey ROOTKEYFILE), or --dev-build for a binary no fleet may get")


def fleet_settings(server_url: str | None, root_keys: list[str], dev_build: bool) -> dict[str, Any] | None:
    """The settings to bake into the binary (None for a dev build), checked as the worker checks
    worker.toml. ValueError with the one line to show when a fleet build lacks one or one is bad."""
    from common.safetext import redact_url
    from supervisor.settings import SettingsError, checked

    if dev_build:
        if server_url is not None or root_keys:
            raise ValueError("error: --dev-build carries no fleet settings: drop --server-url/--root-key, "
                             "or drop --dev-build")
        return None
    if server_url and server_url.startswith("@"):
        try:
            server_url = Path(server_url[1:]).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"error: --server-url: cannot read {server_url[1:]}: {exc.strerror}") from None
    if not server_url or not root_keys:
        missing = "--server-url" if not server_url else "--root-key"
        raise ValueError(NO_FLEET.replace("error: ", f"error: no {missing}: ", 1))
    try:
        return checked({"server_url": server_url, "update_root_keys": root_keys}, "fleet settings")
    except SettingsError as exc:
        # The checks quote the bad value: never a password (a URL is redacted, a key has none).
        raise ValueError(f"error: {str(exc).replace(server_url, redact_url(server_url))}") from None


def write_fleet(path: Path, fleet: dict[str, Any]) -> None:
    """The fleet file, private to this account while it exists (it may hold the server's password)."""
    import tomli_w

    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(tomli_w.dumps(fleet))


def baked_config(binary: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(values, sources) a binary shows with nothing around it (an empty home, no HIVE_*, no flags):
    what a PC that has only this file runs with. The server URL is as --print-config shows it
    (credentials redacted)."""
    import tomllib

    with tempfile.TemporaryDirectory(prefix="hive-print-config-") as home:
        got = run_binary(binary, "--print-config", "--home", home)
    if got.returncode != 0:
        raise ValueError(f"{binary} --print-config failed (exit {got.returncode}): {got.stderr.strip()[-500:]}")
    sources = dict(re.findall(r"^# (\w+): from (.*)$", got.stdout, flags=re.M))
    return tomllib.loads(got.stdout), sources


def describe_fleet(values: dict[str, Any]) -> str:
    """One line for the operator: where the binary goes and how many keys it trusts (no password)."""
    from common.safetext import redact_url

    url = redact_url(values.get("server_url") or "") or "NO SERVER URL"
    return f"server {url}, {len(values.get('update_root_keys') or [])} root key(s)"


def frozen_env() -> dict[str, str]:
    """Environment for running a built binary from a Python process: a fresh one-file instance."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HIVE_", "_PYI_", "_MEI"))}
    env["PYINSTALLER_RESET_ENVIRONMENT"] = "1"
    return env


def run_binary(binary: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=timeout, env=frozen_env(),
                          stdin=subprocess.DEVNULL)


def verify(binary: Path, fleet: dict[str, Any] | None = None) -> list[str]:
    """Everything wrong with a built binary (empty: good). Prints what it checked."""
    problems = fleet_problems(binary, fleet) + script_problems(binary)
    missing, optional = bundle_report(binary)
    for name in missing:
        problems.append(f"module {name} is imported by the worker's source but is not in the binary")
    for name in optional:
        print(f"note: {name} is imported but not installed here, so it is not bundled (optional)")
    sys.path.insert(0, str(ROOT))
    try:
        from config import WORKER_VERSION
    finally:
        sys.path.remove(str(ROOT))
    got = run_binary(binary, "--version")
    if got.returncode != 0 or got.stdout.strip() != WORKER_VERSION:
        problems.append(f"--version: exit {got.returncode}, printed {got.stdout.strip()!r}, "
                        f"expected {WORKER_VERSION!r}; {got.stderr.strip()[-500:]}")
    with tempfile.TemporaryDirectory(prefix="hive-selftest-") as home:
        got = run_binary(binary, "--self-test", "--home", home)
    if got.returncode != 0:
        problems.append(f"--self-test: exit {got.returncode}: {(got.stdout + got.stderr).strip()[-1500:]}")
    else:
        print(got.stdout.strip())
    return problems


def script_problems(binary: Path) -> list[str]:
    """Whether the binary carries the updater scripts, byte for byte the repo's (without them it
    refuses every update)."""
    from PyInstaller.archive.readers import CArchiveReader

    archive = CArchiveReader(str(binary))
    problems = []
    for script in SCRIPTS:
        if script not in archive.toc:
            problems.append(f"{script} is not in the binary: it could never update itself")
        elif archive.extract(script) != (ROOT / script).read_bytes():
            problems.append(f"{script} in the binary differs from the repo's")
    return problems


def fleet_problems(binary: Path, fleet: dict[str, Any] | None) -> list[str]:
    """Whether the binary runs with exactly the fleet settings it was built with, as coming from the build."""
    from common.safetext import redact_url
    from supervisor.settings import BAKED_SOURCE

    try:
        values, sources = baked_config(binary)
    except ValueError as exc:
        return [str(exc)]
    problems = []
    for key, wanted in (fleet or {}).items():
        shown = redact_url(wanted) if key == "server_url" else wanted
        if values.get(key) != shown or sources.get(key) != BAKED_SOURCE:
            problems.append(f"{key}: the binary shows {values.get(key)!r} from {sources.get(key)}, "
                            f"not the fleet's from {BAKED_SOURCE}")
    return problems


def build(distpath: Path, workpath: Path, specpath: Path, fleet: dict[str, Any] | None = None) -> Path:
    import PyInstaller.__main__

    from supervisor.settings import FLEET_FILE

    fleet_file = None
    if fleet is not None:
        fleet_file = workpath / FLEET_FILE
        write_fleet(fleet_file, fleet)
    try:
        PyInstaller.__main__.run(pyinstaller_args(distpath, workpath, specpath, fleet_file))
    finally:
        if fleet_file is not None:
            fleet_file.unlink(missing_ok=True)  # it is inside the binary now; no second copy of a password
    return distpath / binary_name()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m release.build", description=__doc__.split("\n\n")[0])
    ap.add_argument("--distpath", type=Path, default=ROOT / "dist", help="where the binary goes (default: dist/)")
    ap.add_argument("--workpath", type=Path, default=ROOT / "build", help="PyInstaller's work folder (default: build/)")
    ap.add_argument("--specpath", type=Path, default=None, help="where the generated .spec goes (default: workpath)")
    ap.add_argument("--allow-unpinned", action="store_true",
                    help="build even if installed packages differ from the pins (not for releases)")
    fleet = ap.add_argument_group("the fleet's settings, baked into the binary (its defaults below worker.toml, "
                                  "HIVE_* and flags)")
    fleet.add_argument("--server-url", metavar="URL|@FILE",
                       help="the fleet's Hive API root, e.g. http://host:3010/api (user:password@ allowed; "
                            "@FILE reads it from FILE)")
    fleet.add_argument("--root-key", metavar="KEY", action="append", default=[],
                       help="a root public key the fleet trusts (base64; repeatable): root keys sign the "
                            "delegation of release keys (docs/release.md, Keys)")
    fleet.add_argument("--dev-build", action="store_true",
                       help="no fleet settings: a binary for tests and labs that needs --server, HIVE_SERVER_URL "
                            "or worker.toml to run (make_release refuses it)")
    args = ap.parse_args(argv)
    try:
        fleet_values = fleet_settings(args.server_url, args.root_key, args.dev_build)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    distpath, workpath = args.distpath.resolve(), args.workpath.resolve()
    specpath = (args.specpath or workpath).resolve()

    pins = check_pins()
    for problem in pins:
        print(f"{'warning' if args.allow_unpinned else 'error'}: {problem}", file=sys.stderr)
    if pins and not args.allow_unpinned:
        print("error: install the pinned versions (pip install -r requirements-dev.txt) or pass --allow-unpinned",
              file=sys.stderr)
        return 2
    started = time.monotonic()
    binary = build(distpath, workpath, specpath, fleet_values)
    took = time.monotonic() - started
    problems = verify(binary, fleet_values)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        print(f"BUILD FAILED CHECKS: {binary}", file=sys.stderr)
        return 1
    size = binary.stat().st_size
    what = f"for the fleet: {describe_fleet(fleet_values)}" if fleet_values else "DEV BUILD, no fleet settings"
    print(f"built {binary} ({size / 1e6:.1f} MB, {size} bytes) in {took:.0f} s, {what}; checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
