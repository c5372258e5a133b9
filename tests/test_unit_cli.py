"""The command line (issue 23.6): every flag explained, no abbreviations, one-line refusals. In-process
parsing only (no worker is started); test_settings.py runs main.py for what the operator sees."""

from __future__ import annotations

import pytest
from conftest import ROOT  # noqa: F401 - puts the repo root on sys.path

import main
from supervisor.settings import SPECS


def _refused(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err  # one line, not the usage block
    return err


def test_every_flag_is_explained_with_its_default():
    parser = main.build_parser()
    for action in parser._actions:
        if action.dest == "help":
            continue
        assert action.help and len(action.help) > 15, action.option_strings
    by_dest = {a.dest: a for a in parser._actions}
    for spec in SPECS:
        assert "default " in by_dest[spec.key].help, spec.key
    assert "default 180 seconds" in by_dest["no_task_sleep"].help
    assert "default 3072 MB" in by_dest["task_memory_limit_mb"].help


def test_abbreviations_are_refused(capsys):
    assert "unrecognized arguments: --pool 2" in _refused(capsys, ["--pool", "2"])


@pytest.mark.parametrize("argv, needle", [
    (["--version", "--status"], "argument --status: not allowed with argument --version"),
    (["--run", "echo", "--dev"], "argument --dev: not allowed with argument --run"),
    (["--params", "{}"], "--params needs --run TASK"),
    (["--status", "--params", "{}"], "--params needs --run TASK"),
])
def test_conflicting_modes_are_refused_in_one_line(capsys, argv, needle):
    assert needle in _refused(capsys, argv)


def test_server_and_server_url_are_the_same_flag():
    parser = main.build_parser()
    assert parser.parse_args(["--server", "http://a:1/api"]).server_url == "http://a:1/api"
    assert parser.parse_args(["--server-url", "http://b:1/api"]).server_url == "http://b:1/api"


def test_an_unknown_flag_gets_a_did_you_mean(capsys):
    """Issue 23.11."""
    err = _refused(capsys, ["--pool-sise", "2"])
    assert "unrecognized arguments: --pool-sise 2 (did you mean --pool-size? see --help)" in err



# --run's params: the one real run of each outcome stays in test_dev.py (exit 0, 1 and 2).
def test_run_params_are_a_json_object_inline_or_from_a_file(tmp_path):
    f = tmp_path / "p.json"
    f.write_text('{"text": "from file"}', encoding="utf-8")
    assert main._parse_params(f"@{f}") == {"text": "from file"}
    assert main._parse_params('{"a": [1, 2]}') == {"a": [1, 2]}


@pytest.mark.parametrize("params, needle", [
    ("{bad", "--params is not valid JSON: "),
    ("[1]", "--params must be a JSON object, got list"),
    ("@/no/such/params.json", "cannot read params file: "),
])
def test_run_params_that_are_not_a_json_object_are_refused(params, needle):
    with pytest.raises(ValueError) as exc:
        main._parse_params(params)
    assert str(exc.value).startswith(needle)
