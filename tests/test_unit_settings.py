"""The typed Settings object, in-process (no worker started): test_settings.py runs the worker for
the operator-facing messages; these check the object itself and the edge cases of loading."""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing

import pytest

import config
from supervisor.settings import BAKED_SOURCE, FLEET_FILE, SPECS, Settings, SettingsError, baked_path, load

FIXED_IN_THE_BUILD = {"WORKER_VERSION", "TASK_REGISTRY", "RELEASE_SEQUENCE"}


def _config(**over: object) -> types.SimpleNamespace:
    mod = types.SimpleNamespace(**{k: getattr(config, k) for k in dir(config) if k.isupper()})
    for name, value in over.items():
        setattr(mod, name, value)
    return mod


def test_every_config_setting_is_one_typed_field():
    names = {k for k in dir(config) if k.isupper()} - FIXED_IN_THE_BUILD
    assert [s.name for s in SPECS] == [f.name.upper() for f in dataclasses.fields(Settings)
                                       if f.name not in ("home", "sources")]
    assert {s.name for s in SPECS} == names
    hints = typing.get_type_hints(Settings)
    for spec in SPECS:
        assert spec.kind is (typing.get_origin(hints[spec.key]) or hints[spec.key]), spec.name


def test_loaded_values_have_their_declared_types(tmp_path):
    s = load(_config(POOL_SIZE=3.0, NO_TASK_SLEEP=5), tmp_path, {}, environ={})
    assert s.pool_size == 3 and type(s.pool_size) is int
    assert s.no_task_sleep == 5.0 and type(s.no_task_sleep) is float


def test_settings_are_read_only(tmp_path):
    s = load(config, tmp_path, {}, environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.pool_size = 4  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.values["pool_size"] = 4  # type: ignore[index]
    assert dict(s.values) == {spec.key: getattr(s, spec.key) for spec in SPECS}


def test_overridden_is_a_checked_copy_that_names_its_source(tmp_path):
    s = load(config, tmp_path, {}, environ={})
    t = s.overridden("embedded local dev server", server_url="http://127.0.0.1:9/api", no_task_sleep=2)
    assert (t.server_url, t.no_task_sleep, type(t.no_task_sleep)) == ("http://127.0.0.1:9/api", 2.0, float)
    assert t.sources["server_url"] == t.sources["no_task_sleep"] == "embedded local dev server"
    assert t.sources["pool_size"] == "config.py"
    assert (s.server_url, s.sources["server_url"]) == (config.SERVER_URL, "config.py")
    with pytest.raises(ValueError, match="must be between 1 and 256"):
        s.overridden("test", pool_size=0)
    with pytest.raises(KeyError):
        s.overridden("test", pool_sise=2)


def test_missing_config_name_is_named(tmp_path):
    mod = _config()
    del mod.LOG_BACKUPS
    with pytest.raises(SettingsError, match="^config.py: LOG_BACKUPS is missing$"):
        load(mod, tmp_path, {}, environ={})


@pytest.mark.parametrize("text, value", [("off", False), ("YES", True), (" 1 ", True), ("false", False)])
def test_bool_words_in_the_environment(tmp_path, text, value):
    assert load(config, tmp_path, {}, environ={"HIVE_PAUSE_ON_BATTERY": text}).pause_on_battery is value


def test_bool_is_neither_a_word_in_toml_nor_a_number(tmp_path):
    (tmp_path / "worker.toml").write_text('pause_on_battery = "yes"\n')
    with pytest.raises(SettingsError, match="pause_on_battery must be true or false"):
        load(config, tmp_path, {}, environ={})
    (tmp_path / "worker.toml").write_text("pool_size = true\n")
    with pytest.raises(SettingsError, match="pool_size must be a number, got True"):
        load(config, tmp_path, {}, environ={})


def test_the_renamed_release_key_setting_points_to_root_keys(tmp_path):
    """update_public_keys (release keys, before issue 24) is refused in one line that names its successor."""
    from supervisor.settings import RENAMED

    (tmp_path / "worker.toml").write_text('update_public_keys = []\n')
    with pytest.raises(SettingsError, match=r"unknown setting 'update_public_keys': renamed to update_root_keys"):
        load(config, tmp_path, {}, environ={})
    # In the environment: warned, never refused (issue 23.9: a variable cannot stop the worker).
    from supervisor.settings import environment_warnings

    assert environment_warnings({"HIVE_UPDATE_PUBLIC_KEYS": ""}) == [
        f"environment variable HIVE_UPDATE_PUBLIC_KEYS is ignored: renamed to {RENAMED['update_public_keys']}"]


def test_internal_and_home_variables_are_not_settings(tmp_path):
    env = {"HIVE_HOME": str(tmp_path), "HIVE_INTERNAL_ANYTHING": "1", "HIVE_LOG_LEVEL": "debug"}
    assert load(config, tmp_path, {}, environ=env).log_level == "DEBUG"


def test_to_toml_reads_back_as_the_values(tmp_path):
    s = load(config, tmp_path, {"server_url": "http://user:secret@host:1/api"}, environ={})
    text = s.to_toml()
    data = tomllib.loads(text)
    assert data.pop("server_url") == "http://***@host:1/api" and "secret" not in text
    assert data == {k: v for k, v in s.values.items() if k != "server_url"}


# ---- the release build's fleet settings (issue 21) -------------------------------------------------

FLEET_KEY = "Gtt6yuQClBCdZBFXnucwWGDkybjhgRtcETZEhCEWv3I="


def _fleet(tmp_path, text):
    baked = tmp_path / "bundle" / FLEET_FILE
    baked.parent.mkdir()
    baked.write_text(text)
    return baked


def test_baked_fleet_settings_sit_between_config_py_and_the_pc(tmp_path):
    """config.py < the build's fleet file < worker.toml < HIVE_* < flags, each source named."""
    baked = _fleet(tmp_path, f'server_url = "http://fleet:3010/api"\nupdate_root_keys = ["{FLEET_KEY}"]\n'
                             "pool_size = 3\nno_task_sleep = 7\n")
    s = load(config, tmp_path, {}, environ={}, baked=baked)
    assert (s.server_url, s.update_root_keys, s.pool_size) == ("http://fleet:3010/api", [FLEET_KEY], 3)
    assert s.sources["server_url"] == s.sources["update_root_keys"] == BAKED_SOURCE
    assert s.sources["log_level"] == "config.py"
    (tmp_path / "worker.toml").write_text('server_url = "http://toml:1/api"\npool_size = 4\n')
    s = load(config, tmp_path, {"no_task_sleep": "9"}, environ={"HIVE_POOL_SIZE": "5"}, baked=baked)
    assert (s.server_url, s.sources["server_url"]) == ("http://toml:1/api", str(tmp_path / "worker.toml"))
    assert (s.pool_size, s.sources["pool_size"]) == (5, "environment HIVE_POOL_SIZE")
    assert (s.no_task_sleep, s.sources["no_task_sleep"]) == (9.0, "flag --no-task-sleep")
    assert s.sources["update_root_keys"] == BAKED_SOURCE
    assert load(config, tmp_path, {}, environ={}, baked=tmp_path / "absent.toml").sources["log_level"] == "config.py"


def test_print_config_names_the_build_and_hides_its_password(tmp_path):
    baked = _fleet(tmp_path, 'server_url = "http://hive:s3cret@fleet:3010/api"\n')
    text = load(config, tmp_path, {}, environ={}, baked=baked).to_toml()
    assert f"# server_url: from {BAKED_SOURCE}\n# (credentials redacted)\nserver_url = \"http://***@fleet:3010/api\"" \
        in text
    assert "s3cret" not in text


def test_a_bad_baked_value_is_named_with_its_source(tmp_path):
    with pytest.raises(SettingsError, match=f"^{BAKED_SOURCE.replace('(', '.').replace(')', '.')}: "
                                             "server_url must be an http"):
        load(config, tmp_path, {}, environ={}, baked=_fleet(tmp_path, 'server_url = "ftp://x"\n'))


def test_only_a_frozen_worker_has_baked_settings():
    assert baked_path() is None  # from source: a checkout is no fleet's worker


@pytest.mark.parametrize("server_url, frozen, asked, embedded", [
    ("", False, False, True),  # `python main.py` with nothing given: today's newcomer run
    ("http://h/api", False, False, False),
    ("http://h/api", True, False, False),
    ("", True, True, True),  # worker.exe --embedded-server
    ("http://h/api", True, True, True),  # asked for: the demo, whatever the build carries
    ("", True, False, None),  # worker.exe with no server URL: refuse, never the demo
])
def test_when_the_embedded_demo_server_runs(server_url, frozen, asked, embedded):
    import main

    if embedded is None:
        with pytest.raises(ValueError, match="^no server URL: .*--embedded-server"):
            main.wants_embedded(server_url, frozen, asked)
    else:
        assert main.wants_embedded(server_url, frozen, asked) is embedded


NUMBERS = [s for s in SPECS if s.kind in (int, float)]
NOT_A_SETTING = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "-1": -1.0}


@pytest.mark.parametrize("text", NOT_A_SETTING)
@pytest.mark.parametrize("spec", NUMBERS, ids=lambda s: s.key)
def test_every_number_setting_refuses_nan_infinities_and_negatives_from_every_source(tmp_path, spec, text):
    # NaN compares false with everything: no_task_sleep = nan once passed every range check.
    (tmp_path / "worker.toml").write_text(f"{spec.key} = {text}\n")  # TOML has nan, inf and -inf literals
    elsewhere = tmp_path / "no-toml"
    tries = {"worker.toml": lambda: load(config, tmp_path, {}, environ={}),
             spec.env: lambda: load(config, elsewhere, {}, environ={spec.env: text}),
             spec.flag: lambda: load(config, elsewhere, {spec.key: text}, environ={}),
             "config.py": lambda: load(_config(**{spec.name: NOT_A_SETTING[text]}), elsewhere, {}, environ={})}
    for source, attempt in tries.items():
        with pytest.raises(SettingsError) as caught:
            attempt()
        message = str(caught.value)
        assert source in message and spec.key in message.lower().replace("-", "_") and "\n" not in message, message


@pytest.mark.parametrize("limit", ["time", "cpu", "memory_mb"])
def test_task_limits_refuse_nan_and_infinities(tmp_path, limit):
    for text in ("nan", "inf", "-inf", "-1"):
        (tmp_path / "worker.toml").write_text(f"[task_limits.example]\n{limit} = {text}\n")
        with pytest.raises(SettingsError, match=f"{limit} must be a finite number >= 0"):
            load(config, tmp_path, {}, environ={})


def test_task_limits_merge_key_by_key_over_the_built_ins(tmp_path):
    """Issue 23.2: the docs' own example keeps prom_pars' cpu limit; another task's entry keeps prom_pars'."""
    (tmp_path / "worker.toml").write_text("[task_limits.prom_pars]\ntime = 2400\nmemory_mb = 512\n"
                                          "[task_limits.hello]\ntime = 30\n")
    s = load(config, tmp_path, {"task_limits": '{"hello": {"cpu": 5}}'},
             environ={"HIVE_TASK_LIMITS": "hello = {memory_mb = 64}"})
    assert s.task_limits == {"prom_pars": {"time": 2400, "cpu": 300, "memory_mb": 512},
                             "hello": {"time": 30, "memory_mb": 64, "cpu": 5}}
    assert s.limits_for("prom_pars") == {"time": 2400.0, "cpu": 300.0, "memory_mb": 512.0}
    assert s.sources["task_limits.prom_pars.cpu"] == "config.py"
    assert s.sources["task_limits.prom_pars.time"] == str(tmp_path / "worker.toml")
    assert s.sources["task_limits.hello.memory_mb"] == "environment HIVE_TASK_LIMITS"
    assert s.sources["task_limits.hello.cpu"] == "flag --task-limits"
    assert config.TASK_LIMITS == {"prom_pars": {"time": 1800, "cpu": 300, "memory_mb": 256}}  # not changed in place


def test_print_config_names_each_limits_source(tmp_path):
    (tmp_path / "worker.toml").write_text('[task_limits.prom_pars]\ntime = 2400\n[task_limits."odd name"]\ncpu = 1\n')
    s = load(config, tmp_path, {}, environ={})
    text = s.to_toml()
    assert tomllib.loads(text)["task_limits"] == s.task_limits
    assert f"time = 2400  # from {tmp_path / 'worker.toml'}" in text
    assert "cpu = 300  # from config.py" in text


def test_limits_for_a_task_type_not_in_the_registry_are_named(tmp_path):
    from supervisor.settings import unknown_limit_types

    (tmp_path / "worker.toml").write_text("[task_limits.helo]\ntime = 30\n")
    s = load(config, tmp_path, {}, environ={})
    assert unknown_limit_types(s, set(config.TASK_REGISTRY)) == ["helo"]


@pytest.mark.parametrize("text", ['{"example": {"time": 7}}', "{example = {time = 7}}", "example = {time = 7}",
                                  "[example]\ntime = 7\n"])
def test_a_table_in_a_flag_or_the_environment_is_json_or_toml(tmp_path, text):
    """Issue 23.6: --task-limits takes JSON and the TOML inline table the docs show."""
    assert load(config, tmp_path, {"task_limits": text}, environ={}).task_limits["example"] == {"time": 7}
    assert load(config, tmp_path, {}, environ={"HIVE_TASK_LIMITS": text}).task_limits["example"] == {"time": 7}


def test_a_table_that_is_neither_json_nor_toml_is_refused_with_examples(tmp_path):
    with pytest.raises(SettingsError, match=r"^flag --task-limits is neither a JSON object nor a TOML table"):
        load(config, tmp_path, {"task_limits": "{prom_pars: 1"}, environ={})


def test_new_and_old_environment_names(tmp_path):
    """Issue 23.9: HIVE_WORKER_<NAME> is the name; the old HIVE_<NAME> still works; the new one wins."""
    s = load(config, tmp_path, {}, environ={"HIVE_POOL_SIZE": "4", "HIVE_NO_TASK_SLEEP": "9",
                                            "HIVE_WORKER_POOL_SIZE": "3"})
    assert (s.pool_size, s.sources["pool_size"]) == (3, "environment HIVE_WORKER_POOL_SIZE")
    assert (s.no_task_sleep, s.sources["no_task_sleep"]) == (9.0, "environment HIVE_NO_TASK_SLEEP")


def test_other_programs_variables_are_neither_errors_nor_ours(tmp_path):
    from supervisor.host.home import resolve_home
    from supervisor.settings import environment_warnings, own_env_names

    env = {"HIVE_HOME": str(tmp_path / "hive"), "HIVE_CONF_DIR": "/etc/hive", "HIVE_AUX_JARS_PATH": "/x",
           "HIVE_WORKER_POOL_SIZE": "2", "HIVE_LOG_LEVEL": "debug", "HIVE_INTERNAL_X": "1", "HIVE_WORKER_POOL_SIZ": "3"}
    assert load(config, tmp_path, {}, environ=env).pool_size == 2
    assert resolve_home(None, env) != (tmp_path / "hive").resolve()
    assert resolve_home(None, dict(env, HIVE_WORKER_HOME=str(tmp_path / "w"))) == (tmp_path / "w").resolve()
    assert sorted(own_env_names(env)) == ["HIVE_LOG_LEVEL", "HIVE_WORKER_POOL_SIZ", "HIVE_WORKER_POOL_SIZE"]
    warnings = environment_warnings(env)
    assert len(warnings) == 2, warnings
    assert "HIVE_HOME is ignored (it is Apache Hive's)" in warnings[0]
    assert warnings[1].endswith("did you mean HIVE_WORKER_POOL_SIZE?)")
    assert environment_warnings({"HIVE_POOL_SIZE": "3", "HIVE_WORKER_POOL_SIZE": "4"}) == [
        "environment variables HIVE_WORKER_POOL_SIZE and HIVE_POOL_SIZE differ: HIVE_WORKER_POOL_SIZE is used"]


def test_unknown_toml_key_suggests_the_setting(tmp_path):
    (tmp_path / "worker.toml").write_text("pool_sise = 3\n")
    with pytest.raises(SettingsError, match=r"unknown setting 'pool_sise' \(did you mean 'pool_size'\?\)"):
        load(config, tmp_path, {}, environ={})


# _coerce, kind by kind: what each raw value becomes, or the reason it is refused. Written against
# the if/elif chain before it became a per-type table (issue 25.5): the table must say the same.
@dataclasses.dataclass(frozen=True)
class Refused:
    reason: str


COERCED = [
    ("update_allow_unsigned", " Yes ", True, True),
    ("update_allow_unsigned", True, False, True),
    ("update_allow_unsigned", "maybe", True, Refused("must be true or false, got 'maybe'")),
    ("update_allow_unsigned", 1, False, Refused("must be true or false, got 1")),
    ("prom_allowed_hosts", " a.ua, ,b.ua ", True, ["a.ua", "b.ua"]),
    ("prom_allowed_hosts", ["a.ua"], False, ["a.ua"]),
    ("prom_allowed_hosts", ["a.ua", 3], False,
     Refused("must be a list of strings (comma-separated in the environment)")),
    ("prom_allowed_hosts", ["a.ua/x"], False,
     Refused("entries must be bare host names like prom.ua (no scheme, port or path), got 'a.ua/x'")),
    ("task_limits", '{"p": {"time": 5}}', True, {"p": {"time": 5}}),
    ("task_limits", {1: {"time": 5}}, False, {"1": {"time": 5}}),
    ("task_limits", [], False, Refused("must be a table, got list")),
    ("task_limits", {"p": {"speed": 1}}, False, Refused("[p] unknown limit 'speed' (known: time, cpu, memory_mb)")),
    ("log_level", "debug", False, "DEBUG"),
    ("log_level", "loud", False, Refused("must be one of DEBUG, INFO, WARNING, ERROR, got 'LOUD'")),
    ("log_level", 3, False, Refused("must be a string, got int 3")),
    ("executor_priority", "idle", False, "idle"),
    ("server_url", "ftp://x", False, Refused("must be an http(s) URL like http://host:3010/api")),
    ("pool_size", " 4 ", True, 4),
    ("pool_size", 4.0, False, 4),
    ("pool_size", 4.5, False, Refused("must be a whole number, got 4.5")),
    ("pool_size", "4.5", True, Refused("must be a whole number, got '4.5'")),
    ("pool_size", True, False, Refused("must be a number, got True")),
    ("pool_size", 0, False, Refused("must be between 1 and 256, got 0")),
    ("no_task_sleep", 5, False, 5.0),
    ("no_task_sleep", "2.5", True, 2.5),
    ("no_task_sleep", "soon", True, Refused("must be a number, got 'soon'")),
    ("no_task_sleep", "nan", True, Refused("must be a finite number, got nan")),
    ("no_task_sleep", "5", False, Refused("must be a number, got '5'")),
]


@pytest.mark.parametrize(("key", "raw", "from_text", "expected"), COERCED)
def test_coerce_each_kind(key, raw, from_text, expected):
    from supervisor.settings import SPECS_BY_KEY, _coerce

    spec = SPECS_BY_KEY[key]
    if isinstance(expected, Refused):
        with pytest.raises(ValueError) as caught:
            _coerce(spec, raw, from_text)
        assert str(caught.value) == expected.reason
    else:
        got = _coerce(spec, raw, from_text)
        assert got == expected and type(got) is type(expected)


def test_dev_pauses_a_few_seconds_after_a_failure_unless_the_author_said_otherwise(tmp_path):
    """Issue 23.1: config.py's 1800 s TASK_ERROR_SLEEP is the fleet's; --dev pauses 5 s. A value
    from worker.toml, the environment or a flag is kept (test_dev.py: a real --dev worker's pause)."""
    from supervisor.reloader import DEV_TASK_ERROR_SLEEP, dev_settings

    s = dev_settings(load(config, tmp_path, {}, environ={}))
    assert (s.task_error_sleep, s.sources["task_error_sleep"]) == (DEV_TASK_ERROR_SLEEP, "--dev") == (5.0, "--dev")
    assert dev_settings(load(config, tmp_path, {}, environ={"HIVE_TASK_ERROR_SLEEP": "600"})).task_error_sleep == 600
    assert dev_settings(load(_config(TASK_ERROR_SLEEP=2), tmp_path, {}, environ={})).task_error_sleep == 2
