"""The Hive worker: ``python main.py`` (or worker.exe). See README.md.

Path of a task: server -> supervisor/net/claimer.py -> supervisor/arbiter.py ->
supervisor/pool/pool.py -> executor/process.py -> supervisor/net/submitter.py -> server.
"""

from __future__ import annotations

import multiprocessing

if __name__ == "__main__":
    # Before anything else: in the frozen exe every executor re-enters here, and
    # without this the one-file exe spawns itself endlessly.
    multiprocessing.freeze_support()
    # Frozen one-file build: die with the bootloader when it is killed hard (docs/release.md).
    from supervisor.frozen import remember_unpacked, tether_to_bootloader  # noqa: E402

    tether_to_bootloader()
    remember_unpacked()  # to tell a temp cleaner's work from a bad release (exit status 5)

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:
    from devserver import HiveDevServer
    from supervisor.settings import Settings

EXIT_BAD_SETTINGS = 2
EXIT_ALREADY_RUNNING = 3
# 5: the one-file binary's unpacked files were deleted while it ran (supervisor/frozen.py, EXIT_UNPACKED_GONE)


def build_parser() -> argparse.ArgumentParser:
    from supervisor.settings import SPECS

    p = argparse.ArgumentParser(prog="worker", description="The Hive worker: claims tasks, runs them, posts results.")
    mode = p.add_argument_group("modes")
    mode.add_argument("--version", action="store_true", help="print the version and exit")
    mode.add_argument("--sha256", metavar="FILE", help="print FILE's SHA-256 (updater.bat's check where certutil fails)")
    mode.add_argument("--print-config", action="store_true", help="print the effective settings as TOML and exit")
    mode.add_argument("--status", action="store_true", help="print the running worker's status and exit")
    mode.add_argument("--self-test", action="store_true", help="import every task, start one executor, exit 0 if fine")
    mode.add_argument("--run", metavar="TASK", help="run one task locally (no server) and print its result")
    mode.add_argument("--params", default="{}", help="with --run: JSON object, or @file.json")
    mode.add_argument("--dev", action="store_true", help="developer mode: hot-reload tasks/ and config.py, verbose")
    p.add_argument("--home", help="the worker's home folder (default: beside the exe / main.py; env HIVE_HOME)")
    p.add_argument("--config", help="use this Python file instead of config.py (it may `from config import *`)")
    p.add_argument("--server", dest="server_url", metavar="URL", help="Hive API root, e.g. http://host:3010/api")
    p.add_argument("--embedded-server", action="store_true",
                   help="serve a local demo Hive server instead of any server URL (development; from source "
                        "also the default when no server URL is given, never in worker.exe)")
    settings = p.add_argument_group("settings (each also HIVE_<NAME> in the environment or <name> in worker.toml)")
    for spec in SPECS:
        if spec.key == "server_url":
            continue
        settings.add_argument(spec.flag, dest=spec.key, metavar=spec.kind.__name__.upper(), help=spec.help or None)
    return p


def _parse_params(text: str) -> object:
    import orjson

    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read params file: {exc}") from None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"--params is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"--params must be a JSON object, got {type(value).__name__}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, load config and settings, run the one mode asked for."""
    args = build_parser().parse_args(argv)
    from config import WORKER_VERSION

    if args.version:
        print(WORKER_VERSION)
        return 0
    if args.sha256:
        return _print_sha256(args.sha256)

    from supervisor import home as home_mod
    from supervisor import logs
    from supervisor.status import render

    home = home_mod.resolve_home(args.home)
    try:
        settings, registry, version = _load(args, home)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    if args.print_config:
        print(settings.to_toml(), end="")
        return 0
    # Settings are read: executors get them explicitly, so nothing the operator put in the
    # environment (a server URL, later a token) is inherited by task code.
    for name in [n for n in os.environ if n.startswith("HIVE_") and not n.startswith("HIVE_INTERNAL_")]:
        del os.environ[name]
    if args.status:
        print(render(home))
        return 0

    logs.setup(home, settings.log_level, settings.log_max_mb, settings.log_backups,
               console_level="DEBUG" if args.dev else None)
    from supervisor import frozen, oneshot

    if frozen.OUTCOME is not None:
        logging.getLogger("hive").log(*frozen.OUTCOME)
    if args.run:
        try:
            params = _parse_params(args.params)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_SETTINGS
        return oneshot.run_local(settings, args.config, args.run, params, registry, version)
    if args.self_test:
        return oneshot.self_test(settings, args.config, registry, version)
    return _serve(args, settings, registry, version, home)


def _print_sha256(path: str) -> int:
    import hashlib

    try:
        with open(path, "rb") as f:
            print(hashlib.file_digest(f, "sha256").hexdigest())
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    return 0


def _load(args: argparse.Namespace, home: Path) -> tuple[Settings, dict, str]:
    """(settings, task registry, version); ValueError with the operator's one line."""
    from config import WORKER_VERSION
    from executor.registry import load_config, registry_of
    from supervisor import settings as settings_mod

    try:
        config_module = load_config(args.config)
        registry = registry_of(config_module)
    except Exception as exc:  # noqa: BLE001 - a broken config is an operator error: say it and stop
        raise ValueError(f"cannot load {args.config or 'config.py'}: {type(exc).__name__}: {exc}") from None
    version = getattr(config_module, "WORKER_VERSION", WORKER_VERSION)
    flags = {s.key: getattr(args, s.key) for s in settings_mod.SPECS if getattr(args, s.key, None) is not None}
    try:
        return settings_mod.load(config_module, home, flags, baked=settings_mod.baked_path()), registry, version
    except settings_mod.SettingsError as exc:
        raise ValueError(str(exc)) from None


def _serve(args: argparse.Namespace, settings: Settings, registry: dict, version: str, home: Path) -> int:
    """The worker itself: one per home, against the Hive server (or an embedded one)."""
    from supervisor import home as home_mod
    from supervisor.arbiter import Arbiter
    from supervisor.identity import IdentityError, worker_id_for

    if sys.platform == "win32":
        from executor.sandbox import no_crash_dialogs

        no_crash_dialogs()  # unattended: a crash must end the process, never wait behind a dialog
    frozen = bool(getattr(sys, "frozen", False))
    try:
        use_embedded = wants_embedded(settings.server_url, frozen, args.embedded_server)
    except ValueError as exc:  # a fleet PC without its server: say so where someone will look, and stop
        logging.getLogger("hive").error("cannot start: %s", exc)
        return EXIT_BAD_SETTINGS
    instance_lock = home_mod.lock_home(home)  # held until this process ends, however it ends
    if instance_lock is None:
        print(f"error: another worker is already running in {home}", file=sys.stderr)
        return EXIT_ALREADY_RUNNING
    try:
        worker_id = worker_id_for(home, version)
    except IdentityError as exc:  # a worker that could never talk to the server must not look alive
        logging.getLogger("hive").error("cannot start: %s", exc)
        return EXIT_BAD_SETTINGS
    embedded = None
    if use_embedded:
        embedded, settings = _embedded_server(home, settings, frozen)
    arbiter = Arbiter(settings, worker_id, version, set(registry), config_path=args.config, debug=args.dev)
    if args.dev:
        from supervisor.reloader import attach

        attach(arbiter, args.config)
    try:
        return arbiter.run()
    finally:
        if embedded is not None:
            embedded.stop()


NO_SERVER = ("no server URL: this binary was built without its fleet's (python -m release.build --server-url) "
             "and none is given (--server URL, HIVE_SERVER_URL or server_url in worker.toml beside it); "
             "--embedded-server runs a local demo server instead")


def wants_embedded(server_url: str, frozen: bool, asked: bool) -> bool:
    """Whether to serve the embedded demo server: when asked (--embedded-server), or from source
    when no server URL is given (a newcomer's ``python main.py``). A frozen worker without a server
    URL is a fleet PC that lost its server (a dev build, or a 1.0.x PC's watcher starting it bare):
    demo tasks forever would hide that, so ValueError with the one line to show instead."""
    if asked:
        return True
    if server_url:
        return False
    if frozen:
        raise ValueError(NO_SERVER)
    return True


def _embedded_server(home: Path, settings: Settings, frozen: bool) -> tuple[HiveDevServer, Settings]:
    from devserver import start_demo

    embedded = start_demo(str(home / "devserver.sqlite"))
    settings = settings.overridden("embedded local dev server", server_url=embedded.url)
    if settings.sources["no_task_sleep"] == "config.py":
        # Locally enqueued tasks should start within seconds, not after the fleet's 180 s.
        settings = settings.overridden("embedded local dev server", no_task_sleep=2.0)
    # A PC with only worker.exe has no devserver command to enqueue with: name it only from source.
    more = "" if frozen else f"; enqueue more with: python -m devserver enqueue TYPE --db {home / 'devserver.sqlite'}"
    logging.getLogger("hive").warning(
        "serving an embedded local Hive server at %s with demo tasks (development only, not the Hive)%s",
        embedded.url, more)
    return embedded, settings


if __name__ == "__main__":
    sys.exit(main())
