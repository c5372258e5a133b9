"""Worker identity kept exactly as the 1.0.x fleet keeps it."""

import re

from supervisor.identity import load_or_create_worker_id


def test_created_with_default_prefix_and_reused(tmp_path):
    wid = load_or_create_worker_id(tmp_path)
    assert re.fullmatch(r"worker_[0-9a-f]{8}", wid)
    assert (tmp_path / "worker.conf").read_text() == wid
    assert load_or_create_worker_id(tmp_path) == wid
    assert not list(tmp_path.glob("*.tmp"))


def test_prefix_from_workername_txt(tmp_path):
    (tmp_path / "workername.txt").write_text("shop-pc-7\n")
    assert re.fullmatch(r"shop-pc-7_[0-9a-f]{8}", load_or_create_worker_id(tmp_path))


def test_taken_over_from_a_1_0_x_install(tmp_path):
    # 1.0.x wrote the id with a trailing newline; some editors add a BOM.
    (tmp_path / "worker.conf").write_text("\ufeffoffice_1a2b3c4d\n", encoding="utf-8")
    (tmp_path / "workername.txt").write_text("ignored")
    assert load_or_create_worker_id(tmp_path) == "office_1a2b3c4d"
    assert (tmp_path / "worker.conf").read_text(encoding="utf-8") == "\ufeffoffice_1a2b3c4d\n"
