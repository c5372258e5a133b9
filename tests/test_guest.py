"""The guest policy (supervisor/guest.py) over its inputs, its state changes, and its readers."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import shutil
import subprocess
import types

import orjson
import pytest
from conftest import wait_for

import config
from supervisor import guest
from supervisor.guest import CHECK_EVERY, Guest, Inputs, Pause, Policy, decide
from supervisor.settings import SettingsError, load

ON = Policy(pause_on_battery=True, user_active_minutes=5, cpu_busy_percent=50)


@pytest.mark.parametrize("policy, inputs, code", [
    (Policy(), Inputs(), None),  # nothing known: claim
    (Policy(), Inputs(on_battery=True), "battery"),  # the default pauses on battery
    (Policy(), Inputs(on_battery=False), None),
    (Policy(pause_on_battery=False), Inputs(on_battery=True), None),
    (Policy(), Inputs(idle_seconds=1, other_cpu_percent=99), None),  # the other two are off by default
    (ON, Inputs(idle_seconds=299.0), "user"),  # input within the last 5 minutes
    (ON, Inputs(idle_seconds=300.0), None),
    (ON, Inputs(idle_seconds=None), None),  # input not knowable here: never a pause
    (ON, Inputs(other_cpu_percent=50.5), "cpu"),
    (ON, Inputs(other_cpu_percent=50.0), None),
    (ON, Inputs(on_battery=True, idle_seconds=1, other_cpu_percent=90), "battery"),  # battery first
    (ON, Inputs(idle_seconds=1, other_cpu_percent=90), "user"),
    (ON, Inputs(on_battery=False, pause_file="pause file x exists"), "file"),  # the operator wins
    (Policy(pause_on_battery=False), Inputs(pause_file="pause file x exists"), "file"),
])
def test_decide(policy, inputs, code):
    pause = decide(policy, inputs)
    assert (pause and pause.code) == code, pause


def test_reasons_name_the_setting_and_the_reading():
    assert decide(ON, Inputs(on_battery=True)) == Pause("battery", "on battery")
    assert "12 s ago" in decide(ON, Inputs(idle_seconds=12)).text
    assert "PAUSE_WHEN_USER_ACTIVE_MINUTES=5" in decide(ON, Inputs(idle_seconds=12)).text
    assert "73%" in decide(ON, Inputs(other_cpu_percent=73.2)).text


def _settings(**over):
    values = {"pause_on_battery": True, "pause_when_user_active_minutes": 0.0, "pause_when_cpu_busy_percent": 0.0}
    values.update(over)
    return types.SimpleNamespace(**values)


def test_one_log_line_per_change_of_state(tmp_path, caplog):
    inputs = tmp_path / "inputs.json"
    g = Guest(_settings(), tmp_path, environ={guest.INPUTS_ENV: str(inputs)})
    caplog.set_level(logging.INFO, logger="hive.guest")
    now = 1000.0

    def step(readings: dict | None = None) -> str | None:
        nonlocal now
        if readings is not None:
            inputs.write_bytes(orjson.dumps(readings))
        now += CHECK_EVERY
        return g.paused(now)

    assert step({"on_battery": False}) is None
    assert step({"on_battery": True}) == "on battery"
    assert step() == "on battery" and step() == "on battery"  # still on battery: no new line
    (tmp_path / "pause.txt").write_text("disk swap tonight\n")
    assert "disk swap tonight" in step()
    (tmp_path / "pause.txt").unlink()
    assert step() == "on battery"
    assert step({"on_battery": False}) is None
    assert step() is None
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("pausing: on battery")
    assert lines[1].startswith(f"pausing: pause file {tmp_path / 'pause.txt'} exists ('disk swap tonight')")
    assert lines[2].startswith("pausing: on battery (before: pause file)")
    assert lines[3].startswith("resuming: paused for ")
    assert len(lines) == 4, lines


def test_readings_between_checks_are_not_repeated(tmp_path):
    inputs = tmp_path / "inputs.json"
    inputs.write_bytes(b'{"on_battery": true}')
    g = Guest(_settings(), tmp_path, environ={guest.INPUTS_ENV: str(inputs)})
    assert g.paused(10.0) == "on battery"
    inputs.write_bytes(b'{"on_battery": false}')
    assert g.paused(10.0 + CHECK_EVERY / 2) == "on battery"  # not read again yet
    assert g.paused(10.0 + CHECK_EVERY) is None


def test_bad_override_values_are_ignored(tmp_path):
    inputs = tmp_path / "inputs.json"
    inputs.write_bytes(b'{"on_battery": "yes", "idle_seconds": [1], "other_cpu_percent": true}')
    g = Guest(_settings(pause_when_user_active_minutes=1.0, pause_when_cpu_busy_percent=1.0), tmp_path,
              environ={guest.INPUTS_ENV: str(inputs)})
    got = g.read(0.0)
    assert not isinstance(got.idle_seconds, list) and not isinstance(got.other_cpu_percent, bool)
    assert got.on_battery != "yes"
    inputs.write_bytes(b"\x00not json")
    assert g.read(0.0).pause_file is None  # unreadable: the OS readings stay


def test_cpu_reader_gives_a_share_after_one_window():
    reader = guest.CpuReader()
    assert reader.read(0.0) is None  # nothing to compare with yet
    assert reader.read(1.0) is None  # within the window: the last value
    value = reader.read(guest.CPU_WINDOW + 0.5)
    assert value is not None and 0.0 <= value <= 100.0


def test_battery_reader_answers_without_a_battery():
    assert guest.read_battery() in (None, True, False)


def test_settings_parse_booleans_and_ranges(tmp_path):
    s = load(config, tmp_path, {}, environ={"HIVE_PAUSE_ON_BATTERY": "off", "HIVE_CPU_CAP_PERCENT": "50"})
    assert s.pause_on_battery is False and s.cpu_cap_percent == 50.0
    assert load(config, tmp_path, {"pause_on_battery": "yes"}, environ={}).pause_on_battery is True
    (tmp_path / "worker.toml").write_text("pause_on_battery = false\npause_when_user_active_minutes = 10\n")
    s = load(config, tmp_path, {}, environ={})
    assert s.pause_on_battery is False and s.pause_when_user_active_minutes == 10.0
    with pytest.raises(SettingsError, match="HIVE_PAUSE_ON_BATTERY must be true or false"):
        load(config, tmp_path, {}, environ={"HIVE_PAUSE_ON_BATTERY": "maybe"})
    with pytest.raises(SettingsError, match="--pause-when-cpu-busy-percent must be between 0 and 100"):
        load(config, tmp_path, {"pause_when_cpu_busy_percent": "120"}, environ={})
    (tmp_path / "worker.toml").write_text("pause_on_battery = 1\n")
    with pytest.raises(SettingsError, match="pause_on_battery must be true or false"):
        load(config, tmp_path, {}, environ={})


# ---- the Linux idle reader against a real X server ----------------------------------------------

def _xtest():
    name = ctypes.util.find_library("Xtst")
    return ctypes.CDLL(name) if name else None


@pytest.mark.skipif(not shutil.which("Xvfb") or not ctypes.util.find_library("Xss") or not _xtest(),
                    reason="needs Xvfb, libXss and libXtst")
def test_x11_idle_time_grows_and_input_resets_it(monkeypatch):
    display = ":87"
    xvfb = subprocess.Popen(["Xvfb", display, "-nolisten", "tcp"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        monkeypatch.setenv("DISPLAY", display)
        reader = wait_for(lambda: (r := guest.IdleReader()).why_unsupported is None and r, 20,
                          what="Xvfb to accept connections")
        wait_for(lambda: (reader.read() or 0) >= 1.0, 20, what="idle time to grow")
        x11 = ctypes.CDLL(ctypes.util.find_library("X11"))
        x11.XOpenDisplay.restype = ctypes.c_void_p
        x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
        dpy = x11.XOpenDisplay(display.encode())
        xtst = _xtest()
        xtst.XTestFakeMotionEvent.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                              ctypes.c_ulong]
        x11.XFlush.argtypes = [ctypes.c_void_p]
        xtst.XTestFakeMotionEvent(dpy, -1, 10, 10, 0)  # the mouse moves: the user is back
        x11.XFlush(dpy)
        wait_for(lambda: (reader.read() or 99) < 1.0, 20, what="idle time to reset after input")
    finally:
        xvfb.terminate()
        xvfb.wait(10)


def test_idle_reader_says_why_without_a_display(monkeypatch, tmp_path, caplog):
    if os.name == "nt":
        pytest.skip("Windows always has GetLastInputInfo")
    monkeypatch.delenv("DISPLAY", raising=False)
    reader = guest.IdleReader()
    assert reader.read() is None and "DISPLAY" in reader.why_unsupported
    caplog.set_level(logging.INFO, logger="hive.guest")
    Guest(_settings(pause_when_user_active_minutes=0), tmp_path, environ={}).describe_start()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # off: nothing to warn about
    Guest(_settings(pause_when_user_active_minutes=5), tmp_path, environ={}).describe_start()
    warning = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warning) == 1 and "PAUSE_WHEN_USER_ACTIVE_MINUTES is set but user input cannot be seen" in warning[0]
    assert "has no effect on this PC" in warning[0]
