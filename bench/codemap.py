"""Figures about the code itself (issue 25's before/after): sizes, complexity, the package graph.

    python bench/codemap.py [TREE]      # TREE: a checkout (default: this one)

Prints the largest module and function, the functions over complexity 20 (ruff's mccabe, C901),
the ``Any`` annotations, the modules directly in supervisor/, and the graph between packages
(supervisor's subpackages counted apart) with any cycle in it. tests/test_unit_layers.py checks the
graph's rules with ``package_graph``.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("common", "supervisor", "executor", "tasks", "release", "devserver")
COMPLEXITY = 20
WATCH = 15  # also listed: the next ones to split


def source_files(tree: Path) -> list[Path]:
    files = [tree / "main.py", tree / "config.py"]
    for top in SOURCE_DIRS:
        files += sorted((tree / top).rglob("*.py"))
    return [f for f in files if f.exists() and "__pycache__" not in f.parts]


def package_of(tree: Path, path: Path) -> str:
    """The node a file belongs to: its top-level package, or supervisor.<subpackage or module>."""
    parts = path.relative_to(tree).with_suffix("").parts
    if len(parts) == 1:
        return parts[0]  # main, config
    if parts[0] == "supervisor" and parts[1] != "__init__":
        return f"supervisor.{parts[1]}"  # a subpackage, or one of the modules directly in supervisor/
    return parts[0]


def node_of(module: str, nodes: set[str]) -> str | None:
    parts = module.split(".")
    for n in (".".join(parts[:2]), parts[0]):
        if n in nodes:
            return n
    return None


def imports_of(path: Path) -> Iterable[str]:
    for stmt in ast.walk(ast.parse(path.read_bytes())):
        if isinstance(stmt, ast.ImportFrom) and stmt.module and stmt.level == 0:
            yield stmt.module
            for alias in stmt.names:
                yield f"{stmt.module}.{alias.name}"
        elif isinstance(stmt, ast.Import):
            for alias in stmt.names:
                yield alias.name


def package_graph(tree: Path = ROOT) -> dict[str, dict[str, list[str]]]:
    """{package: {package it imports: [the importing files]}}; every import counts, lazy ones too."""
    files = source_files(tree)
    nodes = {package_of(tree, f) for f in files}
    graph: dict[str, dict[str, list[str]]] = {n: {} for n in nodes}
    for f in files:
        src = package_of(tree, f)
        for module in imports_of(f):
            dst = node_of(module, nodes)
            if dst and dst != src and not (src.startswith(dst + ".")):
                where = graph[src].setdefault(dst, [])
                rel = str(f.relative_to(tree))
                if rel not in where:
                    where.append(rel)
    return graph


def cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """The strongly connected components with more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def functions(tree: Path) -> list[tuple[int, str]]:
    out = []
    for f in source_files(tree):
        for node in ast.walk(ast.parse(f.read_bytes())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                out.append((node.end_lineno - node.lineno + 1, f"{f.relative_to(tree)}:{node.name}"))
    return sorted(out, reverse=True)


def complex_functions(tree: Path, limit: int = COMPLEXITY) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", "--select", "C901", "--config", f"lint.mccabe.max-complexity={limit}",
         "--output-format", "json", *map(str, source_files(tree))], capture_output=True, text=True)
    return sorted(f"{Path(d['filename']).relative_to(tree)}: {d['message']}" for d in json.loads(proc.stdout or "[]"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tree", nargs="?", type=Path, default=ROOT, help="a checkout (default: this one)")
    tree = parser.parse_args().tree.resolve()
    files = source_files(tree)
    sizes = sorted(((len(f.read_text(encoding="utf-8").splitlines()), str(f.relative_to(tree))) for f in files),
                   reverse=True)
    print(f"source: {len(files)} modules, {sum(n for n, _ in sizes)} lines")
    print("largest modules:", ", ".join(f"{p} {n}" for n, p in sizes[:3]))
    print("largest functions:", ", ".join(f"{p} {n}" for n, p in functions(tree)[:3]))
    cx = complex_functions(tree)
    print(f"functions over complexity {COMPLEXITY}: {len(cx)}")
    for line in cx:
        print("   ", line)
    print(f"functions over complexity {WATCH}: {len(complex_functions(tree, WATCH))}")
    anys = sum(f.read_text(encoding="utf-8").count("Any") for f in files if "Any" in f.read_text(encoding="utf-8"))
    print(f"'Any' in the source: {anys}")
    direct = sorted(p.name for p in (tree / "supervisor").glob("*.py"))
    print(f"modules directly in supervisor/: {len(direct)} ({', '.join(direct)})")
    graph = package_graph(tree)
    print("package graph:")
    for src in sorted(graph):
        print(f"    {src} -> {', '.join(sorted(graph[src])) or '-'}")
    found = cycles(graph)
    print("cycles:", "; ".join(" <-> ".join(c) for c in found) or "none")
    for comp in found:
        for a in comp:
            for b in comp:
                if b in graph[a]:
                    print(f"    {a} -> {b}: {', '.join(graph[a][b])}")


if __name__ == "__main__":
    main()
