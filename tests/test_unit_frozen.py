"""Whether a one-file bundle's unpacked files are still there (supervisor/host/frozen.py), on real folders."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from supervisor.host import frozen


def test_missing_unpacked(tmp_path: Path) -> None:
    bundle = tmp_path / "_MEI123456"
    bundle.mkdir()
    names = ["base_library.zip", "python311.dll", "certifi"]
    for name in names[:2]:
        (bundle / name).write_bytes(b"x")
    (bundle / "certifi").mkdir()
    assert frozen.missing_unpacked(bundle, names) is None
    (bundle / "base_library.zip").unlink()
    assert frozen.missing_unpacked(bundle, names) == \
        f"1 of the 3 files it unpacked into {bundle} are gone (e.g. base_library.zip)"
    (bundle / "python311.dll").unlink()
    (bundle / "certifi").rmdir()
    bundle.rmdir()
    assert frozen.missing_unpacked(bundle, names) == f"the folder it unpacked into, {bundle}, is gone"


def test_exit_if_unpacked_gone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """One ERROR line and SystemExit with the documented status; nothing when all is there or from source."""
    bundle = tmp_path / "_MEI1"
    bundle.mkdir()
    (bundle / "base_library.zip").write_bytes(b"x")
    monkeypatch.setattr(frozen, "UNPACKED", None)
    frozen.exit_if_unpacked_gone()  # from source: nothing to check
    monkeypatch.setattr(frozen, "UNPACKED", (bundle, ["base_library.zip"]))
    frozen.exit_if_unpacked_gone()
    (bundle / "base_library.zip").unlink()
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as info:
        frozen.exit_if_unpacked_gone()
    assert info.value.code == frozen.EXIT_UNPACKED_GONE == 6
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert "unpacked files are gone" in caplog.text and "exiting with status 6" in caplog.text
