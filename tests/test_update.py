"""Self-update (issues 6, 15): refusals, signed releases, the updater script's steps, crash safety,
and full real cycles.

Fast tests call prepare()/on_start()/on_healthy() directly and run updater.sh on stand-in
binaries (small shell scripts that answer --self-test and behave healthy, crash or hang
when started) in a temporary install folder. The slow ones build two real one-file
binaries (the repo, and a copy with another WORKER_VERSION) once per session with the
release build command, and run the whole cycle against the dev server and a local HTTP
server holding the release zips.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import psutil
import pytest
from conftest import IN_WINE, ROOT, result_of, wait_for
from support.fleetkeys import FAR, keypair, trust_of

from release import signing
from supervisor.update import download as update_download
from supervisor.update import extract as update_extract
from supervisor.update import records as update_records
from supervisor.update import scripts as update_scripts
from supervisor.update import startup as update_startup
from supervisor.update import updater
from supervisor.update import verify as update_verify
from supervisor.update.errors import UpdateRefused

POSIX = os.name == "posix"
posix_only = pytest.mark.skipif(not POSIX, reason="updater.sh, stand-ins and POSIX modes; updater.bat runs on Windows")
# The stand-ins below are POSIX shell scripts: Windows cannot run them as worker.exe. There the
# same refusals, self-tests and cycles run on real worker.exe builds (test_frozen.py and
# test_update_windows.py).
standin_binaries = pytest.mark.skipif(not POSIX, reason="stand-in binaries are shell scripts; "
                                      "Windows runs these paths on real worker.exe builds")
TAG_ENV = "UPDATE_TEST_TAG"  # not HIVE_*: it must survive into every process the updater starts
# The updater scripts: one copy each, at the repo root (a build carries them as data files).
UPDATER_BAT = (ROOT / "updater.bat").read_bytes()
UPDATER_SH = (ROOT / "updater.sh").read_bytes()


# ---- helpers: a file server, stand-in binaries, zips ------------------------------------------------

class FileServer:
    """Serves registered bodies; modes: ok, truncate (announces more than it sends), nolength, slow,
    trickle (one byte every 50 ms; ``trickle_cut`` is set once the client has hung up)."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[bytes, str]] = {}
        self.hits: list[str] = []
        self.trickle_cut = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - name fixed by the base class
                server.hits.append(self.path)
                body, mode = server.routes.get(self.path, (b"", "missing"))
                if mode == "missing":
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if mode == "slow":
                    time.sleep(3)
                if mode == "trickle":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.close_connection = True
                    try:
                        for i in range(len(body)):
                            self.wfile.write(body[i:i + 1])
                            self.wfile.flush()
                            time.sleep(0.05)
                    except OSError:
                        server.trickle_cut.set()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream" if mode != "slow" else "text/html")
                if mode == "nolength":
                    self.send_header("Connection", "close")
                else:
                    self.send_header("Content-Length", str(len(body) * (2 if mode == "truncate" else 1)))
                self.end_headers()
                self.wfile.write(body)
                if mode in ("truncate", "nolength"):
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def add(self, path: str, body: bytes, mode: str = "ok") -> str:
        self.routes[path] = (body, mode)
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.httpd.server_close()


@pytest.fixture
def files() -> Iterator[FileServer]:
    srv = FileServer()
    yield srv
    srv.stop()


def standin(version: str, selftest: str = "ok", run: str = "healthy", upd: Path | None = None,
            marks: Path | None = None) -> bytes:
    """A stand-in worker binary (POSIX shell). --self-test: ok | fail | hang. Started: healthy |
    crash | hang | old (what an old worker does: note it ran and keep running). With ``marks``
    every run, the self-test included, leaves a line there: "<version> <pid>" or "<version> self-test"."""
    lines = ["#!/bin/sh", 'if [ "$1" = "--self-test" ]; then']
    if marks is not None:
        lines += [f'  echo "{version} self-test" >> "{marks}"']
    lines += {"ok": [f'  echo "self-test ok: version {version}, tasks: example"; exit 0'],
              "fail": [f'  echo "self-test FAILED: version {version}: broken on purpose" >&2; exit 1'],
              "hang": ["  exec sleep 600"]}[selftest]
    lines += ["fi"]
    if marks is not None:
        lines += [f'echo "{version} $$" >> "{marks}"']
    if upd is not None and run != "old":
        lines += [f'echo "$$ $$" > "{upd}/started.pid"']
    lines += {"healthy": ["sleep 0.5", f'mkdir "{upd}/decided"', "exec sleep 600"],
              "crash": ["exit 3"],
              "hang": ["exec sleep 600"],
              "old": ["exec sleep 600"]}[run]
    return ("\n".join(lines) + "\n").encode()


def make_zip(members: dict[str, bytes | tuple[bytes, int]], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """name -> bytes (a regular 0755 file) or (bytes, st_mode) for special members."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, value in members.items():
            data, mode = value if isinstance(value, tuple) else (value, stat.S_IFREG | 0o755)
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = mode << 16
            info.compress_type = compression
            zf.writestr(info, data)
    return buf.getvalue()


def release_zip(binary: bytes) -> bytes:
    return make_zip({update_extract.BINARY: binary, "updater.bat": UPDATER_BAT})


def settings_for(home: Path, **values: Any) -> SimpleNamespace:
    """Settings for prepare(); by default the lab opt-out (unsigned releases), which the tests of the
    download, the zip checks and the pre-flight use; the signing tests pass keys and turn it off."""
    base = {"update_max_bytes": 50 * 1024 * 1024, "update_root_keys": [], "update_allow_unsigned": True,
            "update_error_sleep": 0.0, "update_health_timeout": 5.0}
    base.update(values)
    return SimpleNamespace(home=home, values=base, sources={}, **base)


def signed_settings(home: Path, *root_keys: str, **values: Any) -> SimpleNamespace:
    return settings_for(home, update_root_keys=list(root_keys), update_allow_unsigned=False, **values)


def signed_zip(binary: bytes, version: str, sequence: int, key: Path, plat: str | None = None,
               inside: bytes | None = None, trust: bytes | None = None) -> bytes:
    """A release zip with a statement for ``binary`` signed by the release key ``key``, with the
    delegation keypair() made for it (or ``trust``); ``inside``: put these bytes in the zip instead
    of the signed binary (a tampered release)."""
    statement = signing.make_statement(hashlib.sha256(binary).hexdigest(), len(binary), version,
                                             plat or update_verify.platform_tag(), sequence)
    return make_zip({update_extract.BINARY: binary if inside is None else inside,
                     "updater.bat": UPDATER_BAT, "release.json": statement,
                     "release.sig": signing.sign_statement(statement, key),
                     "release-trust.json": trust_of(key) if trust is None else trust})


def params_for(url: str, body: bytes, **extra: Any) -> dict:
    return {"url": url, "sha256": hashlib.sha256(body).hexdigest(), "size": len(body), **extra}


def kill_tagged(tag: str) -> None:
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(TAG_ENV) == tag:
                proc.kill()
        except (psutil.Error, OSError):
            continue


@pytest.fixture
def tag() -> Iterator[str]:
    """Every process a test starts carries this tag in its environment; all are killed afterwards."""
    value = uuid.uuid4().hex
    yield value
    kill_tagged(value)


# ---- the scripts -----------------------------------------------------------------------------------

def test_scripts_are_read_from_the_repo_root_from_source_and_from_the_bundle_when_frozen(tmp_path: Path,
                                                                                       monkeypatch) -> None:
    assert update_scripts.folder() == ROOT and update_scripts.missing() is None
    assert update_scripts.for_this_platform() == (update_scripts.this_platform(),
                                                  UPDATER_BAT if os.name == "nt" else UPDATER_SH)
    bundle = tmp_path / "_MEI123"
    bundle.mkdir()
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(bundle), raising=False)
    for name in update_scripts.NAMES:
        (bundle / name).write_bytes(b"the bundled " + name.encode())
    assert update_scripts.folder() == bundle and update_scripts.missing() is None
    name = update_scripts.this_platform()
    assert update_scripts.for_this_platform() == (name, b"the bundled " + name.encode())


def test_a_frozen_build_without_its_scripts_refuses_every_update_in_one_line(tmp_path: Path, monkeypatch,
                                                                            caplog) -> None:
    """The plain ``pyinstaller`` command bundles no data files: such a binary refuses updates at once
    (nothing drained or downloaded), and says so once at start instead of writing a script."""
    bundle = tmp_path / "_MEI123"
    bundle.mkdir()
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(bundle), raising=False)
    name = update_scripts.this_platform()
    line = f"self-update is off: this build does not carry {name} (a release is built by python -m release.build)"
    home = tmp_path / "home"
    assert updater.refusal_at_once(settings_for(home)) == line
    assert _refused(home, {"url": "http://127.0.0.1:9/r.zip"}) == line
    with pytest.raises(UpdateRefused, match=re.escape(line)):
        update_scripts.for_this_platform()
    install = tmp_path / "install"
    install.mkdir()
    update_startup._on_start(home, install / update_extract.BINARY, frozen=True)
    assert not (install / name).exists() and line in caplog.text
    # A worker without a release key says that first (its start warning names it too).
    assert updater.refusal_at_once(signed_settings(home)) == updater.NO_KEY


def test_updater_bat_syntax() -> None:
    """What cmd.exe needs and CI can check without Windows: CRLF only, ASCII, every goto/call
    target exists, labels unique, no delayed expansion (a '!' in a path would be eaten),
    parentheses balanced on each line, every path expansion quoted, no PowerShell/VBS."""
    raw = UPDATER_BAT
    raw.decode("ascii")
    assert b"\n" not in raw.replace(b"\r\n", b""), "LF-only line ends confuse cmd.exe's goto"
    text = raw.decode("ascii")
    lines = text.split("\r\n")
    labels = [line[1:].split()[0].lower() for line in lines if line.startswith(":") and not line.startswith("::")]
    assert len(labels) == len(set(labels)), "duplicate labels"
    for target in re.findall(r"\b(?:goto|call)\s+:?([A-Za-z_][\w]*)", text, re.I):
        assert target.lower() in labels or target.lower() == "eof", f"no label :{target}"
    low = text.lower()
    assert "enabledelayedexpansion" not in low.replace("disabledelayedexpansion", "")
    for banned in ("powershell", "wscript", "cscript", ".vbs", "runas", "timeout /t"):
        assert banned not in low, banned
    for number, line in enumerate(lines, 1):
        if line.lower().startswith("rem ") or line.startswith(":"):
            continue
        code = re.sub(r'"[^"]*"', '""', line)  # what is inside quotes does not count
        assert code.count("(") == code.count(")"), f"line {number}: unbalanced parentheses: {line}"
        for var in ("EXE", "STAGED", "OLD", "UPD", "LOG", "RUN", "TARGET"):
            assert f"%{var}%" not in code, f"line {number}: %{var}% outside quotes: {line}"
    # The same steps and log lines as updater.sh (the 1.0.x call is Windows only).
    sh = UPDATER_SH.decode()
    update_part = text[:text.index("\r\n:legacy\r\n")]
    messages = re.findall(r'updater: ([a-z][^"%\r]*?)(?: "|%|$)', update_part, re.M)
    assert len(messages) >= 12
    for message in messages:
        assert message.strip(" :") in sh, f"updater.sh lacks the log line {message!r}"


@standin_binaries
def test_updater_sh_syntax() -> None:
    subprocess.run(["sh", "-n", str(ROOT / "updater.sh")], check=True)
    if shutil.which("shellcheck"):  # not installed in CI; run when present
        subprocess.run(["shellcheck", "-s", "sh", str(ROOT / "updater.sh")], check=True)


# ---- prepare: refusals ------------------------------------------------------------------------------

def test_same_version_is_success_without_download(tmp_path: Path, files: FileServer) -> None:
    url = files.add("/r.zip", b"x")
    assert updater.prepare({"url": url, "version": "2.0.0"}, settings_for(tmp_path), "2.0.0") is None
    assert files.hits == []


@pytest.mark.parametrize("params, message", [
    ({}, "params.url is missing"),
    ({"url": "file:///etc/passwd"}, "http(s) URL"),
    ({"url": "http://h/x", "sha256": "abc"}, "64 hex digits"),
    ({"url": "http://h/x", "size": -1}, "positive whole number"),
    ({"url": "http://h/x", "version": "../x"}, "not a version string"),
    ({"url": "http://h/x", "release": "{}"}, "come together"),
    ({"url": "http://h/x", "sequence": 0}, "params.sequence must be a positive whole number"),
    ([1, 2], "JSON object"),
])
def test_bad_params_refused(tmp_path: Path, params: Any, message: str) -> None:
    with pytest.raises(UpdateRefused, match=re.escape(message)):
        updater.prepare(params, settings_for(tmp_path), "2.0.0")


@standin_binaries
def test_good_release_is_staged(tmp_path: Path, files: FileServer) -> None:
    body = release_zip(standin("9.1.0"))
    url = files.add("/ok.zip", body)
    staged = updater.prepare(params_for(url, body, version="9.1.0"), settings_for(tmp_path), "2.0.0")
    assert staged is not None and staged.version == "9.1.0"
    assert staged.binary == tmp_path / "update" / "staged" / update_extract.BINARY
    assert staged.binary.read_bytes() == standin("9.1.0") and os.access(staged.binary, os.X_OK)
    assert staged.sha256 == hashlib.sha256(body).hexdigest()
    assert not (tmp_path / "update" / "release.zip").exists()  # the zip goes once unpacked
    assert sorted(p.name for p in (tmp_path / "update").iterdir()) == ["preflight", "staged", "staged.json"]


@standin_binaries
def test_version_learned_from_the_self_test(tmp_path: Path, files: FileServer) -> None:
    body = release_zip(standin("9.1.0"))
    url = files.add("/ok.zip", body)
    assert updater.prepare({"url": url}, settings_for(tmp_path), "9.1.0") is None  # already running it
    staged = updater.prepare({"url": url}, settings_for(tmp_path), "2.0.0")
    assert staged is not None and staged.version == "9.1.0"


def _refused(tmp_path: Path, params: dict, settings: Any = None) -> str:
    with pytest.raises(UpdateRefused) as info:
        updater.prepare(params, settings or settings_for(tmp_path), "2.0.0")
    assert not (tmp_path / "update" / "staged" / update_extract.BINARY).exists()
    assert not any((tmp_path / "update").glob("*.part")) and not (tmp_path / "update" / "release.zip").exists()
    return str(info.value)


def test_wrong_hash_and_wrong_size_refused(tmp_path: Path, files: FileServer) -> None:
    body = release_zip(standin("9.1.0"))
    url = files.add("/ok.zip", body)
    assert "SHA-256 is" in _refused(tmp_path, dict(params_for(url, body), sha256="0" * 64))
    assert "announces" in _refused(tmp_path, dict(params_for(url, body), size=len(body) + 1))
    assert "bytes, more than params.size" in _refused(tmp_path, dict(params_for(url, body), size=len(body) - 1))
    url2 = files.add("/nolength.zip", body, "nolength")
    assert "more than params.size" in _refused(tmp_path, dict(params_for(url2, body), size=len(body) - 10))
    assert "got" in _refused(tmp_path, dict(params_for(url2, body), size=len(body) + 10))


def test_oversize_and_truncated_downloads_refused(tmp_path: Path, files: FileServer) -> None:
    body = release_zip(standin("9.1.0") + os.urandom(300_000))  # incompressible
    small = settings_for(tmp_path, update_max_bytes=100_000)
    url = files.add("/big.zip", body)
    assert "over UPDATE_MAX_BYTES=100000" in _refused(tmp_path, {"url": url}, small)
    url = files.add("/big-nolength.zip", body, "nolength")
    assert "at least" in _refused(tmp_path, {"url": url}, small)
    url = files.add("/truncated.zip", body, "truncate")
    assert "truncated" in _refused(tmp_path, {"url": url})
    url = files.add("/cut.zip", body[: len(body) // 2], "nolength")  # no length announced: the zip is broken
    assert "not a readable zip" in _refused(tmp_path, {"url": url})
    assert "HTTP 404" in _refused(tmp_path, {"url": files.add("/x", b"") + "nothing"})


@standin_binaries
def test_no_release_key_means_self_update_is_off(tmp_path: Path, files: FileServer, caplog) -> None:
    import logging

    body = release_zip(standin("9.1.0", marks=tmp_path / "ran"))
    url = files.add("/ok.zip", body)
    off = settings_for(tmp_path / "home", update_allow_unsigned=False)
    assert updater.refusal_at_once(off) == updater.NO_KEY == "self-update is off: this build has no release key"
    assert _refused(tmp_path / "home", params_for(url, body), off) == updater.NO_KEY
    assert files.hits == [] and not (tmp_path / "ran").exists()  # not downloaded, nothing run
    with caplog.at_level(logging.WARNING, logger="hive.update"):
        update_startup.check_settings(off)
    assert [r.levelname for r in caplog.records] == ["WARNING"] and updater.NO_KEY in caplog.text
    assert updater.refusal_at_once(signed_settings(tmp_path, keypair(tmp_path)[1])) is None


@standin_binaries
def test_signed_releases(tmp_path: Path, files: FileServer) -> None:
    """Only a statement signed by a trusted key, for this platform, with a newer sequence, whose
    binary is the one in the zip, gets as far as the self-test; nothing refused is ever run."""
    key, public = keypair(tmp_path)
    other, other_public = keypair(tmp_path, "other.key")
    home = tmp_path / "home"
    ran = tmp_path / "ran"
    good_bin = standin("9.1.0", marks=ran)
    keyed = signed_settings(home, other_public, public)  # rotation: the release is signed by the second key

    def refused(body: bytes, message: str, settings: Any = keyed, **params: Any) -> None:
        url = files.add(f"/r{len(files.routes)}.zip", body)
        got = _refused(home, dict(params_for(url, body), **params), settings)
        assert message in got, got
        assert "\n" not in got and not ran.exists()  # one line; nothing from it ran

    refused(release_zip(good_bin), "the release is not signed: no release.json and release.sig")
    refused(signed_zip(good_bin, "9.1.0", 5, other), "the delegation is not signed by a root key this worker trusts",
            signed_settings(home, public))  # another fleet's root and release key
    refused(signed_zip(good_bin, "9.1.0", 5, key, inside=standin("9.1.0", marks=ran) + b"# evil\n"),
            "the binary in the zip is not the signed one")
    refused(signed_zip(good_bin, "9.1.0", 1, key), "has sequence 1, not above this worker's (running 1")
    refused(signed_zip(good_bin, "9.1.0", 5, key, plat="plan9-mips"), "the release is for platform plan9-mips")
    refused(signed_zip(good_bin, "9.1.0", 5, key), "params.version is 9.2.0, the signed release is version 9.1.0",
            version="9.2.0")
    refused(signed_zip(good_bin, "9.1.0", 5, key), "params.sequence is 6, the signed release has sequence 5",
            sequence=6)
    statement = signing.make_statement("0" * 64, 1, "9.1.0", update_verify.platform_tag(), 5)
    sig = signing.sign_statement(statement, key)
    refused(signed_zip(good_bin, "9.1.0", 5, key), "does not verify",  # another statement's signature
            release=statement.replace(b"9.1.0", b"9.1.1").decode(), release_signature=sig.decode(),
            release_trust=trust_of(key).decode())

    body = signed_zip(good_bin, "9.1.0", 5, key)
    url = files.add("/good.zip", body)
    staged = updater.prepare({"url": url}, keyed, "2.0.0")  # url only, as a 1.0.x server sends it
    assert staged is not None and (staged.version, staged.sequence) == ("9.1.0", 5)
    assert staged.binary_sha256 == hashlib.sha256(good_bin).hexdigest()
    assert ran.read_text().split() == ["9.1.0", "self-test"]
    # The same signed release on the worker that runs it: nothing to do (and nothing run).
    ran.unlink()
    assert updater.prepare({"url": url}, keyed, "9.1.0") is None and not ran.exists()

    # Once sequence 5 was installed here (the new worker recorded it), 5 and below never come back.
    update_records.write_pending(home / "update", {"task_id": 1, "from": "2.0.0", "to": "9.1.0", "sequence": 5})
    [(_, ok, _, _)] = update_startup.on_healthy(home, "9.1.0", "w1")
    assert ok and update_records.highest_installed(home / "update") == 5
    hits = len(files.hits)
    refused(body, "has sequence 5, not above this worker's (running 1, highest installed here 5)")
    old_bin = standin("9.0.0", marks=ran)
    old = signed_zip(old_bin, "9.0.0", 4, key)
    with zipfile.ZipFile(io.BytesIO(old)) as zf:
        old_statement, old_sig = zf.read("release.json").decode(), zf.read("release.sig").decode()
    refused(old, "has sequence 4", sequence=4)  # refused before the download
    refused(old, "has sequence 4", release=old_statement, release_signature=old_sig,  # the same
            release_trust=trust_of(key).decode())
    assert len(files.hits) == hits + 1  # only the first one was downloaded
    assert updater.prepare({"url": files.add("/six.zip", signed_zip(good_bin, "9.1.0", 6, key))}, keyed,
                           "2.0.0") is not None
    ran.unlink()
    # An unreadable record is not "nothing installed".
    (home / "update" / "installed.json").write_text("{broken")
    refused(body, "cannot read")

    # The lab opt-out: an unsigned release goes through, a signed one is still checked.
    lab = settings_for(home, update_root_keys=[public], update_allow_unsigned=True)
    (home / "update" / "installed.json").unlink()
    ran.unlink(missing_ok=True)
    assert updater.prepare({"url": files.add("/unsigned.zip", release_zip(good_bin))}, lab, "2.0.0") is not None
    ran.unlink()
    refused(signed_zip(good_bin, "9.1.0", 5, other), "the delegation is not signed by a root key", lab)


@standin_binaries
def test_already_running_from_any_source_forgets_the_staged_release(tmp_path: Path, files: FileServer) -> None:
    """prepare() answers None as soon as the release is known to be the version that runs: from the
    signed statement in the params (before any download), the one in the zip, or the self-test's
    report; the release staged for it earlier is then forgotten. The params' bare claim answers
    before the home is looked at, so it leaves a staged release alone."""
    key, public = keypair(tmp_path)
    home = tmp_path / "home"
    ran = tmp_path / "ran"
    binary = standin("9.1.0", marks=ran)
    staged, record = home / "update" / "staged" / update_extract.BINARY, home / "update" / "staged.json"
    signed_body = signed_zip(binary, "9.1.0", 5, key)
    with zipfile.ZipFile(io.BytesIO(signed_body)) as zf:
        given = {"release": zf.read("release.json").decode(), "release_signature": zf.read("release.sig").decode(),
                 "release_trust": zf.read("release-trust.json").decode()}
    routes = {  # how the version becomes known: (settings, params)
        "the statement in the params": (signed_settings(home, public),
                                        {"url": files.add("/given.zip", signed_body), **given}),
        "the statement in the zip": (signed_settings(home, public), {"url": files.add("/zip.zip", signed_body)}),
        "the self-test": (settings_for(home), {"url": files.add("/unsigned.zip", release_zip(binary))}),
    }
    for route, (settings, params) in routes.items():
        assert updater.prepare(params, settings, "2.0.0") is not None, route
        assert staged.exists() and record.exists(), route
        hits = len(files.hits)
        ran.unlink()
        assert updater.prepare(params, settings, "9.1.0") is None, route
        assert not staged.exists() and not record.exists(), route
        assert len(files.hits) == hits and not ran.exists() or route == "the self-test", route
    assert ran.read_text().split() == ["9.1.0", "self-test"]  # only the self-test route ran it again
    settings, params = routes["the statement in the zip"]
    assert updater.prepare(params, settings, "2.0.0") is not None
    assert updater.prepare(dict(params, version="9.1.0"), settings, "9.1.0") is None
    assert staged.exists() and record.exists()


@standin_binaries
def test_key_delegation_revocation_expiry_and_root_chain(tmp_path: Path, files: FileServer) -> None:
    """The worker trusts root keys only; a release is signed by a release key that a root key
    delegated to, in an expiring, versioned delegation carried in the zip (issue 24, point 2).
    Every refusal is one line and nothing refused runs."""
    keys = tmp_path / "keys"
    keys.mkdir()

    def key(name: str) -> tuple[Path, str]:
        return keys / name, signing.keygen(keys / name)

    (root, root_pub), (root2, root2_pub), (evil, _) = key("root"), key("root2"), key("evil-root")
    (k1, k1_pub), (k2, k2_pub), (k3, _) = key("k1"), key("k2"), key("k3")
    home = tmp_path / "home"
    ran = tmp_path / "ran"
    good_bin = standin("9.1.0", marks=ran)
    settings = signed_settings(home, root_pub)  # the build's own root key (release.build --root-key)

    def zip_for(release_key: Path, trust: bytes) -> str:
        body = signed_zip(good_bin, "9.1.0", 5, release_key, trust=trust)
        return files.add(f"/r{len(files.routes)}.zip", body)

    def installs(release_key: Path, trust: bytes) -> None:
        staged = updater.prepare({"url": zip_for(release_key, trust)}, settings, "2.0.0")
        assert staged is not None and staged.version == "9.1.0" and ran.exists()
        ran.unlink()

    def refused(release_key: Path, trust: bytes, message: str) -> None:
        got = _refused(home, {"url": zip_for(release_key, trust)}, settings)
        assert message in got, got
        assert "\n" not in got and not ran.exists()

    v1 = signing.make_trust(1, [k1_pub, k2_pub], FAR, root)
    installs(k1, v1)  # delegated
    refused(k3, v1, "the release signature does not verify against any of the 2 release key(s) of delegation "
                    "version 1")  # a key the root never delegated to
    refused(k1, signing.make_trust(1, [k1_pub], FAR, evil),
            "the delegation is not signed by a root key this worker trusts (root version 0, 1 key(s))")
    refused(k1, b'{"type": "hive-worker-trust"}', "delegation is not a signed envelope")
    with zipfile.ZipFile(io.BytesIO(signed_zip(good_bin, "9.1.0", 5, k1, trust=v1))) as zf:
        bare = make_zip({n: zf.read(n) for n in zf.namelist() if n != "release-trust.json"})
    assert "the release carries no delegation (release-trust.json)" in _refused(
        home, {"url": files.add("/bare.zip", bare)}, settings)

    # Revoking k1: delegation version 2 names only k2. From then on, version 1 (which still names k1)
    # is refused here, whatever it signs.
    v2 = signing.make_trust(2, [k2_pub], FAR, root)
    refused(k1, v2, "does not verify against any of the 1 release key(s) of delegation version 2")
    refused(k1, v1, "the delegation (version 1) is older than version 2 already seen here: refused")
    refused(k2, v1, "the delegation (version 1) is older than version 2")
    installs(k2, v2)
    assert orjson.loads((home / "update" / "trust.json").read_bytes()) == {"delegation_version": 2, "root": None}

    # An expired delegation, even a newer one.
    refused(k2, signing.make_trust(3, [k2_pub], "2020-01-01T00:00:00Z", root),
            "the delegation (version 3) expired at 2020-01-01T00:00:00Z (now 20")

    # Root rotation: root version 2 (root2), signed by the current root and by itself, carried in the
    # chain; the delegation signed by root2 is accepted, and from then on the old root key (lost or
    # stolen) signs nothing this worker accepts, not even with a chain of its own.
    chain = [signing.make_root(2, [root2_pub], root, [root2])]
    installs(k2, signing.make_trust(4, [k2_pub], FAR, root2, chain))
    assert orjson.loads((home / "update" / "trust.json").read_bytes())["root"] == {"version": 2, "keys": [root2_pub]}
    refused(k2, signing.make_trust(5, [k2_pub], FAR, root),
            "the delegation is not signed by a root key this worker trusts (root version 2, 1 key(s))")
    evil_pub = signing.public_key_of(evil)
    forged = [signing.make_root(3, [evil_pub], root, [evil])]  # the stolen old root "rotates" to the thief's
    refused(k2, signing.make_trust(5, [k2_pub], FAR, evil, chain + forged),
            "not signed by a root key this worker trusts (root version 2")
    installs(k2, signing.make_trust(5, [k2_pub], FAR, root2, chain))  # the chain again: already walked
    # A root statement the new root did not sign too is refused (proof that someone holds the new key).
    unsigned_by_new = orjson.loads(signing.make_root(3, [evil_pub], root2, [evil]))
    unsigned_by_new["signatures"] = unsigned_by_new["signatures"][:1]
    refused(k2, signing.make_trust(6, [k2_pub], FAR, evil, [*chain, orjson.dumps(unsigned_by_new)]),
            "roots[1] (root version 3) is not signed by a key of its own")


@pytest.mark.parametrize("members, message", [
    ({"../worker": b"x"}, "'..' path"),
    ({"/worker": b"x"}, "absolute path"),
    ({"C:/worker": b"x"}, "drive"),
    ({"//server/share/worker": b"x"}, "absolute path"),
    # Windows' zipfile reads a backslash as a separator, so there it is refused as a '..' path.
    ({"..\\worker": b"x"}, "'..' path" if os.name == "nt" else "backslash"),
    ({"sub/worker": b"x"}, "in a folder"),
    ({"sub/": b""}, "directory"),
    ({"worker-extra": b"x", update_extract.BINARY: b"x"}, "not part of a release"),
    ({update_extract.BINARY: (b"/bin/sh", stat.S_IFLNK | 0o777)}, "link"),
    ({update_extract.BINARY: (b"", stat.S_IFIFO | 0o644)}, "special"),
    ({"updater.bat": b"x"}, f"no {update_extract.BINARY}"),
    ({f"f{i}": b"x" for i in range(9)}, "more than 8"),
])
def test_unsafe_zips_refused(tmp_path: Path, files: FileServer, members: dict, message: str) -> None:
    body = make_zip(members)
    url = files.add("/evil.zip", body)
    assert message in _refused(tmp_path, params_for(url, body))
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == []  # nothing written anywhere


def test_duplicate_and_bomb_members_refused(tmp_path: Path, files: FileServer) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, pytest.warns(UserWarning):
        zf.writestr(update_extract.BINARY, b"one")
        zf.writestr(update_extract.BINARY, b"two")
    url = files.add("/dup.zip", buf.getvalue())
    assert "duplicate" in _refused(tmp_path, params_for(url, buf.getvalue()))
    bomb = make_zip({update_extract.BINARY: b"\0" * (20 * 1024 * 1024)})
    url = files.add("/bomb.zip", bomb)
    assert "compression ratio" in _refused(tmp_path, params_for(url, bomb))


@pytest.mark.timeout(60)
def test_trickled_download_is_cut_at_the_deadline(tmp_path: Path, files: FileServer) -> None:
    """One byte every 50 ms never trips the 60 s read timeout; the overall deadline must still hold
    (it is checked after every receive, not after every 256 KB)."""
    url = files.add("/trickle.zip", b"x" * 200_000, "trickle")
    with pytest.raises(UpdateRefused, match=r"download: not complete after 1 s \((\d+) bytes so far\)") as info:
        update_download.download(url, tmp_path / "release.zip", 10**6, total_timeout=1.0)
    so_far = int(re.search(r"\((\d+) bytes", str(info.value)).group(1))
    assert 0 < so_far < 200_000
    assert files.trickle_cut.wait(10)  # the worker hung up
    assert list(tmp_path.iterdir()) == []


@standin_binaries
def test_a_release_waiting_to_be_installed_is_not_downloaded_again(tmp_path: Path, files: FileServer) -> None:
    """The server re-sends update_worker while the worker still runs the old version (the hand-over
    failed, or the worker restarted before it): the release already downloaded, verified and staged
    is used again, checked again, not downloaded again; anything else is downloaded afresh."""
    key, public = keypair(tmp_path)
    settings = signed_settings(tmp_path, public)
    upd = tmp_path / "update"
    body = signed_zip(standin("9.1.0"), "9.1.0", 5, key)
    url = files.add("/r.zip", body)
    first = updater.prepare({"url": url}, settings, "2.0.0")
    assert first is not None and files.hits == ["/r.zip"]
    for params in ({"url": url}, params_for(url, body, version="9.1.0", sequence=5)):
        again = updater.prepare(params, settings, "2.0.0")
        assert again is not None and files.hits == ["/r.zip"], files.hits
        assert (again.binary, again.binary_sha256, again.sha256, again.sequence, again.version) == \
            (first.binary, first.binary_sha256, first.sha256, 5, "9.1.0")
    # Another URL, another zip hash in the params: downloaded (the second one is refused for its hash).
    other = files.add("/other.zip", body)
    assert updater.prepare({"url": other}, settings, "2.0.0") is not None and files.hits[-1] == "/other.zip"
    assert "SHA-256 is" in _refused(tmp_path, dict(params_for(other, body), sha256="e" * 64), settings)
    assert files.hits.count("/other.zip") == 2 and not first.binary.exists()
    # The staged binary changed on disk since it was checked: downloaded again, the changed one never runs.
    assert updater.prepare({"url": url}, settings, "2.0.0") is not None and files.hits.count("/r.zip") == 2
    first.binary.write_bytes(standin("6.6.6", selftest="fail"))
    assert updater.prepare({"url": url}, settings, "2.0.0") is not None and files.hits.count("/r.zip") == 3
    assert first.binary.read_bytes() == standin("9.1.0")
    # A release rolled back on this PC stays refused at once, staged or not, never downloaded again.
    update_records.remember_bad(upd, "9.1.0", "rolled back: the new worker exited before it was healthy")
    hits = len(files.hits)
    for params in ({"url": url}, params_for(url, body, version="9.1.0")):
        assert "was rolled back on this PC" in _refused(tmp_path, params, settings)
    assert len(files.hits) == hits and not first.binary.exists()


@posix_only
def test_update_files_are_private_whatever_the_umask(tmp_path: Path, files: FileServer) -> None:
    body = release_zip(standin("9.1.0"))
    url = files.add("/ok.zip", body)
    upd = tmp_path / "update"
    old_umask = os.umask(0)
    try:
        staged = updater.prepare(params_for(url, body), settings_for(tmp_path), "2.0.0")
        update_download.download(url, tmp_path / "plain.zip", 10**6)
        update_records.write_pending(upd, {"task_id": 1})
        update_records.remember_bad(upd, "9.0.0", "rolled back")
    finally:
        os.umask(old_umask)
    assert staged is not None

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    assert {p.name: mode(p) for p in (upd, upd / "staged", upd / "preflight")} == \
        {"update": 0o700, "staged": 0o700, "preflight": 0o700}
    assert mode(staged.binary) == 0o700
    assert mode(upd / "pending.json") == mode(upd / "bad-versions.json") == mode(tmp_path / "plain.zip") == 0o600


@standin_binaries
def test_staged_binary_must_pass_its_self_test(tmp_path: Path, files: FileServer, monkeypatch) -> None:
    failing = release_zip(standin("9.1.0", selftest="fail"))
    url = files.add("/fail.zip", failing)
    message = _refused(tmp_path, params_for(url, failing))
    assert "failed its self-test (exit status 1)" in message and "broken on purpose" in message
    other = release_zip(standin("9.1.1"))
    url = files.add("/other.zip", other)
    assert "reports version 9.1.1, params.version is 9.1.0" in _refused(tmp_path, params_for(url, other,
                                                                                          version="9.1.0"))
    not_a_binary = release_zip(b"\x7fELF garbage")
    url = files.add("/garbage.zip", not_a_binary)
    assert "cannot be run" in _refused(tmp_path, params_for(url, not_a_binary))
    monkeypatch.setattr(updater, "SELF_TEST_TIMEOUT", 1.0)
    hanging = release_zip(standin("9.1.0", selftest="hang"))
    url = files.add("/hang.zip", hanging)
    started = time.monotonic()
    assert "did not finish within 1 s" in _refused(tmp_path, params_for(url, hanging))
    assert time.monotonic() - started < 10


# ---- updater.sh on stand-ins: every step, every ending -----------------------------------------------

class Install:
    """A temporary install: home/worker (old stand-in), a staged new stand-in, a pending update,
    and a process standing in for the old supervisor. Runs updater.sh the way launch() does."""

    def __init__(self, tmp_path: Path, tag: str, new_run: str = "healthy", health: int = 5) -> None:
        self.home = tmp_path / "home"
        self.upd = self.home / "update"
        self.exe = self.home / "worker"
        self.old = update_records.backup_of(self.exe)
        self.staged = self.upd / "staged" / "worker"
        self.log = self.home / "logs" / "updater.log"
        self.marks = self.home / "ran.txt"
        self.tag = tag
        self.health = health
        self.staged.parent.mkdir(parents=True)
        self.log.parent.mkdir()
        self.exe.write_bytes(standin("1.0.0", run="old", upd=self.upd, marks=self.marks))
        self.staged.write_bytes(standin("2.0.0", run=new_run, upd=self.upd, marks=self.marks))
        for f in (self.exe, self.staged):
            f.chmod(0o755)
        self.old_bytes, self.new_bytes = self.exe.read_bytes(), self.staged.read_bytes()
        update_records.write_pending(self.upd, {"task_id": 42, "from": "1.0.0", "to": "2.0.0", "exe": str(self.exe),
                                         "staged": str(self.staged), "error_sleep": 7.0})
        self.script = self.upd / "run" / "updater.sh"
        self.script.parent.mkdir()
        self.script.write_bytes(UPDATER_SH)
        self.supervisor = subprocess.Popen(["sleep", "600"], env=self.env())
        self.proc: subprocess.Popen | None = None

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return dict(os.environ, **{TAG_ENV: self.tag}, **(extra or {}))

    def run(self, env: dict[str, str] | None = None) -> subprocess.Popen:
        """The script as launch() starts it, told the staged binary's checked hash."""
        args = ["update", str(self.exe), str(self.staged), str(self.old), str(self.upd), str(self.log),
                str(self.health), str(self.supervisor.pid), "0"]
        env = {updater.STAGED_SHA_ENV: hashlib.sha256(self.new_bytes).hexdigest(), **(env or {})}
        self.proc = subprocess.Popen(["/bin/sh", str(self.script), *args], env=self.env(env), cwd="/",
                                     start_new_session=True, stdin=subprocess.DEVNULL)
        return self.proc

    def old_exits(self) -> None:
        self.supervisor.kill()
        self.supervisor.wait()

    def logged(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def running_versions(self) -> list[str]:
        """Versions of stand-ins that noted a start and still run."""
        out = []
        for line in (self.marks.read_text().splitlines() if self.marks.exists() else []):
            version, pid = line.split()
            if psutil.pid_exists(int(pid)) and psutil.Process(int(pid)).status() != psutil.STATUS_ZOMBIE:
                out.append(version)
        return out

    def sleeps_seen(self, turns: int, timeout: float = 10) -> None:
        """Wait until the script has been in ``turns`` turns of a wait loop (each one ``sleep 1``)."""
        assert self.proc is not None
        seen: set[int] = set()

        def enough() -> bool:
            try:
                seen.update(p.pid for p in psutil.Process(self.proc.pid).children() if p.name() == "sleep")
            except psutil.Error:
                pass
            return len(seen) >= turns
        wait_for(enough, timeout, interval=0.02, what=f"{turns} turn(s) of the updater's wait loop")

    def kill_script(self) -> None:
        """kill -9 of the updater (and of a blocked helper it waits for); what it started lives on."""
        assert self.proc is not None
        helpers = psutil.Process(self.proc.pid).children()
        self.proc.kill()
        self.proc.wait()
        for child in helpers:
            if child.name() != "sleep" or child.cmdline()[-1] == "601":
                child.kill()


@pytest.mark.slow  # the same swap and health wait end test_script_without_hard_links_renames
@posix_only
def test_script_healthy_update(tmp_path: Path, tag: str) -> None:
    inst = Install(tmp_path, tag, "healthy")
    proc = inst.run()
    inst.sleeps_seen(2)  # a whole turn of its wait loop, and the next one begun
    assert proc.poll() is None and inst.exe.read_bytes() == inst.old_bytes  # waits for the exact PID
    assert "the old worker has exited" not in inst.logged()
    inst.old_exits()
    assert proc.wait(20) == 0, inst.logged()
    assert inst.exe.read_bytes() == inst.new_bytes and inst.old.read_bytes() == inst.old_bytes
    assert os.stat(inst.exe).st_ino != os.stat(inst.old).st_ino
    assert not inst.staged.exists()
    assert inst.running_versions() == ["2.0.0"]
    log = inst.logged()
    for step in ("started: exe", "the old worker has exited", "(hard link)", "the new binary is in place",
                 "new worker started; waiting up to 5 s", "the new worker is healthy: update done"):
        assert step in log
    assert not (inst.upd / "outcome.txt").exists()


@posix_only
@pytest.mark.parametrize("new_run, reason", [
    ("crash", "the new worker exited before it was healthy"),
    # The health timeout's own 3 s: the crash case runs the same rollback in a fraction of it.
    pytest.param("hang", "the new worker was not healthy within 3 s", marks=pytest.mark.slow),
])
def test_script_rolls_back(tmp_path: Path, tag: str, new_run: str, reason: str) -> None:
    inst = Install(tmp_path, tag, new_run, health=3)
    inst.old_exits()
    proc = inst.run()
    assert proc.wait(30) == 1, inst.logged()
    assert inst.exe.read_bytes() == inst.old_bytes and not inst.old.exists()
    assert (inst.upd / "outcome.txt").read_text().strip() == f"rolled back: {reason}"
    assert (inst.upd / "decided").is_dir()
    wait_for(lambda: inst.running_versions() == ["1.0.0"], 5, what="only the old version to run")
    log = inst.logged()
    assert f"rolling back: {reason}" in log and "restored the old binary" in log and "old worker started again" in log
    # The old version, once it has talked to the server, reports it and remembers the version.
    [(task_id, ok, raw, pause)] = update_startup.on_healthy(inst.home, "1.0.0", "w1")
    assert (task_id, ok, pause) == (42, False, 7.0)
    result = orjson.loads(raw)
    assert result["kind"] == "update_failed" and reason in result["error"]
    assert "2.0.0" in update_records.bad_versions(inst.upd)
    assert update_records.read_pending(inst.upd) is None and update_startup.on_healthy(inst.home, "1.0.0", "w1") == []


@posix_only
@pytest.mark.parametrize("how", ["replaced after the pre-flight", "no checked hash given"])
def test_script_swaps_in_only_the_checked_binary(tmp_path: Path, tag: str, how: str) -> None:
    """Another account that could write the staged binary between the self-test and the swap (or a
    caller that gives no hash) gets nothing installed: the script deletes it and restarts the old one."""
    inst = Install(tmp_path, tag, "healthy")
    proc = inst.run({updater.STAGED_SHA_ENV: ""} if how.startswith("no") else None)
    wait_for(lambda: "started: exe" in inst.logged(), 10, what="the updater to start")
    if how.startswith("replaced"):
        inst.staged.write_bytes(standin("6.6.6", run="healthy", upd=inst.upd, marks=inst.marks))
    inst.old_exits()
    assert proc.wait(20) == 1, inst.logged()
    outcome = "failed: the staged binary is not the one that was checked; not installed"
    assert (inst.upd / "outcome.txt").read_text().strip() == outcome
    assert outcome in inst.logged() and "the new binary is in place" not in inst.logged()
    assert inst.exe.read_bytes() == inst.old_bytes and not inst.staged.exists()
    wait_for(lambda: inst.running_versions() == ["1.0.0"], 5, what="the old version to run again")
    assert inst.marks.read_text().split()[0::2] == ["1.0.0"]  # neither the new nor the swapped-in one ran
    [(_, ok, raw, _)] = update_startup.on_healthy(inst.home, "1.0.0", "w1")
    assert not ok and outcome in orjson.loads(raw)["error"]


@posix_only
def test_script_without_hard_links_renames(tmp_path: Path, tag: str) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ln").write_text("#!/bin/sh\necho 'ln: operation not supported' >&2\nexit 1\n")
    (fake / "ln").chmod(0o755)
    inst = Install(tmp_path, tag, "healthy")
    inst.old_exits()
    assert inst.run({"PATH": f"{fake}:{os.environ['PATH']}"}).wait(20) == 0, inst.logged()
    assert "(renamed)" in inst.logged()
    assert inst.exe.read_bytes() == inst.new_bytes and inst.old.read_bytes() == inst.old_bytes


@posix_only
def test_script_missing_staged_binary_restarts_old(tmp_path: Path, tag: str) -> None:
    inst = Install(tmp_path, tag)
    inst.staged.unlink()
    inst.old_exits()
    assert inst.run().wait(20) == 1
    assert (inst.upd / "outcome.txt").read_text().strip() == "failed: the staged binary is missing"
    assert inst.exe.read_bytes() == inst.old_bytes
    wait_for(lambda: inst.running_versions() == ["1.0.0"], 5, what="the old version to run again")
    [(_, ok, raw, _)] = update_startup.on_healthy(inst.home, "1.0.0", "w1")
    assert not ok and "staged binary is missing" in orjson.loads(raw)["error"]
    assert update_records.bad_versions(inst.upd) == {}  # never ran: not held against the version


def _blocker(tmp_path: Path, tool: str) -> Path:
    """PATH wrapper for mv/ln: call number $BLOCK_AT blocks before (or after, BLOCK_WHEN=after) the
    real command, after touching $REACHED, so the updater can be killed exactly there."""
    real = shutil.which(tool)
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    script = folder / tool
    script.write_text(f"""#!/bin/sh
count_file="$REACHED.{tool}.count"
n=$(cat "$count_file" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > "$count_file"
if [ "$BLOCK_TOOL" = {tool} ] && [ "$n" = "$BLOCK_AT" ] && [ "$BLOCK_WHEN" = before ]; then
    touch "$REACHED"; exec sleep 601
fi
{real} "$@"
rc=$?
if [ "$BLOCK_TOOL" = {tool} ] && [ "$n" = "$BLOCK_AT" ] && [ "$BLOCK_WHEN" = after ]; then
    touch "$REACHED"; exec sleep 601
fi
exit $rc
""")
    script.chmod(0o755)
    return folder


# (where to kill the updater, new stand-in behaviour, binary in place afterwards)
KILL_POINTS = {
    "waiting for the old worker": (None, "healthy", "old"),
    "after the backup link": (("ln", 1, "after"), "healthy", "old"),
    "before the swap": (("mv", 1, "before"), "healthy", "old"),
    "after the swap": (("mv", 1, "after"), "healthy", "new"),
    "waiting for health": ("health", "hang", "new"),
    "after the rollback's restore": (("mv", 2, "after"), "crash", "old"),
}


@posix_only
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_9_of_the_updater_at_each_step(tmp_path: Path, tag: str, point: str) -> None:
    block, new_run, expect = KILL_POINTS[point]
    inst = Install(tmp_path, tag, new_run, health=60)
    reached = tmp_path / "reached"
    env = {"REACHED": str(reached)}
    if isinstance(block, tuple):
        tool, at, when = block
        folder = _blocker(tmp_path, "mv")
        _blocker(tmp_path, "ln")
        env.update(PATH=f"{folder}:{os.environ['PATH']}", BLOCK_TOOL=tool, BLOCK_AT=str(at), BLOCK_WHEN=when)
        if new_run == "crash":
            inst.health = 60
    proc = inst.run(env)
    if block is None:
        wait_for(lambda: "started: exe" in inst.logged(), 10, what="the updater to start")
    else:
        inst.old_exits()
        if block == "health":
            wait_for(lambda: "waiting up to" in inst.logged(), 10, what="the health wait")
            inst.sleeps_seen(1)  # inside the health loop
        else:
            wait_for(reached.exists, 20, what=f"the updater to reach {point}")
    inst.kill_script()
    assert proc.poll() is not None

    # The next start (whichever binary is in place) repairs first, then runs.
    update_startup._on_start(inst.home, inst.exe)
    assert inst.exe.is_file() and os.access(inst.exe, os.X_OK)
    assert inst.exe.read_bytes() == (inst.old_bytes if expect == "old" else inst.new_bytes)
    got = subprocess.run([str(inst.exe), "--self-test"], capture_output=True, text=True, timeout=10)
    assert got.returncode == 0 and "self-test ok" in got.stdout
    version = "1.0.0" if expect == "old" else "2.0.0"
    # Once it has talked to the server it tells it how the update ended.
    [(task_id, ok, raw, _)] = update_startup.on_healthy(inst.home, version, "w1")
    assert task_id == 42 and ok == (expect == "new"), raw
    if not ok:
        assert "updater stopped before it finished" in orjson.loads(raw)["error"] or point.startswith("after the roll")
    assert update_records.read_pending(inst.upd) is None


# ---- start-up repair, 1.0.x leftovers, and sys.executable --------------------------------------------

def test_on_start_never_touches_sys_executable(tmp_path: Path) -> None:
    """1.0.9 computed its leftover's path by replacing '.exe' in the running executable's path:
    outside Windows that is the interpreter itself, and it deleted it."""
    exe = Path(sys.executable)
    before = (exe.stat(), sorted(os.listdir(exe.parent)))
    update_startup.on_start(tmp_path)  # from source: sys.executable is this interpreter
    update_startup._on_start(tmp_path, exe, frozen=True)  # even as if it were the frozen binary
    update_startup.clean_legacy(exe)
    after = (exe.stat(), sorted(os.listdir(exe.parent)))
    assert before[0].st_ino == after[0].st_ino and before[0].st_mtime == after[0].st_mtime and before[1] == after[1]
    # A leftover name that *is* the running binary, or a link to sys.executable, is never removed.
    install = tmp_path / "install"
    install.mkdir()
    (install / "worker_update.exe").write_bytes(b"running")
    assert update_startup.clean_legacy(install / "worker_update.exe") == []
    assert (install / "worker_update.exe").exists()
    (install / "worker_update.exe").unlink()
    if os.name == "nt":
        return  # symlinks need a privilege on Windows (and Wine makes none): no link to follow there
    (install / "worker_update.exe").symlink_to(exe)
    assert update_startup.clean_legacy(install / "worker") == []
    assert (install / "worker_update.exe").is_symlink() and exe.exists()


def test_on_start_cleans_1_0_x_leftovers_by_exact_name(tmp_path: Path) -> None:
    exe = update_extract.BINARY  # worker.exe on Windows, worker elsewhere
    for name in (exe, "worker_update.exe", "worker_update", "worker.exe_update.exe", "updater.bat"):
        (tmp_path / name).write_bytes(name.encode())
    update_startup._on_start(tmp_path, tmp_path / exe)
    names = sorted(os.listdir(tmp_path))
    assert "worker_update.exe" not in names
    assert {exe, "worker_update", "worker.exe_update.exe", "updater.bat"} <= set(names)
    name, text = update_scripts.for_this_platform()
    if name != "updater.bat":
        assert (tmp_path / "updater.bat").read_bytes() == b"updater.bat"  # not this OS's script: left alone
    assert (tmp_path / name).read_bytes() == text  # the current updater script, written out on first start


@pytest.mark.parametrize("have", ["old", "staged", "both"])
def test_on_start_restores_a_missing_binary(tmp_path: Path, have: str) -> None:
    exe = tmp_path / "worker"
    staged = tmp_path / "update" / "staged" / "worker"
    staged.parent.mkdir(parents=True)
    if have in ("old", "both"):
        update_records.backup_of(exe).write_bytes(b"old")
    if have in ("staged", "both"):
        staged.write_bytes(b"new")
    update_records.write_pending(tmp_path / "update", {"task_id": 1, "from": "1", "to": "2", "exe": str(exe),
                                                "staged": str(staged)})
    update_startup._on_start(tmp_path, tmp_path / "worker.old")  # started as whatever was there
    assert exe.read_bytes() == (b"new" if have == "staged" else b"old")
    assert (tmp_path / "update" / "started.pid").read_text().split()[1] == str(os.getpid())


def test_on_healthy_new_version_decides_once(tmp_path: Path) -> None:
    upd = tmp_path / "update"
    update_records.write_pending(upd, {"task_id": "t-7", "from": "1.0.0", "to": "2.0.0", "error_sleep": 30})
    [(task_id, ok, raw, pause)] = update_startup.on_healthy(tmp_path, "2.0.0", "w1")
    assert (task_id, ok, pause) == ("t-7", True, 0.0)
    assert orjson.loads(raw)["message"] == "updated from 1.0.0 to 2.0.0"
    assert (upd / "decided").is_dir() and update_records.read_pending(upd) is None
    # The script decided first (a rollback): the new version must not claim success.
    update_records.write_pending(upd, {"task_id": "t-8", "from": "1.0.0", "to": "2.0.0"})
    assert update_startup.on_healthy(tmp_path, "2.0.0", "w1") == []


def test_start_warning_and_restart_environment(tmp_path: Path, caplog) -> None:
    import logging

    import config
    from supervisor import settings as settings_mod

    with caplog.at_level(logging.WARNING, logger="hive.update"):
        update_startup.check_settings(settings_for(tmp_path))
        update_startup.check_settings(settings_for(tmp_path, update_root_keys=["short"]))
    assert "UPDATE_ALLOW_UNSIGNED is on" in caplog.text and "every update will be refused" in caplog.text
    # A malformed key is a settings error at start (exit 2), not a silent refusal of every update.
    with pytest.raises(settings_mod.SettingsError, match="UPDATE_ROOT_KEYS"):
        settings_mod.load(config, tmp_path, {}, {"HIVE_UPDATE_ROOT_KEYS": "short"})
    # The restarted worker gets the settings the old one had from flags and HIVE_* variables.
    keys = ",".join(__import__("base64").b64encode(bytes([i]) * 32).decode() for i in (1, 2))
    loaded = settings_mod.load(config, tmp_path, {"pool_size": "3"},
                               {"HIVE_NO_TASK_SLEEP": "0.5", "HIVE_TASK_LIMITS": "[x]\ntime = 2",
                                "HIVE_UPDATE_ROOT_KEYS": keys, "HIVE_UPDATE_ALLOW_UNSIGNED": "yes"})
    env = updater.worker_env(loaded)
    assert env["HIVE_WORKER_HOME"] == str(tmp_path) and env["HIVE_WORKER_POOL_SIZE"] == "3"
    assert env["HIVE_WORKER_NO_TASK_SLEEP"] == "0.5" and "HIVE_HOME" not in env  # HIVE_HOME is Apache Hive's
    assert env["HIVE_WORKER_UPDATE_ROOT_KEYS"] == keys and env["PYINSTALLER_RESET_ENVIRONMENT"] == "1"
    assert loaded.update_allow_unsigned is True and env["HIVE_WORKER_UPDATE_ALLOW_UNSIGNED"] == "True"
    again = settings_mod.load(config, tmp_path, {}, {k: v for k, v in env.items() if k.startswith("HIVE_")
                                                     and k != "HIVE_WORKER_HOME"})
    assert again.values == loaded.values
    assert "HIVE_WORKER_SERVER_URL" not in env and "HIVE_WORKER_LOG_LEVEL" not in env  # defaults stay defaults


@pytest.mark.slow  # a dozen CLI processes; signing and verifying: test_signed_releases, test_key_delegation
@standin_binaries
def test_release_command_keygen_make_sign_verify(tmp_path: Path, files: FileServer) -> None:
    """The operator's commands (keygen for the root and the release key, delegate, make_release per
    release, rotate-root) and sign/verify; no private key's content is in any output, not even when
    the key file is broken."""
    outputs: list[str] = []

    def run(*args: Any, module: str = "release") -> subprocess.CompletedProcess:
        got = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=str(ROOT), capture_output=True,
                             text=True, timeout=120)
        outputs.append(got.stdout + got.stderr)
        return got

    key, root_key, trust = tmp_path / "release.key", tmp_path / "root.key", tmp_path / "trust.json"
    got = run("keygen", key)
    assert got.returncode == 0, got.stderr
    public = got.stdout.split()[-1]
    secret = key.read_text().strip()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and public == signing.public_key_of(key)
    assert run("keygen", key).returncode == 1 and key.read_text().strip() == secret  # never overwritten
    got = run("keygen", ROOT / "release-test.key")
    assert got.returncode == 1 and "inside the project tree" in got.stderr and not (ROOT / "release-test.key").exists()
    root_public = run("keygen", root_key).stdout.split()[-1]
    got = run("delegate", "--root-key", root_key, "--release-key", public, "--version", 1, "--expires", "2099-01-01",
              "--out", trust)
    assert got.returncode == 0 and "delegation version 1 of 1 release key(s) until 2099-01-01T00:00:00Z" in got.stdout
    assert run("delegate", "--root-key", root_key, "--release-key", public, "--version", 2, "--expires", "2099-01-01",
               "--out", trust).returncode == 1  # never overwritten

    binary = tmp_path / "dist" / update_extract.BINARY
    binary.parent.mkdir()
    fleet = b'server_url = "http://fleet:3010/api"\nupdate_root_keys = ["' + root_public.encode() + b'"]'
    binary.write_bytes(b'#!/bin/sh\n[ "$1" = --version ] && { echo 9.1.0; exit 0; }\n'
                       b"[ \"$1\" = --print-config ] && { echo '" + fleet + b"'; exit 0; }\n"
                       + standin("9.1.0").split(b"\n", 1)[1])
    binary.chmod(0o755)
    out = tmp_path / "out"
    got = run("--binary", binary, "--out", out, "--url", "http://127.0.0.1:9/w.zip", module="release.make_release")
    assert got.returncode == 2 and "--sign-key" in got.stderr  # unsigned only when asked for
    got = run("--binary", binary, "--out", out, "--url", "http://127.0.0.1:9/w.zip", "--sign-key", root_key,
              "--trust", trust, "--sequence", 5, module="release.make_release")
    assert got.returncode == 2 and "is not a release key of the delegation" in got.stderr  # the root never signs
    got = run("--binary", binary, "--out", out, "--url", "http://127.0.0.1:9/w.zip", "--sign-key", key,
              "--trust", trust, "--sequence", 5, module="release.make_release")
    assert got.returncode == 0, got.stdout + got.stderr
    params = orjson.loads(got.stdout.strip().splitlines()[-1])
    [zip_path] = out.glob("*.zip")
    data = zip_path.read_bytes()
    assert params == {"url": "http://127.0.0.1:9/w.zip", "sha256": hashlib.sha256(data).hexdigest(),
                      "size": len(data), "version": "9.1.0", "sequence": 5}
    with zipfile.ZipFile(zip_path) as zf:
        assert zf.namelist() == [update_extract.BINARY, "updater.bat", "release.json", "release.sig",
                                 "release-trust.json"]
    got = run("verify", zip_path, "--root-key", root_public)
    assert got.returncode == 0 and "version 9.1.0, sequence 5" in got.stdout, got.stderr
    assert f"signed by release key {public}, delegation version 1 until 2099-01-01T00:00:00Z, root version 0" \
        in got.stdout
    got = run("verify", zip_path)  # config.py trusts no key: a fleet's root keys are given to its build
    assert got.returncode == 1 and "no root key to verify with" in got.stderr
    got = run("verify", zip_path, "--root-key", signing.keygen(tmp_path / "other.key"))
    assert got.returncode == 1 and "the delegation is not signed by a root key this worker trusts" in got.stderr
    # What make_release wrote is what a worker installs: url only, no params to trust.
    staged = updater.prepare({"url": files.add("/w.zip", data)}, signed_settings(tmp_path / "home", root_public),
                             "2.0.0")
    assert staged is not None and (staged.version, staged.sequence) == ("9.1.0", 5)

    # A root rotation: the new root (signed by the old and the new) carried in the chain, a delegation by it.
    new_root = tmp_path / "root2.key"
    new_root_public = run("keygen", new_root).stdout.split()[-1]
    got = run("rotate-root", "--root-key", root_key, "--new-root-key", new_root, "--version", 2,
              "--out", tmp_path / "root-2.json")
    assert got.returncode == 0 and f"root version 2: {new_root_public}" in got.stdout, got.stderr
    trust2 = tmp_path / "trust-2.json"
    assert run("delegate", "--root-key", new_root, "--release-key", public, "--version", 2, "--expires", "2099-01-01",
               "--root-chain", tmp_path / "root-2.json", "--out", trust2).returncode == 0
    got = run("sign", key, zip_path, "--trust", trust2, "--version", "9.1.0", "--sequence", 6)
    assert got.returncode == 0, got.stderr
    got = run("verify", zip_path, "--root-key", root_public)  # a build made with the old root walks the chain
    assert "sequence 6" in got.stdout and "delegation version 2" in got.stdout and "root version 2" in got.stdout
    assert "sequence 6" in run("verify", zip_path, "--root-key", new_root_public).stdout  # a build with the new one
    broken = tmp_path / "broken.key"
    broken.write_text(secret[:20] + "!" + secret[21:])
    got = run("sign", broken, zip_path, "--trust", trust2, "--version", "9.1.0", "--sequence", 7)
    assert got.returncode == 1 and "not a readable private key file" in got.stderr
    secrets = [f.read_text().strip()[:16] for f in (key, root_key, new_root)]
    assert not any(s in text for s in secrets for text in outputs)


# ---- real one-file binaries: the full cycle, rollbacks, migration from 1.0.x ------------------------

# Appended to the new build's config.py: a test hook of that build only. With the variable set (to a
# file path), importing the task registry takes an exclusive lock on that file for the life of the
# executor, as a task module that grabs a resource only one process can hold would: the self-test's
# single executor passes, in a pool of two the second executor can never import the registry.
EXCLUSIVE_IMPORT_ENV = "UPDATE_TEST_EXCLUSIVE_IMPORT"
EXCLUSIVE_IMPORT = f"""

if os.environ.get("{EXCLUSIVE_IMPORT_ENV}") and __import__("multiprocessing").parent_process() is not None:
    import fcntl as _fcntl

    _held = open(os.environ["{EXCLUSIVE_IMPORT_ENV}"], "a")
    _fcntl.flock(_held, _fcntl.LOCK_EX | _fcntl.LOCK_NB)  # BlockingIOError in every other executor
"""


# What Wine's CreateProcess once said under load (ERROR_INTERNAL_ERROR): see the builds fixture.
WINE_SPAWN_GLITCH = "[WinError 1359]"


def _copy_repo(dest: Path, version: str, sequence: int, extra_config: str = "") -> Path:
    keep = {"main.py", "config.py", "supervisor", "executor", "common", "tasks", "devserver", "release", "updater.bat",
            "updater.sh", "requirements.txt", "requirements-dev.txt", "pyproject.toml"}

    def ignore(folder: str, names: list[str]) -> set[str]:
        if Path(folder) == ROOT:
            return {n for n in names if n not in keep}
        return {n for n in names if n == "__pycache__"}

    shutil.copytree(ROOT, dest, ignore=ignore)
    config = dest / "config.py"
    text, count = re.subn(r'^WORKER_VERSION = "[^"]*"', f'WORKER_VERSION = "{version}"', config.read_text(), flags=re.M)
    text, count2 = re.subn(r"^RELEASE_SEQUENCE = \d+", f"RELEASE_SEQUENCE = {sequence}", text, flags=re.M)
    assert count == count2 == 1
    config.write_text(text + extra_config)
    return dest


FLEET_PASSWORD = "fleet-s3cret"  # in the new build's baked server URL: it must show up nowhere


def _free_port() -> int:
    """A loopback port nothing listens on now: the fleet server of the new build is started on it
    later (the URL is baked in before any server runs)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """Two real one-file builds made at the same time with the release build command: this repo
    (the old version), a dev build (``--dev-build``: no fleet settings), and a copy whose
    WORKER_VERSION and RELEASE_SEQUENCE are the next ones (the new one), a fleet release build:
    ``--server-url`` (user:password@127.0.0.1 on a port reserved for ``fleet_server``) and
    two ``--root-key`` (throwaway root keys) baked in. Tests that pass --server or HIVE_* override
    those, as a PC's own settings do; the tests trust throwaway root keys through
    HIVE_UPDATE_ROOT_KEYS (no test ever uses a real key)."""
    from config import RELEASE_SEQUENCE, WORKER_VERSION

    base = tmp_path_factory.mktemp("update-builds")
    new_version = WORKER_VERSION + "-next"
    fleet_port = _free_port()
    fleet_url = f"http://hive:{FLEET_PASSWORD}@127.0.0.1:{fleet_port}/api"
    fleet_keys = [keypair(base, "fleet.key")[1], keypair(base, "fleet2.key")[1]]  # two root keys
    sources = {"old": (ROOT, ["--dev-build"]),
               "new": (_copy_repo(base / "src-new", new_version, RELEASE_SEQUENCE + 1, EXCLUSIVE_IMPORT),
                       ["--server-url", fleet_url, "--root-key", fleet_keys[0], "--root-key", fleet_keys[1]])}
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")}
    procs, starts = {}, {}
    started = time.monotonic()
    for name, (src, fleet) in sources.items():
        out = base / name
        starts[name] = dict(
            args=[sys.executable, "-m", "release.build", "--allow-unpinned", *fleet, "--distpath", str(out / "dist"),
                  "--workpath", str(out / "work"), "--specpath", str(out / "spec")],
            cwd=str(src), env=dict(env, PYINSTALLER_CONFIG_DIR=str(out / "cache")),  # --clean: no shared cache
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs[name] = subprocess.Popen(**starts[name])
    outputs = {}
    for name, proc in procs.items():
        outputs[name], _ = proc.communicate(timeout=900)
        if proc.returncode != 0 and IN_WINE and WINE_SPAWN_GLITCH in outputs[name]:
            # Wine's CreateProcess once failed with ERROR_INTERNAL_ERROR while the two builds' PyInstaller
            # helpers started processes side by side on a loaded machine (a fresh-clone CI; Windows never
            # says this). The build is run again, alone, once; any other failure fails the test as it is.
            print(f"{name} build: Wine refused to start a process ({WINE_SPAWN_GLITCH}); building it again, alone")
            again = subprocess.run(**starts[name], timeout=900)
            outputs[name], proc = again.stdout, again
        assert proc.returncode == 0, f"{name} build failed: {outputs[name][-4000:]}"
    assert FLEET_PASSWORD not in outputs["new"] and "for the fleet: server http://***@127.0.0.1" in outputs["new"]
    assert "DEV BUILD, no fleet settings" in outputs["old"]
    assert not list((base / "new" / "work").rglob("fleet.toml"))  # no copy of the password left beside it
    binary = update_extract.BINARY
    yield SimpleNamespace(old=base / "old" / "dist" / binary, new=base / "new" / "dist" / binary,
                          old_version=WORKER_VERSION, new_version=new_version, old_sequence=RELEASE_SEQUENCE,
                          new_sequence=RELEASE_SEQUENCE + 1, seconds=time.monotonic() - started,
                          fleet_port=fleet_port, fleet_url=fleet_url, fleet_keys=fleet_keys,
                          new_src=sources["new"][0])


@pytest.fixture
def fleet_server(builds: SimpleNamespace, tmp_path: Path):
    """The Hive server the new build was built for (its baked server URL)."""
    from devserver import HiveDevServer

    srv = HiveDevServer(str(tmp_path / "fleet.sqlite"), port=builds.fleet_port).start()
    yield srv
    srv.stop()


def bare_env(tmpdir: Path) -> dict[str, str]:
    """What a 1.0.x watcher's start gives a worker, at most: no HIVE_*, only what the OS needs
    (and a private temporary folder, so that the one-file bundle's unpacking can be checked)."""
    keep = ("SYSTEMROOT", "WINDIR", "COMSPEC", "PATHEXT") if os.name == "nt" else ()
    env = {k: v for k, v in os.environ.items() if k.upper() in keep}
    tmpdir.mkdir(exist_ok=True)
    # LOCALAPPDATA: a Windows session always has it; the bundle unpacks under it (release.build's RUNTIME_TMPDIR).
    env.update(PATH=os.environ.get("PATH", ""), TEMP=str(tmpdir), TMP=str(tmpdir), TMPDIR=str(tmpdir),
               LOCALAPPDATA=str(tmpdir))
    return env


def assert_fleet_credentials(server: Any) -> None:
    """Every request reached the server with the baked URL's user:password as Basic authentication."""
    import base64

    wanted = "Basic " + base64.b64encode(f"hive:{FLEET_PASSWORD}".encode()).decode()
    assert server.requests and {r.headers.get("Authorization") for r in server.requests} == {wanted}


def assert_no_password(home: Path, *texts: str) -> None:
    """The baked password is in no log, status file or console text."""
    for path in [*home.glob("logs/*"), home / "status.json"]:
        if path.is_file():
            assert FLEET_PASSWORD not in path.read_text(encoding="utf-8", errors="replace"), path
    for text in texts:
        assert FLEET_PASSWORD not in text


def _release(tmp_path: Path, binary: Path, name: str, key: Path | None = None, version: str = "",
             sequence: int = 0, inside: Path | None = None) -> bytes:
    """A release zip made by the release command's own writer; with ``key``, signed for ``binary``
    (``inside``: another file goes into the zip in its place)."""
    from release.make_release import UPDATER, crlf, write_zip

    path = tmp_path / name
    signed = (signing.signed_members(binary, update_extract.BINARY, version, sequence, key, trust_of(key))
              if key else None)
    write_zip(path, inside or binary, update_extract.BINARY, crlf(UPDATER.read_bytes()), signed)
    return path.read_bytes()


def _swap_saboteur(tmp_path: Path, staged: Path, evil: bytes) -> tuple[Path, Path]:
    """(PATH folder, trigger file): an ``ln`` wrapper that, when the trigger file exists, replaces
    the staged binary with ``evil`` right after the updater's backup link, i.e. after the pre-flight
    and just before the swap, as another local account with write access could."""
    folder = tmp_path / "saboteur"
    folder.mkdir()
    (folder / "evil").write_bytes(evil)
    trigger = tmp_path / "sabotage-next-swap"
    script = folder / "ln"
    script.write_text(f"""#!/bin/sh
{shutil.which("ln")} "$@"
rc=$?
if [ -f "{trigger}" ]; then rm -f "{trigger}"; cp "{folder / 'evil'}" "{staged}"; fi
exit $rc
""")
    script.chmod(0o755)
    return folder, trigger


def _install(tmp_path: Path, binary: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy2(binary, home / update_extract.BINARY)
    return home


def _worker_env(tag: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir(exist_ok=True)
    return {TAG_ENV: tag, "TMPDIR": str(tmpdir), "HIVE_UPDATE_ERROR_SLEEP": "0", "HIVE_UPDATE_DRAIN_TIMEOUT": "60",
            "HIVE_UPDATE_HEALTH_TIMEOUT": "60", **extra}


def _result(server: Any, task_id: Any, timeout: float = 60) -> dict:
    return result_of(server, task_id, timeout, last=True)  # an update's answer may be re-posted: the latest counts


def _poster_version(server: Any, task_id: Any) -> set[str]:
    """X-Worker-Version of the requests that posted this task's result."""
    out = set()
    for rec in server.requests:
        if rec.path.endswith("/submit_result") and rec.body and orjson.loads(rec.body).get("task_id") == task_id:
            out.add(rec.headers.get("X-Worker-Version"))
    return out


def _status(home: Path) -> dict:
    try:
        return orjson.loads((home / "status.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}


def _stop_tagged(tag: str, timeout: float = 20) -> None:
    """SIGTERM to the worker(s) the updater started (the top of each tagged tree), then wait."""
    tops = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(TAG_ENV) != tag:
                continue
            parent = proc.parent()
            if parent is None or parent.environ().get(TAG_ENV) != tag:
                tops.append(proc)
        except (psutil.Error, OSError):
            continue
    for proc in tops:
        try:
            proc.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    psutil.wait_procs(tops, timeout=timeout)


def _product_pages(files: FileServer, count: int) -> list[dict]:
    page = b"<html><body><div data-qaid='main_product_info'>slow page</div></body></html>"
    return [{"product_id": i, "url": files.add(f"/product/{i}", page, "slow")} for i in range(count)]


def _refused_result(server: Any, task_id: Any, message: str, timeout: float = 60) -> dict:
    got = _result(server, task_id, timeout)
    assert got["status"] == "failure" and got["result"]["kind"] == "update_failed", got
    assert message in got["result"]["error"] and "\n" not in got["result"]["error"], got
    return got


@pytest.mark.slow
@posix_only
@pytest.mark.timeout(900)
def test_full_cycle_with_two_real_binaries(builds: SimpleNamespace, server, start_worker, files: FileServer,
                                           tag: str, tmp_path: Path) -> None:
    """The old real binary refuses every release that is not ours and new (nothing of them runs),
    refuses a staged binary swapped after its check, then installs the signed new release under
    load; the new one refuses the same release again (nothing to do) and the old one (a downgrade)."""
    key, public = keypair(tmp_path)
    other, _ = keypair(tmp_path, "other.key")
    home = _install(tmp_path, builds.old)
    ran = tmp_path / "ran"  # every stand-in that runs, even only its self-test, leaves a line here
    body = _release(tmp_path, builds.new, "worker-new.zip", key, builds.new_version, builds.new_sequence)
    url = files.add("/releases/worker-new.zip", body)
    good = params_for(url, body, version=builds.new_version)
    saboteur, trigger = _swap_saboteur(tmp_path, home / "update" / "staged" / update_extract.BINARY,
                                       standin("6.6.6", upd=home / "update", marks=ran))
    # the product pages are on 127.0.0.1: allowed explicitly (prom_pars' default is prom.ua only)
    w = start_worker(server.url, home=home, cmd=[str(home / update_extract.BINARY)],
                     env=_worker_env(tag, tmp_path, HIVE_UPDATE_ROOT_KEYS=public, HIVE_PROM_ALLOWED_HOSTS="127.0.0.1",
                                     PATH=f"{saboteur}:{os.environ['PATH']}"))

    # Under load, a release whose hash does not match: refused, reported, the old version serves on.
    load = [server.enqueue("prom_pars", {"products_to_scrape": _product_pages(files, 1), "delay": 0})
            for _ in range(2)]
    bad = server.enqueue("update_worker", dict(good, sha256="f" * 64))
    after_bad = server.enqueue("example", {"text": "still old"})
    _refused_result(server, bad, "SHA-256 is")
    assert all(_result(server, t)["status"] == "success" for t in [*load, after_bad])
    assert w.proc.poll() is None and _poster_version(server, after_bad) == {builds.old_version}

    # Not ours, or not new: refused, one line each, and nothing of it is run (not even its self-test).
    unsigned = release_zip(standin("9.1.0", marks=ran))
    foreign = signed_zip(standin("9.1.0", marks=ran), "9.1.0", 99, other)
    tampered_bin = tmp_path / "tampered"
    original = builds.new.read_bytes()
    tampered_bin.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # one bit of the real binary
    tampered = _release(tmp_path, builds.new, "tampered.zip", key, builds.new_version, builds.new_sequence,
                        inside=tampered_bin)
    older = _release(tmp_path, builds.new, "older.zip", key, builds.new_version, builds.old_sequence)
    for name, zipped, message in [
        ("unsigned", unsigned, "the release is not signed: no release.json and release.sig in the zip"),
        ("foreign", foreign, "the delegation is not signed by a root key this worker trusts"),
        ("tampered", tampered, "the binary in the zip is not the signed one"),
        ("older", older, f"has sequence {builds.old_sequence}, not above this worker's (running "
                         f"{builds.old_sequence}, highest installed here 0): a downgrade or a replay"),
    ]:
        task = server.enqueue("update_worker", {"url": files.add(f"/releases/{name}.zip", zipped)})
        _refused_result(server, task, message)
    check = server.enqueue("example", {"text": "still old"})
    assert _result(server, check)["status"] == "success" and _poster_version(server, check) == {builds.old_version}
    assert not ran.exists() and not (home / "update" / "staged" / update_extract.BINARY).exists()

    # The good release, but its staged binary is replaced after the pre-flight: the updater's check
    # just before the swap refuses it, deletes it and starts the old worker again, which reports it.
    trigger.touch()
    sabotaged = server.enqueue("update_worker", good)
    got = _refused_result(server, sabotaged, "failed: the staged binary is not the one that was checked", 120)
    assert _poster_version(server, sabotaged) == {builds.old_version}
    assert w.wait(30) == 0  # the first process handed over and exited cleanly
    assert not trigger.exists() and not ran.exists()  # the swapped-in program never ran
    assert (home / update_extract.BINARY).read_bytes() == builds.old.read_bytes()
    assert not (home / "update" / "staged" / update_extract.BINARY).exists()
    assert builds.new_version not in update_records.bad_versions(home / "update")  # it never ran: not held against it

    # Under load, the real release: drained, downloaded, verified, swapped, restarted, healthy.
    t0 = time.monotonic()
    running = server.enqueue("prom_pars", {"products_to_scrape": _product_pages(files, 1), "delay": 0})
    update = server.enqueue("update_worker", good)
    got = _result(server, update, 120)
    took = time.monotonic() - t0
    after = server.enqueue("example", {"text": "new"})
    assert got["status"] == "success", got
    assert got["result"]["version"] == builds.new_version
    assert _result(server, running)["status"] == "success"  # drained first, by the old version
    assert _poster_version(server, running) == {builds.old_version}
    assert _poster_version(server, update) == {builds.new_version}
    assert _result(server, after)["result"] == {"echo": ["new"]}
    assert _poster_version(server, after) == {builds.new_version}  # keeps serving, as the new version
    worker_ids = {r["worker_id"] for r in server.results()}
    assert len(worker_ids) == 1  # the same identity all along
    assert (home / "worker.conf").read_text().strip() in worker_ids
    exe = home / update_extract.BINARY
    assert exe.read_bytes() == builds.new.read_bytes() and update_records.backup_of(exe).read_bytes() == builds.old.read_bytes()
    assert _status(home).get("version") == builds.new_version
    updater_log = home / "logs" / "updater.log"
    wait_for(lambda: "the new worker is healthy: update done" in updater_log.read_text(), 5, what="the updater's end")
    assert "(hard link)" in updater_log.read_text()
    assert "the staged binary still has the checked sha256" in updater_log.read_text()
    assert (home / "updater.sh").read_bytes() == UPDATER_SH
    assert update_records.read_pending(home / "update") is None
    assert update_records.highest_installed(home / "update") == builds.new_sequence
    worker_log = (home / "logs" / "worker.log").read_text()
    assert f"release {builds.new_version} (sequence {builds.new_sequence}, {update_verify.platform_tag()}) signed " \
           "by delegated release key 0" in worker_log

    # The same signed release again (url only): downloaded, verified, nothing to do.
    hits = len(files.hits)
    again = server.enqueue("update_worker", {"url": url})
    got = _result(server, again)
    assert got["status"] == "success" and got["result"] == {"message": f"already running {builds.new_version}"}
    assert len(files.hits) == hits + 1 and _poster_version(server, again) == {builds.new_version}
    # The old release, properly signed: a downgrade, refused (the 2.0.0 -> 1.0.0).
    downgrade = _release(tmp_path, builds.old, "downgrade.zip", key, builds.old_version, builds.old_sequence)
    task = server.enqueue("update_worker", {"url": files.add("/releases/downgrade.zip", downgrade)})
    _refused_result(server, task, "a downgrade or a replay")
    check = server.enqueue("example", {"text": "still new"})
    assert _result(server, check)["status"] == "success" and _poster_version(server, check) == {builds.new_version}
    assert exe.read_bytes() == builds.new.read_bytes()
    print(f"\nbuilds: {builds.seconds:.0f} s for two; binary {builds.old.stat().st_size / 1e6:.1f} MB; "
          f"update task to success: {took:.1f} s")
    _stop_tagged(tag)


@pytest.mark.slow
@posix_only
@pytest.mark.timeout(600)
def test_no_key_build_refuses_every_update(builds: SimpleNamespace, server, start_worker, files: FileServer,
                                           tag: str, tmp_path: Path) -> None:
    """A build with no release key (here: the real binary with UPDATE_ROOT_KEYS emptied) says so
    once at start and refuses every update at once: nothing drained, downloaded or run."""
    home = _install(tmp_path, builds.old)
    ran = tmp_path / "ran"
    body = release_zip(standin("9.1.0", marks=ran))
    w = start_worker(server.url, home=home, cmd=[str(home / update_extract.BINARY)],
                     env=_worker_env(tag, tmp_path, HIVE_UPDATE_ROOT_KEYS=""))
    task = server.enqueue("update_worker", {"url": files.add("/r.zip", body)})
    after = server.enqueue("example", {"text": "serving"})
    got = _result(server, task)
    assert got["status"] == "failure" and got["result"] == {"error": updater.NO_KEY, "kind": "update_failed"}
    assert _result(server, after)["status"] == "success"
    assert files.hits == [] and not ran.exists() and w.proc.poll() is None
    warnings = [line for line in (home / "logs" / "worker.log").read_text().splitlines()
                if "UPDATE_ROOT_KEYS is empty" in line]
    assert len(warnings) == 1 and " WARNING " in warnings[0] and updater.NO_KEY in warnings[0], warnings
    w.stop()


@pytest.mark.slow
@posix_only
@pytest.mark.timeout(600)
def test_rollbacks_with_a_real_old_binary(builds: SimpleNamespace, server, start_worker, files: FileServer,
                                          tag: str, tmp_path: Path) -> None:
    key, public = keypair(tmp_path)
    home = _install(tmp_path, builds.old)
    upd = home / "update"
    crash = signed_zip(standin("9.9.1", run="crash", upd=upd), "9.9.1", 1001, key)
    hang = signed_zip(standin("9.9.2", run="hang", upd=upd), "9.9.2", 1002, key)
    crash_url, hang_url = files.add("/crash.zip", crash), files.add("/hang.zip", hang)
    w = start_worker(server.url, home=home, cmd=[str(home / update_extract.BINARY)],
                     env=_worker_env(tag, tmp_path, HIVE_UPDATE_HEALTH_TIMEOUT="5", HIVE_UPDATE_ROOT_KEYS=public))
    old_id = None
    for url, body, version, reason in [
        (crash_url, crash, "9.9.1", "rolled back: the new worker exited before it was healthy"),
        (hang_url, hang, "9.9.2", "rolled back: the new worker was not healthy within 5 s"),
    ]:
        task = server.enqueue("update_worker", params_for(url, body, version=version))
        got = _result(server, task, 90)
        assert got["status"] == "failure" and got["result"]["kind"] == "update_failed", got
        assert reason in got["result"]["error"]
        assert _poster_version(server, task) == {builds.old_version}
        assert version in update_records.bad_versions(upd)
        old_id = old_id or got["worker_id"]
        assert got["worker_id"] == old_id
        assert (home / update_extract.BINARY).read_bytes() == builds.old.read_bytes()
    assert w.wait(10) == 0  # the first process handed over; the updater started the old one again

    hits = len(files.hits)
    again = server.enqueue("update_worker", params_for(crash_url, crash, version="9.9.1"))
    got = _result(server, again, 30)
    assert "was rolled back on this PC" in got["result"]["error"] and got["result"]["kind"] == "update_failed"
    assert len(files.hits) == hits  # refused at once: not even downloaded
    check = server.enqueue("example", {"text": "old serves"})
    assert _result(server, check)["status"] == "success" and _poster_version(server, check) == {builds.old_version}
    status = _status(home)
    assert status["version"] == builds.old_version and psutil.pid_exists(status["pid"])
    log = (home / "logs" / "updater.log").read_text()
    assert log.count("old worker started again") == 2
    _stop_tagged(tag)


@pytest.mark.slow
@posix_only
@pytest.mark.timeout(600)
def test_release_installed_by_a_1_0_x_worker(builds: SimpleNamespace, fleet_server, tmp_path: Path) -> None:
    """A 1.0.x updater replaced only worker.exe and did not restart it; its watcher starts it with no
    arguments, no HIVE_*, no worker.toml, in its folder: the new binary reaches the server baked into
    it, keeps the identity, writes its own updater out and removes the 1.0.x leftover, by exact name.
    (On Windows, with 1.0.x's own steps and updater.bat: test_update_windows.py.)"""
    home = tmp_path / "home"
    home.mkdir()
    (home / "worker.conf").write_text("shop7_0a1b2c3d\n")
    (home / "workername.txt").write_text("shop7")
    legacy_bat = b"@echo off\r\nrem the 1.0.x updater\r\nmove /Y %2 %1\r\n"
    (home / "updater.bat").write_bytes(legacy_bat)
    (home / "worker_update.exe").write_bytes(b"left over by 1.0.x")
    shutil.copy2(builds.new, home / update_extract.BINARY)  # all the 1.0.x updater installs
    task = fleet_server.enqueue("example", {"text": "hi"})  # before the start: an idle worker sleeps 180 s
    console = open(tmp_path / "console.txt", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(home / update_extract.BINARY)], cwd=str(home), env=bare_env(tmp_path / "tmp"),
                            stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT)
    try:
        got = _result(fleet_server, task)
        assert got["status"] == "success" and got["worker_id"] == "shop7_0a1b2c3d"
        assert _poster_version(fleet_server, task) == {builds.new_version}
        assert (home / "updater.sh").read_bytes() == UPDATER_SH
        assert not (home / "worker_update.exe").exists()
        assert (home / "updater.bat").read_bytes() == legacy_bat  # Linux: the .bat is not this OS's script
        assert not (home / "devserver.sqlite").exists()
        assert_fleet_credentials(fleet_server)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        console.close()
    assert_no_password(home, (tmp_path / "console.txt").read_text(errors="replace"))


@pytest.mark.slow
@posix_only
@pytest.mark.timeout(600)
def test_a_release_whose_executors_cannot_all_start_is_rolled_back(builds: SimpleNamespace, server, start_worker,
                                                                   files: FileServer, tag: str,
                                                                   tmp_path: Path) -> None:
    """Healthy means doing work: the new version talks to the server and runs tasks on one executor,
    but the second executor of its pool can never import the task registry (its self-test, with one
    executor, passed). It is never declared healthy: the updater rolls it back."""
    key, public = keypair(tmp_path)
    home = _install(tmp_path, builds.old)
    body = _release(tmp_path, builds.new, "worker-new.zip", key, builds.new_version, builds.new_sequence)
    url = files.add("/releases/worker-new.zip", body)
    env = _worker_env(tag, tmp_path, HIVE_UPDATE_ROOT_KEYS=public, HIVE_UPDATE_HEALTH_TIMEOUT="20",
                      HIVE_POOL_SIZE="2", **{EXCLUSIVE_IMPORT_ENV: str(tmp_path / "exclusive.lock")})
    w = start_worker(server.url, home=home, cmd=[str(home / update_extract.BINARY)], env=env)
    update = server.enqueue("update_worker", params_for(url, body, version=builds.new_version))
    got = _result(server, update, 120)
    assert got["status"] == "failure" and got["result"]["kind"] == "update_failed", got
    assert "rolled back: the new worker was not healthy within 20 s" in got["result"]["error"], got
    assert _poster_version(server, update) == {builds.old_version}
    assert (home / update_extract.BINARY).read_bytes() == builds.old.read_bytes()
    assert builds.new_version in update_records.bad_versions(home / "update")
    worker_log = (home / "logs" / "worker.log").read_text()
    assert "executor cannot import the task registry" in worker_log and "BlockingIOError" in worker_log
    assert "this start came up" not in worker_log.split(f"version {builds.new_version} starting")[-1].split(
        f"version {builds.old_version} starting")[0]
    check = server.enqueue("example", {"text": "old serves"})
    assert _result(server, check)["status"] == "success" and _poster_version(server, check) == {builds.old_version}
    assert w.wait(10) == 0
    _stop_tagged(tag)


@pytest.mark.slow
@posix_only
@pytest.mark.timeout(600)
def test_a_release_that_crashes_three_times_in_its_probation_is_rolled_back(
        builds: SimpleNamespace, server, start_worker, files: FileServer, tag: str, tmp_path: Path) -> None:
    """The new version is healthy, then crashes (kill -9) three times within its probation, each time
    started again as a service manager would: the next start puts the previous binary back by itself
    and exits EXIT_ROLLED_BACK; the old version, started again, reports why and refuses the version."""
    from supervisor.update import probation

    key, public = keypair(tmp_path)
    home = _install(tmp_path, builds.old)
    exe = home / update_extract.BINARY
    body = _release(tmp_path, builds.new, "worker-new.zip", key, builds.new_version, builds.new_sequence)
    url = files.add("/releases/worker-new.zip", body)
    env = _worker_env(tag, tmp_path, HIVE_UPDATE_ROOT_KEYS=public)
    w = start_worker(server.url, home=home, cmd=[str(exe)], env=env)
    t0 = time.monotonic()
    update = server.enqueue("update_worker", params_for(url, body, version=builds.new_version))
    got = _result(server, update, 120)
    took = time.monotonic() - t0
    assert got["status"] == "success" and _poster_version(server, update) == {builds.new_version}, got
    assert w.wait(10) == 0
    upd = home / "update"
    assert probation.read(upd)["version"] == builds.new_version
    log_path = home / "logs" / "worker.log"
    for crash in (1, 2, 3):
        kill_tagged(tag)  # kill -9 of everything the test and the updater started
        wait_for(lambda: not any(_tagged(tag)), 20, what="the killed worker to be gone")
        if crash == 3:
            break
        w = start_worker(server.url, home=home, cmd=[str(exe)], env=env)
        wait_for(lambda crash=crash: f"on probation: {crash} of 3 failed runs" in log_path.read_text(), 30,
                 what=f"start {crash + 1} to count the crash")
        task = server.enqueue("example", {"text": f"between crashes {crash}"})
        assert _result(server, task)["status"] == "success"  # it does come up: it only crashes
    w = start_worker(server.url, home=home, cmd=[str(exe)], env=env)
    assert w.wait(60) == probation.EXIT_ROLLED_BACK, w.console()
    assert exe.read_bytes() == builds.old.read_bytes() and probation.read(upd) is None
    w = start_worker(server.url, home=home, cmd=[str(exe)], env=env)  # the service manager again
    reason = (f"rolled back: version {builds.new_version} crashed or did not come up 3 times within its probation "
              "of 1800 s")
    wait_for(lambda: _result(server, update)["status"] == "failure", 60, what="the old version's report")
    got = _result(server, update)
    assert got["result"] == {"error": f"update from {builds.old_version} to {builds.new_version} failed: {reason}",
                             "kind": "update_failed"}, got
    assert _poster_version(server, update) == {builds.new_version, builds.old_version}
    assert builds.new_version in update_records.bad_versions(upd)
    check = server.enqueue("example", {"text": "old again"})
    assert _result(server, check)["status"] == "success" and _poster_version(server, check) == {builds.old_version}
    print(f"\nupdate task to healthy (probe included): {took:.1f} s")
    w.stop()


def _tagged(tag: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(TAG_ENV) == tag and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


@pytest.mark.slow  # a worker process
def test_a_failed_update_download_never_shows_the_url_password(server, start_worker, files: FileServer) -> None:
    """The update URL's user:password is masked in worker.log, the console, status.json and the
    failure result, whether the download gets an HTTP error or cannot connect at all."""
    secret = "s3cr3t-Pa55"
    port = int(files.add("/", b"").rsplit(":", 1)[1].split("/")[0])
    w = start_worker(server.url, cmd=[sys.executable, str(ROOT / "tests" / "support" / "frozen_update_path.py")],
                     args=["--config", str(ROOT / "tests" / "support" / "test_config.py")],
                     env={"HIVE_UPDATE_ALLOW_UNSIGNED": "true", "HIVE_UPDATE_ERROR_SLEEP": "0"})
    missing = server.enqueue("update_worker", {"url": f"http://bob:{secret}@127.0.0.1:{port}/missing.zip"})
    got = _refused_result(server, missing, "download: HTTP 404 from http://***@127.0.0.1")
    # A port nothing listens on: the error text is requests' own, which names the URL it tried.
    unreachable = server.enqueue("update_worker", {"url": f"http://bob:{secret}@127.0.0.1:1/x.zip"})
    got2 = _refused_result(server, unreachable, "download failed")
    wait_for(lambda: "/missing.zip" in w.log() and "127.0.0.1:1" in w.log(), 20, what="both failures logged")
    w.stop()
    status = (w.home / "status.json").read_text(encoding="utf-8")
    for where, text in {"worker.log": w.log(), "console": w.console(), "status.json": status,
                        "result 1": orjson.dumps(got).decode(), "result 2": orjson.dumps(got2).decode()}.items():
        assert secret not in text, f"the password is in {where}"
    assert "http://***@127.0.0.1" in w.log() and "http://***@127.0.0.1" in w.console()
