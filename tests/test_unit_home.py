"""The home's source-tree anchor (supervisor/host/home.py)."""

from __future__ import annotations

from pathlib import Path

from supervisor.host.home import SOURCE_ROOT, default_home


def test_source_root_is_the_folder_of_main_py() -> None:
    # The default home from source and --dev's watched tasks/ and config.py hang off SOURCE_ROOT;
    # it went one folder too low when home.py moved into supervisor/host/.
    repo = Path(__file__).resolve().parent.parent
    assert SOURCE_ROOT == repo
    assert (SOURCE_ROOT / "main.py").is_file() and (SOURCE_ROOT / "tasks").is_dir()
    assert default_home() == repo
