"""Worker identity kept exactly as the 1.0.x fleet keeps it."""

import logging
import re

import pytest

from supervisor.host.identity import ascii_name, header_problem, load_or_create_worker_id


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


@pytest.mark.parametrize("name, prefix", [
    ("Київ-офіс", "Kyiv-ofis"),  # the fleet's office names
    ("Магазин №7", "Mahazyn-No7"),
    ("Згурівка", "Zghurivka"),  # the resolution's own examples: "зг" is "zgh", є/ї/ю/я at a word's start
    ("Юрій Їжакевич", "Yurii-Yizhakevych"),
    ("Єнакієве", "Yenakiieve"),
    ("м'ясо", "miaso"),
    ("Подъезд Ёлка", "Podezd-Yolka"),  # Russian letters Ukrainian lacks
    ("shop 1\nsecond line", "shop-1-second-line"),  # a second line cannot go into a header
])
def test_a_workername_that_cannot_go_into_a_header_is_transliterated_once_with_a_warning(tmp_path, caplog,
                                                                                       name, prefix):
    (tmp_path / "workername.txt").write_text(name, encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="hive.identity"):
        wid = load_or_create_worker_id(tmp_path)
    assert re.fullmatch(re.escape(prefix) + r"_[0-9a-f]{8}", wid) and header_problem(wid) is None
    assert [r.levelname for r in caplog.records] == ["WARNING"] and repr(prefix) in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hive.identity"):
        assert load_or_create_worker_id(tmp_path) == wid  # worker.conf keeps it: no second warning
    assert caplog.records == []


def test_what_no_table_knows_becomes_punycode():
    assert ascii_name("东京 shop") == ("xn---shop-7k1hs7a", "punycode, as for international domain names")
    assert ascii_name("东京 shop")[0].removeprefix("xn--").encode("ascii").decode("punycode") == "东京-shop"
