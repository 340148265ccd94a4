#!/usr/bin/env python3
"""The layout bounds CONTRIBUTING holds the package to: no module over 400 lines, no function over
60 lines, no module-level import cycle (a package __init__ re-exporting a submodule that imports
from it counts). tools/test.sh (CI) runs it before the tests.

    python tools/check_layout.py        # exit 1 when a bound is exceeded
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mtz_mobile", "converters")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "node_modules" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imported(name: str, path: Path, tree: ast.AST, known: dict) -> set[str]:
    """The package's modules that ``name`` imports (``from pkg import sub`` names the submodule)."""
    deps = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            deps |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")
                keep = len(parts) - node.level + (1 if path.name == "__init__.py" else 0)
                base = ".".join(parts[:keep] + ([base] if base else []))
            subs = {f"{base}.{alias.name}" for alias in node.names} & set(known)
            deps |= subs or {base}
    return {d for d in deps if d in known and d != name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, edges = work[-1]
            w = next(edges, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def main() -> int:
    known = modules()
    big, long_functions, graph = [], [], {}
    for name, path in known.items():
        source = path.read_text()
        rel = path.relative_to(ROOT)
        if source.count("\n") > MAX_MODULE_LINES:
            big.append(f"{rel}:{source.count(chr(10))}")
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{rel}:{node.name}:{length}")
        graph[name] = imported(name, path, tree, known)
    loops = cycles(graph)
    print(f"check_layout: {len(known)} modules; over {MAX_MODULE_LINES} lines: {big or 'none'}; functions over "
          f"{MAX_FUNCTION_LINES} lines: {long_functions or 'none'}; import cycles: {loops or 'none'}")
    return 1 if big or long_functions or loops else 0


if __name__ == "__main__":
    sys.exit(main())
