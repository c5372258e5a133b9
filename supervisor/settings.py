"""Effective settings: command-line flag > HIVE_WORKER_<NAME> env > worker.toml > the build's fleet settings > config.py.

A frozen exe cannot be edited, so every setting of config.py (except the version
and the registry) is overridable. The release build bakes the fleet's settings
(at least server_url and update_root_keys, ``python -m release.build --server-url``)
into the binary as FLEET_FILE: they are that binary's defaults, above config.py and
below everything a PC can set itself (docs/release.md). Bad values stop the worker at
start with one line naming the key and where it came from (exit status 2).
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, get_origin, get_type_hints
from urllib.parse import urlparse

import tomli_w

from common.keys import key_problem
from common.safetext import redact_url
from supervisor.host.home import HOME_ENV, bundle_dir


class SettingsError(Exception):
    """A setting that cannot be used; the message is the one line shown to the operator."""


@dataclass(frozen=True)
class Spec:
    """How one setting is named, typed and checked; read off a Settings field (see SPECS)."""

    name: str  # config.py name, e.g. POOL_SIZE
    kind: type  # int, float, str, bool, list, dict
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    check: Callable[[Any], str | None] | None = None  # returns an error text or None
    help: str = ""  # --help's text ...
    unit: str = ""  # ... and the unit of its value (seconds, MB, ...)

    @property
    def key(self) -> str:
        return self.name.lower()

    @property
    def env(self) -> str:
        """Its environment variable: a prefix no other program uses (Apache Hive has HIVE_HOME...)."""
        return ENV_PREFIX + self.name

    @property
    def legacy_env(self) -> str:
        """The 2.0 name, still read: none of these is known to belong to another program."""
        return "HIVE_" + self.name

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")


ENV_PREFIX = "HIVE_WORKER_"
# Variables of other programs that start with HIVE_ (Apache Hive's scripts and images): never
# settings of this worker, and not worth a warning at every start of a PC that has Hive installed.
FOREIGN_ENV = frozenset({"HIVE_HOME", "HIVE_CONF_DIR", "HIVE_AUX_JARS_PATH", "HIVE_OPTS", "HIVE_CLASSPATH",
                         "HIVE_LIB", "HIVE_BIN", "HIVE_VERSION", "HIVE_HEAPSIZE", "HIVE_SKIP_SPARK_ASSEMBLY"})
INTERNAL_ENV_PREFIX = "HIVE_INTERNAL_"  # the worker's own hand-over to its executors and updater


def _check_url(value: str) -> str | None:
    if value == "":
        return None
    parts = urlparse(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return "must be an http(s) URL like http://host:3010/api"
    return None


def _finite(number: float) -> bool:
    """False for NaN and the infinities: NaN compares false with everything, so it passes any range check."""
    return not isinstance(number, float) or math.isfinite(number)  # an int is always finite (and may not fit a float)


LIMIT_KEYS = {"time": float, "cpu": float, "memory_mb": float}


def _check_task_limits(value: dict) -> str | None:
    for task_type, limits in value.items():
        if not isinstance(limits, dict):
            return f"[{task_type}] must be a table of limits"
        for k, v in limits.items():
            if k not in LIMIT_KEYS:
                return f"[{task_type}] unknown limit {k!r} (known: {', '.join(LIMIT_KEYS)})"
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not _finite(v) or v < 0:
                return f"[{task_type}] {k} must be a finite number >= 0 (0 turns it off), got {v!r}"
    return None


def _check_hosts(value: list) -> str | None:
    for host in value:
        bare = host.strip().lower()
        if not bare or any(c in bare for c in "/:@?#[] \t") or bare.strip("*.") == "":
            return f"entries must be bare host names like prom.ua (no scheme, port or path), got {host!r}"
    return None




def _table_from_text(text: str) -> dict:
    """A table given on the command line or in the environment: a JSON object
    (``{"prom_pars": {"time": 2400}}``), a TOML inline table (``{prom_pars = {time = 2400}}``)
    or TOML lines (``prom_pars = {time = 2400}``, ``[prom_pars]`` ...)."""
    import json

    stripped = text.strip()
    try:
        value = json.loads(stripped)
        if isinstance(value, dict):
            return value
    except ValueError:
        pass
    inline = [(f"v = {stripped}", True)] if stripped.startswith("{") else []
    for attempt, wrapped in [*inline, (text, False)]:
        try:
            data = tomllib.loads(attempt)
        except tomllib.TOMLDecodeError as exc:
            error = exc
            continue
        return data["v"] if wrapped else data
    raise ValueError("is neither a JSON object nor a TOML table, e.g. '{\"prom_pars\": {\"time\": 2400}}' "
                     f"or '{{prom_pars = {{time = 2400}}}}' ({error})")


BOOL_WORDS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


@dataclass(frozen=True)
class Coercer:
    """How values of one declared type are read: text (an environment variable, a flag) is parsed
    first; then any raw value (TOML, config.py, or the parsed text) is checked and typed. Both
    raise ValueError with the reason."""

    parse_text: Callable[[Spec, str], object]
    typed: Callable[[Spec, object], object]


def _bool_words(spec: Spec, text: str) -> object:
    return BOOL_WORDS.get(text.strip().lower(), text)


def _bool(spec: Spec, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def _comma_list(spec: Spec, text: str) -> object:
    return [part.strip() for part in text.split(",") if part.strip()]


def _list(spec: Spec, value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("must be a list of strings (comma-separated in the environment)")
    return value


def _table_text(spec: Spec, text: str) -> object:
    return _table_from_text(text)


def _table(spec: Spec, value: object) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ValueError(f"must be a table, got {type(value).__name__}")
    return {str(k): dict(v) if isinstance(v, dict) else v for k, v in value.items()}


def _as_is(spec: Spec, text: str) -> object:
    return text


def _str(spec: Spec, value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {type(value).__name__} {value!r}")
    return value.upper() if spec.name == "LOG_LEVEL" else value


def _what_number(spec: Spec) -> str:
    return "a whole number" if spec.kind is int else "a number"


def _number_text(spec: Spec, text: str) -> object:
    try:
        return spec.kind(text.strip())
    except ValueError:
        raise ValueError(f"must be {_what_number(spec)}, got {text!r}") from None


def _number(spec: Spec, value: object) -> int | float:
    """Whole floats become ints and ints floats, as declared; finite, within the range."""
    if isinstance(value, bool):
        raise ValueError(f"must be a number, got {value!r}")
    if spec.kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    elif spec.kind is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, (int, float)) or not isinstance(value, spec.kind):
        raise ValueError(f"must be {_what_number(spec)}, got {value!r}")
    # Before the range check: no_task_sleep = nan once passed it and the worker asked for tasks without pause.
    if not _finite(value):
        raise ValueError(f"must be a finite number, got {value!r}")
    if spec.low is not None and value < spec.low or spec.high is not None and value > spec.high:
        raise ValueError(f"must be between {spec.low:g} and {spec.high:g}, got {value!r}")
    return value


# One coercer per declared type (a Settings field of another type fails at import: _specs).
COERCERS: dict[type, Coercer] = {
    bool: Coercer(_bool_words, _bool),
    list: Coercer(_comma_list, _list),
    dict: Coercer(_table_text, _table),
    str: Coercer(_as_is, _str),
    int: Coercer(_number_text, _number),
    float: Coercer(_number_text, _number),
}


def _coerce(spec: Spec, value: Any, from_text: bool) -> Any:
    """Turn a raw value into the spec's type, or raise ValueError with the reason."""
    coercer = COERCERS[spec.kind]
    value = coercer.typed(spec, coercer.parse_text(spec, value) if from_text else value)
    if spec.choices and value not in spec.choices:
        raise ValueError(f"must be one of {', '.join(spec.choices)}, got {value!r}")
    if spec.check:
        problem = spec.check(value)
        if problem:
            raise ValueError(problem)
    return value


SETTING = "hive.setting"  # the metadata key that marks a Settings field as a setting


def setting(low: float | None = None, high: float | None = None, *, choices: tuple[str, ...] = (),
            check: Callable[[Any], str | None] | None = None, help: str = "", unit: str = "") -> Any:
    """A field of Settings that is a setting: its range, checks and --help text ride along, so SPECS is
    read off the class."""
    return field(metadata={SETTING: {"low": low, "high": high, "choices": choices, "check": check, "help": help,
                                     "unit": unit}})


@dataclass(frozen=True)
class Settings:
    """Effective settings, one typed field per setting (``settings.pool_size``).

    Each setting is declared here once: SPECS (names, env variables, flags, ranges) is
    built from these fields, in this order. ``sources`` names where each value came from.
    """

    home: Path
    sources: Mapping[str, str]
    server_url: str = setting(check=_check_url,
                              help="Hive API root, e.g. http://host:3010/api (a release build carries its fleet's); "
                                   "empty, from source: an embedded local dev server")
    pool_size: int = setting(1, 256, help="executor processes, each runs one task at a time", unit="processes")
    no_task_sleep: float = setting(0, 86400,
                                   help="wait after the server said no_tasks (the whole worker, +-10% jitter)",
                                   unit="seconds")
    time_error_sleep: float = setting(0, 86400,
                                      help="longest wait between retries while the server is unreachable (backoff cap)",
                                      unit="seconds")
    task_error_sleep: float = setting(0, 86400,
                                      help="a slot that ran a failed task waits this long (0: off; 5 under --dev)",
                                      unit="seconds")
    update_error_sleep: float = setting(0, 86400, help="wait after a failed self-update", unit="seconds")
    task_time_limit: float = setting(0, 7 * 86400,
                                     help="wall-clock limit of one task from dispatch (0: off)",
                                     unit="seconds")
    task_cpu_limit: float = setting(0, 7 * 86400,
                                    help="CPU-time limit of one task's whole process tree (0: off)",
                                    unit="CPU seconds")
    task_memory_limit_mb: float = setting(0, 1024 * 1024,
                                          help="memory limit of one task's whole process tree (0: off)",
                                          unit="MB")
    task_limits: dict[str, dict[str, float]] = setting(check=_check_task_limits,
                                                       help="per task type, merged key by key over config.py's: JSON "
                                                            "'{\"prom_pars\": {\"time\": 2400}}' or TOML "
                                                            "'{prom_pars = {time = 2400}}'; keys time, cpu, memory_mb",
                                                       unit="table")
    limit_check_interval: float = setting(0.01, 10,
                                          help="time between memory/CPU checks while tasks run",
                                          unit="seconds")
    max_tasks_per_executor: int = setting(0, 10**9,
                                          help="replace an executor after this many tasks, +-10% (0: never)",
                                          unit="tasks")
    executor_memory_growth_mb: float = setting(0, 1024 * 1024,
                                               help="replace an executor grown this much since it started (0: never)",
                                               unit="MB")
    executor_priority: str = setting(choices=("idle", "below_normal", "normal"),
                                     help="OS priority of the executors: idle, below_normal, normal")
    result_max_bytes: int = setting(1, 2**31, help="larger results fail with kind result_too_large", unit="bytes")
    get_task_timeout: float = setting(0.1, 3600, help="limit of one whole get_task exchange", unit="seconds")
    submit_timeout: float = setting(0.1, 3600, help="limit of one whole submit_result exchange", unit="seconds")
    get_task_max_bytes: int = setting(1024, 2**31,
                                      help="largest get_task answer read; a larger one is failed back or dropped",
                                      unit="bytes")
    outbox_max_mb: float = setting(0.001, 1024 * 1024,
                                   help="results waiting to be posted past this stop claiming (never dropped)",
                                   unit="MB")
    result_retry_days: float = setting(0, 3650, help="a result the server keeps refusing is retried this long, "
                                                     "then kept as a dead letter (retried slowly)", unit="days")
    no_executor_claim_interval: float = setting(0, 86400, help="with no executor able to start for this long, claim "
                                                               "one task per interval (0: never)", unit="seconds")
    shutdown_grace: float = setting(0, 86400,
                                    help="running tasks get this long to finish on Ctrl+C / SIGTERM",
                                    unit="seconds")
    watchdog_grace: float = setting(0, 86400, help="a loop stuck this long past its own deadlines restarts the worker "
                                                   "(exit 4; 0: off)", unit="seconds")
    update_drain_timeout: float = setting(0, 86400,
                                          help="running tasks get this long to finish before a self-update goes on",
                                          unit="seconds")
    update_max_bytes: int = setting(1024, 2**34, help="a larger self-update download is refused", unit="bytes")
    update_root_keys: list[str] = setting(check=key_problem,
                                          help="Ed25519 root public keys (base64) that delegate the release keys, "
                                               "comma-separated", unit="list")
    update_allow_unsigned: bool = setting(help="labs only: install updates that carry no signed release statement",
                                          unit="true/false")
    update_health_timeout: float = setting(5, 3600,
                                           help="the updater rolls back a new version not healthy by then",
                                           unit="seconds")
    update_probation: float = setting(0, 7 * 86400, help="running time a new version is on probation after its "
                                                        "update (0: none)", unit="seconds")
    # Being a good guest on the PC's owner's machine (supervisor/guest.py, supervisor/pool/cpucap.py).
    pause_on_battery: bool = setting(help="claim no new tasks while on battery", unit="true/false")
    pause_when_user_active_minutes: float = setting(0, 1440,
                                                    help="claim none while the user was active this recently (0: off)",
                                                    unit="minutes")
    pause_when_cpu_busy_percent: float = setting(0, 100,
                                                 help="claim none while other programs use more of the CPU (0: off)",
                                                 unit="percent")
    cpu_cap_percent: float = setting(0, 100,
                                     help="all executors together get at most this share of the machine (0: off)",
                                     unit="percent")
    prom_allowed_hosts: list[str] = setting(check=_check_hosts,
                                            help="hosts (and subdomains) prom_pars may fetch from, comma-separated",
                                            unit="list")
    log_level: str = setting(choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                             help="level of logs/worker.log: DEBUG, INFO, WARNING, ERROR")
    log_max_mb: float = setting(0.01, 100000, help="logs/worker.log is rotated at this size", unit="MB")
    log_backups: int = setting(0, 1000, help="rotated log files kept", unit="files")
    task_log_max_bytes: int = setting(0, 2**31,
                                      help="what one task may log; the rest is dropped and counted (0: no limit)",
                                      unit="bytes")

    @property
    def values(self) -> Mapping[str, Any]:
        """Every setting by key, read-only (executors get a copy; the updater passes some on)."""
        return MappingProxyType({spec.key: getattr(self, spec.key) for spec in SPECS})

    def overridden(self, source: str, **values: Any) -> Settings:
        """A copy with some settings set by the worker itself (the embedded dev server), ``source`` saying so."""
        # Checked like any other source: a bad value here is a bug and must fail loudly, not run.
        values = {key: _coerce(SPECS_BY_KEY[key], value, from_text=False) for key, value in values.items()}
        return replace(self, sources={**self.sources, **dict.fromkeys(values, source)}, **values)

    def limits_for(self, task_type: str) -> dict[str, float]:
        """Limits of one task type: the global ones overlaid with TASK_LIMITS[task_type]."""
        limits = {
            "time": float(self.task_time_limit),
            "cpu": float(self.task_cpu_limit),
            "memory_mb": float(self.task_memory_limit_mb),
        }
        limits.update({k: float(v) for k, v in self.task_limits.get(task_type, {}).items()})
        return limits

    def to_toml(self) -> str:
        """The effective settings as TOML, each preceded by a comment naming its source."""
        lines = [f"# home: {self.home}"]
        # Tables last: in TOML every key after a [table] header belongs to that table.
        for spec in sorted(SPECS, key=lambda s: s.kind is dict):
            lines.append(f"# {spec.key}: from {self.sources[spec.key]}")
            value = getattr(self, spec.key)
            if spec.key == "server_url" and redact_url(value) != value:
                value = redact_url(value)  # pasted into tickets and chats: never the password
                lines.append("# (credentials redacted)")
            if spec.kind is dict and not value:
                lines.append(f"{spec.key} = {{}}")
            elif spec.kind is dict:
                lines[-1] = f"# {spec.key}: merged key by key over config.py's table, each value's source beside it"
                for task_type, limits in value.items():
                    # [task_limits.x], the name quoted if it needs to be
                    lines.append(tomli_w.dumps({spec.key: {task_type: {}}}).strip())
                    lines.extend(f"{k} = {tomli_w.dumps({k: v}).split('=', 1)[1].strip()}  # from "
                                 f"{self.sources.get(_entry_source(spec.key, task_type, k), self.sources[spec.key])}"
                                 for k, v in limits.items())
            else:
                lines.append(tomli_w.dumps({spec.key: value}).rstrip())
        return "\n".join(lines) + "\n"


def _specs() -> tuple[Spec, ...]:
    hints = get_type_hints(Settings)
    specs = tuple(Spec(f.name.upper(), get_origin(hints[f.name]) or hints[f.name], **f.metadata[SETTING])
                  for f in fields(Settings) if SETTING in f.metadata)
    # A setting of a type with no coercer would fail only when loaded; fail at import instead.
    untyped = [f"{s.name} ({s.kind.__name__})" for s in specs if s.kind not in COERCERS]
    if untyped:
        raise TypeError(f"settings of a type without a coercer in COERCERS: {', '.join(untyped)}")
    return specs


SPECS: tuple[Spec, ...] = _specs()
SPECS_BY_KEY = {s.key: s for s in SPECS}
SPECS_BY_NAME = {s.name: s for s in SPECS}


def _entry_source(key: str, task_type: str, limit: str) -> str:
    """The ``sources`` key of one value of a table setting: ``task_limits.prom_pars.time``."""
    return f"{key}.{task_type}.{limit}"


def _set(values: dict[str, Any], sources: dict[str, str], spec: Spec, value: Any, source: str) -> None:
    """Put one layer's value over the lower ones. A table (TASK_LIMITS) merges key by key: a layer
    that sets prom_pars' time keeps its built-in cpu and memory limits, and the other task types'."""
    sources[spec.key] = source
    if spec.kind is not dict:
        values[spec.key] = value
        return
    merged = {t: dict(limits) for t, limits in values[spec.key].items()}
    for task_type, limits in value.items():
        merged.setdefault(task_type, {}).update(limits)
        sources.update({_entry_source(spec.key, task_type, k): source for k in limits})
    values[spec.key] = merged


def unknown_limit_types(settings: Settings, registry_names: set[str]) -> list[str]:
    """Task types with a TASK_LIMITS entry that no task of this worker's TASK_REGISTRY has (a typo,
    or a task that was removed): their limits never apply."""
    return sorted(set(settings.task_limits) - set(registry_names))


def own_env_names(environ: Mapping[str, str]) -> list[str]:
    """The variables of ``environ`` that are this worker's (to keep them from task code); never
    another program's, and never the internal hand-over ones."""
    ours = {s.env for s in SPECS} | {s.legacy_env for s in SPECS} | {HOME_ENV}
    return [n for n in environ if n in ours or n.startswith(ENV_PREFIX)]


def environment_warnings(environ: Mapping[str, str]) -> list[str]:
    """One line per HIVE_* variable that is set but means nothing here (a typo, or another
    program's): warned, never refused, so another program's variables cannot stop the worker."""
    lines = []
    for spec in SPECS:
        if spec.env in environ and spec.legacy_env in environ and environ[spec.env] != environ[spec.legacy_env]:
            lines.append(f"environment variables {spec.env} and {spec.legacy_env} differ: {spec.env} is used")
    if "HIVE_HOME" in environ and HOME_ENV not in environ:
        lines.append(f"environment variable HIVE_HOME is ignored (it is Apache Hive's): this worker's home is "
                     f"--home or {HOME_ENV}")
    known = {s.env for s in SPECS} | {s.legacy_env for s in SPECS} | {HOME_ENV} | FOREIGN_ENV
    for name in sorted(environ):
        if name.startswith("HIVE_") and name not in known and not name.startswith(INTERNAL_ENV_PREFIX):
            bare = name.removeprefix(ENV_PREFIX) if name.startswith(ENV_PREFIX) else name.removeprefix("HIVE_")
            if bare.lower() in RENAMED:  # warned like any unknown name (23.9), with its successor
                lines.append(f"environment variable {name} is ignored{_renamed(bare.lower())}")
                continue
            close = closest(bare, SPECS_BY_NAME)
            lines.append(f"environment variable {name} is not a setting of this worker; ignored (settings are "
                         f"{ENV_PREFIX}<NAME>" + (f"; did you mean {ENV_PREFIX}{close}?)" if close else ")"))
    return lines


def closest(name: str, known: Mapping[str, Any]) -> str | None:
    """The known name ``name`` is most likely a typo of (for "did you mean"), or None."""
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
    return close[0] if close else None


def read_toml(path: Path) -> dict[str, Any]:
    """A settings file (worker.toml, a fleet file) as a table; SettingsError naming the file if it is not TOML."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None


# Settings that changed their name and meaning: the old name is refused with a pointer, never guessed.
RENAMED = {"update_public_keys": "update_root_keys (it lists ROOT keys, which delegate the release keys: "
                                  "docs/release.md, Keys; a release key put there is refused)"}


def _renamed(key: str) -> str:
    return f": renamed to {RENAMED[key]}" if key in RENAMED else ""


def checked(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``data`` (a TOML table of settings) with each value checked and typed; SettingsError
    naming ``where`` and the key otherwise. worker.toml, the baked fleet file and the build's
    inputs all go through here."""
    out = {}
    for key, raw in data.items():
        spec = SPECS_BY_KEY.get(key)
        if spec is None:
            close = closest(key, SPECS_BY_KEY)
            raise SettingsError(f"{where}: unknown setting {key!r}{_renamed(key)} " + (
                f"(did you mean {close!r}?)" if close and not _renamed(key) else "(see --print-config for the known ones)"))
        try:
            out[key] = _coerce(spec, raw, from_text=False)
        except ValueError as exc:
            raise SettingsError(f"{where}: {key} {exc}") from None
    return out


def _layer(values: dict[str, Any], sources: dict[str, str], data: Mapping[str, Any], where: str) -> None:
    for key, value in checked(data, where).items():
        _set(values, sources, SPECS_BY_KEY[key], value, where)


# The fleet's settings inside a release build (release/build.py writes it, PyInstaller bundles it
# at the bundle's root). From source there is none: a checkout is not any fleet's worker.
FLEET_FILE = "fleet.toml"
BAKED_SOURCE = "the release build (fleet settings)"


def baked_path() -> Path | None:
    """Where this binary's fleet settings are, if it is a frozen build (None from source)."""
    bundle = bundle_dir()
    return bundle / FLEET_FILE if bundle else None


def load(config_module: Any, home: Path, flags: dict[str, Any], environ: Mapping[str, str] | None = None,
         baked: Path | None = None) -> Settings:
    """Layer config.py < ``baked`` (the build's fleet file) < worker.toml < HIVE_WORKER_* env (or the
    older HIVE_<NAME>) < flags. Raises SettingsError. Unknown HIVE_* variables are not errors: see
    environment_warnings."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for spec in SPECS:
        if not hasattr(config_module, spec.name):
            raise SettingsError(f"config.py: {spec.name} is missing")
        try:
            values[spec.key] = _coerce(spec, getattr(config_module, spec.name), from_text=False)
        except ValueError as exc:
            raise SettingsError(f"config.py: {spec.name} {exc}") from None
        sources[spec.key] = "config.py"
        if spec.kind is dict:
            sources.update({_entry_source(spec.key, t, k): "config.py"
                            for t, limits in values[spec.key].items() for k in limits})

    if baked is not None and baked.exists():
        _layer(values, sources, read_toml(baked), BAKED_SOURCE)
    toml_path = home / "worker.toml"
    if toml_path.exists():
        _layer(values, sources, read_toml(toml_path), str(toml_path))

    for spec in SPECS:
        name = spec.env if spec.env in env else spec.legacy_env
        if name in env:
            try:
                _set(values, sources, spec, _coerce(spec, env[name], from_text=True), f"environment {name}")
            except ValueError as exc:
                raise SettingsError(f"environment variable {name} {exc}") from None

    for key, raw in flags.items():
        spec = SPECS_BY_KEY[key]
        try:
            _set(values, sources, spec, _coerce(spec, raw, from_text=isinstance(raw, str) and spec.kind is not str),
                 f"flag {spec.flag}")
        except ValueError as exc:
            raise SettingsError(f"flag {spec.flag} {exc}") from None
    return Settings(home=home, sources=sources, **values)
