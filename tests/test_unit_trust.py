"""Who may sign a release (supervisor/update/trust.py), as pure decisions: the root walk, the
delegation's version and expiry against an explicit clock. Keys are made here, thrown away."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from release import signing
from supervisor.update.errors import UpdateRefused
from supervisor.update.trust import Root, build_root, check_trust, load_state, walk_roots


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    return {name: (tmp_path / name, signing.keygen(tmp_path / name)) for name in ("root", "root2", "root3", "rel")}


def test_expiry_is_decided_by_the_clock_given(keys) -> None:
    """The delegation's expiry uses the caller's "now" only (one clock for every expiry check), so a PC
    whose clock is years off can be corrected by the caller."""
    (root, root_pub), (_, rel_pub) = keys["root"], keys["rel"]
    blob = signing.make_trust(1, [rel_pub], "2027-06-01T00:00:00Z", root)
    anchor = build_root([root_pub])
    trusted = check_trust(anchor, blob, 0, now=_ts("2027-05-31T23:59:59"))
    assert trusted.delegation.version == 1 and trusted.delegation.expires == _ts("2027-06-01T00:00:00")
    with pytest.raises(UpdateRefused, match=r"expired at 2027-06-01T00:00:00Z \(now 2027-06-01T00:00:00Z\)"):
        check_trust(anchor, blob, 0, now=_ts("2027-06-01T00:00:00"))
    assert check_trust(anchor, blob, 0, now=_ts("1990-01-01T00:00:00")).delegation.version == 1


def test_versions_never_go_back(keys) -> None:
    (root, root_pub), (_, rel_pub) = keys["root"], keys["rel"]
    anchor = build_root([root_pub])
    blob = signing.make_trust(3, [rel_pub], "2099-01-01T00:00:00Z", root)
    assert check_trust(anchor, blob, 3, now=0).delegation.version == 3  # the same one again
    with pytest.raises(UpdateRefused, match=r"^the delegation \(version 3\) is older than version 4 already seen"):
        check_trust(anchor, blob, 4, now=0)


def test_the_root_walk(keys) -> None:
    """Each link is taken when the root reached so far signed it; links of another chain, older
    links and a build that already has a later root pass over them."""
    (r1, r1_pub), (r2, r2_pub), (r3, r3_pub) = keys["root"], keys["root2"], keys["root3"]
    link2 = orjson.loads(signing.make_root(2, [r2_pub], r1, [r2]))
    link3 = orjson.loads(signing.make_root(3, [r3_pub], r2, [r3]))
    r3_keys = build_root([r3_pub]).keys
    assert walk_roots(build_root([r1_pub]), [link2, link3]) == Root(3, r3_keys)
    # A build made after the rotation to root 2 starts from root 2's keys: link 2 is not signed by
    # them and is passed over, link 3 is taken; a build made with root 3 learns its version.
    assert walk_roots(build_root([r2_pub]), [link2, link3]) == Root(3, r3_keys)
    assert walk_roots(build_root([r3_pub]), [link2, link3]) == Root(3, r3_keys)
    assert walk_roots(Root(3, r3_keys), [link2, link3]) == Root(3, r3_keys)  # already there
    assert walk_roots(build_root([r1_pub]), [link3]) == build_root([r1_pub])  # a gap: link 3 is not r1's


def test_an_unreadable_trust_record_is_not_nothing_seen(tmp_path: Path, keys) -> None:
    (tmp_path / "trust.json").write_text("{broken")
    with pytest.raises(UpdateRefused, match="trust.json .*fix or delete it"):
        load_state(tmp_path, [keys["root"][1]])
    (tmp_path / "trust.json").write_text('{"delegation_version": 7, "root": null}')
    assert load_state(tmp_path, [keys["root"][1]]) == (build_root([keys["root"][1]]), 7)


@pytest.mark.parametrize("blob, message", [
    (b"{not json", "release-trust.json is not valid JSON"),
    (b"[1, 2]", "release-trust.json is not a hive-worker-trust document"),
    (b'{"type": "hive-worker-root"}', "release-trust.json is not a hive-worker-trust document"),
])
def test_a_trust_file_that_is_not_one_is_refused_naming_it(blob: bytes, message: str) -> None:
    from supervisor.update.trust import TRUST_TYPE, parse_trust

    assert TRUST_TYPE == "hive-worker-trust"
    with pytest.raises(UpdateRefused, match=f"^{message}$"):
        parse_trust(blob)


@pytest.mark.parametrize("text, message", [
    (b"\xff", "the delegation is not valid JSON"),
    (b'"a string"', "the delegation is not a hive-worker-delegation statement"),
    (b'{"type": "hive-worker-trust", "version": 1}', "the delegation is not a hive-worker-delegation statement"),
])
def test_a_signed_text_of_another_kind_is_refused_naming_it(text: bytes, message: str) -> None:
    # What a signature covers is read only as the kind it was checked for (a root can never pass as a delegation).
    from supervisor.update.trust import DELEGATION_TYPE, _body

    assert DELEGATION_TYPE == "hive-worker-delegation"
    with pytest.raises(UpdateRefused, match=f"^{message}$"):
        _body(text, DELEGATION_TYPE, "the delegation")
