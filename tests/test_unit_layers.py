"""The package graph's rules (issue 25.4): no cycle, and each layer imports only those below it.

The graph counts every import, lazy ones too (bench/codemap.py prints it)."""

from __future__ import annotations

from bench.codemap import ROOT, cycles, package_graph

GRAPH = package_graph(ROOT)


def imports(node: str) -> set[str]:
    return set(GRAPH[node])


def test_the_package_graph_has_no_cycle() -> None:
    assert cycles(GRAPH) == []


def test_common_imports_neither_side() -> None:
    assert imports("common") == set()


def test_the_executor_process_imports_no_supervisor_code() -> None:
    # An executor runs task code; what it imports is what a task can reach (and what it loads at start).
    assert {n for n in imports("executor") if n.startswith("supervisor")} == set()


def test_settings_do_not_depend_on_the_updater() -> None:
    assert "supervisor.update" not in imports("supervisor.settings")


def test_supervisor_keeps_at_most_ten_modules_directly_in_it() -> None:
    direct = sorted(p.name for p in (ROOT / "supervisor").glob("*.py"))
    assert len(direct) <= 10, direct


def test_the_scanner_sees_a_cycle(tmp_path) -> None:
    # The rules above are only as good as the scanner: a planted cycle must show.
    for pkg, target in (("common", "executor.api"), ("executor", "common.x")):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
        (tmp_path / pkg / "m.py").write_text(f"def f():\n    import {target}\n")
    graph = package_graph(tmp_path)
    assert cycles(graph) == [["common", "executor"]]


def test_the_source_root_is_the_repo_after_the_moves() -> None:
    # home.py sits two folders down; --dev's reloader and the release check start from this root.
    from supervisor.host.home import SOURCE_ROOT

    assert (SOURCE_ROOT / "main.py").is_file() and SOURCE_ROOT == ROOT
