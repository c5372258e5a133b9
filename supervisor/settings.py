"""Effective settings: command-line flag > HIVE_<NAME> env > worker.toml > the build's fleet settings > config.py.

A frozen exe cannot be edited, so every setting of config.py (except the version
and the registry) is overridable. The release build bakes the fleet's settings
(at least server_url and update_root_keys, ``python -m release.build --server-url``)
into the binary as FLEET_FILE: they are that binary's defaults, above config.py and
below everything a PC can set itself (docs/release.md). Bad values stop the worker at
start with one line naming the key and where it came from (exit status 2).
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, get_origin, get_type_hints
from urllib.parse import urlparse

import tomli_w

from supervisor.safetext import redact_url
from supervisor.update.verify import key_problem


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
    help: str = ""

    @property
    def key(self) -> str:
        return self.name.lower()

    @property
    def env(self) -> str:
        return "HIVE_" + self.name

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")


def _check_url(value: str) -> str | None:
    if value == "":
        return None
    parts = urlparse(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return "must be an http(s) URL like http://host:3010/api"
    return None


LIMIT_KEYS = {"time": float, "cpu": float, "memory_mb": float}


def _check_task_limits(value: dict) -> str | None:
    for task_type, limits in value.items():
        if not isinstance(limits, dict):
            return f"[{task_type}] must be a table of limits"
        for k, v in limits.items():
            if k not in LIMIT_KEYS:
                return f"[{task_type}] unknown limit {k!r} (known: {', '.join(LIMIT_KEYS)})"
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                return f"[{task_type}] {k} must be a number >= 0 (0 turns it off), got {v!r}"
    return None


def _check_hosts(value: list) -> str | None:
    for host in value:
        bare = host.strip().lower()
        if not bare or any(c in bare for c in "/:@?#[] \t") or bare.strip("*.") == "":
            return f"entries must be bare host names like prom.ua (no scheme, port or path), got {host!r}"
    return None




BOOL_WORDS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def _coerce(spec: Spec, value: Any, from_text: bool) -> Any:
    """Turn a raw value into the spec's type, or raise ValueError with the reason."""
    if spec.kind is bool:
        if from_text:
            value = BOOL_WORDS.get(value.strip().lower(), value)
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, got {value!r}")
    elif spec.kind is list:
        if from_text:
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError("must be a list of strings (comma-separated in the environment)")
    elif spec.kind is dict:
        if from_text:
            try:
                value = tomllib.loads(value)
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"is not a TOML table ({exc})") from None
        if not isinstance(value, dict):
            raise ValueError(f"must be a table, got {type(value).__name__}")
        value = {str(k): dict(v) if isinstance(v, dict) else v for k, v in value.items()}
    elif spec.kind is str:
        if not isinstance(value, str):
            raise ValueError(f"must be a string, got {type(value).__name__} {value!r}")
        if spec.name == "LOG_LEVEL":
            value = value.upper()
    else:
        if isinstance(value, bool):
            raise ValueError(f"must be a number, got {value!r}")
        if from_text:
            try:
                value = spec.kind(value.strip())
            except ValueError:
                raise ValueError(f"must be {'a whole number' if spec.kind is int else 'a number'}, got {value!r}") from None
        elif spec.kind is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        elif spec.kind is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, spec.kind):
            raise ValueError(f"must be {'a whole number' if spec.kind is int else 'a number'}, got {value!r}")
        if spec.low is not None and value < spec.low or spec.high is not None and value > spec.high:
            raise ValueError(f"must be between {spec.low:g} and {spec.high:g}, got {value!r}")
    if spec.choices and value not in spec.choices:
        raise ValueError(f"must be one of {', '.join(spec.choices)}, got {value!r}")
    if spec.check:
        problem = spec.check(value)
        if problem:
            raise ValueError(problem)
    return value


SETTING = "hive.setting"  # the metadata key that marks a Settings field as a setting


def setting(low: float | None = None, high: float | None = None, *, choices: tuple[str, ...] = (),
            check: Callable[[Any], str | None] | None = None, help: str = "") -> Any:
    """A field of Settings that is a setting: its range and checks ride along, so SPECS is read off the class."""
    return field(metadata={SETTING: {"low": low, "high": high, "choices": choices, "check": check, "help": help}})


@dataclass(frozen=True)
class Settings:
    """Effective settings, one typed field per setting (``settings.pool_size``).

    Each setting is declared here once: SPECS (names, env variables, flags, ranges) is
    built from these fields, in this order. ``sources`` names where each value came from.
    """

    home: Path
    sources: Mapping[str, str]
    server_url: str = setting(check=_check_url, help="Hive API root (a release build carries its fleet's)")
    pool_size: int = setting(1, 256, help="executor processes")
    no_task_sleep: float = setting(0, 86400)
    time_error_sleep: float = setting(0, 86400)
    task_error_sleep: float = setting(0, 86400)
    update_error_sleep: float = setting(0, 86400)
    task_time_limit: float = setting(0, 7 * 86400)
    task_cpu_limit: float = setting(0, 7 * 86400)
    task_memory_limit_mb: float = setting(0, 1024 * 1024)
    task_limits: dict[str, dict[str, float]] = setting(check=_check_task_limits)
    limit_check_interval: float = setting(0.01, 10)
    max_tasks_per_executor: int = setting(0, 10**9)
    executor_memory_growth_mb: float = setting(0, 1024 * 1024)
    executor_priority: str = setting(choices=("idle", "below_normal", "normal"))
    result_max_bytes: int = setting(1, 2**31)
    get_task_timeout: float = setting(0.1, 3600)
    submit_timeout: float = setting(0.1, 3600)
    get_task_max_bytes: int = setting(1024, 2**31, help="largest get_task answer read; larger ones are dropped")
    outbox_max_mb: float = setting(0.001, 1024 * 1024)
    shutdown_grace: float = setting(0, 86400)
    update_drain_timeout: float = setting(0, 86400)
    update_max_bytes: int = setting(1024, 2**34)
    update_root_keys: list[str] = setting(check=key_problem,
                                          help="Ed25519 root public keys (base64): they delegate the release keys")
    update_allow_unsigned: bool = setting(help="labs only: install updates that carry no signed release statement")
    update_health_timeout: float = setting(5, 3600)
    # Being a good guest on the PC's owner's machine (supervisor/guest.py, supervisor/pool/cpucap.py).
    pause_on_battery: bool = setting(help="claim no new tasks while on battery")
    pause_when_user_active_minutes: float = setting(0, 1440, help="claim none while input was seen this recently (0: off)")
    pause_when_cpu_busy_percent: float = setting(0, 100, help="claim none while other programs use more CPU (0: off)")
    cpu_cap_percent: float = setting(0, 100, help="all executors together get at most this share of the machine (0: off)")
    prom_allowed_hosts: list[str] = setting(check=_check_hosts,
                                            help="hosts (with subdomains) prom_pars may fetch from; others get status 5")
    log_level: str = setting(choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    log_max_mb: float = setting(0.01, 100000)
    log_backups: int = setting(0, 1000)
    task_log_max_bytes: int = setting(0, 2**31, help="log budget of one task (0 = no limit)")

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
            else:
                lines.append(tomli_w.dumps({spec.key: value}).rstrip())
        return "\n".join(lines) + "\n"


def _specs() -> tuple[Spec, ...]:
    hints = get_type_hints(Settings)
    return tuple(Spec(f.name.upper(), get_origin(hints[f.name]) or hints[f.name], **f.metadata[SETTING])
                 for f in fields(Settings) if SETTING in f.metadata)


SPECS: tuple[Spec, ...] = _specs()
SPECS_BY_KEY = {s.key: s for s in SPECS}


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
            raise SettingsError(f"{where}: unknown setting {key!r}{_renamed(key)} (see --print-config for the known ones)")
        try:
            out[key] = _coerce(spec, raw, from_text=False)
        except ValueError as exc:
            raise SettingsError(f"{where}: {key} {exc}") from None
    return out


def _layer(values: dict[str, Any], sources: dict[str, str], data: Mapping[str, Any], where: str) -> None:
    for key, value in checked(data, where).items():
        values[key] = value
        sources[key] = where


# The fleet's settings inside a release build (release/build.py writes it, PyInstaller bundles it
# at the bundle's root). From source there is none: a checkout is not any fleet's worker.
FLEET_FILE = "fleet.toml"
BAKED_SOURCE = "the release build (fleet settings)"


def baked_path() -> Path | None:
    """Where this binary's fleet settings are, if it is a frozen build (None from source)."""
    bundle = getattr(sys, "_MEIPASS", None) if getattr(sys, "frozen", False) else None
    return Path(bundle) / FLEET_FILE if bundle else None


def load(config_module: Any, home: Path, flags: dict[str, Any], environ: dict[str, str] | None = None,
         baked: Path | None = None) -> Settings:
    """Layer config.py < ``baked`` (the build's fleet file) < worker.toml < HIVE_* env < flags.
    Raises SettingsError."""
    environ = os.environ if environ is None else environ
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

    if baked is not None and baked.exists():
        _layer(values, sources, read_toml(baked), BAKED_SOURCE)
    toml_path = home / "worker.toml"
    if toml_path.exists():
        _layer(values, sources, read_toml(toml_path), str(toml_path))

    known_env = {s.env for s in SPECS} | {"HIVE_HOME"}
    for name in environ:
        if name.startswith("HIVE_") and name not in known_env and not name.startswith("HIVE_INTERNAL_"):
            raise SettingsError(f"environment variable {name}: unknown setting{_renamed(name[5:].lower())} "
                                "(known: HIVE_<NAME> of config.py)")
    for spec in SPECS:
        if spec.env in environ:
            try:
                values[spec.key] = _coerce(spec, environ[spec.env], from_text=True)
            except ValueError as exc:
                raise SettingsError(f"environment variable {spec.env} {exc}") from None
            sources[spec.key] = f"environment {spec.env}"

    for key, raw in flags.items():
        spec = SPECS_BY_KEY[key]
        try:
            values[key] = _coerce(spec, raw, from_text=isinstance(raw, str) and spec.kind is not str)
        except ValueError as exc:
            raise SettingsError(f"flag {spec.flag} {exc}") from None
        sources[key] = f"flag {spec.flag}"
    return Settings(home=home, sources=sources, **values)
