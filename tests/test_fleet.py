"""A release carries its fleet (issue 21): the release commands refuse a binary that could come up
without its server, and only a run from source serves the embedded demo server unasked.

The frozen halves (a real dev build exits 2 with no server URL, a real fleet build shows its baked
settings, a 1.0.x PC's bare start reaches the server) are in test_frozen.py, test_update.py and
test_update_windows.py, on the session's real builds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, wait_for

KEY = "Gtt6yuQClBCdZBFXnucwWGDkybjhgRtcETZEhCEWv3I="  # a public key (its private half is nobody's)
PASSWORD = "s3cret-pw"


def _python(*args: str, module: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=str(cwd), capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("args, needle", [
    ([], "error: no --server-url: a release carries its fleet: pass --server-url URL"),
    (["--server-url", f"http://hive:{PASSWORD}@fleet:3010/api"], "error: no --root-key: "),
    (["--server-url", f"ftp://hive:{PASSWORD}@fleet/api", "--root-key", KEY],
     "error: fleet settings: server_url must be an http(s) URL"),
    (["--server-url", "http://fleet:3010/api", "--root-key", "not-a-key"], "error: fleet settings: update_root_keys"),
    (["--dev-build", "--server-url", "http://fleet:3010/api"], "error: --dev-build carries no fleet settings"),
    (["--server-url", "@/nonexistent/fleet-url.txt", "--root-key", KEY], "error: --server-url: cannot read"),
])
def test_the_build_refuses_a_release_without_its_fleet(tmp_path: Path, args: list[str], needle: str) -> None:
    """One line, exit 2, before PyInstaller runs (nothing is built), and never the password."""
    got = _python(*args, "--distpath", str(tmp_path / "dist"), "--workpath", str(tmp_path / "work"),
                  module="release.build")
    lines = got.stderr.strip().splitlines()
    assert got.returncode == 2 and len(lines) == 1 and lines[0].startswith(needle), got.stderr
    assert PASSWORD not in got.stdout + got.stderr
    assert not (tmp_path / "dist").exists() and not (tmp_path / "work").exists()


def _standin(tmp_path: Path, print_config: str) -> Path:
    """A built binary as make_release sees it: --version, --self-test and --print-config."""
    binary = tmp_path / "dist" / "worker"
    binary.parent.mkdir(parents=True)
    binary.write_text(f"""#!/bin/sh
case "$1" in
  --version) echo 9.1.0 ;;
  --self-test) echo "self-test ok: version 9.1.0, tasks: example" ;;
  --print-config) cat <<'TOML'
{print_config}TOML
  ;;
  *) exit 9 ;;
esac
""")
    binary.chmod(0o755)
    return binary


@pytest.mark.skipif(sys.platform == "win32", reason="the stand-in binary is a POSIX shell script")
@pytest.mark.parametrize("print_config, refusal", [
    ('# server_url: from config.py\nserver_url = ""\n# update_root_keys: from config.py\nupdate_root_keys = []\n',
     "it carries no server URL"),
    ('# server_url: from the release build (fleet settings)\nserver_url = "http://***@fleet:3010/api"\n'
     "update_root_keys = []\n", "it trusts no root key"),
])
def test_make_release_refuses_a_binary_without_its_fleet(tmp_path: Path, print_config: str, refusal: str) -> None:
    binary = _standin(tmp_path, print_config)
    args = ["--binary", str(binary), "--out", str(tmp_path / "out"), "--unsigned"]
    got = _python(*args, module="release.make_release")
    lines = got.stderr.strip().splitlines()
    assert got.returncode == 2 and len(lines) == 1, got.stdout + got.stderr
    assert lines[0].startswith(f"error: not releasing worker: {refusal}") and "--dev-build" in lines[0]
    assert not list(tmp_path.glob("out/*.zip"))
    got = _python(*args, "--dev-build", module="release.make_release")  # a lab zip, said so
    assert got.returncode == 0, got.stdout + got.stderr
    assert "(DEV BUILD: labs only)" in got.stdout and len(list(tmp_path.glob("out/*.zip"))) == 1


@pytest.mark.skipif(sys.platform == "win32", reason="the stand-in binary is a POSIX shell script")
def test_make_release_names_the_fleet_it_packs(tmp_path: Path) -> None:
    binary = _standin(tmp_path, '# server_url: from the release build (fleet settings)\n'
                                'server_url = "http://***@fleet:3010/api"\n'
                                f'update_root_keys = ["{KEY}"]\n')
    got = _python("--binary", str(binary), "--out", str(tmp_path / "out"), "--unsigned", module="release.make_release")
    assert got.returncode == 0, got.stdout + got.stderr
    assert "fleet: server http://***@fleet:3010/api, 1 root key(s)\n" in got.stdout


@pytest.mark.slow  # a worker process
def test_from_source_with_nothing_given_serves_the_embedded_demo(start_worker) -> None:
    """The newcomer's `python main.py` is unchanged: the embedded server, its demo tasks served, and
    (from source, where the command exists) how to enqueue more."""
    w = start_worker(None)
    wait_for(lambda: "serving an embedded local Hive server" in w.log() and " succeeded in " in w.log(), 60,
             what="the embedded server's demo tasks to be served")
    assert "python -m devserver enqueue TYPE --db" in w.log()
    assert (w.home / "devserver.sqlite").exists()
