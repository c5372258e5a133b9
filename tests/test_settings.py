"""Settings precedence (flag > env > worker.toml > config.py) and the clear error for bad values."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest
from conftest import MAIN, ROOT, clean_env

import config
from supervisor.settings import SettingsError, load


def _run(home, *args, env=None):
    e = clean_env(env)
    for k in list(e):
        if k.startswith("HIVE_"):
            del e[k]
    e.update(env or {})
    return subprocess.run([sys.executable, str(MAIN), "--home", str(home), *args], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=60)


def test_precedence_flag_over_env_over_toml_over_config(tmp_path):
    (tmp_path / "worker.toml").write_text('pool_size = 3\nno_task_sleep = 7\nserver_url = "http://toml:1/api"\n')
    env = {"HIVE_POOL_SIZE": "5", "HIVE_SERVER_URL": "http://env:2/api"}
    s = load(config, tmp_path, {"pool_size": "6"}, environ=env)
    assert s.pool_size == 6 and s.sources["pool_size"] == "flag --pool-size"
    assert s.server_url == "http://env:2/api" and s.sources["server_url"] == "environment HIVE_SERVER_URL"
    assert s.no_task_sleep == 7.0 and s.sources["no_task_sleep"].endswith("worker.toml")
    assert s.time_error_sleep == config.TIME_ERROR_SLEEP and s.sources["time_error_sleep"] == "config.py"


def test_print_config_shows_values_and_sources(tmp_path):
    (tmp_path / "worker.toml").write_text("pool_size = 3\n[task_limits.example]\ntime = 5\n")
    r = _run(tmp_path, "--print-config", "--no-task-sleep", "9", env={"HIVE_TASK_ERROR_SLEEP": "0"})
    assert r.returncode == 0, r.stderr
    import tomllib

    data = tomllib.loads(r.stdout)
    assert data["pool_size"] == 3 and data["no_task_sleep"] == 9.0 and data["task_error_sleep"] == 0.0
    assert data["task_limits"] == {"example": {"time": 5}, "prom_pars": config.TASK_LIMITS["prom_pars"]}
    assert "# pool_size: from " + str(tmp_path / "worker.toml") in r.stdout
    assert "# no_task_sleep: from flag --no-task-sleep" in r.stdout
    assert "# task_error_sleep: from environment HIVE_TASK_ERROR_SLEEP" in r.stdout


def test_version_flag(tmp_path):
    r = _run(tmp_path, "--version")
    assert r.returncode == 0 and r.stdout.strip() == config.WORKER_VERSION == "2.0.0"


@pytest.mark.parametrize("toml, needle", [
    ("pool_sise = 3\n", "unknown setting 'pool_sise'"),
    ('pool_size = "four"\n', "pool_size must be a whole number"),
    ("pool_size = 0\n", "pool_size must be between 1 and 256"),
    ("no_task_sleep = -1\n", "no_task_sleep must be between 0"),
    ('server_url = "ftp://x"\n', "server_url must be an http(s) URL"),
    ('log_level = "LOUD"\n', "log_level must be one of"),
    ("[task_limits.x]\nmemroy_mb = 3\n", "unknown limit 'memroy_mb'"),
    ("[task_limits.x]\ntime = -3\n", "time must be a finite number >= 0"),
    ("pool_size = \n", "not valid TOML"),
])
def test_bad_toml_value_is_one_clear_line(tmp_path, toml, needle):
    # How main.py shows it (exit 2, that one line on stderr): the real run below.
    (tmp_path / "worker.toml").write_text(toml)
    with pytest.raises(SettingsError) as refused:
        load(config, tmp_path, {}, environ={})
    message = str(refused.value)
    assert needle in message and "worker.toml" in message and "\n" not in message, message


def test_bad_toml_value_stops_the_worker_with_one_clear_line(tmp_path):
    (tmp_path / "worker.toml").write_text("pool_sise = 3\n")
    r = _run(tmp_path, "--print-config")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown setting 'pool_sise'" in lines[0] and "worker.toml" in lines[0], r.stderr


@pytest.mark.parametrize("env, needle", [
    ({"HIVE_POOL_SIZE": "lots"}, "HIVE_POOL_SIZE must be a whole number, got 'lots'"),
    ({"HIVE_TASK_LIMITS": "[x"}, "HIVE_TASK_LIMITS is neither a JSON object nor a TOML table"),
])
def test_bad_env_value(tmp_path, env, needle):
    with pytest.raises(SettingsError) as refused:
        load(config, tmp_path, {}, environ=env)
    assert needle in str(refused.value) and "\n" not in str(refused.value), refused.value


def test_other_programs_hive_variables_never_stop_or_redirect_the_worker(tmp_path):
    """Issue 23.9: Apache Hive's HIVE_HOME and HIVE_CONF_DIR, and unknown HIVE_* names, are warned
    about at most; the home is --home or HIVE_WORKER_HOME; old HIVE_<NAME> settings still work."""
    env = {"HIVE_HOME": str(tmp_path / "apache-hive"), "HIVE_CONF_DIR": "/etc/hive/conf",
           "HIVE_NO_TASK_SLEEEP": "1", "HIVE_WORKER_POOL_SIZE": "3", "HIVE_POOL_SIZE": None,
           "HIVE_TASK_ERROR_SLEEP": "7"}
    r = subprocess.run([sys.executable, str(MAIN), "--print-config"], cwd=ROOT, env=clean_env(env),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"# home: {ROOT}" in r.stdout and not (tmp_path / "apache-hive").exists()
    import tomllib

    data = tomllib.loads(r.stdout)
    assert data["pool_size"] == 3 and data["task_error_sleep"] == 7.0
    assert "HIVE_CONF_DIR" not in r.stderr
    assert "HIVE_HOME is ignored" in r.stderr
    assert "HIVE_NO_TASK_SLEEEP is not a setting of this worker; ignored" in r.stderr
    assert "did you mean HIVE_WORKER_NO_TASK_SLEEP?" in r.stderr


def test_bad_flag_value(tmp_path):
    r = _run(tmp_path, "--print-config", "--pool-size", "0")
    assert r.returncode == 2 and "flag --pool-size must be between 1 and 256, got 0" in r.stderr


def test_broken_config_py_is_reported(tmp_path):
    bad = tmp_path / "bad_config.py"
    bad.write_text("from config import *\nPOOL_SIZE = 'x'\n")
    r = _run(tmp_path, "--config", str(bad), "--print-config")
    assert r.returncode == 2 and "config.py: POOL_SIZE must be a whole number" in r.stderr
    bad.write_text("raise RuntimeError('oops')\n")
    r = _run(tmp_path, "--config", str(bad), "--print-config")
    assert r.returncode == 2 and "RuntimeError: oops" in r.stderr


def test_limits_for_overlays_task_type(tmp_path):
    mod = types.SimpleNamespace(**{k: getattr(config, k) for k in dir(config) if k.isupper()})
    mod.TASK_LIMITS = {"prom_pars": {"time": 60, "memory_mb": 0}}
    s = load(mod, tmp_path, {}, environ={})
    assert s.limits_for("prom_pars") == {"time": 60.0, "cpu": config.TASK_CPU_LIMIT, "memory_mb": 0.0}
    assert s.limits_for("other")["time"] == config.TASK_TIME_LIMIT


def test_prom_allowed_hosts_from_toml_and_env(tmp_path):
    assert load(config, tmp_path, {}, environ={}).prom_allowed_hosts == ["prom.ua"]
    s = load(config, tmp_path, {}, environ={"HIVE_PROM_ALLOWED_HOSTS": "prom.ua, 127.0.0.1"})
    assert s.prom_allowed_hosts == ["prom.ua", "127.0.0.1"]
    (tmp_path / "worker.toml").write_text('prom_allowed_hosts = ["prom.ua", "my.shop.ua"]\n', encoding="utf-8")
    assert load(config, tmp_path, {}, environ={}).prom_allowed_hosts == ["prom.ua", "my.shop.ua"]
    for bad in ("http://prom.ua", "prom.ua:443", "prom.ua/path", "*", "*.", "x y"):
        with pytest.raises(SettingsError, match="bare host names"):
            load(config, tmp_path, {}, environ={"HIVE_PROM_ALLOWED_HOSTS": f"prom.ua,{bad}"})


def test_a_bad_server_flag_names_a_flag_that_exists(tmp_path):
    """Issue 23.6: the error for --server named --server-url, which was refused."""
    r = _run(tmp_path, "--server-url", "ftp://x", "--print-config")
    assert r.returncode == 2 and "flag --server-url must be an http(s) URL" in r.stderr, r.stderr
    assert _run(tmp_path, "--server-url", "http://h:1/api", "--print-config").returncode == 0
