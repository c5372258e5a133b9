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
    from supervisor.host.frozen import remember_unpacked, tether_to_bootloader  # noqa: E402

    tether_to_bootloader()
    remember_unpacked()  # to tell a temp cleaner's work from a bad release (exit status 6)

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, NoReturn  # noqa: E402

if TYPE_CHECKING:
    from devserver import HiveDevServer
    from supervisor.settings import Settings

EXIT_BAD_SETTINGS = 2
EXIT_ALREADY_RUNNING = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl+C


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (the usage block would bury it) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        from supervisor.settings import closest

        hint = "see --help"
        if message.startswith("unrecognized arguments:"):
            flags = dict.fromkeys(self._option_string_actions)
            close = next((c for word in message.split()[2:] if word.startswith("--")
                          and (c := closest(word.split("=")[0], flags))), None)
            hint = f"did you mean {close}? see --help" if close else hint
        self.exit(EXIT_BAD_SETTINGS, f"error: {message} ({hint})\n")


def build_parser() -> argparse.ArgumentParser:
    import json

    import config
    from supervisor.settings import SPECS

    p = _Parser(prog="worker", allow_abbrev=False,  # --pool 2 must not quietly mean --pool-size 2
                description="The Hive worker: claims tasks, runs them, posts results. Without a mode it runs "
                            "until Ctrl+C / SIGTERM.",
                epilog="Exit status: 0 done, 1 a task or self-test failed, 2 bad settings or arguments, 3 another "
                       "worker runs in this home, 130 interrupted; --status: 0 running, 1 hung, 3 not running, "
                       "4 unknown. Docs: README.md, docs/settings.md.")
    mode = p.add_argument_group("modes (at most one)").add_mutually_exclusive_group()
    mode.add_argument("--version", action="store_true", help="print the version and exit")
    mode.add_argument("--sha256", metavar="FILE", help="print FILE's SHA-256 (updater.bat's check where certutil fails)")
    mode.add_argument("--print-config", action="store_true",
                      help="print the effective settings as TOML, each with its source, and exit")
    mode.add_argument("--status", action="store_true",
                      help="print the worker's status in this home and exit (0 running, 1 hung, 3 not running, "
                           "4 unknown)")
    mode.add_argument("--self-test", action="store_true", help="import every task, start one executor, exit 0 if fine")
    mode.add_argument("--run", metavar="TASK", help="run one task locally (no server) and print its result")
    mode.add_argument("--dev", action="store_true",
                      help="developer mode: reload tasks/ and config.py on save, short pause after a failed task")
    p.add_argument("--params", metavar="JSON", help="with --run: the task's params, a JSON object or @file.json "
                                                    "(default: {})")
    p.add_argument("--home", metavar="DIR",
                   help="the worker's home folder (default: beside the exe / main.py; env HIVE_WORKER_HOME)")
    p.add_argument("--config", metavar="FILE",
                   help="use this Python file instead of config.py (it may `from config import *`)")
    p.add_argument("--embedded-server", action="store_true",
                   help="serve a local demo Hive server instead of any server URL (development; from source "
                        "also the default when no server URL is given, never in worker.exe)")
    settings = p.add_argument_group("settings (each also HIVE_WORKER_<NAME> in the environment or <name> in "
                                    "worker.toml; defaults are config.py's)")
    for spec in SPECS:
        flags = [spec.flag, "--server"] if spec.key == "server_url" else [spec.flag]
        default = getattr(config, spec.name, None)
        shown = (f"{default:g}" if isinstance(default, float) else json.dumps(default, separators=(",", ":"))
                 if isinstance(default, (dict, str, bool)) else ",".join(default) if isinstance(default, list)
                 else str(default))
        metavar = {"bool": "true|false", "list": "A,B", "dict": "TABLE"}.get(spec.kind.__name__, "VALUE")
        if spec.key == "server_url":
            metavar = "URL"
        elif spec.kind in (int, float):
            metavar = (spec.unit or "number").upper().replace(" ", "_")
        text = f"{spec.help}; default {shown}{' ' + spec.unit if spec.unit in UNITS else ''}"
        settings.add_argument(*flags, dest=spec.key, metavar=metavar, help=text.replace("%", "%%"))  # argparse's %
    return p


# Units said after a default ("default 180 seconds"); the others name the kind of value, shown as the metavar.
UNITS = {"seconds", "CPU seconds", "MB", "bytes", "minutes", "percent", "days"}


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
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.params is not None and not args.run:
        parser.error("--params needs --run TASK (it is the params of that one local run)")
    from config import WORKER_VERSION

    if args.version:
        print(WORKER_VERSION)
        return 0
    if args.sha256:
        return _print_sha256(args.sha256)

    from supervisor import settings as settings_mod
    from supervisor.host import home as home_mod
    from supervisor.host import logs
    from supervisor.observe.status import report

    try:
        # --status and --print-config only read: a home they may not write to is still theirs to read.
        home = home_mod.resolve_home(args.home, write=not (args.status or args.print_config))
    except home_mod.HomeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    try:
        settings, registry, version = _load(args, home)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    if args.print_config:
        print(settings.to_toml(), end="")
        for line in settings_mod.environment_warnings(os.environ):
            print(f"warning: {line}", file=sys.stderr)
        return 0
    warnings = settings_mod.environment_warnings(os.environ)  # logged once the log is set up
    # Settings are read: executors get them explicitly, so nothing the operator put in the
    # environment (a server URL, later a token) is inherited by task code. Other programs'
    # HIVE_* variables (Apache Hive's) are theirs: left alone.
    for name in settings_mod.own_env_names(os.environ):
        del os.environ[name]
    if args.status:
        text, code = report(home)  # exit codes as `systemctl status`: 0 running, 1 hung, 3 not running, 4 unknown
        print(text)
        return code

    logs.setup(home, settings.log_level, settings.log_max_mb, settings.log_backups, dev=args.dev)
    from supervisor import oneshot
    from supervisor.host import frozen

    for line in warnings:
        logging.getLogger("hive.settings").warning("%s", line)
    if frozen.OUTCOME is not None:
        logging.getLogger("hive").log(*frozen.OUTCOME)
    if args.run:
        try:
            params = _parse_params(args.params or "{}")
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
    from supervisor.arbiter import build_arbiter
    from supervisor.host import home as home_mod
    from supervisor.host.identity import IdentityError, worker_id_for

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
    if args.dev:
        from supervisor.reloader import dev_settings

        settings = dev_settings(settings)
    arbiter = build_arbiter(settings, worker_id, version, set(registry), config_path=args.config, debug=args.dev)
    if args.dev:
        from supervisor.reloader import attach

        attach(arbiter, args.config)
    try:
        return arbiter.run()
    finally:
        if embedded is not None:
            embedded.stop()


NO_SERVER = ("no server URL: this binary was built without its fleet's (python -m release.build --server-url) "
             "and none is given (--server-url URL, HIVE_WORKER_SERVER_URL or server_url in worker.toml beside it); "
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
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl+C outside the worker's own handling (--run, --self-test, start-up)
        print("interrupted (Ctrl+C)", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
