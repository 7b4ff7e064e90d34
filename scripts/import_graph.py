"""The project's import graph from the source (ast, every import, function-level ones included): modules or
packages, the arrows between them, and any circles.

    python scripts/import_graph.py             # package summary: packages, arrows, circles
    python scripts/import_graph.py --modules   # every module-to-module arrow

tests/test_structure.py fails on any circle; docs/development.md shows the package summary.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = ("worker", "config", "bench", "devtools")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    modules = {module_name(path): path for top in FIRST_PARTY for path in (ROOT / top).rglob("*.py")}
    modules["handler"] = ROOT / "handler.py"
    return modules


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `path` imports anywhere in it (a `from package import module` counts as the module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def module_graph() -> dict[str, set[str]]:
    modules = project_modules()
    graph = {name: imports_of(path, modules) - {name} for name, path in modules.items()}
    # A package's __init__ is imported with any of its modules; that is no arrow of the module's own.
    return {name: {dep for dep in deps if not name.startswith(dep + ".")} for name, deps in graph.items()}


def package_of(module: str) -> str:
    """worker's sub-packages and top-level modules each stand alone (worker.jobs, worker.vllm_api); elsewhere
    the top-level package (config, bench)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "worker" else parts[0]


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {}
    for module, deps in graph.items():
        source = package_of(module)
        packages.setdefault(source, set()).update(package_of(dep) for dep in deps if package_of(dep) != source)
    return packages


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected group of more than one node (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", action="store_true", help="every module-to-module arrow")
    args = parser.parse_args()
    graph = module_graph()
    shown = graph if args.modules else package_graph(graph)
    arrows = sum(len(deps) for deps in shown.values())
    print(f"{len(shown)} {'modules' if args.modules else 'packages'}, {arrows} arrows")
    for node in sorted(shown):
        print(f"  {node} -> {', '.join(sorted(shown[node])) or '(nothing of ours)'}")
    module_circles, package_circles = circles(graph), circles(package_graph(graph))
    print(f"circles between modules: {module_circles or 'none'}")
    print(f"circles between packages: {package_circles or 'none'}")


if __name__ == "__main__":
    main()
